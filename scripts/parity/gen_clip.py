#!/usr/bin/env python
"""Generate reduced-width CLIP archives (as OpenAI publishes them) + golden features, and the full-size counts.

Usage: /tmp/clipenv/bin/python gen_clip.py /path/to/CLIP-checkout [--out DIR]

OpenAI's ``ViT-B-16.pt`` / ``ViT-L-14.pt`` are TorchScript archives of a
traced ``CLIP`` (clip/clip.py ``load``: ``torch.jit.load`` first; with
``jit=True`` it patches the device and dtype constants of ``graph`` and
``forward1`` graphs, which traced modules have, and reads
``model.input_resolution``, a tensor attribute; with ``jit=False`` it rebuilds
the model from ``model.state_dict()``, dropping the ``input_resolution``,
``context_length`` and ``vocab_size`` entries, so those are buffers of the
archive). This script makes one the same way: the reference's own
``build_model`` on a state dict of random tensors (so ``convert_weights``
leaves the convolutions, linears, attention and projections in float16, the
LayerNorms and embeddings in float32), those three int64 buffers added, the
model traced with ``torch.jit.trace_module`` (``forward``, ``encode_image``,
``encode_text``) and written with ``torch.jit.save``. The goldens are the
reference's own ``clip.load(path, device="cpu", jit=False)`` and the
preprocess it returns; the patch features are ``visual.ln_post`` of the
visual transformer's outputs (a forward hook on ``visual.transformer``), the
class features ``visual.ln_post`` of the class token, the embedding
``encode_image``. Nothing is copied: everything is imported from the checkout.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="openai/CLIP checkout root")
  p.add_argument("--out", default="tests/goldens/clip")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--skip-full", action="store_true")
  return p.parse_args()


args = parse()
sys.path.insert(0, os.path.abspath(args.ref))

import clip  # noqa: E402
from clip.model import CLIP, build_model  # noqa: E402

torch.manual_seed(args.seed)
rng = np.random.default_rng(args.seed)
os.makedirs(args.out, exist_ok=True)

# name -> (patch, vision width, vision layers): 224 px like the published ViT-B/16 (14 x 14 grid) and
# ViT-L/14 (16 x 16 grid), at width 128 (2 heads of CLIP's head width 64). A tiny text tower
# (build_model needs one): width 64, one layer, 8 tokens, a vocabulary of 50, embedding 32.
VARIANTS = {"ViT-T-16": (16, 128, 2), "ViT-T-14": (14, 128, 1)}
TEXT = dict(embed_dim=32, context_length=8, vocab_size=50, transformer_width=64, transformer_heads=1)


def images():
  """Two small smooth uint8 photos-alike of different aspect ratios (upsampled by the transform)."""
  out = []
  for h, w in ((48, 64), (70, 50)):
    y, x = np.mgrid[:h, :w] / max(h, w)
    base = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in range(3)], -1)
    img = 127.5 * (1 + 0.8 * base) + rng.normal(0, 12, (h, w, 3))
    out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
  return out


def random_state_dict(patch, width, layers):
  shapes = CLIP(
    TEXT["embed_dim"], 224, layers, width, patch, TEXT["context_length"], TEXT["vocab_size"],
    TEXT["transformer_width"], TEXT["transformer_heads"], 1,
  ).state_dict()
  sd = {}
  for name, v in shapes.items():
    scale = 0.3 if v.ndim > 1 else 0.5
    sd[name] = torch.randn(v.shape) * scale + (1.0 if name.endswith(("ln_1.weight", "ln_2.weight")) else 0.0)
  # The published archives hold these three as tensors (clip/model.py build_model deletes them).
  sd["input_resolution"] = torch.tensor(224)
  sd["context_length"] = torch.tensor(TEXT["context_length"])
  sd["vocab_size"] = torch.tensor(TEXT["vocab_size"])
  return sd


def publish(sd, path):
  """``build_model`` (float16 weights) + the three buffers, traced and saved as a TorchScript archive."""
  model = build_model(dict(sd))
  for key in ("input_resolution", "context_length", "vocab_size"):
    if hasattr(model, key):  # a Python int of this CLIP class; a tensor in the published archives
      delattr(model, key)
    model.register_buffer(key, sd[key].clone())
  image = torch.randn(1, 3, 224, 224)
  text = torch.zeros(1, TEXT["context_length"], dtype=torch.long)
  text[0, :3] = torch.tensor([1, 7, TEXT["vocab_size"] - 1])
  traced = torch.jit.trace_module(
    model, {"forward": (image, text), "encode_image": (image,), "encode_text": (text,)}, check_trace=False
  )
  torch.jit.save(traced, path)


imgs = images()
for name, (patch, width, layers) in VARIANTS.items():
  path = os.path.join(args.out, f"{name}.pt")
  publish(random_state_dict(patch, width, layers), path)
  jit_model, _ = clip.load(path, device="cpu", jit=True)  # the archive loads as the published ones do
  assert int(jit_model.input_resolution.item()) == 224
  # What torch itself reads as the archive's state dict, for the reader's test.
  keys = {k: [list(v.shape), str(v.dtype)] for k, v in torch.jit.load(path, map_location="cpu").state_dict().items()}
  with open(os.path.join(args.out, f"{name}_keys.json"), "w") as fp:
    json.dump(keys, fp, indent=0)
  model, preprocess = clip.load(path, device="cpu", jit=False)
  pixels = torch.stack([preprocess(Image.fromarray(im)) for im in imgs])  # (2, 3, 224, 224)
  seen = {}
  hook = model.visual.transformer.register_forward_hook(lambda m, i, o: seen.update(out=o))
  with torch.no_grad():
    embedding = model.encode_image(pixels)
    tokens = model.visual.ln_post(seen["out"].permute(1, 0, 2))  # LND -> NLD, every token
  hook.remove()
  np.savez(
    os.path.join(args.out, f"{name}_golden.npz"),
    image0=imgs[0],
    image1=imgs[1],
    pixels_sub=pixels[:, :, ::7, ::7].permute(0, 2, 3, 1).numpy(),
    cls=tokens[:, 0].numpy(),
    patches=tokens[:, 1:].numpy(),
    embedding=embedding.numpy(),
  )
  print(name, tuple(tokens.shape), tuple(embedding.shape), os.path.getsize(path))

if not args.skip_full:
  # clip/clip.py _MODELS ViT-B/16 and ViT-L/14, sizes as build_model reads them off the published files.
  full = {
    "ViT-B/16": dict(embed_dim=512, vision_layers=12, vision_width=768, vision_patch_size=16, transformer_width=512,
                     transformer_heads=8),
    "ViT-L/14": dict(embed_dim=768, vision_layers=24, vision_width=1024, vision_patch_size=14, transformer_width=768,
                     transformer_heads=12),
  }
  counts = {}
  for arch, c in full.items():
    with torch.device("meta"):
      m = CLIP(image_resolution=224, context_length=77, vocab_size=49408, transformer_layers=12, **c)
    sd = {k: v for k, v in m.state_dict().items() if k.startswith("visual.")}
    counts[arch] = {
      "visual_parameters": int(sum(v.numel() for v in sd.values())),
      "keys": {k: list(v.shape) for k, v in sd.items() if ".resblocks." not in k or ".resblocks.0." in k},
      "blocks": len(m.visual.transformer.resblocks),
    }
  with open(os.path.join(args.out, "full_sizes.json"), "w") as fp:
    json.dump(counts, fp, indent=1)
  print({k: v["visual_parameters"] for k, v in counts.items()})
