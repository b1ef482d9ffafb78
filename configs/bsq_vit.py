"""BSQ-ViT preset: ViT-B/8 encoder and decoder with 18-bit binary spherical quantization.

Run:
  python train.py --config=configs/bsq_vit.py --workdir=runs/bsq_vit \
    --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz

Reference: Zhao, Xiong and Krähenbühl, "Image and Video Tokenization with Binary
Spherical Quantization", 2024 (arXiv:2406.07548): ViT-B encoder and decoder,
patch size 8 at 256px (32x32 = 1024 tokens per image), the width-768 output
projected to L = 18 dims on the unit sphere and binarised (2^18 implicit codes).
Parameters (tests/test_models.py): 172.01M (encoder 86.00M, decoder 86.00M;
BSQ has none) plus a 24.0M StyleGAN discriminator.

The ViT sizes come from ``model.variant`` / ``model.decoder_variant``
(big_vision names such as "B/8"); ``model.posemb`` is "learn" or "sincos2d".

Recipe: zhaoyue-zephyrus/bsq-vit
configs/tokenizer/imagenet_256x256_bsqvit_b18g18_stylegan_f8_fp16.yaml with
scripts/main_image_tokenizer.py and transcoder/losses/vqperceptual.py, on the
8 GPUs of its submitit launcher's default (no training command is
published): AdamW (0.9, 0.99), weight decay 1e-4, lr 4e-7 x 8 x 32 = 1.024e-4
for both networks with 5,000 warm-up steps and a cosine to half of it at 1M
steps, no clipping, batch 8 x 32 = 256, EMA 0.999, L1 1 + LPIPS 0.1 + a fixed
non-saturating GAN 0.1 from step 0 with R1 (gamma 10), no commitment loss,
entropy weight 0.1, no flips. tests/test_recipes.py holds the values with
their lines; README "Training recipes" lists the differences.
"""

import ml_collections

from vqtok.config import default_config
from vqtok.models.discriminator import MAGVIT_STYLEGAN


def get_config():
  c = default_config()
  c.image_size = 256
  c.model.encoder = "vit"
  c.model.variant = "B/8"
  c.model.decoder_variant = "B/8"
  c.model.posemb = "learn"
  c.model.code_dim = 18
  # beta: 0. in the yaml; the entropy term (codebook_weight 0.1) is the BSQ default.
  c.quantizer = ml_collections.ConfigDict(
    {"type": "bsq", "bits": 18, "bit_order": "msb_first", "commitment_weight": 0.0}
  )
  c.discriminator.update(MAGVIT_STYLEGAN)
  # lr = base_lr x world_size x batch_size (main_image_tokenizer.py), 8 GPUs; LambdaWarmUpCosineScheduler
  # (lr_start 0.1, lr_min 0.5): the warm-up starts at 0 here, at 0.1 x lr there.
  c.optimizer.update(lr=1.024e-4, disc_lr=1.024e-4, b1=0.9, b2=0.99, weight_decay=1e-4, grad_clip=0.0)
  c.optimizer.update(warmup_steps=5_000, min_lr_ratio=0.5)
  c.training.update(batch_size=256, num_steps=1_000_000, ema_decay=0.999)  # --ema-decay's default
  # disc_loss "vanilla" = non-saturating; R1 every 16 D steps at 16 x gamma / 2 is on average 0.5 x 10 x r1.
  c.loss.update(l1_weight=1.0, l2_weight=0.0, perceptual_weight=0.1, gan_weight=0.1, adaptive_weight=False)
  c.loss.update(gan_loss="non_saturating", disc_start=0, r1_weight=10.0)
  c.data.flip = False  # Resize + RandomCrop (use_rrc and use_hflip are off)
  return c
