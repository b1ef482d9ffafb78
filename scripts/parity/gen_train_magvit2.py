#!/usr/bin/env python
"""Training-step goldens from SEED-Voken's own Open-MAGVIT2 trainer code (issue 24, item 1).

Usage: /tmp/torchenv/bin/python scripts/parity/gen_train_magvit2.py /path/to/SEED-Voken \
    [--out tests/goldens/train_magvit2] [--tokenizer tests/goldens/open-magvit2/reduced.ckpt]

Everything that computes is SEED-Voken's own, imported from the checkout:
``src/Open_MAGVIT2/models/lfqgan.py`` ``VQModel`` (its ``__init__``,
``configure_optimizers``, ``training_step`` and ``on_train_batch_end`` run
as they are), the LFQ quantizer with its entropy and commitment terms
(modules/vqvae/lookup_free_quantize.py), the loss module
(modules/losses/vqperceptual.py: L1 + LPIPS, the non-saturating generator loss
at the fixed ``gen_loss_weight``, hinge discriminator loss, LeCam with its
EMA), the PatchGAN (modules/discriminator/model.py) and LitEma
(modules/ema.py). What is stubbed is only what is not available offline:

* ``lightning`` (2.2.0, requirements.txt): the manual-optimisation machinery
  training_step uses, with Lightning's semantics, cited from its source:
  ``self.global_step`` is the count of completed optimizer steps
  (loops/training_epoch_loop.py:98-102); each batch the manual loop makes every
  ``LightningOptimizer.step`` count (loops/optimization/manual.py:98-102,
  130-136; core/optimizer.py:144-154), and training_step itself swaps the
  discriminator optimizer's counting hooks for the profiler's (lfqgan.py:180-181,
  the "global step bug" of Lightning issue 17958), so only the generator's step
  counts. Its ``global_step`` is therefore read *after* the generator's step by
  the discriminator's loss (lfqgan.py:195-196): the discriminator's
  ``disc_start`` boundary comes one batch before the generator's.
  ``manual_backward`` is ``loss.backward()`` at 32-bit precision; ``log_dict``
  records. Lightning 2.2.0 calls no ``model.train()`` when fitting and its
  validation restores each submodule's mode (loops/evaluation_loop.py:297,
  307), so LPIPS stays in the eval mode VQLPIPSWithDiscriminator puts it in
  (vqperceptual.py:99): no dropout, as here.
* ``main.instantiate_from_config`` (main.py:16-27: import the ``target``, call it
  with ``params``), since main.py imports Lightning's CLI.
* torchvision's VGG16 and the LPIPS heads: random weights from
  scripts/parity/train_common.py (``get_ckpt_path`` returns their file).

The tokenizer starts from the model weights (not the EMA copy) of the
converter golden ``tests/goldens/open-magvit2/reduced.ckpt`` (ch 32, ch_mult
(1, 2), one res block, 6 LFQ bits: 64 codes, 16x16 tokens at 32 px); the loss
module is the published yaml's (configs/Open-MAGVIT2/gpu/imagenet_lfqgan_256_L.yaml
lines 40-52: disc_weight 0.8 (unused), gen_loss_weight 0.1, lecam_loss_weight
0.05, codebook_weight 0.1, commit_weight 0.25, codebook_enlarge_ratio 0) with
``disc_ndf`` 8 (its own argument) and ``disc_start`` 1 instead of 0, so the
generator's GAN term starts at the second batch while the discriminator trains
from the first; the discriminator's weights are randomised and saved as
``d_init.pt``. The model's arguments are the yaml's (lines 54-62: entropy
weights 1, lr 1e-4, scheduler "None", use_ema), and the optimizers are
``configure_optimizers``' own (Adam (0.5, 0.9) for both). Batches of 2 photos at
32 px, float32 (the yaml trains 16-mixed). LitEma's decay is 0.9 instead of
0.999: three steps at 0.999 move the EMA by ~1e-7, too close to float32's
resolution of the weights to compare.

Per step the golden holds what the loss module logs (every loss term, the
entropy components, the GAN weight and disc factors, LeCam's loss and its EMA
after the update), the generator's and discriminator's gradients at their
optimizer steps, the changes of the weights, the EMA weights and the
discriminator since the start (sketches as in train_common.py, whole tensors
of at most 1024 numbers after the last step), the token ids and the smallest
latent magnitude (the script fails on a near-zero channel, whose sign would be
platform-dependent).
"""

