"""Resizing that gives PyTorch's ``F.interpolate`` values, for NHWC arrays.

Multi-scale tokenizers (VAR, arXiv:2404.02905) move the residual between
scales with ``F.interpolate(..., size=(h, w))`` in ``mode="area"`` (down) and
``mode="bicubic"`` (up). ``jax.image.resize`` computes neither: its cubic
kernel uses a = -0.5 and antialiases when shrinking, and it has no adaptive
average pooling. Imported tokenizers only give their authors' token ids if the
resizing is the same, so both modes are written here from PyTorch's
definitions:

* ``area`` is adaptive average pooling: output cell ``i`` of ``n_out`` averages
  input cells ``floor(i * n_in / n_out)`` up to ``ceil((i + 1) * n_in / n_out)``
  (exclusive); cells overlap when the ratio is not an integer.
* ``bicubic`` (``align_corners=False``, output size given) samples at
  ``x = (i + 0.5) * n_in / n_out - 0.5`` with Keys' cubic kernel at
  ``A = -0.75`` on the four neighbours ``floor(x) - 1 .. floor(x) + 2``,
  indices clamped to the border; no antialiasing in either direction.
* ``nearest`` (the legacy mode, ``F.interpolate``'s default) takes input cell
  ``min(floor(i * n_in / n_out), n_in - 1)``, the ratio in float32
  (``nearest_idx`` in PyTorch's UpSample.h); FQGAN resizes its batch for the
  CLIP and DINOv2 teachers this way.

All are separable, so each axis is one small ``(n_out, n_in)`` matrix built
with NumPy at trace time (static shapes) and applied with a float32 matmul.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

#: PyTorch's bicubic coefficient (``upsample_bicubic2d``); Keys' kernel.
CUBIC_A = -0.75
MODES = ("area", "bicubic", "bilinear", "nearest")


def _check_size(n: int, what: str) -> None:
  if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
    raise ValueError(f"resize: {what} must be a positive int; got {n!r}")


@functools.cache
def area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """``(n_out, n_in)`` float32 weights of adaptive average pooling along one axis."""
  _check_size(n_in, "input size")
  _check_size(n_out, "output size")
  w = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    # Integer forms of floor(i * n_in / n_out) and ceil((i + 1) * n_in / n_out).
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)
    w[i, start:end] = np.float32(1.0) / np.float32(end - start)
  w.setflags(write=False)  # cached: shared by every caller
  return w


def cubic_weights(t: np.ndarray, a: float = CUBIC_A) -> np.ndarray:
  """Keys' cubic kernel at the four taps ``-1, 0, 1, 2`` for fractions ``t``.

  Evaluated in float32 as PyTorch does (its opmath type for float input).
  Returns shape ``t.shape + (4,)``.
  """
  t = np.asarray(t, np.float32)
  a = np.float32(a)
  one = np.float32(1.0)

  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + one

  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

  return np.stack([far(t + one), near(t), near(one - t), far((one - t) + one)], axis=-1)


@functools.cache
def bicubic_matrix(n_in: int, n_out: int, scale_factor: float | None = None) -> np.ndarray:
  """``(n_out, n_in)`` float32 weights of PyTorch's bicubic resize along one axis.

  ``scale_factor``: as ``F.interpolate(..., scale_factor=s)`` without
  ``recompute_scale_factor``: PyTorch then samples at ``(i + 0.5) / s - 0.5``
  (``area_pixel_compute_scale``: ``float(1.0 / s)``) rather than at the
  ratio of the sizes; DINOv2's position embeddings are resized this way.
  """
  _check_size(n_in, "input size")
  _check_size(n_out, "output size")
  scale = np.float32(n_in / n_out if scale_factor is None else 1.0 / scale_factor)
  # No clamp of negative source positions for cubic (unlike linear modes).
  src = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
  base = np.floor(src)
  taps = cubic_weights(src - base)
  w = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    for k in range(4):
      j = min(max(int(base[i]) - 1 + k, 0), n_in - 1)
      w[i, j] += taps[i, k]
  w.setflags(write=False)  # cached: shared by every caller
  return w


@functools.cache
def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """``(n_out, n_in)`` float32 weights of PyTorch's bilinear resize (``align_corners=False``) along one axis.

  Samples at ``x = max((i + 0.5) * n_in / n_out - 0.5, 0)`` (linear modes clamp
  negative positions) between ``floor(x)`` and the next index, clamped to the
  border; no antialiasing (VA-VAE resizes its batch for DINOv2 this way).
  """
  _check_size(n_in, "input size")
  _check_size(n_out, "output size")
  scale = np.float32(n_in / n_out)
  src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
  lo = np.minimum(src.astype(np.int64), n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = (src - lo.astype(np.float32)).astype(np.float32)
  w = np.zeros((n_out, n_in), np.float32)
  np.add.at(w, (np.arange(n_out), lo), np.float32(1) - frac)
  np.add.at(w, (np.arange(n_out), hi), frac)
  w.setflags(write=False)  # cached: shared by every caller
  return w


@functools.cache
def nearest_matrix(n_in: int, n_out: int) -> np.ndarray:
  """``(n_out, n_in)`` one-hot float32 rows of PyTorch's ``mode="nearest"`` along one axis."""
  _check_size(n_in, "input size")
  _check_size(n_out, "output size")
  scale = np.float32(n_in) / np.float32(n_out)
  src = np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)
  w = np.zeros((n_out, n_in), np.float32)
  w[np.arange(n_out), src] = 1.0
  w.setflags(write=False)  # cached: shared by every caller
  return w


_MATRICES = {"area": area_matrix, "bicubic": bicubic_matrix, "bilinear": bilinear_matrix, "nearest": nearest_matrix}


def resize(x: jax.Array, size: tuple[int, int] | int, mode: str) -> jax.Array:
  """Resizes the two spatial axes of ``x`` (..., H, W, C) as ``F.interpolate`` does.

  Args:
    x: array of rank >= 3, channels last; computed in float32.
    size: output ``(h, w)`` (or one int for both).
    mode: ``"area"``, ``"bicubic"``, ``"bilinear"`` (``align_corners=False``) or ``"nearest"``.

  Returns:
    float32 array (..., h, w, C). An axis whose size does not change is left
    untouched (both modes are the identity there).
  """
  if mode not in _MATRICES:
    raise ValueError(f"resize: mode must be one of {MODES}; got {mode!r}")
  if x.ndim < 3:
    raise ValueError(f"resize expects (..., H, W, C); got shape {tuple(x.shape)}")
  h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
  x = x.astype(jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  if h != x.shape[-3]:
    m = jnp.asarray(_MATRICES[mode](x.shape[-3], h))
    x = jnp.einsum("oh,...hwc->...owc", m, x, precision=hi)
  if w != x.shape[-2]:
    m = jnp.asarray(_MATRICES[mode](x.shape[-2], w))
    x = jnp.einsum("ow,...hwc->...hoc", m, x, precision=hi)
  return x
