"""Reconstruction and GAN losses against NumPy formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqtok import losses


@pytest.fixture
def logits():
  rng = np.random.default_rng(0)
  return rng.normal(size=(4, 3, 3, 1)).astype(np.float32), rng.normal(size=(4, 3, 3, 1)).astype(np.float32)


def test_reconstruction_losses_match_numpy():
  rng = np.random.default_rng(1)
  x, y = rng.uniform(-1, 1, (2, 8, 8, 3)), rng.uniform(-1, 1, (2, 8, 8, 3))
  np.testing.assert_allclose(losses.l1_loss(x, y), np.abs(x - y).mean(), rtol=1e-5)
  np.testing.assert_allclose(losses.l2_loss(x, y), ((x - y) ** 2).mean(), rtol=1e-5)
  # bf16 inputs are upcast: the result is float32.
  assert losses.l1_loss(jnp.asarray(x, jnp.bfloat16), y).dtype == jnp.float32


def test_gan_losses_match_numpy(logits):
  r, f = logits
  relu = lambda v: np.maximum(v, 0)
  softplus = lambda v: np.log1p(np.exp(v))
  np.testing.assert_allclose(losses.hinge_d_loss(r, f), 0.5 * (relu(1 - r).mean() + relu(1 + f).mean()), rtol=1e-5)
  np.testing.assert_allclose(losses.hinge_g_loss(f), -f.mean(), rtol=1e-5)
  np.testing.assert_allclose(
    losses.non_saturating_d_loss(r, f), 0.5 * (softplus(-r).mean() + softplus(f).mean()), rtol=1e-5
  )
  np.testing.assert_allclose(losses.non_saturating_g_loss(f), softplus(-f).mean(), rtol=1e-5)
  # Open-MAGVIT2's non_saturate_gen_loss: each image's mean logit first.
  per_image = softplus(-f.reshape(f.shape[0], -1).mean(1)).mean()
  np.testing.assert_allclose(losses.non_saturating_per_image_g_loss(f), per_image, rtol=1e-5)


def test_lecam_matches_numpy(logits):
  r, f = logits
  ar, af = 0.3, -0.2
  want = (np.maximum(r - af, 0) ** 2).mean() + (np.maximum(ar - f, 0) ** 2).mean()
  np.testing.assert_allclose(losses.lecam_loss(r, f, ar, af), want, rtol=1e-5)


def test_r1_penalty_of_a_quadratic_discriminator():
  # D(x) = sum(a * x^2) per example: grad = 2 a x, so R1 = mean_i ||2 a x_i||^2.
  rng = np.random.default_rng(2)
  a = rng.normal(size=(1, 4, 4, 3)).astype(np.float32)
  x = rng.normal(size=(3, 4, 4, 3)).astype(np.float32)
  d = lambda im: jnp.sum(a * im**2, axis=(1, 2, 3))
  want = np.mean(np.sum(((2 * a * x) ** 2).reshape(3, -1), axis=1))
  np.testing.assert_allclose(losses.r1_penalty(d, jnp.asarray(x)), want, rtol=1e-4)


def test_adaptive_weight_is_a_clipped_gradient_norm_ratio():
  g1 = np.array([[3.0, 4.0]], np.float32)  # norm 5
  g2 = np.array([[0.0, 2.0]], np.float32)  # norm 2
  np.testing.assert_allclose(losses.adaptive_weight(g1, g2), 5 / (2 + 1e-4), rtol=1e-6)
  assert float(losses.adaptive_weight(g1, np.zeros_like(g2))) == pytest.approx(1e4)
  grad = jax.grad(lambda s: losses.adaptive_weight(s * g1, g2))(1.0)
  assert float(grad) == 0.0  # a constant: no gradient flows through it
