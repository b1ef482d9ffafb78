"""LlamaGen VQ-16 preset: f16 CNN, 16384 codes of dimension 8, l2-normalised.

Run:
  python train.py --config=configs/llamagen_vq16.py --workdir=runs/llamagen_vq16 \
    --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz

Reference: Sun et al., "Autoregressive Model Beats Diffusion: Llama for
Scalable Image Generation", 2024 (arXiv:2406.06525), tokenizer VQ-16: ch 128,
ch_mult 1-1-2-2-4, 2 res blocks, attention at the lowest resolution,
z_channels 256 projected to an 8-dim codebook of 16384 l2-normalised codes.
16x16 = 256 tokens per image at 256px.
Parameters (tests/test_models.py): 71.88M (encoder 29.30M, decoder 42.45M,
codebook 0.13M, projections 4k) plus a 2.77M PatchGAN; published: 72M.

Recipe: LlamaGen's published command (GETTING_STARTED.md: train_vq.sh
--image-size 256 --vq-model VQ-16), i.e. the argparse defaults of
tokenizer/tokenizer_image/vq_train.py: Adam (0.9, 0.95) at a constant 1e-4 for
both networks, clip 1.0, global batch 128, 40 epochs, no EMA, MSE 1 + LPIPS 1
+ hinge GAN 0.5 (fixed) from step 20,000. tests/test_recipes.py holds the
values with their lines; README "Training recipes" lists the differences.
"""

from vqtok.config import cnn_config
from vqtok.models.cnn import TAMING_F16
from vqtok.models.discriminator import TAMING_PATCHGAN


def get_config():
  c = cnn_config(
    **TAMING_F16,
    attention=True,
    z_channels=256,  # projected to code_dim by a Linear
    code_dim=8,
    quantizer={"type": "vq", "codebook_size": 16384, "l2_normalize": True},
    discriminator={**TAMING_PATCHGAN, "norm": "batch"},  # vq_loss.py PatchGAN: BatchNorm, trained on batch stats
  )
  # tokenizer/tokenizer_image/vq_train.py: Adam, no scheduler (--weight-decay is parsed but unused).
  c.optimizer.update(lr=1e-4, disc_lr=1e-4, b1=0.9, b2=0.95, weight_decay=0.0, grad_clip=1.0)
  c.optimizer.update(warmup_steps=0, min_lr_ratio=1.0)
  # vq_train.py:207-216 steps D's Adam every iteration, on a zero loss before --disc-start.
  c.optimizer.disc_steps_before_start = True
  # 40 epochs of ImageNet's 1,281,167 images at 128 (drop_last): 40 x 10,009 steps; --ema is off by default.
  c.training.update(batch_size=128, num_steps=400_360, ema_decay=0.0)
  # vq_loss.py: MSE on [-1, 1]; the GAN weight is fixed; adopt_weight(global_step=train_steps + 1, 20000)
  # switches G's and D's GAN terms on at the 0-based step 19,999.
  c.loss.update(l1_weight=0.0, l2_weight=1.0, perceptual_weight=1.0)
  c.loss.update(gan_weight=0.5, adaptive_weight=False, gan_loss="hinge", disc_start=19_999)
  c.loss.disc_loss_weight = 0.5  # vq_loss.py:160: D's loss is scaled by the same disc_weight
  return c
