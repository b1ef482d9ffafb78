"""Lookup-free quantization (Yu et al., 2023, MAGVIT-v2, arXiv:2310.05737).

Each of ``bits`` channels is quantised to its sign, so the implicit codebook is
the hypercube {-1, 1}^bits with ``2**bits`` codes and no lookup. The index is
the binary number of the signs (1 for +1), in ``bit_order`` (see ``binary.py``).

Training adds an entropy penalty: low per-sample entropy (confident codes)
minus high codebook entropy (all codes used), with p(c|z) ∝ exp(-||z-c||²/τ).
Because ||z-c||² = ||z||² - 2 z·c + bits on the hypercube, p(c|z) factorises
over bits: p(bit_i = +1 | z) = sigmoid(4 z_i / τ). The entropies (codebook
entropy exact and chunked, or factorised) are computed in ``binary.py``,
shared with BSQ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.quantizers.base import QuantizerOutput
from vqtok.quantizers.binary import BinaryQuantizer, resolve_bits


class LFQ(BinaryQuantizer):
  """Lookup-free quantizer: sign of each of ``bits`` channels, 2**bits codes.

  Args:
    bits: code bits; or give ``codebook_size`` (must equal 2**bits).
    codebook_size: alternative to ``bits``.
    code_dim: input/output dimension; Linear projections in/out when != bits.
    entropy_weight: weight of the entropy loss (0 disables it).
    commitment_weight: weight of mean((z - sg(q))²).
    sample_entropy_weight: weight of the per-sample entropy inside the loss.
    codebook_entropy_weight: weight of the (subtracted) codebook entropy.
    temperature: τ in p(c|z) ∝ exp(-||z - c||² / τ).
    entropy_mode: "exact" (chunked over all codes) or "factorized".
    chunk_size: codes per chunk for the exact mode (power of two).
    codebook_entropy_eps: exact mode: the codebook entropy is -Σ p̄ log(p̄ + eps)
      (Open-MAGVIT2: 1e-5, lookup_free_quantize.py:85, 107); 0: the entropy itself.
    bit_order: "msb_first" (channel 0 is the index's most significant bit)
      or "lsb_first" (channel 0 is bit 0, Open-MAGVIT2's order).
    rngs: initialises the projections.
  """

  _name = "LFQ"

  def __init__(
    self,
    *,
    bits: int | None = None,
    codebook_size: int | None = None,
    code_dim: int | None = None,
    entropy_weight: float = 0.1,
    commitment_weight: float = 0.25,
    sample_entropy_weight: float = 1.0,
    codebook_entropy_weight: float = 1.0,
    temperature: float = 0.01,
    entropy_mode: str = "exact",
    chunk_size: int | None = None,
    codebook_entropy_eps: float = 0.0,
    bit_order: str = "msb_first",
    rngs: nnx.Rngs,
  ):
    bits = resolve_bits(bits, codebook_size, "LFQ")
    if not temperature > 0:
      raise ValueError(f"LFQ temperature must be > 0; got {temperature}")
    self.temperature = float(temperature)
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
      codebook_entropy_eps=codebook_entropy_eps,
    )

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes ``z`` (..., code_dim) to signs.

    Args:
      z: input, any float dtype; computed in float32.
      train: add the entropy terms (exact mode costs O(N * 2**bits) flops).

    Returns:
      ``z_q`` with the shape and dtype of ``z`` and a ``QuantizerOutput`` with
      int32 indices ``z.shape[:-1]``; loss = commitment_weight * commitment +
      entropy_weight * (sample_w * per_sample - codebook_w * codebook).
    """
    h = self._project(z)
    q = jnp.where(h > 0, 1.0, -1.0)
    commitment = jnp.mean(jnp.square(h - jax.lax.stop_gradient(q)))
    # -||z-c||²/τ differs between c_i = ±1 by 4 z_i / τ.
    logits = lambda: 4.0 * h.reshape(-1, self.bits) / self.temperature
    return self._output(z, h, q, commitment, logits, train=train)
