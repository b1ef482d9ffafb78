"""What every vqtok command line shares: absl flags, and one-line errors.

``train.py``, ``eval.py`` and ``python -m vqtok.<tool>`` all parse absl flags
(configs through ``ml_collections.config_flags``) and start with ``run(main)``.
A mistake the user can fix (a missing file, a bad value, a wrong subcommand)
ends with one ``error: ...`` line on stderr and exit status 2; ``--debug``
shows the full traceback instead. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags, logging

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
    except USER_ERRORS as e:
      if _DEBUG.value:
        raise
      message = e.args[0] if isinstance(e, KeyError) and e.args else e
      print(f"error: {message}  (--debug for the traceback)", file=sys.stderr)
      return 2

  app.run(wrapped)
