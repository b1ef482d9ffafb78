"""The tokenizer directory: ``config.json`` + ``model.safetensors``, the one unit a tokenizer moves in.

Training exports one (``python -m vqtok.export``), converters write one
(``python -m vqtok.convert``), and tokenization, evaluation and fine-tuning
(``--config.init_from``) read one (``vqtok.load`` takes a training workdir
in its place).

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
from collections.abc import Mapping
from typing import Any

import ml_collections
from flax import nnx

from vqtok import config as config_lib
from vqtok import files, models
from vqtok.quantizers.binary import BIT_ORDERS

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


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


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
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise FileExistsError(f"{path} exists and is not a directory")
  if os.path.isdir(path) and os.listdir(path) and not overwrite:
    raise FileExistsError(f"{path} exists and is not empty; choose a new directory (or pass --overwrite)")
  with files.atomic_dir(path) as tmp:
    meta = {"format": FORMAT, **(metadata or {})}
    files.write_safetensors(os.path.join(tmp, WEIGHTS), files.arrays(tokenizer), meta)
    with open(os.path.join(tmp, CONFIG), "w") as f:
      f.write(record_bit_order(config).to_json_best_effort(indent=2))
    if os.path.isdir(path):
      shutil.rmtree(path)
  return path


def read_metadata(path: str) -> dict[str, str]:
  """The safetensors metadata of a tokenizer directory (source, hashes, step)."""
  return files.read_safetensors_metadata(os.path.join(path, WEIGHTS))


def read(path: str) -> tuple[nnx.Module, ml_collections.ConfigDict, dict]:
  """``(tokenizer, config, info)`` of the tokenizer directory at ``path``.

  ``info`` has ``step`` (the training step recorded at export, 0 for imports)
  and ``metadata`` (the safetensors metadata).
  """
  weights = os.path.join(path, WEIGHTS)
  config = config_lib.load_run_config(path)
  meta = files.read_safetensors_metadata(weights)
  check_bit_order(config, meta, path)
  config_lib.validate_config(config, check_paths=False)
  tokenizer = models.build_tokenizer(config, rngs=nnx.Rngs(int(config.seed)))
  files.assign(tokenizer, files.read_safetensors(weights)[0], source=weights)
  return tokenizer, config, {"step": int(meta.get("step", 0) or 0), "metadata": meta}


def describe(config: ml_collections.ConfigDict) -> str:
  """One line: the architecture and codebook (for summaries)."""
  m, q = config.model, config.quantizer
  return f"{m.encoder} ({m.get('cnn_family', '')}) {json.dumps(q.to_dict(), sort_keys=True)}"
