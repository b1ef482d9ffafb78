"""Open-MAGVIT2 preset, 256px: f16 CNN with lookup-free quantization, 2^18 codes.

Run:
  python train.py --config=configs/magvit2_lfq.py --workdir=runs/magvit2_lfq \
    --config.data.source=tfds --config.data.name=imagenet2012

Reference: Yu et al., "Language Model Beats Diffusion -- Tokenizer is Key to
Visual Generation", 2023 (arXiv:2310.05737), image tokenizer, as replicated by
Open-MAGVIT2 (Luo et al., 2024, arXiv:2409.04410; TencentARC/SEED-Voken
configs/Open-MAGVIT2/gpu/imagenet_lfqgan_256_L.yaml): the ``magvit2`` CNN
family (bias-free res blocks, no attention, adaptive GroupNorm conditioned on
the quantized latent at each decoder level, depth-to-space upsampling),
ch 128, ch_mult 1-1-2-2-4, 4 res blocks, 18 latent channels = 18 LFQ bits read
least-significant first (the reference's token ids), commitment 0.25, entropy
weight 0.1 at temperature 0.01. 16x16 = 256 tokens at 256px. The
discriminator is vqtok's StyleGAN one (MAGVIT's), not Open-MAGVIT2's.
Parameters (tests/test_models.py): 115,127,829 (encoder 49,751,442, decoder
65,376,387; LFQ has none), equal to the reference's Encoder + Decoder.
"""

from vqtok.config import cnn_config
from vqtok.models.cnn import TAMING_F16
from vqtok.models.discriminator import MAGVIT_STYLEGAN


def get_config():
  c = cnn_config(
    **{**TAMING_F16, "num_res_blocks": 4},
    attention=False,
    cnn_family="magvit2",
    code_dim=18,
    quantizer={"type": "lfq", "bits": 18, "bit_order": "lsb_first"},
    discriminator=MAGVIT_STYLEGAN,  # 256 -> 4x4 before the dense head
  )
  c.training.batch_size = 64
  return c
