"""NVIDIA Cosmos DV (Agarwal et al., 2025, arXiv:2501.03575): causal video tokenizers with FSQ, 64,000 codes.

Published by NVIDIA on Hugging Face as TorchScript archives: Cosmos-Tokenizer 0.1's
nvidia/Cosmos-0.1-Tokenizer-DV4x8x8, DV8x8x8, DV8x16x16 (NVIDIA/Cosmos-Tokenizer) and Cosmos 1.0's
nvidia/Cosmos-1.0-Tokenizer-DV8x16x16 and DV4x8x8-LowRes (NVIDIA/Cosmos, cosmos1/models/tokenizer, removed
from its tree at d52bc15): ``encoder.jit`` (``encoder_jit()``: encoder, quant_conv, quantizer),
``decoder.jit`` (``decoder_jit()``: inv_quant, post_quant_conv, decoder) and ``autoencoder.jit`` (the whole
``CausalDiscreteVideoTokenizer``), which the reference loads with ``torch.jit.load``
(cosmos_tokenizer/utils.py; 1.0: inference/utils.py). vqtok reads them without torch (``reader``): a
directory with ``encoder.jit`` and ``decoder.jit`` (or ``autoencoder.jit``), or one of those files (the
other archive beside it). Modules: layers3d.py (EncoderFactorized, DecoderFactorized: vqtok's ``cosmos``
CNN family, 1.0's ``cosmos1``), patching.py (Patcher3D: ``model.wavelet_patch``, 4; 2 for 1.0's
DV4x8x8-LowRes, whose z_channels are 256, not 16) and quantizers.py (FSQuantizer, levels 8-8-8-5-5-5, no
weights; its ids read the levels first least significant, as vqtok's FSQ).

Quirks, each from the reference:
  * In 0.1, which levels downsample space and time is not in the tensors (a level that does neither
    keeps its three convs, layers3d.py CausalHybridDownsample3d); it is read off the traced code: a
    traced ``forward`` calls only the convs it used (``reader.script_forward_calls``). The
    decoder's upsamplings follow Cosmos's own rule (``cnn.cosmos_up_schedule``, legacy_mode=False,
    the same in 1.0), checked against the archive's.
  * 1.0's CausalHybridDownsample3d and CausalHybridUpsample3d make each conv their strides do not use
    an ``nn.Identity`` (no weights; 1.0 loads an archive with ``strict=True``): the ``cosmos1`` family,
    told from 0.1's by which convs the archive holds, which then give the strides (the traced code must
    agree; ``options``). Nothing else in the modules the discrete video tokenizer runs differs from 0.1
    (encoder, decoder, patcher, FSQ, padding, the rule).
  * Every CausalConv3d wraps an ``nn.Conv3d`` as ``.conv3d`` and every CausalNormalize a
    GroupNorm (one group) as ``.norm``; the factorised convs are ``nn.Sequential``s (``.0`` space,
    ``.1`` time); the decoder lists its levels from the highest resolution (``up.0``), vqtok's
    from the lowest.
  * FSQuantizer bounds with ``(L - 1) * (1 + 1e-3) / 2`` (vector-quantize-pytorch's), the paper with
    ``1 - 1e-3``: ``FSQ(bound="wide")``.
  * The archives also hold buffers that are not weights (the Haar filters, persistent in 1.0's state
    dict; FSQ's ``_levels``, ``_basis`` and ``implicit_codebook``): ignored, but ``_levels`` gives the
    FSQ levels, and the Haar filters (bfloat16-rounded, 0.70703125) and ``patch_size_buffer`` are
    checked (``_check_patcher``).
  * Videos are [-1, 1], (B, 3, 1 + k*s_T, H, W) in the reference (video_lib.py), which runs them
    in bfloat16; vqtok in float32.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.models import cnn
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError, read_checkpoint, script_forward_calls

NAME = "cosmos"
FILES = (
  "a Cosmos DV directory (Cosmos-0.1-Tokenizer-DV4x8x8, DV8x8x8, DV8x16x16, Cosmos-1.0-Tokenizer-DV8x16x16,"
  " DV4x8x8-LowRes) with encoder.jit and decoder.jit (or autoencoder.jit), or one of those files"
)
#: Buffers of the archives that are not weights: the Haar filters and FSQ's constants.
IGNORE = (
  r"(encoder\.patcher3d|decoder\.unpatcher3d)\.(wavelets|_arange|patch_size_buffer)",
  r"quantizer\.(_levels|_basis|implicit_codebook)",
)
ARCHIVES = ("encoder.jit", "decoder.jit", "autoencoder.jit")
#: The reference's temporal_window (video_lib.py): 17 = 1 + 2*8 = 1 + 4*4 frames a clip.
NUM_FRAMES = 17


def _archives(path: str) -> list[str]:
  """The archives to read for ``path``: encoder.jit and decoder.jit, else autoencoder.jit."""
  folder, name = (path, "") if os.path.isdir(path) else os.path.split(path)
  have = {f for f in ARCHIVES if os.path.isfile(os.path.join(folder, f))}
  if name and name not in ARCHIVES:
    return [path]  # a renamed archive: whatever it holds must be the whole model
  if {"encoder.jit", "decoder.jit"} <= have and name != "autoencoder.jit":
    return [os.path.join(folder, "encoder.jit"), os.path.join(folder, "decoder.jit")]
  if "autoencoder.jit" in have and name in ("", "autoencoder.jit"):
    return [os.path.join(folder, "autoencoder.jit")]
  raise CheckpointError(
    f"{path}: a Cosmos DV tokenizer needs encoder.jit and decoder.jit side by side, or autoencoder.jit;"
    f" found {sorted(have) or 'none of them'} in {folder or '.'}"
  )


def _names(name: str) -> str:
  # decoder.jit holds the quantizer as inv_quant.quantizer (InvQuantizerJit).
  return "quantizer." + name[len("inv_quant.quantizer.") :] if name.startswith("inv_quant.quantizer.") else name


def read(path: str) -> dict[str, Any]:
  """The archives' tensors under the whole model's names, and what each module's traced forward calls."""
  tensors: dict[str, np.ndarray] = {}
  calls: dict[str, frozenset[str]] = {}
  for f in _archives(path):
    sd = read_checkpoint(f)
    if not isinstance(sd, dict) or not sd:
      raise CheckpointError(f"{f}: not a TorchScript archive of a Cosmos tokenizer")
    for k, v in sd.items():
      k = _names(k)
      if k in tensors and not np.array_equal(tensors[k], v):
        raise CheckpointError(f"{f}: {k} differs from the other archive's; are they of the same model?")
      tensors[k] = v
    calls.update(script_forward_calls(f))
  return {"tensors": tensors, "calls": calls}


