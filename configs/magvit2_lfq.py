"""MAGVIT-v2-style preset: f16 CNN with lookup-free quantization, 2^18 codes.

Run:
  python train.py --config=configs/magvit2_lfq.py --workdir=runs/magvit2_lfq \
    --config.data.source=tfds --config.data.name=imagenet2012

Reference: Yu et al., "Language Model Beats Diffusion -- Tokenizer is Key to
Visual Generation", 2023 (arXiv:2310.05737), image tokenizer; sizes as in the
open replication Open-MAGVIT2 (Luo et al., 2024, arXiv:2409.04410): ch 128,
ch_mult 1-1-2-2-4, 4 res blocks, no attention, 18 latent channels = 18 LFQ
bits. StyleGAN discriminator as in MAGVIT. 16x16 = 256 tokens at 256px.
Our decoder is the plain VQGAN mirror (Open-MAGVIT2 adds adaptive GroupNorm
and depth-to-space upsampling), so the count differs from theirs.
Parameters (tests/test_models.py): 92.89M (encoder 40.40M, decoder 52.50M;
LFQ has none) plus a 24.0M StyleGAN discriminator. Open-MAGVIT2's own decoder
is larger (adaptive GroupNorm); their published total is not re-verified here.
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
  c.model.attention = False
  c.model.code_dim = 18
  c.quantizer = ml_collections.ConfigDict({"type": "lfq", "bits": 18, "bit_order": "msb_first"})
  c.discriminator.type = "stylegan"
  c.discriminator.channels = 64
  c.discriminator.num_layers = 6  # 256 -> 4x4 before the dense head
  c.training.batch_size = 64
  return c
