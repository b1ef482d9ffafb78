"""DualCodebook against goldens of TokenFlow's own quantizer (scripts/parity/gen_tokenflow.py).

The contract tests (round trip, jit, sharding, gradients reach z, bf16) run it
with the other quantizers in test_quantizers.py.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vqtok.quantizers import DualCodebook, MultiScaleResidual, build_quantizer

FAST_COMPILE = True
GOLDEN = os.path.join(os.path.dirname(__file__), "goldens", "tokenflow", "quantizer.npz")
K, DS, DP = 16, 4, 3  # the golden's VectorQuantizer(16, 7, split=[4, 3])


@pytest.fixture(scope="module")
def g():
  with np.load(GOLDEN) as f:
    return dict(f)


def make(g, **kw):
  q = DualCodebook(K, DS + DP, semantic_dim=DS, commitment_weight=0.25, entropy_weight=0.1, rngs=nnx.Rngs(0), **kw)
  q.semantic_codebook[...] = jnp.asarray(g["single_semantic_codebook"])
  q.pixel_codebook[...] = jnp.asarray(g["single_pixel_codebook"])
  return q


def loss_and_grads(q, z):
  def f(q, z):
    z_q, out = q(z, train=True)
    return out.loss, (z_q, out)

  (_, (z_q, out)), (gq, gz) = nnx.value_and_grad(f, argnums=(0, 1), has_aux=True)(q, z)
  return z_q, out, gz, gq.semantic_codebook[...], gq.pixel_codebook[...]


def test_forward_losses_and_gradients_match_the_authors_quantizer(g):
  q = make(g)
  z = jnp.asarray(g["single_z"].transpose(0, 2, 3, 1))  # b c h w -> b h w c
  z_q, out, gz, gs, gp = nnx.jit(loss_and_grads)(q, z)
  np.testing.assert_array_equal(np.asarray(out.indices).reshape(-1), g["single_indices"])
  np.testing.assert_allclose(np.asarray(z_q), g["single_z_q"].transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(float(out.terms["codebook"]), g["single_vq_loss"], rtol=1e-5)
  np.testing.assert_allclose(0.25 * float(out.terms["commitment"]), g["single_commit_loss"], rtol=1e-5)
  np.testing.assert_allclose(0.1 * float(out.terms["entropy"]), g["single_entropy_loss"], rtol=1e-4, atol=1e-6)
  total = g["single_vq_loss"] + g["single_commit_loss"] + g["single_entropy_loss"]
  np.testing.assert_allclose(float(out.loss), total, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(gz), g["single_grad_z"].transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(gs), g["single_grad_semantic_codebook"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(gp), g["single_grad_pixel_codebook"], rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(q.indices_to_codes(out.indices)), np.asarray(q(z)[0]))


def test_the_index_is_shared_by_the_weighted_distance_sum(g):
  # One index per token; with a zero weight the search is that of the other branch alone.
  z = jnp.asarray(g["single_z"].transpose(0, 2, 3, 1))
  q = make(g)
  ids = np.asarray(q(z)[1].indices)
  for ws, wp, part in ((1.0, 0.0, slice(0, DS)), (0.0, 1.0, slice(DS, None))):
    qw = make(g, semantic_weight=ws, pixel_weight=wp)
    x = np.asarray(z)[..., part]
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    e = np.concatenate([g["single_semantic_codebook"], g["single_pixel_codebook"]], -1)[:, part]
    e = e / np.linalg.norm(e, axis=-1, keepdims=True)
    want = ((x[..., None, :] - e) ** 2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(np.asarray(qw(z)[1].indices), want)
    assert (want != ids).any()
  qs, qp, out = q.quantize_pair(z[..., :DS], z[..., DS:])
  np.testing.assert_array_equal(np.asarray(out.indices), ids)
  np.testing.assert_array_equal(np.concatenate([qs, qp], -1), np.asarray(q(z)[0]))


def ms_latent(g):
  return jnp.concatenate(
    [jnp.asarray(g["ms_semantic"]).reshape(2, 3, 3, DS), jnp.asarray(g["ms_pixel"].transpose(0, 2, 3, 1))], -1
  )


def split_grad(grad):
  return np.asarray(grad[..., :DS]).reshape(2, 9, DS), np.asarray(grad[..., DS:]).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("form", ["var", "tokenflow"])
def test_multiscale_form_matches_tokenflow_encode(g, form):
  # TokenFlow.encode's VAR loop (no phi) over the dual codebook: scales 1, 2, 3 of a 3x3 latent. Indices,
  # values and the inner terms agree in either form; the loss and the gradients only in TokenFlow's.
  q = make(g)
  ms = MultiScaleResidual(q, scales=(1, 2, 3), phi_ratio=0.0, form=form, rngs=nnx.Rngs(0))
  z = ms_latent(g)
  weight = jnp.asarray(g["ms_output_weight"].transpose(0, 2, 3, 1))

  def run(m, z):
    def f(z):
      z_q, out = m(z, train=True)
      return out.loss, (z_q, out)

    (_, (z_q, out)), g_loss = jax.value_and_grad(f, has_aux=True)(z)
    g_out = jax.grad(lambda z: jnp.sum(m(z, train=True)[0] * weight))(z)
    return z_q, out, g_loss, g_out

  z_q, out, g_loss, g_out = nnx.jit(run)(ms, z)
  np.testing.assert_array_equal(np.asarray(out.indices), g["ms_indices"])
  np.testing.assert_allclose(np.asarray(z_q), g["ms_z_q"].transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
  # TokenFlow's loss is the per-scale mean of the inner quantizer's terms (vqtok's inner_*).
  np.testing.assert_allclose(float(out.terms["inner_codebook"]), g["ms_vq_loss"], rtol=1e-5)
  np.testing.assert_allclose(0.25 * float(out.terms["inner_commitment"]), g["ms_commit_loss"], rtol=1e-5)
  np.testing.assert_allclose(0.1 * float(out.terms["inner_entropy"]), g["ms_entropy_loss"], rtol=1e-4)
  decoded = ms.indices_to_codes(out.indices)
  np.testing.assert_allclose(np.asarray(decoded), g["ms_decoded_latent"].transpose(0, 2, 3, 1), atol=1e-5)
  if form == "var":
    return
  np.testing.assert_allclose(float(out.loss), g["ms_vq_loss"] + g["ms_commit_loss"] + g["ms_entropy_loss"], rtol=1e-5)
  for got, key in zip(split_grad(g_loss), ("ms_grad_semantic", "ms_grad_pixel"), strict=True):
    np.testing.assert_allclose(got, g[key], rtol=1e-4, atol=1e-6)
  for got, key in zip(split_grad(g_out), ("ms_output_grad_semantic", "ms_output_grad_pixel"), strict=True):
    np.testing.assert_allclose(got, g[key], rtol=1e-4, atol=1e-5)


def test_multiscale_tokenflow_form_needs_no_phi():
  with pytest.raises(ValueError, match="form='tokenflow' has no phi convolutions"):
    MultiScaleResidual(
      DualCodebook(8, 5, semantic_dim=3, rngs=nnx.Rngs(0)), scales=(1, 2), form="tokenflow", rngs=nnx.Rngs(0)
    )
  with pytest.raises(ValueError, match="form='tf'"):
    MultiScaleResidual(DualCodebook(8, 5, semantic_dim=3, rngs=nnx.Rngs(0)), scales=(1, 2), form="tf", rngs=nnx.Rngs(0))


def test_registry_and_l2_off():
  q = build_quantizer({"type": "dual", "codebook_size": 8, "semantic_dim": 5}, code_dim=7, rngs=nnx.Rngs(0))
  assert isinstance(q, DualCodebook) and (q.semantic_dim, q.pixel_dim) == (5, 2)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(q.semantic_codebook[...]), axis=-1), 1.0, rtol=1e-6)
  # Without l2: plain squared distances to the stored codes, the output is the stored pair.
  q = DualCodebook(8, 7, semantic_dim=5, l2_normalize=False, rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.key(0), (10, 7)) * 1e-2
  z_q, out = q(z)
  e = np.concatenate([np.asarray(q.semantic_codebook[...]), np.asarray(q.pixel_codebook[...])], -1)
  want = ((np.asarray(z)[:, None] - e) ** 2).sum(-1).argmin(-1)
  np.testing.assert_array_equal(np.asarray(out.indices), want)
  np.testing.assert_array_equal(np.asarray(z_q), e[want])


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(codebook_size=1, code_dim=4, semantic_dim=2), "codebook_size"),
    (dict(codebook_size=8, code_dim=4, semantic_dim=4), r"semantic_dim=4 must be an int in \[1, code_dim=4\)"),
    (dict(codebook_size=8, code_dim=4, semantic_dim=2, pixel_weight=-1.0), "pixel_weight"),
    (dict(codebook_size=8, code_dim=4, semantic_dim=2, semantic_weight=0.0, pixel_weight=0.0), "not both 0"),
    (dict(codebook_size=8, code_dim=4, semantic_dim=2, entropy_temperature=0.0), "entropy_temperature"),
  ],
)
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    DualCodebook(**kwargs, rngs=nnx.Rngs(0))


def test_bad_inputs():
  q = DualCodebook(8, 5, semantic_dim=3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"expects input of shape \(\.\.\., 5\)"):
    q(jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="share one grid"):
    q.quantize_pair(jnp.zeros((2, 3)), jnp.zeros((3, 2)))
  with pytest.raises(ValueError, match="out of range"):
    q.indices_to_codes(jnp.array([8]))


def test_full_size_codebooks_match_the_published_layout():
  # TokenFlow-XL (tokenflow_siglip_32k.pt): 32768 codes, 32 semantic + 8 pixel channels.
  with open(os.path.join(os.path.dirname(GOLDEN), "published_keys.json")) as f:
    ref = json.load(f)["tokenflow_siglip_32k"]
  shapes = ref["shapes"]
  assert ref["count"] == sum(int(np.prod(v)) for k, v in shapes.items() if k not in ref["buffers"]) == 554_009_963
  spec = {"type": "multiscale", "scales": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 22, 27], "phi_ratio": 0.0}
  spec.update(form="tokenflow", quantizer={"type": "dual", "codebook_size": 32768, "semantic_dim": 32})
  q = nnx.eval_shape(lambda: build_quantizer(spec, code_dim=40, rngs=nnx.Rngs(0)))
  assert q.num_tokens == 2227
  got = {k: v.value.shape for k, v in nnx.state(q, nnx.Param).flat_state()}
  want = {("quantizer", "semantic_codebook"): "quantize.embedding_vqkd.weight"}
  want[("quantizer", "pixel_codebook")] = "quantize.embedding_vqgan.weight"
  assert {k: tuple(shapes[v]) for k, v in want.items()} == got
