"""BSQ-ViT preset: ViT-B/8 encoder and decoder with 18-bit binary spherical quantization.

Run:
  python train.py --config=configs/bsq_vit.py --workdir=runs/bsq_vit \
    --config.data.source=tfds --config.data.name=imagenet2012

Reference: Zhao, Xiong and Krähenbühl, "Image and Video Tokenization with Binary
Spherical Quantization", 2024 (arXiv:2406.07548): ViT-B encoder and decoder,
patch size 8 at 256px (32x32 = 1024 tokens per image), the width-768 output
projected to L = 18 dims on the unit sphere and binarised (2^18 implicit codes).
Parameters (tests/test_models.py): 172.01M (encoder 86.00M, decoder 86.00M;
BSQ has none) plus a 24.0M StyleGAN discriminator.

The ViT sizes come from ``model.variant`` / ``model.decoder_variant``
(big_vision names such as "B/8"); ``model.posemb`` is "learn" or "sincos2d".
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
  c.quantizer = ml_collections.ConfigDict({"type": "bsq", "bits": 18, "bit_order": "msb_first"})
  c.discriminator.update(MAGVIT_STYLEGAN)
  c.training.batch_size = 64
  return c
