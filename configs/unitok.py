"""UniTok's image tokenizer (ViTamin-L, 16 x 16 x 8 tokens at 256 px), the published architecture.

Import the authors' weights (unitok_tokenizer.pth, huggingface.co/FoundationVision/unitok_tokenizer):
  python -m vqtok.convert unitok unitok_tokenizer.pth tok/

Reference: Ma et al., "UniTok: A Unified Tokenizer for Visual Generation and
Understanding", 2025 (arXiv:2502.20321); FoundationVision/UniTok bb8012e
models/unitok.py with utils/config.py's defaults (model vitamin_large, img_size
256, vocab_size 32768, vocab_width 64, num_codebooks 8, quant_proj attn,
num_query 0). Encoder: ViTamin-L (models/vitamin.py ``vitamin_large``): a conv
stem of width 160 (/2), MBConv stages of 2 x 160 and 4 x 320 blocks (/2 each),
a LayerNorm and a 3x3 stride-2 conv to 1024 (/16), then 31 pre-norm ViT blocks
(16 heads, GeGLU MLP 2048 wide with its own LayerNorm), no class token and no
position embedding. ``AttnProjection`` 1024 -> 64, 8 l2-normalised codebooks of
4096 codes x 8 channels (grouped l2 VQ), ``AttnProjection`` 64 -> 1024; decoder:
31 of the same ViT blocks, then ``ViTaminDecoder``'s upsampling: a x2 nearest +
3x3 conv to 320, MBConv stages of 4 x 320 and 2 x 160 blocks (x2 each), and a x2
stem to RGB. Authors' figures (README): rFID 0.38 and 78.6% ImageNet zero-shot
for the CLIP-initialised model, 0.41 and 70.8% for the released one (trained
from scratch). Parameters (tests/test_pretrained_unitok.py): 695,858,115, the
reference's image tokenizer less its frozen zero position embedding. The text
tower and CLIP heads (124.9M) are not part of the tokenizer.

Training UniTok's recipe (its CLIP contrastive loss needs the text tower) is
not reproduced: this preset is for the imported weights (encode, decode,
evaluate, fine-tune with vqtok's own losses).
"""

import ml_collections

from vqtok.config import default_config

NUM_CODEBOOKS = 8


def get_config():
  c = default_config()
  c.image_size = 256
  c.data.preprocess = "bilinear_1125_center_crop"  # inference.py: Resize(288), CenterCrop(256)
  c.model.update(
    encoder="vit",
    vit_family="vitamin",
    posemb="none",
    vit_projection="attn",
    code_dim=64,
    width=1024,
    depth=31,
    mlp_dim=2048,
    num_heads=16,
    patch_size=16,
    conv_widths=(160, 320),
    conv_depths=(2, 4),
    decoder_depth=31,
    decoder_conv_widths=(320, 160),
    decoder_conv_depths=(4, 2),
  )
  g = NUM_CODEBOOKS
  # VectorQuantizerM (vq_beta 0.25, le 0, e_temp 0.01) as grouped l2 VQ: UniTok averages the codebooks' losses.
  c.quantizer = ml_collections.ConfigDict(
    {
      "type": "grouped",
      "num_groups": g,
      "quantizer": {
        "type": "vq",
        "codebook_size": 32768 // g,
        "l2_normalize": True,
        "commitment_weight": 0.25 / g,
        "codebook_weight": 1.0 / g,
        "entropy_weight": 0.0,
        "entropy_temperature": 0.01,
        "entropy_epsilon": 1e-7,
      },
    }
  )
  return c
