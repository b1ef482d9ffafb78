"""TiTok 1-D tokenizers (Yu et al., 2024, arXiv:2406.07550): TiTok-L-32, B-64, S-128 and the VQ-8k ones.

Published by bytedance/1d-tokenizer (README_TiTok.md) twice over: as
``tokenizer_titok_{l32,b64,s128}.bin`` (a plain torch state dict, at
huggingface.co/fun-research/TiTok) and as ``model.safetensors`` of the hub
repositories ``yucornetto/tokenizer_titok_*_imagenet`` (PyTorchModelHubMixin);
both hold the same flat names (modeling/titok.py ``TiTok``): ``latent_tokens``,
``encoder.*`` and ``decoder.*`` (modeling/modules/blocks.py TiTokEncoder /
TiTokDecoder, CLIP-style blocks with ``nn.MultiheadAttention``),
``quantize.embedding.weight`` (4096 x 12, l2-normalised at run time), and the
MaskGIT VQGAN that decodes the proxy-code logits: ``pixel_quantize.*`` (its
1024 x 256 codebook) and ``pixel_decoder.*`` (modeling/modules/maskgit_vqgan.py
Decoder). Images are [0, 1].

Quirks, each from the reference:
  * ``attn.in_proj_weight`` / ``in_proj_bias`` stack the query, key and value
    projections (torch ``nn.MultiheadAttention``); ``state_dict`` splits them
    into thirds before the table maps each third.
  * The head count is not stored; TiTok's sizes (blocks.py: small 512/8,
    base 768/12, large 1024/16) all have heads of width 64.
  * Only the two-stage (``finetune_decoder``) tokenizers hold a pixel decoder.
    The VQ-8k tokenizers (TiTok-BL-64, BL-128, SL-256: ``is_legacy: False``)
    read their latents in order, predict the pixels of each patch and add a
    3x3 ``conv_out`` (vit family ``titok_pixels``), and their codes are not
    l2-normalised; that setting is not stored in the weights, so it is taken
    from the kind of decoder. The VAE variants are refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vqtok.config import default_config
from vqtok.files import flatten
from vqtok.models.discriminator import MAGVIT_STYLEGAN
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError

NAME = "titok"
FILES = "tokenizer_titok_{l32,b64,s128}.bin, or model.safetensors of yucornetto/tokenizer_titok_*_imagenet (also VQ-8k)"
IGNORE = ()
HEAD_WIDTH = 64


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  if ema:
    raise CheckpointError(f"{source}: TiTok checkpoints hold no EMA weights; drop --ema")
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{source}: expected a dict of tensors in a {NAME} checkpoint; got {type(obj).__name__}")
  flat = flatten(obj, arrays_only=True)
  if "latent_tokens" not in flat:  # a training file that nests the weights
    for key in ("state_dict", "model"):
      if isinstance(obj.get(key), Mapping):
        flat = flatten(obj[key], arrays_only=True)
        break
  return L.split_in_proj(flat, source)


def _vit(tensors: dict[str, np.ndarray], side: str, source: str) -> dict[str, int]:
  """Width, depth, MLP width and grid of the encoder or decoder ViT."""
  depth = common.count(tensors, rf"{side}\.transformer\.(\d+)\.", source, f"{side} transformer blocks")
  mlp, width = common.require(tensors, f"{side}.transformer.0.mlp.c_fc.weight", source, NAME, 2)
  if width % HEAD_WIDTH:
    raise CheckpointError(f"{source}: {side} width {width} is not a multiple of TiTok's head width {HEAD_WIDTH}")
  n = common.require(tensors, f"{side}.positional_embedding", source, NAME, 2)[0] - 1
  grid = math.isqrt(max(n, 0))
  if grid * grid != n or grid < 1:
    raise CheckpointError(f"{source}: {side}.positional_embedding has {n + 1} rows; expected grid**2 + 1")
  return dict(width=width, depth=depth, mlp_dim=mlp, num_heads=width // HEAD_WIDTH, grid=grid)


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint, read off the tensor shapes."""
  common.require(tensors, "latent_tokens", source, NAME, 2)
  two_stage = any(k.startswith("pixel_decoder.") for k in tensors)
  if not two_stage and "decoder.conv_out.weight" not in tensors:
    raise CheckpointError(
      f"{source}: this TiTok checkpoint has neither a pixel decoder (pixel_decoder.*) nor a pixel head"
      " (decoder.conv_out.weight)"
    )
  if "quantize.embedding.weight" not in tensors:
    raise CheckpointError(
      f"{source}: tensor 'quantize.embedding.weight' is missing (TiTok's VAE variants do not convert)"
    )
  enc, dec = _vit(tensors, "encoder", source), _vit(tensors, "decoder", source)
  patch = common.require(tensors, "encoder.patch_embed.weight", source, NAME, 4)[2]
  if dec["grid"] != enc["grid"]:
    raise CheckpointError(f"{source}: encoder grid {enc['grid']} and decoder grid {dec['grid']} differ")
  k = common.require(tensors, "latent_tokens", source, NAME, 2)[0]
  codes, code_dim = common.require(tensors, "quantize.embedding.weight", source, NAME, 2)
  c = default_config()
  c.image_size = int(enc["grid"] * patch)
  c.model.update(
    encoder="vit1d",
    vit_family="titok" if two_stage else "titok_pixels",
    posemb="learn",
    num_latent_tokens=int(k),
    code_dim=int(code_dim),
    input_range=(0.0, 1.0),
    patch_size=int(patch),
    **{key: int(enc[key]) for key in ("width", "depth", "mlp_dim", "num_heads")},
  )
  if any(dec[key] != enc[key] for key in ("width", "depth", "mlp_dim")):  # TiTok-BL / SL: a larger decoder
    c.model.update({f"decoder_{key}": int(dec[key]) for key in ("width", "depth", "mlp_dim", "num_heads")})
  if two_stage:
    proxy_codes, proxy_dim = common.require(tensors, "pixel_quantize.embedding.weight", source, NAME, 2)
    levels = common.count(tensors, r"pixel_decoder\.up\.(\d+)\.", source, "pixel decoder levels")
    blocks = common.count(tensors, r"pixel_decoder\.up\.0\.block\.(\d+)\.", source, "pixel decoder res blocks")
    widths = [
      common.require(tensors, f"pixel_decoder.up.{i}.block.0.conv1.weight", source, NAME, 4)[0] for i in range(levels)
    ]
    c.model.update(proxy_codebook_size=int(proxy_codes), proxy_code_dim=int(proxy_dim))
    c.model.proxy_decoder = ml_collections.ConfigDict(
      {
        "channels": int(widths[0]),
        "channel_mult": common.multiples(widths, widths[0], source),
        "num_res_blocks": int(blocks),
        "norm_groups": 32,
      }
    )
  # Not stored in the weights: the two-stage tokenizers' configs set use_l2_norm: True,
  # the VQ-8k ones (configs/infer/TiTok/titok_*_vq8k.yaml) False.
  c.quantizer = ml_collections.ConfigDict({"type": "vq", "codebook_size": int(codes), "l2_normalize": two_stage})
  c.data.preprocess = "torchvision_center_crop"
  c.discriminator.update(MAGVIT_STYLEGAN)
  return c


