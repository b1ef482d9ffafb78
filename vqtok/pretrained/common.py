"""What the family converters share: picking the weights out of a file, reading sizes off them.

A converter infers the variant (VQ-16 or VQ-8, 1024 or 16384 codes, the widths)
from the tensors themselves, so one command converts every published size
and the reduced-width parity fixtures alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vqtok.files import flatten
from vqtok.pretrained.reader import CheckpointError


def pick_state_dict(obj: Any, keys: Sequence[str], source: str, family: str) -> dict[str, np.ndarray]:
  """The first of ``keys`` present in the file's top-level dict, flattened to name -> array."""
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{source}: expected a dict at the top of a {family} checkpoint; got {type(obj).__name__}")
  for key in keys:
    if key in obj and isinstance(obj[key], Mapping):
      return flatten(obj[key], arrays_only=True)
  found = ", ".join(repr(k) for k in list(obj)[:8])
  raise CheckpointError(f"{source}: not a {family} checkpoint: none of {list(keys)} at the top level (found {found})")


def require(tensors: Mapping[str, np.ndarray], name: str, source: str, family: str, ndim: int | None = None) -> tuple:
  """The shape of tensor ``name``; a CheckpointError naming it when missing or of the wrong rank."""
  if name not in tensors:
    raise CheckpointError(f"{source}: not a {family} checkpoint: tensor {name!r} is missing")
  shape = tuple(np.shape(tensors[name]))
  if ndim is not None and len(shape) != ndim:
    raise CheckpointError(f"{source}: tensor {name!r} has shape {shape}; expected {ndim} axes")
  return shape


def indices(tensors: Mapping[str, np.ndarray], pattern: str) -> list[int]:
  """Sorted distinct values of the first group of ``pattern`` over the tensor names."""
  rx = re.compile(pattern)
  return sorted({int(m.group(1)) for name in tensors if (m := rx.match(name))})


def count(tensors: Mapping[str, np.ndarray], pattern: str, source: str, what: str) -> int:
  """How many consecutive indices ``pattern`` finds (0, 1, ... n-1); an error on gaps."""
  found = indices(tensors, pattern)
  if not found:
    raise CheckpointError(f"{source}: no {what} found (tensors matching {pattern!r}); is it of another family?")
  if found != list(range(len(found))):
    raise CheckpointError(f"{source}: {what} are numbered {found}; expected 0..{len(found) - 1}")
  return len(found)


def multiples(widths: Sequence[int], base: int, source: str) -> tuple[int, ...]:
  """``channel_mult`` from per-level widths and the base width."""
  if any(w % base for w in widths):
    raise CheckpointError(f"{source}: level widths {list(widths)} are not multiples of the base width {base}")
  return tuple(w // base for w in widths)


def lit_ema_state_dict(
  tensors: Mapping[str, np.ndarray], *, ema: bool, source: str, family: str, frozen: Sequence[str] = ()
) -> dict[str, np.ndarray]:
  """The model's weights, or with ``ema`` the copies Lightning's ``LitEma`` keeps of them.

  ``LitEma`` stores each trainable parameter as the buffer ``model_ema.<name
  without dots>`` (SEED-Voken src/*/modules/ema.py), so the copy of
  ``encoder.conv_in.weight`` is ``model_ema.encoderconv_inweight``. The
  training loss's networks (``loss.*``) are left out either way. Parameters
  trained with ``requires_grad=False`` (``frozen``, e.g. SimVQ's codebook) have
  no copy: the model's own tensor is taken.
  """
  shadow = {k[len("model_ema.") :]: v for k, v in tensors.items() if k.startswith("model_ema.")}
  model = {k: v for k, v in tensors.items() if not k.startswith(("model_ema.", "loss."))}
  if not ema:
    return model
  if not shadow:
    raise CheckpointError(f"{source}: this {family} checkpoint holds no EMA weights (model_ema.*); pass --noema")
  out = {}
  for name in model:
    if name in frozen:
      out[name] = model[name]
      continue
    key = name.replace(".", "")
    if key not in shadow:
      raise CheckpointError(
        f"{source}: the EMA copy of {name!r} (model_ema.{key}) is missing; is the checkpoint of another family?"
      )
    out[name] = shadow[key]
  return out


def has_lit_ema(obj: Any) -> bool:
  """Whether a Lightning checkpoint's ``state_dict`` holds ``LitEma`` copies (``model_ema.*``)."""
  sd = obj.get("state_dict") if isinstance(obj, Mapping) else None
  return isinstance(sd, Mapping) and any(str(k).startswith("model_ema.") for k in sd)


def taming_encoder(tensors: Mapping[str, np.ndarray], source: str, family: str) -> dict[str, Any]:
  """The CNN geometry of a taming-layout encoder (taming, IBQ, VAR), read off its tensor shapes.

  Returns ``channels``, ``channel_mult``, ``num_res_blocks``, ``attention`` and
  ``z_channels`` for ``vqtok.config.cnn_config``; attention anywhere but the
  lowest level is refused.
  """
  ch = require(tensors, "encoder.conv_in.weight", source, family, 4)[0]
  levels = count(tensors, r"encoder\.down\.(\d+)\.", source, "encoder levels")
  blocks = count(tensors, r"encoder\.down\.0\.block\.(\d+)\.", source, "level-0 blocks")
  widths = [require(tensors, f"encoder.down.{i}.block.0.conv1.weight", source, family)[0] for i in range(levels)]
  with_attn = indices(tensors, r"encoder\.down\.(\d+)\.attn\.")
  if with_attn not in ([], [levels - 1]):
    raise CheckpointError(
      f"{source}: attention at encoder levels {with_attn}; vqtok's CNN puts it at the lowest level only"
    )
  return {
    "channels": ch,
    "channel_mult": multiples(widths, ch, source),
    "num_res_blocks": blocks,
    "attention": bool(with_attn),
    "z_channels": require(tensors, "encoder.conv_out.weight", source, family, 4)[0],
  }


def lightning_state_dict(
  obj: Any, *, ema: bool, source: str, family: str, frozen: Sequence[str] = ()
) -> dict[str, np.ndarray]:
  """The model's tensors of a Lightning checkpoint with ``LitEma`` copies: the EMA ones with ``ema``."""
  tensors = pick_state_dict(obj, ("state_dict",), source, family)
  return lit_ema_state_dict(tensors, ema=ema, source=source, family=family, frozen=frozen)
