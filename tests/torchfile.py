"""Writes files in torch.save's zip format without torch, for converter tests.

Only what published checkpoints hold: nested dicts (plain or OrderedDict) of
float/int arrays, strings, ints, floats, bools and None. The pickle is written
opcode by opcode, with the same globals torch.save emits
(``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage`` ...), so
``torch.load`` reads these files too (checked by scripts/make_parity_goldens.py).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

_STORAGE = {
  np.dtype(np.float32): "FloatStorage",
  np.dtype(np.float16): "HalfStorage",
  np.dtype(np.float64): "DoubleStorage",
  np.dtype(np.int64): "LongStorage",
  np.dtype(np.int32): "IntStorage",
  np.dtype(np.uint8): "ByteStorage",
  np.dtype(np.bool_): "BoolStorage",
}


class _Writer:
  def __init__(self):
    self.out = io.BytesIO()
    self.storages: list[np.ndarray] = []

  def op(self, code: bytes, payload: bytes = b"") -> None:
    self.out.write(code + payload)

  def global_(self, module: str, name: str) -> None:
    self.op(pickle.GLOBAL, f"{module}\n{name}\n".encode())

  def string(self, s: str) -> None:
    data = s.encode()
    self.op(pickle.BINUNICODE, struct.pack("<I", len(data)) + data)

  def int_(self, v: int) -> None:
    if 0 <= v < 2**31:
      self.op(pickle.BININT, struct.pack("<i", v))
    else:
      data = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
      self.op(pickle.LONG1, bytes([len(data)]) + data)

  def tuple_(self, items) -> None:
    self.op(pickle.MARK)
    for x in items:
      self.value(x)
    self.op(pickle.TUPLE)

  def ordered_dict(self) -> None:
    self.global_("collections", "OrderedDict")
    self.op(pickle.EMPTY_TUPLE)
    self.op(pickle.REDUCE)

  def tensor(self, a: np.ndarray) -> None:
    a = np.ascontiguousarray(a)
    if a.dtype not in _STORAGE:
      raise TypeError(f"no torch storage for dtype {a.dtype}")
    key = str(len(self.storages))
    self.storages.append(a)
    self.global_("torch._utils", "_rebuild_tensor_v2")
    self.op(pickle.MARK)
    # persistent id: ('storage', torch.<Type>Storage, key, 'cpu', numel)
    self.op(pickle.MARK)
    self.string("storage")
    self.global_("torch", _STORAGE[a.dtype])
    self.string(key)
    self.string("cpu")
    self.int_(int(a.size))
    self.op(pickle.TUPLE)
    self.op(pickle.BINPERSID)
    self.int_(0)
    self.tuple_(list(a.shape))
    strides = [int(np.prod(a.shape[i + 1 :], dtype=np.int64)) for i in range(a.ndim)]
    self.tuple_(strides)
    self.op(pickle.NEWFALSE)
    self.ordered_dict()
    self.op(pickle.TUPLE)
    self.op(pickle.REDUCE)

  def value(self, v: Any) -> None:
    if isinstance(v, np.ndarray):
      self.tensor(v)
    elif isinstance(v, dict):
      self.ordered_dict() if type(v) is not dict else self.op(pickle.EMPTY_DICT)
      if v:
        self.op(pickle.MARK)
        for k, x in v.items():
          self.value(k)
          self.value(x)
        self.op(pickle.SETITEMS)
    elif isinstance(v, bool):
      self.op(pickle.NEWTRUE if v else pickle.NEWFALSE)
    elif isinstance(v, int):
      self.int_(v)
    elif isinstance(v, float):
      self.op(pickle.BINFLOAT, struct.pack(">d", v))
    elif isinstance(v, str):
      self.string(v)
    elif v is None:
      self.op(pickle.NONE)
    elif isinstance(v, (list, tuple)):
      if isinstance(v, list):
        self.op(pickle.EMPTY_LIST)
        if v:
          self.op(pickle.MARK)
          for x in v:
            self.value(x)
          self.op(pickle.APPENDS)
      else:
        self.tuple_(v)
    else:
      raise TypeError(f"cannot write {type(v).__name__}")


def save(obj: Any, path: str, *, archive_name: str = "archive") -> None:
  """Writes ``obj`` (dicts of NumPy arrays and plain values) like ``torch.save``."""
  w = _Writer()
  w.op(pickle.PROTO, bytes([2]))
  w.value(obj)
  w.op(pickle.STOP)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr(f"{archive_name}/data.pkl", w.out.getvalue())
    z.writestr(f"{archive_name}/byteorder", "little")
    for i, a in enumerate(w.storages):
      z.writestr(f"{archive_name}/data/{i}", a.astype(a.dtype.newbyteorder("<")).tobytes())
    z.writestr(f"{archive_name}/version", "3\n")
