"""Encode rate of a full-size Cosmos DV4x8x8 (configs/cosmos_dv488.py) with random weights, in frames/s.

Builds the preset's tokenizer (112M parameters, the reference's count) with random weights, jits its
encode (video -> ids) and times it on random clips of 1 + 4k frames at a given size, after one
warm-up call (the compile). An imported tokenizer (``python -m vqtok.convert cosmos``) runs the same
program; only the weights differ. Frames/s counts input frames.

Run:
  python bench/cosmos_encode.py [--frames=17] [--size=256] [--batch=1] [--repeats=3] [--dtype=bfloat16]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

from common import describe_machine  # noqa: E402

from vqtok import models  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--frames", type=int, default=17, help="frames a clip (1 + 4k)")
  p.add_argument("--size", type=int, default=256, help="frame height and width (a multiple of 8)")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="model.dtype (activations)")
  args = p.parse_args()
  print(describe_machine())
  config = importlib.import_module("configs.cosmos_dv488").get_config()
  config.model.dtype = args.dtype
  tok = models.build_tokenizer(config, rngs=nnx.Rngs(0))
  graph, state = nnx.split(tok)

  @jax.jit
  def encode(state, x):
    return nnx.merge(graph, state).encode(x)

  x = jnp.asarray(
    np.random.default_rng(0).uniform(-1, 1, (args.batch, args.frames, args.size, args.size, 3)), jnp.float32
  )
  t = time.perf_counter()
  ids = encode(state, x).block_until_ready()
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    encode(state, x).block_until_ready()
    times.append(time.perf_counter() - t)
  best = min(times)
  frames = args.batch * args.frames
  print(
    f"Cosmos DV4x8x8 (random weights, {args.dtype}), {args.batch} x {args.frames} frames of {args.size}x{args.size}"
    f" -> ids {tuple(ids.shape)}: first call (compile + run) {compile_s:.1f} s; encode {best:.2f} s"
    f" (best of {args.repeats}) = {frames / best:.2f} frames/s"
  )


if __name__ == "__main__":
  main()