import argparse
import importlib
import os
import sys
import types
from collections import OrderedDict

import numpy as np
import torch
from train_common import install_stubs, lin_weights, randomise_discriminator, record, stub, vgg_weights, save_golden

# configs/Open-MAGVIT2/gpu/imagenet_lfqgan_256_L.yaml lines 40-62 (the reduced values are set in build).
LOSS_PARAMS = dict(
  disc_conditional=False,
  disc_in_channels=3,
  disc_weight=0.8,
  gen_loss_weight=0.1,
  lecam_loss_weight=0.05,
  codebook_weight=0.1,
  commit_weight=0.25,
  codebook_enlarge_ratio=0,
  codebook_enlarge_steps=2000,
)
MODEL_PARAMS = dict(
  sample_minimization_weight=1.0,
  batch_maximization_weight=1.0,
  learning_rate=1e-4,
  scheduler_type="None",
  use_ema=True,
  lr_drop_epoch=[200, 250],
)


def parse(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="SEED-Voken checkout root (holding src/ and main.py)")
  p.add_argument("--out", default="tests/goldens/train_magvit2")
  p.add_argument("--tokenizer", default="tests/goldens/open-magvit2/reduced.ckpt")
  p.add_argument("--photos", default="tests/goldens/open-magvit2/golden.npz", help="its 'x': 3 preprocessed 32 px photos")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--disc-start", type=int, default=1)
  p.add_argument("--disc-dim", type=int, default=8)
  p.add_argument("--ema-decay", type=float, default=0.9)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--float64", action="store_true", help="diagnostics, not a golden: the reference's own rounding, against float32"
  )
  return p.parse_args(argv)


# ----------------------------------------------------------------------------- Lightning 2.2.0, as training_step sees it
class Progress:
  """loops/progress.py ``_Progress``: ``total.completed`` is ``global_step`` in manual optimisation."""

  def __init__(self):
    self.ready = self.completed = 0


class LightningOptimizer:
  """core/optimizer.py: ``step`` runs ``_on_before_step``, the optimizer's step, ``_on_after_step`` (144-154)."""

  def __init__(self, optimizer):
    self.optimizer = optimizer
    self._on_before_step = self._on_after_step = lambda: None  # do_nothing_closure, lines 51-52

  def zero_grad(self):
    self.optimizer.zero_grad()  # LightningOptimizer proxies the optimizer's own (set_to_none=True)

  def step(self):
    self._on_before_step()
    self.optimizer.step()  # fp32 precision plugin: closure (none) then optimizer.step
    self._on_after_step()


def lightning_stub():
  class LightningModule(torch.nn.Module):
    @property
    def global_step(self):
      return self._progress.completed  # training_epoch_loop.py:98-102

    def optimizers(self):
      return self._lightning_optimizers

    def manual_backward(self, loss):
      loss.backward()  # strategy -> precision plugin (32-true): loss.backward()

    def log_dict(self, d, **_):
      self._logged.append({k: float(v) for k, v in d.items()})

  return stub("lightning", LightningModule=LightningModule)


def main_stub():
  def instantiate_from_config(config):  # main.py:16-27
    module, cls = config["target"].rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)(**config.get("params", {}))

  return stub("main", instantiate_from_config=instantiate_from_config)


# ----------------------------------------------------------------------------- the run
def build(args, lfqgan, ema_mod):
  sd = torch.load(args.tokenizer, map_location="cpu")["state_dict"]
  ch = sd["encoder.conv_in.weight"].shape[0]
  z = sd["encoder.conv_out.weight"].shape[0]
  levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.down.")})
  mult = [1] + [sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels[1:]]
  blocks = len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")})
  ddconfig = dict(
    double_z=False, z_channels=z, resolution=32, in_channels=3, out_ch=3, ch=ch, ch_mult=mult, num_res_blocks=blocks
  )
  lossconfig = {
    "target": "src.Open_MAGVIT2.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
    "params": {**LOSS_PARAMS, "disc_start": args.disc_start, "disc_ndf": args.disc_dim},
  }
  model = lfqgan.VQModel(ddconfig, lossconfig, n_embed=2**z, embed_dim=z, **MODEL_PARAMS)
  weights = {k: v for k, v in sd.items() if k.startswith(("encoder.", "decoder."))}
  missing, unexpected = model.load_state_dict(weights)
  missing = [k for k in missing if k.startswith(("encoder.", "decoder."))]
  if missing or unexpected:
    raise SystemExit(f"{args.tokenizer}: missing {missing}, unexpected {unexpected}")
  randomise_discriminator(model.loss.discriminator, args.seed + 7)
  if args.float64:
    model.double()
    model.get_input = lambda batch, k: batch[k].permute(0, 3, 1, 2).contiguous()  # lfqgan.py:156 casts to float32
  # lfqgan.py:59-60 builds LitEma from the model at construction: rebuilt here from the
  # loaded weights (a fresh run's initial weights), at the reduced decay.
  model.model_ema = ema_mod.LitEma(model, decay=args.ema_decay)
  return model


