"""BSQ-ViT tokenizers (Zhao, Xiong and Krähenbühl, 2024, arXiv:2406.07548): 18 and 36 bits at 256 px.

Published by zhaoyue-zephyrus/bsq-vit (README, "Image Reconstruction") as
``checkpoint.pt``: the training checkpoint of scripts/main_image_tokenizer.py,
whose ``state_dict`` is the DDP-wrapped ``VITBSQModel``'s (names prefixed
``module.``) and ``ema_state_dict`` timm's ``ModelEmaV2`` around it
(``module.module.``); transcoder/models/bsqvit.py ``init_from_ckpt`` takes the
EMA weights first, and so does the converter (``--noema``: the raw ones).
Names (transcoder/models/transformer.py, bsqvit.py): ``encoder.*`` and
``decoder.*`` (ViTs with CLIP-style blocks under ``transformer.resblocks``),
``quant_embed`` (width -> bits), ``quantize.basis`` / ``group_basis`` (index
weights; buffers), ``post_quant_embed`` (bits -> width). Images are [-1, 1]
(the configs' ``data.zero_mean``).

Quirks, each from the reference:
  * The patch embedding ``encoder.conv1`` is a bias-free Linear over the
    patch flattened as ``(c sh sw)`` (TransformerEncoder.forward's
    ``rearrange``): a p x p conv kernel once reshaped (vit family ``bsqvit``).
  * The decoder's pixel head is ``ffn`` (Linear to ``dim_ffn_output``, 3072,
    and tanh) then ``conv_out`` (Linear to 3 p^2 values in ``(c sh sw)``
    order, reordered here to vqtok's ``(sh sw c)``).
  * The latent is l2-normalised before the sign (``l2_norm``) and the codes
    scaled by 1/sqrt(bits) (``post_q_l2_norm``): vqtok's ``BSQ``. The index
    weighs channel i by ``2 ** (bits - 1 - i)`` (``quantize.basis``): msb first.
  * The head count is not stored; BSQ-ViT's ViT-B (12 heads of 768) has heads
    of width 64, as every size of its transformer.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vqtok.config import default_config
from vqtok.models.discriminator import MAGVIT_STYLEGAN
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError

NAME = "bsq-vit"
FILES = "checkpoint.pt (18 or 36 bits; EMA weights by default, --noema for the raw ones)"
# Index weights: checked against the msb-first order in ``config``, not parameters.
IGNORE = (r"quantize\.basis", r"quantize\.group_basis")
HEAD_WIDTH = 64
# An index is an int32: more bits are split into groups of at most this many (BSQ index_groups).
MAX_INDEX_BITS = 30
# DDP adds ``module.``, ModelEmaV2 around DDP ``module.module.`` (one ``module.`` without DDP).
_PREFIXES = ("module.module.", "module.")


def default_ema(obj: Any) -> bool:
  """EMA weights when the file has them, as ``init_from_ckpt`` does."""
  return isinstance(obj, Mapping) and isinstance(obj.get("ema_state_dict"), Mapping)


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  """The model's tensors (EMA or raw), their DDP / ModelEmaV2 prefixes removed, attention q/k/v split."""
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{source}: expected a dict at the top of a {NAME} checkpoint; got {type(obj).__name__}")
  key = "ema_state_dict" if ema else "state_dict"
  if ema and not isinstance(obj.get(key), Mapping) and isinstance(obj.get("state_dict"), Mapping):
    raise CheckpointError(f"{source}: this {NAME} checkpoint holds no EMA weights (ema_state_dict); pass --noema")
  tensors = common.pick_state_dict(obj, (key,), source, NAME)
  out = {}
  for k, v in tensors.items():
    prefix = next((p for p in _PREFIXES if k.startswith(p)), "")
    out[k[len(prefix) :]] = v
  if "quant_embed.weight" not in out:
    raise CheckpointError(f"{source}: not a {NAME} checkpoint: tensor {key}[module.quant_embed.weight] is missing")
  return L.split_in_proj(out, source)


