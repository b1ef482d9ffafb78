"""Open-MAGVIT2's video tokenizer (TencentARC/SEED-Voken, 2025): causal 3-D CNN, LFQ with 2^18 codes, 128 px.

Published as ``video_128_262144.ckpt`` (huggingface.co/TencentARC/Open-MAGVIT2-Tokenizer-262144-Video), a
PyTorch-Lightning checkpoint of src/Open_MAGVIT2/models/video_lfqgan.py's ``VQModel`` trained from
configs/Open-MAGVIT2/*/ucf101_lfq*_128_L.yaml (ch 128, ch_mult 1-2-2-4, 4 res blocks, z 18, ``use_ema``):
as the image checkpoints (``open_magvit2``), ``state_dict`` holds the model, the training loss's networks
(``loss.*``, left out) and ``LitEma`` copies (``model_ema.*``), and evaluation_video.py encodes and decodes
under ``model.ema_scope()``, so the EMA weights are the default; ``--noema`` takes the raw ones.

The modules are improved_video_model.py's ``Encoder`` / ``Decoder``: Open-MAGVIT2's image CNN (vqtok's
``magvit2`` family, the same names) with every conv a ``ConvBlock3D`` (a ``Conv3d`` named ``conv_1``, time
padded on the left with zeros) and GroupNorms over the whole clip (``video_norm="clip"``: not causal; the
adaptive norms' statistics too). A level downsamples time as well as space where its ch_mult is not 1
(``stride=(2, 2, 2)``, else ``(1, 2, 2)``; the decoder's ``Upsampler`` mirrors it with depth_to_space3d and
drops the first group's extra frame): with 1-2-2-4, 17 frames of 128 px make 5 x 16 x 16 tokens (1 + 4k
frames, as the README's 5 x 16 x 16 for 17 frames). LFQ (lookup_free_quantize.py) has no weights; its ids
read the bits least-significant first and are flattened in (b, t, h, w) order.

Clips as ucf101.py reads them for training and evaluation: 17 consecutive frames (``sequence_length``,
``sample_every_n_frames`` 1, the video's own rate), the short side resized to 128 with OpenCV bilinear
(functional.py resize_clip), a 128 x 128 crop (a random crop even in evaluation; vqtok's evaluation crops the
centre) and [-1, 1].
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.models.discriminator import MAGVIT_STYLEGAN
from vqtok.pretrained import common, open_magvit2
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError

NAME = "open-magvit2-video"
FILES = "video_128_262144.ckpt (LFQ 2^18, 128 px, 17 frames -> 5 x 16 x 16 tokens)"
IGNORE = (r"loss\..*", r"model_ema\..*")
#: Frames of the published clips (ucf101_lfqfan_128_L.yaml: sequence_length).
NUM_FRAMES = 17

default_ema = common.has_lit_ema


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  return common.lightning_state_dict(obj, ema=ema, source=source, family=NAME)


def _shape(tensors: dict[str, np.ndarray], name: str, source: str) -> tuple:
  return common.require(tensors, name, source, NAME, 5)


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint's variant, read off the tensor shapes."""
  if "encoder.conv_in.weight" in tensors:  # the image CNNs' name; the video one's is encoder.conv_in.conv_1.weight
    hint = "; convert it with open-magvit2" if "decoder.adaptive.0.gamma.weight" in tensors else ""
    raise CheckpointError(f"{source}: not a {NAME} checkpoint: an image tokenizer's (2-D encoder.conv_in.weight){hint}")
  ch = _shape(tensors, "encoder.conv_in.conv_1.weight", source)[0]
  common.require(tensors, "decoder.adaptive.0.gamma.weight", source, NAME, 2)  # this family's decoder
  levels = common.count(tensors, r"encoder\.down\.(\d+)\.", source, "encoder levels")
  blocks = common.count(tensors, r"encoder\.down\.0\.block\.(\d+)\.", source, "level-0 blocks")
  widths = [_shape(tensors, f"encoder.down.{i}.block.0.conv1.conv_1.weight", source)[0] for i in range(levels)]
  mult = common.multiples(widths, ch, source)
  bits = _shape(tensors, "encoder.conv_out.conv_1.weight", source)[0]
  c = config_lib.cnn_config(
    cnn_family="magvit2",
    channels=ch,
    channel_mult=mult,
    num_res_blocks=blocks,
    attention=False,
    z_channels=0,  # the encoder's output is the LFQ input: no quant_conv
    code_dim=bits,
    # improved_video_model.py Encoder: stride (1, 2, 2) where ch_mult[i] == 1, else (2, 2, 2).
    temporal_downsample=tuple(1 if m == 1 else 2 for m in mult[:-1]),
    time_padding="zeros",  # ConvBlock3D: F.pad(..., mode="constant") before the first frame
    video_norm="clip",  # nn.GroupNorm on (B, C, T, H, W): statistics over the whole clip
    quantizer={"type": "lfq", "bits": bits, "bit_order": "lsb_first", **open_magvit2.LFQ_TRAINING},
    preprocess="short_side_bilinear",
    image_size=16 * 2 ** (levels - 1),  # 128 px at f8, as published
    discriminator={**MAGVIT_STYLEGAN, "num_layers": levels + 1},
  )
  c.video.update(num_frames=NUM_FRAMES, stride=1)
  return c


