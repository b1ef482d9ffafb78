#!/usr/bin/env python
"""Training-step goldens from TiTok's own stage-1 trainer code (bytedance/1d-tokenizer; issue 24, item 1).

Usage: /tmp/torchenv/bin/python scripts/parity/gen_train_titok.py /path/to/1d-tokenizer \
    [--out tests/goldens/train_titok] [--tokenizer tests/goldens/titok/reduced.bin]

The model (modeling/titok.py TiTok and PretrainedTokenizer, modules/blocks.py,
maskgit_vqgan.py, quantizer/quantizer.py), the loss (modules/losses.py
ReconstructionLoss_Stage1), the optimizer (utils/train_utils.py
create_optimizer: AdamW with its weight-decay exemptions by name), the
learning-rate schedule (create_lr_scheduler, utils/lr_schedulers.py) and the
EMA (modules/ema_model.py EMAModel) are the reference's own, imported from the
checkout, configured by its own configs/training/TiTok/stage1/titok_s128.yaml.
The only code here is the orchestration of utils/train_utils.py
``train_one_epoch`` for stage 1 (``finetune_decoder: False``), line by line
(cited below), and stubs for imports the stage-1 step never uses (hub,
accelerate, open_clip, the data, evaluation and generator modules, the
perceptual loss).

Reduced: the student is the converter golden tests/goldens/titok/reduced.bin
without its pixel decoder (ViTs of width 128, 2 blocks, patch 4 at 32 px, 8
latent tokens, 64 l2-normalised codes of dim 12, logits over 48 proxy codes);
the teacher is the reference's PretrainedTokenizer with the reference's
MaskGIT VQGAN modules at that golden's pixel-decoder size (32 channels, mult
(1, 2, 2), one res block, 48 codes of dim 16): its quantizer and decoder are
the golden's ``pixel_*`` tensors (train_utils.py:141 names them so), its
encoder random from a ``RandomState`` stream (``random_weights``) that
tests/step_parity.py rebuilds (``teacher_checksum`` guards it). Batch 2 of the
golden's 32 px photos in [0, 1]. ``ReconstructionLoss_Stage1`` hard-wires the
teacher's 1024 codes (losses.py:76): set to the reduced 48.

Hyperparameters are the yaml's (AdamW (0.9, 0.99), eps 1e-8, lr 1e-4, cosine
to end_lr 1e-5, clip 1.0, quantizer_weight 1, commitment 0.25, EMA 0.999 with
EMAModel's warm-up) except: warm-up 2 and max_train_steps 6 (so step 1 runs at
lr 0, step 2 in the warm-up, steps 3 and 4 past its end, in the cosine), fp32
(not fp16), one process, and weight decay 1.0 (the yaml's 1e-4 moves a weight
by lr * 1e-4 * w, ~1e-10, invisible; at 1.0 the decay is ~10% of each step, so
which parameters it exempts shows).

Per step the golden holds the learning rate and EMA decay used, the teacher's
ids and the student's, every loss term, the gradients before clipping and the
changes of the weights and of the EMA weights since the start (train_common.py
``record``; ``in_proj_*`` split in thirds, as vqtok's converter names them),
and the names of the parameters the optimizer exempts from weight decay.
The script fails on a near-tie of codes (teacher's or student's).
"""

import argparse
import logging
import os
import sys
import types
from collections import OrderedDict

import numpy as np
import torch
from train_common import random_weights, record, stub, save_golden


def parse(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="bytedance/1d-tokenizer checkout root")
  p.add_argument("--out", default="tests/goldens/train_titok")
  p.add_argument("--tokenizer", default="tests/goldens/titok/reduced.bin")
  p.add_argument("--photos", default="tests/goldens/titok/golden.npz", help="its 'images_uint8': 3 photos, 32 px")
  p.add_argument("--steps", type=int, default=4)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--max-steps", type=int, default=6)
  p.add_argument("--weight-decay", type=float, default=1.0)
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


