"""Training-step parity with LlamaGen's own trainer (issue 24, item 1).

``tests/goldens/train_llamagen/`` holds three steps of LlamaGen's
tokenizer/tokenizer_image/vq_train.py step, run on its own modules by
scripts/parity/gen_train_llamagen.py (see scripts/parity/README.md): every loss
term, the discriminator's logits and loss, the gradients before clipping and
the change of the weights, the EMA weights and the discriminator's weights.
Here vqtok's train step (``make_train_step``, jitted as the trainer does)
runs the same steps from the same weights: the tokenizer from the converter
golden through vqtok's own converter, the discriminator from the reference's
state dict, the LPIPS weights rebuilt, written in the torchvision / lpips file
layouts and converted by scripts/convert_lpips.py.

Tensors are compared in the published layout (tests/step_parity.py): vqtok's are mapped back
through the converter's own table, then reduced to each tensor's 16-number
Gaussian sketch (whose relative error tracks the tensor's; the tensors of at
most 1024 numbers are compared whole after the last step).
"""

from __future__ import annotations

import pathlib

import helpers
import jax
import numpy as np
import optax
import pytest
import step_parity as P

from vqtok import config as config_lib
from vqtok import pretrained
from vqtok.pretrained import llamagen, reader

ROOT = pathlib.Path(helpers.ROOT)
GOLD = ROOT / "tests" / "goldens" / "train_llamagen"
TOKENIZER = ROOT / "tests" / "goldens" / "llamagen" / "reduced.pt"
PHOTOS = ROOT / "tests" / "goldens" / "llamagen" / "golden.npz"

# Tolerances: float32 on CPU on both sides; measured worst cases (scripts/parity/README.md)
# in brackets, each tolerance about 3x above.
# * Losses: different summation orders, ~1e-7 relative per operation [4e-7]; the means of
#   the discriminator's logits (the generator's hinge term among them) cancel between
#   patches of either sign, so they get an absolute 1e-5 on values of order 0.2 [4.4e-6].
# * Gradients, per tensor: the discriminator's [1.6e-5]; the tokenizer's pass through
#   LPIPS's VGG16 and, for the encoder, through the straight-through quantizer, where the
#   decoder's gradient and the commitment term nearly cancel [6.0e-4, quant_conv and
#   encoder.conv_out]. Global norms [1.5e-5].
# * Changes of the weights since the start: Adam's first steps are ~lr * sign(g), so
#   elements whose gradient is near 0 move by up to 2 lr apart, and a change of 1e-4 on a
#   weight of ~1 is resolved to float32's 6e-8 [G 2.5e-3, D 3.7e-4]. The EMA weights
#   change by 1e-5 per step (decay 0.9), 100x closer to that resolution [7.6e-3].
# * The weights themselves (and the EMA weights), per tensor, against their norm
#   [4.8e-6, after three steps]: the issue asked for 1e-4.
RTOL_LOSS = 1e-5
ATOL_LOGITS = 1e-5
RTOL_GRAD_NORM = 1e-4
RTOL_G_GRAD = 2e-3
RTOL_D_GRAD = 1e-4
RTOL_DELTA = {"g_delta": 1e-2, "d_delta": 2e-3, "ema_delta": 3e-2}
RTOL_PARAM = 2e-5
# Tensors whose gradient the golden shows to be 0 up to rounding (< 1e-6 of the global
# norm at every step; the others are > 1e-4 of it): the attention key biases (softmax
# ignores a shift shared by all keys) and, at this reduced width of 32 channels in 32
# groups, biases whose every path leads into a GroupNorm of one channel per group, which
# removes any per-channel constant. Their gradients must be ~0 here too; Adam turns
# that rounding noise into steps of +-lr on both sides, so their weights are not compared.
ZERO_GRAD = 1e-6
N_ZERO_GRAD = 20
GRAD_TOLERANCES = {"rtol": {"g": RTOL_G_GRAD, "d": RTOL_D_GRAD}, "rtol_norm": RTOL_GRAD_NORM, "zero_grad": ZERO_GRAD}


def _config(tok_config, lpips_path: str, disc_start: int, ema_decay: float):
  """LlamaGen's vq_train.py hyperparameters (its argparse defaults, lines 283-314) in vqtok's terms."""
  c = tok_config
  c.image_size = 32
  c.quantizer.update(commitment_weight=0.25, codebook_weight=1.0)  # vq_model.py:249-250, VQLoss sums both
  c.loss.update(
    l1_weight=0.0,
    l2_weight=1.0,  # reconstruction_loss l2 (F.mse_loss), weight 1
    perceptual_weight=1.0,
    lpips_weights=lpips_path,
    gan_weight=0.5,  # disc_weight, not adaptive (VQLoss's disc_adaptive_weight=False)
    gan_loss="hinge",
    adaptive_weight=False,
    # vq_train.py passes global_step = train_steps + 1 (lines 194, 209): its disc_start
    # counts from 1, vqtok's from 0.
    disc_start=disc_start - 1,
    disc_loss_weight=0.5,  # vq_loss.py:160 scales the discriminator's loss by disc_weight too
  )
  c.optimizer.update(
    lr=1e-4,  # torch.optim.Adam, constant (vq_train.py:110-111; --weight-decay is never used)
    disc_lr=1e-4,
    warmup_steps=0,
    min_lr_ratio=1.0,
    b1=0.9,
    b2=0.95,
    weight_decay=0.0,
    grad_clip=1.0,  # --max-grad-norm, both models (lines 198-200, 212-214)
    disc_steps_before_start=True,  # optimizer_disc.step() runs from the first iteration
  )
  c.discriminator.update(type="patchgan", channels=8, num_layers=3, norm="batch")
  c.training.update(batch_size=2, num_steps=3, ema_decay=ema_decay)
  return config_lib.validate_config(c)


