#!/usr/bin/env python
"""Generate a reduced-width BSQ-ViT checkpoint + golden outputs, and the full-size tensor lists.

Usage: /tmp/torchenv/bin/python gen_bsqvit.py /path/to/bsq-vit-checkout [--out DIR]

The model code is imported from the reference checkout
(transcoder/models/bsqvit.py ``VITBSQModel``, transformer.py, quantizer/bsq.py);
nothing is copied. The only code here is glue: stub the timm helpers that
transformer.py imports (``to_2tuple``, ``trunc_normal_``, ``DropPath``: shapes
and initial values only, which are overwritten), build the model at reduced
width through its own config arguments, randomise every tensor, save it the
way scripts/main_image_tokenizer.py saves ``checkpoint.pt`` (``state_dict`` of
the DDP-wrapped model, ``module.`` prefix; ``ema_state_dict`` of timm's
``ModelEmaV2`` around it, ``module.module.``; other values that training
writes), reload through the reference's own ``init_from_ckpt`` (EMA first),
run, dump.

Inputs: the three photos of tests/goldens/titok/golden.npz (``images``, 32 x 32
in [0, 1]), mapped to [-1, 1] as BSQ-ViT's ``zero_mean`` data config does
(``Normalize(0.5, 0.5)``).
"""

import argparse
import json
import os
import sys
import types

import numpy as np
import torch


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="zhaoyue-zephyrus/bsq-vit checkout root")
  p.add_argument("--out", default="tests/goldens/bsq-vit")
  p.add_argument("--images", default="tests/goldens/titok/golden.npz")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--width", type=int, default=64)  # one head of BSQ-ViT's head width 64
  p.add_argument("--depth", type=int, default=1)
  p.add_argument("--decoder-depth", type=int, default=2)
  p.add_argument("--mlp-ratio", type=float, default=1.5)
  p.add_argument("--ffn", type=int, default=80)  # the decoder's dim_ffn_output (3072 when published)
  p.add_argument("--image-size", type=int, default=32)
  p.add_argument("--patch", type=int, default=4)
  p.add_argument("--bits", type=int, default=12)
  p.add_argument("--group-size", type=int, default=4)
  p.add_argument("--skip-full", action="store_true")
  return p.parse_args()


args = parse()
REF = os.path.abspath(args.ref)
sys.path.insert(0, REF)


def _stub(name, **attrs):
  mod = types.ModuleType(name)
  mod.__dict__.update(attrs)
  sys.modules[name] = mod
  return mod


# timm: only these three helpers are used, for construction.
_stub("timm")
_stub("timm.models")
_stub(
  "timm.models.layers",
  to_2tuple=lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x),
  trunc_normal_=lambda t, std=1.0, **kw: t,
  DropPath=lambda p: torch.nn.Identity(),
)
# Load the model files without the packages' __init__ files.
for pkg in ("transcoder", "transcoder.models", "transcoder.models.quantizer", "transcoder.losses"):
  m = _stub(pkg)
  m.__path__ = [os.path.join(REF, *pkg.split("."))]

from transcoder.models.bsqvit import VITBSQModel  # noqa: E402  (reference code)

torch.set_grad_enabled(False)
os.makedirs(args.out, exist_ok=True)


def build(vitconfig, dvitconfig, bits, group_size, ckpt_path=None):
  # configs/tokenizer/imagenet_256x256_bsqvit_b18g18_stylegan_f8_fp16.yaml, model.params
  return VITBSQModel(
    vitconfig,
    bits,
    embed_group_size=group_size,
    l2_norm=True,
    post_q_l2_norm=True,
    persample_entropy_compute="analytical",
    logit_laplace=False,
    beta=0.0,
    dvitconfig=dvitconfig,
    ckpt_path=ckpt_path,
    clamp_range=(-1, 1),  # main_image_tokenizer.py with data.zero_mean
  )


def reduced_configs():
  v = dict(
    image_size=args.image_size,
    patch_size=args.patch,
    width=args.width,
    layers=args.depth,
    heads=args.width // 64,
    mlp_ratio=args.mlp_ratio,
    drop_rate=0.0,
  )
  return v, dict(v, layers=args.decoder_depth, dim_ffn_output=args.ffn)