def _vit(tensors: Mapping[str, np.ndarray], side: str, source: str) -> dict[str, int]:
  """Width, depth, MLP width, heads and grid of the encoder or decoder ViT."""
  depth = common.count(tensors, rf"{side}\.transformer\.resblocks\.(\d+)\.", source, f"{side} transformer blocks")
  mlp, width = common.require(tensors, f"{side}.transformer.resblocks.0.mlp.c_fc.weight", source, NAME, 2)
  if width % HEAD_WIDTH:
    raise CheckpointError(f"{source}: {side} width {width} is not a multiple of BSQ-ViT's head width {HEAD_WIDTH}")
  n = common.require(tensors, f"{side}.positional_embedding", source, NAME, 2)[0]
  grid = math.isqrt(n)
  if grid * grid != n:
    raise CheckpointError(f"{source}: {side}.positional_embedding has {n} rows; expected a square grid")
  if f"{side}.ln_pre.weight" not in tensors:  # ln_pre: False changes the blocks' input (and the patch bias)
    raise CheckpointError(f"{source}: {side}.ln_pre is missing; BSQ-ViT models without ln_pre do not convert")
  return dict(width=width, depth=depth, mlp_dim=mlp, num_heads=width // HEAD_WIDTH, grid=grid)


def _check_basis(tensors: Mapping[str, np.ndarray], bits: int, source: str) -> None:
  basis = tensors.get("quantize.basis")
  if basis is not None and not np.array_equal(np.asarray(basis), 2 ** np.arange(bits - 1, -1, -1)):
    raise CheckpointError(f"{source}: quantize.basis is not 2 ** ({bits - 1} ... 0); vqtok reads BSQ-ViT ids msb first")


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint, read off the tensor shapes."""
  bits, width = common.require(tensors, "quant_embed.weight", source, NAME, 2)
  enc, dec = _vit(tensors, "encoder", source), _vit(tensors, "decoder", source)
  if enc["grid"] != dec["grid"]:
    raise CheckpointError(f"{source}: encoder grid {enc['grid']} and decoder grid {dec['grid']} differ")
  if "encoder.conv1.bias" in tensors:
    raise CheckpointError(f"{source}: encoder.conv1 has a bias; BSQ-ViT's patch embedding with ln_pre has none")
  patch_in = common.require(tensors, "encoder.conv1.weight", source, NAME, 2)[1]
  patch = math.isqrt(patch_in // 3)
  if 3 * patch * patch != patch_in:
    raise CheckpointError(f"{source}: encoder.conv1.weight takes {patch_in} values; expected 3 x patch**2")
  pixels = common.require(tensors, "decoder.conv_out.weight", source, NAME, 2)[0]
  if pixels != 3 * patch * patch:  # logit_laplace doubles it
    raise CheckpointError(f"{source}: decoder.conv_out gives {pixels} values; expected 3 x patch**2 (no logit-Laplace)")
  hidden = (
    common.require(tensors, "decoder.ffn.0.weight", source, NAME, 2)[0] if "decoder.ffn.0.weight" in tensors else 0
  )
  _check_basis(tensors, bits, source)
  c = default_config()
  c.image_size = int(enc["grid"] * patch)
  c.model.update(
    encoder="vit",
    vit_family="bsqvit",
    posemb="learn",
    code_dim=int(bits),
    patch_size=int(patch),
    pixel_head_hidden=int(hidden),
    **{key: int(enc[key]) for key in ("width", "depth", "mlp_dim", "num_heads")},
  )
  if any(dec[key] != enc[key] for key in ("width", "depth", "mlp_dim")):
    c.model.update({f"decoder_{key}": int(dec[key]) for key in ("width", "depth", "mlp_dim", "num_heads")})
  c.quantizer = ml_collections.ConfigDict({"type": "bsq", "bits": int(bits), "bit_order": "msb_first"})
  if bits > MAX_INDEX_BITS:  # 36 bits: two int32 ids of 18 bits, most significant first
    groups = next(g for g in range(2, bits + 1) if bits % g == 0 and bits // g <= MAX_INDEX_BITS)
    c.quantizer.index_groups = int(groups)
  c.data.preprocess = "torchvision_lanczos_center_crop"  # the configs' evaluation.interpolation
  c.discriminator.update(MAGVIT_STYLEGAN)
  return c


def _patch_embed(patch: int) -> L.Layout:
  """``conv1`` (width, c sh sw) -> a (p, p, 3, width) conv kernel."""
  return lambda x: L.conv(x.reshape(x.shape[0], 3, patch, patch))


def _pixels_out(patch: int) -> L.Layout:
  """``conv_out`` weight (c sh sw, in) -> Flax kernel (in, sh sw c): vqtok unpatchifies channels last."""
  return lambda x: L.linear(x.reshape(3, patch, patch, -1).transpose(1, 2, 0, 3).reshape(x.shape[0], -1))


def _pixels_out_bias(patch: int) -> L.Layout:
  return lambda x: x.reshape(3, patch, patch).transpose(1, 2, 0).reshape(-1)


def _vit_rules(side: str, heads: int) -> tuple[L.Rule, ...]:
  return (
    L.Rule(rf"{side}\.positional_embedding", f"{side}.posemb.embedding", lambda x: x[None]),
    *L.torch_norm(rf"{side}\.ln_pre", f"{side}.transformer.ln_pre"),
    *L.torch_norm(rf"{side}\.ln_post", f"{side}.transformer.norm"),
    *L.torch_clip_block(rf"{side}\.transformer\.resblocks\.(\d+)", side + ".transformer.blocks.{0}", heads),
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path."""
  p = int(c.model.patch_size)
  heads = int(c.model.num_heads)
  dec_heads = int(c.model.get("decoder_num_heads", 0) or heads)
  return (
    L.Rule(r"encoder\.conv1\.weight", "encoder.patch_embed.kernel", _patch_embed(p)),
    *_vit_rules("encoder", heads),
    *L.torch_linear(r"quant_embed", "encoder.head"),
    *L.torch_linear(r"post_quant_embed", "decoder.embed"),
    *_vit_rules("decoder", dec_heads),
    *L.torch_linear(r"decoder\.ffn\.0", "decoder.head_hidden"),
    L.Rule(r"decoder\.conv_out\.weight", "decoder.head.kernel", _pixels_out(p)),
    L.Rule(r"decoder\.conv_out\.bias", "decoder.head.bias", _pixels_out_bias(p)),
  )
