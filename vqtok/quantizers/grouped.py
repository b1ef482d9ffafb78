"""Grouped (product) quantization of any quantizer (Jégou et al., 2011,
"Product quantization for nearest neighbor search", TPAMI).

The channels are split into ``num_groups`` equal groups, each quantised by its
own quantizer; ``z_q`` is the concatenation and indices gain a trailing axis of
``num_groups``, so G groups of K codes describe K**G combinations while each
codebook stays small.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


class Grouped(Quantizer):
  """``num_groups`` quantizers, one per equal slice of the channels.

  Args:
    quantizers: one quantizer per group; or use ``make``.
    make: builds one group quantizer per call (of ``code_dim // num_groups``).
    num_groups: number of channel groups G.
    code_dim: expected ``code_dim`` = G * group ``code_dim`` (checked when given).
    rngs: unused; accepted so every quantizer is built the same way.
  """

  def __init__(
    self,
    quantizers: Sequence[Quantizer] | None = None,
    *,
    make: Callable[[], Quantizer] | None = None,
    num_groups: int,
    code_dim: int | None = None,
    rngs: nnx.Rngs | None = None,
  ):
    del rngs
    if not isinstance(num_groups, int) or num_groups < 1:
      raise ValueError(f"Grouped num_groups must be a positive int; got {num_groups!r}")
    qs = collect_quantizers(quantizers, make, num_groups, "Grouped")
    dims = {q.code_dim for q in qs}
    if len(dims) != 1:
      raise ValueError(f"Grouped quantizers must share one code_dim; got {sorted(dims)}")
    group_dim = dims.pop()
    if code_dim is not None and code_dim != group_dim * num_groups:
      raise ValueError(
        f"Grouped code_dim={code_dim} must equal num_groups * group code_dim = {num_groups} * {group_dim}"
      )
    self.num_groups = num_groups
    self.group_dim = group_dim
    self.quantizers = nnx.List(qs)
    self.codebook_size = qs[0].codebook_size
    self.code_dim = group_dim * num_groups

  @property
  def index_depth(self) -> int:
    return self.num_groups

  def indices_to_codes(self, indices: jax.Array) -> jax.Array:
    """Concatenated group codes.

    Args:
      indices: int (..., num_groups).

    Returns:
      float32 (..., code_dim), equal to eval-mode ``z_q``.
    """
    check_index_dtype(indices, "Grouped")
    if indices.ndim < 1 or indices.shape[-1] != self.num_groups:
      raise ValueError(f"Grouped indices must have shape (..., {self.num_groups}); got {tuple(indices.shape)}")
    self.check_indices(indices)
    parts = [q.indices_to_codes(indices[..., g]).astype(jnp.float32) for g, q in enumerate(self.quantizers)]
    return jnp.concatenate(parts, axis=-1)

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes each channel group of ``z`` (..., code_dim) separately.

    Args:
      z: input, any float dtype.
      train: passed to the group quantizers.

    Returns:
      ``z_q`` (shape/dtype of ``z``) and a ``QuantizerOutput`` with indices
      (..., num_groups), summed loss and terms, and per-group metrics
      ``group_{g}/...`` plus their means.
    """
    check_last_dim(z, self.code_dim, type(self).__name__)
    parts, indices, outs = [], [], []
    for g, q in enumerate(self.quantizers):
      codes, out = q(z[..., g * self.group_dim : (g + 1) * self.group_dim], train=train)
      parts.append(codes.astype(z.dtype))
      indices.append(out.indices.astype(jnp.int32))
      outs.append(out)
    ones = [jnp.ones((), jnp.float32)] * len(outs)
    loss, terms, metrics = merge_outputs(outs, ones, "group")
    out = QuantizerOutput(indices=jnp.stack(indices, axis=-1), loss=loss, terms=terms, metrics=metrics)
    return jnp.concatenate(parts, axis=-1), out
