#!/usr/bin/env python
"""Training-step goldens from taming-transformers' own trainer code (issue 24, item 1).

Usage: /tmp/torchenv/bin/python scripts/parity/gen_train_taming.py /path/to/taming-transformers \
    [--out tests/goldens/train_taming] [--tokenizer tests/goldens/taming/reduced.ckpt]

The model and its training step are taming's own: ``VQModel`` (taming/models/vqgan.py,
its ``training_step``, ``configure_optimizers`` and ``get_last_layer``) built by
main.py's ``instantiate_from_config`` from configs/imagenet_vqgan.yaml, with its
``VQLPIPSWithDiscriminator`` (taming/modules/losses/vqperceptual.py), LPIPS and
NLayerDiscriminator. The learning rate is main.py:534-542's
``accumulate_grad_batches * ngpu * batch_size * base_learning_rate`` (1 x 1 x 2 x 4.5e-6).
The only code here stands in for pytorch-lightning's loop (1.0.x,
trainer/training_loop.py ``run_training_batch``), which is not installed: per
batch it sets ``model.global_step``, then for each optimizer in turn sets
``requires_grad`` on that optimizer's parameters only, calls ``training_step``
(so the generator's forward runs again for the discriminator, after the
generator's update), backward, ``step``, ``zero_grad``; ``global_step`` then
counts the batch. No clipping (``gradient_clip_val`` 0), float32. Stubs for what
is not available offline:

* pytorch_lightning (train_common.install_lightning_stubs): ``LightningModule``
  as a plain ``nn.Module`` whose ``log_dict`` keeps the values the loss logs.
* torch._six (gone from torch 2; taming/data/utils.py imports ``string_classes``,
  main.py imports that file).
* torchvision's VGG16 and lpips's heads, as in gen_train_llamagen.py: random
  weights from frozen ``RandomState`` streams (``taming.util.get_ckpt_path``
  returns a file of them).

The tokenizer starts from ``tests/goldens/taming/reduced.ckpt`` (the converter
golden: ch 32, ch_mult (2, 1), one res block, attention at 16, z 48, 256 x 16
codes; the config's other ddconfig values); the discriminator is the loss's own
NLayerDiscriminator at ``disc_ndf`` 8 (3 layers, BatchNorm), randomised and saved
as ``d_init.pt``. Deviations from the yaml: 32 px, batch 2, ``disc_start`` 1 (step
1 without, steps 2 and 3 with the GAN: ``adopt_weight`` compares Lightning's
global_step, 0 at the first batch), ``disc_factor`` 0.5 (the default 1.0 would
leave its two uses untested). LPIPS runs in eval mode: the loss builds it so
(vqperceptual.py:42), but Lightning's ``model.train()`` at the start of fitting
turns the dropout (p 0.5) of its heads (lpips.py:13, 71) back on, random masks
no other implementation can reproduce; vqtok's LPIPS has none.

taming keeps no EMA. To check vqtok's EMA all the same, this script applies one
to the reference's weights after each generator step (not taming's code) and
records it like the weights. Its decay is 0.5: at main.py's lr (9e-6 here) a
decay of 0.9 would move the EMA by ~1e-6 a step, within 6% of float32's
resolution of weights of ~1.

Per step the golden holds every loss term the loss logs (and the L1 term and
the quantizer's mean squared distance, recomputed from the same weights), the
adaptive weight, the discriminator's logits and loss, the gradients (per
tensor a 16-number Gaussian sketch in the published layout, whole tensors of at
most 1024 numbers after the last step), the changes of the weights, the EMA and
the discriminator's weights, and the distance gaps of the codes chosen by both
forward passes (the script fails on a near-tie).
"""

import argparse
import copy
import importlib
import os
import sys
import types
from collections import OrderedDict

import numpy as np
import torch
from train_common import (
  install_lightning_stubs,
  install_stubs,
  lin_weights,
  randomise_discriminator,
  record,
  vgg_weights,
  save_golden,
)


