"""Builds a quantizer from a config spec: ``{"type": "fsq", "levels": [8, 5, 5, 5]}``.

``_TYPES`` is the one list of quantizer types (type name -> class);
``QUANTIZER_TYPES`` exposes its names, e.g. for config validation. The spec
holds the class's keyword arguments; the latent dimension comes from the model
(``code_dim``), so one spec works for any encoder width. Residual, grouped,
factorized and multi-scale specs nest the spec of the quantizer they wrap::

  {"type": "residual", "num_levels": 4,
   "quantizer": {"type": "vq", "codebook_size": 1024}}
  {"type": "factorized", "num_groups": 2, "disentangle_weight": 0.1,
   "quantizer": {"type": "vq", "codebook_size": 16384, "l2_normalize": True}}
  {"type": "multiscale", "scales": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
   "quantizer": {"type": "vq", "codebook_size": 4096}}
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from flax import nnx

from vqtok.config_fields import ConfigFields
from vqtok.quantizers.base import Quantizer
from vqtok.quantizers.bsq import BSQ
from vqtok.quantizers.dual import DualCodebook
from vqtok.quantizers.factorized import Factorized
from vqtok.quantizers.fsq import FSQ
from vqtok.quantizers.grouped import Grouped
from vqtok.quantizers.gsq import GSQ
from vqtok.quantizers.ibq import IBQ
from vqtok.quantizers.lfq import LFQ
from vqtok.quantizers.multiscale import MultiScaleResidual
from vqtok.quantizers.residual import Residual
from vqtok.quantizers.vq import VectorQuantizer

_TYPES: dict[str, type[Quantizer]] = {
  "vq": VectorQuantizer,
  "fsq": FSQ,
  "lfq": LFQ,
  "bsq": BSQ,
  "ibq": IBQ,
  "gsq": GSQ,
  "residual": Residual,
  "grouped": Grouped,
  "factorized": Factorized,
  "multiscale": MultiScaleResidual,
  "dual": DualCodebook,
}
#: The quantizer type names a spec may give, in registry order.
QUANTIZER_TYPES: tuple[str, ...] = tuple(_TYPES)
_WRAPPERS = ("residual", "grouped", "factorized", "multiscale")
# Set by build_quantizer itself, never by the spec.
_RESERVED = ("code_dim", "rngs", "quantizers", "make")


def _to_dict(spec: Any) -> dict[str, Any]:
  if hasattr(spec, "to_dict"):  # ml_collections.ConfigDict
    spec = spec.to_dict()
  if not isinstance(spec, Mapping):
    raise ValueError(f"quantizer spec must be a mapping with a 'type'; got {type(spec).__name__}")
  return dict(spec)


def quantizer_class(type_name: str) -> type[Quantizer]:
  """The quantizer class registered under ``type_name`` (e.g. ``"fsq"``)."""
  if type_name not in _TYPES:
    raise ValueError(f"unknown quantizer type {type_name!r}; expected one of {sorted(_TYPES)}")
  return _TYPES[type_name]


def build_quantizer(spec: Mapping[str, Any], *, code_dim: int, rngs: nnx.Rngs) -> Quantizer:
  """Builds the quantizer described by ``spec`` for ``code_dim``-channel latents.

  Args:
    spec: mapping (dict or ConfigDict) with ``type`` in ``QUANTIZER_TYPES``
      and the class's keyword arguments; residual/grouped take the wrapped
      quantizer's spec under ``quantizer``.
    code_dim: latent dimension of the encoder output (the quantizer's
      ``code_dim``).
    rngs: parameter initialisation (and quantizer dropout) randomness.

  Returns:
    The quantizer, with the given ``code_dim``.

  Raises:
    ValueError: unknown type, unknown or reserved keyword, missing ``quantizer``
      for a wrapper.
  """
  kwargs = _to_dict(spec)
  if "type" not in kwargs:
    raise ValueError(f"quantizer spec has no 'type': {kwargs}")
  type_name = kwargs.pop("type")
  cls = quantizer_class(type_name)
  for key in _RESERVED:
    if key in kwargs:
      raise ValueError(f"quantizer spec for {type_name!r} must not set {key!r}; it is supplied by build_quantizer")
  inner_spec = None
  if type_name in _WRAPPERS:
    if "quantizer" not in kwargs:
      raise ValueError(f"{type_name!r} quantizer spec needs a nested 'quantizer' spec")
    inner_spec = _to_dict(kwargs.pop("quantizer"))
  params = inspect.signature(cls.__init__).parameters
  unknown = sorted(k for k in kwargs if k not in params or k == "self")
  if unknown:
    raise ValueError(f"unknown argument(s) {unknown} for quantizer type {type_name!r} ({cls.__name__})")
  if type_name == "residual":
    make = lambda: build_quantizer(inner_spec, code_dim=code_dim, rngs=rngs)
    return cls(make=make, code_dim=code_dim, rngs=rngs, **kwargs)
  if type_name == "multiscale":
    inner = build_quantizer(inner_spec, code_dim=code_dim, rngs=rngs)
    return cls(inner, code_dim=code_dim, rngs=rngs, **kwargs)
  if type_name in ("grouped", "factorized"):
    groups = kwargs.get("num_groups")
    if not isinstance(groups, int) or groups < 1 or code_dim % groups:
      raise ValueError(
        f"{type_name} quantizer: num_groups={groups!r} must be a positive int dividing code_dim={code_dim}"
      )
    make = lambda: build_quantizer(inner_spec, code_dim=code_dim // groups, rngs=rngs)
    return cls(make=make, code_dim=code_dim, rngs=rngs, **kwargs)
  return cls(code_dim=code_dim, rngs=rngs, **kwargs)


def _check_config(config: Any, check_paths: bool) -> None:
  # Built abstractly (no allocation): the classes check their own arguments.
  try:
    nnx.eval_shape(lambda: build_quantizer(config.quantizer, code_dim=int(config.model.code_dim), rngs=nnx.Rngs(0)))
  except (TypeError, ValueError) as e:
    raise ValueError(f"config field quantizer: {e}") from e


#: ``config.quantizer``: the keyword arguments of the class its ``type`` names (``build_quantizer``).
CONFIG = ConfigFields(
  "quantizer",
  {
    "type": "fsq",  # vq | fsq | lfq | bsq | ibq | gsq | residual | grouped | factorized | multiscale | dual
    # lfq / bsq: bit_order = "msb_first" (default) | "lsb_first"; tokenizer directories must record it
    "levels": (8, 5, 5, 5),
  },
  choices={"type": QUANTIZER_TYPES},
  check=_check_config,
  open=True,
)
