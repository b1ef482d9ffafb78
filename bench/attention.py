"""The ViT's attention: cuDNN's fused kernel (what vqtok asks for on NVIDIA GPUs in bf16/fp16) against XLA's.

Prints the largest differences of the outputs and of the gradients, and the time of one forward+backward
of each, at ``bsq_vit``'s shape by default (1,024 tokens, 12 heads of 64). On a machine where vqtok does
not ask for cuDNN (a CPU, a TPU, float32) both columns are XLA's and the differences are 0.

Run:
  python bench/attention.py [--batch=40] [--tokens=1024] [--heads=12] [--head_dim=64] [--dtype=bfloat16]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

from common import describe_machine  # noqa: E402

from vqtok.models import vit  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=40)
  p.add_argument("--tokens", type=int, default=1024)
  p.add_argument("--heads", type=int, default=12)
  p.add_argument("--head_dim", type=int, default=64)
  p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="bfloat16")
  p.add_argument("--repeats", type=int, default=10)
  args = p.parse_args()
  print(describe_machine())
  dtype = jnp.dtype(args.dtype)
  shape = (args.batch, args.tokens, args.heads, args.head_dim)
  q, k, v = (jax.random.normal(s, shape, dtype) for s in jax.random.split(jax.random.key(0), 3))
  print(f"vqtok asks for: {vit.attention_implementation(dtype, args.head_dim) or 'XLA'} ({args.dtype}, {shape})")

  def loss(attend):
    return jax.jit(jax.value_and_grad(lambda *a: attend(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2)))

  fused, plain = loss(vit.dot_product_attention), loss(jax.nn.dot_product_attention)
  out_f = jax.jit(vit.dot_product_attention)(q, k, v).astype(jnp.float32)
  out_p = jax.jit(jax.nn.dot_product_attention)(q, k, v).astype(jnp.float32)
  print(f"output: max |difference| {float(jnp.abs(out_f - out_p).max()):.3e} of max {float(jnp.abs(out_p).max()):.3e}")
  for name, a, b in zip("qkv", fused(q, k, v)[1], plain(q, k, v)[1], strict=True):
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    print(f"d{name}: max |difference| {float(jnp.abs(a - b).max()):.3e} of max {float(jnp.abs(b).max()):.3e}")
  flops = 4 * args.batch * args.heads * args.tokens**2 * args.head_dim * 3.5  # forward QK and PV, backward 2.5x
  for name, f in (("vqtok's", fused), ("XLA's", plain)):
    jax.block_until_ready(f(q, k, v))
    times = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      jax.block_until_ready(f(q, k, v))
      times.append(time.perf_counter() - t)
    best = min(times)
    rate = flops / best / 1e12
    print(f"{name} attention forward+backward: {best * 1e3:.2f} ms (best of {args.repeats}), {rate:.2f} TFLOP/s")


if __name__ == "__main__":
  main()
