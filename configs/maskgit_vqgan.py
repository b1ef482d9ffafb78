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
  c.training.batch_size = 64
  return c
