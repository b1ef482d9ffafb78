"""Image reconstruction metrics (PSNR, SSIM) and codebook statistics.

SSIM follows Wang et al., "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 2004, with the settings the tokenizer
literature reports (an 11-tap Gaussian window, sigma 1.5, population
covariance, K1=0.01, K2=0.03), i.e. scikit-image's
``structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, channel_axis=-1, data_range=255)``.

Codebook statistics (usage, entropy, perplexity, bits per image) are
accumulated over a whole evaluation set by ``CodebookUsage``, whose memory is
one counter per code, whatever the number of images.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

# scikit-image's SSIM window: truncate=3.5 gives radius int(3.5*1.5+0.5)=5,
# an 11-tap filter, and the same 5-pixel strip is cropped before averaging.
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def to_uint8_range(images: ArrayLike) -> jax.Array:
  """Maps float images in [-1, 1] to [0, 255] float32, rounded like a saved PNG.

  Args:
    images: array of any shape with values nominally in [-1, 1].

  Returns:
    float32 array, same shape, integer values in [0, 255].
  """
  x = jnp.asarray(images, jnp.float32)
  # Clip then round so metrics see exactly what an 8-bit file would hold.
  return jnp.round(jnp.clip((x + 1.0) * 127.5, 0.0, 255.0))


def _check_pair(a: ArrayLike, b: ArrayLike, name: str) -> tuple[jax.Array, jax.Array]:
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.shape != b.shape:
    raise ValueError(f"{name}: images must have the same shape, got {a.shape} and {b.shape}")
  if a.ndim not in (3, 4):
    raise ValueError(f"{name}: expected (H, W, C) or (B, H, W, C) images, got shape {a.shape}")
  return a, b


def psnr(a: ArrayLike, b: ArrayLike, *, data_range: float = 255.0) -> jax.Array:
  """Peak signal-to-noise ratio per image, in dB.

  Args:
    a: images ``(B, H, W, C)`` or ``(H, W, C)``, values in ``[0, data_range]``.
    b: images of the same shape.
    data_range: peak value (255 for 8-bit images).

  Returns:
    ``(B,)`` (or scalar) PSNR; ``inf`` where the images are identical.
  """
  if data_range <= 0:
    raise ValueError(f"psnr: data_range must be positive, got {data_range}")
  a, b = _check_pair(a, b, "psnr")
  mse = jnp.mean(jnp.square(a - b), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(data_range**2 / mse)


def _gaussian_taps() -> np.ndarray:
  radius = int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
  return w / w.sum()


def _filter_valid(x: jax.Array, taps: np.ndarray) -> jax.Array:
  """Separable Gaussian over axes -3, -2 of ``(..., H, W, C)``, 'valid' part only.

  skimage filters with reflect padding and then crops a strip of the filter
  radius; the cropped region never touches padded pixels, so computing only
  the valid part gives the same numbers without any border handling.
  """
  n = len(taps)
  h, w = x.shape[-3], x.shape[-2]
  rows = sum(float(t) * x[..., i : h - n + 1 + i, :, :] for i, t in enumerate(taps))
  return sum(float(t) * rows[..., :, i : w - n + 1 + i, :] for i, t in enumerate(taps))


def ssim(a: ArrayLike, b: ArrayLike, *, data_range: float = 255.0) -> jax.Array:
  """Structural similarity per image (Gaussian window, mean over channels).

  Matches ``skimage.metrics.structural_similarity`` with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  channel_axis=-1``.

  Args:
    a: images ``(B, H, W, C)`` or ``(H, W, C)``, values in ``[0, data_range]``;
      H and W at least 11.
    b: images of the same shape.
    data_range: peak value (255 for 8-bit images).

  Returns:
    ``(B,)`` (or scalar) mean SSIM.
  """
  if data_range <= 0:
    raise ValueError(f"ssim: data_range must be positive, got {data_range}")
  a, b = _check_pair(a, b, "ssim")
  taps = _gaussian_taps()
  if a.shape[-3] < len(taps) or a.shape[-2] < len(taps):
    raise ValueError(
      f"ssim: images must be at least {len(taps)}x{len(taps)} (the Gaussian window), got {a.shape[-3]}x{a.shape[-2]}"
    )
  # Variances are E[x^2] - E[x]^2; in float32 on [0, 255] that cancels badly,
  # so centre each image/channel first (variances are shift invariant) and add
  # the shift back only to the means.
  ma = jnp.mean(a, axis=(-3, -2), keepdims=True)
  mb = jnp.mean(b, axis=(-3, -2), keepdims=True)
  ac, bc = a - ma, b - mb
  ux, uy = _filter_valid(ac, taps), _filter_valid(bc, taps)
  vx = _filter_valid(ac * ac, taps) - ux * ux
  vy = _filter_valid(bc * bc, taps) - uy * uy
  vxy = _filter_valid(ac * bc, taps) - ux * uy
  ux, uy = ux + ma, uy + mb
  c1 = (_SSIM_K1 * data_range) ** 2
  c2 = (_SSIM_K2 * data_range) ** 2
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
  # skimage averages each channel then the channels; equal sizes make that
  # the plain mean over H, W, C.
  return jnp.mean(s, axis=(-3, -2, -1))


class CodebookUsage:
  """Host-side code histogram over an evaluation set.

  Memory is ``depth * codebook_size`` int64 counters, independent of the
  number of images. With ``depth`` (residual levels or groups), indices carry a
  trailing axis of that length and each level gets its own histogram.

  Example::

    usage = CodebookUsage(codebook_size=1024)
    for batch in data:
      usage.update(out.indices)          # (B, h, w) int
    usage.result()                       # usage, entropy_bits, perplexity ...
  """

  def __init__(self, codebook_size: int, *, depth: int | None = None):
    """Creates an empty accumulator.

    Args:
      codebook_size: number of codes per index (per level).
      depth: length of the trailing index axis, or None for scalar indices.
    """
    if codebook_size < 1:
      raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    if depth is not None and depth < 1:
      raise ValueError(f"depth must be None or >= 1, got {depth}")
    self.codebook_size = int(codebook_size)
    self.depth = depth
    self.counts = np.zeros((depth or 1, self.codebook_size), np.int64)
    self.num_images = 0
    self.tokens_per_image: int | None = None

  def update(self, indices: ArrayLike) -> None:
    """Adds a batch of indices ``(B, ...)`` or ``(B, ..., depth)`` to the counts.

    Args:
      indices: integer code indices; the first axis is the image axis.
    """
    idx = jnp.asarray(indices)
    if not jnp.issubdtype(idx.dtype, jnp.integer):
      raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    levels = self.depth or 1
    if self.depth is not None:
      if idx.ndim < 2 or idx.shape[-1] != self.depth:
        raise ValueError(f"indices must end in an axis of length depth={self.depth}, got shape {idx.shape}")
      idx = idx.reshape(idx.shape[0], -1, self.depth)
    else:
      if idx.ndim < 1:
        raise ValueError("indices must have a leading image axis, got a scalar")
      idx = idx.reshape(idx.shape[0], -1, 1)
    lo, hi = int(jnp.min(idx)), int(jnp.max(idx))
    if lo < 0 or hi >= self.codebook_size:
      raise ValueError(f"indices out of range for a codebook of {self.codebook_size} codes: got values in [{lo}, {hi}]")
    tokens = idx.shape[1]
    if self.tokens_per_image is not None and tokens != self.tokens_per_image:
      raise ValueError(f"tokens per image changed from {self.tokens_per_image} to {tokens}")
    self.tokens_per_image = tokens
    self.counts += np.asarray(_level_bincount(idx, self.codebook_size, levels), np.int64)
    self.num_images += idx.shape[0]

  def result(self) -> dict[str, Any]:
    """Statistics of all indices seen so far.

    Returns:
      dict with ``usage`` (fraction of codes used at least once),
      ``entropy_bits`` (of the empirical code distribution), ``perplexity``
      (``2**entropy_bits``), each averaged over levels, the per-level arrays
      ``usage_per_level``, ``entropy_bits_per_level``,
      ``perplexity_per_level``, and ``bits_per_image`` (tokens per image x
      levels x log2 codebook size), ``num_images``.
    """
    if self.num_images == 0:
      raise ValueError("CodebookUsage.result() called before any update()")
    totals = self.counts.sum(axis=1, keepdims=True)
    p = self.counts / totals
    plogp = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    entropy = -plogp.sum(axis=1)
    usage = (self.counts > 0).mean(axis=1)
    perplexity = np.exp2(entropy)
    levels = self.depth or 1
    return {
      "usage": float(usage.mean()),
      "entropy_bits": float(entropy.mean()),
      "perplexity": float(perplexity.mean()),
      # Lists, not arrays, so the report can be written as JSON.
      "usage_per_level": usage.tolist(),
      "entropy_bits_per_level": entropy.tolist(),
      "perplexity_per_level": perplexity.tolist(),
      "bits_per_image": float(self.tokens_per_image * levels * math.log2(self.codebook_size)),
      "num_images": self.num_images,
    }


@functools.partial(jax.jit, static_argnums=(1, 2))
def _level_bincount(idx: jax.Array, codebook_size: int, levels: int) -> jax.Array:
  # One flat histogram with each level offset by level * codebook_size.
  offsets = (jnp.arange(levels, dtype=jnp.int32) * codebook_size).reshape(1, 1, levels)
  flat = (idx.astype(jnp.int32) + offsets).reshape(-1)
  counts = jnp.bincount(flat, length=levels * codebook_size)
  return counts.reshape(levels, codebook_size)
