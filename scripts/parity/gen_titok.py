#!/usr/bin/env python
"""Generate a reduced-width TiTok checkpoint + golden outputs, and the full-size key lists.

Usage: /tmp/torchenv/bin/python gen_titok.py /path/to/1d-tokenizer-checkout [--out DIR]

All model code is imported from the reference checkout (modeling/titok.py,
modeling/modules/blocks.py, modeling/modules/maskgit_vqgan.py,
modeling/quantizer/quantizer.py); nothing is copied. The only code here is
glue: stub the hub / accelerate imports the model files make but do not use
for inference, build, shrink (by swapping in the reference's own modules at
a smaller width), randomise, save, reload strictly, run, dump.
"""

import argparse
import json
import os
import sys
import types

import numpy as np
import torch
from PIL import Image


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="bytedance/1d-tokenizer checkout root")
  p.add_argument("--out", default="tests/goldens/titok")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--width", type=int, default=128)  # 2 heads of TiTok's head width 64
  p.add_argument("--depth", type=int, default=2)
  p.add_argument("--image-size", type=int, default=32)
  p.add_argument("--patch", type=int, default=4)
  p.add_argument("--latent-tokens", type=int, default=8)
  p.add_argument("--codebook-size", type=int, default=64)
  p.add_argument("--proxy-codes", type=int, default=48)
  p.add_argument("--proxy-dim", type=int, default=16)
  p.add_argument("--pixel-channels", type=int, default=32)
  p.add_argument("--pixel-mult", default="1,2,2")  # 3 levels: upsampling 4 = the patch size
  p.add_argument("--variant", choices=("two_stage", "vq8k"), default="two_stage")
  p.add_argument("--decoder-width", type=int, default=128)  # vq8k: a wider, deeper decoder (as TiTok-BL)
  p.add_argument("--decoder-depth", type=int, default=2)
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


class _HubMixin:  # huggingface_hub.PyTorchModelHubMixin: saving/loading helpers only
  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__()


_stub("huggingface_hub", PyTorchModelHubMixin=_HubMixin)
_stub("accelerate")
_stub("accelerate.utils")
_stub("accelerate.utils.operations", gather=lambda x: x)  # only for clustering_vq training
# Load the model files without the packages' __init__ (they import the training losses).
for pkg in ("modeling", "modeling.modules", "modeling.quantizer"):
  m = _stub(pkg)
  m.__path__ = [os.path.join(REF, *pkg.split("."))]
from omegaconf import OmegaConf  # noqa: E402

from modeling import titok as ref  # noqa: E402  (reference code)
from modeling.modules import blocks, maskgit_vqgan  # noqa: E402

torch.set_grad_enabled(False)
os.makedirs(args.out, exist_ok=True)
PIXEL_MULT = [int(m) for m in args.pixel_mult.split(",")]
TOKEN_SIZE = 16 if args.variant == "vq8k" else 12
PREFIX = "vq8k_" if args.variant == "vq8k" else ""


def titok_config(size, num_latent_tokens, image_size=256, patch=16, dec_size=None, vq8k=False):
  c = OmegaConf.create(
    {
      "model": {
        "vq_model": {
          "codebook_size": 4096,
          "token_size": 12,
          "use_l2_norm": True,
          "commitment_cost": 0.25,
          "vit_enc_model_size": size,
          "vit_dec_model_size": size,
          "vit_enc_patch_size": patch,
          "vit_dec_patch_size": patch,
          "num_latent_tokens": num_latent_tokens,
          "finetune_decoder": True,
        }
      },
      "dataset": {"preprocessing": {"crop_size": image_size}},
    }
  )
  if dec_size:
    c.model.vq_model.vit_dec_model_size = dec_size
  if vq8k:  # configs/infer/TiTok/titok_*_vq8k.yaml
    c.model.vq_model.update(
      {"codebook_size": 8192, "token_size": 64, "use_l2_norm": False, "finetune_decoder": False, "is_legacy": False}
    )
  return c