def _resnet(prefix: str, target: L.Prefix) -> tuple[L.Rule, ...]:
  """improved_video_model.py ResBlock: norm1, norm2 and the ConvBlock3D's conv1, conv2, nin_shortcut."""
  sub = L.extend(target)
  return (
    *L.torch_norm(rf"{prefix}\.norm1", sub("norm1")),
    *L.torch_conv3d(rf"{prefix}\.conv1\.conv_1", sub("conv1")),
    *L.torch_norm(rf"{prefix}\.norm2", sub("norm2")),
    *L.torch_conv3d(rf"{prefix}\.conv2\.conv_1", sub("conv2")),
    *L.torch_conv3d(rf"{prefix}\.nin_shortcut\.conv_1", sub("skip")),
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path: the image table's, each conv one ``conv_1`` deeper and 3-D."""
  last = len(c.model.channel_mult) - 1
  flip = lambda i: last - int(i)  # the reference's decoder level i (up.i, adaptive.i) is vqtok's level last - i
  return (
    *L.torch_conv3d(r"encoder\.conv_in\.conv_1", "encoder.conv_in"),
    *_resnet(r"encoder\.down\.(\d+)\.block\.(\d+)", "encoder.res.{0}.{1}"),
    *L.torch_conv3d(r"encoder\.down\.(\d+)\.downsample\.conv_1", "encoder.down.{0}.conv"),
    *_resnet(r"(encoder|decoder)\.mid_block\.(\d+)", "{0}.mid.{1}"),
    *L.torch_norm(r"(encoder|decoder)\.norm_out", "{0}.norm_out"),
    *L.torch_conv3d(r"(encoder|decoder)\.conv_out\.conv_1", "{0}.conv_out"),
    *L.torch_conv3d(r"decoder\.conv_in\.conv_1", "decoder.conv_in"),
    *_resnet(r"decoder\.up\.(\d+)\.block\.(\d+)", lambda i, j: f"decoder.res.{flip(i)}.{j}"),
    *L.torch_conv3d(r"decoder\.up\.(\d+)\.upsample\.conv1\.conv_1", lambda i: f"decoder.up.{flip(i)}.conv"),
    L.under(r"decoder\.adaptive\.(\d+)\.(gamma|beta)", lambda i, p: f"decoder.level_norm.{flip(i)}.{p}", "weight",
            lambda: "kernel", L.linear),
    L.under(r"decoder\.adaptive\.(\d+)\.(gamma|beta)", lambda i, p: f"decoder.level_norm.{flip(i)}.{p}", "bias",
            lambda: "bias", L.as_is),
  )  # fmt: skip
