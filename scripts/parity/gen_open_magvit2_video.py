#!/usr/bin/env python
"""Golden outputs of Open-MAGVIT2's causal video Encoder and Decoder at a reduced width (the layout of vqtok's
causal video CNN, ``model.temporal_downsample`` with ``video_norm="clip"``).

Usage: /tmp/torchenv/bin/python gen_open_magvit2_video.py /path/to/SEED-Voken [--out DIR]

The model is the reference's own ``Encoder`` / ``Decoder`` of
src/Open_MAGVIT2/modules/diffusionmodules/improved_video_model.py (imported
from the checkout, nothing copied) with ch 32 (its GroupNorms have 32 groups),
ch_mult (1, 2, 2): level 0 downsamples space only, level 1 space and time
(its rule: stride (2, 2, 2) where ch_mult is not 1), one res block, z 4. The
weights are too large to commit (2.9M numbers), so they are drawn from
``numpy.random.default_rng(seed)`` in state-dict order (``keys.json`` lists
names and shapes) and the test draws the same numbers: every parameter random,
norm scales around 1. The goldens are the encoder's latent of a 5-frame and
a 1-frame clip and the decoder's output from each latent, float64.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="TencentARC/SEED-Voken checkout root")
  p.add_argument("--out", default="tests/goldens/open-magvit2-video")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args()


#: The reduced model; tests/test_video_tokenizer.py builds vqtok's from the same numbers.
REDUCED = dict(ch=32, out_ch=3, in_channels=3, num_res_blocks=1, z_channels=4, ch_mult=(1, 2, 2), resolution=16)
#: The reference's own example (its __main__): 128 px, ch 128, ch_mult 1-2-2-4, 4 res blocks, 18 LFQ bits.
FULL = dict(ch=128, out_ch=3, in_channels=3, num_res_blocks=4, z_channels=18, ch_mult=(1, 2, 2, 4), resolution=128)


def draw(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
  """The weights the test draws too: N(0, 0.2) for kernels, N(0, 0.5) for vectors, GroupNorm scales + 1."""
  v = rng.standard_normal(shape) * (0.2 if len(shape) > 1 else 0.5)
  return v + 1.0 if "norm" in name and name.endswith(".weight") else v


def main():
  args = parse()
  sys.path.insert(0, os.path.join(os.path.abspath(args.ref), "src", "Open_MAGVIT2", "modules", "diffusionmodules"))
  from improved_video_model import Decoder, Encoder  # noqa: PLC0415

  enc, dec = Encoder(**REDUCED).double(), Decoder(**REDUCED).double()
  rng = np.random.default_rng(args.seed)
  keys = {}
  for prefix, m in (("encoder", enc), ("decoder", dec)):
    sd = m.state_dict()
    keys[prefix] = [[k, list(v.shape)] for k, v in sd.items()]
    m.load_state_dict({k: torch.from_numpy(draw(rng, k, tuple(v.shape))) for k, v in sd.items()})
  x = rng.uniform(-1.0, 1.0, (1, 3, 5, 16, 16))
  with torch.no_grad():
    z = enc(torch.from_numpy(x))
    z1 = enc(torch.from_numpy(x[:, :, :1]))
    y, y1 = dec(z), dec(z1)
  os.makedirs(args.out, exist_ok=True)
  np.savez_compressed(
    os.path.join(args.out, "golden.npz"),
    x=x.astype(np.float32),
    z=z.numpy(),
    y=y.numpy().astype(np.float32),
    z1=z1.numpy(),
    y1=y1.numpy().astype(np.float32),
  )
  full = {"encoder": sum(p.numel() for p in Encoder(**FULL).parameters())}
  full["decoder"] = sum(p.numel() for p in Decoder(**FULL).parameters())
  with open(os.path.join(args.out, "keys.json"), "w") as f:
    json.dump({"seed": args.seed, "reduced": REDUCED, "keys": keys, "full": FULL, "full_params": full}, f, indent=1)
  print(z.shape, y.shape, full)


if __name__ == "__main__":
  main()
