"""TiTok-S-128, the published architecture: 128 tokens, decoded through a MaskGIT VQGAN.

Import the authors' weights (tokenizer_titok_s128.bin or the hub's model.safetensors):
  python -m vqtok.convert titok tokenizer_titok_s128.bin tok/

Reference: Yu et al., "An Image is Worth 32 Tokens for Reconstruction and
Generation", NeurIPS 2024 (arXiv:2406.07550); bytedance/1d-tokenizer
configs/infer/TiTok/titok_s128.yaml: TiTok "small" ViTs (width 512, 8 blocks,
8 heads) with patch 16 at 256 px, 128 latent tokens, 4096 l2-normalised codes
of dim 12; the decoder predicts logits over the 1024 codes of MaskGIT's VQGAN,
whose decoder makes the pixels. rFID 1.71 (authors). Parameters: equal to the
reference's tensors (tests/test_pretrained.py).

``titok_s128.py:stage1`` / ``:stage2``: TiTok's two-stage training recipe
(bytedance/1d-tokenizer configs/training/TiTok/stage{1,2}/titok_s128.yaml); see
``two_stage`` in configs/titok_l32.py for the values and the differences.
"""

from configs.titok_l32 import titok_config, two_stage


def get_config(arg: str | None = None):
  return two_stage(titok_config(width=512, depth=8, num_latent_tokens=128), arg or "")