PIXEL = {"hidden_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1}  # the converter golden's VQGAN


def install_stubs(ref):
  class HubMixin:  # huggingface_hub.PyTorchModelHubMixin: saving/loading helpers only
    def __init_subclass__(cls, **kwargs):
      super().__init_subclass__()

  stub("huggingface_hub", PyTorchModelHubMixin=HubMixin)
  stub("accelerate")
  stub("accelerate.utils")
  stub("accelerate.utils.operations", gather=lambda x: x)  # clustering_vq only
  # utils/train_utils.py's imports for the other models, the data and evaluation.
  stub("open_clip")
  stub("torchinfo", summary=None)
  stub("data", SimpleImageDataset=None, PretoeknizedDataSetJSONL=None, PretokenizedWebDataset=None)
  stub("evaluator", VQGANEvaluator=None)
  stub("demo_util", get_titok_tokenizer=None, get_tatitok_tokenizer=None, sample_fn=None)
  stub("imagenet_classes", imagenet_idx2classname=None)
  stub("utils.viz_utils", **dict.fromkeys(("make_viz_from_samples", "make_viz_from_samples_generation",
                                            "make_viz_from_samples_t2i_generation")))  # fmt: skip
  stub("modeling.tatitok", TATiTok=None)
  stub("modeling.maskgit", ImageBert=None, UViTBert=None)
  stub("modeling.rar", RAR=None)
  stub("modeling.maskgen", MaskGen_VQ=None, MaskGen_KL=None, open_clip_text_encoding=None)
  stub("modeling.diffusion", create_diffusion=None)  # losses.py:28, for the diffusion losses
  stub("modeling.modules.perceptual_loss", PerceptualLoss=None)  # stage 2's (losses.py:30)
  for pkg in ("modeling", "modeling.modules", "modeling.quantizer", "utils"):  # without their __init__
    stub(pkg).__path__ = [os.path.join(ref, *pkg.split("."))]


def split_in_proj(named):
  """``attn.in_proj_weight`` / ``_bias`` as three tensors ``.query``, ``.key``, ``.value`` (vqtok's converter names)."""
  out = OrderedDict()
  for k, t in named:
    if k.endswith(("in_proj_weight", "in_proj_bias")):
      for part, x in zip(("query", "key", "value"), t.chunk(3, dim=0)):
        out[f"{k}.{part}"] = x
    else:
      out[k] = t
  return out


def shrink_vit(blocks, vit, width, depth, codes_out=None):
  """A TiTokEncoder/Decoder's layers rebuilt at ``width`` x ``depth`` from the reference's classes (as gen_titok.py)."""
  heads = width // 64
  vit.width, vit.num_layers, vit.num_heads = width, depth, heads
  p = lambda *s: torch.nn.Parameter(torch.zeros(*s))  # noqa: E731
  if hasattr(vit, "patch_embed"):
    vit.patch_embed = torch.nn.Conv2d(3, width, kernel_size=vit.patch_size, stride=vit.patch_size, bias=True)
    vit.conv_out = torch.nn.Conv2d(width, vit.token_size, kernel_size=1, bias=True)
  else:
    vit.decoder_embed = torch.nn.Linear(vit.token_size, width, bias=True)
    vit.mask_token = p(1, 1, width)
    vit.ffn = torch.nn.Sequential(
      torch.nn.Conv2d(width, 2 * width, 1, padding=0, bias=True),
      torch.nn.Tanh(),
      torch.nn.Conv2d(2 * width, codes_out, 1, padding=0, bias=True),
    )
  vit.class_embedding = p(1, width)
  vit.positional_embedding = p(vit.grid_size**2 + 1, width)
  vit.latent_token_positional_embedding = p(vit.num_latent_tokens, width)
  vit.ln_pre = torch.nn.LayerNorm(width)
  vit.transformer = torch.nn.ModuleList([blocks.ResidualAttentionBlock(width, heads, mlp_ratio=4.0) for _ in range(depth)])
  vit.ln_post = torch.nn.LayerNorm(width)


def gaps(z, e):
  """Relative gap between the nearest and second-nearest code of each row of ``z`` (float64)."""
  d = torch.cdist(z.double(), e.double()) ** 2
  top2 = torch.topk(d, 2, largest=False).values
  return ((top2[:, 1] - top2[:, 0]) / top2[:, 1].clamp_min(1e-12)).numpy()


def trainer(args):
  """The stage-1 trainer's objects, built by the reference's own functions (reduced: module docstring).

  Returns a namespace: model, pretrained_tokenizer, loss_module, optimizer,
  lr_scheduler, ema, config, and what main() records (teacher_enc, enc_shapes,
  no_decay, proxy_dim, token_size). bench/reference_step.py times the same trainer.
  """
  ref = os.path.abspath(args.ref)
  install_stubs(ref)
  sys.path.insert(0, ref)
  from omegaconf import OmegaConf  # noqa: PLC0415

  from modeling import titok  # noqa: PLC0415
  from modeling.modules import blocks, ema_model, losses, maskgit_vqgan  # noqa: PLC0415

  mods = sys.modules["modeling.modules"]  # what utils/train_utils.py:33 imports from the package
  mods.EMAModel, mods.ReconstructionLoss_Stage1 = ema_model.EMAModel, losses.ReconstructionLoss_Stage1
  for name in ("ReconstructionLoss_Stage2", "ReconstructionLoss_Single_Stage", "MLMLoss", "ARLoss"):
    setattr(mods, name, getattr(losses, name))
  from utils import train_utils  # noqa: PLC0415

  torch.manual_seed(args.seed)
  os.makedirs(args.out, exist_ok=True)

  # ---- config: the reference's stage-1 yaml, reduced (module docstring)
  config = OmegaConf.load(os.path.join(ref, "configs/training/TiTok/stage1/titok_s128.yaml"))
  student_sd = torch.load(args.tokenizer, map_location="cpu")
  width = student_sd["latent_tokens"].shape[1]
  depth = len({k.split(".")[2] for k in student_sd if k.startswith("encoder.transformer.")})
  codes, token_size = student_sd["quantize.embedding.weight"].shape
  proxy_codes, proxy_dim = student_sd["pixel_quantize.embedding.weight"].shape
  config.model.vq_model.update(
    codebook_size=int(codes),
    token_size=int(token_size),
    num_latent_tokens=int(student_sd["latent_tokens"].shape[0]),
    vit_enc_patch_size=int(student_sd["encoder.patch_embed.weight"].shape[-1]),
    vit_dec_patch_size=int(student_sd["encoder.patch_embed.weight"].shape[-1]),
  )
  config.dataset.preprocessing.crop_size = 32
  config.training.update(max_train_steps=args.max_steps, mixed_precision="no")
  config.lr_scheduler.params.warmup_steps = args.warmup
  config.optimizer.params.weight_decay = args.weight_decay
  assert not config.model.vq_model.finetune_decoder  # stage 1

  # ---- the teacher: train_utils.py:80-88 create_pretrained_tokenizer -> titok.py:35-56,
  # with the reference's own VQGAN modules at the reduced size in place of its full-size ones.
  conf = OmegaConf.create(
    {**PIXEL, "num_resolutions": 3, "dropout": 0.0, "num_channels": 3, "resolution": 32, "z_channels": int(proxy_dim)}
  )
  titok.Pixel_Eecoder = lambda _: maskgit_vqgan.Encoder(conf)
  titok.Pixel_Decoder = lambda _: maskgit_vqgan.Decoder(conf)
  titok.Pixel_Quantizer = lambda num_embeddings, embedding_dim, commitment_cost: maskgit_vqgan.VectorQuantizer(
    num_embeddings=int(proxy_codes), embedding_dim=int(proxy_dim), commitment_cost=commitment_cost
  )
  enc_shapes = OrderedDict((k, list(v.shape)) for k, v in maskgit_vqgan.Encoder(conf).state_dict().items())
  teacher_enc = random_weights(args.seed + 11, enc_shapes)  # the seed is in the golden
  teacher_sd = OrderedDict((f"encoder.{k}", torch.from_numpy(v)) for k, v in teacher_enc.items())
  teacher_sd.update((k[len("pixel_") :], v) for k, v in student_sd.items() if k.startswith("pixel_"))
  teacher_path = os.path.join(args.out, "_teacher.bin")  # temporary, removed below
  torch.save(teacher_sd, teacher_path)
  config.model.vq_model.pretrained_tokenizer_weight = teacher_path
  pretrained_tokenizer = train_utils.create_pretrained_tokenizer(config)  # strict load, eval, no grad
  os.remove(teacher_path)

  # ---- the student: train_utils.py:101-130 builds TiTok(config); shrunk as gen_titok.py does, then
  # the converter golden's weights (without the pixel decoder, which stage 1 has not) loaded strictly.
  model = titok.TiTok(config)
  shrink_vit(blocks, model.encoder, width, depth)
  shrink_vit(blocks, model.decoder, width, depth, codes_out=int(proxy_codes))
  model.latent_tokens = torch.nn.Parameter(torch.zeros_like(student_sd["latent_tokens"]))
  model.load_state_dict({k: v for k, v in student_sd.items() if not k.startswith("pixel_")}, strict=True)
  # train_utils.py:150 (use_ema, yaml:66)
  ema = ema_model.EMAModel(model.parameters(), decay=0.999, model_cls=titok.TiTok, config=config)
  loss_module = losses.ReconstructionLoss_Stage1(config=config)  # train_utils.py:107, 168
  loss_module.target_codebook_size = int(proxy_codes)  # losses.py:76 hard-wires MaskGIT's 1024
  logger = logging.getLogger("titok")
  optimizer, d_optimizer = train_utils.create_optimizer(config, logger, model, loss_module)  # train_script:98
  assert d_optimizer is None  # no discriminator in stage 1 (train_utils.py:245)
  lr_scheduler, _ = train_utils.create_lr_scheduler(
    config, logger, types.SimpleNamespace(num_processes=1), optimizer, None
  )  # train_titok.py:100-101
  no_decay = {id(p) for p in optimizer.param_groups[0]["params"]}
  assert optimizer.param_groups[0]["weight_decay"] == 0
  return types.SimpleNamespace(
    model=model,
    pretrained_tokenizer=pretrained_tokenizer,
    loss_module=loss_module,
    optimizer=optimizer,
    lr_scheduler=lr_scheduler,
    ema=ema,
    config=config,
    teacher_enc=teacher_enc,
    enc_shapes=enc_shapes,
    no_decay=no_decay,
    proxy_dim=int(proxy_dim),
    token_size=int(token_size),
  )


def train_step(t, images, after_backward=lambda: None):
  """train_one_epoch's stage-1 body (train_utils.py:430-557) on ``images`` in [0, 1]: (proxy codes, loss, its terms, extras).

  ``after_backward`` runs between the backward pass and clipping (main() records the gradients there).
  """
  t.model.train()  # :430
  # :451-453 proxy codes
  t.pretrained_tokenizer.eval()
  proxy_codes = t.pretrained_tokenizer.encode(images)
  # :459 model forward, :469-473 the stage-1 loss
  reconstructed_images, extra_results_dict = t.model(images)
  autoencoder_loss, loss_dict = t.loss_module(proxy_codes, reconstructed_images, extra_results_dict)
  autoencoder_loss.backward()  # :497
  after_backward()
  torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.config.training.max_grad_norm)  # :499-500
  t.optimizer.step()  # :502
  t.lr_scheduler.step()  # :503
  t.optimizer.zero_grad(set_to_none=True)  # :513
  # :517 no discriminator (finetune_decoder False)
  t.ema.step(t.model.parameters())  # :555-557
  return proxy_codes, autoencoder_loss, loss_dict, extra_results_dict


