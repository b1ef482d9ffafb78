"""Named arrays and whole files: the floor every reader and writer of weights stands on.

An nnx module's arrays are named by their dotted path in the module
(``encoder.res.0.1.conv1.kernel``), one separator, ``SEP``, everywhere:
tokenizer directories, the LPIPS and Inception ``.npz`` files, converters,
freeze lists and teachers. ``arrays`` reads them off a module, ``assign``
writes them into one (a concrete module in place, or an abstract one from
``nnx.eval_shape``, returned concrete), refusing a key set or a shape that
does not fit. ``read_npz``/``write_npz`` and ``read_safetensors``/
``write_safetensors`` move them to and from files.

Every file is written whole or not at all: ``atomic_path`` yields a temporary
name beside the target and renames it onto the target once the block
succeeds; ``atomic_dir`` does the same for a directory. A failed write (a
full disk) is raised as ``OSError`` naming the target, and the target keeps
what it had.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from vqtok import faults

SEP = "."


def name(path: tuple[Any, ...]) -> str:
  """``"decoder.conv_in.kernel"`` for an nnx state path or a JAX pytree key path."""
  keys = (getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
  return SEP.join(str(k) for k in keys)


def flatten(tree: Mapping, *, arrays_only: bool = False) -> dict[str, Any]:
  """``{"a": {"b": x}} -> {"a.b": x}`` over nested mappings; ``arrays_only`` drops non-array leaves."""
  out: dict[str, Any] = {}

  def visit(prefix: str, node: Any) -> None:
    if isinstance(node, Mapping):
      for k, v in node.items():
        visit(f"{prefix}{SEP}{k}" if prefix else str(k), v)
    elif not arrays_only or isinstance(node, np.ndarray):
      out[prefix] = node

  visit("", tree)
  return out


def _state(module: nnx.Module, what: Any) -> nnx.State:
  """The variables of ``module`` that ``what`` selects (``...``: all but RNG streams)."""
  if what is ...:
    return nnx.split(module, nnx.RngState, ...)[2]
  return nnx.state(module, what)


def arrays(module: nnx.Module, what: Any = ...) -> dict[str, np.ndarray]:
  """``{dotted name: array}`` of ``module``'s variables (default: all but RNG streams; or an nnx filter)."""
  return {name(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(_state(module, what))}


def shapes(module: nnx.Module, what: Any = ...) -> dict[str, tuple[int, ...]]:
  """``{dotted name: shape}`` of ``module``'s variables, without copying (abstract modules too)."""
  return {name(p): tuple(v.shape) for p, v in nnx.to_flat_state(_state(module, what))}


def assign(module: nnx.Module, values: Mapping[str, Any], *, source: str, what: Any = ...) -> nnx.Module:
  """Sets every selected variable of ``module`` from ``values``; returns the module, now concrete.

  Args:
    module: a module, concrete (updated in place) or from ``nnx.eval_shape``.
    values: ``{dotted name: array}`` holding exactly the selected variables.
    source: names the weights in error messages (a file, usually).
    what: ``...`` for every variable but RNG streams, or an nnx filter.

  Raises:
    ValueError: a missing or unexpected name, or a shape that differs.
  """
  state = _state(module, what)
  want = {name(p): v for p, v in nnx.to_flat_state(state)}
  missing, extra = sorted(set(want) - set(values)), sorted(set(values) - set(want))
  if missing or extra:
    raise ValueError(
      f"{source}: the weights do not fit the model"
      + (f"; missing {missing[:3]}{' ...' if len(missing) > 3 else ''} ({len(missing)})" if missing else "")
      + (f"; unexpected {extra[:3]}{' ...' if len(extra) > 3 else ''} ({len(extra)})" if extra else "")
    )
  for key, var in want.items():
    value = np.asarray(values[key])
    if value.shape != tuple(var.shape):
      raise ValueError(f"{source}: {key} has shape {value.shape}, the model needs {tuple(var.shape)}")
    var.set_value(jnp.asarray(value, var.dtype))
  nnx.update(module, state)
  _fill_abstract_rngs(module)
  return module


def _fill_abstract_rngs(module: nnx.Module, seed: int = 0) -> None:
  """RNG streams left abstract by ``nnx.eval_shape`` (weights files hold none): fresh keys, counts 0.

  A tokenizer with a training-time draw (``model.token_drop``) holds one; its
  values only seed later training, never what a converted tokenizer computes.
  """
  rng = nnx.state(module, nnx.RngState)
  for i, (_, var) in enumerate(nnx.to_flat_state(rng)):
    value = var.get_value()
    if isinstance(value, jax.ShapeDtypeStruct):
      if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        var.set_value(jax.random.fold_in(jax.random.key(seed), i).reshape(value.shape))
      else:
        var.set_value(jnp.zeros(value.shape, value.dtype))
  nnx.update(module, rng)


@contextlib.contextmanager
def fast_tracing() -> Iterator[None]:
  """Tracing without the quadratic cost of flax probing tracers' ``sharding`` (a module built under a trace).

  Building a module draws once for each array it initialises, and flax's
  ``Variable.set_value`` probes every new draw counter's ``sharding``. Under a
  trace (``nnx.eval_shape``, a jitted init) the counter is a tracer, whose
  ``sharding`` AttributeError message walks the whole trace so far to say where
  the value came from (jax to 0.10 at least; jax-ml/jax#40041 removes that
  walk), so tracing a build grew with the square of its arrays: 28.6 s for
  UniTok's 696 M-parameter tokenizer, 1.3 s without the walk. Inside this
  block tracers' error messages leave out their origin; nothing else changes
  (the same program, the same weights). Without that JAX internal, a no-op.
  """
  from jax._src.interpreters import partial_eval  # noqa: PLC0415

  tracer = getattr(partial_eval, "DynamicJaxprTracer", None)
  if tracer is None or "_origin_msg" not in vars(tracer):
    yield
    return
  walk = tracer._origin_msg
  tracer._origin_msg = lambda self: ""
  try:
    yield
  finally:
    tracer._origin_msg = walk


def pure(module: nnx.Module) -> tuple[nnx.GraphDef, dict, dict]:
  """``(graphdef, params, rest)``: the module's ``nnx.Param`` values and its other variables, as pure dicts.

  The form a train state keeps a module in (what ``jit`` and Orbax take);
  ``nnx.merge(graphdef, params, rest)`` rebuilds the module.
  """
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  return graphdef, params.to_pure_dict(), rest.to_pure_dict()


# ---- files ----


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp") -> Iterator[str]:
  """Yields a temporary path beside ``path`` to write; renamed onto ``path`` once the block succeeds.

  On any failure the temporary file is removed (``path`` keeps what it had),
  and a failed write is raised as ``OSError`` naming ``path``.
  """
  tmp = path + suffix
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if (named := _naming(e, path)) is not None:
      raise named from e
    raise


@contextlib.contextmanager
def atomic_dir(path: str, suffix: str = ".tmp") -> Iterator[str]:
  """Yields a new, empty directory beside ``path``; it replaces ``path`` once the block succeeds.

  ``path`` must then be missing or an empty directory (the caller removes a
  full one it means to replace). On failure the temporary directory is
  removed and ``path`` is untouched; one left by a killed process is
  removed by the next call.
  """
  tmp = os.path.abspath(path) + suffix
  if os.path.lexists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  try:
    yield tmp
    if os.path.isdir(path) and not os.listdir(path):
      os.rmdir(path)
    os.replace(tmp, path)
  except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if (named := _naming(e, path)) is not None:
      raise named from e
    raise


def _naming(e: BaseException, path: str) -> OSError | None:
  """A failed write (any errno form, see ``faults.write_errno``) as ``OSError`` naming ``path``; else None."""
  code = faults.write_errno(e)
  if code is not None and getattr(e, "filename", None) != path:
    return OSError(code, os.strerror(code), path)
  return None


def read_npz(path: str, *, legacy_sep: str = "") -> dict[str, np.ndarray]:
  """Every array of an ``.npz`` file, by its name in the file (``legacy_sep`` in names read as ``SEP``).

  ``legacy_sep``: the LPIPS and Inception files that the converters wrote
  before names were dotted join them with ``"/"``; they are costly to remake
  (they need torch and the published weights), so both spellings read.
  """
  with np.load(path) as f:
    return {(k.replace(legacy_sep, SEP) if legacy_sep else k): f[k] for k in f.files}


def write_npz(path: str, values: Mapping[str, np.ndarray]) -> None:
  """Writes ``values`` to an uncompressed ``.npz`` at ``path``, whole or not at all."""
  with atomic_path(path, ".tmp.npz") as tmp:
    np.savez(tmp, **values)


@contextlib.contextmanager
def _safetensors(path: str) -> Iterator[Any]:
  """An open safetensors file; any failure reading it is ValueError naming ``path``."""
  try:
    with safe_open(path, framework="numpy") as f:
      yield f
  except Exception as e:  # noqa: BLE001  (safetensors raises its own error types)
    raise ValueError(f"{path}: unreadable ({e})") from None


def read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """``(arrays, metadata)`` of a safetensors file; ValueError naming it if unreadable."""
  with _safetensors(path) as f:
    return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118 (not a dict)


def read_safetensors_metadata(path: str) -> dict[str, str]:
  """The metadata of a safetensors file (its header only); ValueError naming it if unreadable."""
  with _safetensors(path) as f:
    return dict(f.metadata() or {})


def write_safetensors(path: str, values: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> None:
  """Writes ``values`` (and string ``metadata``) to a safetensors file at ``path``, whole or not at all."""
  with atomic_path(path) as tmp:
    save_file(
      # asarray(order="C"), not ascontiguousarray, which makes scalars (step counters, flags) 1-d.
      {k: np.asarray(v, order="C") for k, v in values.items()},
      tmp,
      metadata={k: str(v) for k, v in metadata.items()},
    )