def weights_file(path: str) -> str:
  return _archives(path)[0]


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  if ema:
    raise CheckpointError(f"{source}: Cosmos archives hold no EMA weights; drop --ema")
  t = obj["tensors"]
  for key in ("encoder.conv_in.0.conv3d.weight", "decoder.conv_out.1.conv3d.weight", "quantizer._levels"):
    if key not in t:
      raise CheckpointError(
        f"{source}: not a Cosmos DV tokenizer: no {key} (found {', '.join(list(t)[:4])}); give the directory"
        " with encoder.jit and decoder.jit"
      )
  return {k: np.asarray(v) for k, v in t.items()}


#: The convs of a CausalHybridDownsample3d or CausalHybridUpsample3d (layers3d.py).
_CONVS = ("conv1", "conv2", "conv3")


def _held(tensors: dict[str, np.ndarray], prefix: str) -> frozenset[str]:
  return frozenset(c for c in _CONVS if f"{prefix}.{c}.conv3d.weight" in tensors)


def options(obj: Any, source: str) -> dict[str, Any]:
  """The CNN family and the (space, time) strides of each encoder level.

  0.1 (cosmos_tokenizer/modules/layers3d.py) builds conv1-3 in every resampling: its strides are read off
  which convs the traced code calls (``cosmos``). 1.0 (cosmos1/models/tokenizer/modules/layers3d.py,
  CausalHybridDownsample3d / CausalHybridUpsample3d) builds only the convs its strides use, the others
  ``nn.Identity``s without weights: its strides are in the tensors, and the traced code must agree
  (``cosmos1``). Either way the decoder's must be Cosmos's rule for the encoder's.
  """
  calls, tensors = obj["calls"], obj["tensors"]
  n = common.count(tensors, r"encoder\.down\.(\d+)\.block\.", source, "encoder levels")
  downs = [f"encoder.down.{i}.downsample" for i in range(n - 1)]
  ups = [f"decoder.up.{n - 1 - k}.upsample" for k in range(n - 1)]  # vqtok's upsampling k is up.{n - 1 - k}
  held = {m: _held(tensors, m) for m in downs + ups}
  traced = {m: frozenset(calls[m]) & frozenset(_CONVS) for m in downs + ups if m in calls}
  if all(h == frozenset(_CONVS) for h in held.values()):
    family, convs = "cosmos", traced
    missing = [m for m in downs + ups if m not in traced]
    if not downs or missing:
      raise CheckpointError(f"{source}: the archive has no traced code for {missing[0] if missing else 'levels'}")
  else:
    family, convs = "cosmos1", held
    odd = [m for m in traced if traced[m] != held[m]]
    if odd:
      raise CheckpointError(
        f"{source}: {odd[0]} holds {sorted(held[odd[0]])} and its traced code calls {sorted(traced[odd[0]])}:"
        " neither Cosmos 0.1's layout (all three convs at every level) nor 1.0's (only the convs it calls)"
      )
  space = tuple(2 if "conv1" in convs[d] else 1 for d in downs)
  time = tuple(2 if "conv2" in convs[d] else 1 for d in downs)
  want = cnn.cosmos_up_schedule(space, time)
  got = tuple((2 if "conv2" in convs[u] else 1, 2 if "conv1" in convs[u] else 1) for u in ups)
  if got != want:
    raise CheckpointError(
      f"{source}: the decoder upsamples (space, time) {got} from its lowest level; Cosmos's rule"
      f" (legacy_mode=False) gives {want} for the encoder's strides: a layout vqtok does not build"
    )
  return {"spatial": space, "temporal": time, "family": family}


