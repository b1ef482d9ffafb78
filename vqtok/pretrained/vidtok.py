"""VidTok (Tang et al., 2024, arXiv:2412.13061): causal and non-causal video tokenizers with FSQ, 4x8x8 and 4x16x16.

Published by microsoft/VidTok as PyTorch-Lightning ``.ckpt`` files (weights under
``"state_dict"``: the model and the training loss's networks, ``loss.*``, left
out), each with a YAML of the same name in the repository's configs/. Modules:
vidtok/modules/model_3dcausal.py (``EncoderCausal3DPadding``,
``DecoderCausal3DPadding``: vqtok's ``vidtok`` CNN family, (2+1)-D blocks whose
spatial half is ``down.*``/``up.*`` and temporal half ``down_temporal.*`` /
``up_temporal.*``) and regularizers.py (``FSQRegularizer``: lucidrains' FSQ,
bound half-range ``(L - 1)(1 + 1e-3)/2``, ids with the first channel least
significant; no weights). The encoder's output is the FSQ input (``z_channels`` =
the number of levels, no projections). The decoder lists its levels from the
highest resolution, vqtok's from the lowest, so the index flips.

The FSQ levels are not in the tensors: a YAML beside the file (same name,
``.yaml``) gives them (``regularizer_config.params.levels``); without one every
channel has 8 levels, as in all published FSQ files (2^18 with 6 channels, 2^15
with 5, 2^12 with 4).

The non-causal files (model_3dnoncausal.py ``Encoder3D`` / ``Decoder3D``,
vidtok_fsq_noncausal_{488,41616}_262144.ckpt) are v1.0's causal model with
``model.causal=False``: the same tensors, named without the causal wrappers'
``.conv`` (torch's ``Conv3d`` / ``Conv1d`` themselves: ``conv_in.weight``,
``mid.block_1.conv1.weight``, ``down_temporal.i.block.j.conv1.weight``,
``mid.attn_1.q.weight``, ``*_temporal.i.*sample.conv.weight``), and the same
network but for time: every time conv (conv_in, conv_out, the middle's 3-D
blocks, the per-pixel Conv1d, the time upsampling's conv) is padded by one zero
frame on each side (``padding=1``) instead of two before; the time downsampling
(``TimeDownsampleRes2x``) pads one zero frame after the clip instead of one
before it (its mean and strided conv read frames 2j .. 2j + 2); the encoder puts
no frames before the clip and the decoder drops none. So k*s_T frames make k
latent frames and decode to k*s_T (VidTok: 16 -> 4 -> 16; its README's input
rule for non-causal models), whole clips only: the reference's inference cuts
long videos into independent 16-frame clips and carries nothing between them, so
vqtok refuses ``chunk`` for them. The tensors tell the two apart (``conv_in.weight``
or ``conv_in.conv.weight``), and a YAML beside the file must agree.

v1.1 (model_3dcausal_v1_1.py, configs/vidtok_v1_1/) is converted too: its tensors
are named as v1.0's, so it is told apart by the YAML's encoder target or, without
a YAML, the file name (``*_v1_1*``). It differs from v1.0 in: every causal conv
(the 3-D ones, the per-pixel time Conv1d, the strided time downsampling conv) and
the time downsampling's mean pad with copies of the first frame instead of zeros
(``model.time_padding="replicate"``); the decoder's time upsampling is
``interpolation_mode`` (every published v1.1 YAML: trilinear, i.e. linear in time,
the first latent frame's frames interpolated apart from the rest:
``model.time_upsample="linear"``; "nearest" is v1.0's repetition); the encoder pads
only up to a multiple of s_T (the same s_T - 1 copies for 1 + k*s_T frames) and the
decoder drops no frames (1 + k*s_T frames decode to (k + 1)*s_T, the first s_T - 1
of them the padding's). vqtok keeps its frame rule for both versions: 1 + k*s_T
frames in and out (the v1.1 decoder's first s_T - 1 frames dropped), whole videos
only when decoding with linear time upsampling (the reference's chunk caches are
not modelled; a chunked decode is refused; chunked encodes equal whole ones, as
for v1.0). The v1.1 KL files are not tokenizers.

Frames: 1 + 4k for the causal files (VidTok's inputs are 17 frames; it pads with
3 copies of the first frame and v1.0's decoder drops 3 frames, so its 16-frame
inputs give 13), 4k for the non-causal ones (16), in [-1, 1]; frames resized by
their short side (torchvision, bilinear with antialiasing) and centre-cropped
(vidtok/data/vidtok.py).
"""

