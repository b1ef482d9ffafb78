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
  source); ``labels`` (``int32`` class ids) when encoded with labels, whose
  class names ``metadata.json`` lists under ``labels``; ``captions`` (text)
  when encoded with captions.

Video token files (clips encoded by a video tokenizer) hold rows of
``(T', h, w)`` indices, one row a clip; ``metadata.json``'s ``token_shape`` is
that row shape and its ``video`` block the frame rule and how clips were cut
(``num_frames``, ``temporal_factor`` s_T, ``causal``, ``latent_frames`` T' = 1 +
(num_frames - 1) / s_T, or num_frames / s_T for a non-causal tokenizer
(``causal`` false; files without the field are causal), ``frame_rule`` in words,
``stride``, ``fps``, ``clips_per_video``, and ``source_fps``, the videos' own
frame rate when they share one); ``names`` are ``<video path>@<first frame>``.

``metadata.json`` also holds the codebook size, token shape, the tokenizer's
config and checkpoint step, and which tokenizer wrote them (``tokenizer``:
``tokenizer_fingerprint`` plus its path). Shards are written whole or not at
all (``files.atomic_path``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import threading
import zipfile
from collections.abc import Mapping
from typing import Any

import grain
import ml_collections
import numpy as np
from flax import nnx

from vqtok import config as config_lib
from vqtok import files

FORMAT = "vqtok-tokens-v1"


def index_dtype(codebook_size: int) -> np.dtype:
  """The smallest type that holds indices below ``codebook_size``: uint8, uint16 or int32."""
  for dtype in (np.uint8, np.uint16):
    if codebook_size <= np.iinfo(dtype).max + 1:
      return np.dtype(dtype)
  return np.dtype(np.int32)


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
    metadata: the tokenizer directory's metadata (``vqtok.load.load``'s
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
    rows: ``indices``, ``names``, ``source_index`` and optionally ``labels``
      and ``captions``, each a list of per-batch arrays (``names`` and
      ``captions``: lists of strings).
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
  if rows.get("captions"):
    arrays["captions"] = np.asarray(rows["captions"], dtype=str)
  files.write_npz(path, arrays)


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
  """Reads a token directory: (metadata, ``{"indices", "names", "source_index"[, "labels", "captions"]}``).

  ``indices`` are int32 whatever type they were stored in; ``labels`` is
  there when every shard has it.
  """
  meta, shards = _read(directory, ("indices", "names", "source_index", "labels", "captions"))
  first, shape = shards[0][0], shards[0][1]["indices"].shape[1:]
  for name, arrays in shards:
    if arrays["indices"].shape[1:] != shape:
      got = arrays["indices"].shape[1:]
      raise ValueError(f"{os.path.join(directory, name)}: indices of shape {got} per row, {first} has {shape}")
  keys = [k for k in shards[0][1] if all(k in a for _, a in shards)]
  return meta, {k: np.concatenate([a[k] for _, a in shards]) for k in keys}


def read_tokens(directory: str) -> tuple[dict, np.ndarray, np.ndarray]:
  """Reads a token directory: (metadata, indices as int32, names), shards concatenated."""
  meta, rows = read_rows(directory)
  return meta, rows["indices"], rows["names"]


def check_grid(tokenizer: nnx.Module, meta: dict, shards: list, tokens: str) -> None:
  """ValueError unless every shard's indices have the shape this tokenizer decodes."""

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
  if meta.get("video"):
    # Video rows: (T', h, w), T' fixed by the clips' frame count (check_video checks the rule).
    grid = tuple(int(s) for s in meta.get("token_shape") or shards[0][1].shape[1 : 2 + len(own)])
    if len(grid) != 1 + len(own):
      raise ValueError(f"{tokens}: token grid {grid} in metadata.json is not (T', h, w) video rows")
    whose = "metadata.json's token_shape"
  elif tokenizer.any_grid:
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


def frame_rule(temporal_factor: int, causal: bool = True) -> str:
  """The frame rule in words: ``"1 + k*4 frames -> 1 + k latent frames"`` (causal) or ``"k*4 frames -> k latent
  frames"``."""
  if not causal:
    return f"k*{int(temporal_factor)} frames -> k latent frames"
  return f"1 + k*{int(temporal_factor)} frames -> 1 + k latent frames"


def video_block(
  tokenizer: nnx.Module, *, num_frames: int, stride: int, fps: float | None, clips_per_video: int
) -> dict:
  """``metadata.json``'s ``video`` block for clips of ``num_frames``; ValueError if the tokenizer cannot take them.

  Refused in one line: an image tokenizer, or a frame count the tokenizer's
  rule rejects (its own message, naming the nearest valid counts).
  """
  if not tokenizer.is_video:
    raise ValueError(
      "video clips need a video tokenizer (model.temporal_downsample); this one is an image tokenizer"
      f" (tokens {tuple(tokenizer.token_shape)} per image)"
    )
  try:
    latent = tokenizer.latent_frames(int(num_frames))
  except ValueError as e:
    raise ValueError(f"num_frames={num_frames}: {e}") from None
  s, causal = tokenizer.temporal_factor, tokenizer.causal
  return {
    "num_frames": int(num_frames),
    "latent_frames": int(latent),
    "temporal_factor": int(s),
    "causal": causal,
    "frame_rule": frame_rule(s, causal),
    "stride": int(stride),
    "fps": float(fps) if fps else None,
    "clips_per_video": int(clips_per_video),
  }


def check_video(tokenizer: nnx.Module, meta: Mapping, tokens: str) -> None:
  """ValueError unless this tokenizer decodes the video rows ``meta`` describes (images: any but a non-causal
  video tokenizer).

  Checked before the tokenizer's identity, so that the message names what
  differs in the user's terms: an image tokenizer, the frame rule, the
  codebook.
  """
  v = meta.get("video")
  if not v:
    if getattr(tokenizer, "is_video", False) and not tokenizer.causal:
      raise ValueError(
        f"{tokens} holds image tokens; a non-causal video tokenizer (model.causal=False) decodes clips only:"
        " decode them with the tokenizer that encoded them"
      )
    return
  shape = tuple(meta.get("token_shape") or ())
  rule = frame_rule(v["temporal_factor"], bool(v.get("causal", True)))  # files written before the field: causal
  what = f"video tokens ({v['num_frames']}-frame clips as rows of {shape}, {rule})"
  if not tokenizer.is_video:
    raise ValueError(
      f"{tokens} holds {what}; this is an image tokenizer: decode them with the video tokenizer that encoded them"
    )
  own = frame_rule(tokenizer.temporal_factor, tokenizer.causal)
  if own != rule:
    raise ValueError(
      f"{tokens} holds {what}; this tokenizer's frame rule is {own}: decode them with the tokenizer that encoded them"
    )
  size = tokenizer.quantizer.codebook_size
  if int(meta.get("codebook_size", size)) != size:
    raise ValueError(
      f"{tokens} holds {what} from a codebook of {meta['codebook_size']} codes; this tokenizer has {size}:"
      " decode them with the tokenizer that encoded them"
    )


# ---- views: several transformed copies of each image, one row of tokens each ----

#: ``encode --views``: the image and its horizontal mirror (``flip``), or
#: torchvision's ``TenCrop`` of the image resized to ``crop_range`` times the
#: size (``ten_crop``: the four corners and the centre, then the same of the
#: mirrored image), as LlamaGen's ``extract_codes_c2i.py --ten-crop`` stores them.
VIEWS = ("flip", "ten_crop")
_CROPS = ("top_left", "top_right", "bottom_left", "bottom_right", "center")


def view_names(views: str) -> list[str] | None:
  """The names ``metadata.json`` lists for ``views`` (None: one view, no views axis)."""
  if not views:
    return None
  if views == "flip":
    return ["image", "flip"]
  if views == "ten_crop":
    return [*_CROPS, *(f"flip_{c}" for c in _CROPS)]
  raise ValueError(f"views={views!r}: expected one of {', '.join(VIEWS)} or '' (one view)")


def crop_size(size: int, views: str, crop_range: float) -> int:
  """The size the images are resized and center-cropped to before the views are taken."""
  if views != "ten_crop":
    return size
  if not crop_range >= 1.0:
    raise ValueError(f"crop_range={crop_range} must be at least 1 (the crops are taken from a larger image)")
  return int(size * crop_range)


def make_views(images: np.ndarray, views: str, size: int) -> np.ndarray:
  """``(B, H, W, C)`` images -> ``(V, B, size, size, C)``, the views of each (see ``VIEWS``)."""
  if not views:
    return images[None]
  mirror = images[:, :, ::-1]
  if views == "flip":
    return np.stack([images, mirror])
  h, w = images.shape[1:3]
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))  # torchvision's center_crop
  corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left)]
  return np.stack([im[:, y : y + size, x : x + size] for im in (images, mirror) for y, x in corners])