def config(
  tensors: dict[str, np.ndarray],
  source: str,
  *,
  spatial: tuple[int, ...],
  temporal: tuple[int, ...],
  family: str = "cosmos",
) -> ml_collections.ConfigDict:
  """The vqtok config, read off the tensor shapes, the traced strides and the family (``options``)."""
  conv_in = common.require(tensors, "encoder.conv_in.0.conv3d.weight", source, NAME, 5)
  ch = conv_in[0]
  patch = round((conv_in[1] // 3) ** (1 / 3))
  if 3 * patch**3 != conv_in[1]:
    raise CheckpointError(f"{source}: conv_in takes {conv_in[1]} channels; expected 3 * p**3 (Haar patch p)")
  _check_patcher(tensors, patch, source)
  n = common.count(tensors, r"encoder\.down\.(\d+)\.", source, "encoder levels")
  blocks = common.count(tensors, r"encoder\.down\.0\.block\.(\d+)\.", source, "level-0 blocks")
  widths = [
    common.require(tensors, f"encoder.down.{i}.block.0.conv1.0.conv3d.weight", source, NAME)[0] for i in range(n)
  ]
  if common.indices(tensors, r"(?:en|de)coder\.(?:down|up)\.(\d+)\.attn\."):
    raise CheckpointError(f"{source}: attention inside the levels; vqtok's cosmos CNN has it in the middle only")
  levels = [int(v) for v in np.asarray(tensors["quantizer._levels"]).reshape(-1)]
  code_dim = common.require(tensors, "quant_conv.conv3d.weight", source, NAME, 5)[0]
  if code_dim != len(levels):
    raise CheckpointError(f"{source}: quant_conv gives {code_dim} channels for {len(levels)} FSQ levels")
  c = config_lib.cnn_config(
    cnn_family=family,
    channels=ch,
    channel_mult=common.multiples(widths, ch, source),
    num_res_blocks=blocks,
    attention="encoder.mid.attn_1.0.q.conv3d.weight" in tensors,
    norm_groups=1,  # CausalNormalize(num_groups=1) throughout the factorised CNN
    z_channels=common.require(tensors, "encoder.conv_out.1.conv3d.weight", source, NAME, 5)[0],
    code_dim=code_dim,
    temporal_downsample=tuple(temporal),
    spatial_downsample=tuple(spatial),
    wavelet_patch=patch,
    time_padding="replicate",
    quantizer={"type": "fsq", "levels": levels, "bound": "wide"},  # quantizers.py bound: (1 + eps)
    discriminator={},
    image_size=256,
  )
  c.video.num_frames = NUM_FRAMES
  return c


def _check_patcher(tensors: dict[str, np.ndarray], patch: int, source: str) -> None:
  """The Haar filters (buffers of Patcher3D / UnPatcher3D, patching.py ``_WAVELETS``): persistent in 1.0's
  state dict, in every archive. Not weights (vqtok's ``haar_patch`` has 1/sqrt(2) built in), but they tell
  ``patch_method="haar"`` from ``"rearrange"`` (ones), which vqtok does not build. The archives hold them in
  bfloat16 (0.70703125), as they hold the weights."""
  for key in ("encoder.patcher3d.wavelets", "decoder.unpatcher3d.wavelets"):
    if key in tensors and not np.allclose(np.asarray(tensors[key], np.float64), [2**-0.5] * 2, rtol=0, atol=1e-3):
      raise CheckpointError(
        f"{source}: {key} is {np.asarray(tensors[key]).tolist()}, not the Haar filter [1/sqrt(2)] * 2: a"
        " patch_method other than 'haar', which vqtok does not build"
      )
  size = tensors.get("encoder.patcher3d.patch_size_buffer")
  if size is not None and int(np.asarray(size).reshape(-1)[0]) != patch:
    raise CheckpointError(f"{source}: patch_size_buffer says {int(np.asarray(size).reshape(-1)[0])}, conv_in {patch}")


def _conv3d(x: np.ndarray) -> np.ndarray:
  """PyTorch Conv3d weight (out, in, kt, kh, kw) -> Flax kernel (kt, kh, kw, in, out)."""
  if x.ndim != 5:
    raise ValueError(f"a Conv3d weight has 5 axes (out, in, kt, kh, kw); got shape {x.shape}")
  return np.transpose(x, (2, 3, 4, 1, 0))


def _squeeze(layout: L.Layout) -> L.Layout:
  """A 1x1 conv layout for a 1x1x1 Conv3d weight (out, in, 1, 1, 1)."""
  return lambda x: layout(x[..., 0])


def conv(prefix: str, target: L.Prefix) -> tuple[L.Rule, ...]:
  """A CausalConv3d (``<prefix>.conv3d``) -> a ``CausalConv``."""
  return (
    L.under(rf"{prefix}\.conv3d", target, "weight", lambda: "kernel", _conv3d),
    L.under(rf"{prefix}\.conv3d", target, "bias", lambda: "bias", L.as_is),
  )


def factorized(prefix: str, target: L.Prefix) -> tuple[L.Rule, ...]:
  """A (1, k, k) then (k, 1, 1) ``nn.Sequential`` -> a ``FactorizedConv``."""
  sub = L.extend(target)
  return (*conv(rf"{prefix}\.0", sub("space")), *conv(rf"{prefix}\.1", sub("time")))


def resnet(prefix: str, target: L.Prefix) -> tuple[L.Rule, ...]:
  """CausalResnetBlockFactorized3d -> ``ResBlock`` with factorised convs."""
  sub = L.extend(target)
  return (
    *L.torch_norm(rf"{prefix}\.norm1\.norm", sub("norm1")),
    *factorized(rf"{prefix}\.conv1", sub("conv1")),
    *L.torch_norm(rf"{prefix}\.norm2\.norm", sub("norm2")),
    *factorized(rf"{prefix}\.conv2", sub("conv2")),
    *conv(rf"{prefix}\.nin_shortcut", sub("skip")),
  )


def attention(prefix: str, target: L.Prefix) -> tuple[L.Rule, ...]:
  """CausalAttnBlock or CausalTemporalAttnBlock (norm, 1x1x1 q/k/v, proj_out) -> single-head attention."""
  qkv = {"q": "query", "k": "key", "v": "value"}
  heads_in, heads_out = _squeeze(L.conv1x1_as_heads_in), _squeeze(L.conv1x1_as_heads_out)
  return (
    *L.torch_norm(rf"{prefix}\.norm\.norm", L.extend(target)("norm")),
    L.under(prefix, target, r"(q|k|v)\.conv3d\.weight", lambda p: f"attn.{qkv[p]}.kernel", heads_in),
    L.under(prefix, target, r"(q|k|v)\.conv3d\.bias", lambda p: f"attn.{qkv[p]}.bias", L.bias_as_heads),
    L.under(prefix, target, r"proj_out\.conv3d\.weight", lambda: "attn.out.kernel", heads_out),
    L.under(prefix, target, r"proj_out\.conv3d\.bias", lambda: "attn.out.bias", L.as_is),
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path."""
  last = len(c.model.channel_mult) - 1
  flip = lambda i: last - int(i)  # the reference's decoder level i is vqtok's level last - i
  rows: list[L.Rule] = []
  for side in ("encoder", "decoder"):
    rows += [
      *factorized(rf"{side}\.conv_in", f"{side}.conv_in"),
      *factorized(rf"{side}\.conv_out", f"{side}.conv_out"),
      *L.torch_norm(rf"{side}\.norm_out\.norm", f"{side}.norm_out"),
      *resnet(rf"{side}\.mid\.block_1", f"{side}.mid.0"),
      *resnet(rf"{side}\.mid\.block_2", f"{side}.mid.1"),
      *attention(rf"{side}\.mid\.attn_1\.0", f"{side}.mid_attn.space"),
      *attention(rf"{side}\.mid\.attn_1\.1", f"{side}.mid_attn.time"),
    ]
  rows += [
    *resnet(r"encoder\.down\.(\d+)\.block\.(\d+)", "encoder.res.{0}.{1}"),
    *conv(r"encoder\.down\.(\d+)\.downsample\.(conv\d)", "encoder.down.{0}.{1}"),
    *resnet(r"decoder\.up\.(\d+)\.block\.(\d+)", lambda i, j: f"decoder.res.{flip(i)}.{j}"),
    *conv(r"decoder\.up\.(\d+)\.upsample\.(conv\d)", lambda i, n: f"decoder.up.{flip(i)}.{n}"),
    L.Rule(r"quant_conv\.conv3d\.weight", "project_in.kernel", _squeeze(L.conv1x1_as_linear)),
    L.Rule(r"quant_conv\.conv3d\.bias", "project_in.bias"),
    L.Rule(r"post_quant_conv\.conv3d\.weight", "project_out.kernel", _squeeze(L.conv1x1_as_linear)),
    L.Rule(r"post_quant_conv\.conv3d\.bias", "project_out.bias"),
  ]
  return tuple(rows)


__all__ = ["NAME", "FILES", "IGNORE", "config", "options", "read", "state_dict", "table", "weights_file"]
