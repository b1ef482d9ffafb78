"""SigLIP image towers as feature teachers, from big_vision's published ``.npz`` files.

Published by google-research/big_vision (models/proj/image_text/two_towers.py
``VANITY_NAMES``, the SigLIP colab configs/proj/image_text/SigLIP_demo.ipynb)
as ``webli_{en,i18n}_{b16,l16,so400m}_<res>_<id>.npz``: ``np.savez`` of the
two-tower model's flattened parameters, ``/``-separated names under
``params/``: ``img/`` (the image tower, big_vision/models/vit.py ``_Model``
with ``pool_type="map"``), ``txt/`` (the text tower), ``t`` and ``b`` (the
sigmoid loss's temperature and bias). Only ``img/`` is read; its Flax arrays
keep their layout (Dense kernels (in, out), attention kernels
(in, heads, head_dim), the patch conv (p, p, 3, D)).

Quirks, each from the reference:
  * A model trained with ``scan=True`` stores its blocks stacked
    (``Transformer/encoderblock/...`` with a leading depth axis; vit.py
    ``scan_to_pyloop``); they are split into ``encoderblock_<i>`` first.
  * Files written before optax hold ``opt/target/`` instead of ``params/``,
    some hold the parameters at the top (big_vision/utils.py ``load_params``);
    a file of the image tower alone (what ``load_params("file.npz:img")``
    gives, saved) is read as ``img/``.
  * The image tower's Dense ``head`` exists only when the model was built with
    an image output size (``out_dim``); the published SigLIP files have none
    (the colab's ``out_dim=(None, EMBDIM)``).
  * Preprocessing (the colab's ``resize(RES)|value_range(-1, 1)``) and the
    resolution are not in the weights: the resolution is the position grid
    times the patch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vqtok.models.siglip import MEAN, STD
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError

NAME = "siglip"
FILES = "webli_{en,i18n}_{b16,l16,so400m}_<res>_*.npz (big_vision SigLIP; the image tower)"
IGNORE = (r"txt\..*", r"t", r"b")
_PREFIXES = ("params/", "opt/target/")
_SCANNED = re.compile(r"img/Transformer/encoderblock/(.+)")


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  """The two-tower file's arrays by dotted name (``img.Transformer.encoderblock_0...``), blocks unstacked."""
  if ema:
    raise CheckpointError(f"{source}: SigLIP checkpoints hold no EMA weights; drop --ema")
  if not isinstance(obj, Mapping) or not all(isinstance(v, np.ndarray) for v in obj.values()):
    raise CheckpointError(f"{source}: not a SigLIP checkpoint: expected big_vision's .npz of named arrays")
  flat = dict(obj)
  for prefix in _PREFIXES:
    if any(k.startswith(prefix) for k in flat):
      flat = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
      break
  if (
    not any(k.startswith("img/") for k in flat)
    and "embedding/kernel" in flat
    and "Transformer/encoder_norm/scale" in flat
  ):
    flat = {f"img/{k}": v for k, v in flat.items()}  # the image tower alone (load_params's ``file.npz:img``)
  if not any(k.startswith("img/") for k in flat):
    found = ", ".join(sorted(flat)[:4])
    what = "a text tower only" if any(k.startswith("txt/") for k in flat) else f"found {found}"
    raise CheckpointError(
      f"{source}: not a SigLIP checkpoint: no image tower (no 'img/' arrays; {what}); give a two-tower webli_*.npz"
    )
  if "img/MAPHead_0/probe" not in flat:
    raise CheckpointError(f"{source}: not a SigLIP image tower: no MAP head (img/MAPHead_0/probe)")
  out = {}
  for k, v in flat.items():
    if m := _SCANNED.fullmatch(k):
      for i, layer in enumerate(v):
        out[f"img/Transformer/encoderblock_{i}/{m.group(1)}"] = layer
    else:
      out[k] = v
  return {k.replace("/", "."): v for k, v in out.items()}


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The feature-teacher config of the checkpoint, read off the tensor shapes."""
  patch = common.require(tensors, "img.embedding.kernel", source, NAME, 4)
  p, width = patch[0], patch[3]
  if patch[1] != p or patch[2] != 3:
    raise CheckpointError(f"{source}: img/embedding/kernel has shape {patch}; expected (p, p, 3, D)")
  depth = common.count(tensors, r"img\.Transformer\.encoderblock_(\d+)\.", source, "transformer blocks")
  mlp = common.require(tensors, "img.Transformer.encoderblock_0.MlpBlock_0.Dense_0.kernel", source, NAME, 2)[1]
  heads = common.require(
    tensors, "img.Transformer.encoderblock_0.MultiHeadDotProductAttention_0.query.kernel", source, NAME, 3
  )[1]
  n = common.require(tensors, "img.pos_embedding", source, NAME, 3)[1]
  grid = math.isqrt(n)
  if grid * grid != n:
    raise CheckpointError(f"{source}: img/pos_embedding has {n} rows; expected a square grid (no class token)")
  if "img.cls" in tensors:
    raise CheckpointError(f"{source}: an image tower with a class token (pool_type 'tok') is not SigLIP's")
  embed = common.require(tensors, "img.head.kernel", source, NAME, 2)[1] if "img.head.kernel" in tensors else 0
  res = int(grid * p)
  return ml_collections.ConfigDict(
    {
      "teacher": NAME,
      "width": int(width),
      "depth": int(depth),
      "mlp_dim": int(mlp),
      "num_heads": int(heads),
      "patch_size": int(p),
      "pos_grid": int(grid),
      "embed_dim": int(embed),
      # The colab's resize(RES)|value_range(-1, 1): the whole image squashed to RES x RES
      # (tf.image.resize bilinear, no antialiasing, back to uint8), then [-1, 1].
      "preprocess": "squash_bilinear",
      "resize_size": res,
      "resolution": res,
      "mean": list(MEAN),
      "std": list(STD),
    }
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path (every array keeps its Flax layout)."""
  blk, to = r"img\.Transformer\.encoderblock_(\d+)", "transformer.blocks.{0}"
  attn = r"MultiHeadDotProductAttention_0\.(query|key|value|out)\.(kernel|bias)"
  norm = r"LayerNorm_(0|1)\.(scale|bias)"
  mlp = r"MlpBlock_0\.Dense_(0|1)\.(kernel|bias)"
  mlp_name = lambda i, leaf: f"mlp{int(i) + 1}.{leaf}"
  return (
    L.Rule(r"img\.embedding\.(kernel|bias)", "patch_embed.{1}"),
    L.Rule(r"img\.pos_embedding", "pos_embed.embedding"),
    L.Rule(r"img\.Transformer\.encoder_norm\.(scale|bias)", "transformer.norm.{1}"),
    L.under(blk, to, attn, lambda p, leaf: f"attn.{p}.{leaf}", L.as_is),
    L.under(blk, to, norm, lambda i, leaf: f"norm{int(i) + 1}.{leaf}", L.as_is),
    L.under(blk, to, mlp, mlp_name, L.as_is),
    L.Rule(r"img\.MAPHead_0\.probe", "map_head.probe"),
    L.Rule(rf"img\.MAPHead_0\.{attn}", "map_head.attn.{1}.{2}"),
    L.Rule(r"img\.MAPHead_0\.LayerNorm_0\.(scale|bias)", "map_head.norm.{1}"),
    L.Rule(rf"img\.MAPHead_0\.{mlp}", lambda m: f"map_head.{mlp_name(*m.groups())}"),
    L.Rule(r"img\.head\.(kernel|bias)", "head.{1}"),
  )
