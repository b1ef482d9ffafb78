"""Tests of MultiScaleResidual (VAR's multi-scale residual quantization).

The NumPy reference below is written from the paper's recursion and VAR's
loss with the per-pixel interpolation references of test_interpolate; the
shared contract tests (jit, sharding, gradients, bf16, bad indices) run on it
in test_quantizers.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_interpolate import np_area, np_bicubic

from vqtok.quantizers import BSQ, FSQ, MultiScaleResidual, Residual, VectorQuantizer, build_quantizer
from vqtok.quantizers.multiscale import VAR_SCALES, phi_assignment

DIM = 5
SCALES = (1, 2, 3, 5)


def make_vq(scales=SCALES, seed=0, **kw):
  r = nnx.Rngs(seed)
  return MultiScaleResidual(VectorQuantizer(24, DIM, rngs=r), scales=scales, rngs=r, **kw)


def np_conv3x3(x, kernel, bias):
  """'Same' 3x3 convolution of one (H, W, C) map, zero padding, HWIO kernel."""
  H, W, _ = x.shape
  p = np.pad(x, ((1, 1), (1, 1), (0, 0)))
  out = np.zeros((H, W, kernel.shape[-1])) + bias
  for dy in range(3):
    for dx in range(3):
      out += p[dy : dy + H, dx : dx + W] @ kernel[dy, dx]
  return out


def np_multiscale(q, z):
  """VAR's forward for one (S, S, d) latent: indices, f_hat after each scale, loss."""
  codebook = np.asarray(q.quantizer.codebook[...], np.float64)
  S = q.scales[-1]
  f = np.asarray(z, np.float64)
  rest, f_hat = f.copy(), np.zeros_like(f)
  idx_all, partial, commit, cb = [], [], 0.0, 0.0
  for k, s in enumerate(q.scales):
    small = np_area(rest, s, s)
    d = ((small[:, :, None, :] - codebook[None, None]) ** 2).sum(-1)
    idx = d.argmin(-1)
    h = np_bicubic(codebook[idx], S, S)
    if q.phis is not None:
      conv = q.phis[q.phi_of_scale[k]]
      r = q.phi_ratio
      h = (1 - r) * h + r * np_conv3x3(h, np.asarray(conv.kernel[...], np.float64), np.asarray(conv.bias[...]))
    f_hat = f_hat + h
    rest = rest - h
    idx_all.append(idx.reshape(-1))
    partial.append(f_hat.copy())
    commit += np.mean((f_hat - f) ** 2)
    cb += np.mean((f_hat - f) ** 2)
  n = len(q.scales)
  return np.concatenate(idx_all), partial, (q.beta * commit + cb) / n


def latent(b, s, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((b, s, s, DIM)), jnp.float32)


@pytest.mark.parametrize("phi_ratio", [0.5, 0.0])
def test_multiscale_matches_numpy(phi_ratio):
  q = make_vq(phi_ratio=phi_ratio)
  z = latent(2, 5)
  z_q, out = q(z)
  assert out.indices.shape == (2, 1 + 4 + 9 + 25) and out.indices.dtype == jnp.int32
  assert z_q.shape == z.shape and z_q.dtype == z.dtype
  loss = 0.0
  for b in range(2):
    idx, partial, l_b = np_multiscale(q, np.asarray(z[b]))
    np.testing.assert_array_equal(np.asarray(out.indices[b]), idx)
    np.testing.assert_allclose(np.asarray(z_q[b]), partial[-1], atol=1e-5)
    # Coarse previews: the running sum after the first k scales.
    for k in (1, 3):
      got = q.indices_to_codes(out.indices[b : b + 1], num_scales=k)[0]
      np.testing.assert_allclose(np.asarray(got), partial[k - 1], atol=1e-5)
      prefix = out.indices[b : b + 1, : q.tokens_up_to(k)]
      np.testing.assert_array_equal(np.asarray(q.indices_to_codes(prefix)), np.asarray(got[None]))
    loss += l_b
  # Per-sample MSEs are means over equal-sized samples: their mean is the batch loss.
  np.testing.assert_allclose(float(out.loss), loss / 2, rtol=1e-5)
  assert (q.phis is None) == (phi_ratio == 0.0)


