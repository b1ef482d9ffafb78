"""TiTok-L-32, the published architecture: 32 tokens, decoded through a MaskGIT VQGAN.

Import the authors' weights (tokenizer_titok_l32.bin or the hub's model.safetensors):
  python -m vqtok.convert titok tokenizer_titok_l32.bin tok/

Reference: Yu et al., "An Image is Worth 32 Tokens for Reconstruction and
Generation", NeurIPS 2024 (arXiv:2406.07550); bytedance/1d-tokenizer
configs/infer/TiTok/titok_l32.yaml and modeling/titok.py: ViT-L (width 1024,
24 blocks, 16 heads) encoder and decoder with patch 16 at 256 px, 32 learned
latent tokens, a VQ of 4096 l2-normalised codes of dim 12, and a decoder that
predicts, per 16x16 patch, logits over the 1024 codes of MaskGIT's VQGAN; the
softmax-weighted codes go through that VQGAN's decoder (channels 128, mult
1-1-2-2-4, 2 res blocks). Images in [0, 1]. rFID 2.21 (authors). Parameters:
equal to the reference's tensors (tests/test_pretrained.py).
"""

import ml_collections

from vqtok.config import default_config


def titok_config(*, width: int, depth: int, num_latent_tokens: int, image_size: int = 256, patch_size: int = 16):
  """A published TiTok tokenizer's config (heads of width 64, MLP 4x, as blocks.py sizes them)."""
  c = default_config()
  c.image_size = image_size
  c.model.encoder = "vit1d"
  c.model.vit_family = "titok"
  c.model.width, c.model.depth, c.model.mlp_dim = width, depth, 4 * width
  c.model.num_heads, c.model.patch_size = width // 64, patch_size
  c.model.posemb = "learn"
  c.model.num_latent_tokens = num_latent_tokens
  c.model.code_dim = 12
  c.model.input_range = (0.0, 1.0)
  c.model.proxy_codebook_size = 1024
  c.model.proxy_code_dim = 256
  c.model.proxy_decoder = ml_collections.ConfigDict(
    {"channels": 128, "channel_mult": (1, 1, 2, 2, 4), "num_res_blocks": 2, "norm_groups": 32}
  )
  c.quantizer = ml_collections.ConfigDict({"type": "vq", "codebook_size": 4096, "l2_normalize": True})
  c.data.preprocess = "torchvision_center_crop"
  c.discriminator.update(type="stylegan", channels=64, num_layers=6)
  return c


def get_config():
  return titok_config(width=1024, depth=24, num_latent_tokens=32)
