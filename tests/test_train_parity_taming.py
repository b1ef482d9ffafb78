"""Training-step parity with taming-transformers' own trainer (issue 24, item 1).

``tests/goldens/train_taming/`` holds three steps of taming's
``VQModel.training_step`` with ``VQLPIPSWithDiscriminator`` (L1 + LPIPS, the
legacy codebook and commitment terms, the adaptive GAN weight from the last
decoder layer's gradients, ``disc_factor`` and ``disc_start``, hinge losses,
Adam (0.5, 0.9) at main.py's scaled learning rate), run on its own modules by
scripts/parity/gen_train_taming.py (see scripts/parity/README.md) the way
pytorch-lightning's loop runs it: every logged loss term, the adaptive weight,
the discriminator's logits and loss, the gradients and the changes of the
weights and the discriminator's weights. taming keeps no EMA: the script
applies one (decay 0.5) to the reference's weights, which vqtok's EMA must match.

vqtok's side is configs/vqgan_f16.py's recipe (its loss, optimizer, quantizer
and discriminator fields) at the golden's reduced sizes: the tokenizer from the
converter golden through vqtok's own converter, the discriminator from the
reference's state dict, the LPIPS weights rebuilt and converted. Tensors are
compared in the published layout, as tests/test_train_parity.py does
(tests/step_parity.py).
"""

from __future__ import annotations

import pathlib

import helpers
import jax
import numpy as np
import pytest
import step_parity as P

from vqtok import config as config_lib
from vqtok import pretrained
from vqtok.pretrained import reader, taming

ROOT = pathlib.Path(helpers.ROOT)
GOLD = ROOT / "tests" / "goldens" / "train_taming"
TOKENIZER = ROOT / "tests" / "goldens" / "taming" / "reduced.ckpt"
PHOTOS = ROOT / "tests" / "goldens" / "taming" / "golden.npz"

# Tolerances: float32 on CPU on both sides; measured worst cases (scripts/parity/README.md)
# in brackets, each tolerance about 3x above.
# * Losses: summation orders, ~1e-7 relative per operation [4.0e-7]; the adaptive weight, a
#   ratio of two gradient norms at the last layer [3.5e-6]. The means of the
#   discriminator's logits cancel between patches of either sign: absolute [2.5e-7].
# * Gradients, per tensor: the tokenizer's pass through LPIPS's VGG16 and the straight-through
#   quantizer [7.0e-5], the discriminator's [3.6e-6]; global norms [1.3e-6].
# * Changes of the weights since the start: main.py's lr is 2 x 4.5e-6 here, so Adam moves
#   weights of ~1 by ~1e-5, resolved to float32's 6e-8 [G 6.7e-3, EMA 6.7e-3, D 2.2e-4].
# * The weights themselves (and the EMA weights), per tensor, against their norm [3.5e-7].
RTOL_LOSS = 1e-5
ATOL_LOGITS = 1e-6
RTOL_GRAD = {"g": 2e-4, "d": 1e-5}
RTOL_DELTA = {"g_delta": 2e-2, "d_delta": 1e-3, "ema_delta": 2e-2}
RTOL_PARAM = 1e-6
# Tensors whose gradient the golden shows to be 0 up to rounding (tests/test_train_parity.py
# says why): compared for their smallness only.
ZERO_GRAD = 1e-6
GRAD_TOLERANCES = {"rtol": RTOL_GRAD, "rtol_norm": 1e-5, "zero_grad": ZERO_GRAD}


def _config(tok_config, gold, lpips_path: str):
  """configs/vqgan_f16.py's recipe at the golden's sizes, with the golden's disc_start and disc_factor."""
  preset = helpers.preset("vqgan_f16", None)
  c = tok_config
  c.image_size = 32
  for section in ("loss", "optimizer"):
    c[section].update(preset[section].to_dict())
  q = preset.quantizer
  c.quantizer.update(commitment_weight=q.commitment_weight, codebook_weight=q.codebook_weight)
  c.discriminator.update(type=preset.discriminator.type, norm=preset.discriminator.norm, channels=8, num_layers=3)
  # taming's disc_factor scales both GAN losses (vqperceptual.py:107, 129): vqtok's
  # gan_weight (with the disc_weight the preset holds) and disc_loss_weight.
  factor = float(gold["disc_factor"])
  c.loss.update(
    lpips_weights=lpips_path,
    gan_weight=preset.loss.gan_weight * factor,
    disc_loss_weight=preset.loss.disc_loss_weight * factor,
    disc_start=int(gold["disc_start"]),  # both count from 0 (Lightning's global_step, vqtok's step)
  )
  # main.py:542 scales the lr with the batch, as the preset's docstring says to.
  lr = preset.optimizer.lr / preset.training.batch_size * 2
  np.testing.assert_allclose(lr, gold["lr"], rtol=1e-12)
  c.optimizer.update(lr=lr, disc_lr=lr)
  c.training.update(batch_size=2, num_steps=3, ema_decay=float(gold["ema_decay"]))
  return config_lib.validate_config(c)