def randomise(model, seed):
  """Every parameter random (not the init values), scaled so activations stay O(1)."""
  g = torch.Generator().manual_seed(seed)
  for name, t in model.named_parameters():
    r = torch.randn(t.shape, generator=g)
    if ".ln" in name and name.endswith(".weight"):
      t.copy_(1 + 0.1 * r)
    elif name.endswith("bias"):
      t.copy_(0.05 * r)
    elif t.ndim >= 2 and "embedding" not in name:
      t.copy_(r / np.sqrt(t.shape[1]))
    else:
      t.copy_(0.5 * r)


def main():
  vitconfig, dvitconfig = reduced_configs()
  torch.manual_seed(args.seed)
  model = build(vitconfig, dvitconfig, args.bits, args.group_size)
  randomise(model, args.seed + 1)
  raw = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
  randomise(model, args.seed + 2)  # the EMA copy: other values, so a mix-up shows
  ema = {f"module.module.{k}": v.clone() for k, v in model.state_dict().items()}
  path = os.path.join(args.out, "reduced.pt")
  torch.save(
    {
      "state_dict": raw,
      "ema_state_dict": ema,
      "optimizer_generator": None,
      "optimizer_discriminator": None,
      "state_dict_discriminator": None,
      "scaler": {"scale": 65536.0, "growth_factor": 2.0},
      "iter": 1000,
    },
    path,
  )
  # Fresh, then the reference's own loader (EMA first), checked to have loaded everything.
  model = build(vitconfig, dvitconfig, args.bits, args.group_size, ckpt_path=path)
  model.eval()
  for k, v in model.state_dict().items():
    assert torch.equal(v, ema[f"module.module.{k}"]), k
  images = np.load(args.images)["images"].astype(np.float32)  # [0, 1]
  x = torch.from_numpy(images * 2 - 1).permute(0, 3, 1, 2).contiguous()  # Normalize(0.5, 0.5)
  latents = model.quant_embed(model.encoder(x))  # before the l2 norm
  quant, _, info = model.encode(x)
  ids = info["indices"]  # (B, L), int64, msb first
  u = torch.nn.functional.normalize(latents.double(), dim=-1)
  margin = u.abs().min(dim=-1).values  # a sign within rounding of 0 is a near tie
  near_tie = margin < 1e-6
  codes = model.quantize.get_codebook_entry(ids)  # the reference's path from ids
  decoded = model.decode(codes)  # (B, 3, H, W), [-1, 1], not clamped
  np.savez_compressed(
    os.path.join(args.out, "golden.npz"),
    images=images,
    latents=latents.numpy(),  # (B, L, bits)
    ids=ids.numpy().astype(np.int64),
    near_tie=near_tie.numpy(),
    quant=quant.numpy(),
    decoded=decoded.permute(0, 2, 3, 1).numpy(),
  )
  print(f"ids {tuple(ids.shape)}, near ties {int(near_tie.sum())}, smallest |u_i| {margin.min().item():.2e}")

  if args.skip_full:
    return
  keys = {}
  for bits in (18, 36):  # imagenet_256x256_bsqvit_b{18,36}g{18,36}_stylegan_f8_fp16.yaml
    v = dict(image_size=256, patch_size=8, width=768, layers=12, heads=12, mlp_ratio=4, drop_rate=0.0)
    with torch.device("meta"):
      full = build(v, None, bits, 1)
    params = {n: list(t.shape) for n, t in full.named_parameters()}
    buffers = {n: list(t.shape) for n, t in full.state_dict().items() if n not in params}
    keys[f"bsqvit_b{bits}"] = {"parameters": params, "buffers": buffers}
    print(f"bsqvit_b{bits}", sum(int(np.prod(s)) for s in params.values()), "parameters")
  with open(os.path.join(args.out, "full_keys.json"), "w") as f:
    json.dump(keys, f, indent=0)


if __name__ == "__main__":
  main()
