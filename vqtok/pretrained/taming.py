"""taming-transformers VQGAN (Esser et al., 2021, arXiv:2012.09841): ImageNet f16, 1024 or 16384 codes.

Published by CompVis/taming-transformers as PyTorch-Lightning checkpoints
(``last.ckpt``) with the weights under ``"state_dict"``; the discriminator and
the LPIPS network of the training loss (``loss.*``) are left out. Modules:
taming/modules/diffusionmodules/model.py (Encoder, Decoder) and
taming/models/vqgan.py (VQModel: a 1x1 ``quant_conv`` even when its widths are
equal). The decoder lists its levels from the highest resolution
(``up.0``) while vqtok's decoder runs from the lowest, so the index flips.
Images are [-1, 1], resized as taming's ImageNet data does
(albumentations SmallestMaxSize + CenterCrop, OpenCV bilinear).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.models.discriminator import TAMING_PATCHGAN
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError

NAME = "taming"
FILES = "vqgan_imagenet_f16_1024/ckpts/last.ckpt, vqgan_imagenet_f16_16384/ckpts/last.ckpt"
# The training loss's networks: the PatchGAN discriminator and LPIPS.
IGNORE = (r"loss\..*",)


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  if ema:
    raise CheckpointError(f"{source}: taming checkpoints hold no EMA weights; drop --ema")
  return common.pick_state_dict(obj, ("state_dict",), source, NAME)


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint's variant, read off the tensor shapes."""
  geometry = common.taming_encoder(tensors, source, NAME)
  codes, code_dim = common.require(tensors, "quantize.embedding.weight", source, NAME, 2)
  return config_lib.cnn_config(
    cnn_family="taming",
    **geometry,
    code_dim=code_dim,
    # VectorQuantizer2(beta=0.25, legacy=True), taming/modules/vqvae/quantize.py: beta weighs the
    # codebook term, so the loss is 1.0 commitment + 0.25 codebook (configs/vqgan_f16.py too).
    quantizer={"type": "vq", "codebook_size": codes, "commitment_weight": 1.0, "codebook_weight": 0.25},
    preprocess="short_side_bilinear",
    discriminator=TAMING_PATCHGAN,
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path."""
  last = len(c.model.channel_mult) - 1

  def up(i: str, j: str) -> str:  # taming's up.{i} counts from the highest resolution
    return f"decoder.res.{last - int(i)}.{j}"

  def up_attn(i: str, j: str) -> str:
    return f"decoder.attn.{last - int(i)}.{j}"

  def up_conv(i: str) -> str:  # the upsampling after taming level i is vqtok's after level last - i
    return f"decoder.up.{last - int(i)}.conv"

  rows: list[L.Rule] = []
  for side in ("encoder", "decoder"):
    rows += [
      *L.torch_vqgan_ends(side),
      *L.torch_resnet(rf"{side}\.mid\.block_1", f"{side}.mid.0"),
      *L.torch_attention(rf"{side}\.mid\.attn_1", f"{side}.mid_attn"),
      *L.torch_resnet(rf"{side}\.mid\.block_2", f"{side}.mid.1"),
    ]
  rows += [
    *L.torch_resnet(r"encoder\.down\.(\d+)\.block\.(\d+)", "encoder.res.{0}.{1}"),
    *L.torch_attention(r"encoder\.down\.(\d+)\.attn\.(\d+)", "encoder.attn.{0}.{1}"),
    *L.torch_conv(r"encoder\.down\.(\d+)\.downsample\.conv", "encoder.down.{0}.conv"),
    *L.torch_resnet(r"decoder\.up\.(\d+)\.block\.(\d+)", up),
    *L.torch_attention(r"decoder\.up\.(\d+)\.attn\.(\d+)", up_attn),
    *L.torch_conv(r"decoder\.up\.(\d+)\.upsample\.conv", up_conv),
    L.Rule(r"quantize\.embedding\.weight", "quantizer.codebook"),
    *L.torch_conv1x1_linear(r"quant_conv", "project_in"),
    *L.torch_conv1x1_linear(r"post_quant_conv", "project_out"),
  ]
  return tuple(rows)
