"""Binary spherical quantization (Zhao et al., 2024, BSQ-ViT, arXiv:2406.07548).

The latent is (optionally) projected to ``bits`` channels and l2-normalised to
the unit sphere, u = v / ||v||; the code is û = sign(u) / sqrt(bits), a corner
of the hypercube inscribed in the sphere, so the quantisation error is bounded
and the implicit codebook has 2**bits codes. Index = binary number of the signs
(first channel most significant).

Entropy terms follow the paper's soft assignment q̂(c|u) ∝ exp(τ c·u) with τ
the inverse temperature (Sec. 3.2). It factorises over bits:
q̂(c_i = +1/√L | u_i) = sigmoid(2 τ u_i / √L). The codebook entropy is the
paper's factorised approximation Σ_i H(E_u q̂(c_i|u_i)) (memory linear in
bits), or the exact chunked value with ``entropy_mode="exact"``.
(The authors' code scores codes by -τ||u - c||² instead, which equals this
form with τ doubled.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.quantizers.base import Quantizer, QuantizerOutput, straight_through
from vqtok.quantizers.fsq import (
    check_index_dtype,
    check_last_dim,
)
from vqtok.quantizers.lfq import (
    ENTROPY_MODES,
    binary_entropy_terms,
    binary_usage_metrics,
    indices_to_signs,
    resolve_bits,
    signs_to_indices,
)

# Keeps the normalisation finite at v = 0.
_NORM_EPS = 1e-12


class BSQ(Quantizer):
  """Binary spherical quantizer: sign(u)/sqrt(bits) on the unit sphere.

  Args:
    bits: code bits; the codebook has 2**bits codes.
    dim: input/output dimension; Linear projections in/out when != bits.
    entropy_weight: weight of the entropy loss (0 disables it).
    commitment_weight: weight of mean_n ||u - sg(û)||².
    sample_entropy_weight: weight of the per-sample entropy inside the loss.
    codebook_entropy_weight: weight of the (subtracted) codebook entropy (γ).
    inv_temperature: τ in q̂(c|u) ∝ exp(τ c·u).
    entropy_mode: "factorized" (paper) or "exact" (chunked over all codes).
    chunk_size: codes per chunk for the exact mode (power of two).
    rngs: initialises the projections.
  """

  codebook_kind = "implicit"

  def __init__(
      self,
      *,
      bits: int,
      dim: int | None = None,
      entropy_weight: float = 0.1,
      commitment_weight: float = 0.25,
      sample_entropy_weight: float = 1.0,
      codebook_entropy_weight: float = 1.0,
      inv_temperature: float = 1.0,
      entropy_mode: str = "factorized",
      chunk_size: int | None = None,
      rngs: nnx.Rngs,
  ):
    bits = resolve_bits(bits, None, "BSQ")
    if entropy_mode not in ENTROPY_MODES:
      raise ValueError(
          f"BSQ entropy_mode must be one of {ENTROPY_MODES}; got {entropy_mode!r}"
      )
    if not inv_temperature > 0:
      raise ValueError(f"BSQ inv_temperature must be > 0; got {inv_temperature}")
    if chunk_size is not None and (chunk_size < 1 or chunk_size & (chunk_size - 1)):
      raise ValueError(f"BSQ chunk_size must be a power of two; got {chunk_size}")
    dim = bits if dim is None else int(dim)
    self.bits = bits
    self.codebook_size = 2**bits
    self.code_dim = dim
    self.entropy_weight = float(entropy_weight)
    self.commitment_weight = float(commitment_weight)
    self.sample_entropy_weight = float(sample_entropy_weight)
    self.codebook_entropy_weight = float(codebook_entropy_weight)
    self.inv_temperature = float(inv_temperature)
    self.entropy_mode = entropy_mode
    self.chunk_size = chunk_size
    if dim != bits:
      self.project_in = nnx.Linear(dim, bits, rngs=rngs)
      self.project_out = nnx.Linear(bits, dim, rngs=rngs)
    else:
      self.project_in = nnx.data(None)
      self.project_out = nnx.data(None)

  def indices_to_codes(self, indices: jax.Array) -> jax.Array:
    """Codes ``z_q`` (..., dim), float32, that eval-mode ``__call__`` returns.

    Args:
      indices: int indices in ``[0, 2**bits)``, any shape.

    Returns:
      float32 array of shape ``indices.shape + (dim,)``.
    """
    check_index_dtype(indices, "BSQ")
    self.check_indices(indices)
    # Same float32 scale as __call__, so the round trip is bit-exact.
    codes = indices_to_signs(indices, self.bits) * jnp.float32(1.0 / math.sqrt(self.bits))
    if self.project_out is not None:
      codes = self.project_out(codes)
    return codes

  def __call__(
      self, z: jax.Array, *, train: bool = False
  ) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes ``z`` (..., dim) to a corner of the sphere-inscribed hypercube.

    Args:
      z: input, any float dtype; computed in float32.
      train: add the entropy terms.

    Returns:
      ``z_q`` with the shape and dtype of ``z`` and a ``QuantizerOutput`` with
      int32 indices ``z.shape[:-1]``; loss = commitment_weight * commitment +
      entropy_weight * (sample_w * per_sample - codebook_w * codebook).
    """
    check_last_dim(z, self.code_dim, "BSQ")
    v = z.astype(jnp.float32)
    if self.project_in is not None:
      v = self.project_in(v)
    norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=-1, keepdims=True))
    u = v / jnp.maximum(norm, _NORM_EPS)
    positive = u > 0
    scale = jnp.float32(1.0 / math.sqrt(self.bits))
    q = jnp.where(positive, scale, -scale)
    codes = straight_through(u, q)
    indices = signs_to_indices(positive)
    commitment = jnp.mean(
        jnp.sum(jnp.square(u - jax.lax.stop_gradient(q)), axis=-1)
    )
    terms = {"commitment": commitment}
    loss = self.commitment_weight * commitment
    if train and self.entropy_weight > 0:
      # τ c·u differs between c_i = ±1/√L by 2 τ u_i / √L.
      logits = (2.0 * self.inv_temperature) * scale * u.reshape(-1, self.bits)
      per_sample, codebook = binary_entropy_terms(
          logits, mode=self.entropy_mode, chunk_size=self.chunk_size
      )
      entropy = (
          self.sample_entropy_weight * per_sample
          - self.codebook_entropy_weight * codebook
      )
      terms.update(
          entropy=entropy, per_sample_entropy=per_sample, codebook_entropy=codebook
      )
      loss = loss + self.entropy_weight * entropy
    if self.project_out is not None:
      codes = self.project_out(codes)
    out = QuantizerOutput(
        indices=indices,
        loss=loss,
        terms=terms,
        metrics=binary_usage_metrics(indices, positive, self.bits),
    )
    return codes.astype(z.dtype), out
