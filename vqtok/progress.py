"""The progress bar of every long command (train, eval, encode, decode), set up in one place.

A tqdm bar on stdout, as wide as the terminal, shown only where the caller
says (``progress=False``, or a process other than 0, hides it); tqdm is
imported on first use.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def bar(total: int, desc: str, *, show: bool, initial: int = 0, unit: str = "it", smoothing: float = 0.3) -> Any:
  """A ``tqdm.auto.tqdm`` of ``total`` units starting at ``initial``; a silent one unless ``show``.

  ``smoothing=0`` gives the rate and ETA of the average over the whole bar
  (tqdm's default, 0.3, follows the recent rate).
  """
  from tqdm.auto import tqdm  # noqa: PLC0415 (only the commands draw bars)

  return tqdm(
    total=total,
    initial=initial,
    disable=not show,
    desc=desc,
    unit=unit,
    smoothing=smoothing,
    dynamic_ncols=True,
    file=sys.stdout,
  )


def restart_rate(pbar: Any) -> None:
  """The rate and ETA of ``pbar`` leave out all units so far and the next one (call it before its ``update(1)``).

  For a unit that took far longer than the rest (the training step that
  compiled): tqdm has no public way to leave one out, so its clock and
  starting count are set here, the one place that knows them.
  """
  pbar.start_t = pbar.last_print_t = time.time()
  pbar.initial = pbar.n + 1
