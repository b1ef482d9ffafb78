"""Binary spherical quantization (Zhao et al., 2024, BSQ-ViT, arXiv:2406.07548).

The latent is (optionally) projected to ``bits`` channels and l2-normalised to
the unit sphere, u = v / ||v||; the code is û = sign(u) / sqrt(bits), a corner
of the hypercube inscribed in the sphere, so the quantisation error is bounded
and the implicit codebook has 2**bits codes. Index = binary number of the signs,
in ``bit_order`` (see ``binary.py``).

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

from vqtok.quantizers.base import QuantizerOutput
from vqtok.quantizers.binary import BinaryQuantizer, resolve_bits

# Keeps the normalisation finite at v = 0.
_NORM_EPS = 1e-12


class BSQ(BinaryQuantizer):
  """Binary spherical quantizer: sign(u)/sqrt(bits) on the unit sphere.

  Args:
    bits: code bits; the codebook has 2**bits codes.
    code_dim: input/output dimension; Linear projections in/out when != bits.
    entropy_weight: weight of the entropy loss (0 disables it).
    commitment_weight: weight of mean_n ||u - sg(û)||².
    sample_entropy_weight: weight of the per-sample entropy inside the loss.
    codebook_entropy_weight: weight of the (subtracted) codebook entropy (γ).
    inv_temperature: τ in q̂(c|u) ∝ exp(τ c·u).
    entropy_mode: "factorized" (paper) or "exact" (chunked over all codes).
    chunk_size: codes per chunk for the exact mode (power of two).
    bit_order: "msb_first" (channel 0 is the index's most significant bit)
      or "lsb_first" (channel 0 is bit 0, Open-MAGVIT2's order).
    index_groups: split each code's bits into this many int32 indices (a
      trailing index axis), for more than 30 bits (see ``binary.py``).
    rngs: initialises the projections.
  """

  _name = "BSQ"

  def __init__(
    self,
    *,
    bits: int,
    code_dim: int | None = None,
    entropy_weight: float = 0.1,
    commitment_weight: float = 0.25,
    sample_entropy_weight: float = 1.0,
    codebook_entropy_weight: float = 1.0,
    inv_temperature: float = 1.0,
    entropy_mode: str = "factorized",
    chunk_size: int | None = None,
    bit_order: str = "msb_first",
    index_groups: int = 1,
    rngs: nnx.Rngs,
  ):
    bits = resolve_bits(bits, None, "BSQ", index_groups if isinstance(index_groups, int) else 1)
    if not inv_temperature > 0:
      raise ValueError(f"BSQ inv_temperature must be > 0; got {inv_temperature}")
    self.inv_temperature = float(inv_temperature)
    self._setup(
      bits=bits,
      code_dim=code_dim,
      entropy_weight=entropy_weight,
      commitment_weight=commitment_weight,
      sample_entropy_weight=sample_entropy_weight,
      codebook_entropy_weight=codebook_entropy_weight,
      entropy_mode=entropy_mode,
      chunk_size=chunk_size,
      bit_order=bit_order,
      rngs=rngs,
      index_groups=index_groups,
    )

  def code_scale(self) -> float:
    return 1.0 / math.sqrt(self.bits)

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes ``z`` (..., code_dim) to a corner of the sphere-inscribed hypercube.

    Args:
      z: input, any float dtype; computed in float32.
      train: add the entropy terms.

    Returns:
      ``z_q`` with the shape and dtype of ``z`` and a ``QuantizerOutput`` with
      int32 indices ``z.shape[:-1]``; loss = commitment_weight * commitment +
      entropy_weight * (sample_w * per_sample - codebook_w * codebook).
    """
    v = self._project(z)
    norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=-1, keepdims=True))
    u = v / jnp.maximum(norm, _NORM_EPS)
    scale = jnp.float32(self.code_scale())
    q = jnp.where(u > 0, scale, -scale)
    commitment = jnp.mean(jnp.sum(jnp.square(u - jax.lax.stop_gradient(q)), axis=-1))
    # τ c·u differs between c_i = ±1/√L by 2 τ u_i / √L.
    logits = lambda: (2.0 * self.inv_temperature) * scale * u.reshape(-1, self.bits)
    return self._output(z, u, q, commitment, logits, train=train)
