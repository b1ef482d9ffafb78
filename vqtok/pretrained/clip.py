"""OpenAI CLIP ViT-B/16 and ViT-L/14 (and the other ViT CLIPs) as feature teachers, from OpenAI's ``.pt`` files.

Published by openai/CLIP (clip/clip.py ``_MODELS``) as ``ViT-B-16.pt``,
``ViT-L-14.pt`` (and ``ViT-B-32.pt``, ``ViT-L-14-336px.pt``): TorchScript
archives of a traced ``CLIP`` (clip/model.py), read here as their state dict
(``reader.read_checkpoint``) without torch; a plain ``torch.save`` of that
state dict, which ``clip.load`` also takes, reads the same. Only the
``visual.*`` tensors are used: ``conv1`` (no bias), ``class_embedding``
(D,), ``positional_embedding`` (grid**2 + 1, D), ``ln_pre``,
``transformer.resblocks.<i>`` (``nn.MultiheadAttention``, QuickGELU MLP),
``ln_post`` and ``proj`` (D, embed_dim).

Quirks, each from the reference:
  * ``clip.model.build_model`` reads the sizes off the tensors; the head
    count is ``width // 64`` (vision_heads), so it is here too.
  * The weights are float16 except the LayerNorms and the embeddings
    (``convert_weights``); ``clip.load`` on the CPU computes in float32 with
    them (``model.float()``), as vqtok does.
  * The patch features are ``ln_post`` of every output token; the reference
    applies ``ln_post`` only to the class token, then ``proj`` (``encode_image``,
    vqtok's ``embedding``).
  * The ResNet CLIPs (``RN50.pt`` ...) have no ViT; they are refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vqtok.files import flatten
from vqtok.pretrained import common
from vqtok.pretrained import layout as L
from vqtok.pretrained.reader import CheckpointError

NAME = "clip"
FILES = "ViT-B-16.pt, ViT-L-14.pt (also ViT-B-32.pt, ViT-L-14-336px.pt): OpenAI's TorchScript archives"
IGNORE = ()
HEAD_WIDTH = 64
#: clip/clip.py ``_transform``: Normalize's mean and std.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  """The visual tower's tensors, ``visual.`` stripped, the stacked q/k/v projections split."""
  if ema:
    raise CheckpointError(f"{source}: CLIP checkpoints hold no EMA weights; drop --ema")
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{source}: not a clip checkpoint: expected a state dict, got {type(obj).__name__}")
  flat = flatten(obj, arrays_only=True)
  if "visual.layer1.0.conv1.weight" in flat:
    raise CheckpointError(f"{source}: a ResNet CLIP (RN50 ...); only the ViT CLIPs (ViT-B-16.pt, ViT-L-14.pt) convert")
  if "visual.conv1.weight" not in flat or "visual.proj" not in flat:
    found = ", ".join(repr(k) for k in list(flat)[:4])
    raise CheckpointError(
      f"{source}: not a clip checkpoint: no visual.conv1.weight and visual.proj (found {found}); give OpenAI's"
      " ViT-B-16.pt or ViT-L-14.pt"
    )
  visual = {k[len("visual.") :]: v for k, v in flat.items() if k.startswith("visual.")}
  return L.split_in_proj(visual, source)


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """The feature-teacher config of the checkpoint, read off the tensor shapes as ``build_model`` does."""
  conv = common.require(tensors, "conv1.weight", source, NAME, 4)
  width, patch = conv[0], conv[-1]
  depth = common.count(tensors, r"transformer\.resblocks\.(\d+)\.", source, "transformer blocks")
  mlp = common.require(tensors, "transformer.resblocks.0.mlp.c_fc.weight", source, NAME, 2)[0]
  n = common.require(tensors, "positional_embedding", source, NAME, 2)[0] - 1
  proj = common.require(tensors, "proj", source, NAME, 2)
  grid = math.isqrt(max(n, 0))
  if grid * grid != n or grid < 1:
    raise CheckpointError(f"{source}: visual.positional_embedding has {n + 1} rows; expected grid**2 + 1")
  if width % HEAD_WIDTH:
    raise CheckpointError(f"{source}: width {width} is not a multiple of CLIP's head width {HEAD_WIDTH}")
  if conv[1] != 3 or conv[2] != conv[3] or proj[0] != width:
    raise CheckpointError(f"{source}: visual.conv1.weight {conv} / visual.proj {proj} do not fit a CLIP ViT")
  res = int(patch * grid)
  return ml_collections.ConfigDict(
    {
      "teacher": NAME,
      "width": int(width),
      "depth": int(depth),
      "mlp_dim": int(mlp),
      "num_heads": int(width // HEAD_WIDTH),
      "patch_size": int(patch),
      "pos_grid": int(grid),
      "num_register_tokens": 0,
      "proj_dim": int(proj[1]),
      # clip/clip.py _transform(n_px): Resize(n_px, bicubic), CenterCrop(n_px), CLIP's mean and std.
      "resize_size": res,
      "resolution": res,
      "mean": list(CLIP_MEAN),
      "std": list(CLIP_STD),
    }
  )


def _add_batch(x: np.ndarray) -> np.ndarray:
  return x[None]


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """Published name (``visual.`` stripped) -> vqtok path."""
  return (
    L.Rule(r"class_embedding", "cls_token", _add_batch),
    L.Rule(r"positional_embedding", "pos_embed", _add_batch),
    L.Rule(r"proj", "proj"),
    L.Rule(r"conv1\.weight", "patch_embed.kernel", L.conv),
    *L.torch_norm(r"ln_pre", "transformer.ln_pre"),
    *L.torch_norm(r"ln_post", "transformer.norm"),
    *L.torch_clip_block(r"transformer\.resblocks\.(\d+)", "transformer.blocks.{0}", int(c.num_heads)),
  )
