"""The training loop: ``train_and_evaluate(config, workdir)``.

Resumes automatically from the newest checkpoint in ``workdir``; logs to a
progress bar, ``metrics.jsonl`` and TensorBoard; writes PNG grids of originals
over reconstructions; stops on a non-finite loss naming the step and the term,
with the last good checkpoint left intact.
"""

from __future__ import annotations

import collections
import functools
import glob
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tensorboardX import SummaryWriter

from vqtok import config as config_lib
from vqtok import feature_teacher, files, models, sharding
from vqtok import images as images_lib
from vqtok import load as load_lib
from vqtok import progress as progress_lib
from vqtok.data import pipeline
from vqtok.evaluation import reconstruct as reconstruct_lib
from vqtok.losses import perceptual
from vqtok.quantizers.base import ScheduleStep
from vqtok.training import checkpoint as ckpt_lib
from vqtok.training import teacher as teacher_lib
from vqtok.training import workdir as workdir_lib
from vqtok.training.state import Static, TrainState, init_train_state
from vqtok.training.step import make_train_step


class NonFiniteLossError(FloatingPointError):
  """Raised when a loss term, or the weights about to be saved, become NaN, Inf or huge."""

  one_line = True


#: Weights beyond this magnitude have diverged (trained tokenizers stay below ~1e2).
MAX_ABS_WEIGHT = 1e6


@jax.jit
def _weight_stats(trees) -> tuple[jax.Array, jax.Array]:
  leaves = [x for x in jax.tree.leaves(trees) if jnp.issubdtype(x.dtype, jnp.floating)]
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
  largest = jnp.max(jnp.stack([jnp.max(jnp.abs(jnp.where(jnp.isfinite(x), x, 0))) for x in leaves]))
  return finite, largest


def weights_problem(state: TrainState) -> str:
  """Why the weights of ``state`` must not be saved ("" when they are fine)."""
  finite, largest = jax.device_get(_weight_stats((state.g_params, state.ema, state.d_params)))
  if not finite:
    return "are not finite"
  if largest > MAX_ABS_WEIGHT:
    return f"have diverged (max |w| = {float(largest):.3g} > {MAX_ABS_WEIGHT:.0e})"
  return ""


#: How the loop judges a checkpoint good (see ``_Health``): the step after it
#: has a finite reconstruction loss at most SPIKE_FACTOR times its running
#: mean, and the step that made it moved the weights by at most
#: MAX_UPDATE_RATIO times their norm, to a norm at most NORM_FACTOR times
#: its running mean. Running means decay by RUNNING_DECAY per sampled step.
SPIKE_FACTOR = 10.0
NORM_FACTOR = 10.0
MAX_UPDATE_RATIO = 1.0
RUNNING_DECAY = 0.9


class _Health:
  """Judges each checkpoint by the steps around it; good ones go to ``Checkpointer.mark_good``.

  A checkpoint is judged on the first sync after the step that follows it
  (that step trained from its weights); the metrics of that probe step stay
  on the devices until then. Judging never stops a run: only non-finite
  values or blown-up weights do, and then the run goes back to the newest
  good checkpoint.
  """

  def __init__(self, ckpt: ckpt_lib.Checkpointer):
    self.ckpt = ckpt
    self.loss_mean = self.norm_mean = None
    self.pending: tuple[int, bool] | None = None  # (checkpoint step, was the step that made it sound)
    self.probe = None  # device metrics of the step after the pending checkpoint
    latest = ckpt.latest_step()
    if latest is not None and latest not in ckpt.good_steps():
      self.pending = (latest, True)  # a resumed run judges where it resumed from

  def stepped(self, done: int, metrics: dict[str, jax.Array]) -> None:
    if self.pending is not None and self.probe is None and done == self.pending[0] + 1:
      self.probe = metrics

  def _spike(self, loss: float) -> bool:
    return not np.isfinite(loss) or (self.loss_mean is not None and loss > SPIKE_FACTOR * self.loss_mean)

  def _jump(self, host: dict[str, float]) -> bool:
    norm, ratio = host.get("param_norm", 0.0), host.get("update_ratio", 0.0)
    return not ratio <= MAX_UPDATE_RATIO or (self.norm_mean is not None and not norm <= NORM_FACTOR * self.norm_mean)

  def synced(self, host: dict[str, float]) -> None:
    """At a sync: judges the pending checkpoint if its probe step ran, then updates the running means."""
    if self.pending is not None and self.probe is not None:
      step, sound = self.pending
      probe = float(jax.device_get(self.probe["reconstruction"]))
      if sound and not self._spike(probe):
        self.ckpt.mark_good(step)
      self.pending, self.probe = None, None
    if not self._spike(host["reconstruction"]) and not self._jump(host):
      decay = lambda mean, x: x if mean is None else RUNNING_DECAY * mean + (1 - RUNNING_DECAY) * x
      self.loss_mean = decay(self.loss_mean, host["reconstruction"])
      self.norm_mean = decay(self.norm_mean, host.get("param_norm", 0.0))

  def saving(self, done: int, host: dict[str, float]) -> None:
    """Before the save of ``done`` (right after ``synced`` at that step)."""
    self.pending, self.probe = (done, not self._jump(host) and not self._spike(host["reconstruction"])), None

  def ended(self) -> None:
    """The run finished soundly: its last checkpoint has no step after it to judge by."""
    if self.pending is not None and self.pending[1]:
      self.ckpt.mark_good(self.pending[0])
    self.pending = None


