#!/usr/bin/env python
"""Generate reduced-width SigLIP two-tower .npz files + golden features, and the full-size key lists and counts.

Usage: PYTHONPATH=/path/to/big_vision-checkout /tmp/bvenv/bin/python gen_siglip.py [--out DIR]
(a venv with jax, flax, numpy, ml_collections, einops, pillow, absl-py and tensorflow-cpu).

The models are big_vision's own two-tower ``Model`` (big_vision/models/proj/
image_text/two_towers.py) with the SigLIP colab's settings
(configs/proj/image_text/SigLIP_demo.ipynb: ``image=dict(variant, pool_type="map")``,
``bias_init=-10``, ``temperature_init=10``) at reduced sizes; each is saved as
the published files are (``np.savez`` of the parameters' ``/``-joined names
under ``params/``), loaded back with ``two_towers.load`` and run on images
prepared by the colab's own pipeline, ``resize(RES)|value_range(-1, 1)``
(big_vision/pp, TensorFlow). Nothing is copied: everything is imported from
the checkout. Every parameter is random (LayerNorms, biases, the MAP probe
included), so a layout mistake shows; the tokens entering the first block are
small, so a wrong LayerNorm epsilon shows too.

Two variants: ``b16`` as the published SigLIP files (width 32, patch 16, 224 px, blocks
``encoderblock_<i>``, no image head: ``out_dim=(None, D)``); ``p14_scan``
(width 32 in 4 heads, patch 14, 56 px, trained with ``scan=True``: blocks stacked in one
``encoderblock``, and an image ``head``: ``out_dim=(32, 32)``).
"""

import argparse
import json
import os

import big_vision.models.proj.image_text.two_towers as two_towers
import big_vision.pp.builder as pp_builder
import big_vision.pp.ops_general  # noqa: F401  (registers value_range)
import big_vision.pp.ops_image  # noqa: F401  (registers resize)
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("--out", default="tests/goldens/siglip")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--skip-full", action="store_true")
  return p.parse_args()


args = parse()
rng = np.random.default_rng(args.seed)
os.makedirs(args.out, exist_ok=True)
TEXT = dict(width=32, depth=1, mlp_dim=64, num_heads=2, vocab_size=50)
SEQLEN = 8

# name -> (image config, out_dim, resolution)
VARIANTS = {
  "b16": (dict(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=(16, 16), pool_type="map"), (None, 32), 224),
  "p14_scan": (
    dict(width=32, depth=3, mlp_dim=64, num_heads=4, patch_size=(14, 14), pool_type="map", scan=True),
    (32, 32),
    56,
  ),
}


def model_config(image, out_dim, text=TEXT):
  c = ml_collections.ConfigDict()
  c.image_model = "vit"
  c.text_model = "proj.image_text.text_transformer"
  c.image = dict(image)
  c.text = dict(text)
  c.out_dim = out_dim
  c.bias_init = -10.0
  c.temperature_init = 10.0
  return c


def flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    name = f"{prefix}/{k}" if prefix else k
    out.update(flat(v, name) if isinstance(v, dict) else {name: v})
  return out


def randomize(params):
  out = {}
  for name, v in flat(params).items():
    v = np.asarray(v)
    if name.endswith("kernel"):  # Dense, conv, attention: scaled by fan-in so activations stay O(1)
      shape = v.shape[1:] if "/encoderblock/" in name else v.shape  # stacked: a leading depth axis
      qkv = name.endswith(("query/kernel", "key/kernel", "value/kernel"))  # (in, heads, head_dim)
      fan_in = shape[0] if qkv else int(np.prod(shape[:-1]))
      r = rng.normal(0, 1 / np.sqrt(fan_in), v.shape)
    elif name.endswith("scale"):
      r = 1 + rng.normal(0, 0.3, v.shape)
    else:  # biases, position embeddings, the probe, token embeddings, t and b
      r = rng.normal(0, 0.5, v.shape)
    if name in ("img/embedding/kernel", "img/embedding/bias", "img/pos_embedding"):
      # Small tokens into the first LayerNorm (variance ~1e-3), so that its epsilon (Flax's 1e-6)
      # shows: with 1e-5 the features move by ~1e-3 relative, not by less than the tolerance.
      r = r * 0.03
    out[name] = r.astype(np.float32)
  return out