def test_var_schedule_layout():
  q = make_vq(scales=VAR_SCALES)
  assert q.num_tokens == 680 and q.tokens_up_to(9) == 680 - 256
  assert q.phi_of_scale == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)  # VAR's ticks for 4 shared phis, 10 scales
  assert len(q.phis) == 4
  assert phi_assignment(10, 10) == tuple(range(10)) and phi_assignment(5, 1) == (0,) * 5
  z = latent(1, 16)
  z_q, out = nnx.jit(lambda q, z: q(z))(q, z)
  assert out.indices.shape == (1, 680)
  parts = q.split_indices(out.indices)
  assert [p.shape[1:] for p in parts] == [(s, s) for s in VAR_SCALES]
  np.testing.assert_array_equal(np.asarray(q.merge_indices(parts)), np.asarray(out.indices))
  codes = nnx.jit(lambda q, i: q.indices_to_codes(i))(q, out.indices)
  np.testing.assert_allclose(np.asarray(codes), np.asarray(z_q), atol=1e-6)
  for k in range(10):
    assert f"scale_{k}/usage" in out.metrics and f"scale_{k}/perplexity" in out.metrics
  assert q.index_shape(z.shape) == (1, 680)


def test_loss_trains_codebook_and_phi_not_through_zq():
  q = make_vq()
  z = latent(2, 5)
  w = latent(2, 5, seed=1)

  def only_zq(q, z):
    z_q, _ = q(z, train=True)
    return jnp.sum(z_q * w)

  def only_loss(q, z):
    return q(z, train=True)[1].loss

  gz = nnx.grad(only_zq, argnums=(0, 1))(q, z)
  # Straight-through: d(sum z_q * w)/dz = w, and nothing reaches the codebook.
  np.testing.assert_allclose(np.asarray(gz[1]), np.asarray(w), atol=1e-6)
  assert float(jnp.abs(gz[0].quantizer.codebook[...]).sum()) == 0.0
  gl = nnx.grad(only_loss)(q, z)
  assert float(jnp.abs(gl.quantizer.codebook[...]).sum()) > 0
  assert float(jnp.abs(gl.phis[0].kernel[...]).sum()) > 0


def test_bitwise_inner_quantizer():
  r = nnx.Rngs(0)
  q = MultiScaleResidual(BSQ(bits=DIM, rngs=r), scales=(1, 2, 4), rngs=r)
  z = latent(3, 4)
  z_q, out = q(z, train=True)
  assert q.codebook_size == 2**DIM and out.indices.shape == (3, 21)
  assert {"inner_commitment"} <= set(out.terms) and "scale_2/usage" in out.metrics
  z_q, out = q(z)
  np.testing.assert_array_equal(np.asarray(q.indices_to_codes(out.indices)), np.asarray(z_q))


def test_build_from_spec_and_errors():
  spec = {"type": "multiscale", "scales": [1, 2, 4], "phi_count": 0, "quantizer": {"type": "fsq", "levels": [5] * DIM}}
  q = build_quantizer(spec, code_dim=DIM, rngs=nnx.Rngs(0))
  assert isinstance(q, MultiScaleResidual) and q.codebook_size == 5**DIM and len(q.phis) == 3
  with pytest.raises(ValueError, match=r"schedule \[1, 2, 3, 5\] ends at 5x5"):
    make_vq()(latent(1, 4))
  with pytest.raises(ValueError, match="increasing"):
    make_vq(scales=(1, 3, 2))
  with pytest.raises(ValueError, match="increasing"):
    make_vq(scales=())
  with pytest.raises(ValueError, match="phi_ratio"):
    make_vq(phi_ratio=1.5)
  r = nnx.Rngs(0)
  with pytest.raises(ValueError, match="multi-axis"):
    MultiScaleResidual(Residual(make=lambda: FSQ((3,) * DIM, rngs=r), num_levels=2), scales=(1, 2), rngs=r)
  q = make_vq()
  with pytest.raises(ValueError, match=r"first k scales of \[1, 2, 3, 5\] \(1, 5, 14, 39\); got \(2, 6\)"):
    q.indices_to_codes(jnp.zeros((2, 6), jnp.int32))
  with pytest.raises(ValueError, match="num_scales"):
    q.indices_to_codes(jnp.zeros((2, 5), jnp.int32), num_scales=3)
  with pytest.raises(ValueError, match="out of range"):
    q.indices_to_codes(jnp.full((2, 39), 24, jnp.int32))


def test_jit_matches_eager_var_schedule():
  q = make_vq(scales=(1, 2, 3, 4, 6, 8))
  z = latent(2, 8)
  z_q, out = q(z)
  z_q_j, out_j = nnx.jit(lambda q, z: q(z))(q, z)
  np.testing.assert_array_equal(np.asarray(out_j.indices), np.asarray(out.indices))
  np.testing.assert_allclose(np.asarray(z_q_j), np.asarray(z_q), atol=1e-5)
  assert jax.tree.structure(out_j) == jax.tree.structure(out)
