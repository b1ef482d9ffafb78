"""IBQ preset: the taming f16 CNN with a 262,144-code index-backpropagation quantizer, 256px.

Run:
  python train.py --config=configs/ibq.py --workdir=runs/ibq \
    --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz

Reference: Shi et al., "Taming Scalable Visual Tokenizer for Autoregressive
Image Generation", 2024 (arXiv:2412.02692), SEED-Voken
configs/IBQ/gpu/imagenet_ibqgan_262144.yaml: ch 128, ch_mult 1-1-2-2-4,
4 res blocks, attention at 16x16, z_channels = embed_dim = 256, 2^18 codes,
β = 0.25, entropy loss weight 0.05 at temperature 0.01, PatchGAN
discriminator (3 layers, 64 channels). 16x16 = 256 tokens per image.
Parameters (tests/test_models.py): 173,896,579 (encoder 46.75M, decoder
59.90M, codebook 67.11M, 1x1 quant_conv / post_quant_conv as Linear
projections 0.13M), the count of the reference's own modules
(Encoder + Decoder + quant_conv + post_quant_conv + embedding).

Recipe: the same yaml with src/IBQ/models/ibqgan.py and
modules/losses/vqperceptual.py, as configs/magvit2_lfq.py's ``recipe``: Adam
(0.5, 0.9) at 1e-4 for both networks (the x0.1 drops after epochs 250 and 300
have no vqtok field), no clipping, 4 x 8 x 8 = 256 images a step for 330
epochs, EMA 0.999, L1 1 + LPIPS 1 + a fixed GAN weight 0.1 from step 0 with
LeCam 0.05, no flips. tests/test_recipes.py holds the values with their
lines; README "Training recipes" lists the differences.
"""

from configs.magvit2_lfq import recipe
from vqtok.config import cnn_config
from vqtok.models.cnn import TAMING_F16
from vqtok.models.discriminator import TAMING_PATCHGAN


def get_config():
  c = cnn_config(
    **{**TAMING_F16, "num_res_blocks": 4},
    attention=True,
    z_channels=256,
    code_dim=256,
    quantizer={
      "type": "ibq",
      "codebook_size": 2**18,
      "commitment_weight": 1.0,
      "codebook_weight": 0.25,
      "entropy_weight": 0.05,
      "entropy_temperature": 0.01,
    },
    discriminator={**TAMING_PATCHGAN, "norm": "batch"},  # NLayerDiscriminator with BatchNorm (train mode)
  )
  # ibqgan.py:226-240 steps the discriminator before the generator: global_step is the same for both.
  return recipe(c, epochs=330, lecam_weight=0.05, disc_update_lead=0)
