"""Step time of TiTok's two training stages (configs/titok_*.py:stage1 / :stage2).

Run:
  python bench/titok_stages.py                       # titok_s128, batch 2, 256 px
  python bench/titok_stages.py --preset titok_b64 --batch 8 --steps 5

Times the real jitted step of ``vqtok.training`` on a synthetic batch, with
random weights of the same shapes as the real ones: stage 1 with a full-size
MaskGIT VQGAN teacher encoding every batch (cross-entropy on the proxy-code
logits, no pixel decoder); stage 2 with encoder and quantizer frozen, before
the discriminator starts (L2 + LPIPS) and after it (+ GAN, discriminator update).
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

from common import machine_header, random_lpips, xla_cost  # noqa: E402
from flax import nnx  # noqa: E402

from vqtok import models  # noqa: E402
from vqtok.training import teacher as teacher_lib  # noqa: E402
from vqtok.training.state import init_train_state  # noqa: E402
from vqtok.training.step import make_train_step  # noqa: E402


def _teacher(config):
  maskgit = importlib.import_module("configs.maskgit_vqgan").get_config()
  maskgit.image_size = config.image_size
  gdef, state = nnx.split(models.build_tokenizer(maskgit, rngs=nnx.Rngs(1)))
  return teacher_lib.Teacher(gdef, "random"), state.to_pure_dict()


def bench(preset: str, stage: str, batch: int, steps: int, with_gan: bool) -> dict:
  config = importlib.import_module(f"configs.{preset}").get_config(stage)
  config.training.batch_size = batch
  state, static = init_train_state(config)
  teacher, t_arrays = _teacher(config) if stage == "stage1" else (None, None)
  fn, p_params = random_lpips() if stage == "stage2" else (None, None)
  step = jax.jit(make_train_step(config, static, with_gan=with_gan, perceptual=fn, teacher=teacher), donate_argnums=0)
  s = config.image_size
  x = {"image": np.random.default_rng(0).uniform(-1, 1, (batch, s, s, 3)).astype(np.float32)}
  t0 = time.perf_counter()
  lowered = step.lower(state, x, p_params, t_arrays)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  state, m = compiled(state, x, p_params, t_arrays)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = compiled(state, x, p_params, t_arrays)
  jax.block_until_ready(m)
  dt = (time.perf_counter() - t0) / steps
  return {"compile_s": compile_s, "s_per_step": dt, "img_per_s": batch / dt, "flops": xla_cost(lowered)}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="titok_s128")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--steps", type=int, default=3)
  args = p.parse_args()
  peak = machine_header()
  for stage, with_gan, what in [
    ("stage1", False, "teacher codes + CE"),
    ("stage2", False, "L2 + LPIPS, before disc_start"),
    ("stage2", True, "L2 + LPIPS + GAN"),
  ]:
    r = bench(args.preset, stage, args.batch, args.steps, with_gan)
    print(
      f"{args.preset}:{stage} ({what}) batch {args.batch}: {r['s_per_step']:.2f} s/step,"
      f" {r['img_per_s']:.2f} img/s, {r['flops'] / 1e9:.0f} GFLOP/step, MFU {r['flops'] / r['s_per_step'] / peak:.0%}"
      f" (compile {r['compile_s']:.0f} s)",
      flush=True,
    )


if __name__ == "__main__":
  main()