def images():
  """Two small smooth uint8 photos-alike of different aspect ratios (one upsampled, one downsampled)."""
  out = []
  for h, w in ((48, 64), (120, 76)):
    y, x = np.mgrid[:h, :w] / max(h, w)
    base = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in range(3)], -1)
    img = 127.5 * (1 + 0.8 * base) + rng.normal(0, 12, (h, w, 3))
    img[: h // 4, : w // 4] = 200  # a flat patch: TF's lerps must give exactly 200 there
    out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
  return out


imgs = images()
for name, (image, out_dim, res) in VARIANTS.items():
  cfg = model_config(image, out_dim)
  model = two_towers.Model(**cfg)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros([1, res, res, 3]), jnp.zeros([1, SEQLEN], jnp.int32))["params"]
  arrays = randomize(params)
  path = os.path.join(args.out, f"{name}.npz")
  np.savez(path, **{f"params/{k}": v for k, v in arrays.items()})
  # The colab's way back in: two_towers.load of the whole file (with init_params, so its checks run).
  loaded = two_towers.load(params, path, cfg)
  pp = pp_builder.get_preprocess_fn(f"resize({res})|value_range(-1, 1)", log_data=False)
  resize_only = pp_builder.get_preprocess_fn(f"resize({res})", log_data=False)
  pixels = np.stack([np.asarray(pp({"image": im})["image"]) for im in imgs])
  resized = np.stack([np.asarray(resize_only({"image": im})["image"]) for im in imgs])
  zimg, _, out = model.apply({"params": loaded}, pixels, None)
  embedding = out["img/logits"] if out_dim[0] else out["img/pre_logits"]
  golden = dict(
    image0=imgs[0],
    image1=imgs[1],
    resized=resized if res <= 64 else resized[:, ::7, ::7],
    pixels_sub=pixels[:, ::7, ::7],
    encoded=np.asarray(out["img/encoded"]),
    pre_logits=np.asarray(out["img/pre_logits"]),
    embedding=np.asarray(embedding),
    zimg=np.asarray(zimg),
  )
  np.savez(os.path.join(args.out, f"{name}_golden.npz"), **golden)
  print(name, {k: v.shape for k, v in golden.items()}, "keys", len(arrays))

if not args.skip_full:
  # name -> (image variant, text variant, out_dim, res): the colab's table.
  full = {
    "webli_en_b16_224": ("B/16", "B", (None, 768), 224, 64),
    "webli_en_so400m_224": ("So400m/14", "So400m", (None, 1152), 224, 16),
  }
  counts = {}
  for name, (iv, tv, out_dim, res, seqlen) in full.items():
    cfg = model_config(dict(variant=iv, pool_type="map"), out_dim, dict(variant=tv, vocab_size=32_000))
    model = two_towers.Model(**cfg)
    shapes = jax.eval_shape(
      lambda m=model, r=res, s=seqlen: m.init(
        jax.random.PRNGKey(0), jnp.zeros([1, r, r, 3]), jnp.zeros([1, s], jnp.int32)
      )["params"]
    )
    names = {f"params/{k}": list(v.shape) for k, v in flat(shapes).items()}
    img = {k: v for k, v in names.items() if k.startswith("params/img/")}
    block = "params/img/Transformer/encoderblock_"
    counts[name] = {
      "image_tower_parameters": int(sum(np.prod(s) for s in img.values())),
      "all_parameters": int(sum(np.prod(s) for s in names.values())),
      "blocks": len({k[len(block) :].split("/")[0] for k in img if k.startswith(block)}),
      # every image-tower key but those of blocks 1.. (alike block 0's), and the top-level others
      "img_keys": {k: v for k, v in img.items() if not k.startswith(block) or k.startswith(f"{block}0/")},
      "other_keys": [k for k in names if not k.startswith(("params/img/", "params/txt/"))],
    }
  with open(os.path.join(args.out, "full_sizes.json"), "w") as fp:
    json.dump(counts, fp, indent=0)
  print({k: (v["image_tower_parameters"], v["all_parameters"]) for k, v in counts.items()})
