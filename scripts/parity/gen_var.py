#!/usr/bin/env python
"""Generate a reduced-width VAR tokenizer state dict + golden outputs.

Usage: /tmp/torchenv/bin/python scripts/parity/gen_var.py /path/to/VAR-checkout [--out DIR] [options]

All model code is imported from the reference checkout (models/vqvae.py VQVAE,
models/basic_vae.py Encoder/Decoder, models/quant.py VectorQuantizer2);
nothing is copied. The only code here is glue: build, randomise, save, reload
with the reference's own loader, run, dump.

VQVAE hard-wires ch_mult (1, 1, 2, 2, 4) and two res blocks (vqvae.py ddconfig);
the reduced model swaps in the reference Encoder/Decoder built with
--ch/--ch-mult/--num-res-blocks (f2: a 16x16 latent at 32 px, so VAR's default
schedule 1..16 applies unchanged). The quantizer (4 partially shared phi
convolutions, quant_resi 0.5) is VAR's default.
"""

import argparse
import json
import os
import sys
import types
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="VAR checkout root")
  p.add_argument("--out", default="/tmp/parity/out/var")
  p.add_argument("--keys-dir", default="/tmp/parity")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--ch", type=int, default=32)
  p.add_argument("--ch-mult", default="1,2")
  p.add_argument("--num-res-blocks", type=int, default=1)
  p.add_argument("--z-channels", type=int, default=8)
  p.add_argument("--codebook-size", type=int, default=128)
  p.add_argument("--image-size", type=int, default=32)
  p.add_argument("--skip-full", action="store_true")
  return p.parse_args()


args = parse()
REF = os.path.abspath(args.ref)
# Import models/vqvae.py without models/__init__.py (which pulls in the VAR transformer).
sys.path.insert(0, REF)
pkg = types.ModuleType("models")
pkg.__path__ = [os.path.join(REF, "models")]
sys.modules["models"] = pkg
from models import basic_vae, vqvae  # noqa: E402  (reference code)

torch.set_grad_enabled(False)
os.makedirs(args.out, exist_ok=True)
CH_MULT = tuple(int(c) for c in args.ch_mult.split(","))


def build_reduced():
  torch.manual_seed(args.seed)
  model = vqvae.VQVAE(vocab_size=args.codebook_size, z_channels=args.z_channels, ch=args.ch, test_mode=True)
  dd = dict(ch=args.ch, ch_mult=CH_MULT, num_res_blocks=args.num_res_blocks, z_channels=args.z_channels, dropout=0.0)
  model.encoder = basic_vae.Encoder(double_z=False, using_sa=True, using_mid_sa=True, **dd)
  model.decoder = basic_vae.Decoder(using_sa=True, using_mid_sa=True, **dd)
  model.eval()
  return model


def randomise(model):
  g = torch.Generator().manual_seed(args.seed + 1)
  for m in model.modules():
    if isinstance(m, torch.nn.GroupNorm):
      m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
      m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    elif isinstance(m, torch.nn.Conv2d):
      fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
      m.weight.copy_(torch.randn(m.weight.shape, generator=g) / np.sqrt(fan_in))
      m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
  q = model.quantize
  q.embedding.weight.copy_(torch.randn(q.embedding.weight.shape, generator=g) * 0.5)
  q.ema_vocab_hit_SV.copy_(torch.rand(q.ema_vocab_hit_SV.shape, generator=g))


def images():
  import skimage.data as d

  out = []
  for name, arr in (("astronaut", d.astronaut()), ("coffee", d.coffee()), ("chelsea", d.chelsea())):
    img = Image.fromarray(arr)
    s = min(img.size)
    left, top = (img.size[0] - s) // 2, (img.size[1] - s) // 2
    img = img.crop((left, top, left + s, top + s)).resize((args.image_size,) * 2, Image.BICUBIC)
    out.append((name, np.asarray(img)))
  return out


def near_ties(model, f):
  """Relative gap between the two nearest codes of every token, per scale (float64)."""
  q = model.quantize
  f_hats = q.f_to_idxBl_or_fhat(f, to_fhat=True)
  emb = q.embedding.weight.double()
  gaps, H = [], f.shape[-1]
  for si, pn in enumerate(q.v_patch_nums):
    rest = f - (f_hats[si - 1] if si else 0)
    if pn != H:
      rest = F.interpolate(rest, size=(pn, pn), mode="area")
    z = rest.permute(0, 2, 3, 1).reshape(f.shape[0], -1, f.shape[1]).double()
    d = ((z[:, :, None, :] - emb[None, None]) ** 2).sum(-1)
    top2 = torch.topk(d, 2, dim=-1, largest=False).values
    gaps.append(((top2[..., 1] - top2[..., 0]) / (top2[..., 0] + (z**2).sum(-1) + 1e-12)).numpy())
  return np.concatenate(gaps, axis=1)


def main():
  model = build_reduced()
  randomise(model)
  path = os.path.join(args.out, "var_reduced.pth")
  torch.save(model.state_dict(), path)  # the published layout: a plain state dict
  model = build_reduced()
  for p in model.parameters():
    p.data.zero_()
  model.load_state_dict(torch.load(path, map_location="cpu"), strict=True)  # vqvae.py load_state_dict
  model.eval()

  names, u8 = zip(*images(), strict=True)
  x = torch.from_numpy(np.stack(u8)).permute(0, 3, 1, 2).float().div(255).mul(2).sub(1)  # VAR's [-1, 1]
  f = model.quant_conv(model.encoder(x))
  idx_bl = model.img_to_idxBl(x)
  ids = torch.cat(idx_bl, dim=1)
  f_hat = model.quantize.f_to_idxBl_or_fhat(f, to_fhat=True)[-1]
  decoded = model.decoder(model.post_quant_conv(f_hat))  # fhat_to_img before its clamp
  from_ids = model.idxBl_to_img(idx_bl, same_shape=True, last_one=True)  # clamped to [-1, 1]
  previews = model.idxBl_to_img(idx_bl, same_shape=True, last_one=False)  # after each scale, clamped
  gaps = near_ties(model, f)
  golden = OrderedDict(
    names=np.asarray(names),
    input=x.permute(0, 2, 3, 1).numpy(),
    latent=f.permute(0, 2, 3, 1).numpy(),
    ids=ids.numpy().astype(np.int32),
    f_hat=f_hat.permute(0, 2, 3, 1).numpy(),
    decoded=decoded.permute(0, 2, 3, 1).numpy(),
    decoded_from_ids=from_ids.permute(0, 2, 3, 1).numpy(),
    preview_4=previews[3].permute(0, 2, 3, 1).numpy(),
    rel_gap=gaps.astype(np.float32),
    near_tie=gaps < 1e-5,
    scales=np.asarray(model.quantize.v_patch_nums),
  )
  np.savez_compressed(os.path.join(args.out, "golden.npz"), **golden)
  print("ids", ids.shape, "smallest relative gap", float(gaps.min()), "near ties", int((gaps < 1e-5).sum()))
  if not args.skip_full:
    full = vqvae.VQVAE(vocab_size=4096, z_channels=32, ch=160, test_mode=True)
    sd = full.state_dict()
    os.makedirs(args.keys_dir, exist_ok=True)
    with open(os.path.join(args.keys_dir, "var_vae_ch160v4096z32_keys.json"), "w") as fh:
      json.dump({k: list(v.shape) for k, v in sd.items()}, fh, indent=1)
    print("full size: parameters", sum(p.numel() for p in full.parameters()))


if __name__ == "__main__":
  main()
