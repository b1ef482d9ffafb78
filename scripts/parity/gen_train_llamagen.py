#!/usr/bin/env python
"""Training-step goldens from LlamaGen's own trainer code (issue 24, item 1).

Usage: /tmp/torchenv/bin/python scripts/parity/gen_train_llamagen.py /path/to/LlamaGen \
    [--out tests/goldens/train_llamagen] [--tokenizer tests/goldens/llamagen/reduced.pt]

The model, loss, discriminator, LPIPS and EMA code are LlamaGen's own, imported
from the checkout (tokenizer/tokenizer_image/vq_model.py, vq_loss.py,
discriminator_patchgan.py, lpips.py, utils/ema.py). The only code here is the
orchestration of tokenizer/tokenizer_image/vq_train.py's step, line by line
(cited below), plus stubs for what is not available offline:

* torchvision: LPIPS takes ``models.vgg16(pretrained=True).features``
  (lpips.py:121); the stub builds VGG16's ``features`` and loads random
  weights (``vgg_weights`` below) instead of downloading ImageNet ones.
* the LPIPS heads: ``get_ckpt_path`` (lpips.py:43) would download vgg.pth; it
  returns a file of random heads (``lin_weights``) in the lpips layout instead.
* requests, tqdm: imported by lpips.py for the download only.

The tokenizer starts from ``tests/goldens/llamagen/reduced.pt`` (the converter
golden: ch 32, ch_mult (2, 1), one res block, z 48, 128 x 8 l2-normalised
codes); the discriminator is the reference's NLayerDiscriminator at ndf 8 (3
layers, BatchNorm), randomised and saved as ``d_init.pt``. The VGG and head
weights come from ``np.random.RandomState`` (a frozen stream), so
tests/test_train_parity.py rebuilds them bit for bit, writes them in the
torchvision / lpips file layouts and converts them with
scripts/convert_lpips.py; ``lpips_checksum`` guards that they agree.

Hyperparameters are vq_train.py's defaults (lines 283-314) except: 32 px
images, batch 2, ``disc_start`` 2 (so step 1 runs without, steps 2 and 3 with
the discriminator, and the first discriminator update comes after one
zero-loss step of its Adam), and an EMA decay of 0.9 (vq_train.py:204 uses
update_ema's default 0.9999, with which three steps move the EMA by ~1e-8, below
float32's resolution of the weights: nothing could be compared). LPIPS runs in
eval mode: VQLoss puts it there (vq_loss.py:94), but vq_train.py:174
(``vq_loss.train()``) switches its heads' dropout (p 0.5, lpips.py:105) back on,
random masks no other implementation can reproduce; vqtok's LPIPS has none.

Per step the golden holds every loss term, the discriminator's logits and
loss, the gradients before clipping (global norms; per tensor a 16-number
Gaussian sketch in the published layout, and the whole tensor for those of at
most 1024 numbers), and likewise the change of the weights and of the EMA
weights since the start, and the distance gaps of the codes chosen (the
script fails on a near-tie, which would make ids platform-dependent).
"""

import argparse
import copy
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
from train_common import install_stubs, lin_weights, randomise_discriminator, record, vgg_weights, save_golden


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="LlamaGen checkout root")
  p.add_argument("--out", default="tests/goldens/train_llamagen")
  p.add_argument("--tokenizer", default="tests/goldens/llamagen/reduced.pt")
  p.add_argument("--photos", default="tests/goldens/llamagen/golden.npz", help="its 'x': 3 preprocessed 32 px photos")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--disc-start", type=int, default=2)
  p.add_argument("--disc-dim", type=int, default=8)
  p.add_argument("--ema-decay", type=float, default=0.9)
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args()


