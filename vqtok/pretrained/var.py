"""VAR's multi-scale VQ tokenizer (Tian et al., 2024, arXiv:2404.02905): ``vae_ch160v4096z32.pth``.

Published by FoundationVision/VAR as a plain state dict (``torch.save`` of
``VQVAE.state_dict()``, no wrapper dict). The CNN is taming's under taming's
names (models/basic_vae.py, after stable-diffusion's model.py): attention on
every block of the lowest level and in the middle, decoder levels listed from
the highest resolution. Its quirks, each handled here:

* the attention blocks hold one 1x1 ``qkv`` convolution of 3C outputs, split
  as ``reshape(B, 3, C, H, W)`` (q, k, v in that order) where taming has three
  (basic_vae.py AttnBlock); ``state_dict`` splits it into taming's q/k/v;
* ``quant_conv`` / ``post_quant_conv`` are 3x3 convolutions (vqvae.py,
  ``quant_conv_ks=3``): ``model.project_kernel = 3``;
* the quantizer (quant.py ``VectorQuantizer2``) is multi-scale residual with
  ``share_quant_resi`` partially shared phi convolutions
  (``quantize.quant_resi.qresi_ls.{k}``) blended at ``quant_resi = 0.5``;
  the schedule is not in the file: its number of scales is the first axis of
  the usage buffer ``quantize.ema_vocab_hit_SV``, and 10 scales are VAR's
  (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) for a 16x16 latent at 256 px.

Images are [-1, 1], resized as VAR's validation data (utils/data.py: Lanczos
on the short side to 1.125x, center crop); VAR's decoder output is clamped to
[-1, 1] by its ``fhat_to_img``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.files import flatten
from vqtok.models.discriminator import TAMING_PATCHGAN
from vqtok.pretrained import common, taming
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError
from vqtok.quantizers.multiscale import VAR_SCALES

NAME = "var"
FILES = "vae_ch160v4096z32.pth"
# A training-time usage EMA per scale (read for the number of scales, not a weight).
IGNORE = (r"quantize\.ema_vocab_hit_SV",)
# VAR's quant_resi: the published models all use 0.5 (vqvae.py default); the file does not record it.
PHI_RATIO = 0.5
_QKV = re.compile(r"(.*\.attn(?:_1|\.\d+))\.qkv\.(weight|bias)")


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  if ema:
    raise CheckpointError(f"{source}: VAR's tokenizer file holds no EMA weights; drop --ema")
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{source}: expected a state dict at the top of a VAR checkpoint; got {type(obj).__name__}")
  tensors = flatten(obj, arrays_only=True)
  if "encoder.conv_in.weight" not in tensors and any(isinstance(v, Mapping) for v in obj.values()):
    # Tolerate a wrapped dict ({"model": state_dict} / {"state_dict": ...}), as other families ship.
    tensors = common.pick_state_dict(obj, ("state_dict", "model", "vae"), source, NAME)
  out: dict[str, np.ndarray] = {}
  for name, value in tensors.items():
    m = _QKV.fullmatch(name)
    if m is None:
      out[name] = value
      continue
    value = np.asarray(value)
    if value.shape[0] % 3:
      raise CheckpointError(f"{source}: tensor {name!r} has {value.shape[0]} outputs; a qkv projection has 3C")
    for part, piece in zip("qkv", np.split(value, 3, axis=0), strict=True):
      out[f"{m.group(1)}.{part}.{m.group(2)}"] = piece
  return out


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint's variant, read off the tensor shapes."""
  geometry = common.taming_encoder(tensors, source, NAME)
  codes, code_dim = common.require(tensors, "quantize.embedding.weight", source, NAME, 2)
  kernel = common.require(tensors, "quant_conv.weight", source, NAME, 4)
  if kernel[2:] not in ((1, 1), (3, 3)):
    raise CheckpointError(f"{source}: quant_conv.weight has shape {kernel}; vqtok supports 1x1 and 3x3")
  phis = common.indices(tensors, r"quantize\.quant_resi\.qresi_ls\.(\d+)\.")
  if phis != list(range(len(phis))):
    raise CheckpointError(f"{source}: phi convolutions are numbered {phis}; expected 0..{len(phis) - 1}")
  num_scales = np.shape(tensors["quantize.ema_vocab_hit_SV"])[0] if "quantize.ema_vocab_hit_SV" in tensors else 10
  if num_scales != len(VAR_SCALES):
    raise CheckpointError(
      f"{source}: {num_scales} scales (quantize.ema_vocab_hit_SV); only VAR's published schedule"
      f" {list(VAR_SCALES)} is known, and the file does not record another"
    )
  quantizer = {
    "type": "multiscale",
    "scales": VAR_SCALES,
    "phi_ratio": PHI_RATIO if phis else 0.0,
    "phi_count": len(phis) if phis else 4,
    "beta": 0.25,
    "quantizer": {"type": "vq", "codebook_size": codes},
  }
  return config_lib.cnn_config(
    cnn_family="taming",
    **geometry,
    code_dim=code_dim,
    quantizer=quantizer,
    preprocess="lanczos_center_crop",  # utils/data.py build_dataset's val_aug
    project_kernel=kernel[2],
    # The schedule ends at 16 cells: 256 px for the published f16 model, less for reduced ones.
    image_size=VAR_SCALES[-1] * 2 ** (len(geometry["channel_mult"]) - 1),
    discriminator=TAMING_PATCHGAN,
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path: taming's CNN rows (q/k/v already split by ``state_dict``), VAR's quantizer."""
  project = L.torch_conv if int(c.model.project_kernel) > 1 else L.torch_conv1x1_linear
  cnn_rows = [r for r in taming.table(c) if not r.pattern.startswith(("quant", "post_quant"))]
  return (
    *cnn_rows,
    L.Rule(r"quantize\.embedding\.weight", "quantizer.quantizer.codebook"),
    *L.torch_conv(r"quantize\.quant_resi\.qresi_ls\.(\d+)", "quantizer.phis.{0}"),
    *project(r"quant_conv", "project_in"),
    *project(r"post_quant_conv", "project_out"),
  )