from __future__ import annotations

import os
import re
from typing import Any

import ml_collections
import numpy as np
import yaml

from vqtok import config as config_lib
from vqtok.models.discriminator import MAGVIT_STYLEGAN
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError, read_checkpoint

NAME = "vidtok"
FILES = (
  "vidtok_fsq_causal_488_{262144,32768,4096}.ckpt, vidtok_fsq_causal_41616_262144.ckpt,"
  " vidtok_fsq_noncausal_{488,41616}_262144.ckpt and v1.1's"
  " vidtok_fsq_causal_{488_32768,888_32768,41616_262144}_v1_1.ckpt (with their YAML beside them: the FSQ levels)"
)
IGNORE = (r"loss\..*", r"model_ema\..*", r"regularization\..*")


def read(path: str) -> dict[str, Any]:
  """The checkpoint, and the YAML beside it (same name) when there is one."""
  obj = read_checkpoint(path)
  stem = os.path.splitext(path)[0]
  config = None
  for ext in (".yaml", ".yml"):
    if os.path.isfile(stem + ext):
      with open(stem + ext) as f:
        config = yaml.safe_load(f)
      break
  return {"checkpoint": obj, "yaml": config, "name": os.path.basename(path)}


def state_dict(obj: dict[str, Any], *, ema: bool, source: str) -> dict[str, np.ndarray]:
  if ema:
    raise CheckpointError(f"{source}: VidTok's published files hold no EMA weights; drop --ema")
  top = obj["checkpoint"]
  # A Lightning file holds the weights under "state_dict"; the reference's init_from_ckpt also takes a bare one.
  flat = isinstance(top, dict) and "state_dict" not in top and any(str(k).startswith("encoder.") for k in top)
  tensors = common.pick_state_dict({"state_dict": top} if flat else top, ("state_dict",), source, NAME)
  return tensors


#: The encoders vqtok converts: v1.0's and v1.1's causal ones and the non-causal one.
TARGETS = {
  "vidtok.modules.model_3dcausal.EncoderCausal3DPadding": "v1.0",
  "vidtok.modules.model_3dcausal_v1_1.EncoderCausal3DPadding": "v1.1",
  "vidtok.modules.model_3dnoncausal.Encoder3D": "noncausal",
}


def _model_params(obj: dict[str, Any], source: str) -> tuple[dict[str, Any], str]:
  """The YAML's ``model.params`` (empty without a YAML) and the version, "v1.0", "v1.1" or "noncausal" (the YAML's
  encoder, else the file name: ``*_v1_1*``; without a YAML the tensors tell non-causal files), refusing other
  VidTok models."""
  version = "v1.1" if re.search(r"v1_1", obj["name"]) else "v1.0"
  if obj["yaml"] is None:
    return {}, version
  try:
    params = obj["yaml"]["model"]["params"]
    target = params["encoder_config"]["target"]
  except (KeyError, TypeError):
    raise CheckpointError(f"{source}: the YAML beside it has no model.params.encoder_config.target") from None
  if target not in TARGETS:
    raise CheckpointError(
      f"{source}: its YAML builds {target}; vqtok converts model_3dcausal(_v1_1).EncoderCausal3DPadding and"
      " model_3dnoncausal.Encoder3D"
    )
  return params, TARGETS[target]


def options(obj: dict[str, Any], source: str) -> dict[str, Any]:
  """The version, FSQ levels, time upsampling and whether the YAML's model is causal, from the YAML beside the
  file (defaults: the file name's version, 8s; v1.1 trilinear as every published v1.1 YAML; without a YAML the
  tensors tell causal files from non-causal ones), refusing what vqtok does not convert."""
  params, version = _model_params(obj, source)
  reg = params.get("regularizer_config", {})
  if reg and reg.get("target") != "vidtok.modules.regularizers.FSQRegularizer":
    raise CheckpointError(f"{source}: its YAML regularizer is {reg.get('target')}; vqtok converts the FSQ files")
  enc = params.get("encoder_config", {}).get("params", {})
  if enc.get("init_pad_mode", "replicate") != "replicate" or enc.get("norm_type", "layernorm") != "layernorm":
    raise CheckpointError(f"{source}: vqtok converts VidTok with init_pad_mode replicate and norm_type layernorm")
  levels = reg.get("params", {}).get("levels")
  out: dict[str, Any] = {"levels": tuple(int(v) for v in levels)} if levels else {}
  if params:
    out["causal"] = version != "noncausal"
  if version == "v1.1":
    mode = enc.get("interpolation_mode", "trilinear" if not params else "nearest")  # the code's default: nearest
    if mode not in INTERPOLATIONS:
      raise CheckpointError(f"{source}: interpolation_mode {mode!r}; VidTok v1.1 has {sorted(INTERPOLATIONS)}")
    out.update(v1_1=True, time_upsample=INTERPOLATIONS[mode])
  return out


