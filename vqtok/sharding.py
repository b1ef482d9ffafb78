"""The device mesh and shardings: one `jit` over a ("data", "fsdp") mesh.

This is the current form of what `pmap` did: the batch is split over every
device on its leading axis, and the train state is either replicated or, with
an "fsdp" axis larger than one, each large array is split over that axis
(ZeRO-3 style). XLA inserts the collectives. The same code runs on CPU, GPU
and TPU, one host or many.
"""

import json
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXES = ("data", "fsdp")
# Arrays smaller than this stay replicated under FSDP: splitting them costs
# more in collectives than it saves in memory.
FSDP_MIN_SIZE = 2**14


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a ("data", "fsdp") mesh.

  Args:
    shape: (data, fsdp) sizes; one entry may be -1 for "all remaining devices".
    devices: devices to use (default: all, across hosts).

  Returns:
    A ``Mesh`` over the first ``data * fsdp`` devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = [int(s) for s in shape]
  if len(shape) != 2:
    raise ValueError(f"training.mesh must have 2 entries (data, fsdp), got {shape}")
  n = len(devices)
  if shape.count(-1) > 1:
    raise ValueError(f"training.mesh may contain at most one -1, got {shape}")
  if -1 in shape:
    known = int(np.prod([s for s in shape if s != -1]))
    if known <= 0 or n % known:
      raise ValueError(f"training.mesh {shape} does not divide {n} devices")
    shape[shape.index(-1)] = n // known
  need = int(np.prod(shape))
  if min(shape) < 1 or need > n:
    raise ValueError(f"training.mesh {shape} needs {need} devices, have {n}")
  # An explicit shape may use fewer devices than exist (e.g. (1, 1) on a
  # multi-device host, to compare against a single-device run).
  return Mesh(np.asarray(devices[:need]).reshape(shape), DATA_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch: leading axis over every device of the mesh."""
  return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], size: int) -> P:
  if size == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return P()
  # Split the largest axis that the fsdp axis divides.
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % size == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
  """Shardings for a train-state pytree: replicated, or FSDP over "fsdp".

  Args:
    abstract_state: a pytree of arrays or ``jax.ShapeDtypeStruct``.
    mesh: the mesh from ``make_mesh``.

  Returns:
    A pytree of ``NamedSharding`` with the same structure.
  """
  size = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, _fsdp_spec(tuple(np.shape(x)), size)), abstract_state)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's local rows into one globally sharded batch."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded array, in global row order.

  With one process that is the whole array; with several, the rows this
  process fed in with ``global_batch`` come back in the same order.
  """
  shards = {s.index[0].start or 0: s.data for s in x.addressable_shards}
  return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)], axis=0)


def process_allgather(values: np.ndarray) -> np.ndarray:
  """Every process's ``values`` stacked on a new leading axis, bit for bit.

  The arrays travel as bytes, so float64 and int64 arrive exact (JAX would
  otherwise carry them as 32-bit values). Every process must call it with an
  array of the same shape and dtype.
  """
  values = np.ascontiguousarray(values)
  if jax.process_count() == 1:
    return values[None]
  raw = values.reshape(-1).view(np.uint8)
  got = np.asarray(multihost_utils.process_allgather(raw))
  return np.ascontiguousarray(got).view(values.dtype).reshape(jax.process_count(), *values.shape)


def process_sum(values: np.ndarray) -> np.ndarray:
  """Sums a host array over all processes (identity with one process), exactly in its dtype."""
  return process_allgather(np.asarray(values)).sum(axis=0)


def process_gather_json(value) -> list:
  """Every process's JSON-able ``value``, in process order (``[value]`` with one process)."""
  if jax.process_count() == 1:
    return [value]
  raw = np.frombuffer(json.dumps(value).encode(), np.uint8)
  size = int(process_allgather(np.asarray([raw.size], np.int64)).max())
  padded = np.zeros(size, np.uint8)
  padded[: raw.size] = raw
  return [json.loads(bytes(row).rstrip(b"\0").decode()) for row in process_allgather(padded)]
