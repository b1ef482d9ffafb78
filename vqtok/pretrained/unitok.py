"""UniTok's image tokenizer (Ma et al., 2025, arXiv:2502.20321): ViTamin-L, 16 x 16 x 8 tokens at 256 px.

Published by FoundationVision/UniTok (README, "Model Weights") as
``unitok_tokenizer.pth``: ``{'args': Args.state_dict(), 'trainer': {'unitok':
UniTok.state_dict(), ...}}``, read by inference.py (``ckpt['args']``,
``ckpt['trainer']['unitok']``); there are no EMA weights. Only the image path
converts (``img_to_idx`` / ``idx_to_img``): the text tower (``text_encoder.*``)
and the CLIP heads (``fc_norm``, ``projection``, ``logit_scale``) are not part
of the tokenizer and are ignored.

Names (models/unitok.py, models/vitamin.py, models/vqvae.py, models/quant.py at
bb8012e): ``encoder.*`` is timm's VisionTransformer with UniTok's
``HybridEmbed`` around ``MbConvStages`` (``patch_embed.backbone.stem``,
``.stages.<s>.<b>``, ``.pool``), ``blocks.<i>`` (``attn.qkv``, ``mlp`` =
``GeGluMlp``: ``norm``, ``w0``, ``w1``, ``w2``) and ``norm``; ``quant_proj`` and
``post_quant_proj`` (``AttnProjection`` or a Linear, ``args.quant_proj``);
``quantizer.codebooks.<g>.codebook.weight`` (``VectorQuantizerM``: grouped l2
VQ); ``decoder.blocks``, ``decoder.norm``, ``decoder.up_conv1`` .. ``up_conv4``
(``ViTaminDecoder``). Images are [-1, 1] (utils/data.py normalize_01_into_pm1).

Quirks, each from the reference:
  * ``encoder.pos_embed`` is a frozen zero (models/unitok.py replaces timm's
    with ``torch.zeros(1, 1, width)``, ``requires_grad=False``): checked to be
    zero and dropped (vit ``posemb="none"``).
  * ``reg_tokens=args.num_query`` register tokens would be quantised too
    (``img_to_idx`` quantises every token); the published file has
    ``num_query = 0`` (256 tokens) and files with registers are refused.
  * The ViT's head count is not stored: ViTamin's sizes have 64-wide heads
    (``vitamin_small``/``base``/``large``: 6, 12, 16 heads), read off
    ``args.model``. The ``AttnProjection`` heads are ``width // vocab_width``
    (models/unitok.py; the LLaVA encoder in eval/ passes ``num_codebooks``,
    which only changes the head split, not the tensors).
  * ``quant_proj.attn.zero_k_bias`` / ``vocab_usage`` are buffers (a zero key
    bias, usage statistics): ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vqtok.config import default_config
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError

NAME = "unitok"
FILES = "unitok_tokenizer.pth (the image tokenizer; the text tower and CLIP heads are not converted)"
IGNORE = (
  r"text_encoder\..*",
  r"fc_norm\.(weight|bias)",
  r"projection\.(weight|bias)",
  r"logit_scale",
  r"encoder\.pos_embed",  # a frozen zero, checked in config()
  r"(post_)?quant_proj\.attn\.zero_k_bias",
  r"quantizer\.codebooks\.\d+\.vocab_usage",
)
#: ViT heads by ``args.model`` (models/vitamin.py's registrations); ``vitamin_tiny`` is the
#: reduced-width parity fixture of scripts/parity/gen_unitok.py.
HEADS = {"vitamin_small": 6, "vitamin_base": 12, "vitamin_large": 16, "vitamin_tiny": 2}
_BACKBONE = r"encoder\.patch_embed\.backbone"


def _args(obj: Any) -> Mapping[str, Any]:
  args = obj.get("args") if isinstance(obj, Mapping) else None
  return args if isinstance(args, Mapping) else {}


def options(obj: Any, source: str) -> dict[str, Any]:
  """``config``'s arguments that the file holds besides its tensors: ``args`` (model, img_size, losses)."""
  args = _args(obj)
  if not args:
    raise CheckpointError(f"{source}: no 'args' dict beside the weights; UniTok's ViT head count is read from it")
  return {"args": dict(args)}


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  """``trainer.unitok``, with the ViT blocks' stacked ``attn.qkv`` split into query, key and value."""
  if ema:
    raise CheckpointError(f"{source}: UniTok checkpoints hold no EMA weights; drop --ema")
  trainer = obj.get("trainer") if isinstance(obj, Mapping) else None
  tensors = common.pick_state_dict(trainer if isinstance(trainer, Mapping) else {}, ("unitok",), source, NAME)
  if "quant_proj.attn.qkv.weight" not in tensors and "quant_proj.weight" not in tensors:
    raise CheckpointError(f"{source}: not a {NAME} checkpoint: trainer['unitok'] has no quant_proj")
  blocks = {k: v for k, v in tensors.items() if k.startswith(("encoder.blocks.", "decoder.blocks."))}
  rest = {k: v for k, v in tensors.items() if k not in blocks}
  return {**rest, **L.split_in_proj(blocks, source, (".attn.qkv.weight", ".attn.qkv.bias"))}


