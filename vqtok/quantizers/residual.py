"""Residual quantization of any quantizer (RVQ: Zeghidour et al., 2021,
SoundStream, arXiv:2107.03312; Lee et al., 2022, RQ-VAE, arXiv:2203.01941).

Level l quantises what the previous levels left over, r_{l+1} = r_l - q_l(r_l),
and ``z_q = Σ_l q_l(r_l)``; indices gain a trailing axis of ``num_levels``.
Works for VQ, FSQ, LFQ and BSQ levels alike. Quantizer dropout (SoundStream
Sec. 3.3) keeps a random number of leading levels in training, so the
tokenizer also decodes from coarse prefixes; shapes stay static by masking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.quantizers.base import (
  Quantizer,
  QuantizerOutput,
  check_index_dtype,
  check_last_dim,
  collect_quantizers,
  merge_outputs,
)

#: Index of a level that quantizer dropout switched off (it contributes zero).
DROPPED = -1


class Residual(Quantizer):
  """``num_levels`` quantizers applied to successive residuals.

  Args:
    quantizers: the level quantizers (one if ``shared``); or use ``make``.
    make: builds one level quantizer per call (called once if ``shared``).
    num_levels: number of residual levels.
    shared: reuse one quantizer (one codebook) for every level.
    dropout: quantizer dropout in training.
    dropout_start: levels ``0..dropout_start`` are always kept; the number of
      kept levels is uniform in ``[dropout_start + 1, num_levels]``.
    dropout_per_sample: draw the kept count per sample (leading axis of ``z``)
      instead of once per batch.
    scales: optional per-level scale s_l: level l quantises r_l / s_l and
      contributes s_l * q_l; e.g. ``(L-1)**-l`` lets residual FSQ/LFQ/BSQ
      resolve ever smaller residuals (their codes live in [-1, 1]).
    code_dim: expected ``code_dim`` of the levels (checked when given).
    rngs: randomness for quantizer dropout (``dropout`` stream, else default).
  """

  def __init__(
    self,
    quantizers: Sequence[Quantizer] | None = None,
    *,
    make: Callable[[], Quantizer] | None = None,
    num_levels: int,
    shared: bool = False,
    dropout: bool = False,
    dropout_start: int = 0,
    dropout_per_sample: bool = False,
    scales: Sequence[float] | None = None,
    code_dim: int | None = None,
    rngs: nnx.Rngs | None = None,
  ):
    if not isinstance(num_levels, int) or num_levels < 1:
      raise ValueError(f"Residual num_levels must be a positive int; got {num_levels!r}")
    if not 0 <= dropout_start < num_levels:
      raise ValueError(f"Residual dropout_start must be in [0, {num_levels - 1}]; got {dropout_start}")
    qs = collect_quantizers(quantizers, make, 1 if shared else num_levels, "Residual")
    dims = {q.code_dim for q in qs}
    if len(dims) != 1 or (code_dim is not None and dims != {code_dim}):
      raise ValueError(f"Residual levels must all have code_dim {code_dim}; got {sorted(dims)}")
    self.num_levels = num_levels
    self.shared = shared
    self.quantizers = nnx.List(qs)
    self.codebook_size = qs[0].codebook_size
    self.code_dim = qs[0].code_dim
    self.dropout = dropout
    self.dropout_start = dropout_start
    self.dropout_per_sample = dropout_per_sample
    if scales is not None:
      scales = tuple(float(s) for s in scales)
      if len(scales) != num_levels or min(scales) <= 0:
        raise ValueError(f"Residual scales must be {num_levels} positive numbers; got {scales}")
    self.scales = scales
    if dropout:
      if rngs is None:
        raise ValueError("Residual with dropout=True needs rngs")
      try:
        self.dropout_rng = rngs["dropout"].fork()
      except KeyError as e:
        raise ValueError("Residual dropout needs a 'dropout' (or 'default') rngs stream") from e
    else:
      self.dropout_rng = nnx.data(None)

  @property
  def index_depth(self) -> int:
    return self.num_levels

  def level(self, l: int) -> Quantizer:
    """The quantizer of level ``l``."""
    return self.quantizers[0 if self.shared else l]

  def check_indices(self, indices: Any) -> None:
    """Raises ValueError unless concrete indices are in [-1, codebook_size)."""
    if isinstance(indices, jax.core.Tracer):
      return
    lo, hi = int(jnp.min(indices)), int(jnp.max(indices))
    if lo < DROPPED or hi >= self.codebook_size:
      raise ValueError(
        f"indices out of range for {self.num_levels} residual levels of"
        f" {self.codebook_size} codes (-1 = dropped): got values in [{lo}, {hi}]"
      )

  def indices_to_codes(self, indices: jax.Array) -> jax.Array:
    """Sum of the levels' codes; a level index of -1 contributes zero.

    Args:
      indices: int (..., num_levels).

    Returns:
      float32 (..., code_dim), equal to eval-mode ``z_q``.
    """
    check_index_dtype(indices, "Residual")
    if indices.ndim < 1 or indices.shape[-1] != self.num_levels:
      raise ValueError(f"Residual indices must have shape (..., {self.num_levels}); got {tuple(indices.shape)}")
    self.check_indices(indices)
    total = None
    for l in range(self.num_levels):
      idx = indices[..., l]
      codes = self._scale_up(l, self.level(l).indices_to_codes(jnp.maximum(idx, 0)))
      codes = jnp.where((idx >= 0)[..., None], codes.astype(jnp.float32), 0.0)
      total = codes if total is None else total + codes
    return total

  def _scale_up(self, l: int, codes: jax.Array) -> jax.Array:
    """Level ``l`` codes in float32, times its scale (same op in both paths)."""
    codes = codes.astype(jnp.float32)
    if self.scales is None:
      return codes
    return codes * jnp.float32(self.scales[l])

  def _kept_levels(self, z: jax.Array) -> jax.Array:
    """Number of kept levels: scalar, or (batch,) per sample."""
    shape = (z.shape[0],) if self.dropout_per_sample and z.ndim > 1 else ()
    return jax.random.randint(self.dropout_rng(), shape, self.dropout_start + 1, self.num_levels + 1)

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes ``z`` (..., code_dim) level by level.

    Args:
      z: input, any float dtype; residuals are kept in float32.
      train: passed to the levels; enables quantizer dropout.

    Returns:
      ``z_q`` (shape/dtype of ``z``) and a ``QuantizerOutput`` with indices
      (..., num_levels) (-1 for dropped levels), summed loss and terms, and
      per-level metrics ``level_{l}/...`` plus their means.
    """
    check_last_dim(z, self.code_dim, "Residual")
    residual = z.astype(jnp.float32)
    use_dropout = train and self.dropout
    kept = self._kept_levels(z) if use_dropout else None
    total, indices, outs, weights = None, [], [], []
    for l in range(self.num_levels):
      if self.scales is None:
        codes, out = self.level(l)(residual, train=train)
      else:
        codes, out = self.level(l)(residual / self.scales[l], train=train)
      codes = self._scale_up(l, codes)
      idx = out.indices
      weight = jnp.ones((), jnp.float32)
      if kept is not None:
        keep = l < kept
        # Per-sample keep masks broadcast over all non-batch axes.
        mask = keep.reshape(keep.shape + (1,) * (z.ndim - keep.ndim))
        codes = jnp.where(mask, codes, 0.0)
        idx = jnp.where(mask[..., 0], idx, DROPPED)
        # Level losses are batch means; weight them by the kept fraction.
        weight = jnp.mean(keep.astype(jnp.float32))
      # Only the residual's value moves on; each level has its own gradient
      # path to z through its straight-through estimator.
      residual = residual - jax.lax.stop_gradient(codes)
      total = codes if total is None else total + codes
      indices.append(idx.astype(jnp.int32))
      outs.append(out)
      weights.append(weight)
    loss, terms, metrics = merge_outputs(outs, weights, "level")
    if kept is not None:
      metrics["kept_levels"] = jnp.mean(kept.astype(jnp.float32))
    out = QuantizerOutput(indices=jnp.stack(indices, axis=-1), loss=loss, terms=terms, metrics=metrics)
    return total.astype(z.dtype), out
