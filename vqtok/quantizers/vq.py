"""Vector quantization with a learned codebook (VQ-VAE and its refinements).

References:
  van den Oord et al., 2017, "Neural Discrete Representation Learning"
    (arXiv:1711.00937): nearest-code assignment, codebook and commitment
    losses, EMA codebook updates (appendix A.1).
  Razavi et al., 2019, VQ-VAE-2 (arXiv:1906.00446): Laplace-smoothed EMA.
  Yu et al., 2021, ViT-VQGAN (arXiv:2110.04627): low-dimensional lookup via
    linear projections, l2-normalised (cosine) codes.
  Zhu et al., 2024, SimVQ (arXiv:2411.02038): frozen random codebook times a
    learned linear map, so every code moves with each gradient step.
  Dhariwal et al., 2020, Jukebox (arXiv:2005.00341): dead-code restarts from
    batch vectors; k-means codebook initialisation.
  Shin et al., 2021, TE-VQGAN (arXiv:2112.00384): a codebook orthogonality
    regulariser, which makes quantisation translation-equivariant.
  Sun et al., 2024, LlamaGen (arXiv:2406.06525): an entropy penalty on the
    softmax over all codes (``--entropy-loss-ratio``; FQGAN trains with 0.03).

All state updates are static-shape masked updates, so the module traces once
under ``jit``; statistics are plain sums over the (global) batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.quantizers.base import (
  Quantizer,
  QuantizerOutput,
  QuantizerStats,
  check_index_dtype,
  check_last_dim,
  code_usage_metrics,
  straight_through,
)
from vqtok.quantizers.ibq import choose_chunk, index_backprop
from vqtok.quantizers.search import explicit, nearest_code, segment_sum, sharding, take_rows

# Decay of the code-usage EMA that drives restarts when the codebook itself is
# loss-trained (with an EMA codebook the EMA cluster size is the usage).
_USAGE_DECAY = 0.99


def unit_norm(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Scales the last axis of ``x`` to unit norm (zero vectors stay zero)."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def kmeans(
  x: jax.Array, num_clusters: int, iters: int, key: jax.Array, *, normalize: bool = False, chunk_size: int | None = None
) -> jax.Array:
  """Lloyd's k-means with a static number of iterations.

  Args:
    x: ``(N, d)`` points.
    num_clusters: number of centroids ``K``; when ``N < K`` the initial
      centroids are drawn with replacement.
    iters: Lloyd iterations (static).
    key: PRNG key for the initial centroids.
    normalize: spherical k-means (centroids re-normalised each iteration).
    chunk_size: code chunk of the nearest-code search.

  Returns:
    ``(K, d)`` centroids; a cluster that empties keeps its previous centroid.
  """
  n = x.shape[0]
  x = jax.lax.stop_gradient(x).astype(jnp.float32)
  if n >= num_clusters:
    start = jax.random.choice(key, n, (num_clusters,), replace=False)
  else:
    start = jax.random.randint(key, (num_clusters,), 0, n)
  centroids = take_rows(x, start)

  def lloyd(_, c):
    idx, _ = nearest_code(x, c, chunk_size=chunk_size)
    counts = segment_sum(jnp.ones_like(x[:, 0]), idx, num_clusters)
    sums = segment_sum(x, idx, num_clusters)
    new = sums / jnp.maximum(counts, 1.0)[:, None]
    if normalize:
      new = unit_norm(new)
    return jnp.where(counts[:, None] > 0, new, c)

  return jax.lax.fori_loop(0, iters, lloyd, centroids)


def codebook_orthogonality(codes: jax.Array) -> jax.Array:
  """TE-VQGAN's orthogonality term: ``||Ê Êᵀ - I||²_F / K²``, Ê the l2-normalised ``(K, d)`` codes.

  Shin et al., 2021 (arXiv:2112.00384), eq. 2, as the authors' code computes
  it (wcshin-git/TE-VQGAN taming/modules/vqvae/quantize.py: ``F.normalize``
  rows, ``sum(diff**2) / K**2``). When d < K it goes through the d x d Gram
  matrix, since ``||Ê Êᵀ||²_F = ||Êᵀ Ê||²_F`` and ``tr(Ê Êᵀ) = Σ ||ê_k||²``:
  the same value (up to rounding) without a K x K matrix (1 GiB at 16384 codes).

  Args:
    codes: ``(K, d)`` codebook.

  Returns:
    float32 scalar, 0 when the codes are orthogonal (possible only for K <= d).
  """
  k, d = codes.shape
  e = unit_norm(codes.astype(jnp.float32))
  hi = jax.lax.Precision.HIGHEST
  if d < k:
    gram = jnp.matmul(e.T, e, precision=hi)
    total = jnp.sum(jnp.square(gram)) - 2.0 * jnp.sum(jnp.square(e)) + k
  else:
    total = jnp.sum(jnp.square(jnp.matmul(e, e.T, precision=hi) - jnp.eye(k, dtype=jnp.float32)))
  return total / (k * k)


class VectorQuantizer(Quantizer):
  """Nearest-neighbour vector quantizer with an explicit codebook.

  ``z`` of shape ``(..., code_dim)`` is (optionally) projected to
  ``codebook_dim`` (``project_in``), (optionally) l2-normalised, replaced by
  its nearest code, and projected back (``project_out``); gradients reach
  ``z`` by the straight-through estimator.
  """

  def __init__(
    self,
    codebook_size: int,
    code_dim: int,
    *,
    codebook_dim: int | None = None,
    commitment_weight: float = 0.25,
    codebook_weight: float = 1.0,
    ema_decay: float | None = None,
    ema_epsilon: float = 1e-5,
    l2_normalize: bool = False,
    simvq: bool = False,
    simvq_bias: bool = False,
    restart_threshold: float = 0.0,
    kmeans_init: bool = False,
    kmeans_iters: int = 10,
    search_chunk: int | None = None,
    orthogonal_weight: float = 0.0,
    entropy_weight: float = 0.0,
    entropy_temperature: float = 0.01,
    entropy_epsilon: float = 1e-5,
    rngs: nnx.Rngs,
  ):
    """Builds the quantizer.

    Args:
      codebook_size: number of codes ``K`` (>= 2).
      code_dim: dimension of ``z`` and ``z_q``.
      codebook_dim: lookup dimension; linear in/out projections when it
        differs from ``code_dim`` (None: same as ``code_dim``).
      commitment_weight: weight of ``||z - sg(q)||²``.
      codebook_weight: weight of ``||sg(z) - q||²`` (unused with EMA).
      ema_decay: in (0, 1) to update the codebook by EMA instead of the loss.
      ema_epsilon: Laplace smoothing of the EMA cluster sizes.
      l2_normalize: cosine codes: normalise ``z`` and the codes.
      simvq: codebook = frozen random table @ learned linear map.
      simvq_bias: the linear map has a bias, as the authors' code has
        (youngsheen/SimVQ quantize.py: ``nn.Linear(e_dim, e_dim)``); the paper's
        map is a matrix alone.
      restart_threshold: codes whose EMA usage (tokens per batch) falls below
        this are replaced by random batch vectors; 0 disables restarts.
      kmeans_init: initialise the codebook by k-means on the first train batch.
      kmeans_iters: Lloyd iterations of that k-means.
      search_chunk: codes per block of the nearest-code search (None: auto).
      orthogonal_weight: > 0 adds TE-VQGAN's ``codebook_orthogonality`` of the
        searched codebook (``get_codebook``), times this, to the loss (the
        authors' config: 10.0); its term is ``orthogonal``. Needs codes that
        learn by the loss (no ``ema_decay``).
      entropy_weight: > 0 adds LlamaGen's entropy penalty, times this, to the
        loss (its ``--entropy-loss-ratio``; FQGAN: 0.03): the mean per-token
        entropy minus the entropy of the batch-mean of ``softmax(-||x - e||² / τ)``
        over all codes (tokenizer/tokenizer_image/vq_model.py
        ``compute_entropy_loss``, its 1e-5 inside the batch entropy's log);
        terms ``per_sample_entropy``, ``codebook_entropy``, ``entropy``. Needs
        ``l2_normalize``: for unit vectors ``-||x - e||² = 2 x·e - 2``, so it is
        IBQ's chunked entropy of ``x Eᵀ`` at τ / 2 (never a tokens × codes
        matrix).
      entropy_temperature: τ (LlamaGen's 0.01).
      entropy_epsilon: the ε inside the batch entropy's log: LlamaGen's 1e-5;
        UniTok's ``get_entropy_loss`` (models/quant.py) has 1e-7.
      rngs: randomness for the codebook, projections and restart/k-means key.
    """
    if codebook_size < 2:
      raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
    if code_dim < 1:
      raise ValueError(f"code_dim must be >= 1, got {code_dim}")
    if codebook_dim is not None and codebook_dim < 1:
      raise ValueError(f"codebook_dim must be >= 1, got {codebook_dim}")
    if ema_decay is not None and not 0.0 < ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
    if ema_epsilon <= 0:
      raise ValueError(f"ema_epsilon must be > 0, got {ema_epsilon}")
    if commitment_weight < 0 or codebook_weight < 0:
      raise ValueError("commitment_weight and codebook_weight must be >= 0")
    if restart_threshold < 0:
      raise ValueError(f"restart_threshold must be >= 0, got {restart_threshold}")
    if kmeans_iters < 0:
      raise ValueError(f"kmeans_iters must be >= 0, got {kmeans_iters}")
    if search_chunk is not None and search_chunk < 1:
      raise ValueError(f"search_chunk must be >= 1, got {search_chunk}")
    if simvq and (ema_decay is not None or restart_threshold > 0 or kmeans_init):
      # The SimVQ table is frozen; only the linear map learns, by the loss.
      raise ValueError("simvq cannot be combined with ema_decay, restart_threshold or kmeans_init")
    if simvq_bias and not simvq:
      raise ValueError("simvq_bias needs simvq=True")
    if orthogonal_weight < 0:
      raise ValueError(f"orthogonal_weight must be >= 0, got {orthogonal_weight}")
    if orthogonal_weight > 0 and ema_decay is not None:
      raise ValueError("orthogonal_weight needs codes trained by the loss; an EMA codebook gets no gradient")
    if entropy_weight < 0 or entropy_temperature <= 0:
      raise ValueError(
        f"entropy_weight must be >= 0 and entropy_temperature > 0; got {entropy_weight}, {entropy_temperature}"
      )
    if not 0 < entropy_epsilon < 1:
      raise ValueError(f"entropy_epsilon must be in (0, 1), got {entropy_epsilon}")
    if entropy_weight > 0 and not l2_normalize:
      raise ValueError("entropy_weight needs l2_normalize=True (LlamaGen's entropy over -distances of unit codes)")

    self.codebook_size = codebook_size
    self.code_dim = code_dim
    self.codebook_dim = cd = codebook_dim or code_dim
    self.commitment_weight = commitment_weight
    self.codebook_weight = codebook_weight
    self.ema_decay = ema_decay
    self.ema_epsilon = ema_epsilon
    self.l2_normalize = l2_normalize
    self.simvq = simvq
    self.restart_threshold = restart_threshold
    self.kmeans_init = kmeans_init
    self.kmeans_iters = kmeans_iters
    self.search_chunk = search_chunk
    self.orthogonal_weight = orthogonal_weight
    self.entropy_weight = float(entropy_weight)
    self.entropy_temperature = float(entropy_temperature)
    self.entropy_epsilon = float(entropy_epsilon)

    if cd != code_dim:
      self.project_in = nnx.Linear(code_dim, cd, rngs=rngs)
      self.project_out = nnx.Linear(cd, code_dim, rngs=rngs)
    else:
      self.project_in = self.project_out = None

    # Kaiming-uniform rows: unit-variance-preserving scale for d-dim codes.
    bound = cd**-0.5
    init = jax.random.uniform(rngs.params(), (codebook_size, cd), jnp.float32, -bound, bound)
    if simvq:
      # Frozen (non-Param) random table; the optimizer only sees the map.
      self.codebook = QuantizerStats(jax.random.normal(rngs.params(), (codebook_size, cd)) * bound)
      self.codebook_map = nnx.Linear(cd, cd, use_bias=simvq_bias, rngs=rngs)
    elif ema_decay is not None:
      self.codebook = QuantizerStats(init)
      # Count 1 and sum = code is a consistent EMA state (code = sum / count).
      self.embed_sum = QuantizerStats(init)
    else:
      self.codebook = nnx.Param(init)
    if ema_decay is not None or restart_threshold > 0:
      # Starting at one token per batch gives unused codes a grace period.
      self.cluster_size = QuantizerStats(jnp.ones((codebook_size,), jnp.float32))
    if restart_threshold > 0 or kmeans_init:
      self.rng_key = QuantizerStats(jax.random.key_data(rngs.params()))
    if kmeans_init:
      self.initialized = QuantizerStats(jnp.array(False))

  # ---- helpers ----

  def get_codebook(self) -> jax.Array:
    """The ``(K, codebook_dim)`` table the search runs against."""
    if self.simvq:
      codes = self.codebook_map(self.codebook[...])
    else:
      codes = self.codebook[...]
    return unit_norm(codes) if self.l2_normalize else codes

  def _next_key(self) -> jax.Array:
    key, sub = jax.random.split(jax.random.wrap_key_data(self.rng_key[...]))
    self.rng_key[...] = jax.random.key_data(key)
    return sub

  def _init_by_kmeans(self, x: jax.Array) -> None:
    key = self._next_key()
    done = self.initialized[...]
    # cond, not where: after the first step the k-means branch never runs.
    codes = jax.lax.cond(
      done,
      lambda: self.codebook[...],
      lambda: kmeans(
        x, self.codebook_size, self.kmeans_iters, key, normalize=self.l2_normalize, chunk_size=self.search_chunk
      ),
    )
    self.codebook[...] = codes
    if self.ema_decay is not None:
      self.embed_sum[...] = jnp.where(done, self.embed_sum[...], codes)
    if hasattr(self, "cluster_size"):
      self.cluster_size[...] = jnp.where(done, self.cluster_size[...], jnp.ones_like(self.cluster_size[...]))
    self.initialized[...] = jnp.array(True)

  def _update_state(self, x: jax.Array, idx: jax.Array) -> None:
    """EMA codebook, usage EMA and dead-code restart from one train batch."""
    k = self.codebook_size
    x = jax.lax.stop_gradient(x)
    counts = segment_sum(jnp.ones_like(x[:, 0]), idx, k)
    if self.ema_decay is not None:
      g = self.ema_decay
      n = g * self.cluster_size[...] + (1 - g) * counts
      m = g * self.embed_sum[...] + (1 - g) * segment_sum(x, idx, k)
      # Laplace smoothing keeps rarely used codes from dividing by ~0.
      total = jnp.sum(n)
      smoothed = (n + self.ema_epsilon) / (total + k * self.ema_epsilon) * total
      codes = m / smoothed[:, None]
      self.embed_sum[...] = m
    else:
      g = _USAGE_DECAY
      n = g * self.cluster_size[...] + (1 - g) * counts
      codes = self.codebook[...]
    if self.restart_threshold > 0:
      thr = self.restart_threshold
      dead = n < thr
      pick = jax.random.randint(self._next_key(), (k,), 0, x.shape[0])
      fresh = take_rows(x, pick)
      codes = jnp.where(dead[:, None], fresh, codes)
      # Restarted codes start at the threshold (Jukebox / lucidrains rule).
      n = jnp.where(dead, thr, n)
      if self.ema_decay is not None:
        self.embed_sum[...] = jnp.where(dead[:, None], fresh * thr, self.embed_sum[...])
    self.cluster_size[...] = n
    if self.ema_decay is not None or self.restart_threshold > 0:
      self.codebook[...] = codes

  # ---- the quantizer contract ----

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes ``z`` of shape ``(..., code_dim)``.

    Args:
      z: input vectors; any float dtype (the search runs in f32).
      train: update the EMA codebook / usage / restarts / k-means init.

    Returns:
      ``z_q`` (shape and dtype of ``z``) and a ``QuantizerOutput`` with int32
      ``indices`` of shape ``z.shape[:-1]``, ``loss``, ``terms``
      (``commitment``, ``codebook`` unless EMA, ``orthogonal`` with
      ``orthogonal_weight``) and ``metrics``
      (``usage``, ``perplexity``, and ``dead_codes`` with restarts).
    """
    check_last_dim(z, self.code_dim, "VectorQuantizer")
    if not jnp.issubdtype(z.dtype, jnp.floating):
      raise ValueError(f"z must be floating point, got {z.dtype}")
    lead = z.shape[:-1]
    x = z.reshape(-1, self.code_dim).astype(jnp.float32)
    if self.project_in is not None:
      x = self.project_in(x)
    if self.l2_normalize:
      x = unit_norm(x)
    if train and self.kmeans_init:
      self._init_by_kmeans(x)

    codes = self.get_codebook()
    idx, _ = nearest_code(x, codes, chunk_size=self.search_chunk)
    q = take_rows(codes, idx)

    commitment = jnp.mean(jnp.square(x - jax.lax.stop_gradient(q)))
    terms = {"commitment": commitment}
    loss = self.commitment_weight * commitment
    if self.ema_decay is None:
      terms["codebook"] = jnp.mean(jnp.square(jax.lax.stop_gradient(x) - q))
      loss = loss + self.codebook_weight * terms["codebook"]
    if self.orthogonal_weight > 0:
      terms["orthogonal"] = codebook_orthogonality(codes)
      loss = loss + self.orthogonal_weight * terms["orthogonal"]
    if train and self.entropy_weight > 0:
      chunk = min(self.search_chunk or choose_chunk(x.shape[0], self.codebook_size), self.codebook_size)
      # softmax(-d/τ) = softmax(2 x·e/τ) for unit x and e: the dot-product entropy at τ/2.
      _, _, sample_h, codebook_h = index_backprop(
        x, codes, chunk, self.entropy_temperature / 2, self.entropy_epsilon, True, None
      )
      terms.update(per_sample_entropy=sample_h, codebook_entropy=codebook_h, entropy=sample_h - codebook_h)
      loss = loss + self.entropy_weight * terms["entropy"]

    # The value is exactly q, so the eval output equals indices_to_codes bit
    # for bit; no gradient reaches the codes through it (they learn from the
    # codebook term or the EMA).
    out = straight_through(x, q)
    if self.project_out is not None:
      out = self.project_out(out)
    z_q = out.reshape(lead + (self.code_dim,)).astype(z.dtype)

    if train and (self.ema_decay is not None or self.restart_threshold > 0):
      self._update_state(x, idx)
    if explicit(idx):
      # base.code_usage_metrics scatters without an out_sharding; the indices
      # are small, so replicate them rather than fail under explicit axes.
      idx_rep = jax.sharding.reshard(idx, sharding((idx,), None))
    else:
      idx_rep = idx
    metrics = code_usage_metrics(idx_rep, self.codebook_size)
    if self.restart_threshold > 0:
      metrics["dead_codes"] = jnp.mean((self.cluster_size[...] < self.restart_threshold).astype(jnp.float32))
    return z_q, QuantizerOutput(indices=idx.reshape(lead), loss=loss, terms=terms, metrics=metrics)

  def indices_to_codes(self, indices: jax.Array, *, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Returns the eval-mode ``z_q`` for ``indices``.

    Args:
      indices: integer code indices of any shape, in ``[0, codebook_size)``.
      dtype: dtype of the result (the forward pass returns ``z.dtype``).

    Returns:
      ``indices.shape + (code_dim,)`` codes, ``project_out`` applied.
    """
    indices = jnp.asarray(indices)
    check_index_dtype(indices, "VectorQuantizer")
    self.check_indices(indices)
    q = take_rows(self.get_codebook(), indices.reshape(-1))
    if self.project_out is not None:
      q = self.project_out(q)
    return q.reshape(indices.shape + (self.code_dim,)).astype(dtype)