# ---- reading rows at random: a grain data source ----


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local file header (30 bytes)


def _npy_at(f, offset: int) -> tuple[np.dtype, tuple[int, ...], bool, int]:
  """(dtype, shape, fortran order, data offset) of the ``.npy`` that starts at ``offset`` of file ``f``."""
  f.seek(offset)
  version = np.lib.format.read_magic(f)
  read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
  shape, fortran, dtype = read_header(f)
  return dtype, tuple(shape), fortran, f.tell()


def _check_layout(path: str, out: dict) -> dict:
  if "indices" not in out or "names" not in out:
    raise ValueError(f"{path}: not a token shard (no indices or names)")
  if any(dtype.hasobject or (fortran and len(shape) > 1) for dtype, shape, fortran, _ in out.values()):
    raise ValueError(f"{path}: holds Python objects or Fortran-ordered arrays, not token arrays as np.savez writes")
  return out


def _layout(path: str) -> dict[str, tuple[np.dtype, tuple[int, ...], bool, int]]:
  """Where each array of an uncompressed ``.npz`` (as ``np.savez`` writes it) lies in the file.

  Walks the members' local headers in order (a few small reads); any other
  zip layout is read through ``zipfile``.
  """
  out = {}
  with open(path, "rb") as f:
    offset, size = 0, os.fstat(f.fileno()).st_size
    while offset < size:
      f.seek(offset)
      head = f.read(_LOCAL_HEADER.size)
      if len(head) < _LOCAL_HEADER.size:
        break
      sig, _, _, flags, method, *_, name_len, extra_len = _LOCAL_HEADER.unpack(head)
      if sig != b"PK\x03\x04":
        break  # the central directory: every member was read
      if method != 0 or flags & 0x8:
        return _layout_by_zipfile(path)
      name = f.read(name_len).decode()
      dtype, shape, fortran, data = _npy_at(f, offset + _LOCAL_HEADER.size + name_len + extra_len)
      out[name.removesuffix(".npy")] = (dtype, shape, fortran, data)
      offset = data + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  return _check_layout(path, out)