def parse(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="taming-transformers checkout root")
  p.add_argument("--out", default="tests/goldens/train_taming")
  p.add_argument("--tokenizer", default="tests/goldens/taming/reduced.ckpt")
  p.add_argument("--photos", default="tests/goldens/taming/golden.npz", help="its 'x': 3 preprocessed 32 px photos")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--disc-start", type=int, default=1)
  p.add_argument("--disc-factor", type=float, default=0.5)
  p.add_argument("--disc-ndf", type=int, default=8)
  p.add_argument("--ema-decay", type=float, default=0.5)
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def code_gaps(model, x):
  """Relative gap between the two nearest codes, measured as quantize.py:280-284 does (in float64)."""
  with torch.no_grad():
    h = model.quant_conv(model.encoder(x)).double()
    z = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
    e = model.quantize.embedding.weight.double()
    d = (z**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * z @ e.t()
    top2 = torch.topk(d, 2, dim=1, largest=False)
    gap = (top2.values[:, 1] - top2.values[:, 0]) / top2.values[:, 1].clamp_min(1e-30)
    return gap.numpy(), top2.indices[:, 0].numpy()


def terms(model, x):
  """The L1 term and the quantizer's mean squared distance, which the loss only logs summed."""
  with torch.no_grad():
    h = model.quant_conv(model.encoder(x))
    quant, _, _ = model.quantize(h)
    xrec = model.decode(quant)
    return (x - xrec).abs().mean().item(), ((quant - h) ** 2).mean().item()


def toggle(model, optimizer):
  """pytorch-lightning's run_training_batch: only the current optimizer's parameters require grad."""
  for p in model.parameters():
    p.requires_grad = False
  for group in optimizer.param_groups:
    for p in group["params"]:
      p.requires_grad = True


def build(args):
  """taming's VQModel, its loss and optimizers as main.py and Lightning's fit set them up (``d_init.pt`` in args.out).

  Returns ``(model, (opt_ae, opt_disc), lightning_module, config, (vgg_sd, lin_sd))``;
  bench/reference_step.py times the same trainer.
  """
  vgg_sd, lin_sd = vgg_weights(args.seed), lin_weights(args.seed)
  install_stubs(vgg_sd)
  lightning_module = install_lightning_stubs()
  sys.modules["torch._six"] = types.SimpleNamespace(string_classes=(str, bytes))
  sys.path.insert(0, os.path.abspath(args.ref))
  from omegaconf import OmegaConf  # noqa: PLC0415

  taming_main = importlib.import_module("main")  # the checkout's main.py
  from taming.modules.losses import lpips  # noqa: PLC0415

  os.makedirs(args.out, exist_ok=True)
  lin_path = os.path.join(args.out, "_lin_weights.pth")  # temporary, removed below
  torch.save({k: torch.from_numpy(v) for k, v in lin_sd.items()}, lin_path)
  lpips.get_ckpt_path = lambda name, root, check=False: lin_path

  ckpt = torch.load(args.tokenizer, map_location="cpu", weights_only=False)
  config = OmegaConf.load(os.path.join(args.ref, "configs", "imagenet_vqgan.yaml"))
  hp = ckpt["hyper_parameters"]
  config.model.params.update(embed_dim=hp["embed_dim"], n_embed=hp["n_embed"], ddconfig=dict(hp["ddconfig"]))
  config.model.params.lossconfig.params.update(
    disc_start=args.disc_start, disc_factor=args.disc_factor, disc_ndf=args.disc_ndf
  )
  torch.manual_seed(args.seed)
  model = taming_main.instantiate_from_config(config.model)
  os.remove(lin_path)
  for l, w in enumerate(lin_sd.values()):  # LPIPS loads its heads with strict=False (lpips.py:29): check
    assert torch.equal(getattr(model.loss.perceptual_loss, f"lin{l}").model[1].weight, torch.from_numpy(w))
  g_sd = OrderedDict((k, v) for k, v in ckpt["state_dict"].items() if not k.startswith("loss."))
  missing, unexpected = model.load_state_dict(g_sd, strict=False)
  assert not unexpected and all(k.startswith("loss.") for k in missing), (missing, unexpected)
  disc = model.loss.discriminator
  randomise_discriminator(disc, args.seed + 7)
  d_sd = OrderedDict((k, v.clone()) for k, v in disc.state_dict().items())
  torch.save({"discriminator": d_sd}, os.path.join(args.out, "d_init.pt"))

  # main.py:534-542, with one GPU and no accumulation.
  model.learning_rate = 1 * 1 * args.batch * config.model.base_learning_rate
  (opt_ae, opt_disc), _ = model.configure_optimizers()
  model.train()  # Lightning's fit
  model.loss.perceptual_loss.eval()  # deviation: no LPIPS dropout (module docstring)
  return model, (opt_ae, opt_disc), lightning_module, config, (vgg_sd, lin_sd)


def train_batch(model, optimizers, batch, global_step):
  """One batch of main()'s Lightning loop without the recording: both optimizers' steps (for timing)."""
  model.global_step = global_step
  for opt_idx, opt in enumerate(optimizers):
    toggle(model, opt)
    model.training_step(batch, global_step, opt_idx).backward()
    opt.step()
    opt.zero_grad()


def main():
  args = parse()
  model, (opt_ae, opt_disc), lightning_module, config, (vgg_sd, lin_sd) = build(args)
  disc = model.loss.discriminator
  g_named = OrderedDict((k, p) for k, p in model.named_parameters() if not k.startswith("loss."))
  assert {id(p) for p in g_named.values()} == {id(p) for p in opt_ae.param_groups[0]["params"]}
  g0 = OrderedDict((k, p.detach().clone()) for k, p in g_named.items())
  d0 = OrderedDict((k, p.detach().clone()) for k, p in disc.named_parameters())
  ema = copy.deepcopy(g0)  # not taming's: see the module docstring
  photos = torch.from_numpy(np.load(args.photos)["x"])
  gold = OrderedDict()
  gold["lpips_checksum"] = np.float64(sum(np.sum(v, dtype=np.float64) for v in [*vgg_sd.values(), *lin_sd.values()]))
  gold["ema_decay"] = np.float64(args.ema_decay)
  gold["disc_start"] = np.int64(args.disc_start)
  gold["disc_factor"] = np.float64(args.disc_factor)
  gold["disc_weight"] = np.float64(config.model.params.lossconfig.params.disc_weight)
  gold["lr"] = np.float64(model.learning_rate)
  global_step = 0
  for s in range(args.steps):
    idx = [(s + i) % 3 for i in range(args.batch)]
    gold[f"step{s}/photos"] = np.array(idx)
    batch = {"image": photos[idx].permute(0, 2, 3, 1).clone()}  # the data's HWC; get_input makes it CHW
    x = model.get_input(batch, "image")
    model.global_step = global_step  # training_loop.py: model.global_step = self.global_step
    last = s == args.steps - 1
    for opt_idx, opt in enumerate((opt_ae, opt_disc)):
      which = "gd"[opt_idx]
      gaps, ids = code_gaps(model, x)  # the forward of this training_step call
      if gaps.min() < 1e-5:
        raise SystemExit(f"step {s}: a near-tie between codes (relative gap {gaps.min():.2e}); pick other inputs")
      gold[f"step{s}/{which}_min_code_gap"] = np.float64(gaps.min())
      gold[f"step{s}/{which}_ids"] = ids.astype(np.int32)
      if opt_idx == 0:
        gold[f"step{s}/l1"], gold[f"step{s}/vq_mse"] = map(np.float64, terms(model, x))
      toggle(model, opt)
      lightning_module.logged = {}
      loss = model.training_step(batch, s, opt_idx)
      for k, v in lightning_module.logged.items():
        gold[f"step{s}/{k.split('/')[-1]}"] = np.float64(v.item() if torch.is_tensor(v) else v)
      loss.backward()
      params = g_named if opt_idx == 0 else OrderedDict(disc.named_parameters())
      record(gold, f"step{s}/{which}_grad", OrderedDict((k, p.grad) for k, p in params.items()), whole=last)
      opt.step()
      opt.zero_grad()
      if opt_idx == 0:
        with torch.no_grad():
          for k, p in g_named.items():
            ema[k].mul_(args.ema_decay).add_(p.detach(), alpha=1 - args.ema_decay)
    global_step += 1  # increment_accumulated_grad_global_step

    record(gold, f"step{s}/g_delta", OrderedDict((k, p.detach() - g0[k]) for k, p in g_named.items()), whole=last)
    record(gold, f"step{s}/ema_delta", OrderedDict((k, e - g0[k]) for k, e in ema.items()), whole=last)
    named_d = disc.named_parameters()
    record(gold, f"step{s}/d_delta", OrderedDict((k, p.detach() - d0[k]) for k, p in named_d), whole=last)
    print(
      f"step {s + 1}: aeloss {gold[f'step{s}/aeloss']:.6f} d_weight {gold[f'step{s}/d_weight']:.4f}"
      f" discloss {gold[f'step{s}/discloss']:.6f} |g grad| {gold[f'step{s}/g_grad/global_norm']:.4f}"
      f" |d grad| {gold[f'step{s}/d_grad/global_norm']:.4f}"
      f" min code gap {min(gold[f'step{s}/g_min_code_gap'], gold[f'step{s}/d_min_code_gap']):.2e}"
    )
  gold["g_names"] = np.array(list(g0))
  gold["d_names"] = np.array(list(d0))
  save_golden(args.out, gold)


if __name__ == "__main__":
  main()
