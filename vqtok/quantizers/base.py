"""The quantizer contract shared by every vqtok quantizer.

A quantizer maps continuous vectors ``z`` of shape ``(..., d)`` to the nearest
element of a codebook and returns ``(z_q, QuantizerOutput)``. Codebooks come in
two kinds: *explicit* ones are a learned table of vectors (VQ family); *implicit*
ones are a fixed lattice (FSQ grid, LFQ hypercube, BSQ hypersphere) that is never
stored. Both expose ``codebook_size``, ``code_dim`` and ``indices_to_codes``.
"""

from __future__ import annotations

import abc
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@flax.struct.dataclass
class QuantizerOutput:
  """What a quantizer returns besides ``z_q``; a pytree, so it passes ``jit``.

  Attributes:
    indices: int32 code indices, shape ``z.shape[:-1]`` or
      ``z.shape[:-1] + (levels,)`` for residual/grouped quantizers.
    loss: scalar, already weighted; add it to the training loss.
    terms: unweighted loss terms (``commitment``, ``codebook``, ``entropy`` ...).
    metrics: batch statistics for logging (``usage``, ``perplexity`` ...).
  """

  indices: jax.Array
  loss: jax.Array
  terms: dict[str, jax.Array] = flax.struct.field(default_factory=dict)
  metrics: dict[str, jax.Array] = flax.struct.field(default_factory=dict)


class QuantizerStats(nnx.Variable):
  """Non-trainable quantizer state (EMA counts, usage, init flags).

  A separate Variable type so optimizers built with ``wrt=nnx.Param`` never
  touch it, while checkpoints (which save the whole ``nnx.state``) keep it.
  """


class Quantizer(nnx.Module, abc.ABC):
  """Abstract base of all quantizers.

  Subclasses set ``codebook_size`` (number of distinct codes per index),
  ``code_dim`` (dimension of the quantized vectors returned, i.e. the input
  dimension ``d``) and implement ``__call__`` and ``indices_to_codes``.
  """

  codebook_size: int
  code_dim: int
  #: "explicit" for a learned table of vectors, "implicit" for a fixed lattice.
  codebook_kind: str = "explicit"

  @abc.abstractmethod
  def __call__(
      self, z: jax.Array, *, train: bool = False
  ) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes ``z`` of shape ``(..., code_dim)``.

    Returns ``z_q`` (same shape and dtype as ``z``; gradients reach ``z``) and
    a ``QuantizerOutput``.
    """

  @abc.abstractmethod
  def indices_to_codes(self, indices: jax.Array) -> jax.Array:
    """Returns the ``z_q`` that ``__call__`` gives in eval mode for ``indices``."""

  @property
  def index_depth(self) -> int | None:
    """Trailing index axis length (residual levels / groups), None if scalar."""
    return None

  def check_indices(self, indices: Any) -> None:
    """Raises ValueError if concrete ``indices`` fall outside the codebook.

    Traced indices (inside ``jit``) cannot be checked and are left alone.
    """
    if isinstance(indices, jax.core.Tracer) or np.size(indices) == 0:
      return
    lo, hi = int(jnp.min(indices)), int(jnp.max(indices))
    if lo < 0 or hi >= self.codebook_size:
      raise ValueError(
          f"indices out of range for a codebook of {self.codebook_size} codes:"
          f" got values in [{lo}, {hi}]"
      )


def straight_through(z: jax.Array, q: jax.Array) -> jax.Array:
  """Straight-through estimator: value ``q``, gradient of identity w.r.t. ``z``.

  Written as ``sg(q) + (z - sg(z))`` rather than ``z + sg(q - z)``: the same
  gradients, but the value is exactly ``q`` (no rounding from ``z + (q - z)``),
  so ``indices_to_codes(indices) == z_q`` holds bit for bit.
  """
  return jax.lax.stop_gradient(q) + (z - jax.lax.stop_gradient(z))


def code_usage_metrics(
    indices: jax.Array, codebook_size: int, *, chunk: int | None = None
) -> dict[str, jax.Array]:
  """Batch usage (fraction of codes hit) and perplexity of ``indices``.

  Histogram by ``segment_sum`` so memory is linear in the codebook size; under
  ``jit`` on sharded input the sum is already over the global batch.
  """
  del chunk
  flat = indices.reshape(-1)
  counts = jax.ops.segment_sum(
      jnp.ones_like(flat, dtype=jnp.float32), flat, num_segments=codebook_size
  )
  probs = counts / jnp.maximum(counts.sum(), 1.0)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.0))
  return {
      "usage": jnp.mean((counts > 0).astype(jnp.float32)),
      "perplexity": jnp.exp(entropy),
  }
