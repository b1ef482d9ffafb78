"""Image helpers: [-1, 1] floats to uint8, PNG grids, and PNG files written atomically."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vqtok import files


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Maps float images in [-1, 1] to uint8 [0, 255] (rounded, clipped)."""
  x = (np.asarray(images, np.float32) + 1.0) * 127.5
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def grid(rows: list[np.ndarray], *, pad: int = 2) -> np.ndarray:
  """Tiles equal-length lists of (H, W, 3) uint8 images into one image."""
  n = len(rows[0])
  h, w = rows[0][0].shape[:2]
  out = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
  for r, row in enumerate(rows):
    for c, im in enumerate(row):
      y, x = pad + r * (h + pad), pad + c * (w + pad)
      out[y : y + h, x : x + w] = im
  return out


def save_png(image: np.ndarray, path: str) -> str:
  """Writes ``image`` (uint8) to ``path`` via a temporary file; returns ``path``."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with files.atomic_path(path) as tmp:  # never leave a half-written PNG behind
    Image.fromarray(image).save(tmp, format="PNG")
  return path