def trainer(args):
  """SEED-Voken's VQModel with its optimizers in the stubbed Lightning trainer (``d_init.pt`` in args.out).

  Returns ``(model, progress, (opt_gen, opt_disc), (vgg_sd, lin_sd))``; bench/reference_step.py times the same.
  """
  vgg_sd, lin_sd = vgg_weights(args.seed), lin_weights(args.seed)
  install_stubs(vgg_sd)
  sys.modules.update(lightning=lightning_stub(), main=main_stub())
  sys.path.insert(0, os.path.abspath(args.ref))
  from src.Open_MAGVIT2.models import lfqgan  # noqa: PLC0415
  from src.Open_MAGVIT2.modules import ema as ema_mod  # noqa: PLC0415
  from src.Open_MAGVIT2.modules.losses import lpips  # noqa: PLC0415

  os.makedirs(args.out, exist_ok=True)
  lin_path = os.path.join(args.out, "_lin_weights.pth")  # temporary, removed below
  torch.save({k: torch.from_numpy(v) for k, v in lin_sd.items()}, lin_path)
  lpips.get_ckpt_path = lambda name, root, check=False: lin_path
  torch.manual_seed(args.seed)
  model = build(args, lfqgan, ema_mod)
  os.remove(lin_path)
  disc = model.loss.discriminator
  d_sd = OrderedDict((k, v.clone()) for k, v in disc.state_dict().items())
  torch.save({"discriminator": d_sd}, os.path.join(args.out, "d_init.pt"))

  # The Trainer's side: fit's modes (see the docstring), configure_optimizers (it asks the
  # datamodule for the epoch length, which scheduler_type "None" leaves unused).
  assert model.training and disc.training and not model.loss.perceptual_loss.training
  progress = Progress()
  model._progress, model._logged = progress, []
  model.trainer = types.SimpleNamespace(
    profiler=types.SimpleNamespace(start=lambda _: None, stop=lambda _: None),
    is_global_zero=True,
    world_size=1,
    max_epochs=1,
    current_epoch=0,
    datamodule=types.SimpleNamespace(_train_dataloader=lambda: range(args.steps)),
  )
  (gen, dis) = model.configure_optimizers()
  opt_gen, opt_disc = gen["optimizer"], dis["optimizer"]
  model._lightning_optimizers = [LightningOptimizer(opt_gen), LightningOptimizer(opt_disc)]
  return model, progress, (opt_gen, opt_disc), (vgg_sd, lin_sd)


def train_batch(model, progress, batch, s):
  """One batch of Lightning's manual loop: the hooks that count optimizer steps
  (manual.py:98-102), training_step, the hooks reset (manual.py:126-127), then the
  on_train_batch_end hook (training_epoch_loop.py), where lfqgan.py updates the EMA."""
  for lo in model._lightning_optimizers:
    lo._on_before_step = lambda: setattr(progress, "ready", progress.ready + 1)
    lo._on_after_step = lambda: setattr(progress, "completed", progress.completed + 1)
  model._logged = []
  model.training_step(batch, s)
  for lo in model._lightning_optimizers:
    lo._on_before_step = lo._on_after_step = lambda: None
  model.on_train_batch_end(None, batch, s)