def shrink_vit(vit, width, depth, codes_out=None, token_size=None):
  """Rebuilds a TiTokEncoder/Decoder's layers at ``width`` x ``depth`` from the reference's classes."""
  heads = width // 64
  vit.width, vit.num_layers, vit.num_heads = width, depth, heads
  g2 = vit.grid_size**2
  p = lambda *s: torch.nn.Parameter(torch.zeros(*s))  # noqa: E731
  if hasattr(vit, "patch_embed"):
    vit.patch_embed = torch.nn.Conv2d(3, width, kernel_size=vit.patch_size, stride=vit.patch_size, bias=True)
  if hasattr(vit, "decoder_embed"):
    vit.decoder_embed = torch.nn.Linear(vit.token_size, width, bias=True)
  vit.class_embedding = p(1, width)
  vit.positional_embedding = p(g2 + 1, width)
  if hasattr(vit, "mask_token"):
    vit.mask_token = p(1, 1, width)
  vit.latent_token_positional_embedding = p(vit.num_latent_tokens, width)
  vit.ln_pre = torch.nn.LayerNorm(width)
  vit.transformer = torch.nn.ModuleList([blocks.ResidualAttentionBlock(width, heads, mlp_ratio=4.0) for _ in range(depth)])
  vit.ln_post = torch.nn.LayerNorm(width)
  if hasattr(vit, "ffn") and not vit.is_legacy:  # the decoder predicts patch pixels: a new first layer
    vit.ffn[0] = torch.nn.Conv2d(width, vit.patch_size * vit.patch_size * 3, 1, padding=0, bias=True)
  elif hasattr(vit, "ffn"):  # the decoder: logits over the proxy codes
    vit.ffn = torch.nn.Sequential(
      torch.nn.Conv2d(width, 2 * width, 1, padding=0, bias=True),
      torch.nn.Tanh(),
      torch.nn.Conv2d(2 * width, codes_out, 1, padding=0, bias=True),
    )
  else:
    vit.conv_out = torch.nn.Conv2d(width, token_size, kernel_size=1, bias=True)


def build_reduced():
  torch.manual_seed(args.seed)
  vq8k = args.variant == "vq8k"
  cfg = titok_config("small", args.latent_tokens, args.image_size, args.patch, vq8k=vq8k)
  cfg.model.vq_model.codebook_size = args.codebook_size
  if vq8k:
    cfg.model.vq_model.token_size = TOKEN_SIZE
  model = ref.TiTok(cfg)
  shrink_vit(model.encoder, args.width, args.depth, token_size=TOKEN_SIZE)
  model.latent_tokens = torch.nn.Parameter(torch.zeros(args.latent_tokens, args.width))
  if vq8k:
    shrink_vit(model.decoder, args.decoder_width, args.decoder_depth)
    randomise(model)
    model.eval()
    return model
  shrink_vit(model.decoder, args.width, args.depth, codes_out=args.proxy_codes)
  model.pixel_quantize = maskgit_vqgan.VectorQuantizer(
    num_embeddings=args.proxy_codes, embedding_dim=args.proxy_dim, commitment_cost=0.25
  )
  model.pixel_decoder = maskgit_vqgan.Decoder(
    OmegaConf.create(
      {
        "channel_mult": PIXEL_MULT,
        "num_resolutions": len(PIXEL_MULT),
        "dropout": 0.0,
        "hidden_channels": args.pixel_channels,
        "num_channels": 3,
        "num_res_blocks": 1,
        "resolution": args.image_size,
        "z_channels": args.proxy_dim,
      }
    )
  )
  randomise(model)
  model.eval()
  return model


def randomise(model):
  """Every tensor random (not the init values), scaled so activations stay O(1)."""
  g = torch.Generator().manual_seed(args.seed + 1)
  for name, t in model.state_dict().items():
    r = torch.randn(t.shape, generator=g)
    if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "norm1.weight", "norm2.weight")):
      t.copy_(1 + 0.1 * r)
    elif name.endswith("norm_out.weight"):
      t.copy_(1 + 0.1 * r)
    elif name.endswith(".bias") or name.endswith("in_proj_bias"):
      t.copy_(0.05 * r)
    elif t.ndim >= 2 and "embedding" not in name and name != "latent_tokens" and "mask_token" not in name:
      fan_in = int(np.prod(t.shape[1:]))
      t.copy_(r / np.sqrt(fan_in))
    else:
      t.copy_(0.5 * r)


