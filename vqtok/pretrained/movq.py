"""MoVQ (Zheng et al., 2022, arXiv:2209.09002) in diffusers' layout: Kandinsky 2.1/2.2's and Kandinsky 3's ``movq``.

Published as a diffusers model directory (kandinsky-community/kandinsky-2-2-decoder
``movq/``, kandinsky-community/kandinsky-3 ``movq/``): ``config.json`` with
``_class_name: VQModel`` and ``norm_type: spatial``, and
``diffusion_pytorch_model.safetensors`` (or its ``.fp16.safetensors`` variant,
or ``.bin``). The model is diffusers' own code (models/autoencoders/vq_model.py
``VQModel``, vae.py ``Encoder``/``Decoder``/``VectorQuantizer``): taming's CNN
under other names, with every GroupNorm of the decoder a ``SpatialNorm``
(models/attention_processor.py) conditioned on the quantized latent before
``post_quant_conv`` (vqtok's ``movq`` family). diffusers lists the decoder's
levels from the lowest resolution, as vqtok does: no index flip.

The quantizer is ``VectorQuantizer(legacy=True, beta=0.25)``: nearest code by
Euclidean distance, loss ``||sg(z_q) - z||² + 0.25 ||z_q - sg(z)||²``.
Kandinsky's pipelines (pipelines/kandinsky2_2, kandinsky3) feed the movq images
in [-1, 1] (``VaeImageProcessor``, PIL bicubic with ``reducing_gap=1``), take
``encode(x).latents`` (after ``quant_conv``, unquantized and unscaled: the
config's ``scaling_factor`` is not applied) and decode the diffusion model's
latents with ``force_not_quantize=True``: ``Tokenizer.reconstruct(latents)``
here. Token ids decode through the codebook (``Tokenizer.decode``), which is
``decode(codebook[ids], force_not_quantize=True)`` there.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.models.discriminator import TAMING_PATCHGAN
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError, read_checkpoint

NAME = "movq"
FILES = "a diffusers VQModel directory with norm_type spatial (Kandinsky 2.2's or 3's movq/)"
IGNORE = ()
#: The weight files diffusers' ``from_pretrained`` looks for, in the order taken here.
WEIGHTS = (
  "diffusion_pytorch_model.safetensors",
  "diffusion_pytorch_model.fp16.safetensors",
  "diffusion_pytorch_model.bin",
)


def weights_file(path: str) -> str:
  """The weight file of the diffusers directory ``path``; CheckpointError when there is none."""
  source = os.path.basename(os.path.normpath(path))
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: give the diffusers model directory (config.json and {WEIGHTS[0]}), not a file")
  for name in WEIGHTS:
    if os.path.isfile(os.path.join(path, name)):
      return os.path.join(path, name)
  raise CheckpointError(f"{source}: none of {', '.join(WEIGHTS)} in the directory")


def read(path: str) -> dict[str, Any]:
  """``{"config": config.json, "tensors": ...}`` of a diffusers MoVQ directory; one-line errors otherwise."""
  source = os.path.basename(os.path.normpath(path))
  weights = weights_file(path)
  try:
    with open(os.path.join(path, "config.json")) as f:
      cfg = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{source}: no readable config.json ({type(e).__name__}: {e})") from None
  kind = cfg.get("_class_name") if isinstance(cfg, dict) else None
  if kind != "VQModel":
    raise CheckpointError(f"{source}: a diffusers {kind or 'unknown'} directory; movq converts a VQModel")
  want = {"norm_type": "spatial", "act_fn": "silu", "norm_num_groups": 32}  # SpatialNorm's groups are fixed at 32
  for key, value in want.items():
    if cfg.get(key, "group" if key == "norm_type" else value) != value:
      raise CheckpointError(f"{source}: a VQModel with {key}={cfg.get(key)!r}; MoVQ has {key}={value!r}")
  return {"config": cfg, "tensors": read_checkpoint(weights)}


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  if ema:
    raise CheckpointError(f"{source}: diffusers directories hold no EMA weights; drop --ema")
  return {k: np.asarray(v, np.float32) for k, v in obj["tensors"].items()}


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config, read off the tensor shapes (so that any published size converts)."""
  if "decoder.conv_norm_out.conv_y.weight" not in tensors:
    raise CheckpointError(f"{source}: not a movq checkpoint: its decoder has no spatial norms (conv_norm_out.conv_y)")
  ch = common.require(tensors, "encoder.conv_in.weight", source, NAME, 4)[0]
  levels = common.count(tensors, r"encoder\.down_blocks\.(\d+)\.", source, "encoder levels")
  blocks = common.count(tensors, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", source, "level-0 blocks")
  widths = [
    common.require(tensors, f"encoder.down_blocks.{i}.resnets.0.conv1.weight", source, NAME)[0] for i in range(levels)
  ]
  with_attn = common.indices(tensors, r"encoder\.down_blocks\.(\d+)\.attentions\.")
  mid_attn = any(k.startswith("encoder.mid_block.attentions.") for k in tensors)
  if with_attn not in ([], [levels - 1]) or bool(with_attn) != mid_attn:
    raise CheckpointError(
      f"{source}: attention at encoder levels {with_attn} and {'' if mid_attn else 'not '}in the middle;"
      " vqtok's CNN has it at the lowest level and in the middle, or nowhere"
    )
  codes, code_dim = common.require(tensors, "quantize.embedding.weight", source, NAME, 2)
  return config_lib.cnn_config(
    cnn_family="movq",
    channels=ch,
    channel_mult=common.multiples(widths, ch, source),
    num_res_blocks=blocks,
    attention=mid_attn,
    z_channels=common.require(tensors, "encoder.conv_out.weight", source, NAME, 4)[0],  # with quant_conv
    code_dim=code_dim,
    # VectorQuantizer(beta=0.25, legacy=True), vae.py: 1.0 commitment + 0.25 codebook, as taming's.
    quantizer={"type": "vq", "codebook_size": codes, "commitment_weight": 1.0, "codebook_weight": 0.25},
    preprocess="squash_bicubic_reducing",
    discriminator=TAMING_PATCHGAN,  # MoVQ trains with taming's PatchGAN; none is published
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path."""
  rows: list[L.Rule] = []
  for side in ("encoder", "decoder"):
    rows += [
      *L.torch_conv(rf"{side}\.conv_in", f"{side}.conv_in"),
      *L.diffusers_norm(rf"{side}\.conv_norm_out", f"{side}.norm_out"),
      *L.torch_conv(rf"{side}\.conv_out", f"{side}.conv_out"),
      *L.diffusers_resnet(rf"{side}\.mid_block\.resnets\.(\d+)", f"{side}.mid.{{0}}"),
      *L.diffusers_attention(rf"{side}\.mid_block\.attentions\.0", f"{side}.mid_attn"),
    ]
  rows += [
    *L.diffusers_resnet(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)", "encoder.res.{0}.{1}"),
    *L.diffusers_attention(r"encoder\.down_blocks\.(\d+)\.attentions\.(\d+)", "encoder.attn.{0}.{1}"),
    *L.torch_conv(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv", "encoder.down.{0}.conv"),
    *L.diffusers_resnet(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)", "decoder.res.{0}.{1}"),
    *L.diffusers_attention(r"decoder\.up_blocks\.(\d+)\.attentions\.(\d+)", "decoder.attn.{0}.{1}"),
    *L.torch_conv(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv", "decoder.up.{0}.conv"),
    L.Rule(r"quantize\.embedding\.weight", "quantizer.codebook"),
    *L.torch_conv1x1_linear(r"quant_conv", "project_in"),
    *L.torch_conv1x1_linear(r"post_quant_conv", "project_out"),
  ]
  return tuple(rows)