def _layout_by_zipfile(path: str) -> dict[str, tuple[np.dtype, tuple[int, ...], bool, int]]:
  out = {}
  with zipfile.ZipFile(path) as z, open(path, "rb") as f:
    for info in z.infolist():
      if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path}: {info.filename} is compressed; token shards are written with np.savez")
      f.seek(info.header_offset)
      *_, name_len, extra_len = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
      start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
      out[info.filename.removesuffix(".npy")] = _npy_at(f, start)
  return _check_layout(path, out)


class TokenSource:
  """A token directory as a grain ``RandomAccessDataSource``: ``len`` and ``[i]`` over all its rows.

  Records are dicts: ``indices`` (int32; ``(views, ...)`` when the files
  have views, see ``RandomView``; ``(T', h, w)`` for video files, whose frame
  rule ``video`` gives), ``name``, ``source_index``, and ``label``
  and ``caption`` where the files have them. Opening reads each shard's few headers (where
  its arrays lie); a record then reads its own bytes and no more, so memory
  grows with the rows read, not with the files.
  Rows are in shard-file order (``names`` or ``source_index`` give the
  source's order).

    source = TokenSource("in1k_tokens/")
    ds = grain.MapDataset.source(source).seed(0).shuffle().random_map(RandomView(source.num_views)).batch(256)
  """

  def __init__(self, directory: str, *, open_files: int = 64):
    self.directory = directory
    with open(os.path.join(directory, "metadata.json")) as f:
      self.metadata = json.load(f)
    self._paths = [os.path.join(directory, name) for name in shard_files(directory)]
    if not self._paths:
      raise FileNotFoundError(f"no tokens-*.npz shards in {directory}")
    self._layouts = [_layout(p) for p in self._paths]
    for path, layout in zip(self._paths, self._layouts):
      rows = layout["indices"][1][0]
      bad = [key for key, (_, shape, _, _) in layout.items() if shape[:1] != (rows,)]
      if bad:
        raise ValueError(f"{path}: {', '.join(bad)} do not have one entry per row of indices ({rows})")
    self._starts = np.concatenate([[0], np.cumsum([lay["indices"][1][0] for lay in self._layouts])]).astype(np.int64)
    self._files: dict[int, int] = {}  # shard -> open descriptor, least recently used first
    self._open_files = open_files
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return int(self._starts[-1])

  @property
  def video(self) -> dict | None:
    """The files' frame rule and clip cutting (``metadata.json``'s ``video``; None: image rows)."""
    return self.metadata.get("video") or None

  @property
  def num_views(self) -> int | None:
    """How many views each record holds (None: files of one view, no views axis)."""
    views = self.metadata.get("views")
    return len(views) if views else None

  def _shard(self, k: int) -> tuple[int, dict]:
    with self._lock:
      fd = self._files.pop(k, None)
      if fd is None:
        fd = os.open(self._paths[k], os.O_RDONLY)
      self._files[k] = fd
      while len(self._files) > self._open_files:
        os.close(self._files.pop(next(iter(self._files))))
      return fd, self._layouts[k]

  def _read(self, fd: int, spec: tuple, row: int) -> np.ndarray:
    dtype, shape, _, offset = spec
    size = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    return np.frombuffer(os.pread(fd, size, offset + row * size), dtype).reshape(shape[1:])

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"row {index} out of range for {len(self)} rows in {self.directory}")
    k = int(np.searchsorted(self._starts, index, side="right")) - 1
    fd, layout = self._shard(k)
    row = index - int(self._starts[k])
    record = {
      "indices": self._read(fd, layout["indices"], row).astype(np.int32),
      "name": str(self._read(fd, layout["names"], row)[()]),
    }
    if "source_index" in layout:
      record["source_index"] = int(self._read(fd, layout["source_index"], row)[()])
    if "labels" in layout:
      record["label"] = int(self._read(fd, layout["labels"], row)[()])
    if "captions" in layout:
      record["caption"] = str(self._read(fd, layout["captions"], row)[()])
    return record

  def close(self) -> None:
    with self._lock:
      for fd in self._files.values():
        os.close(fd)
      self._files.clear()

  def __del__(self) -> None:
    with contextlib.suppress(Exception):
      self.close()

  def __getstate__(self) -> dict[str, Any]:  # for grain's worker processes: no descriptors
    state = self.__dict__.copy()
    state["_files"], state["_lock"] = {}, None
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __repr__(self) -> str:
    return f"TokenSource({self.directory!r}, rows={len(self)})"