def _diverged(ckpt: ckpt_lib.Checkpointer, what: str) -> str:
  """Sets aside the checkpoints newer than the newest good one; ``what`` plus where to resume from."""
  good = ckpt.newest_good()
  moved, where = ckpt.set_aside(good)
  lr = "rerun the same command with a lower --config.optimizer.lr"
  steps = f"step{'s' if len(moved) > 1 else ''} {', '.join(map(str, moved))}"
  if good is None:
    aside = f" (saved as the run diverged: {steps}, moved to {where})" if moved else ""
    return f"{what}; no checkpoint was good yet{aside}: {lr} to start afresh"
  aside = f" ({steps}, saved as the run diverged, moved to {where})" if moved else ""
  where_good = f"the newest good checkpoint is step {good} in {ckpt.directory}{aside}"
  return f"{what}; {where_good}: {lr} to resume from step {good}"


def _perceptual(config: ml_collections.ConfigDict):
  """Loads LPIPS if the config asks for it; fails early without weights."""
  if config.loss.perceptual_weight <= 0:
    return None, None
  if not config.loss.lpips_weights:
    raise ValueError(
      "loss.perceptual_weight > 0 needs LPIPS weights: set --config.loss.lpips_weights="
      "PATH.npz (convert them with scripts/convert_lpips.py), or set "
      "--config.loss.perceptual_weight=0"
    )
  return perceptual.pure_lpips(perceptual.load_lpips(config.loss.lpips_weights))


def check_finite(metrics: dict[str, Any], step: int) -> None:
  """Raises NonFiniteLossError naming the step and the first bad term."""
  bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
  if bad:
    order = sorted(bad, key=lambda k: (not k.startswith("loss/"), k))
    raise NonFiniteLossError(
      f"non-finite value at step {step} in {', '.join(order)} "
      f"(values: {', '.join(f'{k}={float(metrics[k]):.4g}' for k in order)})"
    )


def init_from(config: ml_collections.ConfigDict, state: TrainState, static: Static, shardings: Any) -> TrainState:
  """``state`` with the tokenizer weights of ``config.init_from`` (a tokenizer directory or a run).

  The discriminator and the optimizer stay fresh and the step stays 0 (loss
  schedules' ``ScheduleStep`` counters too); EMA
  weights start at the loaded ones. The architecture must be the same
  (compute dtype and, for CNNs, image size may differ).
  """
  loaded, saved, _ = load_lib.load(config.init_from)
  ignore = {"model.dtype"} | ({"image_size"} if config.model.encoder == "cnn" else set())
  diff = [f for f in config_lib.architecture_diff(saved, config) if f not in ignore and f.startswith("model.")]
  if diff:
    raise ValueError(
      f"config.init_from={config.init_from}: its architecture differs ({config_lib.describe_diff(diff)}); start"
      f" from its config (python -m vqtok.export writes it to config.json) and override only training fields"
    )
  tokenizer = nnx.merge(static.g_def, state.g_params, state.g_rest)
  # Loss schedules (FSQ's entropy annealing) restart with the step, on either side.
  weights = nnx.All(nnx.Not(nnx.RngState), nnx.Not(ScheduleStep))
  files.assign(tokenizer, files.arrays(loaded, weights), source=config.init_from, what=weights)
  return _with_tokenizer(state, tokenizer, shardings)


