"""VQGAN f16 preset: the taming-transformers CNN with a 1024-code VQ, 256px.

Run:
  python train.py --config=configs/vqgan_f16.py --workdir=runs/vqgan_f16 \
    --config.data.source=tfds --config.data.name=imagenet2012

Reference: Esser et al., "Taming Transformers", CVPR 2021 (arXiv:2012.09841),
ImageNet f16 / 1024 config (ch 128, ch_mult 1-1-2-2-4, 2 res blocks, attention
at 16x16, z_channels = embed_dim = 256). MaskGIT (Chang et al., 2022) uses
the same levels and codebook without attention: --config.model.attention=False.
16x16 = 256 tokens per image.
Parameters: 72,141,699 (encoder 29.30M, decoder 42.45M, codebook 0.26M, and
taming's 1x1 quant_conv / post_quant_conv, kept at equal widths, as Linear
projections: 0.13M) plus a 2.77M PatchGAN; the same count as taming's own
VQModel (tests/test_pretrained.py checks it against the reference's tensors).
``python -m vqtok.convert taming last.ckpt DIR`` imports the published weights.
"""

from vqtok.config import cnn_config
from vqtok.models.cnn import TAMING_F16
from vqtok.models.discriminator import TAMING_PATCHGAN


def get_config():
  c = cnn_config(
    **TAMING_F16,
    attention=True,
    z_channels=256,
    code_dim=256,
    quantizer={"type": "vq", "codebook_size": 1024},
    discriminator=TAMING_PATCHGAN,
  )
  c.training.batch_size = 64
  return c
