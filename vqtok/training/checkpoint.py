"""Orbax checkpoints: train state plus data-iterator position, atomically.

Orbax writes each checkpoint into a temporary directory and renames it only
once every file is complete, so a run killed mid-save leaves the previous
checkpoint as the latest one; leftover temporary directories are removed on the
next start. Each save is waited for, so that a failed one (a full disk, no
permission) stops the run at once with ``CheckpointSaveError`` naming the
path and the free space, and the previous checkpoint stays the latest.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp


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


def _os_error(e: BaseException) -> OSError | None:
  """The OSError in ``e``'s cause chain (Orbax wraps errors of its writer threads)."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError):
      return e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


def _free_space(path: str) -> str:
  while path and not os.path.exists(path):
    path = os.path.dirname(path)
  try:
    free = shutil.disk_usage(path or ".").free
  except OSError:
    return "unknown"
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if free < 1024 or unit == "TiB":
      return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
    free /= 1024
  return "unknown"


class Checkpointer:
  """Keeps the last ``keep`` checkpoints of a run under ``directory``."""

  def __init__(self, directory: str, *, keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._failed = False
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=async_save
      ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, extra: dict[str, Any] | None = None, *, force: bool = False) -> bool:
    """Starts saving ``state`` at ``step``.

    Args:
      step: the step number (the checkpoint's directory name).
      state: a pytree of arrays (typed PRNG keys are stored as raw key data).
      extra: more Orbax items by name, e.g. ``{"data": data.checkpoint_args(it)}``.
      force: save even if the manager's policy would skip this step.
    """
    items = {"state": ocp.args.StandardSave(_unkey(state)), **(extra or {})}
    try:
      saved = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
      self._manager.wait_until_finished()
    except Exception as e:
      cause = _os_error(e)
      if cause is None:
        raise
      self._failed = True
      reason = cause.strerror or errno.errorcode.get(cause.errno or 0, "") or str(cause)
      listing = os.listdir(self.directory) if os.path.isdir(self.directory) else []
      complete = sorted(int(d) for d in listing if d.isdigit())
      newest = f"step {complete[-1]}" if complete else "none"
      raise CheckpointSaveError(
        f"saving the checkpoint of step {step} to {self.directory} failed: {reason} ({_free_space(self.directory)}"
        f" free there); the run stopped; newest complete checkpoint: {newest}"
      ) from e
    return saved

  def restore(self, state_like: Any, *, step: int | None = None, extra: dict[str, Any] | None = None) -> Any:
    """Restores into the structure, dtypes and shardings of ``state_like``.

    Items in ``extra`` (restore args, e.g. ``data.checkpoint_args(it, restore=True)``)
    are restored too when the checkpoint has them; the others are skipped.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = {"state": ocp.args.StandardRestore(_abstract_unkey(state_like))}
    items.update({k: v for k, v in (extra or {}).items() if self._has_item(step, k)})
    out = self._manager.restore(step, args=ocp.args.Composite(**items))
    return _rekey(out["state"], state_like)

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


def load_tokenizer(config: Any, directory: str, *, use_ema: bool = True, step: int | None = None):
  """Restores a trained tokenizer from a run's checkpoints.

  Args:
    config: the run's config (architecture and quantizer must match).
    directory: the checkpoint directory, or a run's workdir containing
      ``checkpoints/``.
    use_ema: take the EMA weights when the run kept them.
    step: which checkpoint (default: the newest).

  Returns:
    ``(tokenizer, step)``: an ``nnx.Module`` in eval-ready form and its step.
  """
  from vqtok import sharding  # noqa: PLC0415
  from vqtok.training import state as state_lib  # noqa: PLC0415

  if os.path.isdir(os.path.join(directory, "checkpoints")):
    directory = os.path.join(directory, "checkpoints")
  abstract, static = state_lib.abstract_train_state(config)
  rep = sharding.replicated(sharding.make_mesh((-1, 1)))
  like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), abstract)
  ckpt = Checkpointer(directory)
  try:
    restored = ckpt.restore(like, step=step)
  finally:
    ckpt.close()
  return state_lib.tokenizer_from_state(static, restored, use_ema=use_ema), int(restored.step)
