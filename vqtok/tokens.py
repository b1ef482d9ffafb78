"""The token format: writing, reading and validating the token files of ``vqtok.tokenize``.

A token directory holds ``metadata.json`` and ``.npz`` shards that a
downstream trainer reads without vqtok:

* ``indices``: ``(n, *token_shape)``, plus a trailing axis for residual and
  grouped quantizers; ``(n, num_tokens)`` in scale order (coarse first) for
  multi-scale ones, with ``scales`` in ``metadata.json``. Stored in the
  smallest unsigned type that holds the codebook (``uint8`` up to 256 codes,
  ``uint16`` up to 65,536, else ``int32``); ``read_rows`` and ``read_tokens``
  return ``int32``.
* ``names`` (the image's path or id) and ``source_index`` (its index in the
  source), and ``labels`` (``int32`` class ids) when encoded with labels,
  whose class names ``metadata.json`` lists under ``labels``.

``metadata.json`` also holds the codebook size, token shape, the tokenizer's
config and checkpoint step, and which tokenizer wrote them (``tokenizer``:
``tokenizer_fingerprint`` plus its path). Shards are written whole or not at
all (``faults.atomic_path``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping

import ml_collections
import numpy as np
from flax import nnx

from vqtok import config as config_lib
from vqtok import faults

FORMAT = "vqtok-tokens-v1"


def index_dtype(codebook_size: int) -> np.dtype:
  """The smallest type that holds indices below ``codebook_size``: uint8, uint16 or int32."""
  for dtype in (np.uint8, np.uint16):
    if codebook_size <= np.iinfo(dtype).max + 1:
      return np.dtype(dtype)
  return np.dtype(np.int32)


def write_npz(path: str, **arrays: np.ndarray) -> None:
  with faults.atomic_path(path, ".tmp.npz") as tmp:
    np.savez(tmp, **arrays)


def plain_config(config: ml_collections.ConfigDict | Mapping) -> dict:
  """A config as plain JSON values (tuples become lists), however it was given."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(dict(config)))


def tokenizer_fingerprint(config: ml_collections.ConfigDict | Mapping, metadata: Mapping | None = None) -> dict:
  """What identifies a tokenizer in token files: its architecture and where its weights came from.

  Args:
    config: the tokenizer's config (a ``ConfigDict``, or the plain dict that
      ``metadata.json`` records under ``config``).
    metadata: the tokenizer directory's metadata (``tokenizer_dir.load``'s
      ``info["metadata"]``); a converted checkpoint records ``source_sha256``.

  Returns:
    ``{"fingerprint": sha256 hex of the canonical JSON of the config's
    ``model`` and ``quantizer`` sections and ``image_size``,
    "source_sha256": the converted checkpoint's hash or None}``. Two
    tokenizers trained from one config share a fingerprint; the weights
    themselves are not hashed.
  """
  plain = plain_config(config)
  sections = {k: plain.get(k) for k in (*config_lib.ARCHITECTURE_SECTIONS, "image_size")}
  canonical = json.dumps(sections, sort_keys=True, separators=(",", ":"))
  return {
    "fingerprint": hashlib.sha256(canonical.encode()).hexdigest(),
    "source_sha256": (metadata or {}).get("source_sha256") or None,
  }


def identity_mismatch(recorded: Mapping, recorded_config: Mapping | None, current: Mapping, config) -> str | None:
  """What differs between two ``tokenizer`` blocks (None: the same tokenizer)."""
  if recorded.get("fingerprint") != current["fingerprint"]:
    try:
      fields = config_lib.architecture_diff(ml_collections.ConfigDict(recorded_config), config)
    except (TypeError, KeyError, AttributeError, ValueError):  # no usable config recorded
      fields = []
    if fields:
      return f"its {config_lib.describe_diff(fields)}"
    return f"its config fingerprint differs ({str(recorded.get('fingerprint'))[:12]} vs {current['fingerprint'][:12]})"
  if recorded.get("source_sha256") != current["source_sha256"]:
    old, new = (str(v)[:12] if v else "none" for v in (recorded.get("source_sha256"), current["source_sha256"]))
    return f"its source checkpoint differs (sha256 {old} vs {new})"
  return None


def path_of(block: Mapping) -> str:
  return str(block.get("path") or "(path not recorded)")


def shard_name(shard: int, process: int = 0, processes: int = 1) -> str:
  """A token shard's file name: ``tokens-00007.npz``, or ``tokens-00007-p001.npz`` for process 1 of several."""
  return f"tokens-{shard:05d}.npz" if processes == 1 else f"tokens-{shard:05d}-p{process:03d}.npz"


def write_shard(path: str, rows: Mapping[str, list], codebook_size: int) -> None:
  """Writes one shard, whole or not at all, from per-batch lists of row arrays.

  Args:
    path: the shard's file (``shard_name``).
    rows: ``indices``, ``names``, ``source_index`` and optionally ``labels``,
      each a list of per-batch arrays (``names``: a list of strings).
    codebook_size: the indices' bound, which picks their stored type.
  """
  indices = np.concatenate(rows["indices"])
  if indices.size and (indices.min() < 0 or indices.max() >= codebook_size):
    raise ValueError(f"{path}: indices outside [0, {codebook_size}) from the tokenizer")
  arrays = {
    "indices": indices.astype(index_dtype(codebook_size)),
    "names": np.asarray(rows["names"], dtype=str),
    "source_index": np.concatenate(rows["source_index"]).astype(np.int64),
  }
  if rows.get("labels"):
    arrays["labels"] = np.concatenate(rows["labels"]).astype(np.int32)
  write_npz(path, **arrays)


