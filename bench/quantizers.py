"""Quantizer benchmark: forward+backward throughput and memory per codebook size.

Prints the machine, its measured f32 matmul throughput, then one Markdown row
per (quantizer, codebook size): forward+backward tokens/s, peak memory, and for
VQ the nearest-code search FLOP rate as a fraction of the matmul rate (the
search is one matmul per block plus an argmin, so the matmul bounds it).

  python bench/quantizers.py                      # defaults: a few minutes on 2 CPU cores
  python bench/quantizers.py --tokens=8192 --dim=256 --sizes=10,12,14,16,18
  python bench/quantizers.py --quantizers=vq --sweep_chunks=512,1024,2048,4096
  python bench/quantizers.py --quantizers=vq,ibq --tokens=8192 --dim=256 --sizes=18 --repeats=1
  python bench/quantizers.py --quantizers=vq,msvq --dim=32 --sizes=12   # VAR's multi-scale VQ vs plain VQ

``msvq`` (MultiScaleResidual over VQ, VAR's schedule) takes the same tokens as
16x16 latents, ``tokens / 256`` of them; it searches 680 / 256 = 2.66x as
many vectors as plain VQ and adds the resizing and the phi convolutions.

Memory: ``jax.devices()[0].memory_stats()["peak_bytes_in_use"]`` on
accelerators; on CPU the process peak-RSS growth during the timed steps
(Linux ``VmHWM``, reset through ``/proc/self/clear_refs``).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
from common import describe_machine, matmul_flops_per_s  # bench/common.py (this script's folder)
from flax import nnx

from vqtok.quantizers import BSQ, FSQ, IBQ, LFQ, MultiScaleResidual, VectorQuantizer
from vqtok.quantizers.multiscale import VAR_SCALES
from vqtok.quantizers.search import nearest_code, search_flops

# FSQ levels per log2 codebook size: the paper's table (Mentzer et al. 2023,
# sec. 4.1) for 2^10..2^16, and 8^6 for 2^18.
FSQ_LEVELS = {
  10: (8, 5, 5, 5),
  12: (7, 5, 5, 5, 5),
  14: (8, 8, 8, 6, 5),
  16: (8, 8, 8, 5, 5, 5),
  18: (8, 8, 8, 8, 8, 8),
}


def timed(fn, *args, repeats: int) -> float:
  """Fastest of ``repeats`` calls after a warm-up (compile) call, in seconds.

  The minimum, not the mean: on a shared machine other load only adds time.
  """
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def matmul_gflops(repeats: int) -> float:
  """Measured f32 matmul rate of the default device, GFLOP/s (larger matrices on accelerators)."""
  n = 2048 if jax.devices()[0].platform == "cpu" else 8192
  return matmul_flops_per_s(n, trials=max(repeats, 5)) / 1e9


def _rss_kib(field: str) -> int:
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))


class PeakMemory:
  """Peak bytes during a block: device stats if available, else RSS growth."""

  def __enter__(self):
    self.stats = jax.devices()[0].memory_stats()
    if self.stats is None:
      try:
        with open("/proc/self/clear_refs", "w") as f:
          f.write("5")  # resets VmHWM to the current RSS
        self.base = _rss_kib("VmRSS")
      except OSError:
        self.base = None
    return self

  def __exit__(self, *exc):
    if self.stats is not None:
      self.bytes = jax.devices()[0].memory_stats().get("peak_bytes_in_use", 0)
    elif self.base is not None:
      self.bytes = (_rss_kib("VmHWM") - self.base) * 1024
    else:
      self.bytes = float("nan")


def build(name: str, log2_size: int, dim: int, chunk: int | None):
  """The quantizer ``name`` with about ``2**log2_size`` codes on ``dim`` inputs."""
  rngs = nnx.Rngs(0)
  if name == "vq":
    return VectorQuantizer(2**log2_size, dim, search_chunk=chunk, rngs=rngs)
  if name == "msvq":  # VAR's multi-scale VQ over 16x16 latents (10 scales, one codebook)
    return MultiScaleResidual(VectorQuantizer(2**log2_size, dim, search_chunk=chunk, rngs=rngs), rngs=rngs)
  if name == "fsq":
    return FSQ(FSQ_LEVELS[log2_size], code_dim=dim, rngs=rngs)
  if name == "lfq":
    return LFQ(bits=log2_size, code_dim=dim, rngs=rngs)
  if name == "bsq":
    return BSQ(bits=log2_size, code_dim=dim, rngs=rngs)
  if name == "ibq":  # the reference's training weights (entropy on: two passes over the codebook)
    return IBQ(2**log2_size, dim, entropy_weight=0.05, chunk_size=chunk, rngs=rngs)
  raise ValueError(f"unknown quantizer {name!r}")


@nnx.jit
def train_step(model, z):
  def objective(model, z):
    z_q, out = model(z, train=True)
    return out.loss + jnp.mean(jnp.square(z_q.astype(jnp.float32)))

  return nnx.grad(objective, argnums=(0, 1))(model, z)


def search_rate(tokens: int, k: int, dim: int, chunk: int | None, repeats: int) -> float:
  """GFLOP/s of ``nearest_code`` alone."""
  z = jax.random.normal(jax.random.key(2), (tokens, dim))
  c = jax.random.normal(jax.random.key(3), (k, dim))
  f = jax.jit(lambda a, b: nearest_code(a, b, chunk_size=chunk))
  return search_flops(tokens, k, dim) / timed(f, z, c, repeats=repeats) / 1e9


def _mib(b: float) -> str:
  return "n/a" if b != b else f"{b / 2**20:,.0f}"


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tokens", type=int, default=2048)
  p.add_argument("--dim", type=int, default=128, help="z dimension (= VQ code dim)")
  p.add_argument("--sizes", default="10,12,14,16,18", help="log2 codebook sizes")
  p.add_argument("--quantizers", default="vq,fsq,lfq,bsq,ibq")
  p.add_argument("--chunk", type=int, default=None, help="VQ search / IBQ codebook chunk (auto)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--sweep_chunks", default="", help="also time the VQ search for these chunk sizes")
  args = p.parse_args()
  sizes = [int(s) for s in args.sizes.split(",")]

  mm = matmul_gflops(args.repeats)
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  # Other processes on the machine inflate times; the load says how much.
  print(f"machine: {describe_machine()}; load avg {load:.1f}")
  print(f"f32 matmul: {mm:,.1f} GFLOP/s; tokens={args.tokens} dim={args.dim}\n")
  print("| quantizer | codes | fwd+bwd tokens/s | peak MiB | search GFLOP/s | search / matmul |")
  print("|---|---:|---:|---:|---:|---:|")
  flat = jax.random.normal(jax.random.key(1), (args.tokens, args.dim))
  for name in args.quantizers.split(","):
    side = VAR_SCALES[-1]
    z = flat.reshape(-1, side, side, args.dim) if name == "msvq" else flat
    for s in sizes:
      try:
        model = build(name, s, args.dim, args.chunk)
        codes = model.codebook_size
        jax.block_until_ready(train_step(model, z))  # compile outside the peak
        with PeakMemory() as mem:
          t = timed(train_step, model, z, repeats=args.repeats)
      except Exception as e:  # noqa: BLE001 - report and go on
        print(f"| {name} | 2^{s} | error: {type(e).__name__}: {str(e)[:80]} | | | |")
        continue
      rate = frac = ""
      if name == "vq":
        g = search_rate(args.tokens, codes, args.dim, args.chunk, args.repeats)
        # Re-measure the matmul next to the search so load drifts cancel.
        mm_now = max(mm, matmul_gflops(args.repeats))
        rate, frac = f"{g:,.1f}", f"{g / mm_now:.0%}"
      print(f"| {name} | {codes:,} | {args.tokens / t:,.0f} | {_mib(mem.bytes)} | {rate} | {frac} |", flush=True)
      del model

  if args.sweep_chunks:
    print("\n| codes | chunk | search GFLOP/s | search / matmul |")
    print("|---:|---:|---:|---:|")
    for s in sizes:
      for ch in [int(c) for c in args.sweep_chunks.split(",")]:
        g = search_rate(args.tokens, 2**s, args.dim, ch, args.repeats)
        mm_now = max(mm, matmul_gflops(args.repeats))
        print(f"| {2**s:,} | {ch} | {g:,.1f} | {g / mm_now:.0%} |", flush=True)


if __name__ == "__main__":
  main()
