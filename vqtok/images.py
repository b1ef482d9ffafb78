"""Image helpers: [-1, 1] floats to uint8, PNG grids, and PNG and mp4 files written atomically."""

from __future__ import annotations

import fractions
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


def save_mp4(frames: np.ndarray, path: str, *, fps: float, crf: int = 17) -> str:
  """Writes uint8 frames ``(T, H, W, 3)`` as an H.264 mp4 (yuv420p, PyAV) via a temporary file; returns ``path``.

  ``crf`` 17 is near-transparent; H.264 in yuv420p is lossy and needs an
  even width and height (PNG frames are the exact pixels).
  """
  try:
    import av  # noqa: PLC0415  (only video needs FFmpeg)
  except ImportError as e:
    raise ValueError("writing mp4 needs PyAV: pip install av (or write PNG frames)") from e
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
  h, w = frames.shape[1:3]
  if h % 2 or w % 2:
    raise ValueError(f"H.264 mp4 (yuv420p) needs an even width and height, got {w}x{h}: write PNG frames instead")
  if not fps > 0:
    raise ValueError(f"fps must be positive, got {fps!r}")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with files.atomic_path(path) as tmp, av.open(tmp, "w", format="mp4") as container:
    stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.options = {"crf": str(int(crf))}
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
    container.mux(stream.encode())
  return path
