"""GSQ against a NumPy transcription of the authors' GroupSphereQuantizer (flex_gen, use_l2_norm=True).

The contract tests (round trip, jit, sharding, gradients reach z) run GSQ with
the other quantizers in test_quantizers.py.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vqtok.quantizers import GSQ, Grouped, VectorQuantizer, build_quantizer

K, G, D = 12, 3, 4  # 12 codes shared by 3 groups of 4 channels


def _normalize(a):
  return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def _reference(codebook, z, beta=0.25):
  """group_sphere_quantizer.py forward: ids, x_quant (the stored codes), loss, and d loss / d codebook."""
  k, d = codebook.shape
  x = _normalize(z.reshape(-1, d))  # "... (g d) -> (... g) d", F.normalize
  dist = ((x[:, None] - _normalize(codebook)[None]) ** 2).sum(-1)
  ids = dist.argmin(1)
  q = codebook[ids]
  loss = np.mean((q - x) ** 2) + beta * np.mean((q - x) ** 2)  # F.mse_loss(q, sg(x)) + β F.mse_loss(sg(q), x)
  grad = np.zeros_like(codebook)
  np.add.at(grad, ids, 2.0 * (q - x) / q.size)  # only the first term reaches the codebook
  return ids.reshape(z.shape[:-1] + (-1,)), q.reshape(z.shape), loss, grad


@pytest.fixture(scope="module")
def case():
  q = GSQ(K, G * D, num_groups=G, rngs=nnx.Rngs(0))
  init = np.asarray(q.codebook[...], np.float64)
  # Off the sphere, as training leaves the codes: the search normalises them, the output does not.
  scale = np.asarray(jax.random.uniform(jax.random.key(5), (K, 1), minval=0.5, maxval=2.0))
  q.codebook[...] = jnp.asarray(init * scale, jnp.float32)
  z = jax.random.normal(jax.random.key(1), (2, 5, G * D)) * 3.0

  @nnx.jit
  def run(q, z):
    z_q, out = q(z)
    grad = nnx.grad(lambda m: m(z)[1].loss)(q).codebook[...]
    return z_q, out, grad

  return q, init, z, run(q, z)


def test_forward_and_codebook_gradient_match_the_authors_code(case):
  q, _, z, (z_q, out, grad) = case
  ids, want, loss, want_grad = _reference(np.asarray(q.codebook[...], np.float64), np.asarray(z, np.float64))
  np.testing.assert_array_equal(np.asarray(out.indices), ids)
  assert out.indices.shape == (2, 5, G) and len(np.unique(ids)) > G  # the groups share one vocabulary
  np.testing.assert_allclose(np.asarray(z_q), want, rtol=1e-6, atol=1e-6)  # stored codes, not unit ones
  assert not np.allclose(np.linalg.norm(np.asarray(z_q).reshape(-1, D), axis=-1), 1.0)
  np.testing.assert_allclose(float(out.loss), loss, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(q.indices_to_codes(out.indices)), np.asarray(z_q))


def test_spherical_initialisation(case):
  _, init, _, _ = case
  np.testing.assert_allclose(np.linalg.norm(init, axis=-1), 1.0, rtol=1e-6)
  assert np.abs(init.mean()) < 0.2 and len(np.unique(np.sign(init))) == 2  # Gaussian directions, not a grid


def test_one_group_on_the_sphere_is_the_l2_vq_and_off_it_is_not():
  # G = 1 with unit codes: GSQ is VectorQuantizer(l2_normalize=True) with the same weights
  # (codebook term 1, commitment 0.25); the stored codes moved off the sphere, the outputs part.
  gsq = GSQ(K, D, rngs=nnx.Rngs(0))
  vq = VectorQuantizer(K, D, l2_normalize=True, commitment_weight=0.25, codebook_weight=1.0, rngs=nnx.Rngs(0))
  vq.codebook[...] = gsq.codebook[...]
  z = jax.random.normal(jax.random.key(2), (16, D))
  both = nnx.jit(lambda gsq, vq, z: (gsq(z), vq(z)))
  (a, oa), (b, ob) = both(gsq, vq, z)
  np.testing.assert_array_equal(np.asarray(oa.indices[..., 0]), np.asarray(ob.indices))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  np.testing.assert_allclose(float(oa.loss), float(ob.loss), rtol=1e-5)
  vq.codebook[...] = gsq.codebook[...] = gsq.codebook[...] * 2.0
  (a, oa), (b, ob) = both(gsq, vq, z)
  np.testing.assert_array_equal(np.asarray(oa.indices[..., 0]), np.asarray(ob.indices))
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0.5
  # With groups, Grouped(l2 VQ) has one codebook per group; GSQ shares one.
  grouped = build_quantizer(
    {"type": "grouped", "num_groups": G, "quantizer": {"type": "vq", "codebook_size": K, "l2_normalize": True}},
    code_dim=G * D,
    rngs=nnx.Rngs(0),
  )
  assert isinstance(grouped, Grouped) and len({id(x.codebook) for x in grouped.quantizers}) == G
  shared = build_quantizer({"type": "gsq", "codebook_size": K, "num_groups": G}, code_dim=G * D, rngs=nnx.Rngs(0))
  assert isinstance(shared, GSQ) and shared.codebook[...].shape == (K, D)


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(codebook_size=1, code_dim=4), "codebook_size"),
    (dict(codebook_size=8, code_dim=6, num_groups=4), "num_groups=4 must be a positive int dividing code_dim=6"),
    (dict(codebook_size=8, code_dim=4, num_groups=0), "num_groups"),
    (dict(codebook_size=8, code_dim=4, commitment_weight=-1.0), "commitment_weight"),
    (dict(codebook_size=8, code_dim=4, normalize="l1"), r"normalize='l1'; expected one of \('l2', 'none', 'clip'\)"),
    (dict(codebook_size=8, code_dim=4, normalize="clip"), "normalize='clip' needs groups of one channel; got 4"),
  ],
)
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    GSQ(**kwargs, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("variant", ["f8-d8-v64k", "f8-d64-v8k-g16", "f16-d16-v256k-g8"])
def test_preset_variants_validate(variant):
  from helpers import preset

  from vqtok import config as config_lib

  assert preset("gsq", variant).loss.perceptual_weight == 1.0
  c = config_lib.validate_config(preset("gsq", variant, **{"loss.perceptual_weight": 0.0}))  # no LPIPS file here
  mult, dim, codes, groups = importlib.import_module("configs.gsq").VARIANTS[variant]
  q = nnx.eval_shape(lambda: build_quantizer(c.quantizer, code_dim=dim, rngs=nnx.Rngs(0)))
  assert isinstance(q, GSQ) and q.codebook_size == codes and q.index_depth == groups and q.group_dim == dim // groups
  assert c.model.cnn_family == "flex" and tuple(c.model.channel_mult) == mult
  with pytest.raises(ValueError, match="unknown variant 'f4'"):
    preset("gsq", "f4")
