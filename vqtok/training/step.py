"""One training step: tokenizer update, then discriminator update.

Pure function of (state, batch); the loop compiles it once with ``jax.jit``
over the mesh. Two variants are compiled: before ``loss.disc_start`` no
discriminator is run at all (cheaper), after it the GAN terms are on (and a
third with ``loss.disc_update_lead``: the discriminator trains, the generator
has no GAN term yet). With ``optimizer.disc_sees_updated_generator`` the
discriminator's update judges the reconstructions of the tokenizer as just
updated (one more forward pass), as taming's Lightning loop does.

With a teacher (``config.teacher``, ``loss.proxy_code_weight``) the step also
takes the cross-entropy of the decoder's proxy-code logits against the
teacher's code ids of the same batch; when no pixel loss is on, the pixel
decoder is not run at all (TiTok's first stage). Submodules named in
``training.freeze`` keep their parameters, EMA weights and other state.

With a feature teacher (``config.feature_teacher``, ``loss.vf_weight``) the
step runs the frozen teacher on the batch (resized to its resolution) and adds
VA-VAE's vision-foundation loss between the projected quantised latents and
its patch features; with ``loss.vf_adaptive`` its weight is the ratio of the
reconstruction's and the VF loss's gradient norms at the encoder's last layer
(one more backward pass for each of the two, and one for the quantizer loss).
FQGAN's semantic loss (``loss.semantic_weight``) and VQ-KD's feature
reconstruction (``loss.feature_rec_weight``) use the same teacher pass and are
plain weighted terms beside the quantizer's loss. With one teacher per semantic head
(``config.feature_teachers``, FQGAN Triple: DINOv2 for the mid-level head, CLIP for
the high-level one) each teacher runs on the batch at its own resolution and
its class token is the target of its head alone; each head's term is also
reported (``loss/semantic_<sub-codebook>``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from vqtok import feature_teacher as feature_teacher_lib
from vqtok import files
from vqtok.losses import adversarial, alignment, reconstruction
from vqtok.training import teacher as teacher_lib
from vqtok.training.state import Static, TrainState, frozen_mask


def _get_path(tree: Any, path: tuple[str, ...]) -> jax.Array:
  for k in path:
    tree = tree[k]
  return tree


def _forward(
  static: Static, params, rest, x, *, pixels: bool, proxy_logits: bool, features: bool = False, semantic: bool = False
):
  """(reconstruction, proxy logits, quantizer output, new non-Param state, projected latents, the feature
  heads' class tokens); None where not asked."""
  model = nnx.merge(static.g_def, params, rest)
  z_q, q = model.quantize(x, train=True)
  keep = model.sample_keep(x.shape[0])  # model.token_drop: one draw for the pixels and the logits
  x_hat = model.reconstruct(z_q, keep=keep) if pixels else None
  logits = model.proxy_logits(z_q, keep=keep) if proxy_logits else None
  feats = model.project_features(z_q) if features else None
  # FQGAN's heads read the straight-through sub-codes, so the loss also trains the semantic encoder head.
  cls = [f[:, 0] for f in model.predict_features(z_q)] if semantic else None
  new_rest = files.pure(model)[2]
  return x_hat, logits, q, new_rest, feats, cls


def _keep_frozen(new: Any, old: Any, frozen: tuple[str, ...]) -> Any:
  """``new`` with the leaves of frozen submodules taken from ``old`` (bit-identical)."""
  if not frozen:
    return new
  return jax.tree.map(lambda f, n, o: o if f else n, frozen_mask(new, frozen), new, old)


def _frames(x: jax.Array) -> jax.Array:
  """Video batches (B, T, H, W, C) as B*T images for the image losses and discriminators; images as they are."""
  return x.reshape((-1,) + x.shape[-3:])


def _discriminate(static: Static, params, rest, x):
  disc = nnx.merge(static.d_def, params, rest)
  return disc(_frames(x).astype(jnp.float32)).astype(jnp.float32)


def _vf_grads(lc: Any, static: Static, vjp_fn: Callable, n: int, with_gan: bool):
  """``(grads, gan_weight, vf_weight)`` when the VF loss (the last of ``n`` outputs) is on.

  The outputs are (reconstruction, quantizer loss[, GAN], VF). VA-VAE weighs
  the VF loss by ``vf_weight * ||grad rec|| / (||grad vf|| + 1e-4)`` at the
  encoder's last layer (clipped to 1e8) and the GAN loss as the step does
  without it, so each part gets its own backward pass, combined linearly.
  """
  one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)

  def grad_of(i: int):
    return vjp_fn(tuple(one if j == i else zero for j in range(n)))[0]

  g_rec, g_q, g_vf = grad_of(0), grad_of(1), grad_of(n - 1)
  if lc.vf_adaptive:
    vf_weight = lc.vf_weight * adversarial.adaptive_weight(
      _get_path(g_rec, static.enc_last_layer),
      _get_path(g_vf, static.enc_last_layer),
      max_weight=alignment.MAX_VF_WEIGHT,
    )
  else:
    vf_weight = jnp.asarray(lc.vf_weight, jnp.float32)
  g_main = jax.tree.map(jnp.add, g_rec, g_q)
  grads = jax.tree.map(lambda a, b: a + vf_weight * b, g_main, g_vf)
  gan_weight = zero
  if with_gan:
    g_gan = grad_of(2)
    if lc.adaptive_weight:
      gan_weight = lc.gan_weight * adversarial.adaptive_weight(
        _get_path(g_main, static.last_layer), _get_path(g_gan, static.last_layer)
      )
    else:
      gan_weight = jnp.asarray(lc.gan_weight, jnp.float32)
    grads = jax.tree.map(lambda a, b: a + gan_weight * b, grads, g_gan)
  return grads, gan_weight, vf_weight