def shard_files(directory: str) -> list[str]:
  if not os.path.isdir(directory):
    return []
  return sorted(f for f in os.listdir(directory) if f.startswith("tokens-") and f.endswith(".npz"))


def read_shards(directory: str) -> tuple[dict, list[tuple[str, np.ndarray, np.ndarray]]]:
  """``metadata.json`` and ``(file name, indices as int32, names)`` of every shard, in order."""
  meta, shards = _read(directory, ("indices", "names"))
  return meta, [(name, z["indices"], z["names"]) for name, z in shards]


def _read(directory: str, keys: tuple[str, ...]) -> tuple[dict, list[tuple[str, dict[str, np.ndarray]]]]:
  with open(os.path.join(directory, "metadata.json")) as f:
    meta = json.load(f)
  files = shard_files(directory)
  if not files:
    raise FileNotFoundError(f"no tokens-*.npz shards in {directory}")
  shards = []
  for name in files:
    path = os.path.join(directory, name)
    with np.load(path) as z:
      arrays = {k: z[k] for k in keys if k in z.files}
    idx, names = arrays["indices"], arrays["names"]
    rows = idx.shape[0] if idx.ndim else 0
    if idx.ndim < 1 or names.shape != (rows,):
      raise ValueError(f"{path}: {names.size} names for {rows} rows of indices")
    if not np.issubdtype(idx.dtype, np.integer):
      raise ValueError(f"{path}: indices are {idx.dtype}, not integers")
    arrays["indices"] = idx.astype(np.int32)
    for k in keys:
      if k in arrays and k not in ("indices", "names") and arrays[k].shape[:1] != (rows,):
        raise ValueError(f"{path}: {arrays[k].shape[0] if arrays[k].ndim else 0} {k} for {rows} rows of indices")
    shards.append((name, arrays))
  return meta, shards


def read_rows(directory: str) -> tuple[dict, dict[str, np.ndarray]]:
  """Reads a token directory: (metadata, ``{"indices", "names", "source_index"[, "labels"]}``), shards concatenated.

  ``indices`` are int32 whatever type they were stored in; ``labels`` is
  there when every shard has it.
  """
  meta, shards = _read(directory, ("indices", "names", "source_index", "labels"))
  first, shape = shards[0][0], shards[0][1]["indices"].shape[1:]
  for name, arrays in shards:
    if arrays["indices"].shape[1:] != shape:
      got = arrays["indices"].shape[1:]
      raise ValueError(f"{os.path.join(directory, name)}: indices of shape {got} per image, {first} has {shape}")
  keys = [k for k in shards[0][1] if all(k in a for _, a in shards)]
  return meta, {k: np.concatenate([a[k] for _, a in shards]) for k in keys}


def read_tokens(directory: str) -> tuple[dict, np.ndarray, np.ndarray]:
  """Reads a token directory: (metadata, indices as int32, names), shards concatenated."""
  meta, rows = read_rows(directory)
  return meta, rows["indices"], rows["names"]


def check_grid(tokenizer: nnx.Module, meta: dict, shards: list, tokens: str) -> None:
  """ValueError unless every shard's indices have the shape this tokenizer decodes."""
  from vqtok.models import cnn  # noqa: PLC0415

  q = tokenizer.quantizer
  if q.scale_schedule is not None:
    schedule = f"the tokenizer's scale schedule {list(q.scale_schedule)} ({q.num_tokens} tokens)"
    recorded = meta.get("scales")
    if recorded is not None and [int(s) for s in recorded] != list(q.scale_schedule):
      raise ValueError(f"{tokens}: metadata.json's scale schedule {list(recorded)} is not {schedule}")
    for name, idx, _ in shards:
      if tuple(idx.shape[1:]) != (q.num_tokens,):
        raise ValueError(
          f"{os.path.join(tokens, name)}: indices of shape {tuple(idx.shape)} do not fit"
          f" (n, {q.num_tokens}): {schedule}"
        )
    return
  depth = q.index_depth
  tail = () if depth is None else (int(depth),)
  own = tuple(tokenizer.token_shape)
  if isinstance(tokenizer.encoder, cnn.Encoder):
    # A CNN decodes any grid; the one to expect is the grid the files were encoded at.
    recorded = meta.get("token_shape")
    grid = tuple(int(s) for s in recorded) if recorded is not None else tuple(shards[0][1].shape[1 : 1 + len(own)])
    if len(grid) != len(own):
      raise ValueError(f"{tokens}: token grid {grid} in metadata.json, the tokenizer makes {len(own)}-D grids {own}")
    whose = "metadata.json's token_shape"
  else:
    grid, whose = own, "the tokenizer's token_shape"
  want = grid + tail
  for name, idx, _ in shards:
    if tuple(idx.shape[1:]) != want:
      raise ValueError(
        f"{os.path.join(tokens, name)}: indices of shape {tuple(idx.shape)} do not fit (n, {', '.join(map(str, want))})"
        f" ({whose} {grid}" + (f" with {tail[0]} indices per token)" if tail else ")")
      )
