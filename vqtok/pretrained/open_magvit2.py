"""Open-MAGVIT2 (Luo et al., 2024, arXiv:2409.04410): LFQ with 2^18 codes, 256 px (f16) and 128 px (f8).

Published by TencentARC/SEED-Voken as PyTorch-Lightning checkpoints with the
weights under ``"state_dict"``: the model, the training loss's networks
(``loss.*``, left out) and, trained with ``use_ema``, ``LitEma`` copies of
every parameter (``model_ema.*``). The reference's evaluation decodes with the
EMA weights (``with model.ema_scope()``, evaluation_image.py), so they are the
default when the file has them; ``--noema`` takes the raw ones. Modules:
src/Open_MAGVIT2/modules/diffusionmodules/improved_model.py (Encoder,
Decoder: vqtok's ``magvit2`` CNN family) and lookup_free_quantize.py (LFQ,
no weights; its ids read the bits least-significant first, ``2 **
arange(bits)``). The decoder lists its levels from the highest resolution
(``up.0``, ``adaptive.0``) while vqtok's runs from the lowest, so the index
flips. Images are [-1, 1], resized as taming's (SmallestMaxSize + CenterCrop,
OpenCV bilinear: data/imagenet.py). The image size is 16 tokens a side (256 px
for f16, 128 px for f8), as published.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.models.discriminator import MAGVIT_STYLEGAN
from vqtok.pretrained import common
from vqtok.pretrained import layout as L

NAME = "open-magvit2"
FILES = "imagenet_256_L.ckpt (f16, 256 px), imagenet_128_L.ckpt (f8, 128 px)"
IGNORE = (r"loss\..*", r"model_ema\..*")


default_ema = common.has_lit_ema


#: LFQ's training terms as SEED-Voken computes them: the codebook entropy is -sum(p log(p + 1e-5))
#: over all codes (lookup_free_quantize.py:85, 107). Recorded in converted configs, so a converted
#: tokenizer fine-tunes with the authors' entropy, and taken by configs/magvit2_lfq.py.
LFQ_TRAINING = {"entropy_mode": "exact", "codebook_entropy_eps": 1e-5}


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  return common.lightning_state_dict(obj, ema=ema, source=source, family=NAME)


def cnn_geometry(tensors: dict[str, np.ndarray], source: str, family: str) -> dict[str, Any]:
  """``channels``, ``channel_mult`` and ``num_res_blocks`` of an improved_model.py encoder (also SimVQ's)."""
  ch = common.require(tensors, "encoder.conv_in.weight", source, family, 4)[0]
  levels = common.count(tensors, r"encoder\.down\.(\d+)\.", source, "encoder levels")
  blocks = common.count(tensors, r"encoder\.down\.0\.block\.(\d+)\.", source, "level-0 blocks")
  widths = [common.require(tensors, f"encoder.down.{i}.block.0.conv1.weight", source, family)[0] for i in range(levels)]
  return {"channels": ch, "channel_mult": common.multiples(widths, ch, source), "num_res_blocks": blocks}


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint's variant, read off the tensor shapes."""
  common.require(tensors, "encoder.conv_in.weight", source, NAME, 4)
  common.require(tensors, "decoder.adaptive.0.gamma.weight", source, NAME, 2)  # this family's decoder
  geometry = cnn_geometry(tensors, source, NAME)
  levels = len(geometry["channel_mult"])
  bits = common.require(tensors, "encoder.conv_out.weight", source, NAME, 4)[0]
  return config_lib.cnn_config(
    cnn_family="magvit2",
    **geometry,
    attention=False,
    z_channels=0,  # the encoder's output is the LFQ input: no quant_conv
    code_dim=bits,
    quantizer={"type": "lfq", "bits": bits, "bit_order": "lsb_first", **LFQ_TRAINING},
    preprocess="short_side_bilinear",
    image_size=16 * 2 ** (levels - 1),
    discriminator={**MAGVIT_STYLEGAN, "num_layers": levels + 1},  # down to 4x4
  )


def cnn_table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path for the encoder and decoder, the adaptive norms aside (also SimVQ's)."""
  last = len(c.model.channel_mult) - 1
  flip = lambda i: last - int(i)  # the reference's decoder level i is vqtok's level last - i
  return (
    *L.torch_conv(r"encoder\.conv_in", "encoder.conv_in"),
    *L.torch_resnet(r"encoder\.down\.(\d+)\.block\.(\d+)", "encoder.res.{0}.{1}"),
    *L.torch_conv(r"encoder\.down\.(\d+)\.downsample", "encoder.down.{0}.conv"),
    *L.torch_resnet(r"(encoder|decoder)\.mid_block\.(\d+)", "{0}.mid.{1}"),
    *L.torch_norm(r"(encoder|decoder)\.norm_out", "{0}.norm_out"),
    *L.torch_conv(r"(encoder|decoder)\.conv_out", "{0}.conv_out"),
    *L.torch_conv(r"decoder\.conv_in", "decoder.conv_in"),
    *L.torch_resnet(r"decoder\.up\.(\d+)\.block\.(\d+)", lambda i, j: f"decoder.res.{flip(i)}.{j}"),
    *L.torch_conv(r"decoder\.up\.(\d+)\.upsample\.conv1", lambda i: f"decoder.up.{flip(i)}.conv"),
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path."""
  last = len(c.model.channel_mult) - 1
  flip = lambda i: last - int(i)  # the reference's decoder level i is vqtok's level last - i
  return (
    *cnn_table(c),
    L.under(
      r"decoder\.adaptive\.(\d+)\.(gamma|beta)",
      lambda i, p: f"decoder.level_norm.{flip(i)}.{p}",
      "weight",
      lambda: "kernel",
      L.linear,
    ),  # fmt: skip
    L.under(
      r"decoder\.adaptive\.(\d+)\.(gamma|beta)",
      lambda i, p: f"decoder.level_norm.{flip(i)}.{p}",
      "bias",
      lambda: "bias",
      L.as_is,
    ),  # fmt: skip
  )
