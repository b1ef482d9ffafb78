#!/usr/bin/env python
"""LlamaGen's own training step, for bench/train_vs_reference.py (runs in a torch environment).

Usage (called by bench/train_vs_reference.py; not a vqtok script):
  /tmp/torchenv/bin/python bench/llamagen_reference.py init REF --out init.pt --ch 32 --ch_mult 1,2,2 ...
  /tmp/torchenv/bin/python bench/llamagen_reference.py time REF --init init.pt --batch b.npy --steps 5
  /tmp/torchenv/bin/python bench/llamagen_reference.py run REF --init init.pt --batches x.npy \
      --eval e.npy --eval_every 50 --out recon.npz

REF is a checkout of FoundationVision/LlamaGen (ce98ec4). Its modules are
imported from there, as scripts/parity/gen_train_llamagen.py does: VQModel with
its Encoder/Decoder at a reduced width, VQLoss, NLayerDiscriminator, LPIPS and
utils/ema.py. ``step`` below is tokenizer/tokenizer_image/vq_train.py's loop
body (lines 188-216) in float32 on the CPU (mixed precision 'none': autocast and
the grad scalers are no-ops there). Offline stubs (scripts/parity/train_common.py):
torchvision's VGG16 gets random weights and LPIPS's heads a random file, which
is what the timing needs; ``run`` trains without LPIPS (weight 0) and GAN, whose
weights are not available offline either.

``init`` writes a random-initialised tokenizer (torch's own initialisation,
seeded) as ``{"model": state_dict}``, the layout vqtok's llamagen converter
reads. ``time`` prints one JSON line: seconds of each full step (generator and
discriminator updates, GAN and LPIPS on). ``run`` trains on the given batches
and writes the held-out reconstructions every ``eval_every`` steps.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "parity"))
from train_common import install_stubs, lin_weights, vgg_weights


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("mode", choices=("init", "time", "run"))
  p.add_argument("ref", help="LlamaGen checkout root")
  p.add_argument("--out")
  p.add_argument("--init")
  p.add_argument("--ch", type=int, default=32)
  p.add_argument("--ch_mult", default="1,2,2")
  p.add_argument("--num_res_blocks", type=int, default=1)
  p.add_argument("--z_channels", type=int, default=32)
  p.add_argument("--codebook_size", type=int, default=1024)
  p.add_argument("--code_dim", type=int, default=8)
  p.add_argument("--image_size", type=int, default=64)
  p.add_argument("--disc_dim", type=int, default=64)
  p.add_argument("--lr", type=float, default=1e-4)
  p.add_argument("--batch")
  p.add_argument("--batches")
  p.add_argument("--eval")
  p.add_argument("--eval_every", type=int, default=50)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args()


def import_reference(ref):
  install_stubs(vgg_weights(0))
  sys.path.insert(0, os.path.abspath(ref))
  from tokenizer.tokenizer_image import discriminator_patchgan, lpips, vq_loss, vq_model  # noqa: PLC0415

  heads = os.path.join(tempfile.mkdtemp(), "vgg.pth")
  torch.save({k: torch.from_numpy(v) for k, v in lin_weights(0).items()}, heads)
  lpips.get_ckpt_path = lambda name, root, check=False: heads
  return vq_model, vq_loss, discriminator_patchgan


def build(vq_model, args):
  mult = [int(m) for m in args.ch_mult.split(",")]
  model = vq_model.VQModel(
    vq_model.ModelArgs(
      codebook_size=args.codebook_size,
      codebook_embed_dim=args.code_dim,
      commit_loss_beta=0.25,
      entropy_loss_ratio=0.0,
      dropout_p=0.0,
      encoder_ch_mult=mult,
      decoder_ch_mult=mult,
      z_channels=args.z_channels,
    )
  )
  # VQModel hard-wires ch 128 and two res blocks (vq_model.py:32-33): its own Encoder/Decoder at the reduced width.
  kw = {"ch": args.ch, "ch_mult": mult, "num_res_blocks": args.num_res_blocks, "z_channels": args.z_channels}
  model.encoder = vq_model.Encoder(dropout=0.0, **kw)
  model.decoder = vq_model.Decoder(dropout=0.0, **kw)
  # vq_model.py:212 makes this usage buffer an nn.Parameter; on the GPU .to() makes it a
  # non-leaf copy that the in-place update of line 243 may write, on the CPU it stays a leaf.
  model.quantize._buffers["codebook_used"] = model.quantize.codebook_used.clone()
  return model


def trainer(refs, args, *, gan: bool, perceptual: float):
  vq_model, vq_loss, discriminator_patchgan = refs
  model = build(vq_model, args)
  sd = torch.load(args.init, map_location="cpu")["model"]
  model.load_state_dict(sd, strict=True)
  loss = vq_loss.VQLoss(  # vq_train.py:92-103, its argparse defaults (lines 289-296)
    disc_start=0 if gan else 10**9,
    disc_weight=0.5,
    disc_type="patchgan",
    disc_loss="hinge",
    gen_adv_loss="hinge",
    image_size=args.image_size,
    perceptual_weight=perceptual,
    reconstruction_weight=1.0,
    reconstruction_loss="l2",
    codebook_weight=1.0,
  )
  loss.discriminator = discriminator_patchgan.NLayerDiscriminator(input_nc=3, ndf=args.disc_dim, n_layers=3)
  opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.95))  # vq_train.py:110
  opt_d = torch.optim.Adam(loss.discriminator.parameters(), lr=args.lr, betas=(0.9, 0.95))  # :111
  model.train()
  loss.train()
  loss.perceptual_loss.eval()  # no LPIPS dropout (as in the step-parity golden)
  return model, loss, opt, opt_d


def step(model, loss, opt, opt_d, imgs, global_step):
  """vq_train.py:188-216 with max_grad_norm 1.0 (line 307); EMA off (--ema is off by default)."""
  opt.zero_grad()
  recons, codebook_loss = model(imgs)
  loss_gen = loss(codebook_loss, imgs, recons, optimizer_idx=0, global_step=global_step,
                  last_layer=model.decoder.last_layer, logger=None, log_every=10**9)  # fmt: skip
  loss_gen.backward()
  torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
  opt.step()
  opt_d.zero_grad()
  loss_disc = loss(codebook_loss, imgs, recons, optimizer_idx=1, global_step=global_step,
                   logger=None, log_every=10**9)  # fmt: skip
  loss_disc.backward()
  torch.nn.utils.clip_grad_norm_(loss.discriminator.parameters(), 1.0)
  opt_d.step()
  return float(loss_gen.item())


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def main():
  args = parse()
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  refs = import_reference(args.ref)
  if args.mode == "init":
    model = build(refs[0], args)
    sd = {k: v for k, v in model.state_dict().items()}
    torch.save({"model": sd}, args.out)
    print(json.dumps({"params": sum(p.numel() for p in model.parameters())}))
    return
  if args.mode == "time":
    model, loss, opt, opt_d = trainer(refs, args, gan=True, perceptual=1.0)
    imgs = nchw(np.load(args.batch))
    times = []
    for s in range(args.steps + 1):  # the first step warms up (allocations, lazy init)
      t = time.perf_counter()
      step(model, loss, opt, opt_d, imgs, s + 1)
      times.append(time.perf_counter() - t)
    print(json.dumps({"seconds": times[1:]}))
    return
  model, loss, opt, opt_d = trainer(refs, args, gan=False, perceptual=0.0)
  batches = np.load(args.batches, mmap_mode="r")
  held_out = nchw(np.load(args.eval))
  recons, losses = {}, []
  for s in range(len(batches) + 1):
    if s % args.eval_every == 0 or s == len(batches):
      model.eval()
      with torch.no_grad():
        recons[f"step{s}"] = model(held_out)[0].numpy().transpose(0, 2, 3, 1)
      model.train()
    if s < len(batches):
      losses.append(step(model, loss, opt, opt_d, nchw(batches[s]), s + 1))
  np.savez(args.out, losses=np.array(losses), **recons)


if __name__ == "__main__":
  main()
