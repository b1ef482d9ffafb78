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

Tensors are compared in the published layout: vqtok's are mapped back
through the converter's own table, then reduced to each tensor's 16-number
Gaussian sketch (whose relative error tracks the tensor's; the tensors of at
most 1024 numbers are compared whole after the last step).
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import re
import zlib

import helpers
import jax
import numpy as np
import optax
import pytest
import torchfile
from flax import nnx

from vqtok import config as config_lib
from vqtok import files, models, pretrained
from vqtok.pretrained import layout as L
from vqtok.pretrained import llamagen, reader
from vqtok.training import loop
from vqtok.training.state import TrainState, abstract_train_state
from vqtok.training.step import make_train_step

ROOT = pathlib.Path(helpers.ROOT)
GOLD = ROOT / "tests" / "goldens" / "train_llamagen"
TOKENIZER = ROOT / "tests" / "goldens" / "llamagen" / "reduced.pt"
PHOTOS = ROOT / "tests" / "goldens" / "llamagen" / "golden.npz"

# The generator's random weights, as scripts/parity/gen_train_llamagen.py makes them.
SKETCH = 16
FULL = 1024
VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)

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

# LlamaGen's NLayerDiscriminator (discriminator_patchgan.py): main.0 conv, then
# (conv, BatchNorm, LeakyReLU) x 3, then the output conv; BatchNorm's running
# statistics are not used in training mode.
D_TABLE = (
  *L.torch_conv(r"main\.0", "conv_in"),
  *L.torch_conv(r"main\.(2|5|8)", lambda i: f"convs.{(int(i) - 2) // 3}"),
  *L.torch_norm(r"main\.(3|6|9)", lambda i: f"norms.{(int(i) - 3) // 3}"),
  *L.torch_conv(r"main\.11", "conv_out"),
)
D_IGNORE = (r"main\.\d+\.(running_mean|running_var|num_batches_tracked)",)


def vgg_weights(seed: int) -> dict[str, np.ndarray]:
  rs = np.random.RandomState(seed)
  out, cin = {}, 3
  for i, cout in zip(VGG_CONVS, VGG_WIDTHS):
    out[f"features.{i}.weight"] = (rs.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)
    out[f"features.{i}.bias"] = (0.05 * rs.standard_normal(cout)).astype(np.float32)
    cin = cout
  return out


def lin_weights(seed: int) -> dict[str, np.ndarray]:
  rs = np.random.RandomState(seed + 1)
  return {
    f"lin{l}.model.1.weight": (0.1 * np.abs(rs.standard_normal((1, c, 1, 1)))).astype(np.float32)
    for l, c in enumerate(LPIPS_CHANNELS)
  }


@functools.cache
def sketch_matrix(name: str, n: int) -> np.ndarray:
  rs = np.random.RandomState(zlib.crc32(name.encode()))
  return rs.standard_normal((SKETCH, n)) / np.sqrt(SKETCH)


