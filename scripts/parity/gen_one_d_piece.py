#!/usr/bin/env python
"""Generate a reduced-width One-D-Piece checkpoint + golden prefix decodes, and the full-size key lists.

Usage: /tmp/torchenv/bin/python gen_one_d_piece.py /path/to/One-D-Piece-checkout SKIMAGE_DATA_DIR [--out DIR]

The model is the reference's own ``OneDPiece`` (modeling/one_d_piece.py, a
subclass of its modeling/titok.py ``TiTok``), built from its configs, with its
ViTs and pixel decoder swapped for the reference's own modules at a smaller
width; nothing is copied. Glue only: stub the hub import, build, shrink,
randomise, save, reload strictly, run, dump. The goldens are the images
decoded from the first k token ids (``decode_tokens(tokens, length=k)``, the
reference's quality-controllable decode) for several k, the logits of one
prefix, and the token ids; the photos are given already preprocessed (its
eval transform is TiTok's, tested in tests/test_titok.py).
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
  p.add_argument("ref", help="turingmotors/One-D-Piece checkout root")
  p.add_argument("photos", help="scikit-image's data folder (astronaut.png, coffee.png, chelsea.png)")
  p.add_argument("--out", default="tests/goldens/one_d_piece")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--width", type=int, default=64)  # one head of TiTok's head width 64
  p.add_argument("--depth", type=int, default=1)
  p.add_argument("--image-size", type=int, default=32)
  p.add_argument("--patch", type=int, default=4)
  p.add_argument("--latent-tokens", type=int, default=16)
  p.add_argument("--codebook-size", type=int, default=64)
  p.add_argument("--proxy-codes", type=int, default=32)
  p.add_argument("--proxy-dim", type=int, default=8)
  p.add_argument("--pixel-channels", type=int, default=32)  # GroupNorm(32) in the reference
  p.add_argument("--pixel-mult", default="1,2,2")  # 3 levels: upsampling 4 = the patch size
  p.add_argument("--lengths", default="1,2,5,16")
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
for pkg in ("modeling", "modeling.modules", "modeling.quantizer"):  # skip the packages' __init__ (training losses)
  m = _stub(pkg)
  m.__path__ = [os.path.join(REF, *pkg.split("."))]
from modeling.modules import blocks, maskgit_vqgan  # noqa: E402
from modeling.one_d_piece import OneDPiece  # noqa: E402  (reference code)
from omegaconf import OmegaConf  # noqa: E402

torch.set_grad_enabled(False)
PIXEL_MULT = [int(m) for m in args.pixel_mult.split(",")]
TOKEN_SIZE = 12


def reference_config(name):
  """The authors' inference config (configs/one-d-piece_*.yaml), as scripts/inference_tokenizer.py sets it."""
  c = OmegaConf.load(os.path.join(REF, "configs", f"{name}.yaml"))
  c.model.vq_model.finetune_decoder = True
  c.model.vq_model.strict_length_assertion = False
  return c


def shrink_vit(vit, width, depth, codes_out=None):
  """Rebuilds a TiTokEncoder/Decoder's layers at ``width`` x ``depth`` from the reference's classes."""
  heads = width // 64
  vit.width, vit.num_layers, vit.num_heads = width, depth, heads
  p = lambda *s: torch.nn.Parameter(torch.zeros(*s))
  if hasattr(vit, "patch_embed"):
    vit.patch_embed = torch.nn.Conv2d(3, width, kernel_size=vit.patch_size, stride=vit.patch_size, bias=True)
  if hasattr(vit, "decoder_embed"):
    vit.decoder_embed = torch.nn.Linear(vit.token_size, width, bias=True)
  vit.class_embedding = p(1, width)
  vit.positional_embedding = p(vit.grid_size**2 + 1, width)
  if hasattr(vit, "mask_token"):
    vit.mask_token = p(1, 1, width)
  vit.latent_token_positional_embedding = p(vit.num_latent_tokens, width)
  vit.ln_pre = torch.nn.LayerNorm(width)
  vit.transformer = torch.nn.ModuleList(
    [blocks.ResidualAttentionBlock(width, heads, mlp_ratio=4.0) for _ in range(depth)]
  )
  vit.ln_post = torch.nn.LayerNorm(width)
  if hasattr(vit, "ffn"):  # the decoder: logits over the proxy codes
    vit.ffn = torch.nn.Sequential(
      torch.nn.Conv2d(width, 2 * width, 1, padding=0, bias=True),
      torch.nn.Tanh(),
      torch.nn.Conv2d(2 * width, codes_out, 1, padding=0, bias=True),
    )
  else:
    vit.conv_out = torch.nn.Conv2d(width, TOKEN_SIZE, kernel_size=1, bias=True)