def read_teacher(config: ml_collections.ConfigDict) -> tuple[Any, Any, nnx.Module] | None:
  """``teacher.load``'s result for ``config.teacher``, checked against the model's shapes (None without one)."""
  if not config.get("teacher", ""):
    return None
  student = nnx.eval_shape(lambda: models.build_tokenizer(config, rngs=nnx.Rngs(0)))
  return teacher_lib.load(config, student)


def read_feature_teacher(config: ml_collections.ConfigDict) -> tuple[Any, Any] | None:
  """``feature_teacher.load_for``'s result for ``config.feature_teacher`` when a feature loss is on (else None).

  With ``config.feature_teachers`` (one per semantic head): ``((teacher, ...), [arrays, ...])`` in
  the heads' order, each checked against its head; ``config.feature_teacher`` then serves only the
  patch-feature losses, which are not on together with them (the config's check).
  """
  loss = config.loss
  patches = max(loss.get("vf_weight", 0.0), loss.get("feature_rec_weight", 0.0)) > 0
  semantic = loss.get("semantic_weight", 0.0) > 0
  per_head = semantic and bool(config.get("feature_teachers", ()))
  if not (config.get("feature_teacher", "") or per_head) or not (patches or semantic):
    return None
  student = nnx.eval_shape(lambda: models.build_tokenizer(config, rngs=nnx.Rngs(0)))
  if per_head:
    loaded = [
      feature_teacher.load_for(config, student, patches=False, semantic=True, head=i)
      for i in range(len(config.feature_teachers))
    ]
    return tuple(t for t, _ in loaded), [a for _, a in loaded]
  return feature_teacher.load_for(config, student, patches=patches, semantic=semantic)


def start_from_teacher(
  config: ml_collections.ConfigDict, state: TrainState, static: Static, shardings: Any, module: nnx.Module
) -> TrainState:
  """``state`` with the teacher's codebook and decoder copied into the student's proxy-code decoder; EMA follows.

  For a fresh start only: a resumed run has them in its checkpoint.
  """
  student = nnx.merge(static.g_def, state.g_params, state.g_rest)
  teacher_lib.fill_proxy_decoder(student, module, config.teacher)
  return _with_tokenizer(state, student, shardings)


def _with_tokenizer(state: TrainState, tokenizer: nnx.Module, shardings: Any) -> TrainState:
  """``state`` holding ``tokenizer``'s weights, its EMA (if kept) restarted at them, placed by ``shardings``."""
  _, params, rest = files.pure(tokenizer)
  ema = jax.tree.map(jnp.copy, params) if state.ema else state.ema
  return jax.device_put(state.replace(g_params=params, g_rest=rest, ema=ema), shardings)


#: Batches placed on the devices ahead of the step that uses them.
PREFETCH = 2


