"""Published tokenizers: one converter per family, each a table of name and layout rules.

``convert(format, checkpoint)`` reads the file (no torch, no reference code),
infers the variant from its tensors, builds the vqtok tokenizer of that
config and fills every parameter through the family's rule table, so a
tensor without a rule, a parameter without a tensor or a shape mismatch is an
error that names the key.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import ml_collections
from flax import nnx

from vqtok import config as config_lib
from vqtok import feature_teacher, files, tokenizer_dir
from vqtok.models import build_tokenizer
from vqtok.pretrained import (
  bsqvit,
  clip,
  cosmos,
  dinov2,
  fqgan,
  gsq,
  ibq,
  layout,
  llamagen,
  maskgit,
  movq,
  one_d_piece,
  open_magvit2,
  open_magvit2_video,
  siglip,
  simvq,
  taming,
  titok,
  tokenflow,
  unitok,
  var,
  vidtok,
)
from vqtok.pretrained.reader import CheckpointError, read_checkpoint

#: Convertible formats: name -> family module (NAME, FILES, IGNORE, state_dict, config, table;
#: optionally default_ema(file) -> whether to take EMA weights when ``ema`` is not given, and for a
#: directory (diffusers' layout) read(path) -> the file's contents and weights_file(path) -> the
#: file its sha256 names; and options(file, source) -> keyword arguments of config that the file
#: holds besides its tensors, e.g. GSQ's quantizer normalisation).
FORMATS: dict[str, ModuleType] = {
  m.NAME: m
  for m in (
    *(llamagen, taming, maskgit, open_magvit2, open_magvit2_video, ibq, simvq, var, titok, one_d_piece, bsqvit),
    *(movq, gsq, fqgan, vidtok, cosmos, tokenflow, unitok),
  )
}

#: Convertible feature teachers (frozen vision foundation models): name -> family module
#: (NAME, FILES, IGNORE, state_dict, config, table), written as feature-teacher directories.
TEACHERS: dict[str, ModuleType] = {m.NAME: m for m in (dinov2, clip, siglip)}


def convert(
  format: str, checkpoint: str, *, ema: bool | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict, dict]:
  """Loads a published checkpoint as a vqtok tokenizer.

  Args:
    format: one of ``FORMATS``.
    checkpoint: the published file (movq: the diffusers model directory).
    ema: take the EMA weights (True) or the raw ones (False); None: the family's
      default (EMA where the reference evaluates with it: open-magvit2 (image and video), ibq, simvq, bsq-vit).

  Returns:
    ``(tokenizer, config, metadata)``; the metadata names the source file and its sha256.

  Raises:
    CheckpointError: an unreadable file, one of another family, or tensors that do not fit.
  """
  if format not in FORMATS:
    raise CheckpointError(f"unknown format {format!r}; expected one of {sorted(FORMATS | TEACHERS)}")
  family = FORMATS[format]
  source = os.path.basename(os.path.normpath(checkpoint))
  obj = getattr(family, "read", read_checkpoint)(checkpoint)
  if ema is None:
    ema = bool(getattr(family, "default_ema", lambda _: False)(obj))
  tensors = family.state_dict(obj, ema=ema, source=source)
  config = family.config(tensors, source, **getattr(family, "options", lambda *_: {})(obj, source))
  config_lib.validate_config(config, check_paths=False)
  # Built abstractly: every variable is then set from the file (apply_rules checks that none is left),
  # so the random initialisation, op by op, would be thrown away (~10 s of CPU for a small CNN).
  tokenizer = nnx.eval_shape(lambda: build_tokenizer(config, rngs=nnx.Rngs(0)))
  expected = files.shapes(tokenizer)
  mapped = layout.apply_rules(tensors, family.table(config), expected, ignore=family.IGNORE, source=source)
  tokenizer = files.assign(tokenizer, mapped, source=source)
  meta: dict[str, Any] = {
    "source": format,
    "source_file": source,
    "source_sha256": tokenizer_dir.file_sha256(getattr(family, "weights_file", lambda p: p)(checkpoint)),
    "weights": "ema" if ema else "model",
  }
  return tokenizer, config, meta


def convert_teacher(format: str, checkpoint: str) -> tuple[nnx.Module, ml_collections.ConfigDict, dict]:
  """Loads a published vision foundation model as a frozen feature teacher.

  Returns:
    ``(module, config, metadata)`` for ``feature_teacher.save``.

  Raises:
    CheckpointError: an unreadable file, one of another family, or tensors that do not fit.
  """
  if format not in TEACHERS:
    raise CheckpointError(f"unknown feature teacher {format!r}; expected one of {sorted(TEACHERS)}")
  family = TEACHERS[format]
  source = os.path.basename(checkpoint)
  tensors = family.state_dict(read_checkpoint(checkpoint), ema=False, source=source)
  config = family.config(tensors, source)
  module = feature_teacher.build(config)
  mapped = layout.apply_rules(tensors, family.table(config), files.shapes(module), ignore=family.IGNORE, source=source)
  files.assign(module, mapped, source=source)
  meta = {"source": format, "source_file": source, "source_sha256": tokenizer_dir.file_sha256(checkpoint)}
  return module, config, meta


__all__ = ["FORMATS", "TEACHERS", "CheckpointError", "convert", "convert_teacher", "read_checkpoint"]
