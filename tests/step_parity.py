"""What the training-step parity tests share (tests/test_train_parity*.py).

The goldens are written by scripts/parity/gen_train_*.py through
scripts/parity/train_common.py: random LPIPS weights from frozen
``np.random.RandomState`` streams (scripts/parity/draws.py, which this module
loads too; here they are converted by the project's own
scripts/convert_lpips.py), and each tensor reduced to a 16-number Gaussian
sketch in the published layout (``sketch_matrix``), whose relative error
tracks the tensor's.

Then the shared test side: the initial train state from a converted tokenizer
and the reference's PatchGAN (``initial_state``), vqtok's jitted step over the
golden's batches (``run_steps``), and the checks of gradients, weights and
small tensors, with each family's tolerances.
"""

from __future__ import annotations

import importlib.util
import os
import re

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torchfile
from flax import nnx

from vqtok import files, models, pretrained
from vqtok.pretrained import layout as L
from vqtok.pretrained import reader
from vqtok.training import loop
from vqtok.training.state import TrainState, abstract_train_state
from vqtok.training.step import make_train_step

# The random numbers both sides draw: one numpy-only file, which the golden scripts import too.
_spec = importlib.util.spec_from_file_location("draws", os.path.join(helpers.ROOT, "scripts", "parity", "draws.py"))
draws = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(draws)
FULL = draws.FULL
vgg_weights, lin_weights, random_weights, sketch_matrix = (
  draws.vgg_weights,
  draws.lin_weights,
  draws.random_weights,
  draws.sketch_matrix,
)


def lpips_npz(directory, checksum: float, seed: int = 0) -> str:
  """Random LPIPS weights in the torchvision / lpips layouts, converted by scripts/convert_lpips.py.

  ``checksum`` is the golden's sum of every weight: it guards that both sides drew the same.
  """
  vgg, lin = vgg_weights(seed), lin_weights(seed)
  total = sum(np.sum(v, dtype=np.float64) for v in [*vgg.values(), *lin.values()])
  np.testing.assert_allclose(total, checksum, rtol=1e-12)
  d = str(directory)
  torchfile.save(vgg, os.path.join(d, "vgg16.pth"))
  torchfile.save(lin, os.path.join(d, "vgg.pth"))
  path = os.path.join(helpers.ROOT, "scripts", "convert_lpips.py")
  spec = importlib.util.spec_from_file_location("convert_lpips", path)
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  # The script reads .pth files with torch, which this environment lacks; vqtok's own
  # torch-free reader reads the same files.
  script.read_torch_state_dict = reader.read_checkpoint
  out = os.path.join(d, "lpips.npz")
  script.main([os.path.join(d, "vgg16.pth"), os.path.join(d, "vgg.pth"), out])
  return out


