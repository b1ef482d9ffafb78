"""MaskGIT VQGAN preset: MaskGIT's f16 CNN tokenizer with a 1024-code VQ, 256px.

Run:
  python train.py --config=configs/maskgit_vqgan.py --workdir=runs/maskgit \
    --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz

Reference: Chang et al., "MaskGIT: Masked Generative Image Transformer", CVPR
2022 (arXiv:2202.04200); google-research/maskgit configs/vqgan_config.py:
filters 128, channel multipliers 1-1-2-2-4, 2 res blocks, no attention,
average-pool downsampling, bias-free res blocks, 256-dim codes, images in
[0, 1]. 16x16 = 256 tokens per image.
Parameters: 54,515,587 (encoder 23.78M, decoder 30.48M, codebook 0.26M), the
reference's own count (tests/test_pretrained.py). ``python -m vqtok.convert
maskgit tokenizer_imagenet256_checkpoint DIR`` imports the published weights.

Recipe: MaskGIT published its VQGAN's hyper-parameters
(maskgit/configs/vqgan_config.py over base_config.py) but not its trainer
(README: "Training [Coming Soon]"): Adam (0.0, 0.99) at a constant 1e-4 for
both networks after base_config's 2,000 warm-up steps, batch 256, 1M steps,
EMA 0.999, perceptual weight 0.1, non-saturating GAN 0.1 with R1 10, entropy
loss 0.1. What only the trainer decides (reconstruction loss, adaptive GAN
weight, discriminator start, clipping, augmentation) keeps vqtok's defaults.
tests/test_recipes.py holds the values with their lines; README "Training
recipes" lists the differences.
"""

from vqtok.config import cnn_config
from vqtok.models.cnn import TAMING_F16
from vqtok.models.discriminator import MAGVIT_STYLEGAN


def get_config():
  c = cnn_config(
    cnn_family="maskgit",
    **TAMING_F16,
    attention=False,
    code_dim=256,
    input_range=(0.0, 1.0),
    quantizer={"type": "vq", "codebook_size": 1024},
    preprocess="squash_bicubic",
    discriminator=MAGVIT_STYLEGAN,
  )
  # vqgan_config.py: optimizer.beta1/beta2, g_lr/d_lr; base_config.py: "adam", "constant", 2,000 warm-up steps.
  c.optimizer.update(lr=1e-4, disc_lr=1e-4, b1=0.0, b2=0.99, weight_decay=0.0, warmup_steps=2_000, min_lr_ratio=1.0)
  c.training.update(batch_size=256, num_steps=1_000_000, ema_decay=0.999)  # polyak_decay
  # perceptual_loss_weight 0.1 (MaskGIT's own network; LPIPS here), non-saturating G and D loss, weight 0.1;
  # grad_penalty_cost 10 on an unhalved D loss is r1_weight 10 on vqtok's halved one (0.5 r1_weight r1).
  c.loss.update(perceptual_weight=0.1, gan_loss="non_saturating", gan_weight=0.1, r1_weight=10.0)
  return c
