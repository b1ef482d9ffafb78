"""LlamaGen VQ tokenizers (Sun et al., 2024, arXiv:2406.06525): ``vq_ds16_c2i.pt``, ``vq_ds8_c2i.pt``.

Published by FoundationVision/LlamaGen as torch pickles with the weights under
``"model"`` (the training script also writes ``"ema"``; ``--ema`` takes it).
The architecture is taming's VQGAN under other module names
(tokenizer/tokenizer_image/vq_model.py): attention on every block of the
lowest level and in the middle, a 1x1 ``quant_conv`` from 256 channels to the
8-dim codebook of 16384 l2-normalised codes. Images are [-1, 1], resized by
ADM's center crop (dataset/augmentation.py center_crop_arr).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.models.discriminator import TAMING_PATCHGAN
from vqtok.pretrained import common
from vqtok.pretrained import layout as L

NAME = "llamagen"
FILES = "vq_ds16_c2i.pt (VQ-16), vq_ds8_c2i.pt (VQ-8)"
# ``quantize.codebook_used`` is a training-time usage buffer, not a weight.
IGNORE = (r"quantize\.codebook_used",)


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  return common.pick_state_dict(obj, ("ema",) if ema else ("model", "state_dict"), source, NAME)


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint's variant, read off the tensor shapes."""
  ch = common.require(tensors, "encoder.conv_in.weight", source, NAME, 4)[0]
  levels = common.count(tensors, r"encoder\.conv_blocks\.(\d+)\.", source, "encoder levels")
  blocks = common.count(tensors, r"encoder\.conv_blocks\.0\.res\.(\d+)\.", source, "level-0 res blocks")
  widths = [
    common.require(tensors, f"encoder.conv_blocks.{i}.res.0.conv1.weight", source, NAME)[0] for i in range(levels)
  ]
  codes, code_dim = common.require(tensors, "quantize.embedding.weight", source, NAME, 2)
  return config_lib.cnn_config(
    cnn_family="taming",
    channels=ch,
    channel_mult=common.multiples(widths, ch, source),
    num_res_blocks=blocks,
    attention=any(".attn." in k for k in tensors),
    z_channels=common.require(tensors, "encoder.conv_out.weight", source, NAME, 4)[0],
    code_dim=code_dim,
    quantizer={"type": "vq", "codebook_size": codes, "l2_normalize": True},
    preprocess="adm_center_crop",
    discriminator=TAMING_PATCHGAN,
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path. Decoder level 0 is the lowest resolution in both."""
  rows: list[L.Rule] = []
  for side in ("encoder", "decoder"):
    rows += [
      *L.torch_vqgan_ends(side),
      *L.torch_resnet(rf"{side}\.conv_blocks\.(\d+)\.res\.(\d+)", side + ".res.{0}.{1}"),
      *L.torch_attention(rf"{side}\.conv_blocks\.(\d+)\.attn\.(\d+)", side + ".attn.{0}.{1}"),
      *L.torch_resnet(rf"{side}\.mid\.0", f"{side}.mid.0"),
      *L.torch_attention(rf"{side}\.mid\.1", f"{side}.mid_attn"),
      *L.torch_resnet(rf"{side}\.mid\.2", f"{side}.mid.1"),
    ]
  rows += [
    *L.torch_conv(r"encoder\.conv_blocks\.(\d+)\.downsample\.conv", "encoder.down.{0}.conv"),
    *L.torch_conv(r"decoder\.conv_blocks\.(\d+)\.upsample\.conv", "decoder.up.{0}.conv"),
    L.Rule(r"quantize\.embedding\.weight", "quantizer.codebook"),
    *L.torch_conv1x1_linear(r"quant_conv", "project_in"),
    *L.torch_conv1x1_linear(r"post_quant_conv", "project_out"),
  ]
  return tuple(rows)
