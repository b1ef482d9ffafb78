"""Finite scalar quantization (Mentzer et al., 2023, arXiv:2309.15505).

Each channel is bounded and rounded to one of ``levels[i]`` values; the codebook
is the implicit product of those grids (``prod(levels)`` codes), so it cannot
collapse and needs no auxiliary loss. Indices are the mixed-radix numbers whose
digits are the per-channel levels (first channel least significant, as in the
paper's reference code).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vqtok.quantizers.base import (
  Quantizer,
  QuantizerOutput,
  check_index_dtype,
  check_last_dim,
  code_usage_metrics,
  last_axis,
  straight_through,
)

# Keeps tanh strictly inside the outermost rounding interval (paper, App. A.1).
_EPS = 1e-3
#: How far ``bound`` reaches: the paper's (L - 1)(1 - eps)/2 (App. A.1), or (L - 1)(1 + eps)/2, as
#: lucidrains' vector-quantize-pytorch and the models built on it bound (NVIDIA Cosmos's FSQuantizer,
#: cosmos_tokenizer/modules/quantizers.py ``bound``): the same grid, rounding boundaries a little apart.
BOUNDS = {"paper": 1 - _EPS, "wide": 1 + _EPS}


class FSQ(Quantizer):
  """Finite scalar quantizer with an implicit codebook of ``prod(levels)`` codes.

  Args:
    levels: number of quantization levels per channel, each >= 2.
    code_dim: input/output dimension; when it differs from ``len(levels)``,
      Linear projections (``project_in`` / ``project_out``) map into and out
      of the ``len(levels)`` quantised channels.
    bound: "paper" or "wide" (``BOUNDS``): the tanh bound's half width.
    rngs: initialises the projections (unused without them).
  """

  def __init__(self, levels: Sequence[int], *, code_dim: int | None = None, bound: str = "paper", rngs: nnx.Rngs):
    levels = tuple(int(l) for l in levels)
    if bound not in BOUNDS:
      raise ValueError(f"FSQ bound={bound!r} is not one of {tuple(BOUNDS)}")
    self.bound_scale = BOUNDS[bound]
    if not levels:
      raise ValueError("FSQ levels must be a non-empty sequence")
    if min(levels) < 2:
      raise ValueError(f"FSQ levels must all be >= 2; got {levels}")
    n = len(levels)
    code_dim = n if code_dim is None else int(code_dim)
    if code_dim < 1:
      raise ValueError(f"FSQ code_dim must be >= 1; got {code_dim}")
    self.levels = levels
    self.code_dim = code_dim
    self.codebook_size = int(np.prod(levels))
    if self.codebook_size >= 2**31:
      raise ValueError(f"FSQ codebook of prod(levels) = {self.codebook_size} codes does not fit int32 indices")
    if code_dim != n:
      self.project_in = nnx.Linear(code_dim, n, rngs=rngs)
      self.project_out = nnx.Linear(n, code_dim, rngs=rngs)
    else:
      self.project_in = nnx.data(None)
      self.project_out = nnx.data(None)

  def _consts(self):
    """Per-channel constants (half_l, offset, shift, half_width, basis).

    Rebuilt from the static ``levels`` tuple on each trace, so they are
    compile-time constants rather than state.
    """
    lv = np.asarray(self.levels, np.float64)
    half_l = (lv - 1) * self.bound_scale / 2
    # Even level counts have no zero on a symmetric grid: shift by half a step
    # so the grid is {-L/2, ..., L/2 - 1}. The paper's listing writes tan();
    # arctanh is the exact inverse, so bound(0) lands on the grid point 0.
    # L = 2 has no such shift (0.5 / half_l > 1): keep the rounding boundary
    # at z = 0 instead, i.e. a sign quantizer like LFQ.
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    ratio = offset / half_l
    shift = np.arctanh(np.where(ratio < 1, ratio, 0.0))
    half_width = np.asarray([l // 2 for l in self.levels], np.float64)
    basis = np.cumprod((1,) + self.levels[:-1]).astype(np.int64)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return f32(half_l), f32(offset), f32(shift), f32(half_width), basis

  def bound(self, z: jax.Array) -> jax.Array:
    """Squashes ``z`` (..., len(levels)) into the open range of each grid."""
    half_l, offset, shift, _, _ = self._consts()
    half_l, offset, shift = (last_axis(v, z.ndim) for v in (half_l, offset, shift))
    return jnp.tanh(z + shift) * half_l - offset

  def quantize(self, z: jax.Array) -> jax.Array:
    """Bounds, rounds (straight-through) and rescales to codes in [-1, 1]."""
    _, _, _, half_width, _ = self._consts()
    b = self.bound(z)
    return straight_through(b, jnp.round(b)) / last_axis(half_width, z.ndim)

  def codes_to_indices(self, codes: jax.Array) -> jax.Array:
    """Mixed-radix index of normalised codes (..., len(levels)) -> int32 (...)."""
    _, _, _, half_width, basis = self._consts()
    half_width = last_axis(half_width, codes.ndim)
    basis = last_axis(jnp.asarray(basis, jnp.int32), codes.ndim)
    digits = jnp.round(codes * half_width + half_width).astype(jnp.int32)
    return jnp.sum(digits * basis, axis=-1).astype(jnp.int32)

  def indices_to_grid(self, indices: jax.Array) -> jax.Array:
    """Normalised grid codes (..., len(levels)) of int indices (...)."""
    _, _, _, half_width, basis = self._consts()
    idx = jnp.asarray(indices).astype(jnp.int32)[..., None]
    basis = last_axis(jnp.asarray(basis, jnp.int32), idx.ndim)
    levels = last_axis(jnp.asarray(self.levels, jnp.int32), idx.ndim)
    half_width = last_axis(half_width, idx.ndim)
    digits = (idx // basis) % levels
    return (digits.astype(jnp.float32) - half_width) / half_width

  def indices_to_codes(self, indices: jax.Array) -> jax.Array:
    """Codes ``z_q`` (..., code_dim), float32, that eval-mode ``__call__`` returns.

    Args:
      indices: int indices in ``[0, codebook_size)``, any shape.

    Returns:
      float32 array of shape ``indices.shape + (code_dim,)``.
    """
    check_index_dtype(indices, "FSQ")
    self.check_indices(indices)
    codes = self.indices_to_grid(indices)
    if self.project_out is not None:
      codes = self.project_out(codes)
    return codes

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes ``z`` (..., code_dim).

    Args:
      z: input, any float dtype; computed in float32.
      train: unused (FSQ behaves the same in training and evaluation).

    Returns:
      ``z_q`` with the shape and dtype of ``z``, and a ``QuantizerOutput``
      with int32 indices ``z.shape[:-1]`` and a zero loss.
    """
    del train
    check_last_dim(z, self.code_dim, "FSQ")
    h = z.astype(jnp.float32)
    if self.project_in is not None:
      h = self.project_in(h)
    codes = self.quantize(h)
    indices = self.codes_to_indices(jax.lax.stop_gradient(codes))
    if self.project_out is not None:
      codes = self.project_out(codes)
    zero = jnp.zeros((), jnp.float32)
    out = QuantizerOutput(indices=indices, loss=zero, terms={}, metrics=code_usage_metrics(indices, self.codebook_size))
    return codes.astype(z.dtype), out
