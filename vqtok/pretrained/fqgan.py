"""FQGAN tokenizers (Bai et al., 2024, arXiv:2411.16681): ``fqgan_dual_ds16.pt``, ``fqgan_triple_ds16.pt``, ds8.

Published by showlab/FQGAN (Hugging Face ZechenBai/FQGAN) as torch pickles with
the weights under ``"model"`` (tokenizer/vq_train_dual.py also writes
``"ema"``; ``--ema`` takes it). The CNN is LlamaGen's VQGAN (so its rows are
LlamaGen's, under ``encoder.trunk`` and ``decoder.decoder``); what is new
(tokenizer/vq_model_dual.py, vq_model_triple.py) is one head per
sub-codebook after the trunk (``encoder.<visual|semantic>_head.0``, a
``FactorizedAdapter`` transformer, then ``norm_out_*``, ``conv_out_*`` and
``quant_conv_*``), one l2-normalised codebook per head (``quantize_*``), the
decoder's ``post_quant_conv`` over the concatenated codes, and the semantic
feature-prediction heads (``feat_pred_head``; Triple: ``mid_sem_feat_pred``,
``high_sem_feat_pred``). Sub-codes are ordered as the reference's decoder
concatenates them: pixel (``vis``) first, then the semantic ones.
Images are [-1, 1] at 256 x 256 (the adapters' grid is fixed).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.models.discriminator import TAMING_PATCHGAN
from vqtok.pretrained import common
from vqtok.pretrained import layout as L

NAME = "fqgan"
FILES = "fqgan_dual_ds16.pt, fqgan_triple_ds16.pt, fqgan_dual_ds8.pt, fqgan_triple_ds8.pt"
# ``quantize_*.codebook_used`` is a training-time usage buffer, not a weight.
IGNORE = (r"quantize_\w+\.codebook_used",)
# (published sub-code name, its encoder head, its feature-prediction head or None), in decoder order.
DUAL = (("vis", "visual_head", None), ("sem", "semantic_head", "feat_pred_head"))
TRIPLE = (
  ("vis", "visual_head", None),
  ("sem_mid", "semantic_head_mid", "mid_sem_feat_pred"),
  ("sem_high", "semantic_head_high", "high_sem_feat_pred"),
)
# vq_model_dual.py hard-codes these: FactorizedAdapter and FeatPredHead ``num_heads = 8``, the
# adapters' width is the trunk's, and ``Normalize`` uses 32 GroupNorm groups.
NUM_HEADS = 8
NORM_GROUPS = 32


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  flat = common.pick_state_dict(obj, ("ema",) if ema else ("model", "state_dict"), source, NAME)
  return L.split_in_proj(flat, source)


def _subcodes(tensors: dict[str, np.ndarray]) -> tuple[tuple[str, str, str | None], ...]:
  return TRIPLE if "quantize_sem_mid.embedding.weight" in tensors else DUAL


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint's variant (Dual or Triple, ds16 or ds8), read off the tensor shapes."""
  subs = _subcodes(tensors)
  ch = common.require(tensors, "encoder.conv_in.weight", source, NAME, 4)[0]
  levels = common.count(tensors, r"encoder\.conv_blocks\.(\d+)\.", source, "encoder levels")
  blocks = common.count(tensors, r"encoder\.conv_blocks\.0\.res\.(\d+)\.", source, "level-0 res blocks")
  widths = [
    common.require(tensors, f"encoder.conv_blocks.{i}.res.0.conv1.weight", source, NAME)[0] for i in range(levels)
  ]
  codes, sub_dim = common.require(tensors, "quantize_vis.embedding.weight", source, NAME, 2)
  head = subs[0][1]
  depth = common.count(tensors, rf"encoder\.{head}\.0\.transformer\.(\d+)\.", source, "adapter blocks")
  features = [n for _, _, n in subs[1:] if f"{n}.ln_post.weight" in tensors]
  dims = [common.require(tensors, f"{n}.ln_post.weight", source, NAME, 1)[0] for n in features]
  feature_depth = (
    common.count(tensors, rf"{features[0]}\.transformer\.(\d+)\.", source, "feature-head blocks") if features else 3
  )
  grid = int(np.sqrt(common.require(tensors, f"encoder.{head}.0.positional_embedding", source, NAME, 2)[0]))
  c = config_lib.cnn_config(
    cnn_family="taming",
    channels=ch,
    channel_mult=common.multiples(widths, ch, source),
    num_res_blocks=blocks,
    attention=True,
    # The published models have ch 128; the reduced test checkpoints (ch 8) have 8 groups.
    norm_groups=min(NORM_GROUPS, ch),
    z_channels=common.require(tensors, "encoder.conv_out_vis.weight", source, NAME, 4)[0],
    code_dim=sub_dim * len(subs),
    factorized_heads=len(subs),
    adapter_depth=depth,
    adapter_num_heads=NUM_HEADS,
    feature_head_dims=tuple(int(d) for d in dims),
    feature_head_depth=feature_depth,
    quantizer={
      "type": "factorized",
      "num_groups": len(subs),
      # The training scripts' --disentanglement-ratio (train_fqgan_dual.sh, train_fqgan_triple.sh).
      "disentangle_weight": 0.1,
      # and --entropy-loss-ratio 0.03 (LlamaGen's entropy penalty, per sub-codebook).
      "quantizer": {"type": "vq", "codebook_size": codes, "l2_normalize": True, "entropy_weight": 0.03},
    },
    image_size=grid * 2 ** (levels - 1),
    preprocess="adm_center_crop",
    discriminator=TAMING_PATCHGAN,
  )
  return c


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path. Decoder level 0 is the lowest resolution in both."""
  k = int(c.model.factorized_heads)
  subs = TRIPLE if k == 3 else DUAL
  rows: list[L.Rule] = []
  for side, to in (("encoder", "encoder.trunk"), ("decoder", "decoder.decoder")):
    rows += [
      *L.torch_conv(rf"{side}\.conv_in", f"{to}.conv_in"),
      *L.torch_resnet(rf"{side}\.conv_blocks\.(\d+)\.res\.(\d+)", to + ".res.{0}.{1}"),
      *L.torch_attention(rf"{side}\.conv_blocks\.(\d+)\.attn\.(\d+)", to + ".attn.{0}.{1}"),
      *L.torch_resnet(rf"{side}\.mid\.0", f"{to}.mid.0"),
      *L.torch_attention(rf"{side}\.mid\.1", f"{to}.mid_attn"),
      *L.torch_resnet(rf"{side}\.mid\.2", f"{to}.mid.1"),
    ]
  rows += [
    *L.torch_conv(r"encoder\.conv_blocks\.(\d+)\.downsample\.conv", "encoder.trunk.down.{0}.conv"),
    *L.torch_conv(r"decoder\.conv_blocks\.(\d+)\.upsample\.conv", "decoder.decoder.up.{0}.conv"),
    *L.torch_norm(r"decoder\.norm_out", "decoder.decoder.norm_out"),
    *L.torch_conv(r"decoder\.conv_out", "decoder.decoder.conv_out"),
    *L.torch_conv1x1_linear(r"post_quant_conv", "decoder.post_quant_conv"),
  ]
  for g, (name, head, feat) in enumerate(subs):
    to = f"encoder.heads.{g}"
    adapter = rf"encoder\.{head}\.0"
    rows += [
      L.Rule(rf"{adapter}\.positional_embedding", f"{to}.pos"),
      *L.torch_norm(rf"{adapter}\.ln_pre", f"{to}.adapter.ln_pre"),
      *L.torch_norm(rf"{adapter}\.ln_post", f"{to}.adapter.norm"),
      *L.torch_clip_block(rf"{adapter}\.transformer\.(\d+)", to + ".adapter.blocks.{0}", NUM_HEADS),
      *L.torch_norm(rf"encoder\.norm_out_{name}", f"{to}.norm_out"),
      *L.torch_conv(rf"encoder\.conv_out_{name}", f"{to}.conv_out"),
      *L.torch_conv1x1_linear(rf"quant_conv_{name}", f"{to}.quant_conv"),
      L.Rule(rf"quantize_{name}\.embedding\.weight", f"quantizer.quantizers.{g}.codebook"),
    ]
    if feat is not None and g - 1 < len(c.model.feature_head_dims):
      fo = f"encoder.feature_heads.{g - 1}"
      rows += [
        *L.torch_linear(rf"{feat}\.upscale\.0", f"{fo}.up1"),
        *L.torch_linear(rf"{feat}\.upscale\.2", f"{fo}.up2"),
        L.Rule(rf"{feat}\.class_embedding", f"{fo}.cls_token"),
        L.Rule(rf"{feat}\.positional_embedding", f"{fo}.pos"),
        *L.torch_norm(rf"{feat}\.ln_pre", f"{fo}.transformer.ln_pre"),
        *L.torch_norm(rf"{feat}\.ln_post", f"{fo}.transformer.norm"),
        *L.torch_clip_block(rf"{feat}\.transformer\.(\d+)", fo + ".transformer.blocks.{0}", NUM_HEADS),
      ]
  return tuple(rows)
