"""Tests of FSQ, LFQ, BSQ, Residual, Grouped, MultiScaleResidual and build_quantizer.

Numerics are checked against plain NumPy/SciPy references written here from
the papers' equations (FSQ bound/round/mixed radix; sign codes and binary
indices; entropies by brute force over all 2**bits codes).
"""

import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.special
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vqtok.quantizers import (
  BSQ,
  FSQ,
  GSQ,
  IBQ,
  LFQ,
  QUANTIZER_TYPES,
  DualCodebook,
  Grouped,
  MultiScaleResidual,
  Quantizer,
  Residual,
  binary_entropy_terms,
  build_quantizer,
  quantizer_class,
)

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _fresh_rng():
  """Every test draws the same numbers however the tests are ordered or split across workers."""
  global RNG
  RNG = np.random.default_rng(0)


def randn(*shape, scale=1.0):
  return jnp.asarray(RNG.standard_normal(shape) * scale, jnp.float32)


# ----------------------------- NumPy references -----------------------------


def np_fsq(z, levels):
  """FSQ from the paper: tanh bound with half-step offset, round, normalise."""
  lv = np.asarray(levels, np.float64)
  eps = 1e-3
  half_l = (lv - 1) * (1 - eps) / 2
  offset = np.where(lv % 2 == 0, 0.5, 0.0)
  # Exact inverse of the offset (the listing's tan() approximates it); L = 2
  # has none (0.5 / half_l > 1), so its rounding boundary stays at z = 0.
  shift = np.array([np.arctanh(o / h) if o < h else 0.0 for o, h in zip(offset, half_l, strict=True)])
  bounded = np.tanh(np.asarray(z, np.float64) + shift) * half_l - offset
  rounded = np.round(bounded)
  half_width = np.floor(lv / 2)
  codes = rounded / half_width
  digits = (rounded + half_width).astype(np.int64)
  idx = np.zeros(digits.shape[:-1], np.int64)
  mult = 1
  for i, l in enumerate(levels):  # first channel least significant
    idx += digits[..., i] * mult
    mult *= l
  return codes, idx


def np_binary_index(positive):
  bits = positive.shape[-1]
  idx = np.zeros(positive.shape[:-1], np.int64)
  for i in range(bits):  # first channel most significant
    idx = idx * 2 + positive[..., i].astype(np.int64)
  return idx


def all_sign_codes(bits):
  return np.array(list(itertools.product([-1.0, 1.0], repeat=bits)))


def np_entropies(scores):
  """(mean per-sample entropy, codebook entropy, factorised codebook entropy).

  ``scores`` (N, K) are unnormalised log-probabilities over all K = 2**bits
  codes in ``all_sign_codes`` order.
  """
  p = scipy.special.softmax(np.asarray(scores, np.float64), axis=-1)
  per_sample = np.mean(scipy.special.entr(p).sum(-1))
  avg = p.mean(0)
  codebook = scipy.special.entr(avg).sum()
  bits = int(round(math.log2(p.shape[1])))
  codes = all_sign_codes(bits)
  factorized = 0.0
  for i in range(bits):
    m = avg[codes[:, i] > 0].sum()
    factorized += scipy.special.entr(m) + scipy.special.entr(1 - m)
  return per_sample, codebook, factorized


# --------------------------------- factories ---------------------------------

