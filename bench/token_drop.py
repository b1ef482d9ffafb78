"""Held-out PSNR against the number of tokens decoded, for a tiny 1-D tokenizer trained with and without tail drop.

Run (about 5 min on 2 CPU cores at the defaults):
  python bench/token_drop.py                               # writes bench/token_drop.png and .json
  python bench/token_drop.py --steps 2000 --drops tail,nested,none

Trains the tiny preset (configs/tiny.py: the bundled photos, no GAN) as a 1-D
tokenizer at the sizes of tests/test_token_drop_training.py (vit1d at 16 px:
width 64, 2 blocks, patch 4, fixed sin-cos grid positions, 8 latent tokens,
FSQ 8*8*8 codes, L2 alone, lr 1.5e-3, no weight decay) for 800 steps, once per
``model.token_drop`` named in ``--drops``, then encodes the 20 held-out crops
and decodes each from its first k tokens (``Tokenizer.decode(num_tokens=k)``),
k = 1, 2, 4, 8. With tail drop (One-D-Piece's) PSNR rises with k; without one,
the decoder has only seen all the tokens, and short prefixes decode worse. At
this size and length the ViT is far from converged (below the PSNR of each
image's mean colour, 17.8 dB): read the shape of the curves, not their level.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]

from flax import nnx  # noqa: E402

from configs import tiny  # noqa: E402
from vqtok import config as config_lib  # noqa: E402
from vqtok import images as images_lib  # noqa: E402
from vqtok import load  # noqa: E402
from vqtok.data import pipeline  # noqa: E402
from vqtok.evaluation import metrics  # noqa: E402
from vqtok.training.loop import train_and_evaluate  # noqa: E402


def make_config(drop: str, args: argparse.Namespace) -> object:
  """The tiny preset made a 1-D tokenizer of the sizes in ``args``."""
  c = tiny.get_config()
  c.image_size = args.image_size
  w = args.width
  c.model.update(encoder="vit1d", width=w, depth=args.depth, mlp_dim=2 * w, num_heads=w // 32, patch_size=args.patch)
  c.model.update(num_latent_tokens=args.tokens, token_drop=drop)
  levels = tuple(int(v) for v in args.levels.split(","))
  c.quantizer.levels, c.model.code_dim = levels, len(levels)
  c.model.posemb = args.posemb
  c.loss.l1_weight = args.l1
  c.optimizer.lr = args.lr
  c.optimizer.weight_decay = 0.0
  steps = args.steps
  c.training.update(num_steps=steps, eval_every=0, image_every=0, checkpoint_every=steps, log_every=50, mesh=(1, 1))
  c.eval.batch_size = 20  # the 20 held-out crops in one batch
  return config_lib.validate_config(c)


def held_out(config) -> np.ndarray:
  batch = next(iter(pipeline.make_dataset(config, split="eval", batch_size=config.eval.batch_size)))
  return np.asarray(batch["image"], np.float32)[np.asarray(batch["valid"]).astype(bool)]


def psnr_by_prefix(workdir: str, images: np.ndarray, lengths: list[int]) -> list[float]:
  tok = load.load_tokenizer(workdir)
  ids = nnx.jit(lambda t, x: t.encode(x))(tok, jnp.asarray(images))
  decode = nnx.jit(lambda t, i, k: t.decode(i, num_tokens=k), static_argnums=2)
  real = images_lib.to_uint8(images)
  out = []
  for k in lengths:
    fake = images_lib.to_uint8(np.clip(np.asarray(decode(tok, ids, k)), -1, 1))
    out.append(float(np.mean(np.asarray(metrics.psnr(real, fake)))))
  return out


def plot(results: dict, lengths: list[int], path: str, title: str) -> None:
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
  for drop, psnr in results.items():
    ax.plot(lengths, psnr, marker="o", label=f"token_drop={drop or 'none'}")
  ax.set_xscale("log", base=2)
  ax.set_xticks(lengths, [str(k) for k in lengths])
  ax.set_xlabel(f"tokens decoded (first k of {lengths[-1]})")
  ax.set_ylabel("held-out PSNR (dB)")
  ax.set_title(f"tiny 1-D tokenizer, {title}", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=800)
  p.add_argument("--image_size", type=int, default=16)
  p.add_argument("--patch", type=int, default=4)
  p.add_argument("--tokens", type=int, default=8)
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--depth", type=int, default=2)
  p.add_argument("--lr", type=float, default=1.5e-3)
  p.add_argument("--levels", default="8,8,8", help="FSQ levels (one token: one code of their product)")
  p.add_argument("--posemb", default="sincos2d", help="model.posemb of the grid (learn | sincos2d)")
  p.add_argument("--l1", type=float, default=0.0, help="loss.l1_weight (L2's is the preset's 1)")
  p.add_argument("--drops", default="tail,none", help="model.token_drop values; 'none' for ''")
  p.add_argument("--out", default=os.path.join(ROOT, "bench", "token_drop.png"))
  p.add_argument("--workdir", default="", help="where the runs go (default: a temporary folder)")
  args = p.parse_args()
  lengths = [2**i for i in range(args.tokens.bit_length()) if 2**i <= args.tokens]
  root = args.workdir or tempfile.mkdtemp(prefix="token_drop_")
  results, timings = {}, {}
  warnings.simplefilter("ignore", UserWarning)  # the untrained-prefix warning, expected for 'none'
  for name in args.drops.split(","):
    drop = "" if name == "none" else name
    config = make_config(drop, args)
    t0 = time.perf_counter()
    train_and_evaluate(config, os.path.join(root, name), progress=False)
    timings[name] = round(time.perf_counter() - t0, 1)
    results[drop] = psnr_by_prefix(os.path.join(root, name), held_out(config), lengths)
    print(f"token_drop={name}: " + ", ".join(f"k={k} {v:.2f} dB" for k, v in zip(lengths, results[drop])), flush=True)
  plot(results, lengths, args.out, f"{args.steps} steps, {args.image_size} px, {args.tokens} tokens")
  record = {
    **vars(args),
    "lengths": lengths,
    "psnr": results,
    "train_seconds": timings,
    "devices": jax.devices()[0].platform,
  }
  with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
    json.dump(record, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
