"""MaskGIT's VQGAN (Chang et al., 2022, arXiv:2202.04200): ImageNet 256 and 512 tokenizers.

Published by google-research/maskgit as one Flax msgpack blob
(``tokenizer_imagenet256_checkpoint``; maskgit/utils.py restore_from_path)
holding ``{"params": ...}``. Flax's automatic names number the layers in
creation order (maskgit/nets/vqgan_tokenizer.py): encoder ``ResBlock_k`` are
the levels' blocks then the middle ones, decoder ``ResBlock_k`` the middle
blocks then the levels from the lowest resolution; decoder ``Conv_1`` ..
``Conv_{L-1}`` upsample and ``Conv_L`` is the output. Kernels are already
HWIO. No projection around the 1024 x 256 codebook; images in [0, 1], resized
by PIL bicubic straight to the model size.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.models.discriminator import MAGVIT_STYLEGAN
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError

NAME = "maskgit"
FILES = "tokenizer_imagenet256_checkpoint, tokenizer_imagenet512_checkpoint"
IGNORE = ()


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  if ema:
    raise CheckpointError(f"{source}: MaskGIT checkpoints hold no EMA weights; drop --ema")
  return common.pick_state_dict(obj, ("params",), source, NAME)


def _sizes(tensors: dict[str, np.ndarray], source: str) -> tuple[int, int]:
  """(levels, res blocks per level) from the layer counts."""
  convs = common.count(tensors, r"decoder\.Conv_(\d+)\.", source, "decoder convs")
  levels = convs - 1  # Conv_0 is conv_in, Conv_1..L-1 upsample, Conv_L is conv_out
  res = common.count(tensors, r"encoder\.ResBlock_(\d+)\.", source, "encoder res blocks")
  if levels < 1 or res % (levels + 1):
    raise CheckpointError(f"{source}: {res} encoder res blocks do not fit {levels} levels plus the middle")
  return levels, res // (levels + 1)


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint, read off the tensor shapes."""
  ch = common.require(tensors, "encoder.Conv_0.kernel", source, NAME, 4)[3]
  levels, blocks = _sizes(tensors, source)
  widths = [
    common.require(tensors, f"encoder.ResBlock_{i * blocks}.Conv_0.kernel", source, NAME)[3] for i in range(levels)
  ]
  codes, code_dim = common.require(tensors, "quantizer.codebook", source, NAME, 2)
  return config_lib.cnn_config(
    cnn_family="maskgit",
    channels=ch,
    channel_mult=common.multiples(widths, ch, source),
    num_res_blocks=blocks,
    attention=False,
    z_channels=0,
    code_dim=code_dim,
    quantizer={"type": "vq", "codebook_size": codes},
    preprocess="squash_bicubic",
    input_range=(0.0, 1.0),
    discriminator=MAGVIT_STYLEGAN,
  )


def _flax(prefix: str, target: L.Prefix) -> tuple[L.Rule, ...]:
  """A Flax layer: kernel/bias/scale keep their names and layout."""
  return (L.under(prefix, target, r"(kernel|bias|scale)", lambda p: p, L.as_is),)


def _res(prefix: str, target: L.Prefix) -> tuple[L.Rule, ...]:
  sub = L.extend(target)
  return (
    *_flax(rf"{prefix}\.GroupNorm_0", sub("norm1")),
    *_flax(rf"{prefix}\.Conv_0", sub("conv1")),
    *_flax(rf"{prefix}\.GroupNorm_1", sub("norm2")),
    *_flax(rf"{prefix}\.Conv_1", sub("conv2")),
    *_flax(rf"{prefix}\.Conv_2", sub("skip")),
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path, from the creation-order numbering."""
  levels, blocks = len(c.model.channel_mult), int(c.model.num_res_blocks)

  def enc_block(k: str) -> str:
    k = int(k)
    return f"encoder.res.{k // blocks}.{k % blocks}" if k < levels * blocks else f"encoder.mid.{k - levels * blocks}"

  def dec_block(k: str) -> str:
    k = int(k)
    return f"decoder.mid.{k}" if k < blocks else f"decoder.res.{(k - blocks) // blocks}.{(k - blocks) % blocks}"

  def dec_conv(k: str) -> str:
    k = int(k)
    return "decoder.conv_in" if k == 0 else "decoder.conv_out" if k == levels else f"decoder.up.{k - 1}.conv"

  return (
    *_flax(r"encoder\.Conv_0", "encoder.conv_in"),
    *_res(r"encoder\.ResBlock_(\d+)", enc_block),
    *_flax(r"encoder\.GroupNorm_0", "encoder.norm_out"),
    *_flax(r"encoder\.Conv_1", "encoder.conv_out"),
    *_flax(r"decoder\.Conv_(\d+)", dec_conv),
    *_res(r"decoder\.ResBlock_(\d+)", dec_block),
    *_flax(r"decoder\.GroupNorm_0", "decoder.norm_out"),
    L.Rule(r"quantizer\.codebook", "quantizer.codebook"),
  )
