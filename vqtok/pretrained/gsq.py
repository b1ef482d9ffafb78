"""GSQ (Wang et al., 2024, "Scaling Image Tokenizers with Grouped Spherical Quantization", arXiv:2412.02632).

Published on the Hugging Face Hub (collection HelmholtzAI-FZJ "Grouped
Spherical Quantization": GSQ-F8-D8-V64k, GSQ-F8-D64-G16-V8k, GSQ-F16-...,
GSQ-F32-...), each repository a ``checkpoint.pt`` and a ``config.yaml``. The
file is what flex_gen's ``Basictokenizer.save`` writes
(HelmholtzAI-FZJ/flex_gen, flex_gen/autoencoders/basic_tokenizer.py):
``{"model_state_dict": ..., "config": pickle.dumps(the FlexTokenizer
arguments)}``; the arguments (read here without running code, OmegaConf
containers as the trainer passes them or plain ones) must be those of the
published models: ``flexTokenizer`` with ``use_adaptive_norm`` and
``use_learnable_up_down_sample`` (vqtok's ``flex`` CNN family), no attention,
3x3 kernels, and a ``vq`` (one group), ``gvq`` or ``gsq`` quantizer: vqtok's
``gsq`` (one codebook for the groups, the stored code as output) with
``normalize="l2"`` where ``use_l2_norm`` (GSQ: the nearest code after both
are normalised), and the ablations published beside (``-no_l2``: ``"none"``;
``-CLIP``: ``force_1d_clip``, ``"clip"``).

The encoder and decoder keep their blocks in one flat list each
(``encoder.blocks.N``: res blocks, the stride-2 convs; ``decoder.blocks.N``:
res blocks, adaptive norms, depth-to-space convs), which the table maps to
vqtok's levels by rebuilding flex_gen's order from the config; the variant is
read off the tensors. No EMA copy is published (the trainer saves the EMA
model itself). Images are [-1, 1] (``mean = std = 0.5``) at 256 px through
timm's eval transform (``create_transform(input_size=256, is_training=False)``:
short side to 292 bilinear, centre 256 crop; vqtok's ``timm_bilinear_center_crop``).
Token ids are ``(h, w, G)``; the reference's ``vq`` files give ``(h, w)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.models.discriminator import TAMING_PATCHGAN
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError, Opaque, unpickle

NAME = "gsq"
FILES = "checkpoint.pt of the HelmholtzAI-FZJ/GSQ-* repositories (flex_gen's flexTokenizer)"
IGNORE = ()

#: FlexTokenizer arguments that must have these values (its defaults where a file leaves one out).
_REQUIRED = {
  "use_adaptive_norm": (True, False),
  "use_learnable_up_down_sample": (True, False),
  "mid_block_attn": (False, False),
  "residual_conv_kernel_size": (3, 3),
  "input_conv_kernel_size": (3, 3),
  "output_conv_kernel_size": (3, 3),
}


def _plain(x: Any) -> Any:
  """OmegaConf containers (read as ``Opaque``) and their nodes as plain dicts, lists and values."""
  if isinstance(x, Opaque):
    state = x.state if isinstance(x.state, Mapping) else {}
    if isinstance(state.get("__dict__"), Mapping):  # omegaconf pickles {"__dict__": ...} (Container.__getstate__)
      state = state["__dict__"]
    if "_content" in state:
      return _plain(state["_content"])
    if "_val" in state:
      return _plain(state["_val"])
    raise CheckpointError(f"an object of class {x.qualname} in the model's arguments")
  if isinstance(x, Mapping):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  return x


def arguments(obj: Any, source: str) -> dict[str, Any]:
  """The FlexTokenizer arguments pickled under ``"config"``, as plain values; CheckpointError otherwise."""
  raw = obj.get("config") if isinstance(obj, Mapping) else None
  if not isinstance(raw, (bytes, bytearray)):
    raise CheckpointError(f"{source}: not a flex_gen checkpoint: no pickled model arguments under 'config'")
  try:
    args = _plain(unpickle(bytes(raw)))
  except CheckpointError as e:
    raise CheckpointError(f"{source}: the model arguments under 'config': {e}") from None
  if not isinstance(args, dict):
    raise CheckpointError(f"{source}: the model arguments under 'config' are a {type(args).__name__}, not a dict")
  return args


def check_arguments(args: Mapping[str, Any], source: str) -> None:
  """Refuses, in one line, a flexTokenizer that vqtok's ``flex`` family or ``gsq`` quantizer does not build."""
  for key, (want, default) in _REQUIRED.items():
    if args.get(key, default) != want:
      raise CheckpointError(f"{source}: a flexTokenizer with {key}={args.get(key, default)!r}; GSQ's have {want!r}")
  if args.get("attention_resolutions") not in (None, [], ()):
    raise CheckpointError(f"{source}: attention at {args['attention_resolutions']}; GSQ's flexTokenizer has none")
  for key in ("encoder_layer_configs", "decoder_layer_configs"):
    blocks = args.get(key)
    if not isinstance(blocks, (list, tuple)) or len(set(blocks)) != 1:
      raise CheckpointError(f"{source}: {key}={blocks!r}; vqtok's CNN has as many blocks at every level and the middle")
  q = args.get("quantizer_config")
  kind = str(q.get("quantize_type", "")).lower() if isinstance(q, Mapping) else None
  if kind not in ("vq", "gvq", "gsq"):
    raise CheckpointError(f"{source}: quantize_type {kind!r}; converts vq, gvq and gsq")
  if q.get("use_l1_norm", False):
    raise CheckpointError(f"{source}: a {kind} quantizer with use_l1_norm; converts l2-normalised or plain ones")
  if kind == "vq" and q.get("num_group", 1) != 1:
    raise CheckpointError(f"{source}: a vq quantizer with num_group={q['num_group']}; vq has one group")


