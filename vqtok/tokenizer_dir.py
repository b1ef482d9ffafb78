"""The tokenizer directory: ``config.json`` + ``model.safetensors``, the one unit a tokenizer moves in.

Training exports one (``python -m vqtok.export``), converters write one
(``python -m vqtok.convert``), and tokenization, evaluation and fine-tuning
(``--config.init_from``) read one, or a training workdir in its place.

``config.json`` is the vqtok config (architecture, quantizer, input range,
image size, preprocessing). ``model.safetensors`` holds every array of the
tokenizer except RNG streams, named by its dot-joined path
(``encoder.res.0.1.conv1.kernel``); its metadata says where the weights came
from (``source``, ``source_file``, ``source_sha256``, ``step``). A directory is
written under a temporary name and renamed when complete, so it is never
half-written.

LFQ and BSQ token ids depend on the order in which channels are read as bits
(``bit_order``), so ``config.json`` always records it for those quantizers
(``save_tokenizer`` writes the class default when the config leaves it out),
and a directory that does not record it is refused rather than guessed.
Training workdirs are always vqtok's own, so their saved configs take the
class default, ``msb_first``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
FORMAT = "vqtok-tokenizer-v1"


# Quantizer types whose token ids depend on a bit order.
_BIT_ORDER_TYPES = ("lfq", "bsq")


def _bit_order_specs(spec: Any) -> list[Any]:
  """The LFQ/BSQ specs in a quantizer spec, nested residual/grouped ones included."""
  found = []
  while spec is not None:
    if spec.get("type") in _BIT_ORDER_TYPES:
      found.append(spec)
    spec = spec.get("quantizer")
  return found


def record_bit_order(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of ``config`` whose LFQ/BSQ specs all name their ``bit_order`` (the class default if unset)."""
  from vqtok.quantizers.binary import BIT_ORDERS  # noqa: PLC0415

  config = ml_collections.ConfigDict(config.to_dict())
  for spec in _bit_order_specs(config.quantizer):
    if "bit_order" not in spec:
      spec.bit_order = BIT_ORDERS[0]
  return config


def check_bit_order(config: ml_collections.ConfigDict, metadata: Mapping[str, str], path: str) -> None:
  """Raises ValueError if an LFQ/BSQ spec of a tokenizer directory's config has no ``bit_order``."""
  del metadata  # every writer records it: no source is an exception
  for spec in _bit_order_specs(config.quantizer):
    if "bit_order" in spec:
      continue
    raise ValueError(
      f"{os.path.join(path, CONFIG)}: the {spec.type} quantizer does not record its bit_order, so its token ids"
      ' are ambiguous; add "bit_order": "msb_first" or "lsb_first" to its quantizer spec (the order the weights'
      " were trained with)"
    )


def is_tokenizer_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, WEIGHTS)) and os.path.isfile(os.path.join(path, CONFIG))