DIM = 6
FACTORIES = {
  "fsq": lambda r: FSQ((4, 3, 5, 2, 3, 2), rngs=r),
  "fsq_proj": lambda r: FSQ((8, 5, 5), code_dim=DIM, rngs=r),
  "lfq": lambda r: LFQ(bits=DIM, temperature=0.5, rngs=r),
  "lfq_proj_factorized": lambda r: LFQ(bits=4, code_dim=DIM, entropy_mode="factorized", rngs=r),
  "bsq": lambda r: BSQ(bits=DIM, entropy_mode="exact", chunk_size=8, rngs=r),
  "bsq_proj": lambda r: BSQ(bits=4, code_dim=DIM, rngs=r),
  "residual_fsq": lambda r: Residual(make=lambda: FSQ((5, 5, 3, 3, 3, 3), rngs=r), num_levels=3, rngs=r),
  "residual_lfq_shared": lambda r: Residual([LFQ(bits=DIM, rngs=r)], num_levels=2, shared=True, rngs=r),
  "grouped_bsq": lambda r: Grouped(make=lambda: BSQ(bits=3, rngs=r), num_groups=2, rngs=r),
  "ibq": lambda r: IBQ(40, DIM, entropy_weight=0.05, entropy_temperature=0.5, chunk_size=16, rngs=r),
  "gsq": lambda r: GSQ(24, DIM, num_groups=2, rngs=r),
  "dual": lambda r: DualCodebook(24, DIM, semantic_dim=4, entropy_weight=0.1, rngs=r),
  "residual_vq": lambda r: build_quantizer(
    {"type": "residual", "num_levels": 2, "quantizer": {"type": "vq", "codebook_size": 16}}, code_dim=DIM, rngs=r
  ),
  "multiscale_vq": lambda r: build_quantizer(
    {"type": "multiscale", "scales": [1, 2, 4], "quantizer": {"type": "vq", "codebook_size": 16}}, code_dim=DIM, rngs=r
  ),
  "multiscale_bsq": lambda r: MultiScaleResidual(BSQ(bits=DIM, rngs=r), scales=(1, 3, 4), phi_count=1, rngs=r),
}
ALL = sorted(FACTORIES)
# Multi-scale quantizers take a spatial latent (..., S, S, d): batch, 4 x 4 cells.
SPATIAL = {"multiscale_vq", "multiscale_bsq"}


def input_shape(name, batch, tokens):
  return (batch, 4, 4, DIM) if name in SPATIAL else (batch, tokens, DIM)


def make(name, seed=0):
  q = FACTORIES[name](nnx.Rngs(seed))
  assert isinstance(q, Quantizer) and q.code_dim == DIM
  return q


def run(q, z, train):
  return q(z, train=train)


jit_run = nnx.jit(run, static_argnames="train")


# ------------------------------ FSQ numerics ------------------------------


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (2, 3, 4), (7, 6)])
def test_fsq_matches_numpy(levels):
  q = FSQ(levels, rngs=nnx.Rngs(0))
  z = randn(3, 5, len(levels), scale=2.0)
  z_q, out = q(z)
  ref_codes, ref_idx = np_fsq(np.asarray(z), levels)
  assert z_q.shape == z.shape and z_q.dtype == jnp.float32
  assert out.indices.shape == (3, 5) and out.indices.dtype == jnp.int32
  np.testing.assert_allclose(np.asarray(z_q), ref_codes, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out.indices), ref_idx)
  assert q.codebook_size == int(np.prod(levels))
  assert len(nnx.state(q, nnx.Param)) == 0  # implicit codebook: nothing stored
  assert float(out.loss) == 0.0
  assert np.all(np.abs(np.asarray(z_q)) <= 1.0)


