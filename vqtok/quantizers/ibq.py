"""Index backpropagation quantization (Shi et al., 2024, IBQ, arXiv:2412.02692).

A VQ with a learned codebook ``E`` (K, d) whose every code receives gradient:
the code of ``z`` is the argmax of the logits ``z·e_k`` (a dot product, not a
distance), and the straight-through estimator is applied to the softmax over
*all* codes rather than to ``z``:

  P = softmax(z Eᵀ),   one_hot = hard − sg(P) + P,   z_q = one_hot E.

The value of ``z_q`` is the chosen code ``e_i``; its gradient flows through
``P`` into ``z`` and into every row of ``E`` (and through the hard one-hot
into ``e_i``). The loss terms are the authors' (SEED-Voken,
``IndexPropagationQuantize``): ``mean((z_q − z)²) + mean((sg(e_i) − z)²) +
β·mean((e_i − sg(z))²)``, plus, with ``entropy_weight > 0``, the MAGVIT-v2
entropy penalty on ``softmax(z Eᵀ / τ)``: per-sample entropy minus the entropy
of the batch-mean distribution, the latter as ``−Σ p log(p + ε)`` with the
authors' ε.

Scale: with 2^18 codes and thousands of tokens the tokens × codes matrix is
many GiB, so it never exists. The codebook is scanned in chunks with an online
softmax (a running maximum, as in flash attention): one pass gives the argmax,
the soft code ``P E``, the log-normalisers and the per-sample entropies; a
second pass (entropy only) gives the batch-mean probabilities of each chunk.
The backward pass is a ``custom_vjp`` that recomputes each chunk's logits from
the saved per-token statistics, so memory is O(tokens × chunk + K × d).
"""

from __future__ import annotations

import functools

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
from vqtok.quantizers.search import default_block_bytes, explicit, sharding, take_rows

# Chunks are multiples of this (full matmul tiles) unless the codebook is smaller.
_CHUNK_MULTIPLE = 128