def flat(tree) -> dict[str, np.ndarray]:
  return {files.name(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def to_published(tensors: dict[str, np.ndarray], table, shapes: dict[str, tuple[int, ...]], ignore=()):
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
    flat_ = np.empty(where.size, np.float64)
    flat_[where.reshape(-1)] = np.asarray(tensors[rule.path(m)], np.float64).reshape(-1)
    out[name] = flat_
  return out


def rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def sketch_error(gold, prefix: str, tensors: dict[str, np.ndarray], *, skip=()) -> tuple[float, str]:
  """Largest relative error of a tensor's sketch against the golden's, and that tensor's name."""
  worst, where = 0.0, ""
  for i, (name, x) in enumerate(tensors.items()):
    if name in skip:
      continue
    ref = gold[f"{prefix}/sketch"][i].astype(np.float64)
    err = rel(sketch_matrix(name, x.size) @ x, ref)
    if err > worst:
      worst, where = err, name
  return worst, where


# ----------------------------------------------------------------------------- running vqtok's step
# taming's PatchGAN (NLayerDiscriminator, as LlamaGen and SEED-Voken copy it): main.0 conv,
# then (conv, BatchNorm, LeakyReLU) x 3, then the output conv; BatchNorm's running statistics
# are not used in training mode.
PATCHGAN_TABLE = (
  *L.torch_conv(r"main\.0", "conv_in"),
  *L.torch_conv(r"main\.(2|5|8)", lambda i: f"convs.{(int(i) - 2) // 3}"),
  *L.torch_norm(r"main\.(3|6|9)", lambda i: f"norms.{(int(i) - 3) // 3}"),
  *L.torch_conv(r"main\.11", "conv_out"),
)
PATCHGAN_IGNORE = (r"main\.\d+\.(running_mean|running_var|num_batches_tracked)",)


def initial_state(config, tok, d_torch: dict[str, np.ndarray], source: str):
  """vqtok's TrainState from a converted tokenizer and the reference's PatchGAN state dict, and its Static."""
  _, static = abstract_train_state(config)
  _, g_params, g_rest = nnx.split(tok, nnx.Param, ...)
  g_params, g_rest = g_params.to_pure_dict(), g_rest.to_pure_dict()
  disc = models.build_discriminator(config.discriminator, image_size=config.image_size, rngs=nnx.Rngs(0))
  _, d_params, d_rest = nnx.split(disc, nnx.Param, ...)
  d_params, d_rest = d_params.to_pure_dict(), d_rest.to_pure_dict()
  want = {k: v.shape for k, v in flat(d_params).items()}
  for path, value in L.apply_rules(d_torch, PATCHGAN_TABLE, want, ignore=PATCHGAN_IGNORE, source=source).items():
    *head, leaf = path.split(".")
    node = d_params
    for part in head:
      node = node[int(part) if part.isdigit() and int(part) in node else part]
    node[leaf] = jnp.asarray(value)
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    g_params=g_params,
    g_rest=g_rest,
    g_opt=static.g_tx.init(g_params),
    d_params=d_params,
    d_rest=d_rest,
    d_opt=static.d_tx.init(d_params),
    ema=jax.tree.map(jnp.copy, g_params),
    lecam={"real": jnp.zeros(()), "fake": jnp.zeros(())},
  )
  return state, static


def run_steps(config, static, state, batches):
  """vqtok's jitted train step over ``batches`` (NHWC), each variant as the loop picks it (``gan_phase``).

  Returns [((with_gan, train_disc), metrics with "grads", state after the step)] on the host.
  """
  perceptual_fn, perceptual_params = loop._perceptual(config)
  steps, out = {}, []
  for s, images in enumerate(batches):
    gan = loop.gan_phase(config, s)
    if gan not in steps:
      fn = make_train_step(
        config, static, with_gan=gan[0], train_disc=gan[1], perceptual=perceptual_fn, return_grads=True
      )
      steps[gan] = jax.jit(fn)
    state, metrics = steps[gan](state, {"image": jnp.asarray(images)}, perceptual_params)
    out.append((gan, jax.device_get(metrics), jax.device_get(state)))
  return out


# ----------------------------------------------------------------------------- comparing
def published(tables, which: str, tree) -> dict[str, np.ndarray]:
  """``tables[which] = (converter table, published shapes)``: ``tree`` in the published layout."""
  table, shapes = tables[which]
  return to_published(flat(tree), table, shapes)


def deltas(tables, which: str, after, before) -> dict[str, np.ndarray]:
  a, b = published(tables, which, after), published(tables, which, before)
  return {k: a[k] - b[k] for k in a}


def zero_grad_names(gold, threshold: float, prefix: str = "g_grad", names=None) -> set[str]:
  """Tensors whose golden gradient is below ``threshold`` of the global norm at every step (rounding noise).

  ``prefix``: the golden's gradient group; ``names``: its tensors in order (default: the generator's).
  """
  names = gold["g_names"] if names is None else names
  steps = range(len([k for k in gold.files if k.endswith(f"/{prefix}/global_norm")]))
  norms = [gold[f"step{s}/{prefix}/norm"] / gold[f"step{s}/{prefix}/global_norm"] for s in steps]
  return {str(n) for i, n in enumerate(names) if all(r[i] < threshold for r in norms)}


def check_disc_steps_early(out):
  """Before disc_start the reference's discriminator takes a step on a zero loss, and so does vqtok's."""
  is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)
  (adam,) = [x for x in jax.tree.leaves(out[0][2].d_opt, is_leaf=is_adam) if is_adam(x)]
  assert int(adam.count) == 1


def _tol(tol, key: str) -> float:
  """A tolerance given as one number or by network / group name."""
  return tol[key] if isinstance(tol, dict) else tol


def check_gradients(gold, s: int, grads_by_net, tables, zero, *, rtol: dict, rtol_norm, zero_grad: float):
  """Each network's gradient at step ``s``: the global norm, then every tensor's sketch (``zero``: only small)."""
  for which, tree in grads_by_net.items():
    grads = published(tables, which, tree)
    total = np.linalg.norm([np.linalg.norm(x) for x in grads.values()])
    np.testing.assert_allclose(total, gold[f"step{s}/{which}_grad/global_norm"], rtol=_tol(rtol_norm, which))
    for name in zero & set(grads):
      assert np.linalg.norm(grads[name]) < zero_grad * total, name
    err, where = sketch_error(gold, f"step{s}/{which}_grad", grads, skip=zero)
    assert err < rtol[which], f"{which} gradient of {where}: relative error {err:.2e}"