def build_reduced():
  torch.manual_seed(args.seed)
  cfg = reference_config("one-d-piece_s256")
  cfg.model.vq_model.update(
    {"num_latent_tokens": args.latent_tokens, "codebook_size": args.codebook_size, "vit_enc_patch_size": args.patch}
  )
  cfg.model.vq_model.vit_dec_patch_size = args.patch
  cfg.dataset.preprocessing.crop_size = args.image_size
  model = OneDPiece(cfg)
  shrink_vit(model.encoder, args.width, args.depth)
  shrink_vit(model.decoder, args.width, args.depth, codes_out=args.proxy_codes)
  model.latent_tokens = torch.nn.Parameter(torch.zeros(args.latent_tokens, args.width))
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
  g = torch.Generator().manual_seed(args.seed + 1)
  for name, t in model.state_dict().items():  # every tensor random, scaled so activations stay O(1)
    r = torch.randn(t.shape, generator=g)
    norms = ("ln_1", "ln_2", "ln_pre", "ln_post", "norm1", "norm2", "norm_out")
    if name.endswith(tuple(f"{n}.weight" for n in norms)):
      t.copy_(1 + 0.1 * r)
    elif name.endswith(".bias") or name.endswith("in_proj_bias"):
      t.copy_(0.05 * r)
    elif t.ndim >= 2 and "embedding" not in name and name != "latent_tokens" and "mask_token" not in name:
      t.copy_(r / np.sqrt(int(np.prod(t.shape[1:]))))
    else:
      t.copy_(0.5 * r)
  model.eval()
  return model


def photos(size):
  """The photos resized (bicubic) and center-cropped to ``size``, uint8 (the test feeds them as they are)."""
  out = []
  for n in ("astronaut", "coffee", "chelsea"):
    im = Image.open(os.path.join(args.photos, f"{n}.png")).convert("RGB")
    s = size / min(im.size)
    im = im.resize((max(size, round(im.size[0] * s)), max(size, round(im.size[1] * s))), Image.Resampling.BICUBIC)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    out.append(np.asarray(im.crop((left, top, left + size, top + size))))
  return np.stack(out)


def main():
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "reduced.bin")
  torch.save(build_reduced().state_dict(), path)  # the layout of the hub's model.safetensors
  model = build_reduced()  # fresh, then the reference's own strict load
  model.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
  model.eval()
  images_uint8 = photos(args.image_size)
  x = torch.from_numpy(images_uint8.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
  z_q, result = model.encode(x)
  ids = result["min_encoding_indices"].reshape(x.shape[0], -1)  # (B, K)
  latent = model.encoder(pixel_values=x, latent_tokens=model.latent_tokens)
  z = torch.nn.functional.normalize(latent.permute(0, 2, 3, 1).reshape(-1, TOKEN_SIZE), dim=-1)
  e = torch.nn.functional.normalize(model.quantize.embedding.weight, dim=-1)
  top2 = torch.topk(torch.cdist(z.double(), e.double()) ** 2, 2, largest=False).values
  gap = (top2[:, 1] - top2[:, 0]) / top2[:, 1].clamp_min(1e-12)
  lengths = [int(k) for k in args.lengths.split(",")]
  decoded = [model.decode_tokens(ids[:, None, :], length=k).permute(0, 2, 3, 1).numpy() for k in lengths]
  np.savez_compressed(
    os.path.join(args.out, "golden.npz"),
    images=images_uint8.astype(np.float32) / 255.0,
    ids=ids.numpy().astype(np.int32),
    near_tie=(gap < 1e-5).reshape(ids.shape).numpy(),
    lengths=np.array(lengths, np.int32),
    decoded=np.stack(decoded),  # (len(lengths), B, H, W, 3), [0, 1] range, not clamped
    logits_5=model.decoder(z_q[:, :, :, :5]).permute(0, 2, 3, 1).numpy(),  # (B, g, g, codes) from 5 tokens
  )
  print(f"ids {tuple(ids.shape)}, smallest relative gap {gap.min().item():.2e}")
  keys = {}
  for name in ("one-d-piece_s256", "one-d-piece_b256", "one-d-piece_l256"):
    with torch.device("meta"):
      full = OneDPiece(reference_config(name))
    keys[name] = {n: list(t.shape) for n, t in full.state_dict().items()}
    print(name, sum(int(np.prod(s)) for s in keys[name].values()))
  with open(os.path.join(args.out, "full_keys.json"), "w") as f:
    json.dump(keys, f, indent=0)


if __name__ == "__main__":
  main()
