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
from vqtok import files, tokenizer_dir
from vqtok.models import build_tokenizer
from vqtok.pretrained import bsqvit, ibq, layout, llamagen, maskgit, open_magvit2, simvq, taming, titok, var
from vqtok.pretrained.reader import CheckpointError, read_checkpoint

#: Convertible formats: name -> family module (NAME, FILES, IGNORE, state_dict, config, table;
#: optionally default_ema(file) -> whether to take EMA weights when ``ema`` is not given).
FORMATS: dict[str, ModuleType] = {
  m.NAME: m for m in (llamagen, taming, maskgit, open_magvit2, ibq, simvq, var, titok, bsqvit)
}


def convert(
  format: str, checkpoint: str, *, ema: bool | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict, dict]:
  """Loads a published checkpoint as a vqtok tokenizer.

  Args:
    format: one of ``FORMATS``.
    checkpoint: the published file.
    ema: take the EMA weights (True) or the raw ones (False); None: the family's
      default (EMA where the reference evaluates with it: open-magvit2, ibq, simvq, bsq-vit).

  Returns:
    ``(tokenizer, config, metadata)``; the metadata names the source file and its sha256.

  Raises:
    CheckpointError: an unreadable file, one of another family, or tensors that do not fit.
  """
  if format not in FORMATS:
    raise CheckpointError(f"unknown format {format!r}; expected one of {sorted(FORMATS)}")
  family = FORMATS[format]
  source = os.path.basename(checkpoint)
  obj = read_checkpoint(checkpoint)
  if ema is None:
    ema = bool(getattr(family, "default_ema", lambda _: False)(obj))
  tensors = family.state_dict(obj, ema=ema, source=source)
  config = family.config(tensors, source)
  config_lib.validate_config(config, check_paths=False)
  tokenizer = build_tokenizer(config, rngs=nnx.Rngs(0))
  expected = files.shapes(tokenizer)
  mapped = layout.apply_rules(tensors, family.table(config), expected, ignore=family.IGNORE, source=source)
  files.assign(tokenizer, mapped, source=source)
  meta: dict[str, Any] = {
    "source": format,
    "source_file": source,
    "source_sha256": tokenizer_dir.file_sha256(checkpoint),
    "weights": "ema" if ema else "model",
  }
  return tokenizer, config, meta


__all__ = ["FORMATS", "CheckpointError", "convert", "read_checkpoint"]
