"""TiTok-B-64, the published architecture: 64 tokens, decoded through a MaskGIT VQGAN.

Import the authors' weights (tokenizer_titok_b64.bin or the hub's model.safetensors):
  python -m vqtok.convert titok tokenizer_titok_b64.bin tok/

Reference: bytedance/1d-tokenizer configs/infer/TiTok/titok_b64.yaml: ViT-B
(width 768, 12 blocks, 12 heads) encoder and decoder, patch 16 at 256 px, 64
latent tokens, 4096 l2-normalised codes of dim 12, MaskGIT VQGAN pixel
decoder. rFID 1.70 (authors). Parameters: equal to the reference's tensors
(tests/test_pretrained.py).

``titok_b64.py:stage1`` / ``:stage2``: TiTok's two-stage training recipe
(bytedance/1d-tokenizer configs/training/TiTok/stage{1,2}/titok_b64.yaml); see
``two_stage`` in configs/titok_l32.py for the values and the differences.
"""

from configs.titok_l32 import titok_config, two_stage


def get_config(arg: str | None = None):
  return two_stage(titok_config(width=768, depth=12, num_latent_tokens=64), arg or "")
