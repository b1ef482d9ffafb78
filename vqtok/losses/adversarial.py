"""GAN losses and discriminator regularisers used by image tokenizers.

References:
  Lim & Ye, "Geometric GAN", 2017 (hinge loss).
  Goodfellow et al., 2014 (non-saturating loss).
  Tseng et al., "Regularizing GANs under limited data", CVPR 2021 (LeCam).
  Mescheder et al., "Which training methods for GANs do actually converge?",
    ICML 2018 (R1 penalty).
  Esser et al., "Taming Transformers", CVPR 2021 (adaptive GAN weight).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from vqtok.config_fields import ConfigFields


def hinge_d_loss(logits_real: ArrayLike, logits_fake: ArrayLike) -> jax.Array:
  """Hinge discriminator loss: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))].

  Args:
    logits_real: discriminator logits on real images.
    logits_fake: discriminator logits on reconstructions.

  Returns:
    Scalar loss (the taming/MaskGIT convention halves the sum; we do too).
  """
  real = jnp.mean(jax.nn.relu(1.0 - jnp.asarray(logits_real, jnp.float32)))
  fake = jnp.mean(jax.nn.relu(1.0 + jnp.asarray(logits_fake, jnp.float32)))
  return 0.5 * (real + fake)


def non_saturating_d_loss(logits_real: ArrayLike, logits_fake: ArrayLike) -> jax.Array:
  """Non-saturating (logistic) discriminator loss.

  Args:
    logits_real: discriminator logits on real images.
    logits_fake: discriminator logits on reconstructions.

  Returns:
    Scalar ``0.5 * (E[softplus(-D(x))] + E[softplus(D(G(z)))])``.
  """
  real = jnp.mean(jax.nn.softplus(-jnp.asarray(logits_real, jnp.float32)))
  fake = jnp.mean(jax.nn.softplus(jnp.asarray(logits_fake, jnp.float32)))
  return 0.5 * (real + fake)


def hinge_g_loss(logits_fake: ArrayLike) -> jax.Array:
  """Generator loss paired with the hinge discriminator loss: -E[D(G(z))]."""
  return -jnp.mean(jnp.asarray(logits_fake, jnp.float32))


def non_saturating_g_loss(logits_fake: ArrayLike) -> jax.Array:
  """Non-saturating generator loss: E[softplus(-D(G(z)))]."""
  return jnp.mean(jax.nn.softplus(-jnp.asarray(logits_fake, jnp.float32)))


def non_saturating_per_image_g_loss(logits_fake: ArrayLike) -> jax.Array:
  """Non-saturating generator loss of each image's mean logit: E_images[softplus(-mean_patches D(G(z)))].

  Open-MAGVIT2's ``non_saturate_gen_loss`` (SEED-Voken
  src/Open_MAGVIT2/modules/losses/vqperceptual.py:43-54) averages a PatchGAN's
  logits over each image before the loss.
  """
  lf = jnp.asarray(logits_fake, jnp.float32)
  return jnp.mean(jax.nn.softplus(-jnp.mean(lf.reshape(lf.shape[0], -1), axis=1)))


D_LOSSES = {"hinge": hinge_d_loss, "non_saturating": non_saturating_d_loss}
G_LOSSES = {
  "hinge": hinge_g_loss,
  "non_saturating": non_saturating_g_loss,
  "non_saturating_per_image": non_saturating_per_image_g_loss,
}
#: The GAN loss kinds ``config.loss.gan_loss`` may name.
GAN_LOSSES = tuple(D_LOSSES)


def _check_config(config, check_paths: bool) -> None:
  lc = config.loss
  if not 0 <= lc.lecam_decay < 1:
    raise ValueError(f"loss.lecam_decay={lc.lecam_decay} must be in [0, 1)")


#: ``config.loss`` fields of the GAN term and the discriminator's regularisers.
CONFIG = ConfigFields(
  "loss",
  {
    "gan_weight": 0.1,
    "gan_loss": "hinge",  # hinge | non_saturating
    # The generator's loss when it is not gan_loss's own ("": gan_loss's). Open-MAGVIT2 trains
    # a hinge discriminator against "non_saturating_per_image" (vqperceptual.py:43-54, 176).
    "gen_gan_loss": "",
    "adaptive_weight": True,  # taming-transformers adaptive GAN weight
    "disc_start": 400,  # discriminator (and GAN loss) start at this step
    # The discriminator's updates start this many steps before disc_start. Open-MAGVIT2: 1, as
    # its discriminator loss reads Lightning's global_step after the generator's optimizer step
    # has counted (SEED-Voken lfqgan.py:187-197); no earlier than step 0.
    "disc_update_lead": 0,
    # Scales the discriminator's GAN loss, not its regularisers (LlamaGen: its disc_weight, vq_loss.py:160).
    "disc_loss_weight": 1.0,
    "lecam_weight": 0.0,
    # LeCam's running means of the logits: their decay, and whether this batch's logits enter
    # them before the regulariser reads them (Open-MAGVIT2: 0.999 and True, vqperceptual.py:73-86,
    # 246-247) or after it (False).
    "lecam_decay": 0.99,
    "lecam_ema_first": False,
    "r1_weight": 0.0,
  },
  choices={"gan_loss": GAN_LOSSES, "gen_gan_loss": ("", *G_LOSSES)},
  non_negative=("gan_weight", "disc_start", "disc_update_lead", "disc_loss_weight", "lecam_weight", "r1_weight"),
  check=_check_config,
)


def lecam_loss(logits_real: ArrayLike, logits_fake: ArrayLike, ema_real: ArrayLike, ema_fake: ArrayLike) -> jax.Array:
  """LeCam regulariser: E[relu(D(x) - a_F)^2] + E[relu(a_R - D(G(z)))^2].

  Args:
    logits_real: discriminator logits on real images.
    logits_fake: discriminator logits on reconstructions.
    ema_real: running mean a_R of real logits (a scalar).
    ema_fake: running mean a_F of fake logits (a scalar).

  Returns:
    Scalar regulariser (unweighted).
  """
  lr = jnp.asarray(logits_real, jnp.float32)
  lf = jnp.asarray(logits_fake, jnp.float32)
  return jnp.mean(jnp.square(jax.nn.relu(lr - ema_fake))) + jnp.mean(jnp.square(jax.nn.relu(ema_real - lf)))


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """R1 gradient penalty: E_x ||grad_x D(x)||^2 on real images (unweighted).

  Args:
    d_fn: maps a batch of images to per-example (or per-patch) logits.
    x: real images, (B, H, W, C).

  Returns:
    Scalar mean over the batch of the squared gradient norm of sum(D(x_i)).
  """
  grads = jax.grad(lambda xx: jnp.sum(d_fn(xx).astype(jnp.float32)))(x)
  return jnp.mean(jnp.sum(jnp.square(grads.astype(jnp.float32)).reshape(x.shape[0], -1), axis=1))


def adaptive_weight(nll_grad: ArrayLike, g_grad: ArrayLike, *, max_weight: float = 1e4) -> jax.Array:
  """Taming-style adaptive GAN weight ||grad nll|| / (||grad g|| + 1e-4).

  Both gradients are taken w.r.t. the decoder's last layer; the ratio balances
  the GAN loss against the reconstruction loss. The result is a constant
  (no gradient flows through it).

  Args:
    nll_grad: gradient of the reconstruction (+ perceptual) loss.
    g_grad: gradient of the generator GAN loss.
    max_weight: upper clip, as in taming-transformers.

  Returns:
    Scalar weight in ``[0, max_weight]``.
  """
  n = jnp.linalg.norm(jnp.asarray(nll_grad, jnp.float32).reshape(-1))
  g = jnp.linalg.norm(jnp.asarray(g_grad, jnp.float32).reshape(-1))
  return jax.lax.stop_gradient(jnp.clip(n / (g + 1e-4), 0.0, max_weight))
