"""MaskGIT VQGAN preset: MaskGIT's f16 CNN tokenizer with a 1024-code VQ, 256px.

Run:
  python train.py --config=configs/maskgit_vqgan.py --workdir=runs/maskgit \
    --config.data.source=tfds --config.data.name=imagenet2012

Reference: Chang et al., "MaskGIT: Masked Generative Image Transformer", CVPR
2022 (arXiv:2202.04200); google-research/maskgit configs/vqgan_config.py:
filters 128, channel multipliers 1-1-2-2-4, 2 res blocks, no attention,
average-pool downsampling, bias-free res blocks, 256-dim codes, images in
[0, 1]. 16x16 = 256 tokens per image.
Parameters: 54,515,587 (encoder 23.78M, decoder 30.48M, codebook 0.26M), the
reference's own count (tests/test_pretrained.py). ``python -m vqtok.convert
maskgit tokenizer_imagenet256_checkpoint DIR`` imports the published weights.
"""

import ml_collections

from vqtok.config import default_config


def get_config():
  c = default_config()
  c.image_size = 256
  c.model.encoder = "cnn"
  c.model.cnn_family = "maskgit"
  c.model.channels = 128
  c.model.channel_mult = (1, 1, 2, 2, 4)
  c.model.num_res_blocks = 2
  c.model.attention = False
  c.model.code_dim = 256
  c.model.input_range = (0.0, 1.0)
  c.quantizer = ml_collections.ConfigDict({"type": "vq", "codebook_size": 1024})
  c.data.preprocess = "squash_bicubic"
  c.discriminator.type = "stylegan"
  c.discriminator.channels = 64
  c.discriminator.num_layers = 6
  c.training.batch_size = 64
  return c
