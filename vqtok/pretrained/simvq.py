"""SimVQ (Zhu et al., 2024, arXiv:2411.02038): a frozen random codebook through one learned linear map, 128 px.

Published by youngsheen/SimVQ (huggingface.co/zyx123/SimVQ, vq_log/simvq_1k,
_8k, _65k, _262k) as PyTorch-Lightning checkpoints with the weights under
``"state_dict"``: the model, the training loss's networks (``loss.*``, left
out) and, trained with ``use_ema`` (configs/imagenet_simvq_128_B.yaml),
``LitEma`` copies (``model_ema.*``), which the reference's evaluation decodes
with (``with model.ema_scope()``, evaluation.py): the default, ``--noema``
takes the raw ones. LitEma copies only parameters that require grad, so the
frozen codebook ``quantize.embedding.weight`` has none and is the model's own
either way (taming/modules/ema.py).

The CNN is an earlier Open-MAGVIT2 (taming/modules/diffusionmodules/
improved_model.py): Open-MAGVIT2's names and layouts without the decoder's
adaptive GroupNorm (vqtok's ``magvit2_plain`` family), the encoder's 1x1
``conv_out`` giving the quantizer's input directly (no quant_conv). The
quantizer (taming/modules/vqvae/quantize.py ``SimVQ``) picks the nearest row of
``embedding_proj(embedding.weight)`` by squared distance, not l2-normalised;
``embedding_proj`` is an ``nn.Linear`` with a bias (vqtok's ``simvq_bias``).
Its ``get_codebook_entry`` looks ids up in the unprojected table, which its
own evaluation never uses (it decodes the quantizer's output): ids here
decode through the projected codes, as the forward pass does. Images are
[-1, 1], resized by torchvision's ``Resize`` (bilinear) and ``CenterCrop``
(taming/data/base.py). The image size is 16 tokens a side (128 px for the
published f8 models).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.models.discriminator import TAMING_PATCHGAN
from vqtok.pretrained import common, open_magvit2
from vqtok.pretrained import layout as L

NAME = "simvq"
FILES = "the .ckpt in vq_log/simvq_1k, _8k, _65k or _262k (epoch=49-step=250250.ckpt), 128 px"
IGNORE = (r"loss\..*", r"model_ema\..*")
FROZEN = ("quantize.embedding.weight",)  # requires_grad=False in quantize.py: no LitEma copy


default_ema = common.has_lit_ema


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  return common.lightning_state_dict(obj, ema=ema, source=source, family=NAME, frozen=FROZEN)


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint's variant, read off the tensor shapes."""
  common.require(tensors, "encoder.conv_in.weight", source, NAME, 4)
  common.require(tensors, "quantize.embedding_proj.weight", source, NAME, 2)  # this family's quantizer
  geometry = open_magvit2.cnn_geometry(tensors, source, NAME)
  levels = len(geometry["channel_mult"])
  codes, code_dim = common.require(tensors, "quantize.embedding.weight", source, NAME, 2)
  return config_lib.cnn_config(
    cnn_family="magvit2_plain",
    **geometry,
    attention=False,
    z_channels=0,  # the encoder's output is the quantizer's input: no quant_conv
    code_dim=code_dim,
    # quantize.py SimVQ(legacy=False): beta 0.25 on ||sg(z_q) - z||², 1 on ||z_q - sg(z)||².
    quantizer={
      "type": "vq",
      "codebook_size": codes,
      "simvq": True,
      "simvq_bias": True,
      "commitment_weight": 0.25,
      "codebook_weight": 1.0,
    },
    preprocess="torchvision_bilinear_center_crop",
    image_size=16 * 2 ** (levels - 1),
    discriminator=TAMING_PATCHGAN,  # vqperceptual.py: NLayerDiscriminator, 3 layers, ndf 64
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path: Open-MAGVIT2's CNN rules and the quantizer's table and map."""
  return (
    *open_magvit2.cnn_table(c),
    L.Rule(r"quantize\.embedding\.weight", "quantizer.codebook"),
    L.Rule(r"quantize\.embedding_proj\.weight", "quantizer.codebook_map.kernel", L.linear),
    L.Rule(r"quantize\.embedding_proj\.bias", "quantizer.codebook_map.bias"),
  )