#: VidTok v1.1's ``interpolation_mode`` -> ``model.time_upsample``.
INTERPOLATIONS = {"nearest": "repeat", "trilinear": "linear"}


def preset(
  channel_mult: tuple[int, ...] = (1, 2, 4, 4),
  *,
  channels: int = 128,
  num_res_blocks: int = 2,
  levels: tuple[int, ...] = (8,) * 6,
  temporal_downsample: tuple[int, ...] = (),
  temporal_upsample: tuple[int, ...] = (),
  v1_1: bool = False,
  time_upsample: str = "",
  causal: bool = True,
) -> ml_collections.ConfigDict:
  """The vqtok config of a VidTok FSQ model (defaults: vidtok_fsq_causal_488_262144.yaml).

  ``v1_1``: VidTok v1.1 (model_3dcausal_v1_1.py): every causal conv and the time downsamplings' means
  padded with copies of the first frame (v1.0: zeros), and the decoder's time upsampling ``time_upsample``
  ("linear": the YAMLs' trilinear; default "linear" for v1.1, "repeat" for v1.0).
  ``causal=False``: the non-causal model (model_3dnoncausal.py, vidtok_fsq_noncausal_*.yaml): time convs
  padded with a zero frame on each side, 16-frame clips (k*4 frames -> k latent frames).

  Time strides default to VidTok's: the encoder halves time at its levels n - 3 and n - 2
  (``tempo_ds``), the decoder doubles it at its levels 1 and 2 (``tempo_us``), which vqtok lists
  as the encoder's: entries 0 and 1 (decoder level i + 1 mirrors encoder level i).
  """
  if v1_1 and not causal:
    raise ValueError("VidTok v1.1 is causal; its non-causal models are v1.0's (model_3dnoncausal.py)")
  n = len(channel_mult)
  down = tuple(temporal_downsample) or tuple(2 if i in (n - 3, n - 2) else 1 for i in range(n - 1))
  up = tuple(temporal_upsample) or tuple(2 if i in (0, 1) else 1 for i in range(n - 1))
  c = config_lib.cnn_config(
    cnn_family="vidtok",
    channels=channels,
    channel_mult=tuple(channel_mult),
    num_res_blocks=num_res_blocks,
    attention=True,  # the middle's, as VidTok's mid.attn_1
    z_channels=0,  # the encoder's output is the FSQ input
    code_dim=len(levels),
    temporal_downsample=down,
    temporal_upsample=up,
    # v1.0's CausalConv3d / CausalConv1d pad with zeros (pad_mode "constant"); v1.1's with the first frame
    time_padding="replicate" if v1_1 else "zeros",
    time_upsample=time_upsample or ("linear" if v1_1 else "repeat"),
    # model_3dnoncausal.py: torch's Conv3d / Conv1d with padding=1 (zeros on both sides in time)
    causal=causal,
    # regularizers.py FSQRegularizer.bound: (levels - 1) * (1 + 1e-3) / 2, lucidrains' bound
    quantizer={"type": "fsq", "levels": tuple(levels), "bound": "wide"},
    preprocess="torchvision_bilinear_center_crop",
    image_size=256,
    discriminator=MAGVIT_STYLEGAN,
  )
  if not causal:
    c.video.num_frames = 16  # vidtok_fsq_noncausal_*.yaml's sample_num_frames (causal: 17)
  return c


