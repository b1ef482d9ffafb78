"""LlamaGen VQ-16 preset: f16 CNN, 16384 codes of dimension 8, l2-normalised.

Run:
  python train.py --config=configs/llamagen_vq16.py --workdir=runs/llamagen_vq16 \
    --config.data.source=tfds --config.data.name=imagenet2012

Reference: Sun et al., "Autoregressive Model Beats Diffusion: Llama for
Scalable Image Generation", 2024 (arXiv:2406.06525), tokenizer VQ-16: ch 128,
ch_mult 1-1-2-2-4, 2 res blocks, attention at the lowest resolution,
z_channels 256 projected to an 8-dim codebook of 16384 l2-normalised codes.
16x16 = 256 tokens per image at 256px.
Parameters (tests/test_models.py): 71.88M (encoder 29.30M, decoder 42.45M,
codebook 0.13M, projections 4k) plus a 2.77M PatchGAN; published: 72M.
"""

import ml_collections

from vqtok.config import default_config


def get_config():
  c = default_config()
  c.image_size = 256
  c.model.encoder = "cnn"
  c.model.channels = 128
  c.model.channel_mult = (1, 1, 2, 2, 4)
  c.model.num_res_blocks = 2
  c.model.attention = True
  c.model.z_channels = 256  # projected to code_dim by a Linear
  c.model.code_dim = 8
  c.quantizer = ml_collections.ConfigDict({"type": "vq", "codebook_size": 16384, "l2_normalize": True})
  c.discriminator.type = "patchgan"
  c.discriminator.channels = 64
  c.discriminator.num_layers = 3
  c.training.batch_size = 128
  return c
