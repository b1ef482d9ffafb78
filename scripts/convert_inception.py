"""Converts pytorch-fid's FID Inception weights (.pth) to a vqtok .npz.

Source file (the TF ``inception-2015-12-05`` graph ported by pytorch-fid,
Heusel et al. 2017 / Seitzer 2020):
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

Usage (needs torch to read the .pth; nothing else here does):
  python scripts/convert_inception.py pt_inception-2015-12-05-6726825d.pth \
      weights/inception_fid.npz
then set ``--config.eval.inception_weights=weights/inception_fid.npz``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint into ``{name: np.ndarray}`` (needs torch)."""
  try:
    import torch  # noqa: PLC0415
  except ImportError:
    sys.exit("reading a .pth file needs PyTorch: pip install torch (CPU build is enough)")
  sd = torch.load(path, map_location="cpu", weights_only=True)
  if "state_dict" in sd and isinstance(sd["state_dict"], dict):
    sd = sd["state_dict"]
  return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def main(argv: list[str] | None = None) -> None:
  """Converts, saves, reloads and runs the network once as a check."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("pth", help="pt_inception-2015-12-05-*.pth from pytorch-fid")
  parser.add_argument("out", help="output .npz")
  args = parser.parse_args(argv)

  # Imported late so `--help` works without JAX.
  from vqtok import files  # noqa: PLC0415
  from vqtok.evaluation.inception import convert_inception_state_dict, feature_fn, load_inception  # noqa: PLC0415

  arrays = convert_inception_state_dict(read_torch_state_dict(args.pth))
  files.write_npz(args.out, arrays)
  n = sum(a.size for a in arrays.values())
  print(f"wrote {args.out}: {len(arrays)} arrays, {n:,} numbers")
  model = load_inception(args.out)
  gray = np.full((1, 64, 64, 3), 128, np.uint8)
  feats = np.asarray(feature_fn(model)(gray))
  print(
    f"check: features of a gray image: shape {feats.shape}, mean {feats.mean():.4f},"
    f" all finite {bool(np.isfinite(feats).all())}"
  )


if __name__ == "__main__":
  main()