def _stage_depths(tensors: Mapping[str, np.ndarray], prefixes: tuple[str, ...], source: str) -> tuple[int, ...]:
  return tuple(common.count(tensors, rf"{p}\.(\d+)\.pre_norm\.weight", source, f"{p} blocks") for p in prefixes)


def config(tensors: dict[str, np.ndarray], source: str, *, args: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint: sizes off the tensor shapes, heads and image size off ``args``."""
  if "encoder.reg_token" in tensors or int(args.get("num_query", 0)):
    raise CheckpointError(
      f"{source}: UniTok with register tokens (num_query > 0) does not convert; the published has 0"
    )
  pos = tensors.get("encoder.pos_embed")
  if pos is not None and np.any(np.asarray(pos)):
    raise CheckpointError(f"{source}: encoder.pos_embed is not zero; UniTok's is a frozen zero (models/unitok.py)")
  model = str(args.get("model", ""))
  if model not in HEADS:
    raise CheckpointError(f"{source}: args.model={model!r} is not one of {sorted(HEADS)}")
  mlp, width = common.require(tensors, "encoder.blocks.0.mlp.w0.weight", source, NAME, 2)
  depth = common.count(tensors, r"encoder\.blocks\.(\d+)\.", source, "encoder blocks")
  dec_depth = common.count(tensors, r"decoder\.blocks\.(\d+)\.", source, "decoder blocks")
  n_stages = common.count(tensors, rf"{_BACKBONE}\.stages\.(\d+)\.", source, "encoder MBConv stages")
  stages = tuple(f"{_BACKBONE}\\.stages\\.{s}" for s in range(n_stages))
  widths = tuple(
    common.require(tensors, f"encoder.patch_embed.backbone.stages.{s}.0.conv3_1x1.weight", source, NAME, 4)[0]
    for s in range(n_stages)
  )
  dec_stages = (r"decoder\.up_conv2", r"decoder\.up_conv3")  # ViTaminDecoder's two stages
  dec_widths = tuple(
    common.require(tensors, f"decoder.up_conv{s}.0.conv3_1x1.weight", source, NAME, 4)[0] for s in (2, 3)
  )
  attn = "quant_proj.attn.qkv.weight" in tensors
  code_dim = common.require(tensors, "quant_proj.proj.weight" if attn else "quant_proj.weight", source, NAME, 2)[0]
  groups = common.count(tensors, r"quantizer\.codebooks\.(\d+)\.codebook\.weight", source, "codebooks")
  size, sub = common.require(tensors, "quantizer.codebooks.0.codebook.weight", source, NAME, 2)
  if sub * groups != code_dim:
    raise CheckpointError(f"{source}: {groups} codebooks of {sub} channels do not make quant_proj's {code_dim}")
  beta, le = float(args.get("vq_beta", 0.25)), float(args.get("le", 0.0))
  if float(args.get("resize_ratio", 1.125)) != 1.125:
    raise CheckpointError(f"{source}: args.resize_ratio={args['resize_ratio']}; vqtok has UniTok's 1.125 resize only")
  c = default_config()
  c.image_size = int(args.get("img_size", 256))
  c.data.preprocess = "bilinear_1125_center_crop"  # inference.py's Resize(int(img_size * resize_ratio)), CenterCrop
  c.model.update(
    encoder="vit",
    vit_family="vitamin",
    posemb="none",
    vit_projection="attn" if attn else "linear",
    code_dim=int(code_dim),
    width=int(width),
    depth=int(depth),
    mlp_dim=int(mlp),
    num_heads=int(HEADS[model]),
    patch_size=2 ** (n_stages + 2),
    conv_widths=tuple(int(w) for w in widths),
    conv_depths=_stage_depths(tensors, stages, source),
    decoder_depth=int(dec_depth),
    decoder_conv_widths=tuple(int(w) for w in dec_widths),
    decoder_conv_depths=_stage_depths(tensors, dec_stages, source),
  )
  # VectorQuantizerM as grouped l2 VQ (tests/test_quantizers_unitok.py): UniTok averages the codebooks' losses.
  c.quantizer = ml_collections.ConfigDict(
    {
      "type": "grouped",
      "num_groups": int(groups),
      "quantizer": {
        "type": "vq",
        "codebook_size": int(size),
        "l2_normalize": True,
        "commitment_weight": beta / groups,
        "codebook_weight": 1.0 / groups,
        "entropy_weight": le / groups,
        "entropy_temperature": float(args.get("e_temp", 0.01)),
        "entropy_epsilon": 1e-7,
      },
    }
  )
  return c


def _mbconv(prefix: str, target: str) -> tuple[L.Rule, ...]:
  """``MbConvLNBlock`` / ``InvMbConvLNBlock`` -> ``mbconv.MBConv``."""
  sub = L.extend(target)
  return (
    *L.torch_conv(rf"{prefix}\.shortcut\.expand", sub("shortcut.conv")),  # Downsample2d's 1x1
    *L.torch_conv(rf"{prefix}\.shortcut\.conv", sub("shortcut.conv")),  # Upsample2d's 3x3
    *L.torch_conv(rf"{prefix}\.shortcut", sub("shortcut")),  # a 1x1 conv where only the width changes
    *L.torch_norm(rf"{prefix}\.pre_norm", sub("norm")),
    *L.torch_conv(rf"{prefix}\.conv1_1x1", sub("conv1")),
    *L.torch_conv(rf"{prefix}\.up\.conv", sub("up.conv")),
    *L.torch_conv(rf"{prefix}\.conv2_kxk", sub("conv_dw")),
    *L.torch_conv(rf"{prefix}\.conv3_1x1", sub("conv2")),
  )


def _geglu(prefix: str, target: str) -> tuple[L.Rule, ...]:
  sub = L.extend(target)
  return (
    *L.torch_norm(rf"{prefix}\.norm", sub("norm")),
    *(rule for w in ("w0", "w1", "w2") for rule in L.torch_linear(rf"{prefix}\.{w}", sub(w))),
  )


def _blocks(side: str, heads: int) -> tuple[L.Rule, ...]:
  """timm's ``Block`` (norm1, attn.qkv split, attn.proj, norm2, GeGluMlp) -> ``vit.Block``."""
  prefix, target = rf"{side}\.blocks\.(\d+)", side + ".transformer.blocks.{0}"
  bias = lambda x: x.reshape(heads, -1)
  return (
    *L.torch_norm(rf"{prefix}\.norm1", target + ".norm1"),
    *L.torch_norm(rf"{prefix}\.norm2", target + ".norm2"),
    L.under(prefix, target, r"attn\.qkv\.weight\.(query|key|value)", lambda p: f"attn.{p}.kernel", L.heads_in(heads)),
    L.under(prefix, target, r"attn\.qkv\.bias\.(query|key|value)", lambda p: f"attn.{p}.bias", bias),
    L.under(prefix, target, r"attn\.proj\.weight", lambda: "attn.out.kernel", L.heads_out(heads)),
    L.under(prefix, target, r"attn\.proj\.bias", lambda: "attn.out.bias", L.as_is),
    *_geglu(rf"{prefix}\.mlp", target + ".mlp"),
    *L.torch_norm(rf"{side}\.norm", f"{side}.transformer.norm"),
  )


def _projection(prefix: str, target: str, attn: bool) -> tuple[L.Rule, ...]:
  """``AttnProjection`` -> ``vit.AttnProjection``, or a Linear."""
  if not attn:
    return L.torch_linear(prefix, target)
  return (
    *(rule for n in ("norm1", "norm2", "norm3") for rule in L.torch_norm(rf"{prefix}\.{n}", f"{target}.{n}")),
    L.Rule(rf"{prefix}\.attn\.qkv\.weight", f"{target}.qkv.kernel", L.linear),
    L.Rule(rf"{prefix}\.attn\.(q|v)_bias", target + ".{1}_bias"),
    *L.torch_linear(rf"{prefix}\.attn\.proj", f"{target}.attn_proj"),
    *L.torch_linear(rf"{prefix}\.proj", f"{target}.proj"),
    *_geglu(rf"{prefix}\.mlp", f"{target}.mlp"),
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path."""
  heads, attn = int(c.model.num_heads), c.model.vit_projection == "attn"
  return (
    *L.torch_conv(rf"{_BACKBONE}\.stem\.conv1", "encoder.patch_embed.stem.conv1"),
    *L.torch_norm(rf"{_BACKBONE}\.stem\.norm1", "encoder.patch_embed.stem.norm"),
    *L.torch_conv(rf"{_BACKBONE}\.stem\.conv2", "encoder.patch_embed.stem.conv2"),
    *_mbconv(rf"{_BACKBONE}\.stages\.(\d+)\.(\d+)", "encoder.patch_embed.stages.{0}.{1}"),
    *L.torch_norm(rf"{_BACKBONE}\.pool\.norm", "encoder.patch_embed.norm"),  # StridedConv
    *L.torch_conv(rf"{_BACKBONE}\.pool\.proj", "encoder.patch_embed.proj"),
    *_blocks("encoder", heads),
    *_projection(r"quant_proj", "encoder.head", attn),
    L.Rule(r"quantizer\.codebooks\.(\d+)\.codebook\.weight", "quantizer.quantizers.{1}.codebook"),
    *_projection(r"post_quant_proj", "decoder.embed", attn),
    *_blocks("decoder", heads),
    *L.torch_conv(r"decoder\.up_conv1\.conv", "decoder.head.up.conv"),
    *_mbconv(r"decoder\.up_conv2\.(\d+)", "decoder.head.stages.0.{0}"),
    *_mbconv(r"decoder\.up_conv3\.(\d+)", "decoder.head.stages.1.{0}"),
    *L.torch_conv(r"decoder\.up_conv4\.conv1\.conv", "decoder.head.stem.conv1.conv"),
    *L.torch_norm(r"decoder\.up_conv4\.norm1", "decoder.head.stem.norm"),
    *L.torch_conv(r"decoder\.up_conv4\.conv2", "decoder.head.stem.conv2"),
  )