def photos(size):
  """The photos through TiTok's eval transform (data/webdataset_reader.py), uint8."""
  import skimage  # noqa: PLC0415

  # torchvision's C++ operators are not needed for the PIL transforms; skip registering them
  # (a torchvision wheel built for another torch build fails there).
  sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
  from torchvision import transforms  # noqa: PLC0415

  tf = transforms.Compose(
    [
      transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
      transforms.CenterCrop(size),
    ]
  )
  data = os.path.join(os.path.dirname(skimage.__file__), "data")
  names = ["astronaut", "coffee", "chelsea"]
  imgs = [np.asarray(tf(Image.open(os.path.join(data, f"{n}.png")).convert("RGB"))) for n in names]
  return names, np.stack(imgs)


def main():
  model = build_reduced()
  path = os.path.join(args.out, f"{PREFIX}reduced.bin")
  torch.save(model.state_dict(), path)  # the layout of tokenizer_titok_*.bin
  model = build_reduced()  # fresh, then the reference's own strict load
  model.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
  model.eval()
  names, images_uint8 = photos(args.image_size)
  images = images_uint8.astype(np.float32) / 255.0  # TiTok's ToTensor: [0, 1]
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  latent = model.encoder(pixel_values=x, latent_tokens=model.latent_tokens)  # (B, 12, 1, K)
  z_q, result = model.encode(x)
  ids = result["min_encoding_indices"].reshape(x.shape[0], -1)  # (B, K)
  # near ties: best and second distances within 1e-5 relative (l2-normalised, as the reference)
  z = torch.nn.functional.normalize(latent.permute(0, 2, 3, 1).reshape(-1, TOKEN_SIZE), dim=-1)
  e = model.quantize.embedding.weight
  if model.quantize.use_l2_norm:
    e = torch.nn.functional.normalize(e, dim=-1)
  else:
    z = latent.permute(0, 2, 3, 1).reshape(-1, TOKEN_SIZE)
  d = torch.cdist(z.double(), e.double()) ** 2
  top2 = torch.topk(d, 2, largest=False).values
  near_tie = ((top2[:, 1] - top2[:, 0]) / top2[:, 1].clamp_min(1e-12) < 1e-5).reshape(ids.shape)
  logits = model.decoder(z_q)  # (B, proxy codes, g, g); vq8k: the images
  decoded = model.decode_tokens(ids[:, None, :])  # the reference's path from ids: (B, 3, H, W)
  gaps = ((top2[:, 1] - top2[:, 0]) / top2[:, 1]).min().item()
  np.savez_compressed(
    os.path.join(args.out, f"{PREFIX}golden.npz"),
    names=np.array(names),
    images_uint8=images_uint8,
    images_uint8_67=photos(67)[1],  # an odd size: torchvision's truncation and crop rounding
    images=images,
    latents=latent[:, :, 0, :].permute(0, 2, 1).numpy(),  # (B, K, 12)
    ids=ids.numpy().astype(np.int32),
    near_tie=near_tie.numpy(),
    logits=logits.permute(0, 2, 3, 1).numpy(),  # (B, g, g, codes)
    decoded=decoded.permute(0, 2, 3, 1).numpy(),  # [0, 1] range, not clamped
  )
  print(f"ids {tuple(ids.shape)}, near ties {int(near_tie.sum())}, smallest relative gap {gaps:.2e}")

  if args.skip_full:
    return
  keys = {}
  sizes = (
    ("titok_l32", "large", None, 32, False),
    ("titok_b64", "base", None, 64, False),
    ("titok_s128", "small", None, 128, False),
    ("titok_bl64_vq8k", "base", "large", 64, True),
    ("titok_bl128_vq8k", "base", "large", 128, True),
    ("titok_sl256_vq8k", "small", "large", 256, True),
  )
  for name, size, dec_size, k, vq8k in sizes:
    with torch.device("meta"):
      full = ref.TiTok(titok_config(size, k, dec_size=dec_size, vq8k=vq8k))
    keys[name] = {n: list(t.shape) for n, t in full.state_dict().items()}
    print(name, sum(int(np.prod(s)) for s in keys[name].values()))
  with open(os.path.join(args.out, "full_keys.json"), "w") as f:
    json.dump(keys, f, indent=0, sort_keys=False)


if __name__ == "__main__":
  main()