def is_workdir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, CONFIG)) and os.path.isdir(os.path.join(path, "checkpoints"))


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _flat(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  out: dict[str, Any] = {}
  for k, v in tree.items():
    key = f"{prefix}.{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(_flat(v, key))
    else:
      out[key] = v
  return out


def _fill(tree: dict, flat: Mapping[str, np.ndarray], prefix: str = "") -> None:
  for k, v in tree.items():
    key = f"{prefix}.{k}" if prefix else str(k)
    if isinstance(v, dict):
      _fill(v, flat, key)
    else:
      tree[k] = flat[key]


def tokenizer_arrays(tokenizer: nnx.Module) -> dict[str, np.ndarray]:
  """Every array of ``tokenizer`` but its RNG streams, by dot-joined path."""
  _, _, rest = nnx.split(tokenizer, nnx.RngState, ...)
  return {k: np.asarray(v) for k, v in _flat(rest.to_pure_dict()).items()}


def array_shapes(tokenizer: nnx.Module) -> dict[str, tuple[int, ...]]:
  """The shape of every non-RNG array of ``tokenizer``, by dot-joined path (no copies made)."""
  _, _, rest = nnx.split(tokenizer, nnx.RngState, ...)
  return {k: tuple(np.shape(v)) for k, v in _flat(rest.to_pure_dict()).items()}


def load_arrays(tokenizer: nnx.Module, arrays: Mapping[str, np.ndarray], *, source: str) -> None:
  """Sets every non-RNG array of ``tokenizer`` from ``arrays``; the key sets and shapes must match exactly."""
  _, _, rest = nnx.split(tokenizer, nnx.RngState, ...)
  pure = rest.to_pure_dict()
  want = {k: tuple(np.shape(v)) for k, v in _flat(pure).items()}
  missing, extra = sorted(set(want) - set(arrays)), sorted(set(arrays) - set(want))
  if missing or extra:
    raise ValueError(
      f"{source}: the weights do not fit the configured tokenizer"
      + (f"; missing {missing[:3]}{' ...' if len(missing) > 3 else ''}" if missing else "")
      + (f"; unexpected {extra[:3]}{' ...' if len(extra) > 3 else ''}" if extra else "")
    )
  for k, shape in want.items():
    if tuple(np.shape(arrays[k])) != tuple(shape):
      raise ValueError(f"{source}: {k} has shape {tuple(np.shape(arrays[k]))}, the tokenizer needs {tuple(shape)}")
  _fill(pure, {k: np.asarray(v) for k, v in arrays.items()})
  nnx.replace_by_pure_dict(rest, pure)
  nnx.update(tokenizer, rest)


def save_tokenizer(
  tokenizer: nnx.Module,
  config: ml_collections.ConfigDict,
  path: str,
  *,
  metadata: Mapping[str, Any] | None = None,
  overwrite: bool = False,
) -> str:
  """Writes a tokenizer directory at ``path`` (atomically); returns ``path``.

  Raises:
    FileExistsError: ``path`` exists and is not empty, without ``overwrite``.
  """
  from safetensors.numpy import save_file  # noqa: PLC0415

  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise FileExistsError(f"{path} exists and is not a directory")
  if os.path.isdir(path) and os.listdir(path) and not overwrite:
    raise FileExistsError(f"{path} exists and is not empty; choose a new directory (or pass --overwrite)")
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
  try:
    meta = {"format": FORMAT, **{k: str(v) for k, v in (metadata or {}).items()}}
    arrays = {k: np.ascontiguousarray(v) for k, v in tokenizer_arrays(tokenizer).items()}
    save_file(arrays, os.path.join(tmp, WEIGHTS), metadata=meta)
    with open(os.path.join(tmp, CONFIG), "w") as f:
      f.write(record_bit_order(config).to_json_best_effort(indent=2))
    if os.path.isdir(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def read_metadata(path: str) -> dict[str, str]:
  """The safetensors metadata of a tokenizer directory (source, hashes, step)."""
  from safetensors import safe_open  # noqa: PLC0415

  with safe_open(os.path.join(path, WEIGHTS), framework="numpy") as f:
    return dict(f.metadata() or {})


def load(path: str, *, use_ema: bool = True, step: int | None = None):
  """``(tokenizer, config, info)`` from a tokenizer directory or a training workdir.

  ``info`` has ``step`` (the checkpoint step, or the one recorded at export)
  and, for a tokenizer directory, its metadata.
  """
  from vqtok import config as config_lib  # noqa: PLC0415

  if is_tokenizer_dir(path):
    from safetensors.numpy import load_file  # noqa: PLC0415

    from vqtok.models import build_tokenizer  # noqa: PLC0415

    config = config_lib.load_run_config(path)
    try:
      meta = read_metadata(path)
    except Exception as e:  # noqa: BLE001  (safetensors raises its own error types)
      raise ValueError(f"{os.path.join(path, WEIGHTS)}: unreadable ({e})") from None
    check_bit_order(config, meta, path)
    config_lib.validate_config(config, check_paths=False)
    tokenizer = build_tokenizer(config, rngs=nnx.Rngs(int(config.seed)))
    try:
      arrays = load_file(os.path.join(path, WEIGHTS))
    except Exception as e:  # noqa: BLE001  (safetensors raises its own error types)
      raise ValueError(f"{os.path.join(path, WEIGHTS)}: unreadable ({e})") from None
    load_arrays(tokenizer, arrays, source=os.path.join(path, WEIGHTS))
    return tokenizer, config, {"step": int(meta.get("step", 0) or 0), "metadata": meta}
  if is_workdir(path):
    from vqtok.training import checkpoint  # noqa: PLC0415

    config = config_lib.load_run_config(path)
    tokenizer, restored_step = checkpoint.load_tokenizer(config, path, use_ema=use_ema, step=step)
    return tokenizer, config, {"step": restored_step, "metadata": {}}
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such tokenizer directory or training workdir")
  raise FileNotFoundError(
    f"{path} is neither a tokenizer directory ({CONFIG} + {WEIGHTS}) nor a training workdir ({CONFIG} + checkpoints/)"
  )


def load_tokenizer(path: str, *, use_ema: bool = True, step: int | None = None) -> nnx.Module:
  """The ``Tokenizer`` saved at ``path``: a tokenizer directory or a training workdir."""
  return load(path, use_ema=use_ema, step=step)[0]


def describe(config: ml_collections.ConfigDict) -> str:
  """One line: the architecture and codebook (for summaries)."""
  m, q = config.model, config.quantizer
  return f"{m.encoder} ({m.get('cnn_family', '')}) {json.dumps(q.to_dict(), sort_keys=True)}"