def normalize(args: Mapping[str, Any]) -> str:
  """vqtok's ``GSQ(normalize=...)`` for the quantizer arguments (group_vector_quantizer.py ``normlization_func``)."""
  q = args["quantizer_config"]
  if q.get("use_l2_norm", False):
    return "l2"
  groups = q.get("num_group", 1)
  one_channel = groups and q.get("embed_dim", 0) // groups == 1
  if q.get("force_1d_clip", False) and q.get("use_uniform_init", False) and one_channel:
    return "clip"
  return "none"


def options(obj: Any, source: str) -> dict[str, Any]:
  """``config``'s arguments that the file holds besides its tensors: the quantizer's normalisation."""
  args = arguments(obj, source)
  check_arguments(args, source)
  return {"normalize": normalize(args)}


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  """The weights under ``model_state_dict``, once the pickled arguments are ones vqtok builds."""
  if ema:
    raise CheckpointError(f"{source}: GSQ checkpoints hold no separate EMA weights; drop --ema")
  tensors = common.pick_state_dict(obj, ("model_state_dict",), source, NAME)
  check_arguments(arguments(obj, source), source)
  return {k: np.asarray(v, np.float32) for k, v in tensors.items()}


def _walk(tensors: Mapping[str, np.ndarray], side: str, source: str) -> list[tuple[str, int, int]]:
  """``(kind, in, out)`` of each of ``<side>.blocks.N``: res, down (stride-2 conv), up (depth-to-space), norm."""
  out = []
  for i in range(common.count(tensors, rf"{side}\.blocks\.(\d+)\.", source, f"{side} blocks")):
    p = f"{side}.blocks.{i}"
    if f"{p}.net.2.weight" in tensors:
      o, n = np.shape(tensors[f"{p}.net.2.weight"])[:2]
      out.append(("res", n, o))
    elif f"{p}.gamma.weight" in tensors:
      o, n = np.shape(tensors[f"{p}.gamma.weight"])
      out.append(("norm", n, o))
    elif f"{p}.conv.weight" in tensors:
      o, n = np.shape(tensors[f"{p}.conv.weight"])[:2]
      out.append(("down" if side == "encoder" else "up", n, o))
    else:
      found = sorted(k[len(p) + 1 :] for k in tensors if k.startswith(p + "."))
      raise CheckpointError(f"{source}: {p} is none of flexTokenizer's blocks (tensors {found}); attention?")
  return out


def order(channels: int, mult: tuple[int, ...], blocks: int) -> tuple[list[str], list[str]]:
  """vqtok's path of each of flex_gen's ``encoder.blocks.N`` and ``decoder.blocks.N``, in flex_gen's order.

  flexTokenizerEncoder.py / flexTokenizerDecoder.py: per level, a block that
  changes the width (when it changes), ``blocks`` res blocks, then the
  resampling; the decoder's mid blocks, then an adaptive norm, and one after
  each depth-to-space.
  """
  enc, dec, ch = [], [], channels
  for i, m in enumerate(mult):
    extra = int(ch != channels * m)
    enc += [f"encoder.res.{i}.{j}" for j in range(blocks + extra)]
    enc += [f"encoder.down.{i}"] if i < len(mult) - 1 else []
    ch = channels * m
  enc += [f"encoder.mid.{j}" for j in range(blocks)]
  dec += [f"decoder.mid.{j}" for j in range(blocks)] + ["decoder.level_norm.0"]
  for k, m in enumerate(reversed(mult)):
    extra = int(ch != channels * m)
    dec += [f"decoder.res.{k}.{j}" for j in range(blocks + extra)]
    dec += [f"decoder.up.{k}", f"decoder.level_norm.{k + 1}"] if k < len(mult) - 1 else []
    ch = channels * m
  return enc, dec