def config(
  tensors: dict[str, np.ndarray],
  source: str,
  levels: tuple[int, ...] = (),
  v1_1: bool = False,
  time_upsample: str = "",
  causal: bool | None = None,
) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint's variant, read off the tensor shapes (and ``options``': the YAML's
  levels, the version, whether its model is causal, which the tensors must agree with)."""
  # model_3dnoncausal.py's convs are torch's own; the causal ones wrap them as ``.conv``.
  causal_tensors = "encoder.conv_in.weight" not in tensors
  if causal is not None and causal != causal_tensors:
    kinds = ("non-causal (model_3dnoncausal.py)", "causal (model_3dcausal.py)")
    raise CheckpointError(
      f"{source}: its YAML builds a {kinds[causal]} model, but its tensors are a {kinds[causal_tensors]} one's"
    )
  w = ".conv" if causal_tensors else ""
  ch = common.require(tensors, f"encoder.conv_in{w}.weight", source, NAME, 5)[0]
  common.require(tensors, f"encoder.down_temporal.0.block.0.conv1{w}.weight", source, NAME, 3)  # (2+1)-D blocks
  n = common.count(tensors, r"encoder\.down\.(\d+)\.", source, "encoder levels")
  blocks = common.count(tensors, r"encoder\.down\.0\.block\.(\d+)\.", source, "level-0 blocks")
  widths = [common.require(tensors, f"encoder.down.{i}.block.0.conv1.weight", source, NAME, 4)[0] for i in range(n)]
  z = common.require(tensors, f"encoder.conv_out{w}.weight", source, NAME, 5)[0]
  levels = tuple(levels) or (8,) * z
  if len(levels) != z:
    raise CheckpointError(f"{source}: {len(levels)} FSQ levels {list(levels)} for an encoder of {z} channels")
  # A level with a time downsampling has down_temporal.i.downsample; the decoder's time upsamplings are at
  # its levels with up_temporal.i.upsample, listed as the encoder's (decoder level i + 1 mirrors level i).
  down = tuple(2 if f"encoder.down_temporal.{i}.downsample.mix_factor" in tensors else 1 for i in range(n - 1))
  up = tuple(2 if f"decoder.up_temporal.{i + 1}.upsample.mix_factor" in tensors else 1 for i in range(n - 1))
  return preset(
    common.multiples(widths, ch, source),
    channels=ch,
    num_res_blocks=blocks,
    levels=levels,
    temporal_downsample=down,
    temporal_upsample=up,
    v1_1=v1_1,
    time_upsample=time_upsample,
    causal=causal_tensors,
  )


def _conv3d(x: np.ndarray) -> np.ndarray:
  """torch Conv3d weight (O, I, t, h, w) -> Flax kernel (t, h, w, I, O)."""
  if x.ndim != 5:
    raise ValueError(f"a Conv3d weight has 5 axes (out, in, t, h, w); got shape {x.shape}")
  return np.transpose(x, (2, 3, 4, 1, 0))


def _conv1d_time(x: np.ndarray) -> np.ndarray:
  """torch Conv1d weight over time (O, I, t) -> Flax kernel (t, 1, 1, I, O)."""
  if x.ndim != 3:
    raise ValueError(f"a Conv1d weight has 3 axes (out, in, t); got shape {x.shape}")
  return np.transpose(x, (2, 1, 0))[:, None, None]


def _conv1x1x1_heads(out: bool) -> L.Layout:
  """A 1x1x1 Conv3d (O, I, 1, 1, 1) -> a single-head attention kernel (in: (I, 1, O); out: (1, I, O))."""
  return lambda x: (L.conv1x1_as_heads_out if out else L.conv1x1_as_heads_in)(x[..., 0])


def _wrapped(prefix: str, target: L.Prefix, layout: L.Layout, wrapped: bool = True) -> tuple[L.Rule, ...]:
  """VidTok's causal convs wrap a torch conv as ``.conv``: ``<prefix>.conv.weight`` / ``.bias`` (``wrapped``;
  the non-causal model's are torch's own: ``<prefix>.weight``)."""
  name = rf"{prefix}\.conv" if wrapped else prefix
  return (
    L.under(name, target, "weight", lambda: "kernel", layout),
    L.under(name, target, "bias", lambda: "bias", L.as_is),
  )


def _norm(prefix: str, target: L.Prefix) -> tuple[L.Rule, ...]:
  """VidTok's ``LayerNorm`` wraps torch's as ``.norm``."""
  return L.torch_norm(rf"{prefix}\.norm", target)


def _block(prefix: str, target: L.Prefix, conv: L.Layout, wrapped: bool) -> tuple[L.Rule, ...]:
  """A residual block (norm1, conv1, norm2, conv2, nin_shortcut); ``wrapped``: causal convs (``.conv.weight``)."""
  sub = L.extend(target)
  rules = [*_norm(rf"{prefix}\.norm1", sub("norm1")), *_norm(rf"{prefix}\.norm2", sub("norm2"))]
  for name, path in (("conv1", "conv1"), ("conv2", "conv2"), ("nin_shortcut", "skip")):
    torch_name = rf"{prefix}\.{name}\.conv" if wrapped else rf"{prefix}\.{name}"
    rules += [
      L.under(torch_name, sub(path), "weight", lambda: "kernel", conv),
      L.under(torch_name, sub(path), "bias", lambda: "bias", L.as_is),
    ]
  return tuple(rules)


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path."""
  last = len(c.model.channel_mult) - 1
  flip = lambda i: last - int(i)  # the reference's decoder level i is vqtok's level last - i
  qkv = {"q": "query", "k": "key", "v": "value"}
  w = bool(c.model.get("causal", True))  # causal convs wrap torch's as ``.conv``; the non-causal model's do not
  qkv_conv = r"\.conv" if w else ""
  return (
    *_wrapped(r"(encoder|decoder)\.conv_in", "{0}.conv_in", _conv3d, w),
    *_wrapped(r"(encoder|decoder)\.conv_out", "{0}.conv_out", _conv3d, w),
    *_norm(r"(encoder|decoder)\.norm_out", "{0}.norm_out"),
    # levels: the spatial half of each (2+1)-D block per frame (Conv2d), the temporal half per pixel (Conv1d)
    *_block(r"encoder\.down\.(\d+)\.block\.(\d+)", "encoder.res.{0}.{1}.space", L.conv, wrapped=False),
    *_block(r"encoder\.down_temporal\.(\d+)\.block\.(\d+)", "encoder.res.{0}.{1}.time", _conv1d_time, wrapped=w),
    *L.torch_conv(r"encoder\.down\.(\d+)\.downsample\.conv", "encoder.down.{0}.conv"),
    *_wrapped(r"encoder\.down_temporal\.(\d+)\.downsample\.conv", "encoder.down.{0}.time", _conv3d, w),
    L.Rule(r"encoder\.down_temporal\.(\d+)\.downsample\.mix_factor", "encoder.down.{1}.time.mix_factor"),
    *_block(r"decoder\.up\.(\d+)\.block\.(\d+)", lambda i, j: f"decoder.res.{flip(i)}.{j}.space", L.conv, False),
    *_block(
      r"decoder\.up_temporal\.(\d+)\.block\.(\d+)", lambda i, j: f"decoder.res.{flip(i)}.{j}.time", _conv1d_time, w
    ),
    *L.torch_conv(r"decoder\.up\.(\d+)\.upsample\.conv", lambda i: f"decoder.up.{flip(i)}.conv"),
    *_wrapped(r"decoder\.up_temporal\.(\d+)\.upsample\.conv", lambda i: f"decoder.up.{flip(i)}.time", _conv3d, w),
    L.Rule(
      r"decoder\.up_temporal\.(\d+)\.upsample\.mix_factor", lambda m: f"decoder.up.{flip(m.group(1))}.time.mix_factor"
    ),
    # the middle: 3-D blocks (causal, or padded on both sides) around a per-frame attention of 1x1x1 convs
    *_block(r"(encoder|decoder)\.mid\.block_1", "{0}.mid.0", _conv3d, wrapped=w),
    *_block(r"(encoder|decoder)\.mid\.block_2", "{0}.mid.1", _conv3d, wrapped=w),
    *_norm(r"(encoder|decoder)\.mid\.attn_1\.norm", "{0}.mid_attn.norm"),
    L.under(
      r"(encoder|decoder)\.mid\.attn_1",
      "{0}.mid_attn",
      rf"(q|k|v){qkv_conv}\.weight",
      lambda p: f"attn.{qkv[p]}.kernel",
      _conv1x1x1_heads(False),
    ),
    L.under(
      r"(encoder|decoder)\.mid\.attn_1",
      "{0}.mid_attn",
      rf"(q|k|v){qkv_conv}\.bias",
      lambda p: f"attn.{qkv[p]}.bias",
      L.bias_as_heads,
    ),  # fmt: skip
    L.under(
      r"(encoder|decoder)\.mid\.attn_1",
      "{0}.mid_attn",
      rf"proj_out{qkv_conv}\.weight",
      lambda: "attn.out.kernel",
      _conv1x1x1_heads(True),
    ),
    L.under(
      r"(encoder|decoder)\.mid\.attn_1", "{0}.mid_attn", rf"proj_out{qkv_conv}\.bias", lambda: "attn.out.bias", L.as_is
    ),
  )