def _no_bad(metrics: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
  return jnp.int32(-1), jax.tree.map(jnp.zeros_like, metrics)


@jax.jit
def _watch(watch, metrics: dict[str, jax.Array], step: jax.Array):
  """(first non-finite step or -1, its metrics), updated on the devices without a host sync."""
  first_bad, bad = watch
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
  new = (first_bad < 0) & ~finite
  return jnp.where(new, step, first_bad), jax.tree.map(lambda b, m: jnp.where(new, m, b), bad, metrics)


class _Writer:
  """Metrics to metrics.jsonl and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115  (closed in close())
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, values: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
    self._jsonl.flush()
    for k, v in values.items():
      self._tb.add_scalar(k, v, step)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
  """Trains (or resumes) a tokenizer as configured; returns a summary dict.

  Before anything is written: the workdir must hold no run of another
  architecture, no other live trainer, the batch sizes must divide over
  the devices, and a teacher (``config.teacher``) must be readable and fit
  the model.
  """
  mesh = sharding.make_mesh(config.training.mesh)
  config_lib.check_devices(config, mesh.size)
  workdir_lib.check_identity(config, workdir)
  teacher = read_teacher(config)  # a wrong or unreadable teacher stops the run here
  features = read_feature_teacher(config)  # and so does a feature teacher
  os.makedirs(workdir, exist_ok=True)
  with workdir_lib.lock(workdir):
    workdir_lib.check_identity(config, workdir)  # again, now that no one else can write it
    workdir_lib.write_config(config, workdir)
    return _train(config, workdir, mesh, progress=progress, teacher=teacher, features=features)


def every(step: int, n: int, last: int | None = None) -> bool:
  """Whether a task done every ``n`` steps is due after ``step`` steps (big_vision's ``itstime``).

  Due at each multiple of ``n`` (0 included: before the first step) and at
  ``last``, the run's final step, so that a run's end is always logged,
  evaluated and saved; ``n <= 0`` means never, not even at ``last``.
  """
  return n > 0 and (step % n == 0 or step == last)


class _Run(NamedTuple):
  """What the parts of a run read and never rebind."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  ckpt: ckpt_lib.Checkpointer
  writer: _Writer
  bar: Any  # progress.bar's
  eval_fn: Callable  # reconstruct.make_reconstruct_fn's


def _train(
  config: ml_collections.ConfigDict, workdir: str, mesh: Any, *, progress: bool, teacher=None, features=None
) -> dict[str, Any]:
  """``train_and_evaluate`` inside the workdir's lock: the state, data and outputs, the steps, the summary."""
  tc = config.training
  state, static = init_train_state(config, lambda a: sharding.state_shardings(a, mesh))
  state_sh = jax.tree.map(lambda x: x.sharding, state)
  perceptual_fn, perceptual_params = _perceptual(config)

  train_iter = pipeline.make_dataset(config, split="train", batch_size=tc.batch_size, seed=config.seed)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints)
  state, teacher, teacher_arrays = _starting_state(config, state, static, state_sh, mesh, ckpt, train_iter, teacher)
  start = int(state.step)
  feature_def, feature_arrays = features if features is not None else (None, None)
  if feature_arrays is not None:
    feature_arrays = jax.device_put(feature_arrays, sharding.replicated(mesh))
  compile_step = functools.partial(_compile_step, config, static, mesh, state_sh, perceptual_fn, teacher, feature_def)

  eval_fn = reconstruct_lib.make_reconstruct_fn(static.g_def, mesh)
  writer = _Writer(workdir)
  summary: dict[str, Any] = {"start_step": start, "evals": []}
  # smoothing=0: the ETA from the average step time (evals would make a moving rate jump).
  bar = progress_lib.bar(
    tc.num_steps, "train", show=progress and jax.process_index() == 0, initial=start, smoothing=0.0
  )
  run = _Run(config, workdir, mesh, ckpt, writer, bar, eval_fn)
  try:
    step_args = (perceptual_params, teacher_arrays, feature_arrays)
    state, summary["final_metrics"] = _run_steps(run, summary, state, start, train_iter, compile_step, step_args)
  except NonFiniteLossError as e:
    raise NonFiniteLossError(_diverged(ckpt, str(e))) from None
  finally:
    bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
  summary["final_step"] = int(state.step)
  # From the run's own records, so a rerun of a finished run reports the same.
  summary["evals"] = _recorded_evals(workdir) or summary["evals"]
  pngs = sorted(glob.glob(os.path.join(workdir, "images", "step_*.png")))
  if pngs and "last_image" not in summary:
    summary["last_image"] = pngs[-1]
  return summary


def _starting_state(
  config: ml_collections.ConfigDict,
  state: TrainState,
  static: Static,
  state_sh: Any,
  mesh: Any,
  ckpt: ckpt_lib.Checkpointer,
  train_iter: Any,
  teacher: tuple[Any, Any, nnx.Module] | None,
) -> tuple[TrainState, Any, Any]:
  """(the state to train from, the teacher, the teacher's arrays on the devices).

  Resumed from the newest checkpoint in ``ckpt`` (``train_iter`` moves to
  its data position), else the weights of ``config.init_from``, else fresh
  with the teacher's proxy decoder. ``teacher`` is ``read_teacher``'s
  result; without one, both teacher values are None.
  """
  start = ckpt.latest_step()
  if start is not None:
    state = ckpt.restore(state, extra={"data": pipeline.checkpoint_args(train_iter, restore=True)})
    print(f"Resumed from step {start} in {ckpt.directory}", file=sys.stderr)
  elif config.get("init_from", ""):
    state = init_from(config, state, static, state_sh)
    print(f"Starting from the weights of {config.init_from}", file=sys.stderr)
  if teacher is None:
    return state, None, None
  teacher, teacher_arrays, module = teacher
  if start is None:
    state = start_from_teacher(config, state, static, state_sh, module)
  return state, teacher, jax.device_put(teacher_arrays, sharding.replicated(mesh))


def gan_phase(config: ml_collections.ConfigDict, step: int) -> tuple[bool, bool]:
  """(the generator's GAN term is on, the discriminator trains) at 0-based ``step``."""
  lc = config.loss
  on = lc.gan_weight > 0
  return on and step >= lc.disc_start, on and step >= lc.disc_start - lc.get("disc_update_lead", 0)


def _compile_step(
  config: ml_collections.ConfigDict,
  static: Static,
  mesh: Any,
  state_sh: Any,
  perceptual_fn: Callable | None,
  teacher: Any,
  feature_def: Any,
  gan: tuple[bool, bool],
) -> Callable:
  """The jitted step, with or without the GAN terms: ``(state, batch, perceptual, teacher, features) -> ...``.

  ``gan``: (the generator's GAN term, the discriminator's update), as ``gan_phase`` gives them.
  """
  with_gan, train_disc = gan
  fn = make_train_step(
    config,
    static,
    with_gan=with_gan,
    train_disc=train_disc,
    perceptual=perceptual_fn,
    teacher=teacher,
    feature_teacher=feature_def,
  )
  rep = sharding.replicated(mesh)
  return jax.jit(
    fn,
    in_shardings=(state_sh, sharding.batch_sharding(mesh), rep, rep, rep),
    out_shardings=(state_sh, sharding.replicated(mesh)),
    donate_argnums=0,
  )


def _run_steps(
  run: _Run,
  summary: dict[str, Any],
  state: TrainState,
  start: int,
  train_iter: Any,
  compile_step: Callable[[tuple[bool, bool]], Callable],
  step_args: tuple[Any, Any, Any],
) -> tuple[TrainState, dict[str, float] | None]:
  """Trains from step ``start`` to the end; returns the final state and metrics (None when no step ran).

  Logs, evaluates, writes image grids and saves where ``every`` says, adding
  evals and the last image to ``summary``; raises NonFiniteLossError at the
  first sync after a non-finite step.
  """
  config, bar = run.config, run.bar
  tc = config.training
  clock = (time.perf_counter(), start)  # (time, step) of the last log
  if start == 0 and every(0, tc.eval_every):
    _evaluate(run, summary, state, 0)
  steps: dict[tuple[bool, bool], Callable] = {}  # gan_phase -> its compiled step
  # Batches go to the devices PREFETCH steps ahead, each with the data
  # position from before it was read: a checkpoint after step k saves the
  # position of batch k + 1, so a resume reads exactly what comes next.
  ahead: collections.deque = collections.deque()
  # Non-finite metrics are tracked on the devices (the first bad step and its
  # metrics) and fetched only where the loop syncs anyway: logging, eval,
  # images, checkpoints. No step waits for the host otherwise.
  metrics = watch = None
  health = _Health(run.ckpt)
  for step in range(start, tc.num_steps):
    _refill(ahead, train_iter, run.mesh)
    _, batch = ahead.popleft()
    gan = gan_phase(config, step)
    compiling = gan not in steps
    if compiling:
      if watch is not None:  # the new step's metrics have other keys: settle the old ones first
        _sync(metrics, watch, health)
        watch = None
      steps[gan] = compile_step(gan)
      bar.set_description("train (compiling)")
    state, metrics = steps[gan](state, batch, *step_args)
    watch = _watch(watch if watch is not None else _no_bad(metrics), metrics, jnp.int32(step + 1))
    done = step + 1
    health.stepped(done, metrics)
    if compiling and not bar.disable:  # the ETA counts steps, not compilation
      jax.block_until_ready(metrics)
      bar.set_description("train", refresh=False)
      progress_lib.restart_rate(bar)
    bar.update(1)
    log = every(done, tc.log_every, last=tc.num_steps)
    evaluate = every(done, tc.eval_every, last=tc.num_steps)
    image = every(done, tc.image_every, last=tc.num_steps)
    save = every(done, tc.checkpoint_every, last=tc.num_steps)
    if log or evaluate or image or save:
      host = _sync(metrics, watch, health)
      bar.set_postfix(loss=f"{host['loss']:.4f}", refresh=False)
      if log:
        clock = _log(run, done, host, clock)
    if evaluate:
      _evaluate(run, summary, state, done)
    if image:
      _write_image(run, summary, state, done)
    if save:
      _save(run, state, done, host, health, ahead, train_iter)
  final = None if metrics is None else _sync(metrics, watch, health)
  health.ended()
  return state, final


def _refill(ahead: collections.deque, train_iter: Any, mesh: Any) -> None:
  """Reads batches onto the devices until ``PREFETCH`` wait in ``ahead``, each as (data position before it, batch)."""
  while len(ahead) < PREFETCH:
    pos = pipeline.position(train_iter)
    ahead.append((pos, sharding.global_batch({"image": next(train_iter)["image"]}, mesh)))


def _sync(metrics: dict[str, jax.Array], watch: Any, health: _Health) -> dict[str, float]:
  """Fetches the newest metrics and raises if any step so far was non-finite."""
  host, (first_bad, bad) = jax.device_get((metrics, watch))
  if int(first_bad) >= 0:
    check_finite(bad, int(first_bad))
  host = {k: float(v) for k, v in host.items()}
  health.synced(host)
  return host


def _log(run: _Run, done: int, host: dict[str, float], clock: tuple[float, int]) -> tuple[float, int]:
  """Writes the metrics of step ``done`` with the images per second since ``clock``; returns the new clock."""
  now = time.perf_counter()
  t_last, step_last = clock
  rate = (done - step_last) * run.config.training.batch_size / max(now - t_last, 1e-9)
  run.writer.write(done, {**host, "images_per_second": rate})
  return now, done


def _eval_params(config: ml_collections.ConfigDict, state: TrainState) -> Any:
  return state.ema if (config.eval.use_ema and state.ema) else state.g_params


def _eval_batches(config: ml_collections.ConfigDict) -> Any:
  return pipeline.make_dataset(config, split="eval", batch_size=config.eval.batch_size)


def _evaluate(run: _Run, summary: dict[str, Any], state: TrainState, step: int) -> None:
  """The eval PSNR at ``step``: to the metrics, ``summary["evals"]`` and the terminal."""
  params = _eval_params(run.config, state)
  res = {"psnr": reconstruct_lib.mean_psnr(run.eval_fn, params, state.g_rest, run.mesh, _eval_batches(run.config))}
  run.writer.write(step, {f"eval/{k}": v for k, v in res.items()})
  summary["evals"].append({"step": step, **res})
  run.bar.write(f"step {step}: eval PSNR {res['psnr']:.2f} dB")


def _write_image(run: _Run, summary: dict[str, Any], state: TrainState, done: int) -> None:
  """The first eval batch over its reconstructions, to ``images/step_<done>.png`` (``summary["last_image"]``)."""
  # Every process runs the (global) computation; process 0 writes.
  params, fixed = _eval_params(run.config, state), next(iter(_eval_batches(run.config)))
  grid = reconstruct_lib.reconstruction_grid(run.eval_fn, params, state.g_rest, run.mesh, fixed)
  if jax.process_index() == 0 and grid is not None:
    summary["last_image"] = images_lib.save_png(grid, os.path.join(run.workdir, "images", f"step_{done:06d}.png"))


def _save(
  run: _Run,
  state: TrainState,
  done: int,
  host: dict[str, float],
  health: _Health,
  ahead: collections.deque,
  train_iter: Any,
) -> None:
  """Checkpoints step ``done`` with the data position of the next batch; ``host``: its synced metrics."""
  # Never save weights that blew up: the newest checkpoint must resume.
  problem = weights_problem(state)
  if problem:
    raise NonFiniteLossError(f"the weights at step {done} {problem}, so they were not saved")
  _refill(ahead, train_iter, run.mesh)
  health.saving(done, host)
  run.ckpt.save(done, state, {"data": pipeline.checkpoint_args(train_iter, position=ahead[0][0])})


def _recorded_evals(workdir: str) -> list[dict[str, Any]]:
  """The eval records of ``metrics.jsonl`` (the last one of each step), in step order."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  found: dict[int, dict[str, Any]] = {}
  with open(path) as f:
    for line in f:
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut by a kill
      if "eval/psnr" in rec:
        found[int(rec["step"])] = {"step": int(rec["step"]), "psnr": float(rec["eval/psnr"])}
  return [found[k] for k in sorted(found)]
