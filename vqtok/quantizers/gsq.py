"""Grouped spherical quantization (Wang et al., 2024, "Scaling Image Tokenizers with
Grouped Spherical Quantization", arXiv:2412.02632).

As the authors' code computes it (HelmholtzAI-FZJ/flex_gen,
flex_gen/quantizers/group_sphere_quantizer.py, ``GroupSphereQuantizer`` with
``use_l2_norm=True``): ``z`` of ``G x d`` channels splits into G groups of d;
each group is l2-normalised and replaced by the code of ONE codebook, shared
by the groups, nearest to it after the codes are l2-normalised too. The
codebook starts on the unit sphere (Gaussian rows scaled to unit norm,
``init_codebook``) and is trained by the loss, which keeps it near the sphere:
``||q - sg(ẑ)||² + β ||sg(q) - ẑ||²`` with ẑ the normalised group. The output is
the code as stored, not re-normalised. Indices are ``(..., G)``, each in
``[0, K)``: a token is G ids of one vocabulary.

Not ``Grouped(VectorQuantizer(l2_normalize=True))``: that gives each group a
codebook of its own and outputs the normalised code (and its codebook term
differentiates through the normalisation). The two agree for G = 1 on unit
codes (ids, ``z_q``, loss; tests/test_quantizers_gsq.py) and part as training
moves the codes off the sphere. The authors break exact distance ties at
random (``argmin_func="random"``); here the first code wins, which differs
only on exact ties.

``normalize`` also gives the paper's ablations as the authors published them
(HF HelmholtzAI-FZJ/GSQ-*-no_l2, -CLIP): ``"none"`` (``use_l2_norm=False``:
the nearest stored code, latents as they are) and ``"clip"``
(``force_1d_clip`` with one-channel groups: latents and codes clamped to
[-1, 1] for the search and the loss, codes initialised uniform in [-1, 1]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.quantizers.base import (
  Quantizer,
  QuantizerOutput,
  check_index_dtype,
  check_last_dim,
  code_usage_metrics,
  straight_through,
)
from vqtok.quantizers.search import explicit, nearest_code, sharding, take_rows
from vqtok.quantizers.vq import unit_norm

#: What the groups and the codes are searched as: GSQ's unit vectors, or the authors' ablations.
NORMALIZE = ("l2", "none", "clip")


class GSQ(Quantizer):
  """Grouped spherical quantizer: G groups, one shared spherical codebook of ``codebook_size`` codes.

  Args:
    codebook_size: codes K shared by the groups (>= 2).
    code_dim: channels of ``z``, ``num_groups`` x the code width.
    num_groups: groups G; each is one id.
    commitment_weight: β on ``||sg(q) - ẑ||²`` (the codebook term has weight 1), 0.25 in the authors' configs.
    normalize: what ẑ and the searched codes are: ``"l2"`` (GSQ: unit vectors), ``"none"`` or ``"clip"``
      (clamped to [-1, 1]; groups of one channel).
    search_chunk: codes per block of the nearest-code search (None: auto).
    rngs: the codebook's initialisation.
  """

  def __init__(
    self,
    codebook_size: int,
    code_dim: int,
    *,
    num_groups: int = 1,
    commitment_weight: float = 0.25,
    normalize: str = "l2",
    search_chunk: int | None = None,
    rngs: nnx.Rngs,
  ):
    if codebook_size < 2:
      raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
    if not isinstance(num_groups, int) or num_groups < 1 or code_dim < 1 or code_dim % num_groups:
      raise ValueError(f"GSQ num_groups={num_groups!r} must be a positive int dividing code_dim={code_dim}")
    if commitment_weight < 0:
      raise ValueError(f"commitment_weight must be >= 0, got {commitment_weight}")
    if normalize not in NORMALIZE:
      raise ValueError(f"GSQ normalize={normalize!r}; expected one of {NORMALIZE}")
    if normalize == "clip" and code_dim != num_groups:
      raise ValueError(f"GSQ normalize='clip' needs groups of one channel; got {code_dim // num_groups}")
    self.codebook_size = codebook_size
    self.code_dim = code_dim
    self.num_groups = num_groups
    self.group_dim = code_dim // num_groups
    self.commitment_weight = commitment_weight
    self.normalize = normalize
    self.search_chunk = search_chunk
    if normalize == "clip":  # init_codebook(use_uniform_init=True) for one-channel codes
      init = jax.random.uniform(rngs.params(), (codebook_size, 1), minval=-1.0, maxval=1.0)
    else:  # group_sphere_quantizer.py init_codebook: randn rows over their norm
      init = unit_norm(jax.random.normal(rngs.params(), (codebook_size, self.group_dim)))
    self.codebook = nnx.Param(init)

  def _normalise(self, v: jax.Array) -> jax.Array:
    # The authors' normlization_func: F.normalize, the identity, or torch.clamp(-1, 1).
    if self.normalize == "l2":
      return unit_norm(v)
    return jnp.clip(v, -1.0, 1.0) if self.normalize == "clip" else v

  @property
  def index_depth(self) -> int:
    return self.num_groups

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes ``z`` of shape ``(..., code_dim)``.

    Args:
      z: input, any float dtype (the search runs in float32).
      train: unused (the codebook learns by the loss).

    Returns:
      ``z_q`` (shape and dtype of ``z``) and a ``QuantizerOutput`` with int32
      ``indices`` ``(..., num_groups)``, ``loss``, ``terms`` (``codebook``,
      ``commitment``) and ``metrics`` (``usage``, ``perplexity`` over all groups).
    """
    del train
    check_last_dim(z, self.code_dim, "GSQ")
    if not jnp.issubdtype(z.dtype, jnp.floating):
      raise ValueError(f"z must be floating point, got {z.dtype}")
    lead = z.shape[:-1]
    x = self._normalise(z.reshape(-1, self.group_dim).astype(jnp.float32))
    codes = self.codebook[...]
    idx, _ = nearest_code(x, self._normalise(codes), chunk_size=self.search_chunk)
    q = take_rows(codes, idx)
    terms = {
      "codebook": jnp.mean(jnp.square(q - jax.lax.stop_gradient(x))),
      "commitment": jnp.mean(jnp.square(jax.lax.stop_gradient(q) - x)),
    }
    loss = terms["codebook"] + self.commitment_weight * terms["commitment"]
    z_q = straight_through(x, q).reshape(lead + (self.code_dim,)).astype(z.dtype)
    # As VectorQuantizer: the usage scatter replicates its (small) indices under explicit axes.
    idx_rep = jax.sharding.reshard(idx, sharding((idx,), None)) if explicit(idx) else idx
    metrics = code_usage_metrics(idx_rep, self.codebook_size)
    return z_q, QuantizerOutput(indices=idx.reshape(lead + (self.num_groups,)), loss=loss, terms=terms, metrics=metrics)

  def indices_to_codes(self, indices: jax.Array, *, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """The eval-mode ``z_q`` of ``indices`` ``(..., num_groups)``: the groups' codes, concatenated."""
    indices = jnp.asarray(indices)
    check_index_dtype(indices, "GSQ")
    if indices.ndim < 1 or indices.shape[-1] != self.num_groups:
      raise ValueError(f"GSQ indices must have shape (..., {self.num_groups}); got {tuple(indices.shape)}")
    self.check_indices(indices)
    q = take_rows(self.codebook[...], indices.reshape(-1))
    return q.reshape(indices.shape[:-1] + (self.code_dim,)).astype(dtype)
