#!/usr/bin/env python
"""Generate reduced-width DINOv2 checkpoints + golden features, and the full-size key lists and counts.

Usage: XFORMERS_DISABLED=1 /tmp/torchenv/bin/python gen_dinov2.py /path/to/dinov2-checkout [--out DIR]

The model is the reference's own ``DinoVisionTransformer`` built with the
arguments of dinov2/hub/backbones.py ``_make_dinov2_model`` (img_size 518,
patch 14, LayerScale init 1.0, MLP FFN, block_chunks 0, interpolate_offset 0.1,
no antialiasing) at a reduced width; the features are its ``forward_features``
on images prepared by its own eval transform (dinov2/data/transforms.py
``make_classification_eval_transform``: Resize(256, bicubic), CenterCrop(224),
ToTensor, Normalize(ImageNet)). Nothing is copied: everything is imported from
the checkout. Every parameter is random (LayerScale included), so a layout
mistake shows.
"""

import argparse
import json
import os
import sys
from functools import partial

import numpy as np
import torch
from PIL import Image


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="facebookresearch/dinov2 checkout root")
  p.add_argument("--out", default="tests/goldens/dinov2")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--width", type=int, default=128)  # 2 heads of DINOv2's head width 64
  p.add_argument("--heads", type=int, default=2)
  p.add_argument("--skip-full", action="store_true")
  return p.parse_args()


args = parse()
os.environ.setdefault("XFORMERS_DISABLED", "1")
sys.path.insert(0, os.path.abspath(args.ref))

from dinov2.data.transforms import make_classification_eval_transform  # noqa: E402
from dinov2.hub import backbones  # noqa: E402
from dinov2.layers import MemEffAttention  # noqa: E402
from dinov2.layers import NestedTensorBlock as Block  # noqa: E402
from dinov2.models.vision_transformer import DinoVisionTransformer  # noqa: E402

torch.manual_seed(args.seed)
rng = np.random.default_rng(args.seed)
os.makedirs(args.out, exist_ok=True)


def images():
  """Two small smooth uint8 photos-alike of different aspect ratios (upsampled by the transform)."""
  out = []
  for h, w in ((48, 64), (70, 50)):
    y, x = np.mgrid[:h, :w] / max(h, w)
    base = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in range(3)], -1)
    img = 127.5 * (1 + 0.8 * base) + rng.normal(0, 12, (h, w, 3))
    out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
  return out


# name -> (registers, img_size, depth). Without registers: a 7 x 7 position grid, upsampled to the
# 16 x 16 of a 224 px image; with registers the published 37 x 37 grid (518 px), downsampled.
VARIANTS = {"vitt14": (0, 98, 2), "vitt14_reg4": (4, 518, 1)}


def reduced(registers: int, img_size: int, depth: int) -> DinoVisionTransformer:
  # backbones._make_dinov2_model's arguments, at a reduced width, depth and (without registers) img_size.
  model = DinoVisionTransformer(
    img_size=img_size,
    patch_size=14,
    embed_dim=args.width,
    depth=depth,
    num_heads=args.heads,
    mlp_ratio=4,
    block_fn=partial(Block, attn_class=MemEffAttention),
    init_values=1.0,
    ffn_layer="mlp",
    block_chunks=0,
    num_register_tokens=registers,
    interpolate_antialias=False,
    interpolate_offset=0.1,
  )
  with torch.no_grad():
    for name, p in model.named_parameters():
      scale = 0.3 if name.endswith(("weight", "gamma")) and p.ndim > 1 else 0.5
      p.copy_(torch.randn_like(p) * scale + (1.0 if name.endswith("norm1.weight") else 0.0))
  return model.eval()


imgs = images()
transform = make_classification_eval_transform()
pixels = torch.stack([transform(Image.fromarray(im)) for im in imgs])  # (2, 3, 224, 224)
for name, (registers, img_size, depth) in VARIANTS.items():
  model = reduced(registers, img_size, depth)
  path = os.path.join(args.out, f"{name}_pretrain.pth")
  torch.save(model.state_dict(), path)
  again = reduced(registers, img_size, depth)
  again.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
  with torch.no_grad():
    f = again.forward_features(pixels)
    small = again.forward_features(pixels[:, :, :70, :98])  # a 5 x 7 grid: non-square interpolation
    native = again.forward_features(pixels.repeat(1, 1, 3, 3)[:, :, :img_size, :img_size])  # the training grid
  np.savez(
    os.path.join(args.out, f"{name}_golden.npz"),
    image0=imgs[0],
    image1=imgs[1],
    pixels_sub=pixels[:, :, ::7, ::7].permute(0, 2, 3, 1).numpy(),
    cls=f["x_norm_clstoken"].numpy(),
    registers=f["x_norm_regtokens"].numpy(),
    patches=f["x_norm_patchtokens"].numpy(),
    small_patches=small["x_norm_patchtokens"].numpy(),
    native_cls=native["x_norm_clstoken"].numpy(),
  )
  print(name, {k: tuple(v.shape) for k, v in f.items() if hasattr(v, "shape")})

if not args.skip_full:
  counts = {}
  for arch in ("vits14", "vitb14", "vitl14"):
    for reg in ("", "_reg"):
      m = getattr(backbones, f"dinov2_{arch}{reg}")(pretrained=False)
      sd = m.state_dict()
      counts[f"dinov2_{arch}{reg}4" if reg else f"dinov2_{arch}"] = {
        "parameters": int(sum(v.numel() for v in sd.values())),
        "parameters_without_mask_token": int(sum(v.numel() for k, v in sd.items() if k != "mask_token")),
        "keys": {k: list(v.shape) for k, v in sd.items() if not k.startswith("blocks.") or k.startswith("blocks.0.")},
        "blocks": len(m.blocks),
      }
      del m, sd
  with open(os.path.join(args.out, "full_sizes.json"), "w") as fp:
    json.dump(counts, fp, indent=1)
  print({k: v["parameters"] for k, v in counts.items()})