def _flat(tree) -> dict[str, np.ndarray]:
  return {files.name(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _to_published(tensors: dict[str, np.ndarray], table, shapes: dict[str, tuple[int, ...]], ignore=()):
  """vqtok arrays by path -> float64 arrays flattened in the published layout, by published name.

  Each layout change of a converter table only moves elements, so applying it
  to the published indices tells where each vqtok element came from.
  """
  compiled = [(re.compile(r.pattern), r) for r in table]
  out = {}
  for name, shape in shapes.items():
    if any(re.fullmatch(p, name) for p in ignore):
      continue
    hits = [(m, r) for c, r in compiled if (m := c.fullmatch(name))]
    assert len(hits) == 1, name
    m, rule = hits[0]
    where = np.asarray(rule.layout(np.arange(int(np.prod(shape))).reshape(shape)))
    flat = np.empty(where.size, np.float64)
    flat[where.reshape(-1)] = np.asarray(tensors[rule.path(m)], np.float64).reshape(-1)
    out[name] = flat
  return out


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


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module")
def lpips_npz(tmp_path_factory):
  """Random LPIPS weights in the torchvision / lpips layouts, converted by scripts/convert_lpips.py."""
  vgg, lin = vgg_weights(0), lin_weights(0)
  total = sum(np.sum(v, dtype=np.float64) for v in [*vgg.values(), *lin.values()])
  np.testing.assert_allclose(total, np.load(GOLD / "golden.npz")["lpips_checksum"], rtol=1e-12)
  d = tmp_path_factory.mktemp("lpips")
  torchfile.save(vgg, str(d / "vgg16.pth"))
  torchfile.save(lin, str(d / "vgg.pth"))
  spec = importlib.util.spec_from_file_location("convert_lpips", ROOT / "scripts" / "convert_lpips.py")
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  # The script reads .pth files with torch, which this environment lacks; vqtok's own
  # torch-free reader reads the same files.
  script.read_torch_state_dict = reader.read_checkpoint
  script.main([str(d / "vgg16.pth"), str(d / "vgg.pth"), str(d / "lpips.npz")])
  return str(d / "lpips.npz")


@pytest.fixture(scope="module")
def run(lpips_npz):
  """vqtok's step over the golden's batches: (golden, per-step metrics and states, initial state, tables)."""
  gold = np.load(GOLD / "golden.npz")
  tok, tok_config, _ = pretrained.convert("llamagen", str(TOKENIZER))
  config = _config(tok_config, lpips_npz, int(gold["disc_start"]), float(gold["ema_decay"]))
  _, static = abstract_train_state(config)

  _, g_params, g_rest = nnx.split(tok, nnx.Param, ...)
  g_params, g_rest = g_params.to_pure_dict(), g_rest.to_pure_dict()
  disc = models.build_discriminator(config.discriminator, image_size=config.image_size, rngs=nnx.Rngs(0))
  d_torch = reader.read_checkpoint(str(GOLD / "d_init.pt"))["discriminator"]
  _, d_params, d_rest = nnx.split(disc, nnx.Param, ...)
  d_params, d_rest = d_params.to_pure_dict(), d_rest.to_pure_dict()
  want = {k: v.shape for k, v in _flat(d_params).items()}
  for path, value in L.apply_rules(d_torch, D_TABLE, want, ignore=D_IGNORE, source="d_init.pt").items():
    *head, leaf = path.split(".")
    node = d_params
    for part in head:
      node = node[int(part) if part.isdigit() and int(part) in node else part]
    node[leaf] = jax.numpy.asarray(value)

  state = TrainState(
    step=jax.numpy.zeros((), jax.numpy.int32),
    g_params=g_params,
    g_rest=g_rest,
    g_opt=static.g_tx.init(g_params),
    d_params=d_params,
    d_rest=d_rest,
    d_opt=static.d_tx.init(d_params),
    ema=jax.tree.map(jax.numpy.copy, g_params),
    lecam={"real": jax.numpy.zeros(()), "fake": jax.numpy.zeros(())},
  )
  init = state
  perceptual_fn, perceptual_params = loop._perceptual(config)
  photos = np.load(PHOTOS)["x"].transpose(0, 2, 3, 1)  # the reference's NCHW -> NHWC
  steps, out = {}, []
  for s in range(int(config.training.num_steps)):
    with_gan = config.loss.gan_weight > 0 and s >= config.loss.disc_start  # as vqtok.training.loop does
    if with_gan not in steps:
      fn = make_train_step(config, static, with_gan=with_gan, perceptual=perceptual_fn, return_grads=True)
      steps[with_gan] = jax.jit(fn)
    batch = {"image": jax.numpy.asarray(photos[gold[f"step{s}/photos"]])}
    state, metrics = steps[with_gan](state, batch, perceptual_params)
    out.append((with_gan, jax.device_get(metrics), jax.device_get(state)))

  g_shapes = {k: v.shape for k, v in reader.read_checkpoint(str(TOKENIZER))["model"].items()}
  g_shapes = {k: g_shapes[k] for k in gold["g_names"]}
  d_shapes = {k: d_torch[k].shape for k in gold["d_names"]}
  tables = {"g": (llamagen.table(config), g_shapes), "d": (D_TABLE, d_shapes)}
  return gold, out, jax.device_get(init), tables


def _published(tables, which, tree):
  table, shapes = tables[which]
  return _to_published(_flat(tree), table, shapes)


def _sketch_error(gold, prefix, tensors, *, skip=()) -> tuple[float, str]:
  """Largest relative error of a tensor's sketch, and that tensor's name."""
  worst, where = 0.0, ""
  for i, (name, x) in enumerate(tensors.items()):
    if name in skip:
      continue
    ref = gold[f"{prefix}/sketch"][i].astype(np.float64)
    err = _rel(sketch_matrix(name, x.size) @ x, ref)
    if err > worst:
      worst, where = err, name
  return worst, where


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


def _zero_grad(gold) -> set[str]:
  steps = range(len([k for k in gold.files if k.endswith("/g_grad/global_norm")]))
  norms = [gold[f"step{s}/g_grad/norm"] / gold[f"step{s}/g_grad/global_norm"] for s in steps]
  return {str(n) for i, n in enumerate(gold["g_names"]) if all(r[i] < ZERO_GRAD for r in norms)}


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


def _check_gradients(gold, s, with_gan, metrics, tables, zero):
  for which, rtol in (("g", RTOL_G_GRAD), ("d", RTOL_D_GRAD)):
    if which == "d" and not with_gan:  # the zero-loss step
      assert metrics["grads"]["d"], "the discriminator's optimizer took no step before disc_start"
      assert not any(np.any(g) for g in jax.tree.leaves(metrics["grads"]["d"]))
      continue
    grads = _published(tables, which, metrics["grads"][which])
    total = np.linalg.norm([np.linalg.norm(x) for x in grads.values()])
    np.testing.assert_allclose(total, gold[f"step{s}/{which}_grad/global_norm"], rtol=RTOL_GRAD_NORM)
    for name in zero & set(grads):
      assert np.linalg.norm(grads[name]) < ZERO_GRAD * total, name
    err, where = _sketch_error(gold, f"step{s}/{which}_grad", grads, skip=zero)
    assert err < rtol, f"{which} gradient of {where}: relative error {err:.2e}"


def _deltas(tables, which, after, before):
  a, b = _published(tables, which, after), _published(tables, which, before)
  return {k: a[k] - b[k] for k in a}


def _check_weights(gold, s, state, init, tables, zero):
  for group, which, after, before in (
    ("g_delta", "g", state.g_params, init.g_params),
    ("ema_delta", "g", state.ema, init.g_params),
    ("d_delta", "d", state.d_params, init.d_params),
  ):
    delta = _deltas(tables, which, after, before)
    err, where = _sketch_error(gold, f"step{s}/{group}", delta, skip=zero)
    assert err < RTOL_DELTA[group], f"{group} of {where}: relative error {err:.2e}"
    # The weights themselves: the change's error against the weights' size.
    weights = _published(tables, which, after)
    for i, (name, x) in enumerate(delta.items()):
      if name not in zero:
        diff = np.linalg.norm(sketch_matrix(name, x.size) @ x - gold[f"step{s}/{group}/sketch"][i])
        assert diff < RTOL_PARAM * np.linalg.norm(weights[name]), f"{group}: {name}"


def _check_small_tensors_whole(gold, s, metrics, state, init, tables, zero):
  groups = {
    "g_grad": (_published(tables, "g", metrics["grads"]["g"]), RTOL_G_GRAD),
    "d_grad": (_published(tables, "d", metrics["grads"]["d"]), RTOL_D_GRAD),
    "g_delta": (_deltas(tables, "g", state.g_params, init.g_params), RTOL_DELTA["g_delta"]),
    "ema_delta": (_deltas(tables, "g", state.ema, init.g_params), RTOL_DELTA["ema_delta"]),
    "d_delta": (_deltas(tables, "d", state.d_params, init.d_params), RTOL_DELTA["d_delta"]),
  }
  for group, (tensors, rtol) in groups.items():
    small = [(n, x) for n, x in tensors.items() if x.size <= FULL]
    ours = np.concatenate([x for _, x in small])
    keep = np.concatenate([np.full(x.size, n not in zero) for n, x in small])
    ref = gold[f"step{s}/{group}/full"]
    assert ref.shape == ours.shape
    err = _rel(ours[keep], ref[keep])
    assert err < rtol, f"{group}: relative error {err:.2e}"


@pytest.mark.slow
def test_three_steps_match_llamagen(run):
  """One test, so the steps are compiled and run once (xdist splits separate tests).

  About 75 s on two cores, nearly all XLA compilation: the two step variants
  (with LPIPS's VGG16 forward and backward), the converter's initialisation.
  """
  gold, out, init, tables = run
  _check_schedule(gold, out)
  zero = _zero_grad(gold)
  assert len(zero) == N_ZERO_GRAD and all(n.endswith(".bias") for n in zero), sorted(zero)
  for s, (with_gan, metrics, state) in enumerate(out):
    _check_losses(gold, s, with_gan, metrics)
    _check_gradients(gold, s, with_gan, metrics, tables, zero)
    _check_weights(gold, s, state, init, tables, zero)
  s = len(out) - 1
  _check_small_tensors_whole(gold, s, out[s][1], out[s][2], init, tables, zero)
