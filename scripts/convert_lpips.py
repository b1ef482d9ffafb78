"""Converts LPIPS-VGG16 weights (torchvision VGG16 + lpips heads) to a vqtok .npz.

Source files (Zhang et al., 2018, arXiv:1801.03924):
* torchvision VGG16 ImageNet weights, the trunk LPIPS uses:
  https://download.pytorch.org/models/vgg16-397923af.pth
* the learned linear heads of the lpips package, version 0.1:
  https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth
  (also inside ``pip install lpips`` at ``lpips/weights/v0.1/vgg.pth``).

Usage (needs torch to read the .pth files; nothing else here does):
  python scripts/convert_lpips.py vgg16-397923af.pth vgg.pth weights/lpips_vgg.npz
then set ``--config.loss.lpips_weights=weights/lpips_vgg.npz``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_inception import read_torch_state_dict


def main(argv: list[str] | None = None) -> None:
  """Converts, saves, reloads and runs the distance once as a check."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("vgg_pth", help="torchvision vgg16-397923af.pth")
  parser.add_argument("lin_pth", help="lpips weights/v0.1/vgg.pth")
  parser.add_argument("out", help="output .npz")
  args = parser.parse_args(argv)

  from flax import nnx  # noqa: PLC0415

  from vqtok import files  # noqa: PLC0415
  from vqtok.losses.perceptual import convert_lpips_state_dict, load_lpips  # noqa: PLC0415

  arrays = convert_lpips_state_dict(read_torch_state_dict(args.vgg_pth), read_torch_state_dict(args.lin_pth))
  files.write_npz(args.out, arrays)
  n = sum(a.size for a in arrays.values())
  print(f"wrote {args.out}: {len(arrays)} arrays, {n:,} numbers")
  model = load_lpips(args.out)
  distance = nnx.jit(lambda m, a, b: m(a, b))
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
  d_same = float(distance(model, x, x)[0])
  y = np.clip(x + 0.2 * rng.standard_normal(x.shape), -1, 1).astype(np.float32)
  d_noise = float(distance(model, x, y)[0])
  print(f"check: LPIPS(x, x) = {d_same:.2e}, LPIPS(x, x + noise) = {d_noise:.4f}")


if __name__ == "__main__":
  main()
