"""What the binary quantizers (LFQ, BSQ) share: sign codes, indices, entropy.

Both quantise each of ``bits`` channels to its sign, so the implicit codebook
is the set of corners of a hypercube ({-1, 1}^bits for LFQ, scaled by
1/sqrt(bits) for BSQ) with ``2**bits`` codes and no lookup. The index is the
binary number of the signs (1 for +), read in ``bit_order``: ``"msb_first"``
(channel 0 is the most significant bit; vqtok's order, and the only one
before the option existed) or ``"lsb_first"`` (channel 0 is bit 0, as in
Open-MAGVIT2's ``2 ** arange(bits)`` mask). Published tokenizers differ, so
token ids are only the authors' ids in the authors' order.
An index is an int32, so at most 30 bits make one; ``index_groups=G`` splits
the channels into G equal groups with one index each (indices gain a trailing
axis of G), for codes of more bits (BSQ-ViT's 36: two indices of 18 bits, the
authors' int64 id being ``ids[..., 0] * 2**18 + ids[..., 1]`` with msb first).
The codes themselves, and the normalisation, stay those of all the bits.

Their entropy penalties use a soft assignment p(c|z) that factorises over
bits, p(bit_i = + | z) = sigmoid(logit_i), so the per-sample entropy is a sum
of binary entropies. The codebook entropy H(mean_n p(c|z_n)) does not
factorise; ``entropy_mode="exact"`` computes it over all codes, ``"factorized"``
uses the sum of per-bit entropies of the mean, an upper bound (subadditivity)
with memory linear in ``bits``.

The exact mean is a matmul: split the bits into high and low halves, then
p(c|z_n) = P[n, c_hi] Q[n, c_lo] and mean_n p(c|z_n) = (P^T Q)[c_hi, c_lo] / N,
with P (N, 2**a) and Q (N, 2**b), a + b = bits. That is N * 2**bits
multiply-adds in one well-shaped GEMM and N * (2**a + 2**b) exponentials,
where a log-space sum over codes needs N * 2**bits exponentials and a
bits-deep matmul for every code. Blocks of high codes bound the memory
(``chunk_size`` codes per block; the default is per backend, one block up to
2**bits = 2**26 on accelerators, a few MiB per block on the CPU).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.quantizers.base import (
  Quantizer,
  QuantizerOutput,
  check_index_dtype,
  check_last_dim,
  code_usage_metrics,
  last_axis,
  straight_through,
)

ENTROPY_MODES = ("exact", "factorized")
#: How channels map to index bits; the first is the default (vqtok's order).
BIT_ORDERS = ("msb_first", "lsb_first")
# Beyond this codebook size the usage histogram itself would dominate memory.
_MAX_HISTOGRAM = 2**20
# Elements one block of the exact codebook entropy may hold (its P and Q
# columns and its codes), per backend: cache-sized on the CPU, where blocks
# are scanned; on accelerators 1 GiB of float32, so 2**18 codes are one GEMM
# at any realistic batch and no loop is left.
_BLOCK_ELEMENTS = {"cpu": 2**23}
_ACCELERATOR_BLOCK_ELEMENTS = 2**28


def check_bit_order(bit_order: str, name: str) -> str:
  """Returns ``bit_order`` if it is one of ``BIT_ORDERS``; else raises ValueError."""
  if bit_order not in BIT_ORDERS:
    raise ValueError(f"{name} bit_order must be one of {BIT_ORDERS}; got {bit_order!r}")
  return bit_order


def bit_shifts(bits: int, bit_order: str = "msb_first") -> jax.Array:
  """Right-shift of each channel's bit in an index, in ``bit_order``."""
  if check_bit_order(bit_order, "bit_shifts") == "lsb_first":
    return jnp.arange(bits, dtype=jnp.int32)
  return jnp.arange(bits - 1, -1, -1, dtype=jnp.int32)


def signs_to_indices(positive: jax.Array, bit_order: str = "msb_first") -> jax.Array:
  """Binary index of boolean ``positive`` (..., bits) -> int32 (...), in ``bit_order``."""
  bits = positive.shape[-1]
  weights = last_axis(jnp.left_shift(jnp.int32(1), bit_shifts(bits, bit_order)), positive.ndim)
  return jnp.sum(positive.astype(jnp.int32) * weights, axis=-1).astype(jnp.int32)


def indices_to_signs(indices: jax.Array, bits: int, bit_order: str = "msb_first") -> jax.Array:
  """±1 float32 codes (..., bits) of int indices (...), in ``bit_order``."""
  idx = jnp.asarray(indices).astype(jnp.int32)[..., None]
  bit = jnp.bitwise_and(jnp.right_shift(idx, last_axis(bit_shifts(bits, bit_order), idx.ndim)), 1)
  return bit.astype(jnp.float32) * 2.0 - 1.0