def weight_groups(state, init):
  """The golden's groups of weight changes: (name, network, after, before)."""
  return (
    ("g_delta", "g", state.g_params, init.g_params),
    ("ema_delta", "g", state.ema, init.g_params),
    ("d_delta", "d", state.d_params, init.d_params),
  )


def check_weights(gold, s: int, state, init, tables, zero, *, rtol_delta: dict, rtol_param):
  """The changes of the weights since the start (sketches), and the weights themselves against their norm."""
  for group, which, after, before in weight_groups(state, init):
    delta = deltas(tables, which, after, before)
    err, where = sketch_error(gold, f"step{s}/{group}", delta, skip=zero)
    assert err < rtol_delta[group], f"{group} of {where}: relative error {err:.2e}"
    weights = published(tables, which, after)
    for i, (name, x) in enumerate(delta.items()):
      if name not in zero:
        diff = np.linalg.norm(sketch_matrix(name, x.size) @ x - gold[f"step{s}/{group}/sketch"][i])
        assert diff < _tol(rtol_param, group) * np.linalg.norm(weights[name]), f"{group}: {name}"


def check_small_tensors_whole(gold, s: int, grads_by_net, state, init, tables, zero, *, rtol: dict):
  """The tensors of at most FULL numbers, whole (``rtol`` by group: g_grad, d_grad, g_delta, ...)."""
  groups = {f"{which}_grad": published(tables, which, tree) for which, tree in grads_by_net.items()}
  groups.update({group: deltas(tables, which, a, b) for group, which, a, b in weight_groups(state, init)})
  for group, tensors in groups.items():
    small = [(n, x) for n, x in tensors.items() if x.size <= FULL]
    ours = np.concatenate([x for _, x in small])
    keep = np.concatenate([np.full(x.size, n not in zero) for n, x in small])
    ref = gold[f"step{s}/{group}/full"]
    assert ref.shape == ours.shape
    err = rel(ours[keep], ref[keep])
    assert err < rtol[group], f"{group}: relative error {err:.2e}"


def delta_errors(gold, prefix: str, delta: dict[str, np.ndarray], weights: dict[str, np.ndarray], *, skip=()):
  """Worst errors of changes since the start, from their sketches: ``((relative, name), (against the weights, name))``.

  The first is each change's error against the change (``sketch_error``), the
  second against the weights' norm: the error of the weights after the steps.
  """
  worst = [(0.0, ""), (0.0, "")]
  for i, (name, x) in enumerate(delta.items()):
    if name in skip:
      continue
    ref = gold[f"{prefix}/sketch"][i].astype(np.float64)
    diff = np.linalg.norm(sketch_matrix(name, x.size) @ x - ref)
    for j, scale in enumerate((max(np.linalg.norm(ref), 1e-30), np.linalg.norm(weights[name]))):
      if diff / scale > worst[j][0]:
        worst[j] = (float(diff / scale), name)
  return tuple(worst)


def whole_error(gold, prefix: str, tensors: dict[str, np.ndarray], *, skip=()) -> float:
  """Relative error of the tensors of at most FULL numbers, whole, against the golden's (skipped ones left out)."""
  small = [(n, x) for n, x in tensors.items() if x.size <= FULL]
  ours = np.concatenate([x for _, x in small])
  keep = np.concatenate([np.full(x.size, n not in skip) for n, x in small])
  ref = gold[f"{prefix}/full"]
  assert ref.shape == ours.shape, (ref.shape, ours.shape)
  return rel(ours[keep], ref[keep])


def convert(fmt: str, path: str):
  """``vqtok.pretrained.convert``'s tokenizer and config, the model built abstractly (no eager init).

  The converter's own steps (state_dict, config, table, apply_rules); only the
  initialisation is skipped, whose op-by-op compilation costs tens of seconds.
  """
  family = pretrained.FORMATS[fmt]
  source = os.path.basename(path)
  tensors = family.state_dict(reader.read_checkpoint(path), ema=False, source=source)
  config = family.config(tensors, source)
  tok = nnx.eval_shape(lambda: models.build_tokenizer(config, rngs=nnx.Rngs(0)))
  mapped = L.apply_rules(tensors, family.table(config), files.shapes(tok), ignore=family.IGNORE, source=source)
  return files.assign(tok, mapped, source=source), config, tensors
