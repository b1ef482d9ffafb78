"""TokenFlow tokenizers (Qu et al., 2024, arXiv:2412.03069): tokenflow_clipb_32k_enhanced.pt, tokenflow_siglip_32k.pt.

Published by ByteFlow-AI/TokenFlow (Hugging Face ByteFlow-AI/TokenFlow) as torch
pickles of ``TokenFlow`` (tokenflow/tokenizer/vq_model.py) under ``"ema"``,
``"model"`` or ``"state_dict"``; the reference's own loader
(tokenizer/reconstruction_vq_ddp.py) takes ``"ema"`` first, and so does this
one. The model (``models/dual.py``): the semantic encoder ``encoder_vqkd``
with ``encode_task_layer``; LlamaGen's VQGAN ``encoder`` with ``quant_conv``;
the dual codebook ``quantize.embedding_vqkd`` / ``embedding_vqgan`` (32768
codes of 32 + 8, one shared index) in a multi-scale residual loop; the pixel
``decoder`` with ``post_quant_conv``; the semantic decoder ``decoder_vqkd``
(tokenizer/vqkd_model.py, a BEiT v2 ViT of 3 blocks on 1x1 patches of the 32
semantic channels) with ``decode_task_layer`` (to the teacher's width).

The two published files (the variant is read off the tensors):

* ``tokenflow_clipb_32k_enhanced.pt`` (``teacher="clipb_224"``, the text-to-image
  model's tokenizer): OpenAI CLIP's ViT-B/16 ``VisionTransformer`` without
  ``proj`` (clip/model.py), fed the [-1, 1] image unnormalised
  (``scaling_layer = None``); the "enhanced" pixel decoder (ch 256, 4 blocks per
  level). Trained at 224 px (14 x 14 tokens); the published evaluation
  (scripts/reconstruction_vq.sh) and the text-to-image model (t2i/.../tokenflow.py)
  run it at 256 px with ``infer_interpolate``: scales ``[1, 2, 4, 6, 8, 10, 12,
  14, 16]`` (817 tokens) and both ViTs' 14 x 14 position grids resized
  bicubically with the scale factor ``(16 + 0.1) / 14`` (``interpolate_pos_encoding``).
  The converter writes that 256 px tokenizer.
* ``tokenflow_siglip_32k.pt`` (TokenFlow-XL, ``teacher="siglip_384"``): Hugging
  Face's ``SiglipVisionModel`` so400m/14-384 (transformers 4.43.4 names,
  ``encoder_vqkd.vision_model.*``), read at ``hidden_states[-2]`` (the 26th of
  27 blocks, no ``post_layernorm``), fed ``ScalingLayerForSigLip`` of the image;
  its 27 x 27 patches of a 384 px image (the VALID patch convolution leaves 6
  pixels unread) fix the grid, so the CNN reads the image bicubically resized to
  432 px and the decoded 432 px image is resized back to 384 (``decode``);
  15 scales up to 27 (2227 tokens); the plain pixel decoder (ch 128, 2 blocks).

Quirks, each from the reference:
  * ``decoder_vqkd``'s attention has ``q_bias`` and ``v_bias`` and a zero key
    bias (``torch.cat((q_bias, zeros_like(v_bias), v_bias))``); ``state_dict``
    adds that zero key bias explicitly. Its head count is not stored: vq_model.py
    ``get_model_default_params`` fixes ``num_heads=12``.
  * CLIP's head count is ``width // 64`` (clip.py ``load_clip_vision``); SigLIP's
    is so400m-patch14-384's 16 (the config ``from_pretrained`` loads by name).
  * SigLIP's last block, ``post_layernorm`` and attention-pooling ``head`` are
    in the file (and kept: the count is the reference's) but not on the encode path.
  * ``quantize.codebook_used`` is a training-time usage buffer, not a weight;
    ``scaling_layer.shift`` / ``scale`` are SigLIP's constant 0.5 (checked).

Not converted: the ViTamin-XL teacher (``vitamin_xlarge_256``, a timm hybrid
MBConv + ViT with no vqtok model, and no published tokenizer file).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vqtok import config as config_lib
from vqtok.models.discriminator import TAMING_PATCHGAN
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError

NAME = "tokenflow"
FILES = (
  "tokenflow_clipb_32k_enhanced.pt (CLIP ViT-B/16 teacher, 256 px), tokenflow_siglip_32k.pt (TokenFlow-XL, 384 px)"
)
IGNORE = (r"quantize\.codebook_used", r"scaling_layer\.(shift|scale)")
#: vq_model.py: ``scale_rq_layers`` for clipb_224 with ``infer_interpolate`` (256 px).
SCALES = (1, 2, 4, 6, 8, 10, 12, 14, 16)
IMAGE_SIZE = 256
#: vq_model.py, teacher siglip_384: ``scale_rq_layers`` (2227 tokens), SigLIP so400m/14's 27 x 27 patches of
#: a 384 px image (``decode`` resizes the CNN's 432 px back to 384).
XL_SCALES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 22, 27)
XL_GRID = 27
XL_IMAGE_SIZE = 384
#: google/siglip-so400m-patch14-384's config (``SiglipVisionModel.from_pretrained`` in vq_model.py).
SIGLIP_HEADS = 16
#: vq_model.py get_model_default_params: the semantic decoder's ``num_heads``.
DECODER_HEADS = 12
#: clip.py load_clip_vision: ``vision_heads = vision_width // 64``.
CLIP_HEAD_WIDTH = 64


def default_ema(obj: Any) -> bool:
  """The EMA weights when the file has them, as reconstruction_vq_ddp.py loads it."""
  return isinstance(obj, Mapping) and isinstance(obj.get("ema"), Mapping)


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  """The weights; the stacked q/k/v projections split, the semantic decoder's zero key bias made explicit."""
  flat = common.pick_state_dict(obj, ("ema",) if ema else ("model", "state_dict"), source, NAME)
  if "quantize.embedding_vqkd.weight" in flat and not any(
    k.startswith(("encoder_vqkd.conv1.", "encoder_vqkd.vision_model.")) for k in flat
  ):
    raise CheckpointError(
      f"{source}: a TokenFlow tokenizer whose semantic encoder is neither CLIP's ViT nor SigLIP (ViTamin?);"
      " only tokenflow_clipb_32k_enhanced.pt and tokenflow_siglip_32k.pt convert"
    )
  for name in ("scaling_layer.shift", "scaling_layer.scale"):  # ScalingLayerForSigLip's constants, not weights
    if name in flat and not np.allclose(np.asarray(flat[name], np.float32), 0.5):
      raise CheckpointError(f"{source}: {name} is {np.ravel(flat[name])}; TokenFlow's SigLIP scaling is 0.5")
  names = (".attn.in_proj_weight", ".attn.in_proj_bias", ".attn.qkv.weight", ".attention.in_proj_weight")
  flat = L.split_in_proj(flat, source, names + (".attention.in_proj_bias",))
  for name in list(flat):
    if name.startswith("decoder_vqkd.blocks.") and name.endswith(".attn.q_bias"):
      flat[name[: -len("q_bias")] + "k_bias"] = np.zeros_like(np.asarray(flat[name]))
  return flat


