"""Orbax checkpoints: train state plus data-iterator position, atomically.

Orbax writes each checkpoint into a temporary directory and renames it only
once every file is complete, so a run killed mid-save leaves the previous
checkpoint as the latest one; leftover temporary directories are removed on the
next start. Before a save, the free space is checked against the size it
needs; each save is then waited for, so that a failed one (a full disk, no
permission: an ``OSError`` or TensorStore's error from Orbax's writer
threads) stops the run at once with ``CheckpointSaveError`` naming the path
and the free space, its temporary files removed and the previous checkpoint
still the latest. Rotation keeps the last ``keep`` checkpoints and the newest
one the training loop judged good (``good.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from vqtok import faults, files, models, sharding


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _unkey(tree: Any) -> Any:
  """Typed PRNG keys → their raw uint32 data (what Orbax can store)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract_unkey(tree: Any) -> Any:
  def f(x):
    if _is_key(x):
      data = jax.eval_shape(jax.random.key_data, x)
      return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=getattr(x, "sharding", None))
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

  return jax.tree.map(f, tree)


def _rekey(restored: Any, like: Any) -> Any:
  # The key dtype carries its implementation; this also works when ``like``
  # holds abstract ShapeDtypeStructs rather than arrays.
  return jax.tree.map(lambda r, l: jax.random.wrap_key_data(r, impl=l.dtype._impl) if _is_key(l) else r, restored, like)


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (disk full, permission, I/O error)."""

  one_line = True  # vqtok.cli prints it as one line: a fault of the machine, not a bug

  def __str__(self) -> str:
    return str(self.args[0])


#: A save must find this many times the newest checkpoint's size free (the
#: new checkpoint is complete before the oldest is deleted; Orbax's metadata
#: and the filesystem's blocks add a little), plus ``SPACE_SLACK`` bytes.
#: 0 turns the check off.
SPACE_MARGIN = 1.25
SPACE_SLACK = 256 << 10

#: The file listing the checkpoints judged good (see ``mark_good``).
GOOD_FILE = "good.json"


def _tree_bytes(path: str) -> int:
  total = 0
  for root, _, names in os.walk(path):
    for f in names:
      with contextlib.suppress(OSError):  # removed meanwhile
        total += os.lstat(os.path.join(root, f)).st_size
  return total


def _state_bytes(state: Any) -> int:
  return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(state) if hasattr(x, "dtype"))


class Checkpointer:
  """Keeps the last ``keep`` checkpoints of a run under ``directory``, and the newest good one.

  A checkpoint is *good* once the training loop has seen the steps after it
  train soundly (``mark_good``; the list is ``good.json``). Rotation never
  deletes the newest good checkpoint, so after a divergence there is always
  one to go back to (``set_aside`` moves the newer ones out of the way).
  """

  def __init__(self, directory: str, *, keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.keep = keep
    self._failed = False
    self._failed_step: int | None = None
    faults.quiet_writer_noise()
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=None, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=async_save
      ),
    )
    try:
      with open(os.path.join(self.directory, GOOD_FILE)) as f:
        self._good = {int(s) for s in json.load(f)["good"]}
    except (OSError, ValueError, KeyError, TypeError):
      self._good = set()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  # ---- good checkpoints ----

  def good_steps(self) -> list[int]:
    """The steps judged good, of the checkpoints still here."""
    return sorted(self._good & set(self.all_steps()))

  def newest_good(self) -> int | None:
    good = self.good_steps()
    return good[-1] if good else None

  def mark_good(self, step: int) -> None:
    """Records the checkpoint of ``step`` as good, then drops checkpoints beyond the last ``keep`` and that one."""
    if step not in self.all_steps():
      return
    self._good.add(step)
    if jax.process_index() == 0:
      path = os.path.join(self.directory, GOOD_FILE)
      with files.atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump({"good": self.good_steps()}, f)
    self._rotate()

  def _rotate(self) -> None:
    steps = self.all_steps()
    kept = set(steps[-self.keep :]) | set(self.good_steps()[-1:])
    for s in steps:
      if s not in kept:
        self._manager.delete(s)

  def set_aside(self, after: int | None) -> tuple[list[int], str]:
    """Moves the checkpoints newer than step ``after`` (all, if None) to ``diverged/<after>/``.

    Returns the steps moved and where to; the newest checkpoint left is then
    ``after``, which a rerun resumes from.
    """
    moved = [s for s in self.all_steps() if after is None or s > after]
    where = os.path.join(self.directory, "diverged", str(0 if after is None else after))
    if moved and jax.process_index() == 0:
      os.makedirs(where, exist_ok=True)
      for s in moved:
        target = os.path.join(where, str(s))
        if os.path.exists(target):
          shutil.rmtree(target)
        os.replace(os.path.join(self.directory, str(s)), target)
    self._manager.reload()
    return moved, where

  # ---- saving ----

  def _check_space(self, step: int, state: Any) -> None:
    """Refuses a save that cannot fit on the disk, before anything is written."""
    if SPACE_MARGIN <= 0:
      return
    steps = self.all_steps()
    size = _tree_bytes(os.path.join(self.directory, str(steps[-1]))) if steps else _state_bytes(state)
    need = int(size * SPACE_MARGIN) + SPACE_SLACK
    free = faults.free_bytes(self.directory)
    short = free is not None and free < need
    if jax.process_count() > 1:  # every process stops, or none does
      short = bool(multihost_utils.broadcast_one_to_all(np.int32(short)))
      free = free or 0
    if short:
      raise CheckpointSaveError(
        f"not saving the checkpoint of step {step} to {self.directory}: it needs about {faults.bytes_text(need)}"
        f" and {faults.bytes_text(free)} is free there; the run stopped; {self._newest_text()}"
      )

  def _newest_text(self) -> str:
    complete = [int(d) for d in os.listdir(self.directory) if d.isdigit()] if os.path.isdir(self.directory) else []
    return f"newest complete checkpoint: step {max(complete)}" if complete else "no complete checkpoint yet"

  def _partial(self, step: int) -> list[str]:
    names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
    return [os.path.join(self.directory, n) for n in names if n.startswith(f"{step}.") and "tmp" in n]

  def _remove_partial(self, step: int) -> None:
    """Removes the temporary directory of a failed save, also what late writer threads put back into it."""
    gone_since = None
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
      partial = self._partial(step)
      for path in partial:
        shutil.rmtree(path, ignore_errors=True)
      if partial:
        gone_since = None
      elif gone_since is None:
        gone_since = time.monotonic()
      elif time.monotonic() - gone_since > 0.3:
        return
      time.sleep(0.05)

  def save(self, step: int, state: Any, extra: dict[str, Any] | None = None, *, force: bool = False) -> bool:
    """Saves ``state`` at ``step`` and waits until it is complete.

    Args:
      step: the step number (the checkpoint's directory name).
      state: a pytree of arrays (typed PRNG keys are stored as raw key data).
      extra: more Orbax items by name, e.g. ``{"data": data.checkpoint_args(it)}``.
      force: save even if the manager's policy would skip this step.

    Raises:
      CheckpointSaveError: the disk cannot hold it (checked first), or a
        write failed; its temporary files are removed, the previous
        checkpoints are untouched.
    """
    self._check_space(step, state)
    items = {"state": ocp.args.StandardSave(_unkey(state)), **(extra or {})}
    try:
      saved = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
      self._manager.wait_until_finished()
    except Exception as e:
      code = faults.write_errno(e)
      if code is None:
        raise
      self._failed = True
      self._failed_step = step
      faults.failed()
      self._remove_partial(step)
      raise CheckpointSaveError(
        f"saving the checkpoint of step {step} to {self.directory} failed: {os.strerror(code)}"
        f" ({faults.free_text(self.directory)} free there); the run stopped; {self._newest_text()}"
      ) from e
    self._rotate()
    return saved

  def restore(self, state_like: Any, *, step: int | None = None, extra: dict[str, Any] | None = None) -> Any:
    """Restores into the structure, dtypes and shardings of ``state_like``.

    Items in ``extra`` (restore args, e.g. ``data.checkpoint_args(it, restore=True)``)
    are restored too when the checkpoint has them; the others are skipped.
    """
    step = self._step(step)
    items = {"state": ocp.args.StandardRestore(_abstract_unkey(state_like))}
    items.update({k: v for k, v in (extra or {}).items() if self._has_item(step, k)})
    out = self._manager.restore(step, args=ocp.args.Composite(**items))
    return _rekey(out["state"], state_like)

  def restore_parts(self, parts_like: dict[str, Any], *, step: int | None = None) -> dict[str, Any]:
    """Restores only the train-state fields named in ``parts_like`` (e.g. ``g_params``), nothing else read."""
    abstract = _abstract_unkey(parts_like)
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
    args = ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args, partial_restore=True)
    out = self._manager.restore(self._step(step), args=ocp.args.Composite(state=args))
    return _rekey(out["state"], parts_like)

  def _step(self, step: int | None) -> int:
    """``step``, or the newest checkpoint's; FileNotFoundError when there is none."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return step

  def _has_item(self, step: int, name: str) -> bool:
    return os.path.isdir(os.path.join(self.directory, str(step), name))

  def wait(self) -> None:
    if not self._failed:
      self._manager.wait_until_finished()

  def close(self) -> None:
    try:
      self._manager.close()
    except Exception:
      if not self._failed:  # after a failed save the error was already reported
        raise
    if self._failed_step is not None:  # writer threads may have put files back since
      self._remove_partial(self._failed_step)


def load_tokenizer(config: Any, directory: str, *, use_ema: bool = True, step: int | None = None):
  """Restores a trained tokenizer from a run's checkpoints, reading only its weights.

  No optimizer or discriminator is built and their arrays are not read: the
  tokenizer's structure comes from ``config``, and the checkpoint's
  ``g_params`` (or ``ema``), ``g_rest`` and ``step`` are restored into it.

  Args:
    config: the run's config (architecture and quantizer must match).
    directory: the checkpoint directory, or a run's workdir containing
      ``checkpoints/``.
    use_ema: take the EMA weights when the run kept them.
    step: which checkpoint (default: the newest).

  Returns:
    ``(tokenizer, step)``: an ``nnx.Module`` in eval-ready form and its step.
  """
  if os.path.isdir(os.path.join(directory, "checkpoints")):
    directory = os.path.join(directory, "checkpoints")
  abstract = nnx.eval_shape(lambda: models.build_tokenizer(config, rngs=nnx.Rngs(config.seed)))
  g_def, params, rest = files.pure(abstract)
  rep = sharding.replicated(sharding.make_mesh((-1, 1)))
  placed = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), tree)
  weights = "ema" if use_ema and config.training.ema_decay > 0 else "g_params"
  like = {"step": placed(jax.ShapeDtypeStruct((), np.int32)), weights: placed(params), "g_rest": placed(rest)}
  ckpt = Checkpointer(directory)
  try:
    restored = ckpt.restore_parts(like, step=step)
  finally:
    ckpt.close()
  return nnx.merge(g_def, restored[weights], restored["g_rest"]), int(restored["step"])