class RandomView(grain.transforms.RandomMap):
  """Picks one view of each record at random (``indices`` ``(views, ...)`` -> ``(...)``, plus ``view``).

  Grain derives each record's generator from the dataset's seed and the
  record's position, so a resumed run sees the same views. Records without
  a views axis (files encoded with one view) pass through unchanged.
  """

  def __init__(self, num_views: int | None = None):
    self.num_views = num_views

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    if self.num_views is None:
      return element
    view = int(rng.integers(self.num_views))
    return {**element, "indices": element["indices"][view], "view": view}


# ---- captions ----


def read_captions(path: str) -> dict[str, str]:
  """A captions file: one JSON object a line, ``{"name": ..., "caption": ...}`` -> ``{name: caption}``.

  Raises:
    ValueError: bad JSON, a missing or non-string field, or a name given twice
      (naming the line).
  """
  captions: dict[str, str] = {}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        item = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
      if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ValueError(f'{path}:{number}: expected {{"name": "...", "caption": "..."}}')
      if not isinstance(item.get("caption"), str):
        raise ValueError(f"{path}:{number}: the caption of {item['name']!r} is not a string")
      if item["name"] in captions:
        raise ValueError(f"{path}:{number}: {item['name']!r} has a caption already (line numbers count from 1)")
      captions[item["name"]] = item["caption"]
  if not captions:
    raise ValueError(f"{path}: no captions in it")
  return captions
