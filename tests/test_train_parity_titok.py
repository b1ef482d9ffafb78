"""Training-step parity with TiTok's own stage-1 trainer (bytedance/1d-tokenizer; issue 24, item 1).

``tests/goldens/train_titok/`` holds four steps of utils/train_utils.py
``train_one_epoch`` in stage 1, run on the reference's own model, loss,
optimizer, schedule and EMA by scripts/parity/gen_train_titok.py (see
scripts/parity/README.md): the learning rate and EMA decay of each step, the
teacher's code ids, every loss term, the gradients before clipping and the
change of the weights and the EMA weights, and which parameters the optimizer
exempts from weight decay. Here vqtok's train step (``make_train_step``,
jitted as the trainer does) runs the same steps from the same weights: the
student from the converter golden through vqtok's TiTok converter and the
preset's own stage-1 recipe (``two_stage``), the teacher a vqtok MaskGIT VQGAN
holding the same weights (its encoder rebuilt from the golden's random stream
and mapped from the reference's layout below, its codebook and decoder those
the student's frozen ``decoder.codebook`` / ``decoder.pixel`` hold).

Tensors are compared in the published layout (tests/step_parity.py): vqtok's
are mapped back through the converter's own table and reduced to each
tensor's 16-number Gaussian sketch (the tensors of at most 1024 numbers are
compared whole after the last step).
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import helpers
import jax
import numpy as np
import pytest
import step_parity as P
from flax import nnx

from vqtok import config as config_lib
from vqtok import files, models
from vqtok.pretrained import layout as L
from vqtok.pretrained import titok as titok_conv
from vqtok.training import teacher as teacher_lib
from vqtok.training.state import abstract_train_state, decay_mask
from vqtok.training.step import make_train_step

ROOT = pathlib.Path(helpers.ROOT)
GOLD = ROOT / "tests" / "goldens" / "train_titok"
TOKENIZER = ROOT / "tests" / "goldens" / "titok" / "reduced.bin"
PHOTOS = ROOT / "tests" / "goldens" / "titok" / "golden.npz"

# Tolerances: float32 on CPU on both sides; measured worst cases over the four steps
# (scripts/parity/README.md) in brackets, each tolerance 4x above or more.
# * Losses and learning rates: summation order, ~1e-7 relative per operation [losses 4.5e-7,
#   lr 2.5e-8].
# * Gradients, per tensor [2.6e-6], global norm [2.1e-8]: nothing cancels here (no GAN, no
#   LPIPS; the straight-through gradient and the commitment term stay apart).
# * Changes of the weights since the start [1.4e-4] and of the EMA weights [1.1e-3]: Adam's
#   first steps are ~lr * sign(g), and a change of 1e-4 (the EMA's: 4e-5) on a weight of ~1
#   is resolved to float32's 6e-8.
# * The weights themselves (and the EMA weights), per tensor, against their norm [1.5e-7].
RTOL_LOSS = 2e-6
RTOL_LR = 1e-6
RTOL_GRAD_NORM = 1e-6
RTOL_GRAD = 2e-5
RTOL_DELTA = {"g_delta": 1e-3, "ema_delta": 5e-3}
RTOL_PARAM = 1e-6
# The attention key biases: softmax ignores a shift shared by all keys, so their gradient
# is rounding noise on both sides (< 1e-8 of the global norm; every other tensor's is
# > 1e-4 of it), which Adam turns into steps of +-lr; only their gradients' smallness is compared.
ZERO_GRAD = 1e-6
N_ZERO_GRAD = 4

# The reference's MaskGIT VQGAN encoder (modeling/modules/maskgit_vqgan.py Encoder) in vqtok's
# MaskGIT-family CNN: down[i].block[j] is level i's res block j; no downsampling weights (avg-pool).
TEACHER_ENCODER = (
  *L.torch_conv(r"conv_in", "encoder.conv_in"),
  *L.torch_resnet(r"down\.(\d+)\.block\.(\d+)", "encoder.res.{0}.{1}"),
  *L.torch_resnet(r"mid\.(\d+)", "encoder.mid.{0}"),
  *L.torch_norm(r"norm_out", "encoder.norm_out"),
  *L.torch_conv(r"conv_out", "encoder.conv_out"),
)


def _teacher(gold, student, student_config):
  """A vqtok MaskGIT VQGAN with the golden teacher's weights: ``(Teacher, arrays, config)``."""
  pixel = student_config.model.proxy_decoder
  c = helpers.preset(
    "maskgit_vqgan",
    None,
    image_size=int(student_config.image_size),
    **{f"model.{k}": pixel[k] for k in ("channels", "channel_mult", "num_res_blocks", "norm_groups")},
    **{"model.code_dim": int(student_config.model.proxy_code_dim), "loss.perceptual_weight": 0.0},
  )
  c.quantizer.codebook_size = int(student_config.model.proxy_codebook_size)
  config_lib.validate_config(c)
  tok = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  shapes = dict(zip(gold["teacher_names"], (ast.literal_eval(str(s)) for s in gold["teacher_shapes"])))
  weights = P.random_weights(int(gold["teacher_seed"]), shapes)
  np.testing.assert_allclose(sum(np.sum(v, dtype=np.float64) for v in weights.values()), gold["teacher_checksum"])
  want = {k: v for k, v in files.shapes(tok).items() if k.startswith("encoder.")}
  values = L.apply_rules(weights, TEACHER_ENCODER, want, source="teacher encoder")
  # The teacher's codebook and decoder: those the converter put in the student's frozen decoder
  # (a fresh vqtok stage-1 run copies them the other way, teacher.fill_proxy_decoder).
  values["quantizer.codebook"] = student["decoder.codebook"]
  values.update(
    {"decoder." + k[len("decoder.pixel.") :]: v for k, v in student.items() if k.startswith("decoder.pixel.")}
  )
  tok = files.assign(tok, values, source="teacher")
  graphdef, arrays = nnx.split(tok)
  return teacher_lib.Teacher(graphdef, "teacher"), arrays.to_pure_dict()


