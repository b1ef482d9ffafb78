"""FQGAN's factorised quantizer: parity with the authors' Dual and Triple models, the contract, bad input."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import golden_cases

from vqtok.quantizers import Factorized, Grouped, VectorQuantizer, build_quantizer, disentanglement

FAST_COMPILE = True
GOLDENS = os.path.join(os.path.dirname(__file__), "goldens", "fqgan", "quantizer.npz")


def rel(a, b):
  """Norm-wise relative error of ``a`` against the reference ``b``."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def fqgan(k, codes=64, weight=0.1, entropy=0.0):
  """FQGAN's sub-codebooks: l2-normalised 8-d VQ (LlamaGen's), beta 0.25, summed losses."""
  inner = {"type": "vq", "codebook_size": codes, "l2_normalize": True, "commitment_weight": 0.25}
  if entropy:
    inner["entropy_weight"] = entropy
  spec = {"type": "factorized", "num_groups": k, "disentangle_weight": weight, "quantizer": inner}
  return build_quantizer(spec, code_dim=8 * k, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def goldens():
  return golden_cases(GOLDENS)


def _run(q, z, codebooks):
  q = nnx.clone(q)
  for g, sub in enumerate(q.quantizers):
    sub.codebook[...] = codebooks[g]
  return q(z, train=True)


@pytest.mark.parametrize("case", ["dual", "triple"])
def test_equals_the_reference_model(goldens, case):
  """showlab/FQGAN's own VQ_16 forward (scripts/parity/gen_fqgan.py): codes, ids, each loss term, gradients.

  With its training scripts' entropy loss (LlamaGen's, ratio 0.03), so that term is matched too.
  """
  g = goldens[case]
  k = g["indices"].shape[-1]
  q = fqgan(k, weight=float(g["ratio"]), entropy=float(g["entropy_ratio"]))
  z, codebooks = jnp.asarray(g["z"]), jnp.asarray(g["codebooks"])
  (_, (z_q, out)), (g_z, g_codebooks) = jax.value_and_grad(
    lambda z, c: (lambda r: (r[1].loss, r))(_run(q, z, c)), argnums=(0, 1), has_aux=True
  )(z, codebooks)
  np.testing.assert_array_equal(np.asarray(out.indices), g["indices"])
  assert out.indices.shape == z.shape[:-1] + (k,) and q.index_depth == k
  errors = {
    "z_q": rel(z_q, g["z_q"]),
    "codebook": rel(out.terms["codebook"], g["codebook"]),
    "commitment": rel(out.terms["commitment"], g["commitment"]),
    "disentangle": rel(out.terms["disentangle"], g["disentangle"]),
    "entropy": rel(out.terms["entropy"], g["entropy"]),
    "loss": rel(out.loss, g["loss"]),
    "grad_z": rel(g_z, g["grad_z"]),
    "grad_codebooks": rel(g_codebooks, g["grad_codebooks"]),
  }
  print(case, {n: f"{v:.1e}" for n, v in errors.items()})
  # The entropy softmax at τ = 0.01 scales the logits' float32 rounding (~1e-7) by 1/τ: the gradients
  # through it (float32 here, float64 in the golden) agree to ~7e-6, the values to ~1e-7 (loss: a sum
  # that cancels to 0.01 of its parts, 2e-6).
  grads = ("grad_z", "grad_codebooks")
  assert max(v for n, v in errors.items() if n not in grads) <= 1e-5, errors
  assert max(errors[n] for n in grads) <= 3e-5, errors
  # Eval mode gives the same codes, and indices_to_codes gives them bit for bit.
  qe = nnx.clone(q)
  for s, sub in enumerate(qe.quantizers):
    sub.codebook[...] = codebooks[s]
  z_eval, out_eval = qe(z)
  np.testing.assert_array_equal(np.asarray(out_eval.indices), g["indices"])
  np.testing.assert_array_equal(np.asarray(qe.indices_to_codes(out_eval.indices)), np.asarray(z_eval))


def test_is_grouped_plus_the_disentanglement_term():
  """Same codes, ids and codebook losses as Grouped; the loss adds weight * disentangle."""
  q = fqgan(2, codes=16, weight=0.3)
  plain = Grouped(list(q.quantizers), num_groups=2)
  z = jax.random.normal(jax.random.key(1), (2, 3, 5, 16))
  z_q, out = q(z, train=True)
  z_g, out_g = plain(z, train=True)
  np.testing.assert_array_equal(np.asarray(z_q), np.asarray(z_g))
  np.testing.assert_array_equal(np.asarray(out.indices), np.asarray(out_g.indices))
  assert set(out.terms) == set(out_g.terms) | {"disentangle"}
  np.testing.assert_allclose(float(out.loss), float(out_g.loss) + 0.3 * float(out.terms["disentangle"]), rtol=1e-6)
  # jit equals eager (to rounding: XLA fuses the l2 normalisation); bf16 input keeps its dtype.
  z_j, out_j = nnx.jit(lambda m, z: m(z))(q, z)
  np.testing.assert_array_equal(np.asarray(out_j.indices), np.asarray(q(z)[1].indices))
  np.testing.assert_allclose(np.asarray(z_j), np.asarray(q(z)[0]), atol=1e-6)
  np.testing.assert_allclose(float(out_j.terms["disentangle"]), float(q(z)[1].terms["disentangle"]), rtol=1e-6)
  z_b, out_b = q(z.astype(jnp.bfloat16))
  assert z_b.dtype == jnp.bfloat16 and out_b.indices.dtype == jnp.int32
  # Weight 0: the term is still reported, the loss is Grouped's.
  zero = Factorized(list(q.quantizers), num_groups=2, disentangle_weight=0.0)
  _, out0 = zero(z, train=True)
  assert float(out0.loss) == pytest.approx(float(out_g.loss)) and float(out0.terms["disentangle"]) > 0


def test_disentanglement_values():
  """Orthogonal sub-codes give 0, parallel ones 1; pairs are averaged (FQGAN Triple's /3)."""
  a = jnp.array([[1.0, 0.0], [0.0, 2.0]])
  b = jnp.array([[0.0, 3.0], [5.0, 0.0]])
  assert float(disentanglement([a, b])) == 0.0
  assert float(disentanglement([a, 2 * a])) == pytest.approx(1.0)
  c = jnp.array([[1.0, 1.0], [1.0, 1.0]])  # cos² = 1/2 with both a and b
  assert float(disentanglement([a, b, c])) == pytest.approx((0.0 + 0.5 + 0.5) / 3)
  assert float(disentanglement([a, jnp.zeros_like(a)])) == 0.0  # torch's F.normalize eps: no NaN


def test_bad_input():
  vq = lambda: VectorQuantizer(8, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_groups must be an int >= 2"):
    Factorized(make=vq, num_groups=1)
  with pytest.raises(ValueError, match="disentangle_weight must be >= 0"):
    Factorized(make=vq, num_groups=2, disentangle_weight=-1.0)
  spec = {"type": "factorized", "num_groups": 3, "quantizer": {"type": "vq", "codebook_size": 8}}
  with pytest.raises(
    ValueError, match="factorized quantizer: num_groups=3 must be a positive int dividing code_dim=16"
  ):
    build_quantizer(spec, code_dim=16, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="needs a nested 'quantizer'"):
    build_quantizer({"type": "factorized", "num_groups": 2}, code_dim=16, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="Factorized expects input of shape"):
    fqgan(2, codes=8)(jnp.zeros((2, 15)))
  with pytest.raises(ValueError, match="must share one width"):
    disentanglement([jnp.zeros((2, 3)), jnp.zeros((2, 4))])


def test_tokenizer_with_a_factorized_quantizer():
  """``quantizer.type=factorized`` validates; ids are (B, h, w, k), one stream per sub-codebook; decode reads them."""
  from helpers import load_config

  from vqtok.models.tokenizer import build_tokenizer

  spec = {
    "type": "factorized",
    "num_groups": 2,
    "disentangle_weight": 0.1,
    "quantizer": {"type": "vq", "codebook_size": 32, "l2_normalize": True},
  }
  config = load_config(quantizer=spec, **{"model.code_dim": 16, "model.z_channels": 12})
  tok = build_tokenizer(config, rngs=nnx.Rngs(0))
  assert isinstance(tok.quantizer, Factorized) and tok.quantizer.index_depth == 2
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
  ids = tok.encode(images)
  assert ids.shape == (2, 8, 8, 2) and ids.dtype == jnp.int32
  assert tok.decode(ids).shape == images.shape


def test_vq_entropy_needs_unit_codes_and_reports_its_parts():
  with pytest.raises(ValueError, match="entropy_weight needs l2_normalize=True"):
    VectorQuantizer(16, 4, entropy_weight=0.03, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="entropy_weight must be >= 0 and entropy_temperature > 0"):
    VectorQuantizer(16, 4, l2_normalize=True, entropy_temperature=0.0, rngs=nnx.Rngs(0))
  q = VectorQuantizer(16, 4, l2_normalize=True, entropy_weight=0.5, rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.key(2), (3, 5, 4))
  _, out = q(z, train=True)
  t = out.terms
  assert float(t["entropy"]) == pytest.approx(float(t["per_sample_entropy"] - t["codebook_entropy"]))
  plain = float(t["commitment"]) * 0.25 + float(t["codebook"])
  assert float(out.loss) == pytest.approx(plain + 0.5 * float(t["entropy"]), rel=1e-6)
  assert "entropy" not in q(z)[1].terms  # a training term only, as in LlamaGen
