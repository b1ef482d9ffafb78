"""Each preset's training recipe against its reference's published training config (issue 24, item 2).

``RECIPES`` holds, per preset, the reference's value of every recipe field
vqtok can express, each with the file and line it comes from; ``CHOICES`` the
fields where vqtok keeps a value of its own because the reference published
none (each with the reason). Together they cover every field of ``FIELDS``
that the recipe uses, so a preset field that drifts fails here. What vqtok
cannot express is listed in ``DIFFERENCES``, and each entry must appear in the
preset's row of the README's "Training recipes" table. Cheap: no model is built.

References (the commits mirrored):
  LlamaGen   FoundationVision/LlamaGen@ce98ec4
  taming     CompVis/taming-transformers@3ba01b2
  MaskGIT    google-research/maskgit@1db2359
  SEED-Voken TencentARC/SEED-Voken@b9a17ea (Open-MAGVIT2, IBQ)
  BSQ-ViT    zhaoyue-zephyrus/bsq-vit@37d212d
  TiTok      bytedance/1d-tokenizer@942a96f
  VAR        FoundationVision/VAR@78b9539
  FQGAN      showlab/FQGAN@dc34256
  TokenFlow  ByteFlow-AI/TokenFlow@9812da0
"""

import importlib
import inspect
import math
import os
import re

import pytest

from vqtok import config as config_lib
from vqtok.quantizers import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OPTIMIZER = ("optimizer.lr", "optimizer.b1", "optimizer.b2", "optimizer.weight_decay", "optimizer.grad_clip")
SCHEDULE = ("optimizer.warmup_steps", "optimizer.min_lr_ratio")
TRAINING = ("training.batch_size", "training.num_steps", "training.ema_decay")
LOSSES = ("loss.l1_weight", "loss.l2_weight", "loss.perceptual_weight", "loss.gan_weight", "data.flip")
GAN = (
  "optimizer.disc_lr",
  "loss.adaptive_weight",
  "loss.gan_loss",
  "loss.disc_start",
  "loss.lecam_weight",
  "loss.r1_weight",
  "discriminator.type",
  "discriminator.channels",
  "discriminator.num_layers",
)
#: The recipe fields every preset's tables must cover (GAN only where the reference trains one).
FIELDS = OPTIMIZER + SCHEDULE + TRAINING + LOSSES
# A constant learning rate: no warm-up, no decay.
CONSTANT = {"optimizer.warmup_steps": 0, "optimizer.min_lr_ratio": 1.0}
# ImageNet-1k's 1,281,167 training images at 256 a step without drop_last (Lightning's
# DistributedSampler pads): ceil(1,281,167 / 256) = 5,005 steps an epoch.
EPOCH_256 = 5_005

# Open-MAGVIT2 and IBQ share their trainer (SEED-Voken src/{Open_MAGVIT2,IBQ}/models/*gan.py and
# modules/losses/vqperceptual.py); the lines are Open-MAGVIT2's, IBQ's are in the IBQ entry.
SEED_VOKEN = {
  "optimizer.lr": 1e-4,  # imagenet_lfqgan_{256,128}_L.yaml:56 learning_rate
  "optimizer.disc_lr": 1e-4,  # lfqgan.py:253-254: the same lr
  "optimizer.b1": 0.5,  # lfqgan.py:252, 254 betas=(0.5, 0.9)
  "optimizer.b2": 0.9,
  "optimizer.weight_decay": 0.0,  # lfqgan.py:249-254 torch.optim.Adam
  "optimizer.grad_clip": 0.0,  # manual optimisation without a clip call (lfqgan.py:170-203)
  **CONSTANT,  # yaml:59 scheduler_type "None" (the x0.1 drops: DIFFERENCES)
  "training.batch_size": 256,  # yaml:67 batch_size 8 x yaml:5 devices 8 x yaml:6 num_nodes 4
  "training.ema_decay": 0.999,  # yaml:60 use_ema; ema.py:12 LitEma(decay=0.999), use_num_upates False
  "loss.l1_weight": 1.0,  # vqperceptual.py:156, 164 |x - x_rec|
  "loss.l2_weight": 0.0,
  "loss.perceptual_weight": 1.0,  # vqperceptual.py:92 perceptual_weight=1.0 (LPIPS)
  "loss.gan_weight": 0.1,  # yaml:47 gen_loss_weight
  "loss.adaptive_weight": False,  # vqperceptual.py:177-184: gen_loss_weight set -> fixed
  "loss.gan_loss": "hinge",  # vqperceptual.py:93 disc_loss="hinge"
  "loss.gen_gan_loss": "non_saturating_per_image",  # vqperceptual.py:176, 43-54: each image's mean logit
  "loss.disc_start": 0,  # yaml:45 disc_start 0
  "loss.lecam_decay": 0.999,  # vqperceptual.py:74 LeCAM_EMA(decay=0.999)
  "loss.lecam_ema_first": True,  # vqperceptual.py:246-247: update, then lecam_reg reads it
  "loss.r1_weight": 0.0,  # none
  "discriminator.type": "patchgan",  # vqperceptual.py:93, 109-116 NLayerDiscriminator (use_blur False)
  "discriminator.channels": 64,  # vqperceptual.py:93 disc_ndf=64
  "discriminator.num_layers": 3,  # vqperceptual.py:90 disc_num_layers=3
  "discriminator.norm": "batch",  # NLayerDiscriminator's nn.BatchNorm2d, trained on batch statistics
  "data.flip": False,  # data/base.py:32-38 Resize + RandomCrop, no flip
}

