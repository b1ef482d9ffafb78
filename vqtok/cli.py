"""What every vqtok command line shares: absl flags, and one-line errors.

``train.py``, ``eval.py`` and ``python -m vqtok.<tool>`` all parse absl flags
(configs through ``ml_collections.config_flags``) and start with ``run(main)``.
A mistake the user can fix (a missing file, a bad value, a wrong subcommand)
ends with one ``error: ...`` line on stderr and exit status 2, and so does a
fault that stops a run for a reason outside the code (a full disk, a busy
workdir, a diverged loss: exceptions whose class sets ``one_line = True``,
and any failed write, named by ``faults.describe``);
``--debug`` shows the full traceback instead. A bad flag is one line too.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags, logging

from vqtok import faults
from vqtok.training import distributed

_DEBUG = flags.DEFINE_bool("debug", False, "Show full tracebacks for errors.")

#: Exceptions that report a user's mistake (bad input, missing or unreadable files).
USER_ERRORS = (
  ValueError,
  FileNotFoundError,
  FileExistsError,
  NotADirectoryError,
  IsADirectoryError,
  PermissionError,
  KeyError,
)


class UsageError(ValueError):
  """A command line used wrongly (a missing or contradictory flag)."""


def quiet_logging() -> None:
  """absl WARNING level unless ``--verbosity`` was given (Orbax logs every save at INFO)."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def run(main: Callable[[list[str]], int | None]) -> None:
  """``app.run(main)`` with one-line errors for ``USER_ERRORS``."""

  def wrapped(argv: list[str]) -> int | None:
    quiet_logging()
    try:
      return main(argv)
    except Exception as e:
      one_line = isinstance(e, USER_ERRORS) or getattr(type(e), "one_line", False)
      written = None if one_line else faults.describe(e)  # a full disk, a read-only filesystem
      if _DEBUG.value or not (one_line or written):
        raise
      message = written or (e.args[0] if isinstance(e, KeyError) and e.args else e)
      print(f"error: {message}  (--debug for the traceback)", file=sys.stderr)
      return 2

  app.run(wrapped, flags_parser=_parse_flags)


def define_distributed_flags() -> None:
  """The multi-process flags of train.py, eval.py and tokenize (call at definition time)."""
  flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (auto-detect: TPU pods, SLURM).")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (explicit multi-process).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (explicit multi-process).")
  flags.DEFINE_integer("process_id", None, "This process's index (explicit multi-process).")


def start_distributed() -> None:
  """Connects to the other processes when the flags of ``define_distributed_flags`` ask for it."""
  f = flags.FLAGS
  distributed.initialize(
    multihost=f.multihost,
    coordinator_address=f.coordinator_address,
    num_processes=f.num_processes,
    process_id=f.process_id,
  )


def select_data(config, *, folder: str | None, tfds: str | None, split: str, data_dir: str) -> None:
  """Points ``config.data`` at ``--folder`` or ``--tfds``/``--split`` (neither: unchanged)."""
  if folder and tfds:
    raise UsageError("give --folder or --tfds, not both")
  if folder:
    config.data.update(source="folder", path=folder, eval_split="")
  elif tfds:
    config.data.update(source="tfds", name=tfds, path=data_dir, eval_split=split)


def config_value(holder) -> object:
  """The ConfigDict of a ``config_flags`` flag, or ValueError with one line if its file failed to load."""
  try:
    value = holder.value
    if value is not None:
      list(value.keys())  # config_flags reports a failed load only on first use
  except OSError as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    raise ValueError(f"--{holder.name}: {lines[-1] if lines else e}") from None
  return value


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config file reported in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # A config file that raised: its first line names the flag, its last the exception.
    text = f"{lines[0]} {lines[-1]}" if len(lines) > 1 and "Traceback" in str(e) else (lines or [type(e).__name__])[0]
    print(f"error: {text}  (--help for the flags)", file=sys.stderr)
    sys.exit(2)
