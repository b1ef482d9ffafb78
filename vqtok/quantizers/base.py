"""The quantizer contract shared by every vqtok quantizer, and its helpers.

A quantizer maps continuous vectors ``z`` of shape ``(..., code_dim)`` to the
nearest element of a codebook and returns ``(z_q, QuantizerOutput)``. Codebooks
come in two kinds: *explicit* ones are a learned table of vectors (VQ family);
*implicit* ones are a fixed lattice (FSQ grid, LFQ hypercube, BSQ hypersphere)
that is never stored. Both expose ``codebook_size``, ``code_dim`` and
``indices_to_codes``.

Besides ``Quantizer``, ``QuantizerOutput`` and ``QuantizerStats`` this module
holds what several quantizers share: the argument checks of the contract
(``check_last_dim``, ``check_index_dtype``) and ``last_axis`` broadcasting,
the straight-through estimator, the batch usage metrics (``entropy``,
``code_usage_metrics``), and what the wrappers (``Residual``, ``Grouped``,
``MultiScaleResidual``) use to build and combine their inner quantizers
(``collect_quantizers``, ``merge_outputs``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
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


class ScheduleStep(QuantizerStats):
  """Training calls counted for a loss weight's schedule (FSQ's entropy annealing).

  Checkpoints keep it, so a resumed run continues its schedule; ``config.init_from``
  neither reads nor writes it, so a run started from other weights starts its
  schedule at 0, as its step does.
  """


class Quantizer(nnx.Module, abc.ABC):
  """Abstract base of all quantizers.

  Subclasses set ``codebook_size`` (number of distinct codes per index),
  ``code_dim`` (dimension of the quantized vectors returned, i.e. the input
  dimension ``d``) and implement ``__call__`` and ``indices_to_codes``.
  """

  codebook_size: int
  code_dim: int

  @abc.abstractmethod
  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
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

  @property
  def scale_schedule(self) -> tuple[int, ...] | None:
    """Side lengths of the token maps of a multi-scale quantizer, coarse first; None otherwise."""
    return None

  def index_shape(self, z_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of ``indices`` for an input of shape ``z_shape``.

    ``z_shape[:-1]`` plus the trailing ``index_depth`` axis if any; the
    multi-scale wrapper replaces the spatial axes by one token sequence.
    """
    depth = self.index_depth
    return tuple(z_shape[:-1]) + ((depth,) if depth else ())

  def check_indices(self, indices: Any) -> None:
    """Raises ValueError if concrete ``indices`` fall outside the codebook.

    Traced indices (inside ``jit``) cannot be checked and are left alone.
    """
    if isinstance(indices, jax.core.Tracer) or np.size(indices) == 0:
      return
    lo, hi = int(jnp.min(indices)), int(jnp.max(indices))
    if lo < 0 or hi >= self.codebook_size:
      raise ValueError(f"indices out of range for a codebook of {self.codebook_size} codes: got values in [{lo}, {hi}]")


def last_axis(v: jax.Array, ndim: int) -> jax.Array:
  """Reshapes a per-channel vector to rank ``ndim`` for explicit broadcasting."""
  return jnp.reshape(v, (1,) * (ndim - 1) + (-1,))


def check_last_dim(z: jax.Array, code_dim: int, name: str) -> None:
  """Raises ValueError unless ``z`` has rank >= 1 and a last axis of ``code_dim``."""
  if z.ndim < 1 or z.shape[-1] != code_dim:
    raise ValueError(f"{name} expects input of shape (..., {code_dim}); got {tuple(z.shape)}")


def check_index_dtype(indices: jax.Array, name: str) -> None:
  """Raises ValueError unless ``indices`` is an integer array."""
  if not jnp.issubdtype(jnp.asarray(indices).dtype, jnp.integer):
    raise ValueError(f"{name}.indices_to_codes: indices must be integers; got dtype {jnp.asarray(indices).dtype}")


def straight_through(z: jax.Array, q: jax.Array) -> jax.Array:
  """Straight-through estimator: value ``q``, gradient of identity w.r.t. ``z``.

  Written as ``sg(q) + (z - sg(z))`` rather than ``z + sg(q - z)``: the same
  gradients, but the value is exactly ``q`` (no rounding from ``z + (q - z)``),
  so ``indices_to_codes(indices) == z_q`` holds bit for bit.
  """
  return jax.lax.stop_gradient(q) + (z - jax.lax.stop_gradient(z))


def entropy(probs: jax.Array, axis: int = -1) -> jax.Array:
  """Shannon entropy in nats of ``probs`` along ``axis`` (0·log 0 = 0).

  Args:
    probs: probabilities, summing to 1 along ``axis``.
    axis: the distribution axis.

  Returns:
    The entropy, with ``axis`` removed.
  """
  p = probs.astype(jnp.float32)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=axis)


def code_usage_metrics(indices: jax.Array, codebook_size: int) -> dict[str, jax.Array]:
  """Batch usage (fraction of codes hit) and perplexity of ``indices``.

  Histogram by ``segment_sum`` so memory is linear in the codebook size; under
  ``jit`` on sharded input the sum is already over the global batch.
  """
  flat = indices.reshape(-1)
  counts = jax.ops.segment_sum(jnp.ones_like(flat, dtype=jnp.float32), flat, num_segments=codebook_size)
  probs = counts / jnp.maximum(counts.sum(), 1.0)
  return {"usage": jnp.mean((counts > 0).astype(jnp.float32)), "perplexity": jnp.exp(entropy(probs))}


# ---- shared by the wrappers (Residual, Grouped, MultiScaleResidual) ----


def collect_quantizers(
  quantizers: Sequence[Quantizer] | None, make: Callable[[], Quantizer] | None, count: int, name: str
) -> list[Quantizer]:
  """Validates exactly one of ``quantizers`` / ``make`` and returns ``count`` of them."""
  if (quantizers is None) == (make is None):
    raise ValueError(f"{name} needs exactly one of quantizers or make")
  qs = [make() for _ in range(count)] if make is not None else list(quantizers)
  if len(qs) != count:
    raise ValueError(f"{name} needs {count} quantizers; got {len(qs)}")
  for q in qs:
    if not isinstance(q, Quantizer):
      raise ValueError(f"{name} wraps Quantizer instances; got {type(q).__name__}")
    if q.index_depth is not None:
      raise ValueError(f"{name} cannot wrap a quantizer with multi-axis indices ({type(q).__name__})")
  sizes = {q.codebook_size for q in qs}
  if len(sizes) != 1:
    raise ValueError(f"{name} quantizers must share one codebook_size; got {sorted(sizes)}")
  return qs


def merge_outputs(
  outs: Sequence[QuantizerOutput], weights: Sequence[jax.Array], prefix: str
) -> tuple[jax.Array, dict[str, jax.Array], dict[str, jax.Array]]:
  """Weighted sum of losses and terms; metrics per part plus their means."""
  loss = sum(w * o.loss for w, o in zip(weights, outs, strict=True))
  terms: dict[str, Any] = {}
  for w, o in zip(weights, outs, strict=True):
    for k, v in o.terms.items():
      terms[k] = terms.get(k, 0.0) + w * v
  metrics: dict[str, jax.Array] = {}
  for i, o in enumerate(outs):
    for k, v in o.metrics.items():
      metrics[f"{prefix}_{i}/{k}"] = v
  for k in outs[0].metrics:
    if all(k in o.metrics for o in outs):
      metrics[k] = jnp.mean(jnp.stack([o.metrics[k] for o in outs]))
  return jnp.asarray(loss, jnp.float32), terms, metrics