TITOK_BOTH = {
  # configs/training/TiTok/stage{1,2}/titok_{l32,b64,s128}.yaml (the same for the three sizes)
  "optimizer.lr": 1e-4,  # stage1 yaml:47, stage2 yaml:56
  "optimizer.b1": 0.9,  # stage1 yaml:48, stage2 yaml:58
  "optimizer.weight_decay": 1e-4,  # stage1 yaml:50, stage2 yaml:60
  # utils/train_utils.py:230-231 exempts, besides vectors, names with bias (vqtok's attention biases
  # are (heads, head width)), latent_tokens, mask_token, embedding or embed (ln, norm, gamma: vectors
  # here), in vqtok's parameter names:
  "optimizer.no_decay": ("bias", "latent_tokens", "mask_token", "cls_token", "embed", "codebook"),
  "optimizer.grad_clip": 1.0,  # stage1 yaml:70, stage2 yaml:79 max_grad_norm
  "optimizer.min_lr_ratio": 0.1,  # stage1 yaml:58, stage2 yaml:67 end_lr 1e-5 of 1e-4 (cosine)
  "training.batch_size": 256,  # yaml per_gpu_batch_size 32 (stage1:62, stage2:71) x 8 (README_TiTok.md:161, 165)
  "training.ema_decay": 0.999,  # use_ema (stage1:66, stage2:75); utils/train_utils.py:150 EMAModel(decay=0.999)
  "training.ema_warmup": True,  # modeling/modules/ema_model.py:92-107 min(decay, (1 + s) / (10 + s)), 0 first
  "data.flip": True,  # random_flip (stage1:42, stage2:50)
}