def config(tensors: dict[str, np.ndarray], source: str, normalize: str = "l2") -> ml_collections.ConfigDict:
  """The vqtok config, read off the tensor shapes (so that any published size converts).

  ``normalize``: the quantizer's (``options``), which the tensors do not tell.
  """
  ch = common.require(tensors, "encoder.conv_in.weight", source, NAME, 4)[0]
  dim = common.require(tensors, "encoder.fianl_layers.2.weight", source, NAME, 4)[0]
  codes, group_dim = common.require(tensors, "quantizers.codebook.weight", source, NAME, 2)
  if dim % group_dim:
    raise CheckpointError(f"{source}: codes of {group_dim} channels do not split a {dim}-channel latent into groups")
  enc = _walk(tensors, "encoder", source)
  levels: list[list[int]] = [[]]  # the res blocks' widths, split at the stride-2 convs
  for kind, _, width in enc:
    if kind == "down":
      levels.append([])
    else:
      levels[-1].append(width)
  if not all(levels):
    raise CheckpointError(f"{source}: an encoder level without res blocks")
  mult = common.multiples([lv[-1] for lv in levels], ch, source)
  blocks = len(levels[0]) - int(mult[0] != 1)  # the last level's count holds the mid blocks too
  want, _ = order(ch, mult, blocks)
  if blocks < 1 or [".down." in p for p in want] != [kind == "down" for kind, _, _ in enc]:
    raise CheckpointError(
      f"{source}: {len(enc)} encoder blocks do not make a flexTokenizer of width {ch}, multipliers {list(mult)}"
      f" and {blocks} res blocks a level and in the middle"
    )
  if not any(kind == "norm" for kind, _, _ in _walk(tensors, "decoder", source)):
    raise CheckpointError(f"{source}: a decoder without adaptive norms (use_adaptive_norm=False); GSQ's have them")
  return config_lib.cnn_config(
    cnn_family="flex",
    channels=ch,
    channel_mult=mult,
    num_res_blocks=blocks,
    attention=False,
    z_channels=0,  # the encoder's output is the quantizer's input
    code_dim=dim,
    # group_vector_quantizer.py: mse(q, sg(ẑ)) + 0.25 mse(sg(q), ẑ) with the configs' commitment_loss_weight.
    quantizer={
      "type": "gsq",
      "codebook_size": codes,
      "num_groups": dim // group_dim,
      "commitment_weight": 0.25,
      "normalize": normalize,
    },
    preprocess="timm_bilinear_center_crop",
    image_size=256,
    discriminator=TAMING_PATCHGAN,  # the paper's DINO discriminator is not published
  )


def _res(prefix: str, target: L.Prefix) -> tuple[L.Rule, ...]:
  # layers.py ResNetBlock: net = GroupNorm(0), SiLU, Conv(2), GroupNorm(3), SiLU, Dropout, Conv(6); skip 1x1.
  sub = L.extend(target)
  return (
    *L.torch_norm(rf"{prefix}\.net\.0", sub("norm1")),
    *L.torch_conv(rf"{prefix}\.net\.2", sub("conv1")),
    *L.torch_norm(rf"{prefix}\.net\.3", sub("norm2")),
    *L.torch_conv(rf"{prefix}\.net\.6", sub("conv2")),
    *L.torch_conv(rf"{prefix}\.skip", sub("skip")),
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path."""
  enc, dec = order(c.model.channels, tuple(c.model.channel_mult), c.model.num_res_blocks)
  paths = {"encoder": enc, "decoder": dec}
  # An index past the rebuilt order names no vqtok parameter: apply_rules reports the tensor.
  at = lambda side, i: paths[side][int(i)] if int(i) < len(paths[side]) else f"{side}.blocks.{i}"
  blk = r"(encoder|decoder)\.blocks\.(\d+)"
  return (
    *L.torch_conv(r"(encoder|decoder)\.conv_in", "{0}.conv_in"),
    *L.torch_norm(r"encoder\.fianl_layers\.0", "encoder.norm_out"),
    *L.torch_conv(r"encoder\.fianl_layers\.2", "encoder.conv_out"),
    *L.torch_norm(r"decoder\.final_layers\.0", "decoder.norm_out"),
    *L.torch_conv(r"decoder\.final_layers\.2", "decoder.conv_out"),
    *_res(blk, at),
    *L.torch_conv(rf"{blk}\.conv", lambda side, i: f"{at(side, i)}.conv"),  # stride-2 and depth-to-space convs
    L.under(rf"{blk}\.(gamma|beta)", lambda side, i, p: f"{at(side, i)}.{p}", "weight", lambda: "kernel", L.linear),
    L.under(rf"{blk}\.(gamma|beta)", lambda side, i, p: f"{at(side, i)}.{p}", "bias", lambda: "bias", L.as_is),
    L.Rule(r"quantizers\.codebook\.weight", "quantizer.codebook"),
  )
