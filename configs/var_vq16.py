"""VAR's multi-scale VQ tokenizer: f16 CNN, 4096 codes of dimension 32, 10 scales.

Run:
  python train.py --config=configs/var_vq16.py --workdir=runs/var_vq16 \
    --config.data.source=tfds --config.data.name=imagenet2012

Reference: Tian et al., "Visual Autoregressive Modeling: Scalable Image
Generation via Next-Scale Prediction", 2024 (arXiv:2404.02905); the published
tokenizer vae_ch160v4096z32: ch 160, ch_mult 1-1-2-2-4, 2 res blocks,
attention at the lowest resolution, a 32-dim latent quantized at the scales
1, 2, 3, 4, 5, 6, 8, 10, 13, 16 with one codebook of 4096 codes shared by all
scales, 4 partially shared phi convolutions blended at 0.5, commitment beta
0.25, 3x3 convolutions before and after the quantizer. Parameters
(tests/test_pretrained_var.py): 108.95M, as the published file.
1+4+9+16+25+36+64+100+169+256 = 680 tokens per image at 256px, in scale
order (vqtok.quantizers.MultiScaleResidual). VAR did not publish its
tokenizer trainer; the losses here are vqtok's (L1, GAN), the quantizer loss
is VAR's.

``--config=configs/var_vq16.py:runlocal`` is a tiny multi-scale tokenizer at
32px (8x8 latent, scales 1, 2, 3, 4, 6, 8: 130 tokens) that trains on CPU in
the tests.
"""

import ml_collections

from configs.tiny import runlocal
from vqtok.config import cnn_config, default_config
from vqtok.models.cnn import TAMING_F16
from vqtok.models.discriminator import TAMING_PATCHGAN

SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def quantizer(scales, codebook_size):
  return ml_collections.ConfigDict(
    {
      "type": "multiscale",
      "scales": tuple(scales),
      "phi_ratio": 0.5,  # VAR's quant_resi
      "phi_count": 4,  # VAR's share_quant_resi
      "beta": 0.25,
      "quantizer": {"type": "vq", "codebook_size": codebook_size},
    }
  )


def get_config(arg: str | None = None):
  if arg == "runlocal":  # the tiny preset's test schedule (an 8x8 latent at 32px), with VAR's quantizer
    c = runlocal(default_config())
    c.model.code_dim = 4
    c.model.z_channels = 4  # with project_kernel 3: VAR's 3x3 quant_conv / post_quant_conv
    c.model.project_kernel = 3
    c.quantizer = quantizer((1, 2, 3, 4, 6, 8), 64)
    return c
  if arg:
    raise ValueError(f"unknown variant {arg!r} of configs/var_vq16.py (known: runlocal)")
  c = cnn_config(
    **{**TAMING_F16, "channels": 160},
    attention=True,
    z_channels=32,
    code_dim=32,
    project_kernel=3,  # VAR's quant_conv / post_quant_conv: 3x3, 32 -> 32 channels
    quantizer=quantizer(SCALES, 4096),
    discriminator=TAMING_PATCHGAN,
  )
  c.training.batch_size = 128
  return c