@pytest.fixture(scope="module")
def lpips_npz(tmp_path_factory):
  return P.lpips_npz(tmp_path_factory.mktemp("lpips"), np.load(GOLD / "golden.npz")["lpips_checksum"])


@pytest.fixture(scope="module")
def run(lpips_npz):
  """vqtok's step over the golden's batches: (golden, per-step metrics and states, initial state, tables)."""
  gold = np.load(GOLD / "golden.npz")
  tok, tok_config, _ = pretrained.convert("taming", str(TOKENIZER))
  config = _config(tok_config, gold, lpips_npz)
  d_torch = reader.read_checkpoint(str(GOLD / "d_init.pt"))["discriminator"]
  init, static = P.initial_state(config, tok, d_torch, "d_init.pt")
  photos = np.load(PHOTOS)["x"].transpose(0, 2, 3, 1)  # the reference's NCHW -> NHWC
  batches = [photos[gold[f"step{s}/photos"]] for s in range(int(config.training.num_steps))]
  out = [(gan[0], metrics, state) for gan, metrics, state in P.run_steps(config, static, init, batches)]
  g_shapes = {k: v.shape for k, v in reader.read_checkpoint(str(TOKENIZER))["state_dict"].items()}
  g_shapes = {k: g_shapes[k] for k in gold["g_names"]}
  d_shapes = {k: d_torch[k].shape for k in gold["d_names"]}
  tables = {"g": (taming.table(config), g_shapes), "d": (P.PATCHGAN_TABLE, d_shapes)}
  return gold, out, jax.device_get(init), tables


LOSSES = (  # vqtok metric, golden key (what vqperceptual.py logs, or gen_train_taming.py recomputes)
  ("loss/l1", "l1"),
  ("loss/perceptual", "p_loss"),
  ("reconstruction", "nll_loss"),
  ("quantizer/codebook", "vq_mse"),  # legacy VectorQuantizer2: both terms have one value
  ("quantizer/commitment", "vq_mse"),
  ("quantizer_loss", "quant_loss"),
  ("loss", "total_loss"),
  ("d_loss", "disc_loss"),
)
LOGITS = (("loss/g_gan", "g_loss"), ("logits_real", "logits_real"), ("logits_fake", "logits_fake"))


def _check_schedule(gold, out):
  factors = [float(gold[f"step{s}/disc_factor"]) for s in range(len(out))]
  assert [w for w, _, _ in out] == [f > 0 for f in factors] == [False, True, True]
  # Before disc_start the reference's discriminator takes a step on a zero loss
  # (disc_factor 0), and so does vqtok's with optimizer.disc_steps_before_start.
  assert gold["step0/disc_loss"] == 0 and gold["step0/d_grad/global_norm"] == 0
  P.check_disc_steps_early(out)


def _check_losses(gold, s, with_gan, metrics):
  for ours, theirs in LOSSES:
    np.testing.assert_allclose(metrics.get(ours, 0.0), gold[f"step{s}/{theirs}"], rtol=RTOL_LOSS, err_msg=ours)
  # The adaptive weight: taming's d_weight (with disc_weight) times disc_factor is vqtok's
  # gan_weight; before disc_start taming computes d_weight and multiplies it by 0.
  weight = gold[f"step{s}/d_weight"] * gold[f"step{s}/disc_factor"]
  np.testing.assert_allclose(metrics.get("gan_weight", 0.0), weight, rtol=RTOL_LOSS, err_msg="gan_weight")
  for ours, theirs in LOGITS if with_gan else ():
    np.testing.assert_allclose(metrics[ours], gold[f"step{s}/{theirs}"], atol=ATOL_LOGITS, err_msg=ours)


@pytest.mark.slow
def test_three_steps_match_taming(run):
  """One test, so the steps are compiled and run once (xdist splits separate tests).

  About 95 s of CPU, as tests/test_train_parity.py: the two step variants' XLA
  compilation (~21 s and ~28 s; the adaptive weight's two backward passes, and the
  discriminator's extra tokenizer forward), the converter's and the discriminator's
  eager initialisation (~11 s and ~8 s).
  """
  gold, out, init, tables = run
  _check_schedule(gold, out)
  zero = P.zero_grad_names(gold, ZERO_GRAD)
  assert all(n.endswith(".bias") for n in zero), sorted(zero)
  for s, (with_gan, metrics, state) in enumerate(out):
    _check_losses(gold, s, with_gan, metrics)
    grads = metrics["grads"] if with_gan else {"g": metrics["grads"]["g"]}
    if not with_gan:  # the zero-loss step of the discriminator's optimizer
      assert metrics["grads"]["d"] and not any(np.any(g) for g in jax.tree.leaves(metrics["grads"]["d"]))
    P.check_gradients(gold, s, grads, tables, zero, **GRAD_TOLERANCES)
    P.check_weights(gold, s, state, init, tables, zero, rtol_delta=RTOL_DELTA, rtol_param=RTOL_PARAM)
  s = len(out) - 1
  rtol = {"g_grad": RTOL_GRAD["g"], "d_grad": RTOL_GRAD["d"], **RTOL_DELTA}
  P.check_small_tensors_whole(gold, s, out[s][1]["grads"], out[s][2], init, tables, zero, rtol=rtol)