def main():
  args = parse()
  model, progress, (opt_gen, opt_disc), (vgg_sd, lin_sd) = trainer(args)
  disc = model.loss.discriminator

  g_params = OrderedDict((k, p) for k, p in model.named_parameters() if k.startswith(("encoder.", "decoder.")))
  d_params = OrderedDict(disc.named_parameters())
  assert {id(p) for g in opt_gen.param_groups for p in g["params"]} == {id(p) for p in g_params.values()}
  g0 = OrderedDict((k, p.detach().clone()) for k, p in g_params.items())
  d0 = OrderedDict((k, p.detach().clone()) for k, p in d_params.items())
  grads = {}
  opt_gen.register_step_pre_hook(lambda *_: grads.update(g=OrderedDict((k, p.grad.clone()) for k, p in g_params.items())))
  opt_disc.register_step_pre_hook(lambda *_: grads.update(d=OrderedDict((k, p.grad.clone()) for k, p in d_params.items())))

  photos = np.load(args.photos)["x"]
  gold = OrderedDict()
  gold["lpips_checksum"] = np.float64(sum(np.sum(v, dtype=np.float64) for v in [*vgg_sd.values(), *lin_sd.values()]))
  gold["ema_decay"] = np.float64(args.ema_decay)
  gold["disc_start"] = np.int64(args.disc_start)
  gold["lecam_decay"] = np.float64(model.loss.lecam_ema.decay)
  for s in range(args.steps):
    idx = [s % 3, (s + 1) % 3]
    gold[f"step{s}/photos"] = np.array(idx)
    x = torch.from_numpy(photos[idx]).to(torch.float64 if args.float64 else torch.float32)
    batch = {"image": x.permute(0, 2, 3, 1).contiguous()}  # get_input wants NHWC
    with torch.no_grad():
      h = model.encoder(x)
      (_, _, ids), _ = model.quantize.eval()(h, return_loss_breakdown=True)
      model.quantize.train()
    gap = float((h.abs().min() / h.std()).item())
    if gap < 1e-5:
      raise SystemExit(f"step {s}: a latent channel within {gap:.1e} of 0; pick other inputs")
    gold[f"step{s}/min_latent_gap"] = np.float64(gap)
    gold[f"step{s}/ids"] = ids.numpy().astype(np.int32)

    train_batch(model, progress, batch, s)
    assert progress.completed == s + 1  # only the generator's steps counted

    # lfqgan.py:202-203 logs the discriminator's dict, then the generator's.
    logged_d, logged_g = model._logged
    assert "train/disc_loss" in logged_d and "train/total_loss" in logged_g
    logged = {**logged_g, **logged_d}
    for key in (
      "total_loss",
      "per_sample_entropy",
      "codebook_entropy",
      "commit_loss",
      "nll_loss",
      "reconstruct_loss",
      "perceptual_loss",
      "d_weight",
      "g_loss",
      "disc_loss",
      "logits_real",
      "logits_fake",
      "lecam_loss",
      "non_saturated_d_loss",
    ):
      gold[f"step{s}/{key}"] = np.float64(logged[f"train/{key}"])
    # Both log disc_factor; the discriminator's loss reads the later global_step.
    gold[f"step{s}/g_disc_factor"] = np.float64(logged_g["train/disc_factor"])
    gold[f"step{s}/d_disc_factor"] = np.float64(logged_d["train/disc_factor"])
    gold[f"step{s}/lecam_ema_real"] = np.float64(model.loss.lecam_ema.logits_real_ema)
    gold[f"step{s}/lecam_ema_fake"] = np.float64(model.loss.lecam_ema.logits_fake_ema)

    last = s == args.steps - 1
    record(gold, f"step{s}/g_grad", grads["g"], whole=last)
    record(gold, f"step{s}/d_grad", grads["d"], whole=last)
    record(gold, f"step{s}/g_delta", OrderedDict((k, p.detach() - g0[k]) for k, p in g_params.items()), whole=last)
    shadow = dict(model.model_ema.named_buffers())
    ema = OrderedDict((k, shadow[model.model_ema.m_name2s_name[k]] - g0[k]) for k in g_params)
    record(gold, f"step{s}/ema_delta", ema, whole=last)
    record(gold, f"step{s}/d_delta", OrderedDict((k, p.detach() - d0[k]) for k, p in d_params.items()), whole=last)
    print(
      f"step {s + 1}: total {logged['train/total_loss']:.6f} disc {logged['train/disc_loss']:.6f}"
      f" g_loss {logged['train/g_loss']:.6f} lecam {logged['train/lecam_loss']:.6f}"
      f" |g grad| {gold[f'step{s}/g_grad/global_norm']:.4f} |d grad| {gold[f'step{s}/d_grad/global_norm']:.4f}"
      f" min |h|/std {gap:.2e}"
    )
  gold["g_names"] = np.array(list(g0))
  gold["d_names"] = np.array(list(d0))
  save_golden(args.out, gold)


if __name__ == "__main__":
  main()