RECIPES = {
  # LlamaGen GETTING_STARTED.md:9 runs scripts/tokenizer/train_vq.sh --image-size 256 --vq-model VQ-16:
  # every other value is an argparse default of tokenizer/tokenizer_image/vq_train.py.
  "llamagen_vq16": {
    "optimizer.lr": 1e-4,  # vq_train.py:303 --lr; l.110 torch.optim.Adam
    "optimizer.disc_lr": 1e-4,  # vq_train.py:111: the same args.lr
    "optimizer.b1": 0.9,  # vq_train.py:305 --beta1
    "optimizer.b2": 0.95,  # vq_train.py:306 --beta2
    "optimizer.weight_decay": 0.0,  # vq_train.py:110-111 Adam without it (--weight-decay, l.304, is unused)
    "optimizer.grad_clip": 1.0,  # vq_train.py:307 --max-grad-norm; l.198-200 (G), 212-214 (D)
    **CONSTANT,  # no scheduler in vq_train.py
    "training.batch_size": 128,  # vq_train.py:308 --global-batch-size
    "training.num_steps": 40 * (1_281_167 // 128),  # vq_train.py:302 --epochs 40; l.135 drop_last=True
    "training.ema_decay": 0.0,  # vq_train.py:282 --ema store_true, not passed by GETTING_STARTED.md:9
    "loss.l1_weight": 0.0,  # vq_train.py:290 --reconstruction-loss l2
    "loss.l2_weight": 1.0,  # vq_train.py:289 --reconstruction-weight 1.0; vq_loss.py:100-101 F.mse_loss on [-1, 1]
    "loss.perceptual_weight": 1.0,  # vq_train.py:291 --perceptual-weight; vq_loss.py:140
    "loss.gan_weight": 0.5,  # vq_train.py:292 --disc-weight
    "loss.adaptive_weight": False,  # vq_loss.py:51 disc_adaptive_weight=False, not passed (vq_train.py:92-103)
    "loss.gan_loss": "hinge",  # vq_train.py:295-296 --disc-loss / --gen-loss hinge
    # vq_train.py:293 --disc-start 20000, adopt_weight(global_step=train_steps + 1) (l.194, 208;
    # vq_loss.py:43-46, 137, 159): on from the 0-based step 19,999.
    "loss.disc_start": 19_999,
    "loss.lecam_weight": 0.0,  # none in vq_loss.py
    "loss.r1_weight": 0.0,
    "discriminator.type": "patchgan",  # vq_train.py:294 --disc-type; vq_loss.py:59-64 PatchGANDiscriminator
    "discriminator.channels": 64,  # vq_loss.py:50 disc_dim=64
    "discriminator.num_layers": 3,  # vq_loss.py:51 disc_num_layers=3
    "discriminator.norm": "batch",  # discriminator_patchgan.py: nn.BatchNorm2d, only ever in train mode
    "loss.disc_loss_weight": 0.5,  # vq_loss.py:160 d_adversarial_loss = disc_weight * disc_factor * ...
    "optimizer.disc_steps_before_start": True,  # vq_train.py:207-216: D's optimizer steps every iteration
    "data.flip": True,  # vq_train.py:116 RandomHorizontalFlip
    "quantizer.commitment_weight": 0.25,  # vq_train.py:288 --commit-loss-beta; vq_model.py:250
    "quantizer.codebook_weight": 1.0,  # vq_model.py:249 mean((z_q - sg z)^2), unweighted (vq_loss.py:142)
  },
  # FQGAN train_fqgan_dual.sh (showlab/FQGAN@dc34256): tokenizer/vq_train_dual.py (LlamaGen's trainer)
  # with --lr 2e-4 --global-batch-size 256 --epochs 40 --disentanglement-ratio 0.1.
  "fqgan_dual_ds16": {
    "optimizer.lr": 2e-4,  # train_fqgan_dual.sh:19 --lr 2e-4; vq_train_dual.py:117 torch.optim.Adam
    "optimizer.disc_lr": 2e-4,  # vq_train_dual.py:118: the same args.lr
    "optimizer.b1": 0.9,  # vq_train_dual.py:321 --beta1
    "optimizer.b2": 0.95,  # vq_train_dual.py:322 --beta2
    "optimizer.weight_decay": 0.0,  # vq_train_dual.py:117-118 Adam without it (--weight-decay, l.320, is unused)
    "optimizer.grad_clip": 1.0,  # vq_train_dual.py:323 --max-grad-norm; l.214-216 (G), 231-233 (D)
    **CONSTANT,  # no scheduler in vq_train_dual.py
    "training.batch_size": 256,  # train_fqgan_dual.sh:14 --global-batch-size 256
    "training.num_steps": 40 * (1_281_167 // 256),  # train_fqgan_dual.sh:18 --epochs 40; l.142 drop_last=True
    "training.ema_decay": 0.0,  # vq_train_dual.py:297 --ema store_true, not passed
    "loss.l1_weight": 0.0,  # vq_train_dual.py:305 --reconstruction-loss l2
    "loss.l2_weight": 1.0,  # vq_train_dual.py:304 --reconstruction-weight 1.0; vq_loss.py F.mse_loss
    "loss.perceptual_weight": 1.0,  # vq_train_dual.py:306 --perceptual-weight
    "loss.gan_weight": 0.5,  # vq_train_dual.py:307 --disc-weight
    "loss.adaptive_weight": False,  # vq_loss.py:198 disc_adaptive_weight=False, not passed (l.97-110)
    "loss.gan_loss": "hinge",  # vq_train_dual.py:310-311 --disc-loss / --gen-loss hinge
    # vq_train_dual.py:308 --disc-start 20000 with global_step=train_steps + 1 (l.203, 228): 0-based 19,999.
    "loss.disc_start": 19_999,
    "loss.lecam_weight": 0.0,  # none in vq_loss.py
    "loss.r1_weight": 0.0,
    "discriminator.type": "patchgan",  # vq_train_dual.py:309 --disc-type patchgan
    "discriminator.channels": 64,  # vq_loss.py:197 disc_dim=64
    "discriminator.num_layers": 3,  # vq_loss.py:198 disc_num_layers=3
    "discriminator.norm": "batch",  # models/discriminator_patchgan.py: nn.BatchNorm2d
    "loss.disc_loss_weight": 0.5,  # vq_loss.py:357 d_adversarial_loss = disc_weight * self.disc_loss(...)
    "optimizer.disc_steps_before_start": True,  # vq_train_dual.py:223-234: D's optimizer steps every iteration
    "data.flip": True,  # vq_train_dual.py:123 RandomHorizontalFlip
    "quantizer.disentangle_weight": 0.1,  # train_fqgan_dual.sh:21 --disentanglement-ratio 0.1
    "loss.vf_resize": "nearest",  # models/clip_encoder.py:19 F.interpolate(inp, (224, 224)): mode "nearest"
    "loss.semantic_group": 256 // 8,  # train_fqgan_dual.sh:2,14 8 GPUs, batch 256; clip_encoder.py:98-101 per GPU
  },
  # FQGAN train_fqgan_triple.sh:14-23 passes train_fqgan_dual.sh's flags to tokenizer/vq_train_triple.py, whose
  # trainer is vq_train_dual.py's line for line (argparse 4 lines lower: --beta1 l.325, --beta2 l.326,
  # --max-grad-norm l.327; Adam l.117-118, drop_last l.142, flip l.123, global_step=train_steps+1 l.206, 232;
  # vq_loss.py:570 D's loss x disc_weight): every value is Dual's.
  "fqgan_triple_ds16": None,
  # TokenFlow tokenflow/scripts/train_vq.sh (--teacher clipb_224 --image-size 224 --codebook-size 32768
  # --epochs 100 --global-batch-size 32): every other value is an argparse default of tokenizer/vq_train.py.
  "tokenflow_clipb": {
    "optimizer.lr": 1e-4,  # vq_train.py:393 --lr; l.135 torch.optim.Adam
    "optimizer.disc_lr": 1e-4,  # vq_train.py:136: the same args.lr
    "optimizer.b1": 0.9,  # vq_train.py:395 --beta1
    "optimizer.b2": 0.95,  # vq_train.py:396 --beta2
    "optimizer.weight_decay": 0.0,  # vq_train.py:135-136 Adam without it (--weight-decay, l.394, is unused)
    "optimizer.grad_clip": 1.0,  # vq_train.py:397 --max-grad-norm; l.278-280 (G), 293-295 (D)
    **CONSTANT,  # no scheduler in vq_train.py
    "training.batch_size": 32,  # train_vq.sh:16 --global-batch-size 32
    "training.num_steps": 100 * (1_281_167 // 32),  # train_vq.sh:15 --epochs 100; vq_train.py:166 drop_last=True
    "training.ema_decay": 0.0,  # vq_train.py:371 --ema store_true, not passed
    "loss.l1_weight": 0.0,  # vq_train.py:380 --reconstruction-loss l2
    "loss.l2_weight": 1.0,  # vq_train.py:379 --reconstruction-weight 1.0
    "loss.perceptual_weight": 1.0,  # vq_train.py:381 --perceptual-weight
    "loss.gan_weight": 0.5,  # vq_train.py:382 --disc-weight
    "loss.adaptive_weight": False,  # vq_loss.py:53 disc_adaptive_weight=False, not passed (vq_train.py:95-107)
    "loss.gan_loss": "hinge",  # vq_train.py:385-386 --disc-loss / --gen-loss hinge
    "loss.disc_start": 19_999,  # vq_train.py:383 --disc-start 20000 with global_step=train_steps + 1 (l.272, 290)
    "loss.lecam_weight": 0.0,  # none in vq_loss.py
    "loss.r1_weight": 0.0,
    "discriminator.type": "patchgan",  # vq_train.py:384 --disc-type patchgan; vq_loss.py:62 PatchGANDiscriminator
    "discriminator.channels": 64,  # vq_loss.py:52 disc_dim=64
    "discriminator.num_layers": 3,  # vq_loss.py:53 disc_num_layers=3
    "discriminator.norm": "batch",  # discriminator_patchgan.py: nn.BatchNorm2d
    "loss.disc_loss_weight": 0.5,  # vq_loss.py:235 d_adversarial_loss = disc_weight * self.disc_loss(...)
    "optimizer.disc_steps_before_start": True,  # vq_train.py:287-297: D's optimizer steps every iteration
    "data.flip": True,  # vq_train.py:146 RandomHorizontalFlip
    "loss.feature_rec_weight": 1.0,  # vq_loss.py:201-202: + vqkd_loss, unweighted
    "loss.feature_rec_target": "patch_embedding",  # vq_loss.py:149 encode_image(return_all_tokens) @ visual.proj
  },
  # taming README.md:340 "python main.py --base configs/imagenet_vqgan.yaml -t True --gpus 0,".
  "vqgan_f16": {
    # main.py:534-542 lr = accumulate (1) x ngpu (1) x batch (12, yaml:31) x base_learning_rate (4.5e-6, yaml:2)
    "optimizer.lr": 1 * 1 * 12 * 4.5e-6,
    "optimizer.disc_lr": 1 * 1 * 12 * 4.5e-6,  # vqgan.py:129-130 the same lr
    "optimizer.b1": 0.5,  # taming/models/vqgan.py:128, 130 betas=(0.5, 0.9)
    "optimizer.b2": 0.9,
    "optimizer.weight_decay": 0.0,  # vqgan.py:123-130 torch.optim.Adam
    "optimizer.grad_clip": 0.0,  # no gradient_clip_val in the yaml (pytorch-lightning 1.0.8 default 0)
    **CONSTANT,  # vqgan.py:131 no scheduler
    "training.batch_size": 12,  # configs/imagenet_vqgan.yaml:31, one GPU (README.md:340)
    "training.ema_decay": 0.0,  # no EMA in taming
    "loss.l1_weight": 1.0,  # taming/modules/losses/vqperceptual.py:78 |x - x_rec|
    "loss.l2_weight": 0.0,
    "loss.perceptual_weight": 1.0,  # vqperceptual.py:37 perceptual_weight=1.0, l.79-81
    "loss.gan_weight": 0.8,  # imagenet_vqgan.yaml:25 disc_weight
    "loss.adaptive_weight": True,  # vqperceptual.py:101, 107 calculate_adaptive_weight x disc_weight
    "loss.gan_loss": "hinge",  # vqperceptual.py:38 disc_loss="hinge"; l.98 g_loss = -mean(logits_fake)
    "loss.disc_start": 250_001,  # imagenet_vqgan.yaml:24; vqperceptual.py:14-17, 106 (global_step < threshold)
    "loss.lecam_weight": 0.0,
    "loss.r1_weight": 0.0,
    "discriminator.type": "patchgan",  # vqperceptual.py:46-50 NLayerDiscriminator
    "discriminator.channels": 64,  # vqperceptual.py:38 disc_ndf=64
    "discriminator.num_layers": 3,  # vqperceptual.py:36 disc_num_layers=3
    "discriminator.norm": "batch",  # taming/modules/discriminator/model.py: nn.BatchNorm2d (train mode)
    "optimizer.disc_steps_before_start": True,  # Lightning calls optimizer_idx 1 every batch (disc_factor 0 before)
    # Lightning 1.0 runs training_step once per optimizer (training_loop.py run_training_batch), so
    # vqgan.py:81-82 reconstructs again for optimizer_idx 1, after opt_ae's step.
    "optimizer.disc_sees_updated_generator": True,
    "data.flip": False,  # taming/data/base.py:33-38 SmallestMaxSize + RandomCrop, no flip
    # vqgan.py:31 VectorQuantizer(beta=0.25), legacy: quantize.py:293-295
    # mean((sg z_q - z)^2) + 0.25 mean((z_q - sg z)^2); vqperceptual.py:107 codebook_weight 1.0 (yaml:26).
    "quantizer.commitment_weight": 1.0,
    "quantizer.codebook_weight": 0.25,
  },
  # maskgit/configs/vqgan_config.py over base_config.py; the VQGAN trainer is unpublished (README.md:29-30).
  "maskgit_vqgan": {
    "optimizer.lr": 1e-4,  # vqgan_config.py:40 g_lr
    "optimizer.disc_lr": 1e-4,  # vqgan_config.py:41 d_lr
    "optimizer.b1": 0.0,  # vqgan_config.py:38
    "optimizer.b2": 0.99,  # vqgan_config.py:39
    "optimizer.weight_decay": 0.0,  # base_config.py:50 "adam", no weight decay configured
    "optimizer.warmup_steps": 2_000,  # base_config.py:58 lr_warmup_steps
    "optimizer.min_lr_ratio": 1.0,  # base_config.py:55 lr_schedule "constant"
    "training.batch_size": 256,  # vqgan_config.py:27
    "training.num_steps": 1_000_000,  # vqgan_config.py:30
    "training.ema_decay": 0.999,  # base_config.py:31 polyak_decay
    "loss.perceptual_weight": 0.1,  # vqgan_config.py:32 (its own network: DIFFERENCES)
    "loss.gan_weight": 0.1,  # vqgan_config.py:45 g_adversarial_loss_weight
    "loss.gan_loss": "non_saturating",  # vqgan_config.py:44 loss_type
    "loss.lecam_weight": 0.0,  # none configured
    # vqgan_config.py:46-47 r1 at grad_penalty_cost 10, added to an unhalved non-saturating D loss
    # (libml/losses.py:135-141, 213-225); vqtok's D loss is halved and adds 0.5 r1_weight r1: the same ratio.
    "loss.r1_weight": 10.0,
    "discriminator.type": "stylegan",  # vqgan_config.py:66-68; nets/discriminator.py:120-161
    "discriminator.channels": 64,  # channel_multiplier 1: 64 channels at 256 px
    "discriminator.num_layers": 6,  # six blurred residual blocks down to 4x4
    "quantizer.commitment_weight": 0.25,  # vqgan_config.py:56 commitment_cost; vqgan_tokenizer.py:190-192
    "quantizer.codebook_weight": 1.0,
  },
  "magvit2_lfq": {
    **SEED_VOKEN,
    "training.num_steps": 270 * EPOCH_256,  # imagenet_lfqgan_256_L.yaml:8 max_epochs
    "loss.lecam_weight": 0.05,  # imagenet_lfqgan_256_L.yaml:48
    "quantizer.commitment_weight": 0.25,  # yaml:50 commit_weight; vqperceptual.py:196
    "quantizer.entropy_weight": 0.1,  # yaml:49 codebook_weight (the entropy loss)
    "quantizer.sample_entropy_weight": 1.0,  # yaml:57 sample_minimization_weight
    "quantizer.codebook_entropy_weight": 1.0,  # yaml:58 batch_maximization_weight
    "quantizer.temperature": 0.01,  # lookup_free_quantize.py:79-120 (default 0.01)
    "quantizer.codebook_entropy_eps": 1e-5,  # lookup_free_quantize.py:85, 107 log(avg_probs + eps)
    "quantizer.entropy_mode": "exact",  # lookup_free_quantize.py:99-107: over all codes
    "loss.disc_update_lead": 1,  # lfqgan.py:180-197: D's loss reads global_step after G's step counted
  },
  "magvit2_lfq_128": {
    **SEED_VOKEN,
    "training.num_steps": 350 * EPOCH_256,  # imagenet_lfqgan_128_L.yaml:8 max_epochs
    "loss.lecam_weight": 0.01,  # imagenet_lfqgan_128_L.yaml:48
    "quantizer.commitment_weight": 0.25,  # yaml:50
    "quantizer.entropy_weight": 0.1,  # yaml:49
    "quantizer.sample_entropy_weight": 1.0,  # yaml:57
    "quantizer.codebook_entropy_weight": 1.0,  # yaml:58
    "quantizer.temperature": 0.01,
    "quantizer.codebook_entropy_eps": 1e-5,
    "quantizer.entropy_mode": "exact",
    "loss.disc_update_lead": 1,
  },
  # configs/IBQ/gpu/imagenet_ibqgan_262144.yaml with src/IBQ/models/ibqgan.py and modules/losses/vqperceptual.py.
  "ibq": {
    **SEED_VOKEN,  # lr yaml:57; Adam (0.5, 0.9) ibqgan.py:281-288; gradient_clip_val 0 (ibqgan.py:359, 246-247)
    "training.batch_size": 256,  # yaml:72 batch_size 4 x yaml:5 devices 8 x yaml:6 num_nodes 8
    "training.num_steps": 330 * EPOCH_256,  # yaml:8 max_epochs
    "training.ema_decay": 0.999,  # yaml:64 use_ema; src/IBQ/modules/ema.py:6
    "loss.gan_weight": 0.1,  # yaml:52 gen_loss_weight (vqperceptual.py:163-170: fixed)
    "loss.lecam_weight": 0.05,  # yaml:53
    "loss.disc_start": 0,  # yaml:48
    "data.flip": False,  # src/IBQ/data/base.py:33-39 SmallestMaxSize + RandomCrop
    # yaml:50 quant_loss_weight 1 x (mean((sg e - z)^2) + 0.25 mean((e - sg z)^2)), beta yaml:63; quantize.py:453-454
    "quantizer.commitment_weight": 1.0,
    "quantizer.codebook_weight": 0.25,
    "quantizer.entropy_weight": 0.05,  # yaml:51 entropy_loss_weight
    "quantizer.entropy_temperature": 0.01,  # yaml:59-62
    "quantizer.sample_entropy_weight": 1.0,
    "quantizer.codebook_entropy_weight": 1.0,
  },
  # configs/tokenizer/imagenet_256x256_bsqvit_b18g18_stylegan_f8_fp16.yaml (yaml below) with
  # scripts/main_image_tokenizer.py (main below); the world size of 8 is the submitit default
  # (scripts/run_with_submitit_image_tokenizer.py:13-14): no launch command is published.
  "bsq_vit": {
    "optimizer.lr": 4e-7 * 8 * 32,  # main:122 base_lr (yaml:55) x world_size x batch_size (yaml:39)
    "optimizer.disc_lr": 4e-7 * 8 * 32,  # main:130-133: the same optimizer config
    "optimizer.b1": 0.9,  # yaml:68 betas
    "optimizer.b2": 0.99,
    "optimizer.weight_decay": 1e-4,  # yaml:67 (torch.optim.AdamW, yaml:65)
    "optimizer.grad_clip": 0.0,  # no clip call in main_image_tokenizer.py
    "optimizer.warmup_steps": 5_000,  # yaml:60 warm_up_steps (from 0.1 x lr: DIFFERENCES)
    "optimizer.min_lr_ratio": 0.5,  # yaml:61-64 lr_min 0.5 of lr_max 1.0 at max_decay_steps 1M
    "training.batch_size": 8 * 32,  # yaml:39 per GPU x 8
    "training.num_steps": 1_000_000,  # yaml:56 max_iter
    "training.ema_decay": 0.999,  # main:37-38 --ema-decay default (timm ModelEmaV2)
    "loss.l1_weight": 1.0,  # transcoder/losses/vqperceptual.py:57 reconstruct_weight 1.0, l.143
    "loss.l2_weight": 0.0,
    "loss.perceptual_weight": 0.1,  # yaml:34
    "loss.gan_weight": 0.1,  # yaml:30 disc_weight
    "loss.adaptive_weight": False,  # yaml:35 use_adaptive_disc_weight
    "loss.gan_loss": "non_saturating",  # yaml:25 disc_loss 'vanilla' (vqperceptual.py:20-32)
    "loss.disc_start": 0,  # yaml:29
    "loss.lecam_weight": 0.0,
    # yaml:26 disc_reg_freq 16: every 16th D step adds 16 x r1_gamma / 2 x r1 with r1_gamma 10
    # (vqperceptual.py:56, 226-231): on average 5 r1 a step = vqtok's 0.5 r1_weight r1.
    "loss.r1_weight": 10.0,
    "discriminator.type": "stylegan",  # yaml:23 disc_type 'stylegan'
    "data.flip": False,  # main:190-200 Resize + RandomCrop; use_hflip absent
    "quantizer.commitment_weight": 0.0,  # yaml:11 beta 0.
    "quantizer.entropy_weight": 0.1,  # yaml:31 codebook_weight
    "quantizer.sample_entropy_weight": 1.0,  # transcoder/models/quantizer/bsq.py:99-116 gamma0 1
    "quantizer.codebook_entropy_weight": 1.0,  # gamma 1
    "quantizer.inv_temperature": 1.0,
  },
  "titok_s128:stage1": {
    **TITOK_BOTH,
    "optimizer.b2": 0.99,  # stage1 yaml:49
    "optimizer.warmup_steps": 10_000,  # stage1 yaml:57
    "training.num_steps": 1_000_000,  # stage1 yaml:68 max_train_steps
    "loss.proxy_code_weight": 1.0,  # modeling/modules/losses.py:85-96 CE against the VQGAN's codes
    "loss.l1_weight": 0.0,  # no pixel loss in stage 1
    "loss.l2_weight": 0.0,
    "loss.perceptual_weight": 0.0,
    "loss.gan_weight": 0.0,  # no discriminator without finetune_decoder (train_utils.py:245)
    "quantizer.commitment_weight": 0.25,  # stage1 yaml:20 commitment_cost (quantizer_weight 1.0, yaml:31)
    "quantizer.codebook_weight": 1.0,
  },
  "titok_s128:stage2": {
    **TITOK_BOTH,
    "optimizer.disc_lr": 1e-4,  # stage2 yaml:57 discriminator_learning_rate
    "optimizer.b2": 0.999,  # stage2 yaml:59
    "optimizer.warmup_steps": 5_000,  # stage2 yaml:66
    "training.num_steps": 500_000,  # stage2 yaml:77
    "loss.l1_weight": 0.0,
    "loss.l2_weight": 0.25,  # stage2 yaml:37-38 MSE weight 1 on [0, 1] images = 0.25 on [-1, 1]
    "loss.perceptual_weight": 0.1,  # stage2 yaml:36 (ConvNeXt-S: DIFFERENCES)
    "loss.gan_weight": 0.01,  # stage2 yaml:34 discriminator_weight x yaml:33 factor 1.0
    "loss.adaptive_weight": False,  # losses.py:183-202 fixed
    "loss.gan_loss": "hinge",  # losses.py:192 (G), 235 (D)
    "loss.disc_start": 20_000,  # stage2 yaml:31, losses.py:160-161 global_step >= 20000
    "loss.lecam_weight": 0.001,  # stage2 yaml:39
    "loss.r1_weight": 0.0,
    "quantizer.commitment_weight": 0.0,  # stage2 yaml:20, quantizer_weight 0.0 (yaml:32)
    "quantizer.codebook_weight": 0.0,
  },
  # VAR published no tokenizer trainer (FoundationVision/VAR trainer.py trains the transformer on a
  # frozen VAE); its model code gives the quantizer loss: models/quant.py:18, 95 with beta 0.25 (vqvae.py:19).
  "var_vq16": {"quantizer.beta": 0.25},
  # No published single-stage recipe (TiTok's own S-128 recipe is the two-stage one above).
  "titok_s128_pixel": {},
}
RECIPES["titok_l32:stage1"] = RECIPES["titok_b64:stage1"] = RECIPES["titok_s128:stage1"]
RECIPES["titok_l32:stage2"] = RECIPES["titok_b64:stage2"] = RECIPES["titok_s128:stage2"]

#: vqtok's defaults, kept where the reference published no value.
VQTOK = {
  "optimizer.lr": 2e-3,
  "optimizer.disc_lr": 2e-3,
  "optimizer.b1": 0.9,
  "optimizer.b2": 0.99,
  "optimizer.weight_decay": 1e-4,
  "optimizer.grad_clip": 1.0,
  "optimizer.warmup_steps": 50,
  "optimizer.min_lr_ratio": 0.1,
  "training.num_steps": 500,
  "training.ema_decay": 0.99,
  "loss.l1_weight": 1.0,
  "loss.l2_weight": 0.0,
  "loss.perceptual_weight": 0.0,
  "loss.gan_weight": 0.1,
  "loss.adaptive_weight": True,
  "loss.gan_loss": "hinge",
  "loss.disc_start": 400,
  "loss.lecam_weight": 0.0,
  "loss.r1_weight": 0.0,
  "data.flip": True,
}

PATCHGAN = {"discriminator.type": "patchgan", "discriminator.channels": 64, "discriminator.num_layers": 3}

CHOICES = {
  "vqgan_f16": {"training.num_steps": 1_000_000},  # the yaml sets no length (Lightning would run 1000 epochs)
  "maskgit_vqgan": {  # decided by the unpublished trainer: vqtok's defaults
    "optimizer.grad_clip": 1.0,
    "loss.l1_weight": 1.0,
    "loss.l2_weight": 0.0,
    "loss.adaptive_weight": True,
    "loss.disc_start": 400,
    "data.flip": True,
  },
  "bsq_vit": {  # StyleGAN2's width and depth differ from vqtok's (DIFFERENCES)
    "discriminator.channels": 64,
    "discriminator.num_layers": 6,
  },
  "titok_s128:stage2": {  # the reference's blurred NLayerDiscriminator (discriminator.py:59-66), approximated
    "discriminator.type": "patchgan",
    "discriminator.channels": 128,
    "discriminator.num_layers": 3,
  },
  "var_vq16": {**VQTOK, **PATCHGAN, "training.batch_size": 128},
  "titok_s128_pixel": {**VQTOK, **PATCHGAN, "training.batch_size": 64},
}
RECIPES["fqgan_triple_ds16"] = dict(RECIPES["fqgan_dual_ds16"])
CHOICES["titok_l32:stage2"] = CHOICES["titok_b64:stage2"] = CHOICES["titok_s128:stage2"]

# What vqtok cannot express (no config field) or does not know; each appears in the preset's README row.
AUGMENTATION = "resize-and-crop augmentation"
DIFFERENCES = {
  "llamagen_vq16": (AUGMENTATION, "bf16"),
  "fqgan_dual_ds16": (AUGMENTATION, "bf16", "CLIP ViT-L/14 feature loss 0.5"),
  "fqgan_triple_ds16": (AUGMENTATION, "bf16", "DINOv2 ViT-S/14 and CLIP ViT-B/16 feature losses 0.5"),
  "tokenflow_clipb": (
    AUGMENTATION,
    "fp16",
    "semantic encoder from CLIP ViT-B/16's weights",
    "plain decoder first, then the enhanced one alone",
    "random drop of one scale",
  ),
  "vqgan_f16": (AUGMENTATION, "released run's GPU count and length unpublished"),
  "maskgit_vqgan": ("trainer unpublished", "entropy loss 0.1", "perceptual network", "D loss x2"),
  "magvit2_lfq": (AUGMENTATION, "lr x0.1 after epochs 200 and 250", "fp16"),
  "magvit2_lfq_128": (AUGMENTATION, "lr x0.1 after epochs 250 and 300", "fp16"),
  "ibq": (AUGMENTATION, "lr x0.1 after epochs 250 and 300", "fp16"),
  "bsq_vit": (
    AUGMENTATION,
    "world size unpublished",
    "warm-up from 0.1 lr",
    "R1 every 16 steps",
    "entropy ramp",
    "StyleGAN2 discriminator",
    "bf16",
  ),
  "titok_*:stage1": (AUGMENTATION, "fp16"),
  "titok_*:stage2": (AUGMENTATION, "fp16", "ConvNeXt-S perceptual", "blurred NLayerDiscriminator", "LeCam decay 0.999"),
  "var_vq16": ("no published recipe",),
  "titok_s128_pixel": ("no published recipe",),
}


def _preset(name: str):
  module, _, arg = name.partition(":")
  get_config = importlib.import_module(f"configs.{module}").get_config
  return get_config(arg) if arg else get_config()


def _value(c, dotted: str):
  """A config field; a quantizer field the preset leaves out is its class's default."""
  section, field = dotted.split(".")
  if section == "quantizer" and field not in c.quantizer:
    return inspect.signature(registry.quantizer_class(c.quantizer.type).__init__).parameters[field].default
  return c[section][field]


def _expected(name: str) -> dict:
  recipe, choices = RECIPES[name], CHOICES.get(name, {})
  assert not set(recipe) & set(choices), "a field is either the reference's or vqtok's choice"
  return {**recipe, **choices}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_preset_recipe_is_the_references(name):
  c = _preset(name)
  expected = _expected(name)
  trains_gan = expected.get("loss.gan_weight", 0) > 0
  missing = [f for f in FIELDS + (GAN if trains_gan else ()) if f not in expected]
  assert not missing, f"{name}: no reference value or vqtok choice for {missing}"
  for dotted, want in expected.items():
    got = _value(c, dotted)
    ok = math.isclose(got, want, rel_tol=1e-9) if isinstance(want, float) else got == want
    assert ok and type(got) is type(want), f"{name}: {dotted} = {got!r}, the recipe says {want!r}"


def test_presets_with_lpips_validate_once_the_weights_are_given(tmp_path):
  # perceptual_weight > 0 needs loss.lpips_weights (a file the user converts once): without it a
  # preset is refused before anything is written, naming the field; with it, it validates.
  weights = tmp_path / "lpips.npz"
  weights.write_bytes(b"")
  for name in sorted(RECIPES):
    c = _preset(name)
    if c.loss.perceptual_weight > 0:
      with pytest.raises(ValueError, match="lpips_weights"):
        config_lib.validate_config(c)
      c.loss.lpips_weights = str(weights)
    if name.endswith("stage2"):
      c.init_from = str(tmp_path)  # stage 2 freezes the encoder: it starts from stage 1
    if name.endswith("stage1"):
      c.teacher = str(tmp_path)
    if c.loss.feature_rec_weight > 0:
      c.feature_teacher = str(tmp_path)  # a feature teacher is a file the user converts, as the LPIPS weights
    config_lib.validate_config(c)


def _readme_rows() -> dict[str, str]:
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  section = text.split("### Training recipes", 1)[1].split("\n#", 1)[0]
  rows = {}
  for line in section.splitlines():
    m = re.match(r"\| `([^`]+)` \|", line)
    if m:
      rows[m.group(1)] = line
  return rows


@pytest.mark.parametrize("name", sorted(DIFFERENCES))
def test_readme_lists_each_difference(name):
  rows = _readme_rows()
  assert name in rows, f"README's Training recipes table has no row for `{name}`"
  for difference in DIFFERENCES[name]:
    assert difference in rows[name], f"README's row for `{name}` does not list {difference!r}"


@pytest.mark.parametrize(
  "preset,field,value,message",
  [
    ("tiny", "loss.disc_start", -1, "disc_start=-1 must be >= 0"),
    ("tiny", "loss.l1_weight", -0.5, "l1_weight=-0.5 must be >= 0"),
    ("tiny", "loss.perceptual_weight", -1.0, "perceptual_weight=-1.0 must be >= 0"),
    ("tiny", "loss.gan_weight", -0.1, "gan_weight=-0.1 must be >= 0"),
    ("tiny", "loss.lecam_weight", -0.1, "lecam_weight=-0.1 must be >= 0"),
    ("tiny", "loss.r1_weight", -10.0, "r1_weight=-10.0 must be >= 0"),
    ("tiny", "training.ema_decay", 1.0, r"ema_decay=1.0 must be in \[0, 1\)"),
    ("tiny", "training.ema_decay", -0.5, r"ema_decay=-0.5 must be in \[0, 1\)"),
    ("tiny", "optimizer.b1", 1.0, r"optimizer.b1=1.0 must be in \[0, 1\)"),
    ("tiny", "optimizer.b1", -0.1, r"optimizer.b1=-0.1 must be in \[0, 1\)"),
    ("tiny", "optimizer.b2", 1.5, r"optimizer.b2=1.5 must be in \[0, 1\)"),
    ("tiny", "optimizer.min_lr_ratio", 2.0, r"min_lr_ratio=2.0 must be in \[0, 1\]"),
    ("tiny", "optimizer.weight_decay", -1e-4, "weight_decay=-0.0001 must be >= 0"),
    ("tiny", "optimizer.no_decay", ("embed", ""), "must be a list of parameter-name substrings"),
    ("llamagen_vq16", "quantizer.commitment_weight", -0.25, "commitment_weight and codebook_weight must be >= 0"),
    ("magvit2_lfq", "quantizer.commitment_weight", -0.25, "LFQ commitment_weight must be >= 0"),
    ("magvit2_lfq", "quantizer.entropy_weight", -0.1, "LFQ entropy_weight must be >= 0"),
    ("magvit2_lfq", "quantizer.sample_entropy_weight", -1.0, "LFQ sample_entropy_weight must be >= 0"),
    ("magvit2_lfq", "quantizer.codebook_entropy_eps", -1e-5, "LFQ codebook_entropy_eps must be >= 0"),
    ("magvit2_lfq", "loss.lecam_decay", 1.0, r"loss.lecam_decay=1.0 must be in \[0, 1\)"),
    ("magvit2_lfq", "loss.disc_update_lead", -1, "disc_update_lead=-1 must be >= 0"),
    ("magvit2_lfq", "loss.gen_gan_loss", "wasserstein", "loss.gen_gan_loss"),
    ("bsq_vit", "quantizer.codebook_entropy_weight", -1.0, "BSQ codebook_entropy_weight must be >= 0"),
    ("ibq", "quantizer.sample_entropy_weight", -1.0, "IBQ sample_entropy_weight must be >= 0"),
    ("ibq", "quantizer.codebook_entropy_weight", -1.0, "IBQ codebook_entropy_weight must be >= 0"),
    ("var_vq16", "quantizer.beta", -0.25, "beta and inner_loss_weight must be >= 0"),
  ],
)
def test_a_field_no_reference_had_is_one_config_error(preset, field, value, message):
  c = _preset(preset)
  c.loss.perceptual_weight = 0.0  # no LPIPS weights here
  section, key = field.split(".")
  c[section][key] = value
  with pytest.raises(ValueError, match=message) as e:
    config_lib.validate_config(c)
  assert len(str(e.value).splitlines()) == 1
