"""Factorised quantization (Bai et al., 2024, FQGAN, "Factorized Visual
Tokenization and Generation", arXiv:2411.16681).

FQGAN splits one large codebook into ``k`` small sub-codebooks (k = 2: pixel
detail + semantic, "Dual"; k = 3: pixel + mid- and high-level semantic,
"Triple"). Each sub-codebook has its own projection of the latent down to
its code width (showlab/FQGAN tokenizer/vq_model_dual.py: ``quant_conv_vis``,
``quant_conv_sem``, 1x1 convolutions 256 -> 8), its own l2-normalised
LlamaGen-style VQ, and the k codes are concatenated before the decoder's
``post_quant_conv`` (8k -> 256).

That is exactly existing parts plus one loss, so it is expressed that way:

- the k projections are the tokenizer's ``project_in`` (``model.z_channels``
  -> ``k * d``): a Linear to ``k * d`` outputs is k Linears to ``d`` stacked,
  its row blocks being the per-sub-codebook projections; the decoder side
  is ``project_out`` (``k * d`` -> ``z_channels``), the reference's
  ``post_quant_conv`` on the concatenation;
- the k sub-codebooks are ``Grouped`` over k channel slices of width ``d``,
  each an l2-normalised ``VectorQuantizer`` (their own codebooks, summed
  codebook/commitment losses, indices ``(..., k)``);
- what ``Factorized`` adds is the **disentanglement loss**: for every pair
  of sub-codes, the mean over positions of their squared cosine similarity,
  averaged over the pairs (Dual: the one pair; Triple: ``(vis·mid + vis·high
  + mid·high) / 3``, vq_model_triple.py ``compute_disentangle_loss``). It is
  computed on the straight-through codes, as the reference does, so its
  gradient reaches the encoder and not the codebooks.

FQGAN's encoder gives each sub-codebook its own transformer adapter head
before its projection; that is an encoder matter, not the quantizer's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.quantizers.base import Quantizer, QuantizerOutput
from vqtok.quantizers.grouped import Grouped


def disentanglement(parts: Sequence[jax.Array]) -> jax.Array:
  """FQGAN's disentanglement term: mean squared cosine similarity of sub-codes.

  Args:
    parts: k >= 2 arrays ``(..., d)`` of one shape (the sub-codebooks'
      codes at each position).

  Returns:
    float32 scalar: for each pair ``i < j``, ``mean(cos(parts[i], parts[j])**2)``
    over positions, averaged over the pairs. The vectors are l2-normalised
    with torch's ``F.normalize`` rule (``x / max(||x||, 1e-12)``).

  References:
    showlab/FQGAN tokenizer/vq_model_dual.py ``compute_disentangle_loss``
    (without its ratio, which is ``Factorized``'s ``disentangle_weight``).
  """
  if len(parts) < 2:
    raise ValueError(f"disentanglement needs at least 2 sub-codes; got {len(parts)}")
  if any(p.shape[-1] != parts[0].shape[-1] for p in parts):
    raise ValueError(f"disentanglement: sub-codes must share one width; got {[p.shape[-1] for p in parts]}")

  def normalize(x):
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

  unit = [normalize(p) for p in parts]
  pairs = [jnp.mean(jnp.square(jnp.sum(a * b, axis=-1))) for a, b in itertools.combinations(unit, 2)]
  return jnp.mean(jnp.stack(pairs))


class Factorized(Grouped):
  """FQGAN's factorised quantizer: ``Grouped`` sub-codebooks plus the disentanglement loss.

  Args:
    quantizers: one quantizer per sub-codebook; or use ``make``. FQGAN's are
      ``VectorQuantizer(codebook_size=16384, code_dim=8, l2_normalize=True)``.
    make: builds one sub-codebook quantizer per call.
    num_groups: number of sub-codebooks k (>= 2); the sub-codes are the k
      equal channel slices of ``z``, in order (FQGAN Dual: pixel then
      semantic; Triple: pixel, mid-level, high-level semantic).
    disentangle_weight: weight of the ``disentangle`` term in ``loss``
      (FQGAN's ``--disentanglement-ratio``, 0.1 in its training scripts);
      the term is reported also when the weight is 0.
    code_dim: expected ``code_dim`` = k * sub-code width (checked when given).
    rngs: unused; accepted so every quantizer is built the same way.
  """

  def __init__(
    self,
    quantizers: Sequence[Quantizer] | None = None,
    *,
    make: Callable[[], Quantizer] | None = None,
    num_groups: int,
    disentangle_weight: float = 0.1,
    code_dim: int | None = None,
    rngs: nnx.Rngs | None = None,
  ):
    if not isinstance(num_groups, int) or num_groups < 2:
      raise ValueError(f"Factorized num_groups must be an int >= 2 (one sub-codebook is plain VQ); got {num_groups!r}")
    if not disentangle_weight >= 0:
      raise ValueError(f"Factorized disentangle_weight must be >= 0; got {disentangle_weight!r}")
    super().__init__(quantizers, make=make, num_groups=num_groups, code_dim=code_dim, rngs=rngs)
    self.disentangle_weight = float(disentangle_weight)

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes each sub-code of ``z`` (..., k * d) with its sub-codebook.

    Args:
      z: input, any float dtype.
      train: passed to the sub-codebook quantizers.

    Returns:
      ``z_q`` (shape/dtype of ``z``: the concatenated sub-codes) and a
      ``QuantizerOutput`` with indices (..., k), the sub-codebooks' summed
      loss and terms plus ``disentangle`` (unweighted; ``loss`` adds it times
      ``disentangle_weight``), and per-group metrics ``group_{g}/...``.
    """
    z_q, out = super().__call__(z, train=train)
    d = self.group_dim
    term = disentanglement([z_q[..., g * d : (g + 1) * d] for g in range(self.num_groups)])
    terms = dict(out.terms, disentangle=term)
    loss = out.loss + self.disentangle_weight * term
    return z_q, out.replace(loss=loss, terms=terms)
