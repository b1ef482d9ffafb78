"""Reading published checkpoints into NumPy arrays, with neither torch nor the authors' code.

Formats:
  * PyTorch ``torch.save`` files (``.pt``, ``.pth``, Lightning ``.ckpt``): a zip
    archive holding ``data.pkl`` and one raw file per storage. The pickle is
    read by a restricted unpickler that rebuilds tensors as NumPy arrays from
    those raw files and runs no other code: classes of other libraries that
    a file happens to pickle (Lightning callbacks, ``argparse.Namespace``,
    OmegaConf configs) come back as inert ``Opaque`` placeholders, so a
    Lightning checkpoint reads without Lightning.
  * TorchScript archives (``torch.jit.save``; OpenAI's CLIP ``.pt`` files): the
    same zip layout, where ``data.pkl`` pickles the module tree as objects of
    the archive's own classes and ``code/`` holds those classes' source. They
    read as the module's ``state_dict``: ``visual.conv1.weight`` -> array, the
    parameters and buffers each class lists (``__parameters__``,
    ``__buffers__``) under the attribute path of its object. None of the
    code is run; it is only searched for those two lists.
  * Flax checkpoints written by ``flax.training.checkpoints`` (msgpack).
  * ``.safetensors`` files.
  * NumPy ``.npz`` archives (big_vision's published checkpoints): a flat dict
    of arrays named by ``/``-separated paths, as ``np.load`` gives them
    (bfloat16, which NumPy stores as 2-byte void, widened to float32).

Anything else is a ``CheckpointError`` naming the file and what was found.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import zipfile
from typing import Any

import numpy as np
from flax import serialization
from safetensors.numpy import load_file


class CheckpointError(ValueError):
  """A checkpoint file that cannot be read or does not hold what a converter needs."""


# torch storage class name -> NumPy dtype (bfloat16 is read as raw uint16 and widened).
_STORAGE_DTYPES = {
  "DoubleStorage": np.float64,
  "FloatStorage": np.float32,
  "HalfStorage": np.float16,
  "BFloat16Storage": "bfloat16",
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
}


class Opaque(dict):
  """Stand-in for an object of a class the reader does not rebuild (kept inert).

  A dict, so that pickled dict subclasses (Lightning's ``AttributeDict``) keep
  their items; list-like appends are kept in ``items_appended``.
  """

  qualname = "?"

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__()
    self.args, self.kwargs, self.state, self.items_appended = args, kwargs, None, []

  def __setstate__(self, state: Any) -> None:
    self.state = state

  def append(self, item: Any) -> None:
    self.items_appended.append(item)

  def extend(self, items: Any) -> None:
    self.items_appended.extend(items)

  def __hash__(self) -> int:  # classes pickle as dict keys (Lightning's callback states)
    return id(self)

  def __repr__(self) -> str:
    return f"<opaque {self.qualname}>"


def _opaque_class(module: str, name: str) -> type:
  return type(name, (Opaque,), {"qualname": f"{module}.{name}"})


class _Storage:
  """A lazily read storage: the raw bytes of ``data/<key>`` as a 1-D array."""

  def __init__(self, archive: zipfile.ZipFile, prefix: str, key: str, dtype: Any):
    self.archive, self.path, self.dtype = archive, f"{prefix}data/{key}", dtype
    self._array: np.ndarray | None = None

  def array(self) -> np.ndarray:
    if self._array is None:
      raw = self.archive.read(self.path)
      if self.dtype == "bfloat16":  # widen to float32: bfloat16 is the top half of a float32
        bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        self._array = bits.view(np.float32)
      else:
        self._array = np.frombuffer(raw, np.dtype(self.dtype).newbyteorder("<"))
    return self._array


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
  flat = storage.array()
  if not size:
    return np.array(flat[offset])
  itemsize = flat.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
    flat[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride), writeable=False
  )
  return np.array(view)  # a contiguous copy, independent of the archive


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
  return data


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
  # Pickle protocol 2 (torch.save's) writes a bytes object as _codecs.encode(text, "latin1").
  if not isinstance(text, str) or encoding != "latin1":
    raise CheckpointError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r}) in a pickle")
  return text.encode("latin1")


class _PlainUnpickler(pickle.Unpickler):
  """Rebuilds builtin containers, ``OrderedDict`` and bytes; every other class as an inert ``Opaque``."""

  def find_class(self, module: str, name: str) -> Any:
    if module == "_codecs" and name == "encode":
      return _latin1_bytes
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    if module == "builtins" and name in ("set", "frozenset", "tuple", "list", "dict", "slice"):
      return getattr(__import__("builtins"), name)
    return _opaque_class(module, name)


def unpickle(data: bytes) -> Any:
  """A pickle held inside a checkpoint (e.g. a model's pickled arguments), read by the same rules, no code run.

  Raises:
    CheckpointError: not a readable pickle.
  """
  try:
    return _PlainUnpickler(io.BytesIO(data)).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
    raise CheckpointError(f"not a readable pickle ({type(e).__name__}: {e})") from None


class _TorchUnpickler(_PlainUnpickler):
  """Unpickles ``data.pkl`` of a torch zip checkpoint without torch."""

  def __init__(self, file: io.BytesIO, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self.archive, self.prefix = archive, prefix

  def find_class(self, module: str, name: str) -> Any:
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor
    if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
      return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
      return name  # only used as a tag in persistent ids
    return super().find_class(module, name)

  def persistent_load(self, pid: Any) -> Any:
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise CheckpointError(f"unsupported persistent id in torch checkpoint: {pid!r}")
    _, storage_type, key, _location, _numel = pid
    if isinstance(storage_type, str) and storage_type in _STORAGE_DTYPES:
      dtype = _STORAGE_DTYPES[storage_type]
    else:  # newer torch: an untyped storage; the dtype then comes from the tensor (rare)
      raise CheckpointError(f"unsupported storage type {storage_type!r} in torch checkpoint")
    return _Storage(self.archive, self.prefix, str(key), dtype)


_CLASS = re.compile(r"^class (\w+)\(", re.M)
_LIST = r"^  {}\s*=\s*\[([^\]]*)\]"


class _ScriptClasses:
  """The ``__parameters__`` and ``__buffers__`` of a TorchScript archive's classes, read off ``code/``."""

  def __init__(self, archive: zipfile.ZipFile, prefix: str):
    self.archive, self.prefix, self.names = archive, prefix, set(archive.namelist())
    self._cache: dict[str, tuple[str, ...] | None] = {}

  def state_names(self, qualname: str) -> tuple[str, ...] | None:
    """The parameter then buffer names of class ``qualname`` (``__torch__.a.b.Cls``); None if not found."""
    if qualname not in self._cache:
      self._cache[qualname] = self._find(qualname)
    return self._cache[qualname]

  def _find(self, qualname: str) -> tuple[str, ...] | None:
    body = self.source(qualname)
    if body is None:
      return None
    out: list[str] = []
    for field in ("__parameters__", "__buffers__"):
      m = re.search(_LIST.format(field), body, re.M)
      out += re.findall(r"[\"']([^\"']+)[\"']", m.group(1)) if m else []
    return tuple(out)

  def source(self, qualname: str) -> str | None:
    """The source of class ``qualname`` in ``code/``; None if the archive has none."""
    module, _, name = qualname.rpartition(".")
    path = f"{self.prefix}code/{module.replace('.', '/')}.py"
    if path not in self.names:
      return None
    source = self.archive.read(path).decode("utf-8", "replace")
    starts = [(m.start(), m.group(1)) for m in _CLASS.finditer(source)] + [(len(source), "")]
    for (start, cls), (end, _) in zip(starts, starts[1:]):
      if cls == name:
        return source[start:end]
    return None

  def forward_calls(self, qualname: str) -> frozenset[str]:
    """The attributes whose ``forward`` the class's ``forward`` calls (``conv1 = self.conv1``, ``(conv1).forward(``)."""
    body = self.source(qualname) or ""
    start = body.find("  def forward(")
    if start < 0:
      return frozenset()
    end = body.find("\n  def ", start + 1)
    code = body[start : end if end > 0 else len(body)]
    names = dict(re.findall(r"(\w+) = self\.(\w+)\b", code))
    names.update(re.findall(r"(\w+) = getattr\(self, \"(\w+)\"\)", code))
    return frozenset(names.get(v, v) for v in re.findall(r"\((\w+)\)\.forward\w*\(", code))


def _script_state_dict(root: Any, classes: _ScriptClasses) -> dict[str, np.ndarray]:
  """``state_dict()`` of an unpickled TorchScript module tree (parameters and buffers by dotted path)."""
  out: dict[str, np.ndarray] = collections.OrderedDict()

  def walk(obj: Opaque, prefix: str) -> None:
    state = obj.state if isinstance(obj.state, dict) else {}
    names = classes.state_names(obj.qualname)
    if names is None:  # a class without source in the archive: every tensor attribute
      names = tuple(k for k, v in state.items() if isinstance(v, np.ndarray))
    for name in names:
      if isinstance(state.get(name), np.ndarray):  # an optional parameter (bias=None) is absent
        out[prefix + name] = state[name]
    for name, value in state.items():
      if isinstance(value, Opaque) and value.qualname.startswith("__torch__."):
        walk(value, f"{prefix}{name}.")

  if not (isinstance(root, Opaque) and root.qualname.startswith("__torch__.")):
    raise CheckpointError(f"a TorchScript archive whose data.pkl holds {type(root).__name__}, not a module")
  walk(root, "")
  return out


def script_forward_calls(path: str) -> dict[str, frozenset[str]]:
  """For a TorchScript archive: each module's dotted path ("" for the root) -> the children its ``forward`` calls.

  A traced module's ``code/`` records the calls made while it was traced, so a module that holds a child
  its forward skips shows it here (Cosmos's down- and upsamplings that do nothing at some levels). The
  code is only searched, never run.

  Raises:
    CheckpointError: not a TorchScript archive.
  """
  with zipfile.ZipFile(path) as archive:
    pkl = sorted((n for n in archive.namelist() if n.endswith("data.pkl")), key=len)
    prefix = pkl[0][: -len("data.pkl")] if pkl else ""
    if not pkl or f"{prefix}constants.pkl" not in archive.namelist():
      raise CheckpointError(f"{path}: not a TorchScript archive (torch.jit.save)")
    root = _TorchUnpickler(io.BytesIO(archive.read(pkl[0])), archive, prefix).load()
    classes = _ScriptClasses(archive, prefix)
    out: dict[str, frozenset[str]] = {}

    def walk(obj: Opaque, name: str) -> None:
      out[name] = classes.forward_calls(obj.qualname)
      state = obj.state if isinstance(obj.state, dict) else {}
      for key, value in state.items():
        if isinstance(value, Opaque) and value.qualname.startswith("__torch__."):
          walk(value, f"{name}.{key}" if name else key)

    if isinstance(root, Opaque):
      walk(root, "")
    return out


def _read_npz(path: str) -> dict[str, np.ndarray]:
  out = {}
  with np.load(path, allow_pickle=False) as npz:
    for name in npz.files:
      a = npz[name]
      if a.dtype.kind == "V" and a.dtype.itemsize == 2:  # bfloat16 (big_vision utils.recover_dtype)
        a = (a.view("<u2").astype(np.uint32) << 16).view(np.float32)
      out[name] = a
  return out


def _read_torch_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    pkl = sorted((n for n in archive.namelist() if n.endswith("data.pkl")), key=len)
    if not pkl and archive.namelist() and all(n.endswith(".npy") for n in archive.namelist()):
      return _read_npz(path)
    if not pkl:
      raise CheckpointError(f"{path}: a zip archive without data.pkl is not a torch checkpoint")
    prefix = pkl[0][: -len("data.pkl")]
    # Tensors are copied out of the archive as they are rebuilt, so nothing
    # refers to it once it is closed.
    obj = _TorchUnpickler(io.BytesIO(archive.read(pkl[0])), archive, prefix).load()
    if f"{prefix}constants.pkl" in archive.namelist():  # a TorchScript archive (torch.jit.save)
      try:
        return _script_state_dict(obj, _ScriptClasses(archive, prefix))
      except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return obj


def _read_msgpack(path: str) -> Any:
  with open(path, "rb") as f:
    data = f.read()
  try:
    return serialization.msgpack_restore(data)
  except Exception as e:  # noqa: BLE001  (msgpack raises many kinds on garbage)
    raise CheckpointError(f"{path}: not a readable Flax (msgpack) checkpoint ({type(e).__name__}: {e})") from None


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  try:
    return load_file(path)
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def read_checkpoint(path: str) -> Any:
  """The contents of a checkpoint file, tensors as NumPy arrays.

  Args:
    path: a torch zip checkpoint (``.pt``, ``.pth``, ``.ckpt``, ``.bin``) or
      TorchScript archive, a Flax msgpack checkpoint, a ``.safetensors`` file or
      a NumPy ``.npz`` archive; a directory is an error.

  Returns:
    The unpickled / restored object: nested dicts (and lists) of arrays and
    plain values; unknown classes as ``Opaque`` placeholders. A TorchScript
    archive: its module's state dict (dotted name -> array).

  Raises:
    CheckpointError: missing, unreadable, truncated or of an unknown format.
  """
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such file")
  if os.path.isdir(path):
    raise CheckpointError(f"{path} is a directory; give the checkpoint file itself")
  with open(path, "rb") as f:
    head = f.read(8)
  if not head:
    raise CheckpointError(f"{path}: the file is empty")
  try:
    if path.endswith(".safetensors"):
      return _read_safetensors(path)
    if head[:4] == b"PK\x03\x04":
      return _read_torch_zip(path)
    if head[:4] == b"\x80\x02\x8a\x0a":  # pickle protocol 2, then torch's magic number
      raise CheckpointError(
        f"{path}: a legacy (pre-1.6, non-zip) torch file; load it with torch and save it again"
        " with torch.save(..., _use_new_zipfile_serialization=True)"
      )
    if 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF):  # a msgpack map
      return _read_msgpack(path)
  except CheckpointError:
    raise
  except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, KeyError, ValueError, OSError) as e:
    raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {e})") from None
  raise CheckpointError(f"{path}: unknown checkpoint format (first bytes {head[:4]!r})")