def choose_chunk(num_tokens: int, codebook_size: int, max_block_bytes: int | None = None) -> int:
  """Codes per chunk so that one f32 (tokens, chunk) block fits ``max_block_bytes``."""
  if max_block_bytes is None:
    max_block_bytes = default_block_bytes()
  chunk = max(_CHUNK_MULTIPLE, (max_block_bytes // (4 * max(num_tokens, 1))) // _CHUNK_MULTIPLE * _CHUNK_MULTIPLE)
  return int(min(chunk, codebook_size))


def _split(codebook: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array]:
  """``(num_chunks, chunk, d)`` codes (zero-padded) and the ``(num_chunks, chunk)`` mask of real ones."""
  k, d = codebook.shape
  num = -(-k // chunk)
  padded = jnp.pad(codebook, ((0, num * chunk - k), (0, 0)))
  valid = (jnp.arange(num * chunk) < k).reshape(num, chunk)
  return padded.reshape(num, chunk, d), valid


def _logits(z: jax.Array, c: jax.Array, valid: jax.Array, precision) -> jax.Array:
  """``z cᵀ`` for one chunk, −inf for padded codes."""
  l = jnp.dot(z, c.T, precision=precision, preferred_element_type=jnp.float32)
  return jnp.where(valid[None, :], l, -jnp.inf)


def _first_max(l: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Row maxima of a block and the first column attaining each (NaN rows: column 0).

  A max-reduce and a min-reduce over a float iota, not ``jnp.argmax``: XLA:CPU
  vectorises the former but not the variadic reduce behind the latter (see
  ``search._search_codes``); a float iota is exact below 2^24 columns.
  """
  best = jnp.max(l, axis=1)
  iota = jax.lax.broadcasted_iota(jnp.float32, l.shape, 1)
  first = jnp.min(jnp.where(l == best[:, None], iota, float(l.shape[1])), axis=1)
  return best, jnp.minimum(first.astype(jnp.int32), l.shape[1] - 1)


def argmax_codes(z: jax.Array, codebook: jax.Array, *, chunk_size: int | None = None, precision=None) -> jax.Array:
  """``argmax_k z·e_k`` per token, scanning the codebook in chunks (ties: lowest index)."""
  z = jax.lax.stop_gradient(z).astype(jnp.float32)
  codebook = jax.lax.stop_gradient(codebook).astype(jnp.float32)
  chunk = chunk_size or choose_chunk(z.shape[0], codebook.shape[0])
  codes, valid = _split(codebook, chunk)

  def step(carry, xs):
    best_i, best = carry
    c, v, offset = xs
    m, i = _first_max(_logits(z, c, v, precision))
    better = m > best  # strict: an earlier chunk keeps ties
    return (jnp.where(better, i + offset, best_i), jnp.where(better, m, best)), None

  init = (jnp.zeros_like(z[:, 0], jnp.int32), jnp.full_like(z[:, 0], -jnp.inf))
  offsets = jnp.arange(codes.shape[0], dtype=jnp.int32) * chunk
  (idx, _), _ = jax.lax.scan(step, init, (codes, valid, offsets))
  return idx


def _forward(z, codebook, chunk, temperature, eps, entropy, precision):
  """Both passes; returns the outputs and what the backward pass needs."""
  n = z.shape[0]
  t = temperature
  codes, valid = _split(codebook, chunk)
  offsets = jnp.arange(codes.shape[0], dtype=jnp.int32) * chunk

  # Pass 1, online over chunks with one running max m of the logits l:
  #   z1 = Σ e^(l−m), acc = Σ e^(l−m) e_k (soft code), zt = Σ e^((l−m)/τ),
  #   qt = Σ e^((l−m)/τ) (m−l)/τ (non-negative terms: the per-sample entropy
  #   without the cancellation of lse − E[x]).
  def pass1(carry, xs):
    best_i, m, z1, acc, zt, qt = carry
    c, v, offset = xs
    l = _logits(z, c, v, precision)
    block_max, i = _first_max(l)
    best_i = jnp.where(block_max > m, i + offset, best_i)
    m_new = jnp.maximum(m, block_max)
    a1 = jnp.exp(m - m_new)
    at = jnp.exp((m - m_new) / t)
    e1 = jnp.exp(l - m_new[:, None])
    z1 = z1 * a1 + jnp.sum(e1, axis=1)
    acc = acc * a1[:, None] + jnp.dot(e1, c, precision=precision, preferred_element_type=jnp.float32)
    if entropy:
      et = jnp.exp((l - m_new[:, None]) / t)
      shift = jnp.where(zt > 0, zt * (m_new - m) / t, 0.0)
      block_q = jnp.sum(jnp.where(v[None, :], et * (m_new[:, None] - l) / t, 0.0), axis=1)
      qt = at * (qt + shift) + block_q
      zt = zt * at + jnp.sum(et, axis=1)
    return (best_i, m_new, z1, acc, zt, qt), None

  zeros = jnp.zeros_like(z[:, 0])
  init = (jnp.zeros_like(z[:, 0], jnp.int32), jnp.full_like(z[:, 0], -jnp.inf), zeros, jnp.zeros_like(z), zeros, zeros)
  (idx, m, z1, acc, zt, qt), _ = jax.lax.scan(pass1, init, (codes, valid, offsets))
  soft = acc / z1[:, None]
  lse1 = m + jnp.log(z1)
  res = {"lse1": lse1, "soft": soft}
  if not entropy:
    zero = jnp.zeros((), jnp.float32)
    return (idx, soft, zero, zero), res
  log_zt = jnp.log(zt)
  per_token = qt / zt + log_zt

  # Pass 2: the batch-mean probability a_k of each chunk's codes, the codebook
  # entropy −Σ a log(a + ε), and for the backward pass w_k = ∂H/∂a_k and
  # b_n = Σ_k p_nk w_k.
  def pass2(carry, xs):
    ent, b = carry
    c, v = xs
    l = _logits(z, c, v, precision)
    # log p = (l − m)/τ − log zt; l − m is exact near the maximum, l/τ − lse would cancel.
    p = jnp.exp((l - m[:, None]) / t - log_zt[:, None])
    a = jnp.sum(p, axis=0) / n
    w = jnp.where(v, -(jnp.log(a + eps) + a / (a + eps)), 0.0)
    ent = ent - jnp.sum(jnp.where(v, a * jnp.log(a + eps), 0.0))
    b = b + jnp.dot(p, w, precision=precision, preferred_element_type=jnp.float32)
    return (ent, b), w

  (codebook_entropy, b), w = jax.lax.scan(pass2, (jnp.zeros((), jnp.float32), zeros), (codes, valid))
  res.update(m=m, log_zt=log_zt, per_token=per_token, b=b, w=w)
  return (idx, soft, jnp.mean(per_token), codebook_entropy), res


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def index_backprop(z, codebook, chunk, temperature, eps, entropy, precision):
  """IBQ's soft statistics over all codes, never holding the tokens × codes matrix.

  Args:
    z: ``(N, d)`` float32 latents.
    codebook: ``(K, d)`` float32 codes.
    chunk: codes per chunk (static).
    temperature: τ of the entropy softmax.
    eps: the ε inside the codebook entropy's log.
    entropy: compute the entropy terms (a second pass over the codebook).
    precision: matmul precision.

  Returns:
    ``(indices, soft, sample_entropy, codebook_entropy)``: int32 ``(N,)``
    argmax of ``z Eᵀ``; ``(N, d)`` ``softmax(z Eᵀ) sg(E)``, whose gradient is
    the one through the softmax only (the straight-through part of IBQ);
    ``mean_n H(softmax(z_n Eᵀ/τ))`` and ``−Σ_k a_k log(a_k + ε)`` with
    ``a = mean_n softmax(z_n Eᵀ/τ)`` (zero without ``entropy``).
  """
  return _forward(z, codebook, chunk, temperature, eps, entropy, precision)[0]


def _fwd(z, codebook, chunk, temperature, eps, entropy, precision):
  out, res = _forward(z, codebook, chunk, temperature, eps, entropy, precision)
  return out, (z, codebook, res)


def _bwd(chunk, temperature, eps, entropy, precision, saved, cts):
  z, codebook, res = saved
  _, g_soft, g_sample, g_codebook = cts
  n, k = z.shape[0], codebook.shape[0]
  t = temperature
  codes, valid = _split(codebook, chunk)
  lse1, soft = res["lse1"], res["soft"]
  code_sharding = sharding((z,), None, None) if explicit(z) else None
  # Softmax backward: ∂L/∂l_nk = P_nk (g_n·e_k − g_n·soft_n).
  g_dot_soft = jnp.sum(g_soft * soft, axis=1)

  def step(dz, xs):
    if entropy:
      c, v, w = xs
    else:
      c, v = xs
    l = _logits(z, c, v, precision)
    p1 = jnp.exp(l - lse1[:, None])
    dp = jnp.dot(g_soft, c.T, precision=precision, preferred_element_type=jnp.float32)
    dl = p1 * (dp - g_dot_soft[:, None])
    if entropy:
      log_p = (l - res["m"][:, None]) / t - res["log_zt"][:, None]
      p = jnp.exp(log_p)
      # ∂H_n/∂x_nk = −p (log p + H_n);  ∂H(a)/∂x_nk = p (w_k − b_n) / N.
      d_sample = -p * (log_p + res["per_token"][:, None])
      d_codebook = p * (w[None, :] - res["b"][:, None])
      dx = (g_sample * d_sample + g_codebook * d_codebook) / n
      dl = dl + jnp.where(v[None, :], dx, 0.0) / t
    dz = dz + jnp.dot(dl, c, precision=precision, preferred_element_type=jnp.float32)
    # A sum over the tokens: under explicit mesh axes the (replicated) result's sharding must be named.
    dc = jnp.dot(dl.T, z, precision=precision, preferred_element_type=jnp.float32, out_sharding=code_sharding)
    return dz, dc

  xs = (codes, valid, res["w"]) if entropy else (codes, valid)
  dz, dc = jax.lax.scan(step, jnp.zeros_like(z), xs)
  return dz, dc.reshape(-1, codebook.shape[1])[:k]


index_backprop.defvjp(_fwd, _bwd)


class IBQ(Quantizer):
  """Index backpropagation quantizer: argmax of ``z·e_k`` with a straight-through softmax over all codes.

  Args:
    codebook_size: number of codes ``K`` (>= 2).
    code_dim: dimension ``d`` of ``z`` and of the codes.
    commitment_weight: weight of ``mean((sg(e_i) − z)²)`` (1 in the reference).
    codebook_weight: weight of ``mean((e_i − sg(z))²)`` (the reference's β = 0.25).
    entropy_weight: weight of the entropy loss (the reference trains with 0.05;
      0 skips the second pass over the codebook).
    sample_entropy_weight: weight of the per-sample entropy inside that loss.
    codebook_entropy_weight: weight of the (subtracted) codebook entropy.
    entropy_temperature: τ of the entropy softmax ``softmax(z Eᵀ / τ)``.
    entropy_eps: ε in the codebook entropy ``−Σ a log(a + ε)`` (the reference's 1e-5).
    chunk_size: codes per chunk (None: one f32 tokens × chunk block within
      ``search.default_block_bytes()``).
    precision: matmul precision (None: the backend default).
    rngs: initialises the codebook, N(0, 1) like the reference's ``nn.Embedding``.

  ``train=True`` runs the softmax straight-through estimator (and the entropy
  terms); ``train=False`` only searches the argmax, with the identity
  straight-through gradient to ``z``, so encoding costs one pass.
  """

  def __init__(
    self,
    codebook_size: int,
    code_dim: int,
    *,
    commitment_weight: float = 1.0,
    codebook_weight: float = 0.25,
    entropy_weight: float = 0.0,
    sample_entropy_weight: float = 1.0,
    codebook_entropy_weight: float = 1.0,
    entropy_temperature: float = 0.01,
    entropy_eps: float = 1e-5,
    chunk_size: int | None = None,
    precision: str | None = None,
    rngs: nnx.Rngs,
  ):
    if codebook_size < 2:
      raise ValueError(f"IBQ codebook_size must be >= 2; got {codebook_size}")
    if code_dim < 1:
      raise ValueError(f"IBQ code_dim must be >= 1; got {code_dim}")
    for name, value in (
      ("commitment_weight", commitment_weight),
      ("codebook_weight", codebook_weight),
      ("entropy_weight", entropy_weight),
      ("sample_entropy_weight", sample_entropy_weight),
      ("codebook_entropy_weight", codebook_entropy_weight),
      ("entropy_eps", entropy_eps),
    ):
      if not value >= 0:
        raise ValueError(f"IBQ {name} must be >= 0; got {value}")
    if not entropy_temperature > 0:
      raise ValueError(f"IBQ entropy_temperature must be > 0; got {entropy_temperature}")
    if chunk_size is not None and chunk_size < 1:
      raise ValueError(f"IBQ chunk_size must be >= 1; got {chunk_size}")
    self.codebook_size = int(codebook_size)
    self.code_dim = int(code_dim)
    self.commitment_weight = float(commitment_weight)
    self.codebook_weight = float(codebook_weight)
    self.entropy_weight = float(entropy_weight)
    self.sample_entropy_weight = float(sample_entropy_weight)
    self.codebook_entropy_weight = float(codebook_entropy_weight)
    self.entropy_temperature = float(entropy_temperature)
    self.entropy_eps = float(entropy_eps)
    self.chunk_size = chunk_size
    self.precision = precision
    self.codebook = nnx.Param(jax.random.normal(rngs.params(), (codebook_size, code_dim), jnp.float32))

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes ``z`` of shape ``(..., code_dim)`` to its highest-scoring code.

    Returns:
      ``z_q`` (shape and dtype of ``z``) and a ``QuantizerOutput`` with int32
      ``indices`` ``z.shape[:-1]``; terms ``ibq`` (mean((z_q − z)²)),
      ``commitment``, ``codebook`` and in training with entropy
      ``per_sample_entropy``, ``codebook_entropy``, ``entropy``; metrics
      ``usage`` and ``perplexity``.
    """
    check_last_dim(z, self.code_dim, "IBQ")
    if not jnp.issubdtype(z.dtype, jnp.floating):
      raise ValueError(f"IBQ: z must be floating point; got {z.dtype}")
    lead = z.shape[:-1]
    x = z.reshape(-1, self.code_dim).astype(jnp.float32)
    codes = self.codebook[...]
    chunk = min(self.chunk_size or choose_chunk(x.shape[0], self.codebook_size), self.codebook_size)
    entropy = train and self.entropy_weight > 0
    if train:
      idx, soft, sample_h, codebook_h = index_backprop(
        x, codes, chunk, self.entropy_temperature, self.entropy_eps, entropy, self.precision
      )
      hard = take_rows(codes, idx)
      # (soft − sg(soft)) is exactly 0, so z_q is exactly the code (and equals
      # indices_to_codes); its gradient is the softmax's: one_hot = hard − sg(P) + P.
      q = hard + (soft - jax.lax.stop_gradient(soft))
    else:
      idx = argmax_codes(x, codes, chunk_size=chunk, precision=self.precision)
      hard = take_rows(codes, idx)
      q = straight_through(x, hard)
    terms = {
      "ibq": jnp.mean(jnp.square(q - x)),
      "commitment": jnp.mean(jnp.square(jax.lax.stop_gradient(hard) - x)),
      "codebook": jnp.mean(jnp.square(hard - jax.lax.stop_gradient(x))),
    }
    loss = terms["ibq"] + self.commitment_weight * terms["commitment"] + self.codebook_weight * terms["codebook"]
    if entropy:
      ent = self.sample_entropy_weight * sample_h - self.codebook_entropy_weight * codebook_h
      terms.update(per_sample_entropy=sample_h, codebook_entropy=codebook_h, entropy=ent)
      loss = loss + self.entropy_weight * ent
    idx_rep = jax.sharding.reshard(idx, sharding((idx,), None)) if explicit(idx) else idx
    metrics = code_usage_metrics(idx_rep, self.codebook_size)
    z_q = q.reshape(lead + (self.code_dim,)).astype(z.dtype)
    return z_q, QuantizerOutput(indices=idx.reshape(lead), loss=loss, terms=terms, metrics=metrics)

  def indices_to_codes(self, indices: jax.Array, *, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """The eval-mode ``z_q`` of ``indices`` (any shape): ``indices.shape + (code_dim,)``."""
    indices = jnp.asarray(indices)
    check_index_dtype(indices, "IBQ")
    self.check_indices(indices)
    q = take_rows(self.codebook[...], indices.reshape(-1))
    return q.reshape(indices.shape + (self.code_dim,)).astype(dtype)