def test_fsq_index_mapping_is_a_bijection():
  levels = (4, 3, 5)
  q = FSQ(levels, rngs=nnx.Rngs(0))
  idx = jnp.arange(q.codebook_size, dtype=jnp.int32)
  codes = q.indices_to_codes(idx)
  # Every grid point appears exactly once and maps back to its index.
  np.testing.assert_array_equal(np.asarray(q.codes_to_indices(codes)), np.arange(60))
  assert len({tuple(c) for c in np.asarray(codes).tolist()}) == 60
  grid = [(np.arange(l) - l // 2) / (l // 2) for l in levels]
  ref = {tuple(c) for c in itertools.product(*grid)}
  assert {tuple(np.round(c, 6)) for c in np.asarray(codes).tolist()} == {tuple(np.round(c, 6)) for c in ref}


def test_fsq_usage_metrics():
  q = FSQ((3, 3), rngs=nnx.Rngs(0))
  z = jnp.asarray([[-5.0, -5.0], [5.0, 5.0], [5.0, 5.0], [0.0, 0.0]])
  _, out = q(z)
  counts = np.bincount(np_fsq(np.asarray(z), (3, 3))[1], minlength=9)
  p = counts / counts.sum()
  np.testing.assert_allclose(float(out.metrics["usage"]), 3 / 9, rtol=1e-6)
  np.testing.assert_allclose(float(out.metrics["perplexity"]), np.exp(scipy.special.entr(p).sum()), rtol=1e-5)


# --------------------------- LFQ / BSQ numerics ---------------------------


def test_lfq_codes_and_indices_match_numpy():
  q = LFQ(bits=5, rngs=nnx.Rngs(0))
  z = randn(4, 3, 5)
  z_q, out = q(z)
  zn = np.asarray(z)
  np.testing.assert_array_equal(np.asarray(z_q), np.where(zn > 0, 1.0, -1.0))
  np.testing.assert_array_equal(np.asarray(out.indices), np_binary_index(zn > 0))
  np.testing.assert_allclose(float(out.terms["commitment"]), np.mean((zn - np.sign(zn)) ** 2), rtol=1e-5)
  assert "entropy" not in out.terms  # entropy terms are training-only


def test_bsq_codes_and_indices_match_numpy():
  q = BSQ(bits=5, rngs=nnx.Rngs(0))
  z = randn(4, 3, 5, scale=3.0)
  z_q, out = q(z)
  zn = np.asarray(z, np.float64)
  u = zn / np.linalg.norm(zn, axis=-1, keepdims=True)
  ref = np.where(u > 0, 1.0, -1.0) / np.sqrt(5)
  np.testing.assert_allclose(np.asarray(z_q), ref, atol=1e-7)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(z_q), axis=-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(out.indices), np_binary_index(u > 0))
  np.testing.assert_allclose(float(out.terms["commitment"]), np.mean(((u - ref) ** 2).sum(-1)), rtol=1e-5)


def _string_index(positive, bit_order):
  """The index as Python reads a string of binary digits: independent of the shift arithmetic."""
  rows = positive.reshape(-1, positive.shape[-1])
  digits = ["".join("1" if b else "0" for b in row) for row in rows]
  if bit_order == "lsb_first":  # channel 0 is the last (least significant) digit
    digits = [d[::-1] for d in digits]
  return np.array([int(d, 2) for d in digits]).reshape(positive.shape[:-1])


@pytest.mark.parametrize("bit_order", ["msb_first", "lsb_first"])
@pytest.mark.parametrize("cls", [LFQ, BSQ])
def test_bit_order_matches_an_independent_computation(cls, bit_order):
  q = cls(bits=6, bit_order=bit_order, rngs=nnx.Rngs(0))
  z = randn(5, 7, 6)
  z_q, out = q(z)
  want = _string_index(np.asarray(z) > 0, bit_order)
  np.testing.assert_array_equal(np.asarray(out.indices), want)
  np.testing.assert_array_equal(np.asarray(q.indices_to_codes(out.indices)), np.asarray(z_q))
  # Channel 0 alone set: the top bit in msb_first, bit 0 in lsb_first.
  one_hot = jnp.asarray(np.where(np.arange(6) == 0, 1.0, -1.0), jnp.float32)
  assert int(q(one_hot)[1].indices) == (32 if bit_order == "msb_first" else 1)


def test_bit_order_default_is_msb_first():
  # The order every vqtok-trained LFQ/BSQ model has used; changing it renumbers their tokens.
  z = randn(3, 5)
  for cls in (LFQ, BSQ):
    _, out = cls(bits=5, rngs=nnx.Rngs(0))(z)
    np.testing.assert_array_equal(np.asarray(out.indices), _string_index(np.asarray(z) > 0, "msb_first"))


def test_bit_order_rejects_unknown_values():
  with pytest.raises(ValueError, match="LFQ bit_order must be one of"):
    LFQ(bits=4, bit_order="little", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="BSQ bit_order must be one of"):
    build_quantizer({"type": "bsq", "bits": 4, "bit_order": "big"}, code_dim=4, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("temperature", [0.5, 0.01])
@pytest.mark.parametrize("mode", ["exact", "factorized"])
def test_lfq_entropy_vs_bruteforce(mode, temperature):
  bits = 4
  q = LFQ(
    bits=bits,
    temperature=temperature,
    entropy_mode=mode,
    chunk_size=4,
    entropy_weight=0.3,
    commitment_weight=0.7,
    sample_entropy_weight=1.5,
    codebook_entropy_weight=0.8,
    rngs=nnx.Rngs(0),
  )
  z = randn(2, 10, bits, scale=0.3)
  _, out = q(z, train=True)
  zn = np.asarray(z, np.float64).reshape(-1, bits)
  codes = all_sign_codes(bits)
  # p(c|z) ∝ exp(-||z - c||² / τ), over all 16 codes.
  scores = -((zn[:, None, :] - codes[None]) ** 2).sum(-1) / temperature
  per_sample, codebook, factorized = np_entropies(scores)
  want_cb = codebook if mode == "exact" else factorized
  np.testing.assert_allclose(float(out.terms["per_sample_entropy"]), per_sample, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(out.terms["codebook_entropy"]), want_cb, rtol=1e-4, atol=1e-6)
  commit = np.mean((zn - np.sign(zn)) ** 2)
  want_loss = 0.7 * commit + 0.3 * (1.5 * per_sample - 0.8 * want_cb)
  np.testing.assert_allclose(float(out.loss), want_loss, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [4, 16])
def test_lfq_codebook_entropy_eps_vs_bruteforce(chunk_size):
  """Open-MAGVIT2's -sum(p log(p + eps)) (lookup_free_quantize.py:107), value and gradient."""
  bits, tau, eps = 4, 0.05, 1e-2
  q = LFQ(bits=bits, temperature=tau, chunk_size=chunk_size, codebook_entropy_eps=eps, rngs=nnx.Rngs(0))
  z = randn(3, 5, bits, scale=0.3)
  codes = all_sign_codes(bits)

  def want(zn):
    p = scipy.special.softmax(-((zn.reshape(-1, 1, bits) - codes[None]) ** 2).sum(-1) / tau, axis=-1).mean(0)
    return -np.sum(p * np.log(p + eps))

  zn = np.asarray(z, np.float64)
  got = jax.value_and_grad(lambda x: q(x, train=True)[1].terms["codebook_entropy"])(z)
  np.testing.assert_allclose(float(got[0]), want(zn), rtol=1e-5)
  assert abs(float(got[0]) - np_entropies(-((zn.reshape(-1, 1, bits) - codes) ** 2).sum(-1) / tau)[1]) > 1e-3
  h = 1e-6
  fd = np.array([(want(zn + h * e) - want(zn - h * e)) / (2 * h) for e in np.eye(zn.size).reshape(-1, *zn.shape)])
  np.testing.assert_allclose(np.asarray(got[1]).reshape(-1), fd, rtol=2e-3, atol=1e-4)
  with pytest.raises(ValueError, match="codebook_entropy_eps needs entropy_mode='exact'"):
    LFQ(bits=bits, entropy_mode="factorized", codebook_entropy_eps=eps, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("mode", ["exact", "factorized"])
def test_bsq_entropy_vs_bruteforce(mode):
  bits, tau = 3, 4.0
  q = BSQ(bits=bits, inv_temperature=tau, entropy_mode=mode, rngs=nnx.Rngs(0))
  z = randn(12, bits)
  _, out = q(z, train=True)
  zn = np.asarray(z, np.float64)
  u = zn / np.linalg.norm(zn, axis=-1, keepdims=True)
  codes = all_sign_codes(bits) / np.sqrt(bits)
  per_sample, codebook, factorized = np_entropies(tau * u @ codes.T)  # exp(τ c·u)
  np.testing.assert_allclose(float(out.terms["per_sample_entropy"]), per_sample, rtol=1e-4)
  np.testing.assert_allclose(
    float(out.terms["codebook_entropy"]), codebook if mode == "exact" else factorized, rtol=1e-4
  )


def test_factorized_upper_bounds_exact_codebook_entropy():
  logits = randn(64, 5, scale=6.0) + jnp.asarray([0.0, 0.0, -2.0, 1.0, 0.5])[None]
  # Bits that agree across tokens make the bound strict: copy bit 0 into bit 1
  # (confident, balanced bits: the exact entropy loses about ln 2).
  logits = logits.at[:, 1].set(logits[:, 0])
  _, exact = binary_entropy_terms(logits, mode="exact", chunk_size=4)
  _, fact = binary_entropy_terms(logits, mode="factorized")
  scores = np.asarray(logits, np.float64) @ all_sign_codes(5).T / 2  # ±a/2 per bit
  _, ref_exact, ref_fact = np_entropies(scores)
  np.testing.assert_allclose(float(exact), ref_exact, rtol=1e-4)
  np.testing.assert_allclose(float(fact), ref_fact, rtol=1e-4)
  assert float(fact) > float(exact) + 0.3
  for seed in range(3):  # subadditivity: never below the exact value
    a = jnp.asarray(np.random.default_rng(seed).standard_normal((32, 4)) * 3, jnp.float32)
    _, e = binary_entropy_terms(a, mode="exact")
    _, f = binary_entropy_terms(a, mode="factorized")
    assert float(f) >= float(e) - 1e-5


def test_exact_entropy_gradient_matches_dense():
  logits = randn(16, 4)
  codes = jnp.asarray(all_sign_codes(4), jnp.float32)

  def dense(a):  # all codes at once, softmax over codes
    p = jax.nn.softmax(a @ codes.T / 2, axis=-1)
    avg = p.mean(0)
    return -jnp.sum(avg * jnp.log(avg)) - 0.5 * jnp.mean(jnp.sum(-p * jnp.log(p), -1))

  def chunked(a):
    ps, cb = binary_entropy_terms(a, mode="exact", chunk_size=2)
    return cb - 0.5 * ps

  np.testing.assert_allclose(float(chunked(logits)), float(dense(logits)), rtol=1e-5)
  np.testing.assert_allclose(
    np.asarray(jax.grad(chunked)(logits)), np.asarray(jax.grad(dense)(logits)), rtol=1e-4, atol=1e-6
  )


def test_exact_entropy_blocks_match_log_space_sum():
  """The P^T Q blocks (linear probabilities) against the log-space sum over all codes they replaced."""
  bits = 6
  codes = jnp.asarray(all_sign_codes(bits) > 0, jnp.float32)  # (2**bits, bits), 1 for +

  def log_space(a):  # log p(c|z_n) = Σ_i log p(bit_i), then logsumexp over tokens
    lp, lm = jax.nn.log_sigmoid(a), jax.nn.log_sigmoid(-a)
    logp = lm.sum(-1, keepdims=True) + (lp - lm) @ codes.T
    log_avg = jax.scipy.special.logsumexp(logp, axis=0) - math.log(a.shape[0])
    return -jnp.sum(jnp.exp(log_avg) * log_avg)

  # Scale 400 is LFQ's 4 z / 0.01: most P, Q and mean entries underflow to exactly 0.
  logits = jnp.stack([randn(24, bits, scale=2.0), randn(24, bits, scale=400.0)])
  want, want_grad = jax.jit(jax.vmap(jax.value_and_grad(log_space)))(logits)
  for chunk in (None, 2):  # one block (no loop), and 32 blocks of 2 codes
    f = jax.value_and_grad(lambda a, c=chunk: binary_entropy_terms(a, chunk_size=c)[1])
    got, grad = jax.jit(jax.vmap(f))(logits)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=1e-4, atol=1e-6)


def test_entropy_blocks_per_backend():
  from vqtok.quantizers.binary import _block_elements, default_chunk

  assert default_chunk(24576, 18, "gpu") == 2**18  # magvit2_lfq's batch of 96: one GEMM
  assert default_chunk(2048, 18, "cpu") == 2**18
  cpu = default_chunk(8192, 18, "cpu")
  assert cpu < 2**18 and _block_elements(8192, 18, cpu) <= 2**23
  assert default_chunk(10**9, 4, "cpu") == 1  # never below one code


@pytest.mark.parametrize("cls", [LFQ, BSQ])
def test_entropy_memory_18_bits_8192_tokens(cls):
  """Exact codebook entropy fwd+bwd at 2**18 codes x 8192 tokens: < 2 GiB."""
  kw = {"temperature": 0.01} if cls is LFQ else {"inv_temperature": 1.0}
  q = cls(bits=18, entropy_mode="exact", rngs=nnx.Rngs(0), **kw)

  def f(z):
    z_q, out = q(z, train=True)
    return out.loss + jnp.sum(z_q)

  z = jax.ShapeDtypeStruct((8, 1024, 18), jnp.float32)
  mem = jax.jit(jax.value_and_grad(f)).lower(z).compile().memory_analysis()
  # Materialising p(c|z) alone would take 8192 * 2**18 * 4 B = 8 GiB.
  assert mem.temp_size_in_bytes < 2 * 2**30, mem.temp_size_in_bytes


# ----------------------------- Residual / Grouped ----------------------------


def test_residual_fsq_matches_numpy():
  levels = (5, 5, 3, 3, 3, 3)
  q = make("residual_fsq")
  z = randn(2, 4, DIM, scale=1.5)
  z_q, out = q(z)
  residual, total, idx = np.asarray(z, np.float64), 0.0, []
  for _ in range(3):
    codes, i = np_fsq(residual, levels)
    residual, total = residual - codes, total + codes
    idx.append(i)
  np.testing.assert_allclose(np.asarray(z_q), total, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out.indices), np.stack(idx, -1))
  assert q.index_depth == 3 and out.indices.shape == (2, 4, 3)
  assert "level_2/usage" in out.metrics and "usage" in out.metrics


def test_residual_scales_match_numpy():
  levels = (5,) * DIM
  scales = (1.0, 0.25, 1 / 16)
  q = Residual(make=lambda: FSQ(levels, rngs=nnx.Rngs(0)), num_levels=3, scales=scales)
  z = randn(4, DIM, scale=1.5)
  z_q, out = q(z)
  residual, total = np.asarray(z, np.float64), 0.0
  for s in scales:
    codes = np_fsq(residual / s, levels)[0] * s
    residual, total = residual - codes, total + codes
  np.testing.assert_allclose(np.asarray(z_q), total, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(q.indices_to_codes(out.indices)), np.asarray(z_q))
  with pytest.raises(ValueError, match="scales"):
    Residual(make=lambda: FSQ(levels, rngs=nnx.Rngs(0)), num_levels=3, scales=(1, 0.5))


def test_residual_shared_has_one_quantizer():
  q = make("residual_lfq_shared")
  assert len(q.quantizers) == 1 and q.level(0) is q.level(1)
  q2 = Residual(make=lambda: FSQ((3,) * DIM, code_dim=DIM, rngs=nnx.Rngs(1)), num_levels=2, shared=True)
  assert len(q2.quantizers) == 1


@pytest.mark.parametrize("per_sample", [False, True])
def test_residual_quantizer_dropout(per_sample):
  levels = (5,) * DIM
  q = Residual(
    make=lambda: FSQ(levels, rngs=nnx.Rngs(0)),
    num_levels=4,
    dropout=True,
    dropout_start=1,
    dropout_per_sample=per_sample,
    rngs=nnx.Rngs(dropout=3),
  )
  z = randn(16, 2, DIM, scale=2.0)
  seen = set()
  for _ in range(6):
    z_q, out = jit_run(q, z, True)
    idx = np.asarray(out.indices)
    kept = (idx >= 0).sum(-1)  # (16, 2)
    # Dropped levels form a suffix; at least dropout_start + 1 levels kept.
    assert np.all((idx >= 0) == (np.arange(4) < kept[..., None]))
    assert kept.min() >= 2
    if not per_sample:
      assert len(np.unique(kept)) == 1
    seen.update(np.unique(kept).tolist())
    # z_q is the sum of the kept levels of the full residual cascade.
    residual, total = np.asarray(z, np.float64), 0.0
    for l in range(4):
      codes, _ = np_fsq(residual, levels)
      codes = codes * (l < kept)[..., None]
      residual, total = residual - codes, total + codes
    np.testing.assert_allclose(np.asarray(z_q), total, atol=1e-5)
    np.testing.assert_allclose(np.asarray(q.indices_to_codes(out.indices)), np.asarray(z_q), atol=1e-6)
  assert len(seen) >= 2  # the kept count is random
  _, out = q(z, train=False)
  assert np.all(np.asarray(out.indices) >= 0)


def test_grouped_fsq_matches_numpy():
  q = Grouped([FSQ((8, 5, 5), rngs=nnx.Rngs(0)), FSQ((5, 8, 5), rngs=nnx.Rngs(0))], num_groups=2, code_dim=DIM)
  with pytest.raises(ValueError, match="codebook_size"):
    Grouped([FSQ((8, 5, 5), rngs=nnx.Rngs(0)), FSQ((8, 5, 4), rngs=nnx.Rngs(0))], num_groups=2)
  z = randn(3, DIM, scale=2.0)
  z_q, out = q(z)
  c0, i0 = np_fsq(np.asarray(z[:, :3]), (8, 5, 5))
  c1, i1 = np_fsq(np.asarray(z[:, 3:]), (5, 8, 5))
  np.testing.assert_allclose(np.asarray(z_q), np.concatenate([c0, c1], -1), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out.indices), np.stack([i0, i1], -1))