@pytest.fixture(scope="module")
def lpips_npz(tmp_path_factory):
  return P.lpips_npz(tmp_path_factory.mktemp("lpips"), np.load(GOLD / "golden.npz")["lpips_checksum"])


@pytest.fixture(scope="module")
def run(lpips_npz):
  """vqtok's step over the golden's batches: (golden, per-step phase, metrics and state, initial state, tables)."""
  gold = np.load(GOLD / "golden.npz")
  tok, tok_config, _ = pretrained.convert("llamagen", str(TOKENIZER))
  config = _config(tok_config, lpips_npz, int(gold["disc_start"]), float(gold["ema_decay"]))
  d_torch = reader.read_checkpoint(str(GOLD / "d_init.pt"))["discriminator"]
  init, static = P.initial_state(config, tok, d_torch, "d_init.pt")
  photos = np.load(PHOTOS)["x"].transpose(0, 2, 3, 1)  # the reference's NCHW -> NHWC
  batches = [photos[gold[f"step{s}/photos"]] for s in range(int(config.training.num_steps))]
  out = [(gan[0], metrics, state) for gan, metrics, state in P.run_steps(config, static, init, batches)]

  g_shapes = {k: v.shape for k, v in reader.read_checkpoint(str(TOKENIZER))["model"].items()}
  g_shapes = {k: g_shapes[k] for k in gold["g_names"]}
  d_shapes = {k: d_torch[k].shape for k in gold["d_names"]}
  tables = {"g": (llamagen.table(config), g_shapes), "d": (P.PATCHGAN_TABLE, d_shapes)}
  return gold, out, jax.device_get(init), tables


LOSSES = (  # vqtok metric, golden key
  ("loss/l2", "rec_loss"),
  ("loss/perceptual", "perceptual"),
  ("quantizer/codebook", "codebook"),
  ("quantizer/commitment", "commitment"),
  ("loss", "loss_gen"),
  ("gan_weight", "gan_weight"),
  ("d_loss", "d_loss"),
)
LOGITS = (("loss/g_gan", "g_gan"), ("logits_real", "logits_real"), ("logits_fake", "logits_fake"))


def _check_schedule(gold, out):
  gan = [bool(gold[f"step{s}/gan_weight"] > 0) for s in range(len(out))]
  assert [w for w, _, _ in out] == gan == [False, True, True]
  # Before disc_start the reference's discriminator takes a step on a zero loss, and so
  # does vqtok's with optimizer.disc_steps_before_start: Adam's count is 1 either way.
  assert gold["step0/d_loss"] == 0 and gold["step0/d_grad/global_norm"] == 0
  is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)
  (adam,) = [x for x in jax.tree.leaves(out[0][2].d_opt, is_leaf=is_adam) if is_adam(x)]
  assert int(adam.count) == 1


def _check_losses(gold, s, with_gan, metrics):
  for ours, theirs in LOSSES:
    np.testing.assert_allclose(metrics.get(ours, 0.0), gold[f"step{s}/{theirs}"], rtol=RTOL_LOSS, err_msg=ours)
  for ours, theirs in LOGITS if with_gan else ():
    np.testing.assert_allclose(metrics[ours], gold[f"step{s}/{theirs}"], atol=ATOL_LOGITS, err_msg=ours)
  assert gold[f"step{s}/entropy"] == 0  # entropy_loss_ratio 0: vqtok's VQ has no such term


def _grads(with_gan, metrics):
  """The gradients to compare: the discriminator's only from disc_start (before it, the zero-loss step's)."""
  if not with_gan:
    assert metrics["grads"]["d"], "the discriminator's optimizer took no step before disc_start"
    assert not any(np.any(g) for g in jax.tree.leaves(metrics["grads"]["d"]))
    return {"g": metrics["grads"]["g"]}
  return metrics["grads"]


@pytest.mark.slow
def test_three_steps_match_llamagen(run):
  """One test, so the steps are compiled and run once (xdist splits separate tests).

  About 75 s on two cores, nearly all XLA compilation: the two step variants
  (with LPIPS's VGG16 forward and backward), the converter's initialisation.
  """
  gold, out, init, tables = run
  _check_schedule(gold, out)
  zero = P.zero_grad_names(gold, ZERO_GRAD)
  assert len(zero) == N_ZERO_GRAD and all(n.endswith(".bias") for n in zero), sorted(zero)
  for s, (with_gan, metrics, state) in enumerate(out):
    _check_losses(gold, s, with_gan, metrics)
    P.check_gradients(gold, s, _grads(with_gan, metrics), tables, zero, **GRAD_TOLERANCES)
    P.check_weights(gold, s, state, init, tables, zero, rtol_delta=RTOL_DELTA, rtol_param=RTOL_PARAM)
  s = len(out) - 1
  rtol = {"g_grad": RTOL_G_GRAD, "d_grad": RTOL_D_GRAD, **RTOL_DELTA}
  P.check_small_tensors_whole(gold, s, out[s][1]["grads"], out[s][2], init, tables, zero, rtol=rtol)
