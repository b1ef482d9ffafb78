"""Open-MAGVIT2 preset, 256px: f16 CNN with lookup-free quantization, 2^18 codes.

Run:
  python train.py --config=configs/magvit2_lfq.py --workdir=runs/magvit2_lfq \
    --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz

Reference: Yu et al., "Language Model Beats Diffusion -- Tokenizer is Key to
Visual Generation", 2023 (arXiv:2310.05737), image tokenizer, as replicated by
Open-MAGVIT2 (Luo et al., 2024, arXiv:2409.04410; TencentARC/SEED-Voken
configs/Open-MAGVIT2/gpu/imagenet_lfqgan_256_L.yaml): the ``magvit2`` CNN
family (bias-free res blocks, no attention, adaptive GroupNorm conditioned on
the quantized latent at each decoder level, depth-to-space upsampling),
ch 128, ch_mult 1-1-2-2-4, 4 res blocks, 18 latent channels = 18 LFQ bits read
least-significant first (the reference's token ids), commitment 0.25, entropy
weight 0.1 at temperature 0.01. 16x16 = 256 tokens at 256px.
Parameters (tests/test_models.py): 115,127,829 (encoder 49,751,442, decoder
65,376,387; LFQ has none), equal to the reference's Encoder + Decoder.

Recipe (``recipe``): the same yaml with src/Open_MAGVIT2/models/lfqgan.py and
modules/losses/vqperceptual.py: Adam (0.5, 0.9) at 1e-4 for both networks
(no scheduler; the x0.1 drops after epochs 200 and 250 have no vqtok field),
no clipping, 8 x 8 x 4 = 256 images a step for 270 epochs, EMA 0.999, L1 1 +
LPIPS 1 + a fixed GAN weight 0.1 from step 0 with LeCam 0.05, a PatchGAN
discriminator (3 layers, 64 channels), no flips. tests/test_recipes.py holds
the values with their lines; README "Training recipes" lists the differences.
"""

from vqtok.config import cnn_config
from vqtok.models.cnn import TAMING_F16
from vqtok.models.discriminator import TAMING_PATCHGAN
from vqtok.pretrained.open_magvit2 import LFQ_TRAINING

#: ImageNet-1k's training images: an epoch is ceil(1,281,167 / 256) = 5,005 steps (no drop_last).
STEPS_PER_EPOCH = 5_005


def recipe(c, *, epochs: int, lecam_weight: float, disc_update_lead: int = 1):
  """Open-MAGVIT2's training recipe (configs/Open-MAGVIT2/gpu/imagenet_lfqgan_{256,128}_L.yaml) on ``c``.

  ``disc_update_lead``: lfqgan.py:187-197 runs the discriminator's loss after the generator's
  step, when Lightning's global_step has counted it, so a disc_start > 0 would let the
  discriminator train one step before the generator's GAN term starts (IBQ updates the
  discriminator first: 0). With the yaml's disc_start 0 both start at once.
  """
  # lfqgan.py configure_optimizers: Adam (0.5, 0.9) for G and D; scheduler_type "None"; no gradient clipping.
  c.optimizer.update(lr=1e-4, disc_lr=1e-4, b1=0.5, b2=0.9, weight_decay=0.0, grad_clip=0.0)
  c.optimizer.update(warmup_steps=0, min_lr_ratio=1.0)
  c.training.update(batch_size=256, num_steps=epochs * STEPS_PER_EPOCH, ema_decay=0.999)  # LitEma(decay=0.999)
  # vqperceptual.py: L1 + LPIPS, a fixed gen_loss_weight (disc_weight is unused), hinge D, from disc_start 0;
  # G: the non-saturating loss of each image's mean logit (l.43-54, 176).
  c.loss.update(l1_weight=1.0, l2_weight=0.0, perceptual_weight=1.0, gan_weight=0.1, adaptive_weight=False)
  c.loss.update(gan_loss="hinge", gen_gan_loss="non_saturating_per_image", disc_start=0)
  # LeCAM_EMA(decay=0.999), updated with the batch's logits before lecam_reg reads it (l.73-86, 246-247).
  c.loss.update(lecam_weight=lecam_weight, lecam_decay=0.999, lecam_ema_first=True)
  c.loss.disc_update_lead = disc_update_lead
  c.data.flip = False  # data/base.py: Resize + RandomCrop, no flip
  return c


def get_config():
  c = cnn_config(
    **{**TAMING_F16, "num_res_blocks": 4},
    attention=False,
    cnn_family="magvit2",
    code_dim=18,
    quantizer={"type": "lfq", "bits": 18, "bit_order": "lsb_first", **LFQ_TRAINING},
    discriminator={**TAMING_PATCHGAN, "norm": "batch"},  # NLayerDiscriminator: 3 layers, 64 channels, BatchNorm
  )
  return recipe(c, epochs=270, lecam_weight=0.05)