# ------------------------- contract, for every quantizer ------------------------


@pytest.mark.parametrize("name", ALL)
def test_roundtrip_jit_eager_and_sharded_agree(name):
  q = make(name)
  z = randn(*input_shape(name, 8, 3))
  z_q, out = q(z)
  assert z_q.shape == z.shape and z_q.dtype == z.dtype
  assert out.indices.dtype == jnp.int32
  assert out.indices.shape == q.index_shape(z.shape)
  if name not in SPATIAL:
    assert out.indices.shape == z.shape[:-1] + ((q.index_depth,) if q.index_depth else ())
  assert out.loss.shape == () and jnp.isfinite(out.loss)
  np.testing.assert_array_equal(np.asarray(q.indices_to_codes(out.indices)), np.asarray(z_q))
  z_q_j, out_j = jit_run(q, z, False)
  np.testing.assert_array_equal(np.asarray(out_j.indices), np.asarray(out.indices))
  np.testing.assert_allclose(np.asarray(z_q_j), np.asarray(z_q), atol=1e-6)
  # Training mode (entropy terms, dropout-free): eager, jit, and jit on a batch
  # sharded over the 8 devices all agree.
  z_q_t, out_t = q(z, train=True)
  z_q_tj, out_tj = jit_run(nnx.clone(q), z, True)
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  z_sharded = jax.device_put(z, NamedSharding(mesh, P("data")))
  assert len(z_sharded.sharding.device_set) == 8
  z_q_s, out_s = jit_run(nnx.clone(q), z_sharded, True)
  for zq_b, out_b in [(z_q_tj, out_tj), (z_q_s, out_s)]:
    np.testing.assert_allclose(np.asarray(zq_b), np.asarray(z_q_t), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out_b.indices), np.asarray(out_t.indices))
    np.testing.assert_allclose(float(out_b.loss), float(out_t.loss), rtol=1e-4, atol=1e-6)
    for k in out_t.metrics:
      np.testing.assert_allclose(float(out_b.metrics[k]), float(out_t.metrics[k]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_gradient_reaches_input(name):
  q = make(name)
  z = randn(*input_shape(name, 2, 3))
  w = randn(*input_shape(name, 2, 3))

  def loss_fn(q, z):
    z_q, out = q(z, train=True)
    return jnp.sum(z_q * w) + out.loss

  g = nnx.jit(nnx.grad(loss_fn, argnums=1))(q, z)
  assert g.shape == z.shape
  assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0


@pytest.mark.parametrize(
  "name", ["fsq_proj", "lfq", "bsq_proj", "residual_fsq", "grouped_bsq", "residual_vq", "ibq", "multiscale_vq"]
)
def test_bfloat16_input(name):
  q = make(name)
  z = randn(*input_shape(name, 2, 3)).astype(jnp.bfloat16)
  z_q, out = jit_run(q, z, True)
  assert z_q.dtype == jnp.bfloat16 and out.loss.dtype == jnp.float32
  for v in out.terms.values():
    assert v.dtype == jnp.float32
  z_q_e, out_e = q(z)
  np.testing.assert_array_equal(
    np.asarray(q.indices_to_codes(out_e.indices).astype(jnp.bfloat16), np.float32), np.asarray(z_q_e, np.float32)
  )


# --------------------------------- build / errors --------------------------------


def test_build_quantizer_types():
  cfg = ml_collections.ConfigDict({"type": "fsq", "levels": (8, 5, 5, 5)})
  q = build_quantizer(cfg, code_dim=4, rngs=nnx.Rngs(0))
  assert isinstance(q, FSQ) and q.codebook_size == 1000 and q.code_dim == 4
  q = build_quantizer({"type": "lfq", "bits": 10}, code_dim=16, rngs=nnx.Rngs(0))
  assert isinstance(q, LFQ) and q.code_dim == 16 and q.codebook_size == 1024
  q = build_quantizer({"type": "bsq", "bits": 8}, code_dim=8, rngs=nnx.Rngs(0))
  assert isinstance(q, BSQ) and q.code_dim == 8
  q = build_quantizer(
    {"type": "grouped", "num_groups": 2, "quantizer": {"type": "fsq", "levels": [5, 5]}}, code_dim=8, rngs=nnx.Rngs(0)
  )
  assert isinstance(q, Grouped) and q.code_dim == 8 and q.quantizers[0].code_dim == 4
  spec = ml_collections.ConfigDict({"type": "residual", "num_levels": 3, "quantizer": {"type": "bsq", "bits": 4}})
  q = build_quantizer(spec, code_dim=6, rngs=nnx.Rngs(0))
  assert isinstance(q, Residual) and q.index_depth == 3 and q.code_dim == 6
  assert q.quantizers[0] is not q.quantizers[1]


def test_quantizer_types_are_the_registry():
  assert QUANTIZER_TYPES == (
    "vq",
    "fsq",
    "lfq",
    "bsq",
    "ibq",
    "gsq",
    "residual",
    "grouped",
    "factorized",
    "multiscale",
    "dual",
  )
  for type_name in QUANTIZER_TYPES:
    assert issubclass(quantizer_class(type_name), Quantizer)


@pytest.mark.parametrize(
  "spec,match",
  [
    ({"type": "pq"}, "unknown quantizer type 'pq'"),
    ({"levels": [3]}, "no 'type'"),
    ({"type": "fsq", "levels": [3], "bogus": 1}, "bogus"),
    ({"type": "fsq", "levels": [3], "code_dim": 3}, "'code_dim'"),
    ({"type": "fsq", "levels": [3], "dim": 3}, "'dim'"),
    ({"type": "residual", "num_levels": 2}, "nested 'quantizer'"),
    ({"type": "multiscale", "scales": [1, 2]}, "nested 'quantizer'"),
    ({"type": "grouped", "num_groups": 3, "quantizer": {"type": "fsq", "levels": [3]}}, "num_groups"),
    ({"type": "residual", "num_levels": 2, "quantizer": {"type": "lfq", "bits": 2, "nope": 0}}, "nope"),
  ],
)
def test_build_quantizer_rejects_bad_specs(spec, match):
  with pytest.raises(ValueError, match=match):
    build_quantizer(spec, code_dim=4, rngs=nnx.Rngs(0))


def test_invalid_arguments_raise():
  r = nnx.Rngs(0)
  with pytest.raises(ValueError, match="levels"):
    FSQ((8, 1, 5), rngs=r)
  with pytest.raises(ValueError, match="codebook_size must be 2\\*\\*bits"):
    LFQ(bits=4, codebook_size=15, rngs=r)
  with pytest.raises(ValueError, match="codebook_size must be 2\\*\\*bits"):
    LFQ(codebook_size=1000, rngs=r)
  assert LFQ(codebook_size=256, rngs=r).bits == 8
  with pytest.raises(ValueError, match="entropy_mode"):
    BSQ(bits=4, entropy_mode="approx", rngs=r)
  with pytest.raises(ValueError, match="chunk_size"):
    LFQ(bits=4, chunk_size=3, rngs=r)
  with pytest.raises(ValueError, match="dropout_start"):
    Residual(make=lambda: FSQ((3,), rngs=r), num_levels=2, dropout_start=2)
  with pytest.raises(ValueError, match="exactly one"):
    Residual(num_levels=2)
  with pytest.raises(ValueError, match="shape"):
    FSQ((3, 3), rngs=r)(jnp.zeros((2, 3)))


@pytest.mark.parametrize("name", ALL)
def test_out_of_range_indices_raise(name):
  q = make(name)
  depth = (q.index_depth,) if q.index_depth else ()
  bad = jnp.full((2,) + depth, q.codebook_size, jnp.int32)
  with pytest.raises(ValueError, match="out of range"):
    q.indices_to_codes(bad)
  with pytest.raises(ValueError, match="out of range"):
    q.indices_to_codes(jnp.full((2,) + depth, -2, jnp.int32))
  with pytest.raises(ValueError):
    q.indices_to_codes(jnp.zeros((2,) + depth, jnp.float32))
