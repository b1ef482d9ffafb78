"""One training step: tokenizer update, then discriminator update.

Pure function of (state, batch); the loop compiles it once with ``jax.jit``
over the mesh. Two variants are compiled: before ``loss.disc_start`` no
discriminator is run at all (cheaper), after it the GAN terms are on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from vqtok.losses import adversarial, reconstruction
from vqtok.training.state import Static, TrainState

LECAM_DECAY = 0.99


def _get_path(tree: Any, path: tuple[str, ...]) -> jax.Array:
  for k in path:
    tree = tree[k]
  return tree


def _forward(static: Static, params, rest, x):
  model = nnx.merge(static.g_def, params, rest)
  x_hat, q = model(x, train=True)
  new_rest = nnx.split(model, nnx.Param, ...)[2].to_pure_dict()
  return x_hat, q, new_rest


def _discriminate(static: Static, params, rest, x):
  disc = nnx.merge(static.d_def, params, rest)
  return disc(x.astype(jnp.float32)).astype(jnp.float32)


def make_train_step(
  config: ml_collections.ConfigDict,
  static: Static,
  *,
  with_gan: bool,
  perceptual: Callable[[Any, jax.Array, jax.Array], jax.Array] | None = None,
) -> Callable[[TrainState, dict, Any], tuple[TrainState, dict]]:
  """Returns ``step(state, batch, perceptual_params) -> (state, metrics)``.

  Args:
    config: the run config (reads ``loss``, ``training.ema_decay``).
    static: graph definitions and optimizers from ``init_train_state``.
    with_gan: compile the GAN terms and the discriminator update.
    perceptual: ``f(params, x, x_hat) -> (B,)`` LPIPS distances, or None.
  """
  lc = config.loss
  g_loss_fn = adversarial.G_LOSSES[lc.gan_loss]
  d_loss_fn = adversarial.D_LOSSES[lc.gan_loss]
  ema_decay = float(config.training.ema_decay)
  use_perceptual = perceptual is not None and lc.perceptual_weight > 0

  def step(state: TrainState, batch: dict, perceptual_params: Any):
    x = batch["image"]

    def losses(g_params):
      x_hat, q, new_rest = _forward(static, g_params, state.g_rest, x)
      terms = {"l1": reconstruction.l1_loss(x, x_hat), "l2": reconstruction.l2_loss(x, x_hat)}
      rec = lc.l1_weight * terms["l1"] + lc.l2_weight * terms["l2"]
      if use_perceptual:
        terms["perceptual"] = jnp.mean(perceptual(perceptual_params, x, x_hat))
        rec = rec + lc.perceptual_weight * terms["perceptual"]
      outs = [rec, q.loss.astype(jnp.float32)]
      if with_gan:
        logits_fake = _discriminate(static, state.d_params, state.d_rest, x_hat)
        terms["g_gan"] = g_loss_fn(logits_fake)
        outs.append(terms["g_gan"])
      return tuple(outs), (x_hat, q, new_rest, terms)

    outs, vjp_fn, (x_hat, q, g_rest, terms) = jax.vjp(losses, state.g_params, has_aux=True)
    one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
    if not with_gan:
      (grads,) = vjp_fn((one, one))
      gan_weight = zero
    elif lc.adaptive_weight:
      # Taming-style: balance GAN and reconstruction gradients at the
      # decoder's last layer; two backward passes share one forward pass.
      (g_main,) = vjp_fn((one, one, zero))
      (g_gan,) = vjp_fn((zero, zero, one))
      gan_weight = lc.gan_weight * adversarial.adaptive_weight(
        _get_path(g_main, static.last_layer), _get_path(g_gan, static.last_layer)
      )
      grads = jax.tree.map(lambda a, b: a + gan_weight * b, g_main, g_gan)
    else:
      gan_weight = jnp.asarray(lc.gan_weight, jnp.float32)
      (grads,) = vjp_fn((one, one, gan_weight))
    total = outs[0] + outs[1] + (gan_weight * outs[2] if with_gan else 0.0)

    updates, g_opt = static.g_tx.update(grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    ema = state.ema
    if ema:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, g_params)

    metrics = {
      "loss": total,
      "reconstruction": outs[0],
      "quantizer_loss": outs[1],
      "grad_norm": optax.global_norm(grads),
      "lr": static.g_schedule(state.step),
      **{f"loss/{k}": v for k, v in terms.items()},
      **{f"quantizer/{k}": jnp.asarray(v, jnp.float32) for k, v in q.terms.items()},
      **{f"codebook/{k}": jnp.asarray(v, jnp.float32) for k, v in q.metrics.items()},
    }

    d_params, d_opt, lecam = state.d_params, state.d_opt, state.lecam
    if with_gan:
      x_fake = jax.lax.stop_gradient(x_hat)
      metrics["gan_weight"] = gan_weight

      def d_losses(dp):
        d = lambda im: _discriminate(static, dp, state.d_rest, im)
        lr, lf = d(x), d(x_fake)
        dl = d_loss_fn(lr, lf)
        parts = {"d_gan": dl}
        if lc.lecam_weight > 0:
          parts["lecam"] = adversarial.lecam_loss(lr, lf, lecam["real"], lecam["fake"])
          dl = dl + lc.lecam_weight * parts["lecam"]
        if lc.r1_weight > 0:
          parts["r1"] = adversarial.r1_penalty(d, x.astype(jnp.float32))
          dl = dl + 0.5 * lc.r1_weight * parts["r1"]
        return dl, (jnp.mean(lr), jnp.mean(lf), parts)

      (d_loss, (mr, mf, parts)), d_grads = jax.value_and_grad(d_losses, has_aux=True)(d_params)
      d_updates, d_opt = static.d_tx.update(d_grads, d_opt, d_params)
      d_params = optax.apply_updates(d_params, d_updates)
      lecam = {
        "real": LECAM_DECAY * lecam["real"] + (1 - LECAM_DECAY) * mr,
        "fake": LECAM_DECAY * lecam["fake"] + (1 - LECAM_DECAY) * mf,
      }
      metrics.update({"d_loss": d_loss, "logits_real": mr, "logits_fake": mf})
      metrics.update({f"loss/{k}": v for k, v in parts.items()})

    new_state = TrainState(
      step=state.step + 1,
      g_params=g_params,
      g_rest=g_rest,
      g_opt=g_opt,
      d_params=d_params,
      d_rest=state.d_rest,
      d_opt=d_opt,
      ema=ema,
      lecam=lecam,
    )
    return new_state, metrics

  return step
