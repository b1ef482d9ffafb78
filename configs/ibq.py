"""IBQ preset: the taming f16 CNN with a 262,144-code index-backpropagation quantizer, 256px.

Run:
  python train.py --config=configs/ibq.py --workdir=runs/ibq \
    --config.data.source=tfds --config.data.name=imagenet2012

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
"""

import ml_collections

from vqtok.config import default_config


def get_config():
  c = default_config()
  c.image_size = 256
  c.model.encoder = "cnn"
  c.model.channels = 128
  c.model.channel_mult = (1, 1, 2, 2, 4)
  c.model.num_res_blocks = 4
  c.model.attention = True
  c.model.z_channels = 256
  c.model.code_dim = 256
  c.quantizer = ml_collections.ConfigDict(
    {
      "type": "ibq",
      "codebook_size": 2**18,
      "commitment_weight": 1.0,
      "codebook_weight": 0.25,
      "entropy_weight": 0.05,
      "entropy_temperature": 0.01,
    }
  )
  c.discriminator.type = "patchgan"
  c.discriminator.channels = 64
  c.discriminator.num_layers = 3
  c.training.batch_size = 64
  return c