def _grid(tensors: dict[str, np.ndarray], name: str, axis: int, source: str) -> int:
  n = common.require(tensors, name, source, NAME)[axis] - 1
  g = math.isqrt(max(n, 0))
  if g < 1 or g * g != n:
    raise CheckpointError(f"{source}: {name} has {n + 1} rows; expected grid**2 + 1")
  return g


def _clip_fields(tensors: dict[str, np.ndarray], source: str, factor: int) -> dict[str, Any]:
  conv1 = common.require(tensors, "encoder_vqkd.conv1.weight", source, NAME, 4)
  width, patch = conv1[0], conv1[-1]
  if patch != factor:
    raise CheckpointError(f"{source}: CLIP's patch {patch} is not the CNN's downsampling {factor}")
  blocks = r"encoder_vqkd\.transformer\.resblocks\.(\d+)\."
  return dict(
    semantic_encoder="clip",
    semantic_width=width,
    semantic_depth=common.count(tensors, blocks, source, "semantic encoder blocks"),
    semantic_mlp_dim=common.require(tensors, "encoder_vqkd.transformer.resblocks.0.mlp.c_fc.weight", source, NAME)[0],
    semantic_num_heads=width // CLIP_HEAD_WIDTH,
    semantic_patch_size=patch,
    semantic_pos_grid=_grid(tensors, "encoder_vqkd.positional_embedding", 0, source),
  )