def _config(tok_config, gold):
  """The preset's stage-1 recipe on the converted architecture, at the golden's reduced schedule."""
  two_stage = importlib.import_module("configs.titok_l32").two_stage
  c = two_stage(tok_config, "stage1")
  c.teacher = "the golden's teacher"  # built in memory (_teacher)
  c.training.update(batch_size=2, num_steps=int(gold["max_train_steps"]))  # the cosine's length
  c.optimizer.update(warmup_steps=int(gold["warmup_steps"]), weight_decay=float(gold["weight_decay"]))
  c.discriminator.update(type="patchgan", channels=8, num_layers=2)  # never run in stage 1; fits 32 px
  return config_lib.validate_config(c, check_paths=False)


@pytest.fixture(scope="module")
def run():
  return simulate()


def simulate():
  """vqtok's step over the golden's batches: (golden, per-step (metrics, state, teacher ids), initial state, table)."""
  gold = np.load(GOLD / "golden.npz")
  tok, tok_config, tensors = P.convert("titok", str(TOKENIZER))
  _, g_params, g_rest = files.pure(tok)
  teacher, t_arrays = _teacher(gold, files.arrays(tok), tok_config)
  config = _config(tok_config, gold)
  abstract, static = abstract_train_state(config)
  # One compiled program each (eager, every array op would compile its own).
  zeros = jax.jit(lambda: jax.tree.map(lambda a: jax.numpy.zeros(a.shape, a.dtype), abstract))()
  state = zeros.replace(
    g_params=g_params,
    g_rest=g_rest,
    g_opt=jax.jit(static.g_tx.init)(g_params),
    ema=g_params,  # the step returns new arrays (nothing is donated)
  )  # the discriminator's parts stay zeros: there is none in stage 1
  init = jax.device_get(state)
  step = jax.jit(make_train_step(config, static, with_gan=False, teacher=teacher, return_grads=True))
  codes = jax.jit(lambda a, x: teacher_lib.codes(teacher, a, x))
  photos = np.load(PHOTOS)["images_uint8"].astype(np.float32) / 255.0  # the reference's [0, 1] batch
  out = []
  for s in range(len([k for k in gold.files if k.endswith("/lr")])):
    x = jax.numpy.asarray(photos[gold[f"step{s}/photos"]] * 2.0 - 1.0)  # vqtok's [-1, 1]
    ids = codes(t_arrays, x)
    state, metrics = step(state, {"image": x}, None, t_arrays)
    out.append((jax.device_get(metrics), jax.device_get(state), np.asarray(ids)))
  shapes = {str(k): tensors[str(k)].shape for k in gold["g_names"]}
  return gold, out, init, (titok_conv.table(config), shapes), config


def _published(table, tree):
  return P.to_published(P.flat(tree), *table)


LOSSES = (  # vqtok metric, golden key, golden's factor
  ("loss/proxy_code", "reconstruction_loss", 1.0),
  ("quantizer_loss", "quantizer_loss", 1.0),
  ("quantizer/codebook", "codebook_loss", 1.0),
  ("quantizer/commitment", "commitment_loss", 1 / 0.25),  # the reference's is weighted
  ("loss", "total_loss", 1.0),
)


