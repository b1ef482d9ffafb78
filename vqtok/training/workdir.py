"""One owner per training workdir, and a run's identity checked before anything is written.

``lock`` takes an exclusive ``flock`` on ``<workdir>/.lock`` and writes the
holder (host, pid, start time) into it. The kernel drops the lock when the
holder exits, however it exits (kill -9 included), so a stale lock is taken
over without any guessing; a second trainer on a live run refuses at once,
naming the holder. ``check_identity`` compares the requested config with the
run's saved ``config.json`` and refuses an architecture or quantizer change
before the workdir is touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator

import jax
import ml_collections

from vqtok import config as config_lib
from vqtok import files

LOCK = ".lock"


class WorkdirBusyError(RuntimeError):
  """Another live process trains in this workdir."""

  one_line = True


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds ``<workdir>/.lock`` for the duration (process 0 of a multi-process run only)."""
  if jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
      raise WorkdirBusyError(
        f"{workdir} is in use by another training run ({holder}); wait for it, stop it, or use another --workdir"
      ) from None
    info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)


def check_identity(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ValueError if ``workdir`` holds a run whose architecture or quantizer differs.

  Reads only; nothing in the workdir changes.
  """
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    return
  try:
    saved = config_lib.load_run_config(workdir)
  except (ValueError, json.JSONDecodeError) as e:
    raise ValueError(f"{workdir}/config.json is unreadable ({e}); use another --workdir") from None
  diff = config_lib.architecture_diff(saved, config)
  if diff:
    raise ValueError(
      f"{workdir} holds a run of another tokenizer ({config_lib.describe_diff(diff)}); use a new --workdir, or"
      f" fine-tune from it with --config.init_from={workdir}"
    )
  # Frozen parts have no optimizer state, so a checkpoint resumes only with the freeze list that wrote it.
  frozen = [config_lib.freeze_prefixes(c) for c in (saved, config)]
  checkpoints = os.path.join(workdir, "checkpoints")
  has_checkpoint = os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints))
  if frozen[0] != frozen[1] and has_checkpoint:
    raise ValueError(
      f"{workdir} holds a run trained with training.freeze={frozen[0]}, this config has {frozen[1]}: its"
      f" checkpoints cannot resume under another freeze list; use a new --workdir, or start from it with"
      f" --config.init_from={workdir}"
    )


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes ``config.json`` atomically (process 0)."""
  if jax.process_index() != 0:
    return
  with files.atomic_path(os.path.join(workdir, "config.json")) as tmp, open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2))