def _split(bits: int, chunk: int) -> tuple[int, int]:
  """(low bits b, high codes per block r) for blocks of ``chunk`` codes (both powers of two)."""
  low = min(bits // 2, chunk.bit_length() - 1)
  return low, max(1, chunk >> low)


def _block_elements(n: int, bits: int, chunk: int) -> int:
  low, rows = _split(bits, chunk)
  return n * (2**low + rows) + rows * 2**low


def default_chunk(n: int, bits: int, backend: str | None = None) -> int:
  """Codes per block of the exact codebook entropy: the most that fit the backend's block budget."""
  backend = jax.default_backend() if backend is None else backend
  budget = _BLOCK_ELEMENTS.get(backend, _ACCELERATOR_BLOCK_ELEMENTS)
  chunk = 2**bits
  while chunk > 1 and _block_elements(n, bits, chunk) > budget:
    chunk //= 2
  return chunk


def _code_probs(lp: jax.Array, lm: jax.Array, codes: jax.Array) -> jax.Array:
  """p over ``codes`` (int32 (C,)) of the bits in lp/lm (N, k): (N, C), each Σ_i log p in one small matmul."""
  k = lp.shape[-1]
  b = jnp.bitwise_and(jnp.right_shift(codes[None, :], bit_shifts(k)[:, None]), 1).astype(jnp.float32)
  base = jnp.sum(lm, axis=-1, keepdims=True)
  return jnp.exp(base + jnp.dot(lp - lm, b, precision=jax.lax.Precision.HIGHEST))


def _entropy_of(p: jax.Array, eps: float = 0.0) -> jax.Array:
  """-Σ p log(p + eps); for eps 0 with 0 log 0 = 0 and a zero (not NaN) gradient there."""
  if eps > 0:
    return -jnp.sum(p * jnp.log(p + eps))
  pos = p > 0
  return -jnp.sum(jnp.where(pos, p * jnp.log(jnp.where(pos, p, 1.0)), 0.0))


def _exact_codebook_entropy(lp: jax.Array, lm: jax.Array, chunk: int, eps: float = 0.0) -> jax.Array:
  """H(mean_n p(c|z_n)) over all 2**bits codes in blocks of ``chunk``; lp/lm: (N, bits) logs; ``eps`` inside the log.

  Linear, not log, probabilities: every P and Q entry is at most 1 and each
  row sums to 1, so nothing overflows; entries that underflow are below
  1e-38 and change the entropy by less than that.
  """
  n, bits = lp.shape
  low, rows = _split(bits, chunk)
  high = bits - low
  q = _code_probs(lp[:, high:], lm[:, high:], jnp.arange(2**low, dtype=jnp.int32))

  # Rematerialised in the backward pass: only Q, the carry and the block
  # offsets are stored, memory O(N * (2**low + rows) + chunk).
  @jax.checkpoint
  def body(acc, start):
    p = _code_probs(lp[:, :high], lm[:, :high], start + jnp.arange(rows, dtype=jnp.int32))
    mean = jnp.dot(p.T, q, precision=jax.lax.Precision.HIGHEST) / n
    return acc + _entropy_of(mean, eps), None

  starts = jnp.arange(0, 2**high, rows, dtype=jnp.int32)
  if starts.shape[0] == 1:  # one GEMM, no loop
    return body(jnp.zeros((), jnp.float32), starts[0])[0]
  entropy, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), starts)
  return entropy