def _check_step(gold, s, metrics, ids, zero, table):
  assert np.array_equal(ids.reshape(len(ids), -1), gold[f"step{s}/teacher_ids"]), "the teacher's codes"
  np.testing.assert_allclose(metrics["lr"], gold[f"step{s}/lr"], rtol=RTOL_LR, atol=1e-12, err_msg="lr")
  for ours, theirs, factor in LOSSES:
    np.testing.assert_allclose(metrics[ours], factor * gold[f"step{s}/{theirs}"], rtol=RTOL_LOSS, err_msg=ours)
  grads = _published(table, metrics["grads"]["g"])
  total = np.linalg.norm([np.linalg.norm(x) for x in grads.values()])
  np.testing.assert_allclose(total, gold[f"step{s}/g_grad/global_norm"], rtol=RTOL_GRAD_NORM)
  for name in zero:
    assert np.linalg.norm(grads[name]) < ZERO_GRAD * total, name
  err, where = P.sketch_error(gold, f"step{s}/g_grad", grads, skip=zero)
  assert err < RTOL_GRAD, f"gradient of {where}: relative error {err:.2e}"


def _deltas(table, after, before):
  a, b = _published(table, after), _published(table, before)
  return {k: a[k] - b[k] for k in a}


def _check_weights(gold, s, state, init, zero, table):
  for group, after in (("g_delta", state.g_params), ("ema_delta", state.ema)):
    delta = _deltas(table, after, init.g_params)
    (err, where), (werr, wwhere) = P.delta_errors(gold, f"step{s}/{group}", delta, _published(table, after), skip=zero)
    assert err < RTOL_DELTA[group], f"{group} of {where}: relative error {err:.2e}"
    assert werr < RTOL_PARAM, f"{group}: {wwhere} relative to its norm {werr:.2e}"


def test_four_steps_match_titok_stage1(run):
  """One test, so the step is compiled and run once (xdist splits separate tests)."""
  gold, out, init, table, _ = run
  zero = P.zero_grad_names(gold, ZERO_GRAD)
  assert len(zero) == N_ZERO_GRAD and all(n.endswith("in_proj_bias.key") for n in zero), sorted(zero)
  # The schedule: lr 0 at the first step, the warm-up, then past its end into the cosine; the
  # EMA copies the weights at the first update, then warms up (EMAModel, training.ema_warmup).
  lrs = [float(gold[f"step{s}/lr"]) for s in range(len(out))]
  assert lrs[0] == 0 and lrs[1] < lrs[2] == max(lrs) and lrs[3] < lrs[2] and len(out) > int(gold["warmup_steps"]) + 1
  assert [float(gold[f"step{s}/ema_decay"]) for s in range(len(out))] == [0, 2 / 11, 3 / 12, 4 / 13]
  for s, (metrics, state, ids) in enumerate(out):
    _check_step(gold, s, metrics, ids, zero, table)
    _check_weights(gold, s, state, init, zero, table)
  s, (metrics, state, _) = len(out) - 1, out[-1]
  groups = {
    "g_grad": (_published(table, metrics["grads"]["g"]), RTOL_GRAD),
    "g_delta": (_deltas(table, state.g_params, init.g_params), RTOL_DELTA["g_delta"]),
    "ema_delta": (_deltas(table, state.ema, init.g_params), RTOL_DELTA["ema_delta"]),
  }
  for group, (tensors, rtol) in groups.items():
    err = P.whole_error(gold, f"step{s}/{group}", tensors, skip=zero)
    assert err < rtol, f"{group}: relative error {err:.2e}"


def test_frozen_parts_stay_and_the_rest_moves(run):
  """The reference's stage-1 model freezes nothing; vqtok's teacher copies (decoder.pixel, .codebook) stay put."""
  gold, out, init, table, config = run
  _, state, _ = out[-1]
  assert all(n > 0 for n in gold[f"step{len(out) - 1}/g_delta/norm"])  # every reference tensor moved
  moved = _deltas(table, state.g_params, init.g_params)
  assert set(moved) == {str(n) for n in gold["g_names"]} and all(np.any(d) for d in moved.values())
  frozen = config.training.freeze
  assert frozen == ("decoder.pixel", "decoder.codebook")
  for tree in (state.g_params, state.ema):
    for k, v in P.flat(tree).items():
      if k.startswith(frozen):
        np.testing.assert_array_equal(v, P.flat(init.g_params)[k], err_msg=k)


def test_weight_decay_exemptions_are_the_references(run):
  """optimizer.no_decay (the preset's) exempts exactly the tensors create_optimizer puts in its no-decay group."""
  gold, _, init, table, config = run
  mask = decay_mask(init.g_params, tuple(config.optimizer.no_decay))
  ones = jax.tree.map(lambda p, m: np.full(np.shape(p), float(m)), init.g_params, mask)
  exempt = {n.rsplit(".in_proj_", 1)[0] + ".in_proj_bias" if ".in_proj_bias." in n else n
            for n, m in _published(table, ones).items() if not m.any()}  # fmt: skip
  assert exempt == {str(n) for n in gold["no_decay_names"]}