# ----------------------------------------------------------------------------- models
def build_tokenizer(ref, path):
  sd = torch.load(path, map_location="cpu")["model"]
  ch = sd["encoder.conv_in.weight"].shape[0]
  mult = [sd[f"encoder.conv_blocks.{i}.res.0.conv1.weight"].shape[0] // ch for i in range(2)]
  z = sd["encoder.conv_out.weight"].shape[0]
  codes, dim = sd["quantize.embedding.weight"].shape
  # vq_train.py:78-84 with the defaults of lines 283-288, 298.
  model = ref.VQModel(
    ref.ModelArgs(
      codebook_size=codes,
      codebook_embed_dim=dim,
      commit_loss_beta=0.25,
      entropy_loss_ratio=0.0,
      dropout_p=0.0,
      encoder_ch_mult=mult,
      decoder_ch_mult=mult,
      z_channels=z,
    )
  )
  # VQModel hard-wires ch 128 and two res blocks (vq_model.py:32-33): swap in
  # the reference's Encoder/Decoder at the reduced width, as gen_llamagen.py does.
  model.encoder = ref.Encoder(ch=ch, ch_mult=mult, num_res_blocks=1, z_channels=z, dropout=0.0)
  model.decoder = ref.Decoder(z_channels=z, ch=ch, ch_mult=mult, num_res_blocks=1, dropout=0.0)
  model.load_state_dict(sd, strict=True)
  return model


def code_gaps(model, imgs):
  """Relative gap between the two nearest (l2-normalised) codes, as vq_model.py:221-230 measures."""
  with torch.no_grad():
    h = model.quant_conv(model.encoder(imgs)).double()
    z = torch.nn.functional.normalize(h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]), dim=-1)
    e = torch.nn.functional.normalize(model.quantize.embedding.weight.double(), dim=-1)
    d = (z**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * z @ e.t()
    top2 = torch.topk(d, 2, dim=1, largest=False)
    return ((top2.values[:, 1] - top2.values[:, 0]) / 2.0).numpy(), top2.indices[:, 0].numpy()


def main():
  args = parse()
  vgg_sd, lin_sd = vgg_weights(args.seed), lin_weights(args.seed)
  install_stubs(vgg_sd)
  sys.path.insert(0, os.path.abspath(args.ref))
  from tokenizer.tokenizer_image import discriminator_patchgan, lpips, vq_loss, vq_model  # noqa: PLC0415
  from utils.ema import requires_grad, update_ema  # noqa: PLC0415

  os.makedirs(args.out, exist_ok=True)
  lin_path = os.path.join(args.out, "_lin_weights.pth")  # temporary, removed below
  torch.save({k: torch.from_numpy(v) for k, v in lin_sd.items()}, lin_path)
  lpips.get_ckpt_path = lambda name, root, check=False: lin_path
  torch.manual_seed(args.seed)

  vq = build_tokenizer(vq_model, args.tokenizer)
  ema = copy.deepcopy(vq)  # vq_train.py:86-88
  requires_grad(ema, False)
  for m in (vq, ema):
    # vq_model.py:212 registers this buffer as an nn.Parameter; vq_train.py:87, 90
    # move the models to the GPU, which makes it a non-leaf copy that the in-place
    # update of vq_model.py:243 may write. On the CPU .to() keeps the leaf: copy it.
    m.quantize._buffers["codebook_used"] = m.quantize.codebook_used.clone()
  # vq_train.py:92-103 with the argparse defaults (lines 289-296) but disc_start.
  loss_mod = vq_loss.VQLoss(
    disc_start=args.disc_start,
    disc_weight=0.5,
    disc_type="patchgan",
    disc_loss="hinge",
    gen_adv_loss="hinge",
    image_size=32,
    perceptual_weight=1.0,
    reconstruction_weight=1.0,
    reconstruction_loss="l2",
    codebook_weight=1.0,
  )
  os.remove(lin_path)
  # VQLoss builds ndf 64 (vq_loss.py:60-64, disc_dim is not a vq_train flag): the
  # reference's own class at a reduced width instead.
  loss_mod.discriminator = discriminator_patchgan.NLayerDiscriminator(input_nc=3, ndf=args.disc_dim, n_layers=3)
  randomise_discriminator(loss_mod.discriminator, args.seed + 7)
  d_sd = OrderedDict((k, v.clone()) for k, v in loss_mod.discriminator.state_dict().items())
  torch.save({"discriminator": d_sd}, os.path.join(args.out, "d_init.pt"))

  optimizer = torch.optim.Adam(vq.parameters(), lr=1e-4, betas=(0.9, 0.95))  # vq_train.py:110, lines 303-306
  optimizer_disc = torch.optim.Adam(loss_mod.discriminator.parameters(), lr=1e-4, betas=(0.9, 0.95))  # :111
  update_ema(ema, vq, decay=0)  # vq_train.py:163
  vq.train()  # vq_train.py:170
  ema.eval()  # :172
  loss_mod.train()  # :174
  loss_mod.perceptual_loss.eval()  # deviation: no LPIPS dropout (module docstring)
  max_grad_norm = 1.0  # vq_train.py:307

  photos = torch.from_numpy(np.load(args.photos)["x"])
  g0 = OrderedDict((k, p.detach().clone()) for k, p in vq.named_parameters())
  d0 = OrderedDict((k, p.detach().clone()) for k, p in loss_mod.discriminator.named_parameters())
  gold = OrderedDict()
  gold["lpips_checksum"] = np.float64(sum(np.sum(v, dtype=np.float64) for v in [*vgg_sd.values(), *lin_sd.values()]))
  gold["ema_decay"] = np.float64(args.ema_decay)
  gold["disc_start"] = np.int64(args.disc_start)
  train_steps = 0
  for s in range(args.steps):
    imgs = photos[[s % 3, (s + 1) % 3]].clone()
    gold[f"step{s}/photos"] = np.array([s % 3, (s + 1) % 3])
    gaps, ids = code_gaps(vq, imgs)
    if gaps.min() < 1e-5:
      raise SystemExit(f"step {s}: a near-tie between codes (relative gap {gaps.min():.2e}); pick other inputs")
    gold[f"step{s}/min_code_gap"] = np.float64(gaps.min())
    gold[f"step{s}/ids"] = ids.astype(np.int32)
    global_step = train_steps + 1  # vq_train.py:194, 209

    # generator training, vq_train.py:191-204 (mixed precision 'none': autocast and the scalers are no-ops)
    optimizer.zero_grad()
    recons_imgs, codebook_loss = vq(imgs)
    loss_gen = loss_mod(codebook_loss, imgs, recons_imgs, optimizer_idx=0, global_step=global_step,
                        last_layer=vq.decoder.last_layer, logger=None, log_every=10**9)  # fmt: skip
    with torch.no_grad():  # the terms VQLoss sums (vq_loss.py:122-142), for the record
      gold[f"step{s}/rec_loss"] = np.float64(loss_mod.rec_loss(imgs, recons_imgs).item())
      gold[f"step{s}/perceptual"] = np.float64(loss_mod.perceptual_loss(imgs, recons_imgs).mean().item())
      gold[f"step{s}/g_gan"] = np.float64(loss_mod.gen_adv_loss(loss_mod.discriminator(recons_imgs)).item())
      gold[f"step{s}/gan_weight"] = np.float64(vq_loss.adopt_weight(0.5, global_step, threshold=args.disc_start))
      gold[f"step{s}/codebook"] = np.float64(codebook_loss[0].item())
      gold[f"step{s}/commitment"] = np.float64(codebook_loss[1].item() / 0.25)
      gold[f"step{s}/entropy"] = np.float64(float(codebook_loss[2]))
    gold[f"step{s}/loss_gen"] = np.float64(loss_gen.item())
    loss_gen.backward()
    last = s == args.steps - 1
    record(gold, f"step{s}/g_grad", OrderedDict((k, p.grad) for k, p in vq.named_parameters()), whole=last)
    torch.nn.utils.clip_grad_norm_(vq.parameters(), max_grad_norm)  # :198-200
    optimizer.step()  # :201
    update_ema(ema, vq, decay=args.ema_decay)  # :203-204

    # discriminator training, vq_train.py:207-216
    optimizer_disc.zero_grad()
    loss_disc = loss_mod(codebook_loss, imgs, recons_imgs, optimizer_idx=1, global_step=global_step,
                         logger=None, log_every=10**9)  # fmt: skip
    with torch.no_grad():  # vq_loss.py:156-157 again: the logits it compared
      gold[f"step{s}/logits_real"] = np.float64(loss_mod.discriminator(imgs).mean().item())
      gold[f"step{s}/logits_fake"] = np.float64(loss_mod.discriminator(recons_imgs).mean().item())
    gold[f"step{s}/d_loss"] = np.float64(loss_disc.item())
    loss_disc.backward()
    record(
      gold,
      f"step{s}/d_grad",
      OrderedDict((k, p.grad) for k, p in loss_mod.discriminator.named_parameters()),
      whole=last,
    )
    torch.nn.utils.clip_grad_norm_(loss_mod.discriminator.parameters(), max_grad_norm)  # :212-214
    optimizer_disc.step()  # :215
    train_steps += 1  # :222  # noqa: SIM113 (vq_train.py's own counter)

    named = vq.named_parameters()
    record(gold, f"step{s}/g_delta", OrderedDict((k, p.detach() - g0[k]) for k, p in named), whole=last)
    record(
      gold, f"step{s}/ema_delta", OrderedDict((k, p.detach() - g0[k]) for k, p in ema.named_parameters()), whole=last
    )
    named_d = loss_mod.discriminator.named_parameters()
    record(gold, f"step{s}/d_delta", OrderedDict((k, p.detach() - d0[k]) for k, p in named_d), whole=last)
    print(
      f"step {s + 1}: loss_gen {loss_gen.item():.6f} d_loss {loss_disc.item():.6f}"
      f" |g grad| {gold[f'step{s}/g_grad/global_norm']:.4f} |d grad| {gold[f'step{s}/d_grad/global_norm']:.4f}"
      f" min code gap {gaps.min():.2e}"
    )
  gold["g_names"] = np.array(list(g0))
  gold["d_names"] = np.array(list(d0))
  gold["g_param_norm"] = np.array([p.detach().double().norm().item() for p in vq.parameters()])
  save_golden(args.out, gold)


if __name__ == "__main__":
  main()
