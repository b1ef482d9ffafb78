"""Training-step throughput: images/s and model FLOPs utilisation (MFU).

Run:
  python bench/train.py                          # tiny @64px, titok_s128 @256px
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

from common import machine_header, matmul_flops_per_s  # noqa: E402  (bench/common.py)
from models import _flops  # noqa: E402  (bench/models.py)

from vqtok import sharding  # noqa: E402
from vqtok.training import init_train_state, make_train_step  # noqa: E402


def bench(name: str, batch: int, steps: int, with_gan: bool) -> dict:
  config = importlib.import_module(f"configs.{name}").get_config()
  config.training.batch_size = batch
  config.loss.perceptual_weight = 0.0  # LPIPS weights are not shipped
  mesh = sharding.make_mesh((-1, 1))
  state, static = init_train_state(config, lambda a: sharding.state_shardings(a, mesh))
  s = config.image_size
  x = np.random.default_rng(0).uniform(-1, 1, (batch, s, s, 3)).astype(np.float32)
  b = sharding.global_batch({"image": x}, mesh)
  step = jax.jit(make_train_step(config, static, with_gan=with_gan), donate_argnums=0)
  t0 = time.perf_counter()
  compiled = step.lower(state, b, None).compile()
  compile_s = time.perf_counter() - t0
  state, m = compiled(state, b, None)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = compiled(state, b, None)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return dict(flops=_flops(compiled), sec=min(times), compile_s=compile_s, image=s)


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
  ap.add_argument("--batch", type=int, default=0, help="0: 16 for tiny, 2 otherwise")
  ap.add_argument("--steps", type=int, default=3, help="timed steps; the fastest is reported")
  ap.add_argument("--overhead", action="store_true", help="host overhead of the loop per step (tiny by default)")
  args = ap.parse_args(argv)
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
  presets = args.preset or ["tiny", "titok_s128"]
  peak = machine_header()
  print("| preset | image | batch | step | GFLOP/step | compile s | s/step | img/s | MFU |")
  print("|---|---|---|---|---|---|---|---|---|")
  for name in presets:
    batch = args.batch or (16 if name == "tiny" else 2)
    for with_gan in (False, True):
      r = bench(name, batch, args.steps, with_gan)
      peak = max(peak, matmul_flops_per_s())
      achieved = r["flops"] / r["sec"]
      print(
        f"| {name} | {r['image']} | {batch} | {'G+D (GAN)' if with_gan else 'G only'} |"
        f" {r['flops'] / 1e9:.1f} | {r['compile_s']:.1f} | {r['sec']:.3f} | {batch / r['sec']:.2f} |"
        f" {achieved / peak:.1%} |",
        flush=True,
      )
  print(f"\nMFU is relative to the best f32 matmul throughput seen: {peak / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
  main()