def main():
  args = parse()
  tr = trainer(args)
  model, pretrained_tokenizer, ema = tr.model, tr.pretrained_tokenizer, tr.ema
  proxy_dim, token_size = tr.proxy_dim, tr.token_size

  photos = torch.from_numpy(np.load(args.photos)["images_uint8"]).permute(0, 3, 1, 2).float() / 255.0
  g0 = OrderedDict((k, t.detach().clone()) for k, t in split_in_proj(model.named_parameters()).items())
  gold = OrderedDict()
  gold["teacher_seed"] = np.int64(args.seed + 11)
  gold["teacher_checksum"] = np.float64(sum(np.sum(v, dtype=np.float64) for v in tr.teacher_enc.values()))
  gold["teacher_names"] = np.array(list(tr.enc_shapes))
  gold["teacher_shapes"] = np.array([str(tuple(s)) for s in tr.enc_shapes.values()])
  gold["weight_decay"] = np.float64(args.weight_decay)
  gold["warmup_steps"] = np.int64(args.warmup)
  gold["max_train_steps"] = np.int64(args.max_steps)
  gold["no_decay_names"] = np.array([n for n, p in model.named_parameters() if id(p) in tr.no_decay])
  model.train()  # train_utils.py:425
  for s in range(args.steps):
    images = photos[[s % 3, (s + 1) % 3]].contiguous()
    gold[f"step{s}/photos"] = np.array([s % 3, (s + 1) % 3])
    gold[f"step{s}/lr"] = np.float64(tr.optimizer.param_groups[0]["lr"])
    model.train()
    with torch.no_grad():  # the codes' distance gaps, from the weights the step's forward uses
      h = pretrained_tokenizer.eval().encoder(images).permute(0, 2, 3, 1).reshape(-1, proxy_dim)
      t_gap = gaps(h, pretrained_tokenizer.quantize.embedding.weight).min()
      z = model.encoder(pixel_values=images, latent_tokens=model.latent_tokens)
      z = z.permute(0, 2, 3, 1).reshape(-1, token_size)
      e = torch.nn.functional.normalize(model.quantize.embedding.weight, dim=-1)
      s_gap = gaps(torch.nn.functional.normalize(z, dim=-1), e).min()
    if min(t_gap, s_gap) < 1e-5:
      raise SystemExit(f"step {s}: a near-tie between codes (teacher {t_gap:.2e}, student {s_gap:.2e})")
    last = s == args.steps - 1

    grad_record = OrderedDict()

    def record_grads(s=s, last=last, out=grad_record):
      grads = OrderedDict((k, t.grad) for k, t in model.named_parameters())
      assert all(g is not None for g in grads.values())  # the reference freezes nothing in stage 1
      record(out, f"step{s}/g_grad", split_in_proj(grads.items()), whole=last)

    proxy_codes, autoencoder_loss, loss_dict, extra_results_dict = train_step(tr, images, record_grads)
    gold[f"step{s}/min_code_gap"] = np.float64(min(t_gap, s_gap))
    gold[f"step{s}/teacher_ids"] = proxy_codes.numpy().astype(np.int32)
    gold[f"step{s}/ids"] = extra_results_dict["min_encoding_indices"].numpy().reshape(2, -1).astype(np.int32)
    for k, v in loss_dict.items():  # total, reconstruction (the CE), quantizer, commitment (x 0.25), codebook
      gold[f"step{s}/{k}"] = np.float64(v.item())
    gold.update(grad_record)
    gold[f"step{s}/ema_decay"] = np.float64(ema.cur_decay_value)

    named = split_in_proj(model.named_parameters())
    record(gold, f"step{s}/g_delta", OrderedDict((k, t.detach() - g0[k]) for k, t in named.items()), whole=last)
    shadow = split_in_proj(zip([k for k, _ in model.named_parameters()], ema.shadow_params))
    record(gold, f"step{s}/ema_delta", OrderedDict((k, t - g0[k]) for k, t in shadow.items()), whole=last)
    print(
      f"step {s + 1}: lr {gold[f'step{s}/lr']:.3e} loss {autoencoder_loss.item():.6f}"
      f" CE {loss_dict['reconstruction_loss'].item():.6f} |grad| {gold[f'step{s}/g_grad/global_norm']:.4f}"
      f" ema decay {ema.cur_decay_value:.4f} min code gap {min(t_gap, s_gap):.2e}"
    )
  gold["g_names"] = np.array(list(g0))
  save_golden(args.out, gold)


if __name__ == "__main__":
  main()
