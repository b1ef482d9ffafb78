"""Cost of each feature-alignment loss per training step: the tiny preset with and without it.

Run:
  python bench/alignment.py                      # tiny @64px, batch 16, a 4-block width-128 teacher
  python bench/alignment.py --teacher=S          # a ViT-S-sized teacher (12 blocks, width 384)
  python bench/alignment.py --steps=20 --rounds=5

Times the real jitted training step (``make_train_step``, GAN off as the tiny
preset trains) on one synthetic batch held in memory, for

* ``tiny``: configs/tiny.py (FSQ, f4: a 16 x 16 latent grid at 64 px), and with
  VA-VAE's VF loss (``loss.vf_weight=0.1``, adaptive: three backward passes), and
  with VQ-KD's feature reconstruction (``loss.feature_rec_weight=1``, the task
  layer Linear-tanh-Linear at the teacher's width);
* ``tiny FQGAN``: the same CNN as a Dual factorised tokenizer (two adapter heads
  of 2 blocks, two 1024-code l2 VQ sub-codebooks of 4, disentanglement 0.1), and
  with FQGAN's semantic loss (``loss.semantic_weight=0.5``: a 3-block feature head
  at the teacher's width on the semantic sub-code, InfoNCE on class tokens).

The teacher is a random-weight DINOv2 of patch 4 at 64 px (its 16 x 16 patch
grid is the tokenizer's), run frozen inside the step. Configurations are timed
in interleaved rounds and the fastest round of each kept, since the machine is
shared: read the ratios. The ``teacher alone`` row times the teacher's forward
on the batch, the part of each loss's cost that does not depend on the loss.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

from common import describe_machine  # noqa: E402

from vqtok import config as config_lib  # noqa: E402
from vqtok import feature_teacher, sharding  # noqa: E402
from vqtok.models import dinov2  # noqa: E402
from vqtok.training.state import init_train_state  # noqa: E402
from vqtok.training.step import make_train_step  # noqa: E402

#: Teacher sizes: (width, depth, heads).
TEACHERS = {"small": (128, 4, 2), "S": (384, 12, 6)}


def teacher_dir(path: str, size: str, resolution: int) -> str:
  width, depth, heads = TEACHERS[size]
  grid = resolution // 4
  sizes = dict(width=width, depth=depth, mlp_dim=4 * width, num_heads=heads, patch_size=4, pos_grid=grid)
  module = dinov2.DINOv2(**sizes, rngs=nnx.Rngs(0))
  config = {
    "teacher": "dinov2",
    **sizes,
    "num_register_tokens": 0,
    "interpolate_offset": 0.1,
    "resize_size": resolution,
    "resolution": resolution,
    "mean": list(dinov2.IMAGENET_MEAN),
    "std": list(dinov2.IMAGENET_STD),
  }
  return feature_teacher.save(module, ml_collections.ConfigDict(config), path, metadata={}, overwrite=True)


def configs(teacher: str, width: int) -> dict[str, ml_collections.ConfigDict]:
  """Name -> validated config: each loss next to the model it needs without it."""
  from configs.tiny import get_config  # noqa: PLC0415

  def make(fields: dict, *, factorized: bool = False, with_teacher: bool = False) -> ml_collections.ConfigDict:
    c = get_config()
    if factorized:
      c.quantizer = ml_collections.ConfigDict(
        {
          "type": "factorized",
          "num_groups": 2,
          "disentangle_weight": 0.1,
          "quantizer": {"type": "vq", "codebook_size": 1024, "l2_normalize": True},
        }
      )
      fields = {
        "model.z_channels": 16,
        "model.code_dim": 8,
        "model.factorized_heads": 2,
        "model.adapter_depth": 2,
        "model.adapter_num_heads": 2,
        "model.feature_head_dims": (width,),
        "model.feature_head_depth": 3,
        **fields,
      }
    for dotted, v in fields.items():
      section, name = dotted.split(".")
      c[section][name] = v
    c.feature_teacher = teacher if with_teacher else ""
    return config_lib.validate_config(c)

  rec = {"model.feature_dim": width, "model.feature_head_hidden": width, "loss.feature_rec_weight": 1.0}
  return {
    "tiny": make({}),
    "tiny + VA-VAE VF loss": make({"model.feature_dim": width, "loss.vf_weight": 0.1}, with_teacher=True),
    "tiny + VQ-KD feature rec.": make(rec, with_teacher=True),
    "tiny FQGAN": make({}, factorized=True),
    "tiny FQGAN + semantic loss": make({"loss.semantic_weight": 0.5}, factorized=True, with_teacher=True),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--teacher", choices=sorted(TEACHERS), default="small")
  p.add_argument("--steps", type=int, default=10, help="timed steps per round")
  p.add_argument("--rounds", type=int, default=3)
  args = p.parse_args()
  print(describe_machine(), flush=True)
  width = TEACHERS[args.teacher][0]
  tmp = tempfile.mkdtemp(prefix="vqtok-bench-alignment-")
  teacher = teacher_dir(os.path.join(tmp, "teacher"), args.teacher, 64)
  mesh = sharding.make_mesh((-1, 1))
  runs = {}
  for name, config in configs(teacher, width).items():
    state, static = init_train_state(config, lambda a: sharding.state_shardings(a, mesh))
    s, b = config.image_size, config.training.batch_size
    x = np.random.default_rng(0).uniform(-1, 1, (b, s, s, 3)).astype(np.float32)
    batch = sharding.global_batch({"image": x}, mesh)
    loaded, arrays = None, None
    if config.feature_teacher:
      from vqtok.training.loop import read_feature_teacher  # noqa: PLC0415

      loaded, arrays = read_feature_teacher(config)
    step = jax.jit(make_train_step(config, static, with_gan=False, feature_teacher=loaded))
    t0 = time.perf_counter()
    state, m = step(state, batch, None, None, arrays)
    jax.block_until_ready(m["loss"])
    print(f"{name}: compiled and ran one step in {time.perf_counter() - t0:.1f} s", flush=True)
    runs[name] = [step, state, batch, arrays, float("inf")]
  module, tconfig = feature_teacher.read(teacher)
  graphdef, tstate = nnx.split(module)
  alone = jax.jit(lambda st, im: feature_teacher.outputs(nnx.merge(graphdef, st), tconfig, im, (-1.0, 1.0), "bilinear"))
  batch = runs["tiny"][2]
  jax.block_until_ready(alone(tstate, batch["image"]))
  best_alone = float("inf")
  for _ in range(args.rounds):
    for run in runs.values():
      step, state, batch, arrays, _ = run
      t0 = time.perf_counter()
      for _ in range(args.steps):
        state, m = step(state, batch, None, None, arrays)
      jax.block_until_ready(m["loss"])
      run[1], run[4] = state, min(run[4], (time.perf_counter() - t0) / args.steps)
    t0 = time.perf_counter()
    for _ in range(args.steps):
      out = alone(tstate, batch["image"])
    jax.block_until_ready(out)
    best_alone = min(best_alone, (time.perf_counter() - t0) / args.steps)
  w, d, h = TEACHERS[args.teacher]
  print(f"\nteacher: random DINOv2, width {w}, {d} blocks, patch 4 at 64 px; batch 16; fastest of {args.rounds} rounds")
  print("| configuration | ms / step | vs. without the loss |\n|---|---:|---:|")
  base = {"tiny": runs["tiny"][4], "tiny FQGAN": runs["tiny FQGAN"][4]}
  for name, run in runs.items():
    ref = base["tiny FQGAN" if "FQGAN" in name else "tiny"]
    ratio = "" if run[4] == ref else f"x{run[4] / ref:.2f} (+{(run[4] - ref) * 1e3:.0f} ms)"
    print(f"| {name} | {run[4] * 1e3:.0f} | {ratio} |")
  print(f"| teacher alone (forward) | {best_alone * 1e3:.0f} | |")


if __name__ == "__main__":
  main()