def binary_entropy_terms(
  logits: jax.Array, *, mode: str = "exact", chunk_size: int | None = None, codebook_eps: float = 0.0
) -> tuple[jax.Array, jax.Array]:
  """Per-sample and codebook entropy of independent-bit code distributions.

  Args:
    logits: (N, bits) float32; p(bit_i = +1 | token n) = sigmoid(logits[n, i]).
    mode: "exact" (codebook entropy over all 2**bits codes, in blocks) or
      "factorized" (Σ_i H(mean_n p(bit_i)), an upper bound on the exact value).
    chunk_size: codes per block in exact mode, a power of two; default
      ``default_chunk`` (per backend: all codes in one block on accelerators).
    codebook_eps: exact mode only: the codebook entropy is -Σ_c p̄_c log(p̄_c + eps)
      (Open-MAGVIT2: eps 1e-5, lookup_free_quantize.py:85, 107); 0 is the entropy itself.

  Returns:
    (mean_n H(p(c|z_n)), H(mean_n p(c|z_n))) as float32 scalars, in nats.
  """
  if mode not in ENTROPY_MODES:
    raise ValueError(f"entropy_mode must be one of {ENTROPY_MODES}; got {mode!r}")
  logits = logits.astype(jnp.float32)
  n, bits = logits.shape
  lp = jax.nn.log_sigmoid(logits)
  lm = jax.nn.log_sigmoid(-logits)
  per_sample = -jnp.sum(jnp.exp(lp) * lp + jnp.exp(lm) * lm) / n
  if mode == "factorized":
    if codebook_eps:
      raise ValueError("codebook_eps needs mode='exact'")
    # log of the batch-mean bit probabilities, stable for tiny temperatures.
    lbar_p = jax.scipy.special.logsumexp(lp, axis=0) - math.log(n)
    lbar_m = jax.scipy.special.logsumexp(lm, axis=0) - math.log(n)
    codebook = -jnp.sum(jnp.exp(lbar_p) * lbar_p + jnp.exp(lbar_m) * lbar_m)
    return per_sample, codebook
  num_codes = 2**bits
  if chunk_size is None:
    chunk = default_chunk(n, bits)
  else:
    chunk = int(chunk_size)
    if chunk < 1 or chunk & (chunk - 1):
      raise ValueError(f"chunk_size must be a power of two; got {chunk_size}")
    chunk = min(chunk, num_codes)
  return per_sample, _exact_codebook_entropy(lp, lm, chunk, float(codebook_eps))


def resolve_bits(bits: int | None, codebook_size: int | None, name: str, index_groups: int = 1) -> int:
  """Number of bits from ``bits`` and/or ``codebook_size`` (= 2**bits); at most 30 per index group."""
  if bits is None and codebook_size is None:
    raise ValueError(f"{name} needs bits or codebook_size")
  if bits is None:
    bits = int(codebook_size).bit_length() - 1
  bits = int(bits)
  if bits < 1 or bits > 30 * index_groups:
    more = "" if index_groups == 1 else f" with index_groups={index_groups}"
    raise ValueError(f"{name} bits must be in [1, {30 * index_groups}] (int32 indices{more}); got {bits}")
  if codebook_size is not None and int(codebook_size) != 2**bits:
    raise ValueError(
      f"{name} codebook_size must be 2**bits: got codebook_size={codebook_size} with bits={bits} (2**bits = {2**bits})"
    )
  return bits


def binary_usage_metrics(indices: jax.Array, positive: jax.Array, bits: int) -> dict[str, jax.Array]:
  """Usage/perplexity (when the histogram is small) and mean bit balance."""
  metrics = {"bit_balance": jnp.mean(positive.astype(jnp.float32))}
  if 2**bits <= _MAX_HISTOGRAM:
    metrics.update(code_usage_metrics(indices, 2**bits))
  return metrics