def make_train_step(
  config: ml_collections.ConfigDict,
  static: Static,
  *,
  with_gan: bool,
  train_disc: bool | None = None,
  perceptual: Callable[[Any, jax.Array, jax.Array], jax.Array] | None = None,
  teacher: teacher_lib.Teacher | None = None,
  feature_teacher: feature_teacher_lib.Loaded | tuple[feature_teacher_lib.Loaded, ...] | None = None,
  return_grads: bool = False,
) -> Callable[..., tuple[TrainState, dict]]:
  """Returns ``step(state, batch, perceptual_params, teacher_arrays=None, feature_arrays=None) -> (state, metrics)``.

  Args:
    config: the run config (reads ``loss``, ``training.ema_decay``).
    static: graph definitions and optimizers from ``init_train_state``.
    with_gan: compile the generator's GAN term (and, by default, the discriminator update).
    train_disc: compile the discriminator update (default: ``with_gan``); True without
      ``with_gan`` is the ``loss.disc_update_lead`` steps before ``loss.disc_start``.
    perceptual: ``f(params, x, x_hat) -> (B,)`` LPIPS distances, or None.
    teacher: the frozen teacher (``teacher.load``) whose code ids are the
      targets of ``loss.proxy_code_weight``; its arrays are the step's fourth argument.
    feature_teacher: the frozen feature teacher (``feature_teacher.load_for``)
      of ``loss.vf_weight``; its arrays are the step's last argument. A tuple: one teacher per
      semantic head (``config.feature_teachers``), their arrays a list in the same order.
    return_grads: also return the gradients, before clipping, as
      ``metrics["grads"] = {"g": ..., "d": ...}`` (for parity tests; the
      trainer never asks for them).
  """
  lc = config.loss
  g_loss_fn = adversarial.G_LOSSES[lc.get("gen_gan_loss", "") or lc.gan_loss]
  d_loss_fn = adversarial.D_LOSSES[lc.gan_loss]
  ema_decay = float(config.training.ema_decay)
  ema_warmup = bool(config.training.get("ema_warmup", False))
  d_loss_weight = float(lc.get("disc_loss_weight", 1.0))
  train_disc = with_gan if train_disc is None else train_disc
  lecam_decay = float(lc.get("lecam_decay", 0.99))
  lecam_first = bool(lc.get("lecam_ema_first", False))
  # Trainers that step the discriminator's optimizer every iteration (on a
  # zero loss before disc_start) advance its step count from the first step.
  d_steps_early = bool(config.optimizer.get("disc_steps_before_start", False))
  d_sees_update = bool(config.optimizer.get("disc_sees_updated_generator", False))
  use_perceptual = perceptual is not None and lc.perceptual_weight > 0
  proxy_weight = float(lc.get("proxy_code_weight", 0.0))
  use_proxy = proxy_weight > 0
  if use_proxy and teacher is None:
    raise ValueError("loss.proxy_code_weight > 0 needs a teacher (config.teacher)")
  use_vf = float(lc.get("vf_weight", 0.0)) > 0
  rec_weight = float(lc.get("feature_rec_weight", 0.0))
  use_feature_rec = rec_weight > 0
  semantic_weight = float(lc.get("semantic_weight", 0.0))
  use_semantic = semantic_weight > 0
  if (use_vf or use_feature_rec or use_semantic) and feature_teacher is None:
    raise ValueError(
      "loss.vf_weight, loss.feature_rec_weight or loss.semantic_weight > 0 needs a feature teacher"
      " (config.feature_teacher)"
    )
  use_features = use_vf or use_feature_rec
  per_head = isinstance(feature_teacher, tuple)  # config.feature_teachers: one teacher per semantic head
  if per_head and (use_features or not use_semantic):
    raise ValueError("one feature teacher per semantic head serves loss.semantic_weight alone")
  group = int(lc.get("semantic_group", 0))
  # TiTok's first stage trains on the logits alone: no pixel decoder in the step.
  pixels = not use_proxy or with_gan or train_disc or use_perceptual or lc.l1_weight > 0 or lc.l2_weight > 0

  def step(state: TrainState, batch: dict, perceptual_params: Any, teacher_arrays: Any = None, feature_arrays=None):
    x = batch["image"]
    targets = teacher_lib.codes(teacher, teacher_arrays, x) if use_proxy else None
    if per_head:  # each teacher once, at its own resolution
      sem_targets = [
        feature_teacher_lib.semantic_target(t, feature_teacher_lib.batch_outputs(t, a, x, lc.vf_resize))
        for t, a in zip(feature_teacher, feature_arrays, strict=True)
      ]
    elif use_features or use_semantic:  # one teacher pass for every feature loss
      teacher_out = feature_teacher_lib.batch_outputs(feature_teacher, feature_arrays, x, lc.vf_resize)
      teacher_feats = teacher_out["patches"]
      if use_semantic:
        sem_targets = [feature_teacher_lib.semantic_target(feature_teacher, teacher_out)] * len(
          config.model.feature_head_dims
        )

    def losses(g_params):
      x_hat, logits, q, new_rest, feats, cls = _forward(
        static,
        g_params,
        state.g_rest,
        x,
        pixels=pixels,
        proxy_logits=use_proxy,
        features=use_features,
        semantic=use_semantic,
      )
      terms, rec = {}, jnp.zeros((), jnp.float32)
      if pixels:
        terms.update(l1=reconstruction.l1_loss(x, x_hat), l2=reconstruction.l2_loss(x, x_hat))
        rec = lc.l1_weight * terms["l1"] + lc.l2_weight * terms["l2"]
      if use_perceptual:
        terms["perceptual"] = jnp.mean(perceptual(perceptual_params, _frames(x), _frames(x_hat)))
        rec = rec + lc.perceptual_weight * terms["perceptual"]
      if use_proxy:
        terms["proxy_code"], terms["proxy_code_accuracy"] = teacher_lib.proxy_code_loss(logits, targets)
        rec = rec + proxy_weight * terms["proxy_code"]
      plain = q.loss.astype(jnp.float32)  # the terms with fixed weights beside reconstruction
      if use_feature_rec:
        # VQ-KD's term takes the quantizer's slot: its gradient reaches neither the decoder's last
        # layer (the GAN's adaptive weight) nor counts as reconstruction (the VF's adaptive weight).
        target = teacher_out[lc.get("feature_rec_target", "patches")]
        terms["feature_rec"] = alignment.feature_rec_loss(feats, target)
        plain = plain + rec_weight * terms["feature_rec"]
      if use_semantic:
        # FQGAN adds semantic_weight * loss of each head to its total, as plainly as the codebook losses.
        heads = [alignment.semantic_loss(c, t, group) for c, t in zip(cls, sem_targets, strict=True)]
        terms["semantic"] = sum(heads[1:], heads[0])
        if len(heads) > 1:  # by sub-codebook: the heads read sub-codes 1, 2, ...
          terms.update({f"semantic_{i + 1}": h for i, h in enumerate(heads)})
        plain = plain + semantic_weight * terms["semantic"]
      outs = [rec, plain]
      if with_gan:
        logits_fake = _discriminate(static, state.d_params, state.d_rest, x_hat)
        terms["g_gan"] = g_loss_fn(logits_fake)
        outs.append(terms["g_gan"])
      if use_vf:
        terms["vf"], parts = alignment.vf_loss(
          feats,
          teacher_feats,
          distmat_margin=lc.vf_distmat_margin,
          cos_margin=lc.vf_cos_margin,
          distmat_weight=lc.vf_distmat_weight,
          cos_weight=lc.vf_cos_weight,
        )
        terms.update(parts)
        outs.append(terms["vf"])
      return tuple(outs), (x_hat, q, new_rest, terms)

    outs, vjp_fn, (x_hat, q, g_rest, terms) = jax.vjp(losses, state.g_params, has_aux=True)
    one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
    vf_weight = zero
    if use_vf:
      grads, gan_weight, vf_weight = _vf_grads(lc, static, vjp_fn, len(outs), with_gan)
    elif not with_gan:
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
    total = outs[0] + outs[1] + (gan_weight * outs[2] if with_gan else 0.0) + (vf_weight * outs[-1] if use_vf else 0.0)
    # Frozen submodules: no gradient (XLA then drops their backward pass), no
    # update, and their EMA weights and other state stay as they were.
    grads = _keep_frozen(grads, jax.tree.map(jnp.zeros_like, grads), static.frozen)
    g_rest = _keep_frozen(g_rest, state.g_rest, static.frozen)

    updates, g_opt = static.g_tx.update(grads, state.g_opt, state.g_params)
    g_params = _keep_frozen(optax.apply_updates(state.g_params, updates), state.g_params, static.frozen)
    ema = state.ema
    if ema:
      decay = ema_decay
      if ema_warmup:  # training.ema_warmup: the k-th update (k = step + 1) decays by min(decay, k / (k + 9))
        k = (state.step + 1).astype(jnp.float32)
        decay = jnp.where(k > 1, jnp.minimum(ema_decay, k / (k + 9.0)), 0.0)
      ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, g_params)
      ema = _keep_frozen(ema, state.ema, static.frozen)

    metrics = {
      "loss": total,
      "reconstruction": outs[0],
      "quantizer_loss": q.loss.astype(jnp.float32),
      "grad_norm": optax.global_norm(grads),
      # For the loop's judgement of checkpoints: weights that jump by orders
      # of magnitude in one step have diverged even while the loss is finite.
      "param_norm": optax.global_norm(g_params),
      "update_ratio": optax.global_norm(jax.tree.map(jnp.subtract, g_params, state.g_params))
      / jnp.maximum(optax.global_norm(state.g_params), 1e-12),
      "lr": static.g_schedule(state.step),
      **{f"loss/{k}": v for k, v in terms.items() if k != "proxy_code_accuracy"},
      **({"proxy_code_accuracy": terms["proxy_code_accuracy"]} if use_proxy else {}),
      **({"vf_weight": vf_weight} if use_vf else {}),
      **{f"quantizer/{k}": jnp.asarray(v, jnp.float32) for k, v in q.terms.items()},
      **{f"codebook/{k}": jnp.asarray(v, jnp.float32) for k, v in q.metrics.items()},
    }

    d_params, d_opt, lecam = state.d_params, state.d_opt, state.lecam
    if with_gan:
      metrics["gan_weight"] = gan_weight
    # The running means of the logits, with this batch's (constant) means.
    running = lambda old, mean: lecam_decay * old + (1 - lecam_decay) * jax.lax.stop_gradient(mean)
    if train_disc:
      x_fake = x_hat
      if d_sees_update:
        # The updated tokenizer's reconstructions; its state updates (quantizer statistics)
        # are dropped, so the batch counts once.
        x_fake = _forward(static, g_params, g_rest, x, pixels=True, proxy_logits=False)[0]
      x_fake = jax.lax.stop_gradient(x_fake)

      def d_losses(dp):
        d = lambda im: _discriminate(static, dp, state.d_rest, im)
        lr, lf = d(x), d(x_fake)
        dl = d_loss_fn(lr, lf)
        parts = {"d_gan": dl}
        dl = d_loss_weight * dl
        if lc.lecam_weight > 0:
          ema_real, ema_fake = lecam["real"], lecam["fake"]
          if lecam_first:
            ema_real, ema_fake = running(ema_real, jnp.mean(lr)), running(ema_fake, jnp.mean(lf))
          parts["lecam"] = adversarial.lecam_loss(lr, lf, ema_real, ema_fake)
          dl = dl + lc.lecam_weight * parts["lecam"]
        if lc.r1_weight > 0:
          parts["r1"] = adversarial.r1_penalty(d, x.astype(jnp.float32))
          dl = dl + 0.5 * lc.r1_weight * parts["r1"]
        return dl, (jnp.mean(lr), jnp.mean(lf), parts)

      (d_loss, (mr, mf, parts)), d_grads = jax.value_and_grad(d_losses, has_aux=True)(d_params)
      d_updates, d_opt = static.d_tx.update(d_grads, d_opt, d_params)
      d_params = optax.apply_updates(d_params, d_updates)
      lecam = {"real": running(lecam["real"], mr), "fake": running(lecam["fake"], mf)}
      metrics.update({"d_loss": d_loss, "logits_real": mr, "logits_fake": mf})
      metrics.update({f"loss/{k}": v for k, v in parts.items()})
    elif d_steps_early:
      d_grads = jax.tree.map(jnp.zeros_like, d_params)
      d_updates, d_opt = static.d_tx.update(d_grads, d_opt, d_params)
      d_params = optax.apply_updates(d_params, d_updates)
    if return_grads:
      metrics["grads"] = {"g": grads, "d": d_grads if train_disc or d_steps_early else {}}

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
