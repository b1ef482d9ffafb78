"""DINOv2 ViT-S/B/L/14 feature teachers, with and without registers, from the authors' ``.pth`` files.

Published by facebookresearch/dinov2 (dinov2/hub/backbones.py, downloaded by
``torch.hub``) as ``dinov2_vit{s,b,l}14[_reg4]_pretrain.pth``: a plain state
dict of ``DinoVisionTransformer`` (dinov2/models/vision_transformer.py) built
with ``block_chunks=0``, so the blocks are ``blocks.<i>.*``: ``cls_token``
(1, 1, D), ``pos_embed`` (1, 37 * 37 + 1, D), ``register_tokens`` (1, 4, D)
in the ``_reg4`` files, ``mask_token``, ``patch_embed.proj``, ``norm``.

Quirks, each from the reference:
  * ``attn.qkv`` stacks the query, key and value projections (dinov2/layers/
    attention.py ``Attention``, reshaped ``(B, N, 3, heads, D / heads)``);
    ``state_dict`` splits it into thirds before the table maps each third.
  * The head count is not stored; every published size (vit_small 384/6,
    vit_base 768/12, vit_large 1024/16) has heads of width 64.
  * ``mask_token`` is the masked-image-modelling token of training; features never use it.
  * The hub's models use ``interpolate_offset=0.1`` and no antialiasing (backbones.py
    ``_make_dinov2_model``); that is not in the weights, so it is written here.
  * ViT-g/14's SwiGLU MLP (``mlp.w12``) is refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vqtok.files import flatten
from vqtok.models.dinov2 import IMAGENET_MEAN, IMAGENET_STD
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError

NAME = "dinov2"
FILES = "dinov2_vit{s,b,l}14_pretrain.pth, dinov2_vit{s,b,l}14_reg4_pretrain.pth"
IGNORE = (r"mask_token",)
HEAD_WIDTH = 64
_QKV = (".attn.qkv.weight", ".attn.qkv.bias")


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  if ema:
    raise CheckpointError(f"{source}: DINOv2 checkpoints hold no EMA weights; drop --ema")
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{source}: expected a dict of tensors in a {NAME} checkpoint; got {type(obj).__name__}")
  flat = flatten(obj, arrays_only=True)
  if "cls_token" not in flat and isinstance(obj.get("teacher"), Mapping):  # a training checkpoint
    raise CheckpointError(f"{source}: a DINOv2 training checkpoint; give the published backbone (*_pretrain.pth)")
  if any(".mlp.w12." in k for k in flat):
    raise CheckpointError(f"{source}: a SwiGLU DINOv2 (ViT-g/14); only ViT-S/B/L/14 convert")
  return L.split_in_proj(flat, source, _QKV)


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The feature-teacher config of the checkpoint, read off the tensor shapes."""
  width = common.require(tensors, "cls_token", source, NAME, 3)[-1]
  depth = common.count(tensors, r"blocks\.(\d+)\.", source, "transformer blocks")
  mlp = common.require(tensors, "blocks.0.mlp.fc1.weight", source, NAME, 2)[0]
  patch = common.require(tensors, "patch_embed.proj.weight", source, NAME, 4)
  n = common.require(tensors, "pos_embed", source, NAME, 3)[1] - 1
  grid = math.isqrt(max(n, 0))
  if grid * grid != n or grid < 1:
    raise CheckpointError(f"{source}: pos_embed has {n + 1} rows; expected grid**2 + 1")
  if width % HEAD_WIDTH:
    raise CheckpointError(f"{source}: width {width} is not a multiple of DINOv2's head width {HEAD_WIDTH}")
  if patch[2] != patch[3] or patch[1] != 3:
    raise CheckpointError(f"{source}: patch_embed.proj.weight has shape {patch}; expected (D, 3, p, p)")
  regs = common.require(tensors, "register_tokens", source, NAME, 3)[1] if "register_tokens" in tensors else 0
  return ml_collections.ConfigDict(
    {
      "teacher": NAME,
      "width": int(width),
      "depth": int(depth),
      "mlp_dim": int(mlp),
      "num_heads": int(width // HEAD_WIDTH),
      "patch_size": int(patch[2]),
      "pos_grid": int(grid),
      "num_register_tokens": int(regs),
      "interpolate_offset": 0.1,
      # dinov2/data/transforms.py make_classification_eval_transform: Resize(256, bicubic),
      # CenterCrop(224), ImageNet mean and std.
      "resize_size": 256,
      "resolution": 224,
      "mean": list(IMAGENET_MEAN),
      "std": list(IMAGENET_STD),
    }
  )


def _add_batch(x: np.ndarray) -> np.ndarray:
  return x[0]


def _qkv_bias(heads: int) -> L.Layout:
  return lambda x: x.reshape(heads, -1)


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path."""
  heads = int(c.num_heads)
  blk, to = r"blocks\.(\d+)", "transformer.blocks.{0}"
  lin = lambda src, dst: (
    L.under(blk, to, rf"{src}\.weight", lambda: f"{dst}.kernel", L.linear),
    L.under(blk, to, rf"{src}\.bias", lambda: f"{dst}.bias", L.as_is),
  )
  return (
    L.Rule(r"cls_token", "cls_token", _add_batch),
    L.Rule(r"pos_embed", "pos_embed"),
    L.Rule(r"register_tokens", "register_tokens", _add_batch),
    *L.torch_conv(r"patch_embed\.proj", "patch_embed"),
    *L.torch_norm(r"norm", "transformer.norm"),
    *L.torch_norm(rf"{blk}\.norm1", f"{to}.norm1"),
    *L.torch_norm(rf"{blk}\.norm2", f"{to}.norm2"),
    L.under(blk, to, r"attn\.qkv\.weight\.(query|key|value)", lambda p: f"attn.{p}.kernel", L.heads_in(heads)),
    L.under(blk, to, r"attn\.qkv\.bias\.(query|key|value)", lambda p: f"attn.{p}.bias", _qkv_bias(heads)),
    L.under(blk, to, r"attn\.proj\.weight", lambda: "attn.out.kernel", L.heads_out(heads)),
    L.under(blk, to, r"attn\.proj\.bias", lambda: "attn.out.bias", L.as_is),
    *lin(r"mlp\.fc1", "mlp1"),
    *lin(r"mlp\.fc2", "mlp2"),
    L.under(blk, to, r"ls1\.gamma", lambda: "ls1", L.as_is),
    L.under(blk, to, r"ls2\.gamma", lambda: "ls2", L.as_is),
  )