def _siglip_fields(tensors: dict[str, np.ndarray], source: str) -> dict[str, Any]:
  v = "encoder_vqkd.vision_model."
  conv = common.require(tensors, v + "embeddings.patch_embedding.weight", source, NAME, 4)
  n = common.require(tensors, v + "embeddings.position_embedding.weight", source, NAME, 2)[0]
  depth = common.count(tensors, r"encoder_vqkd\.vision_model\.encoder\.layers\.(\d+)\.", source, "SigLIP layers")
  return dict(
    semantic_encoder="siglip",
    semantic_width=conv[0],
    semantic_depth=depth,
    semantic_mlp_dim=common.require(tensors, v + "encoder.layers.0.mlp.fc1.weight", source, NAME)[0],
    semantic_num_heads=SIGLIP_HEADS,
    semantic_patch_size=conv[-1],
    semantic_pos_grid=math.isqrt(n),
    # vq_model.py encode: ``hidden_states[-2]``, the output of the next-to-last block.
    semantic_layer=depth - 1,
  )


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The vqtok config of the checkpoint (CLIP: the 256 px tokenizer; SigLIP: 384 px), read off the tensor shapes."""
  ch = common.require(tensors, "encoder.conv_in.weight", source, NAME, 4)[0]
  levels = common.count(tensors, r"encoder\.conv_blocks\.(\d+)\.", source, "encoder levels")
  blocks = common.count(tensors, r"encoder\.conv_blocks\.0\.res\.(\d+)\.", source, "level-0 res blocks")
  widths = [
    common.require(tensors, f"encoder.conv_blocks.{i}.res.0.conv1.weight", source, NAME)[0] for i in range(levels)
  ]
  mult = common.multiples(widths, ch, source)
  # The decoder's level 0 is its lowest resolution (width ch * mult[-1]); LlamaGen's has blocks + 1 per level.
  dec_ch = common.require(tensors, "decoder.conv_in.weight", source, NAME, 4)[0] // mult[-1]
  dec_blocks = common.count(tensors, r"decoder\.conv_blocks\.0\.res\.(\d+)\.", source, "decoder res blocks") - 1
  codes, sem_dim = common.require(tensors, "quantize.embedding_vqkd.weight", source, NAME, 2)
  codes_p, pix_dim = common.require(tensors, "quantize.embedding_vqgan.weight", source, NAME, 2)
  if codes_p != codes:
    raise CheckpointError(f"{source}: the two codebooks have {codes} and {codes_p} codes; a shared index needs one")
  xl = "encoder_vqkd.vision_model.embeddings.patch_embedding.weight" in tensors
  semantic = _siglip_fields(tensors, source) if xl else _clip_fields(tensors, source, 2 ** (levels - 1))
  grid, image_size, scales = (XL_GRID, XL_IMAGE_SIZE, XL_SCALES) if xl else (SCALES[-1], IMAGE_SIZE, SCALES)
  dec_grid = _grid(tensors, "decoder_vqkd.pos_embed", 1, source)
  if xl and (semantic["semantic_pos_grid"] != grid or image_size // semantic["semantic_patch_size"] != grid):
    raise CheckpointError(f"{source}: a SigLIP of another size than so400m/14 at 384 px (grid {grid})")
  if dec_grid != semantic["semantic_pos_grid"]:
    raise CheckpointError(
      f"{source}: the semantic decoder's grid {dec_grid} is not the encoder's {semantic['semantic_pos_grid']}"
    )
  c = config_lib.cnn_config(
    cnn_family="taming",
    channels=ch,
    channel_mult=mult,
    num_res_blocks=blocks,
    attention=True,
    # The published models have ch 128 and 256; the reduced test checkpoint (ch 8) has 8 groups.
    norm_groups=min(32, ch),
    z_channels=common.require(tensors, "encoder.conv_out.weight", source, NAME, 4)[0],
    code_dim=sem_dim + pix_dim,
    decoder_channels=dec_ch,
    decoder_num_res_blocks=dec_blocks,
    **semantic,
    semantic_interpolate_offset=0.1,
    semantic_decoder_depth=common.count(tensors, r"decoder_vqkd\.blocks\.(\d+)\.", source, "semantic decoder blocks"),
    semantic_decoder_mlp_dim=common.require(tensors, "decoder_vqkd.blocks.0.mlp.fc1.weight", source, NAME)[0],
    semantic_decoder_num_heads=DECODER_HEADS,
    semantic_feature_dim=common.require(tensors, "decode_task_layer.2.weight", source, NAME, 2)[0],
    quantizer={
      "type": "multiscale",
      "scales": list(scales),
      "phi_ratio": 0.0,
      "form": "tokenflow",
      # vq_train.py's defaults: --commit-loss-beta 0.25, --entropy-loss-ratio 0.0.
      "quantizer": {
        "type": "dual",
        "codebook_size": codes,
        "semantic_dim": sem_dim,
        "l2_normalize": True,
        "commitment_weight": 0.25,
      },
    },
    image_size=image_size,
    preprocess="adm_center_crop",
    discriminator=TAMING_PATCHGAN,
  )
  return c


def _batch(x: np.ndarray) -> np.ndarray:
  return x[None]


def _clip_rows(heads: int) -> tuple[L.Rule, ...]:
  """The semantic encoder of clipb_224: CLIP's VisionTransformer without ``proj``, as the clip teacher's table."""
  return (
    L.Rule(r"encoder_vqkd\.class_embedding", "encoder.semantic.cls_token", _batch),
    L.Rule(r"encoder_vqkd\.positional_embedding", "encoder.semantic.pos_embed", _batch),
    L.Rule(r"encoder_vqkd\.conv1\.weight", "encoder.semantic.patch_embed.kernel", L.conv),
    *L.torch_norm(r"encoder_vqkd\.ln_pre", "encoder.semantic.transformer.ln_pre"),
    *L.torch_norm(r"encoder_vqkd\.ln_post", "encoder.semantic.transformer.norm"),
    *L.torch_clip_block(
      r"encoder_vqkd\.transformer\.resblocks\.(\d+)", "encoder.semantic.transformer.blocks.{0}", heads
    ),
  )


def _siglip_rows(heads: int) -> tuple[L.Rule, ...]:
  """The semantic encoder of siglip_384: Hugging Face's ``SiglipVisionModel`` (transformers 4.43.4 names).

  Every block, ``post_layernorm`` and the attention-pooling ``head`` are kept, though the encoder reads
  the next-to-last block's output: the model is the published tower, and its count the reference's.
  """
  v, to = r"encoder_vqkd\.vision_model", "encoder.semantic"
  blk, bto = rf"{v}\.encoder\.layers\.(\d+)", to + ".transformer.blocks.{0}"
  qkv = {"q": "query", "k": "key", "v": "value"}
  per_head = lambda x: x.reshape(heads, -1)
  return (
    *L.torch_conv(rf"{v}\.embeddings\.patch_embedding", f"{to}.patch_embed"),
    L.Rule(rf"{v}\.embeddings\.position_embedding\.weight", f"{to}.pos_embed.embedding", _batch),
    *L.torch_norm(rf"{blk}\.layer_norm1", f"{bto}.norm1"),
    *L.torch_norm(rf"{blk}\.layer_norm2", f"{bto}.norm2"),
    L.under(blk, bto, r"self_attn\.(q|k|v)_proj\.weight", lambda p: f"attn.{qkv[p]}.kernel", L.heads_in(heads)),
    L.under(blk, bto, r"self_attn\.(q|k|v)_proj\.bias", lambda p: f"attn.{qkv[p]}.bias", per_head),
    L.under(blk, bto, r"self_attn\.out_proj\.weight", lambda: "attn.out.kernel", L.heads_out(heads)),
    L.under(blk, bto, r"self_attn\.out_proj\.bias", lambda: "attn.out.bias", L.as_is),
    *L.torch_linear(rf"{blk}\.mlp\.fc1", bto + ".mlp1"),
    *L.torch_linear(rf"{blk}\.mlp\.fc2", bto + ".mlp2"),
    *L.torch_norm(rf"{v}\.post_layernorm", f"{to}.transformer.norm"),
    L.Rule(rf"{v}\.head\.probe", f"{to}.map_head.probe"),
    L.under(
      rf"{v}\.head",
      f"{to}.map_head",
      r"attention\.in_proj_weight\.(query|key|value)",
      lambda p: f"attn.{p}.kernel",
      L.heads_in(heads),
    ),
    L.under(
      rf"{v}\.head",
      f"{to}.map_head",
      r"attention\.in_proj_bias\.(query|key|value)",
      lambda p: f"attn.{p}.bias",
      per_head,
    ),
    L.under(
      rf"{v}\.head", f"{to}.map_head", r"attention\.out_proj\.weight", lambda: "attn.out.kernel", L.heads_out(heads)
    ),
    L.under(rf"{v}\.head", f"{to}.map_head", r"attention\.out_proj\.bias", lambda: "attn.out.bias", L.as_is),
    *L.torch_norm(rf"{v}\.head\.layernorm", f"{to}.map_head.norm"),
    *L.torch_linear(rf"{v}\.head\.mlp\.fc1", f"{to}.map_head.mlp1"),
    *L.torch_linear(rf"{v}\.head\.mlp\.fc2", f"{to}.map_head.mlp2"),
  )


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name -> vqtok path. The CNN rows are LlamaGen's (decoder level 0 is the lowest resolution)."""
  m = c.model
  heads, dec_heads = int(m.semantic_num_heads), int(m.semantic_decoder_num_heads)
  rows: list[L.Rule] = []
  for side, to in (("encoder", "encoder.pixel"), ("decoder", "decoder.pixel")):
    rows += [
      *L.torch_conv(rf"{side}\.conv_in", f"{to}.conv_in"),
      *L.torch_norm(rf"{side}\.norm_out", f"{to}.norm_out"),
      *L.torch_conv(rf"{side}\.conv_out", f"{to}.conv_out"),
      *L.torch_resnet(rf"{side}\.conv_blocks\.(\d+)\.res\.(\d+)", to + ".res.{0}.{1}"),
      *L.torch_attention(rf"{side}\.conv_blocks\.(\d+)\.attn\.(\d+)", to + ".attn.{0}.{1}"),
      *L.torch_resnet(rf"{side}\.mid\.0", f"{to}.mid.0"),
      *L.torch_attention(rf"{side}\.mid\.1", f"{to}.mid_attn"),
      *L.torch_resnet(rf"{side}\.mid\.2", f"{to}.mid.1"),
    ]
  blk, bto = r"decoder_vqkd\.blocks\.(\d+)", "decoder.semantic.transformer.blocks.{0}"
  rows += [
    *L.torch_conv(r"encoder\.conv_blocks\.(\d+)\.downsample\.conv", "encoder.pixel.down.{0}.conv"),
    *L.torch_conv(r"decoder\.conv_blocks\.(\d+)\.upsample\.conv", "decoder.pixel.up.{0}.conv"),
    *L.torch_conv1x1_linear(r"quant_conv", "encoder.quant_conv"),
    *L.torch_conv1x1_linear(r"post_quant_conv", "decoder.post_quant_conv"),
    L.Rule(r"quantize\.embedding_vqkd\.weight", "quantizer.quantizer.semantic_codebook"),
    L.Rule(r"quantize\.embedding_vqgan\.weight", "quantizer.quantizer.pixel_codebook"),
    *(_siglip_rows(heads) if m.semantic_encoder == "siglip" else _clip_rows(heads)),
    *L.torch_linear(r"encode_task_layer\.0", "encoder.semantic_head.layers.0"),
    *L.torch_linear(r"encode_task_layer\.2", "encoder.semantic_head.layers.2"),
    # The semantic decoder: BEiT v2's VisionTransformer (``fc_norm`` is its final LayerNorm).
    L.Rule(r"decoder_vqkd\.cls_token", "decoder.semantic.cls_token", lambda x: x[0]),
    L.Rule(r"decoder_vqkd\.pos_embed", "decoder.semantic.pos_embed"),
    *L.torch_conv(r"decoder_vqkd\.patch_embed\.proj", "decoder.semantic.patch_embed"),
    *L.torch_norm(r"decoder_vqkd\.fc_norm", "decoder.semantic.transformer.norm"),
    *L.torch_norm(rf"{blk}\.norm1", f"{bto}.norm1"),
    *L.torch_norm(rf"{blk}\.norm2", f"{bto}.norm2"),
    L.under(blk, bto, r"attn\.qkv\.weight\.(query|key|value)", lambda p: f"attn.{p}.kernel", L.heads_in(dec_heads)),
    L.under(blk, bto, r"attn\.q_bias", lambda: "attn.query.bias", lambda x: x.reshape(dec_heads, -1)),
    L.under(blk, bto, r"attn\.k_bias", lambda: "attn.key.bias", lambda x: x.reshape(dec_heads, -1)),
    L.under(blk, bto, r"attn\.v_bias", lambda: "attn.value.bias", lambda x: x.reshape(dec_heads, -1)),
    L.under(blk, bto, r"attn\.proj\.weight", lambda: "attn.out.kernel", L.heads_out(dec_heads)),
    L.under(blk, bto, r"attn\.proj\.bias", lambda: "attn.out.bias", L.as_is),
    L.under(blk, bto, r"mlp\.fc1\.weight", lambda: "mlp1.kernel", L.linear),
    L.under(blk, bto, r"mlp\.fc1\.bias", lambda: "mlp1.bias", L.as_is),
    L.under(blk, bto, r"mlp\.fc2\.weight", lambda: "mlp2.kernel", L.linear),
    L.under(blk, bto, r"mlp\.fc2\.bias", lambda: "mlp2.bias", L.as_is),
    *L.torch_linear(r"decode_task_layer\.0", "decoder.semantic_head.layers.0"),
    *L.torch_linear(r"decode_task_layer\.2", "decoder.semantic_head.layers.2"),
  ]
  return tuple(rows)
