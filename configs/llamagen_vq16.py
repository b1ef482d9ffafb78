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

from vqtok.config import cnn_config
from vqtok.models.cnn import TAMING_F16
from vqtok.models.discriminator import TAMING_PATCHGAN


def get_config():
  c = cnn_config(
    **TAMING_F16,
    attention=True,
    z_channels=256,  # projected to code_dim by a Linear
    code_dim=8,
    quantizer={"type": "vq", "codebook_size": 16384, "l2_normalize": True},
    discriminator=TAMING_PATCHGAN,
  )
  c.training.batch_size = 128
  return c
