"""Single-stage TiTok-S-128-like preset: 1-D tokenizer, ViT-S/16, 128 latent tokens, VQ 4096 codes.

Run:
  python train.py --config=configs/titok_s128_pixel.py --workdir=runs/titok_s128_pixel \
    --config.data.source=tfds --config.data.name=imagenet2012

Reference: Yu et al., "An Image is Worth 32 Tokens for Reconstruction and
Generation", NeurIPS 2024 (arXiv:2406.07550): ViT-S encoder and decoder with
patch size 16 at 256px, K = 128 learned latent tokens (128 tokens per image),
a 4096-code VQ of 12-dim l2-normalised codes (token_size 12 in the official
configs/titok_s128.yaml of bytedance/1d-tokenizer). Our decoder predicts
pixels directly (single-stage); the paper's two-stage recipe predicts proxy
codes of a frozen MaskGIT VQGAN instead.
Parameters (tests/test_models.py): 43.58M (encoder 21.79M, decoder 21.74M,
codebook 0.05M) plus a 2.77M PatchGAN.
"""

import ml_collections

from vqtok.config import default_config
from vqtok.models.discriminator import TAMING_PATCHGAN


def get_config():
  c = default_config()
  c.image_size = 256
  c.model.encoder = "vit1d"
  c.model.variant = "S/16"
  c.model.decoder_variant = "S/16"
  c.model.posemb = "learn"
  c.model.num_latent_tokens = 128
  c.model.code_dim = 12
  c.quantizer = ml_collections.ConfigDict({"type": "vq", "codebook_size": 4096, "l2_normalize": True})
  c.discriminator.update(TAMING_PATCHGAN)
  c.training.batch_size = 64
  return c
