#!/usr/bin/env python
"""Golden values of PyTorch's F.interpolate (area, bicubic) between VAR's scales.

Usage: /tmp/torchenv/bin/python scripts/parity/gen_interpolate.py [--out tests/goldens/interpolate/golden.npz]

For every pair of sizes in VAR's default schedule (1, 2, 3, 4, 5, 6, 8, 10,
13, 16), resizes one random (1, 1, n, n) input per size with torch's own
``F.interpolate(mode="area")`` and ``F.interpolate(mode="bicubic",
align_corners=False)`` (the calls VAR's models/quant.py makes) and stores
inputs and outputs channels-last. tests/test_interpolate.py compares
vqtok.quantizers.interpolate.resize against them.
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F

SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out", default="tests/goldens/interpolate/golden.npz")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  rng = np.random.default_rng(args.seed)
  arrays = {"torch_version": np.asarray(torch.__version__)}
  for n_in in SIZES:
    x = rng.standard_normal((1, 1, n_in, n_in)).astype(np.float32)
    arrays[f"in_{n_in}"] = x.transpose(0, 2, 3, 1)
    t = torch.from_numpy(x)
    for n_out in SIZES:
      area = F.interpolate(t, size=(n_out, n_out), mode="area")
      cubic = F.interpolate(t, size=(n_out, n_out), mode="bicubic", align_corners=False)
      arrays[f"area_{n_in}_{n_out}"] = area.numpy().transpose(0, 2, 3, 1)
      arrays[f"bicubic_{n_in}_{n_out}"] = cubic.numpy().transpose(0, 2, 3, 1)
    # One non-square output, to catch swapped axes.
    arrays[f"bicubic_{n_in}_5x13"] = F.interpolate(t, size=(5, 13), mode="bicubic").numpy().transpose(0, 2, 3, 1)
    arrays[f"area_{n_in}_5x13"] = F.interpolate(t, size=(5, 13), mode="area").numpy().transpose(0, 2, 3, 1)
  np.savez_compressed(args.out, **arrays)
  print(f"wrote {len(arrays)} arrays to {args.out}")


if __name__ == "__main__":
  main()
