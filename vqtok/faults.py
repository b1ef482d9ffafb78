"""Write failures (a full disk, a read-only or failing device) in one line, without the writers' noise.

A full disk reaches vqtok in several forms: an ``OSError`` from Python's own
writes, or, from Orbax's asynchronous checkpoint writers, TensorStore's
``ValueError: RESOURCE_EXHAUSTED: Error writing ... [os_error_code='28']``
raised in one thread while dozens of others log the same failure and a
closed event loop rejects their callbacks. ``write_errno`` finds the
operating system's error number in any of these; ``describe`` turns it into
one line naming the path and the free space; ``quiet_writer_noise`` keeps the
writers' echoes of a failure that is reported anyway off the terminal.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
import threading
import warnings

#: The error numbers that mean "this write cannot be done here", not a bug.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.EACCES, errno.EPERM})

_CODE = re.compile(r"os_error_code='?(\d+)|\[Errno (\d+)\]")


def write_errno(e: BaseException | None) -> int | None:
  """The error number of a failed write in ``e`` or its causes (None if it is no such failure)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
      return e.errno
    m = _CODE.search(str(e))
    if m and int(m.group(1) or m.group(2)) in WRITE_ERRNOS:
      return int(m.group(1) or m.group(2))
    e = e.__cause__ or e.__context__
  return None


def bytes_text(n: float) -> str:
  """``n`` bytes as "512 B", "1.4 MiB", ..."""
  for unit in ("B", "KiB", "MiB", "GiB"):
    if n < 1024:
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} TiB"


def free_bytes(path: str) -> int | None:
  """Free bytes on the filesystem of ``path`` (or of its nearest existing parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  try:
    return shutil.disk_usage(path).free
  except OSError:
    return None


def free_text(path: str) -> str:
  free = free_bytes(path)
  return "unknown" if free is None else bytes_text(free)


def describe(e: BaseException, path: str | None = None) -> str | None:
  """One line for a failed write: "writing PATH failed: REASON (X free there)" (None if ``e`` is no write failure)."""
  code = write_errno(e)
  if code is None:
    return None
  path = path or getattr(e, "filename", None)
  where = f"writing {path}" if path else "a write"
  return f"{where} failed: {os.strerror(code)}" + (f" ({free_text(path)} free there)" if path else "")


# ---- the writers' noise ----

_lock = threading.Lock()
_installed = False
_failed = threading.Event()


def _is_closed_loop(exc_type, exc, tb) -> bool:
  """A TensorStore callback that found its asyncio loop closed (the loop's coroutine already failed)."""
  if exc_type is not RuntimeError or "Event loop is closed" not in str(exc):
    return False
  while tb is not None:
    if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
      return True
    tb = tb.tb_next
  return False


class _WriterNoise(logging.Filter):
  """Drops the checkpoint writers' log records about a write failure (it is reported as one line)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.WARNING:
      return True
    text = record.getMessage()
    error = record.exc_info[1] if record.exc_info else None
    full = f"{text} {error}" if error is not None else text
    # The checkpoint writers: Orbax's threads, and asyncio reporting their
    # tasks ("Task/_GatheringFuture exception was never retrieved").
    writer = "orbax" in record.pathname or record.name == "asyncio" or "OCDBT" in full or "orbax-checkpoint" in full
    if not writer:
      return True
    if text.startswith("Waiting for previous save to complete took"):
      return False  # vqtok waits for every save: the advice to checkpoint less often would mislead
    if write_errno(error) is not None or write_errno(RuntimeError(full)) is not None:
      _failed.set()
      return False
    # After a failure they report it again in other words (and the writes
    # still in flight then find their temporary directory gone).
    return not _failed.is_set()


def quiet_writer_noise() -> None:
  """Installs (once) the filters that keep a failed write's echoes off stderr; all else passes."""
  global _installed
  with _lock:
    if _installed:
      return
    _installed = True
  noise = _WriterNoise()
  for name in ("absl", "asyncio", "orbax"):
    logging.getLogger(name).addFilter(noise)
  previous_hook, previous_thread_hook, previous_unraisable = sys.excepthook, threading.excepthook, sys.unraisablehook

  def excepthook(exc_type, exc, tb):
    if not _is_closed_loop(exc_type, exc, tb):
      previous_hook(exc_type, exc, tb)

  def thread_hook(args):
    if not (_is_closed_loop(args.exc_type, args.exc_value, args.exc_traceback) or write_errno(args.exc_value)):
      previous_thread_hook(args)

  def unraisable(args):
    if not (_is_closed_loop(args.exc_type, args.exc_value, args.exc_traceback) or write_errno(args.exc_value)):
      previous_unraisable(args)

  sys.excepthook, threading.excepthook, sys.unraisablehook = excepthook, thread_hook, unraisable


def failed() -> None:
  """Marks that a write failed and was reported: the writers' later echoes are dropped too."""
  _failed.set()
  warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