class BinaryQuantizer(Quantizer):
  """What LFQ and BSQ share: codes are corners of a hypercube, one sign per bit.

  Handles the optional projections, index <-> code mapping, the entropy terms
  and the output; subclasses map the projected latent to signs and a
  commitment term.
  """

  _name = "binary quantizer"

  def _setup(
    self,
    *,
    bits: int,
    code_dim: int | None,
    entropy_weight: float,
    commitment_weight: float,
    sample_entropy_weight: float,
    codebook_entropy_weight: float,
    entropy_mode: str,
    chunk_size: int | None,
    bit_order: str,
    rngs: nnx.Rngs,
    index_groups: int = 1,
    codebook_entropy_eps: float = 0.0,
  ) -> None:
    name = self._name
    self.bit_order = check_bit_order(bit_order, name)
    if not isinstance(index_groups, int) or index_groups < 1 or bits % index_groups or bits // index_groups > 30:
      raise ValueError(
        f"{name} index_groups must be a positive int dividing bits={bits} into groups of <= 30; got {index_groups!r}"
      )
    if index_groups > 1 and entropy_mode == "exact":
      raise ValueError(f"{name} entropy_mode='exact' sums over all 2**bits codes; with index_groups use 'factorized'")
    self.index_groups = index_groups
    if entropy_mode not in ENTROPY_MODES:
      raise ValueError(f"{name} entropy_mode must be one of {ENTROPY_MODES}; got {entropy_mode!r}")
    if chunk_size is not None and (chunk_size < 1 or chunk_size & (chunk_size - 1)):
      raise ValueError(f"{name} chunk_size must be a power of two; got {chunk_size}")
    for field, value in (
      ("entropy_weight", entropy_weight),
      ("commitment_weight", commitment_weight),
      ("sample_entropy_weight", sample_entropy_weight),
      ("codebook_entropy_weight", codebook_entropy_weight),
      ("codebook_entropy_eps", codebook_entropy_eps),
    ):
      if not value >= 0:
        raise ValueError(f"{name} {field} must be >= 0; got {value}")
    code_dim = bits if code_dim is None else int(code_dim)
    self.bits = bits
    # Codes per index: per group when the indices are split.
    self.codebook_size = 2 ** (bits // index_groups)
    self.code_dim = code_dim
    self.entropy_weight = float(entropy_weight)
    self.commitment_weight = float(commitment_weight)
    self.sample_entropy_weight = float(sample_entropy_weight)
    self.codebook_entropy_weight = float(codebook_entropy_weight)
    if codebook_entropy_eps and entropy_mode != "exact":
      raise ValueError(f"{name} codebook_entropy_eps needs entropy_mode='exact'; got {entropy_mode!r}")
    self.codebook_entropy_eps = float(codebook_entropy_eps)
    self.entropy_mode = entropy_mode
    self.chunk_size = chunk_size
    if code_dim != bits:
      self.project_in = nnx.Linear(code_dim, bits, rngs=rngs)
      self.project_out = nnx.Linear(bits, code_dim, rngs=rngs)
    else:
      self.project_in = nnx.data(None)
      self.project_out = nnx.data(None)

  def code_scale(self) -> float:
    """Magnitude of each code coordinate (1 for LFQ, 1/sqrt(bits) for BSQ)."""
    return 1.0

  @property
  def index_depth(self) -> int | None:
    return self.index_groups if self.index_groups > 1 else None

  def _group(self, x: jax.Array) -> jax.Array:
    """(..., bits) -> (..., index_groups, bits / index_groups) when the indices are split."""
    if self.index_groups == 1:
      return x
    return x.reshape(*x.shape[:-1], self.index_groups, self.bits // self.index_groups)

  def indices_to_codes(self, indices: jax.Array) -> jax.Array:
    """Codes ``z_q`` (..., code_dim), float32, that eval-mode ``__call__`` returns.

    Args:
      indices: int indices in ``[0, codebook_size)``, any shape; with
        ``index_groups`` > 1 a trailing axis of that many.

    Returns:
      float32 array of shape ``indices.shape + (code_dim,)`` (the group axis replaced).
    """
    check_index_dtype(indices, self._name)
    g = self.index_groups
    if g > 1 and (jnp.ndim(indices) < 1 or jnp.shape(indices)[-1] != g):
      raise ValueError(f"{self._name} indices must have shape (..., {g}) (index_groups); got {jnp.shape(indices)}")
    self.check_indices(indices)
    # Same float32 scale as __call__, so the round trip is bit-exact.
    signs = indices_to_signs(indices, self.bits // g, self.bit_order)
    if g > 1:
      signs = signs.reshape(*signs.shape[:-2], self.bits)
    codes = signs * jnp.float32(self.code_scale())
    if self.project_out is not None:
      codes = self.project_out(codes)
    return codes

  def _project(self, z: jax.Array) -> jax.Array:
    check_last_dim(z, self.code_dim, self._name)
    h = z.astype(jnp.float32)
    if self.project_in is not None:
      h = self.project_in(h)
    return h

  def _output(
    self, z: jax.Array, x: jax.Array, q: jax.Array, commitment: jax.Array, logits_fn, *, train: bool
  ) -> tuple[jax.Array, QuantizerOutput]:
    """Straight-through codes, entropy terms (training only) and the output.

    Args:
      z: the caller's input (for the output dtype).
      x: the projected latent that was quantised to ``q``.
      q: the codes, ``±code_scale()``.
      commitment: the unweighted commitment term.
      logits_fn: ``() -> (N, bits)`` per-bit logits of the soft assignment.
      train: add the entropy terms.
    """
    positive = q > 0
    codes = straight_through(x, q)
    indices = signs_to_indices(self._group(positive), self.bit_order)
    terms = {"commitment": commitment}
    loss = self.commitment_weight * commitment
    if train and self.entropy_weight > 0:
      per_sample, codebook = binary_entropy_terms(
        logits_fn(), mode=self.entropy_mode, chunk_size=self.chunk_size, codebook_eps=self.codebook_entropy_eps
      )
      entropy = self.sample_entropy_weight * per_sample - self.codebook_entropy_weight * codebook
      terms.update(entropy=entropy, per_sample_entropy=per_sample, codebook_entropy=codebook)
      loss = loss + self.entropy_weight * entropy
    if self.project_out is not None:
      codes = self.project_out(codes)
    out = QuantizerOutput(
      indices=indices,
      loss=loss,
      terms=terms,
      metrics=binary_usage_metrics(indices, positive, self.bits // self.index_groups),
    )
    return codes.astype(z.dtype), out