def _add_axis(x: np.ndarray) -> np.ndarray:
  return x[None]


def _torch_linear(prefix: str, target: L.Prefix) -> tuple[L.Rule, ...]:
  return (
    L.under(prefix, target, "weight", lambda: "kernel", L.linear),
    L.under(prefix, target, "bias", lambda: "bias", L.as_is),
  )


def _ln(prefix: str, target: L.Prefix) -> tuple[L.Rule, ...]:
  return L.torch_norm(prefix, target)


def _vit_rules(side: str, target: str, heads: int) -> tuple[L.Rule, ...]:
  """One TiTok ViT: class token, position embeddings, ln_pre, CLIP-style blocks, ln_post."""
  blk = rf"{side}\.transformer\.(\d+)"
  to = target + ".transformer.blocks.{0}"
  return (
    L.Rule(rf"{side}\.class_embedding", f"{target}.cls_token"),
    L.Rule(rf"{side}\.positional_embedding", f"{target}.posemb.embedding", _add_axis),
    L.Rule(rf"{side}\.latent_token_positional_embedding", f"{target}.latent_posemb.embedding", _add_axis),
    *_ln(rf"{side}\.ln_pre", f"{target}.transformer.ln_pre"),
    *_ln(rf"{side}\.ln_post", f"{target}.transformer.norm"),
    *L.torch_clip_block(blk, to, heads),
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path."""
  heads = int(c.model.num_heads)
  dec_heads = int(c.model.get("decoder_num_heads", 0) or heads)
  rows = [
    L.Rule(r"latent_tokens", "encoder.latent_tokens"),
    *L.torch_conv(r"encoder\.patch_embed", "encoder.patch_embed"),
    *_vit_rules("encoder", "encoder", heads),
    *L.torch_conv1x1_linear(r"encoder\.conv_out", "encoder.head"),
    L.Rule(r"quantize\.embedding\.weight", "quantizer.codebook"),
  ]
  if not c.model.proxy_codebook_size:  # is_legacy False: ffn.0 predicts the (p1 p2 c) patch pixels
    return (
      *rows,
      *_torch_linear(r"decoder\.decoder_embed", "decoder.embed"),
      L.Rule(r"decoder\.mask_token", "decoder.mask_token"),
      *_vit_rules("decoder", "decoder", dec_heads),
      *L.torch_conv1x1_linear(r"decoder\.ffn\.0", "decoder.head"),
      *L.torch_conv(r"decoder\.conv_out", "decoder.out_conv"),
    )
  levels = len(c.model.proxy_decoder.channel_mult)
  # maskgit_vqgan.py Decoder: ``up[i]`` is level i from the highest resolution and runs
  # last-to-first; vqtok's decoder levels run from the lowest resolution.
  res = lambda i, j: f"decoder.pixel.res.{levels - 1 - int(i)}.{j}"
  up = lambda i: f"decoder.pixel.up.{levels - 1 - int(i)}.conv"
  return (
    *rows,
    *_torch_linear(r"decoder\.decoder_embed", "decoder.vit.embed"),
    L.Rule(r"decoder\.mask_token", "decoder.vit.mask_token"),
    *_vit_rules("decoder", "decoder.vit", dec_heads),
    *L.torch_conv1x1_linear(r"decoder\.ffn\.0", "decoder.vit.head_hidden"),
    *L.torch_conv1x1_linear(r"decoder\.ffn\.2", "decoder.vit.head"),
    L.Rule(r"pixel_quantize\.embedding\.weight", "decoder.codebook"),
    *L.torch_conv(r"pixel_decoder\.conv_in", "decoder.pixel.conv_in"),
    *L.torch_resnet(r"pixel_decoder\.mid\.(\d+)", "decoder.pixel.mid.{0}"),
    *L.torch_resnet(r"pixel_decoder\.up\.(\d+)\.block\.(\d+)", res),
    *L.torch_conv(r"pixel_decoder\.up\.(\d+)\.upsample_conv", up),
    *L.torch_norm(r"pixel_decoder\.norm_out", "decoder.pixel.norm_out"),
    *L.torch_conv(r"pixel_decoder\.conv_out", "decoder.pixel.conv_out"),
  )
