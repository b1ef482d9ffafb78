"""Image helpers for logging: [-1, 1] floats to uint8, and PNG grids."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


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
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  Image.fromarray(image).save(tmp, format="PNG")
  os.replace(tmp, path)  # never leave a half-written PNG behind
  return path


def reconstruction_grid(eval_fn, state, mesh, batch: dict, *, use_ema: bool, max_images: int = 8) -> np.ndarray:
  """Originals (top row) over eval-mode reconstructions (bottom row), uint8."""
  from vqtok.training import sharding  # noqa: PLC0415

  params = state.ema if (use_ema and state.ema) else state.g_params
  x = sharding.global_batch({"image": batch["image"]}, mesh)["image"]
  x_hat, _ = eval_fn(params, state.g_rest, x)
  valid = np.asarray(batch["valid"]).astype(bool)
  orig = to_uint8(np.asarray(batch["image"]))[valid][:max_images]
  rec = to_uint8(sharding.local_rows(x_hat))[valid][:max_images]
  return grid([list(orig), list(rec)])
