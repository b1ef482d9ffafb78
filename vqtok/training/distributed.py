"""Multi-process start-up: ``jax.distributed`` before any device is touched."""

from __future__ import annotations

import jax


def initialize(
  *,
  multihost: bool = False,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Connects this process to the others, if the run is multi-process.

  With ``multihost`` alone, JAX detects the cluster (TPU pods, SLURM, ...). The
  explicit form is what a localhost test uses (CPU processes reduce across
  processes with the gloo collectives).
  """
  explicit = coordinator_address is not None
  if not (multihost or explicit):
    return
  if explicit:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id")
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
      # CPU-only processes need a collectives backend for cross-process sums.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  else:
    jax.distributed.initialize()
