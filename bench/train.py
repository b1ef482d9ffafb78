"""Training-step throughput: images/s and model FLOPs utilisation (MFU).

Run:
  python bench/train.py                          # tiny @64px, titok_s128_pixel @256px
  python bench/train.py --preset vqgan_f16 --batch 4
  python bench/train.py --overhead               # host overhead of the training loop, tiny

Times the real jitted training step of ``vqtok.training`` (tokenizer update,
and with the GAN on, the discriminator update with the adaptive weight), over a
mesh of all local devices, on synthetic batches so the data pipeline is not
measured (bench/data.py measures that). FLOPs per step come from XLA's cost
analysis; MFU divides achieved FLOP/s by a measured f32 matmul throughput.

``--overhead`` measures what the loop adds per step: the time per step of
``train_and_evaluate`` (data pipeline, prefetch, metric checks, logging;
eval, images and checkpoints off) against the bare compiled step on the same
batches held in memory. Loop time per step is the difference of two runs of
different length, so start-up and compilation cancel.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

from common import bandwidth, datasheet_bf16_peak, machine_header, matmul_flops_per_s, xla_cost  # noqa: E402

from vqtok import sharding  # noqa: E402
from vqtok.training import init_train_state, make_train_step  # noqa: E402


def _config(name: str, batch: int, dtype: str | None, lpips: bool):
  config = importlib.import_module(f"configs.{name}").get_config()
  config.training.batch_size = batch
  if dtype:
    config.model.dtype = dtype
  if not lpips:
    config.loss.perceptual_weight = 0.0
  return config


def _perceptual(config, lpips: bool):
  """Random-weight LPIPS (the same cost as the real weights), or None."""
  if not lpips or config.loss.perceptual_weight <= 0:
    return None, None
  from flax import nnx  # noqa: PLC0415

  from vqtok.losses import perceptual  # noqa: PLC0415

  gdef, params = nnx.split(perceptual.LPIPS(rngs=nnx.Rngs(0)))
  return (lambda p, x, y: nnx.merge(gdef, p)(x, y)), params.to_pure_dict()


def _memory(compiled) -> float:
  """Peak bytes of one step by XLA's buffer assignment (per device)."""
  m = compiled.memory_analysis()
  if m is None:
    return float("nan")
  return float(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def _compile(name, batch, dtype, with_gan, lpips, fast=False):
  """(compiled step, state, batch, lpips params, compile seconds) on all local devices."""
  config = _config(name, batch, dtype, lpips)
  mesh = sharding.make_mesh((-1, 1))
  state, static = init_train_state(config, lambda a: sharding.state_shardings(a, mesh))
  s = config.image_size
  x = np.random.default_rng(0).uniform(-1, 1, (batch, s, s, 3)).astype(np.float32)
  b = sharding.global_batch({"image": x}, mesh)
  fn, pparams = _perceptual(config, lpips)
  step = jax.jit(make_train_step(config, static, with_gan=with_gan, perceptual=fn), donate_argnums=0)
  options = {"xla_gpu_autotune_level": 0} if fast and jax.default_backend() == "gpu" else None
  t0 = time.perf_counter()
  lowered = step.lower(state, b, pparams)
  try:
    compiled = lowered.compile(compiler_options=options)
  except Exception:  # noqa: BLE001  (an XLA without the option: compile as usual)
    compiled = lowered.compile()
  return compiled, state, b, pparams, time.perf_counter() - t0, s


def _device_memory() -> dict:
  return jax.local_devices()[0].memory_stats() or {}


def largest_batch(name: str, dtype: str | None, with_gan: bool, lpips: bool, budget: float = 0.85) -> int:
  """The largest batch (a multiple of 8 per device) whose step fits in ``budget`` of device memory.

  Two probe compilations (batch 8 and 32 per device) give XLA's peak memory as
  a line in the batch size; the batch is read off that line.
  """
  limit = _device_memory().get("bytes_limit")
  if not limit:
    raise SystemExit("--batch=max needs a device that reports its memory (a GPU or TPU)")
  n = jax.local_device_count()
  m0, m1 = (_memory(_compile(name, b * n, dtype, with_gan, lpips, fast=True)[0]) for b in (8, 32))
  per_image = (m1 - m0) / 24
  fixed = m0 - 8 * per_image
  per_device = int((budget * limit - fixed) / per_image) // 8 * 8
  print(
    f"{name}: {fixed / 2**30:.2f} GiB fixed + {per_image / 2**20:.1f} MiB per image per device of"
    f" {limit / 2**30:.1f} GiB: batch {per_device} per device",
    flush=True,
  )
  return max(per_device, 8) * n


def bench(name: str, batch: int, steps: int, with_gan: bool, dtype=None, lpips=False, trace=None) -> dict:
  compiled, state, b, pparams, compile_s, s = _compile(name, batch, dtype, with_gan, lpips)
  state, m = compiled(state, b, pparams)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = compiled(state, b, pparams)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  if trace:
    with jax.profiler.trace(trace, create_perfetto_trace=True):
      state, m = compiled(state, b, pparams)
      jax.block_until_ready(m)
  stats = _device_memory()
  return dict(
    flops=xla_cost(compiled),
    bytes=xla_cost(compiled, "bytes accessed"),
    xla_memory=_memory(compiled),
    peak_memory=stats.get("peak_bytes_in_use", float("nan")),
    sec=min(times),
    compile_s=compile_s,
    image=s,
  )


def overhead(name: str, steps: int) -> dict:
  import tempfile  # noqa: PLC0415

  from vqtok import data as data_lib  # noqa: PLC0415
  from vqtok.training import train_and_evaluate  # noqa: PLC0415

  config = importlib.import_module(f"configs.{name}").get_config()
  tc = config.training
  tc.eval_every = tc.image_every = 0
  tc.log_every = tc.checkpoint_every = 10**9  # one log and one checkpoint, at the end
  config.loss.disc_start = 10**9  # one compiled step (G only) in both measurements

  def loop_seconds(n: int) -> float:
    config.training.num_steps = n
    with tempfile.TemporaryDirectory() as workdir:
      t0 = time.perf_counter()
      train_and_evaluate(config, workdir, progress=False)
      return time.perf_counter() - t0

  loop_seconds(2)  # warm the data pipeline's imports and caches
  short, long = loop_seconds(5), loop_seconds(5 + steps)
  per_step_loop = (long - short) / steps
  mesh = sharding.make_mesh(tc.mesh)
  state, static = init_train_state(config, lambda a: sharding.state_shardings(a, mesh))
  it = data_lib.make_dataset(config, split="train", batch_size=tc.batch_size, seed=config.seed)
  batches = [sharding.global_batch({"image": next(it)["image"]}, mesh) for _ in range(steps)]
  step = jax.jit(make_train_step(config, static, with_gan=False), donate_argnums=0)
  state, m = step(state, batches[0], None)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for b in batches:
    state, m = step(state, b, None)
  jax.block_until_ready(m)
  per_step_bare = (time.perf_counter() - t0) / steps
  return dict(loop=per_step_loop, bare=per_step_bare, batch=tc.batch_size, image=config.image_size)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", action="append", help="configs/<name>.py (repeatable)")
  ap.add_argument("--batch", default="0", help="0: 16 for tiny, 2 otherwise; max: the largest that fits")
  ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="model.dtype (default: the preset's)")
  ap.add_argument("--lpips", action="store_true", help="include the perceptual loss (random LPIPS weights)")
  ap.add_argument("--gan_only", action="store_true", help="time only the G+D step")
  ap.add_argument("--trace", help="write a profile of one step per row under this folder")
  ap.add_argument("--steps", type=int, default=3, help="timed steps; the fastest is reported")
  ap.add_argument("--overhead", action="store_true", help="host overhead of the loop per step (tiny by default)")
  args = ap.parse_args(argv)
  args.batch_max = args.batch == "max"
  args.batch = 0 if args.batch_max else int(args.batch)
  if args.overhead:
    machine_header()
    print("| preset | image | batch | loop s/step | bare step s/step | host overhead s/step | overhead |")
    print("|---|---|---|---|---|---|---|")
    for name in args.preset or ["tiny"]:
      r = overhead(name, max(args.steps, 40))
      extra = r["loop"] - r["bare"]
      print(
        f"| {name} | {r['image']} | {r['batch']} | {r['loop']:.4f} | {r['bare']:.4f} | {extra:.4f} |"
        f" {extra / r['bare']:.1%} |",
        flush=True,
      )
    return
  presets = args.preset or ["tiny", "titok_s128_pixel"]
  peak = machine_header()
  sheet = datasheet_bf16_peak() if jax.default_backend() != "cpu" else None
  measured = peak
  if sheet:
    measured = matmul_flops_per_s(8192, dtype="bfloat16")
    print(f"bf16 matmul (8192^3, best of 5): {measured / 1e12:.0f} TFLOP/s; datasheet dense bf16 {sheet / 1e12:.0f}\n")
  print(
    "| preset | image | dtype | batch | step | GFLOP/step | compile s | s/step | img/s | memory GiB | MFU |"
    " compute floor s | memory floor s |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  steps = ["G+D"] if args.gan_only else ["G", "G+D"]
  for name in presets:
    for kind in steps:
      with_gan = kind == "G+D"
      if args.batch_max:
        batch = largest_batch(name, args.dtype, with_gan, args.lpips)
      else:
        batch = args.batch or (16 if name == "tiny" else 2)
      trace = os.path.join(args.trace, f"{name}_{kind.replace('+', '')}") if args.trace else None
      r = bench(name, batch, args.steps, with_gan, args.dtype, args.lpips, trace)
      if not sheet:
        measured = peak = max(peak, matmul_flops_per_s())
      mem = r["peak_memory"] if r["peak_memory"] == r["peak_memory"] else r["xla_memory"]
      print(
        f"| {name} | {r['image']} | {args.dtype or 'float32'} | {batch} | {kind} | {r['flops'] / 1e9:.1f} |"
        f" {r['compile_s']:.1f} | {r['sec']:.3f} | {batch / r['sec']:.1f} | {mem / 2**30:.1f} |"
        f" {r['flops'] / r['sec'] / (sheet or peak):.1%} | {r['flops'] / measured:.3f} |"
        f" {r['bytes'] / bandwidth():.3f} |",
        flush=True,
      )
  basis = f"the datasheet's dense bf16 peak, {sheet / 1e12:.0f} TFLOP/s" if sheet else ""
  basis = basis or f"the best f32 matmul seen, {peak / 1e9:.1f} GFLOP/s"
  print(f"\nMFU is relative to {basis}. Compute floor: FLOPs at the measured matmul rate;")
  print("memory floor: XLA's bytes accessed at the measured device copy rate. Memory: the device's peak.")


if __name__ == "__main__":
  main()
