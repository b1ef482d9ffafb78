"""FQGAN-Dual ds16 preset: LlamaGen's VQ-16 CNN with two factorised sub-codebooks.

Run:
  python train.py --config=configs/fqgan_dual_ds16.py --workdir=runs/fqgan_dual_ds16 \
    --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz

Reference: Bai et al., "Factorized Visual Tokenization and Generation", 2024
(arXiv:2411.16681); showlab/FQGAN tokenizer/vq_model_dual.py ``VQ_16``: LlamaGen's
trunk (ch 128, ch_mult 1-1-2-2-4, 2 res blocks, attention at the lowest
resolution), then per sub-codebook (pixel, semantic) a 6-block transformer
adapter of width 512 (8 heads) over the fixed 16x16 grid, GroupNorm, a 3x3
``conv_out`` to 256 channels and a 1x1 ``quant_conv`` to 8; two codebooks of
16384 l2-normalised codes of dimension 8; ``post_quant_conv`` 16 -> 256 before
LlamaGen's decoder; a semantic feature-prediction head (width 1024, 3 blocks,
for CLIP ViT-L/14 features) on the semantic sub-code. 16x16 tokens of 2 ids
per image at 256px. Parameters: 150,410,131 (= the reference's; published
tokenizer rFID 0.94; tests/test_pretrained_fqgan.py).

Recipe: train_fqgan_dual.sh, i.e. tokenizer/vq_train_dual.py's defaults (LlamaGen's
trainer) with --lr 2e-4, --global-batch-size 256, 40 epochs, --disentanglement-ratio
0.1 and --entropy-loss-ratio 0.03. Its semantic loss (--semantic-weight 0.5: InfoNCE
of the feature head's class token against a frozen CLIP ViT-L/14's) needs the
teacher file, so it is switched on by hand:
  --config.feature_teacher=teachers/clip_l14 --config.loss.semantic_weight=0.5
(``python -m vqtok.convert clip ViT-L-14.pt teachers/clip_l14/``); the preset sets
its nearest resize to 224 and its per-GPU negatives. tests/test_recipes.py holds
the values with their lines.
"""

from vqtok.config import cnn_config
from vqtok.models.cnn import TAMING_F16
from vqtok.models.discriminator import TAMING_PATCHGAN


def get_config():
  c = cnn_config(
    **TAMING_F16,
    attention=True,
    z_channels=256,  # each head's conv_out width
    code_dim=16,  # two sub-codes of 8, pixel first
    factorized_heads=2,
    adapter_depth=6,
    adapter_num_heads=8,
    feature_head_dims=(1024,),  # CLIP ViT-L/14's width
    feature_head_depth=3,
    quantizer={
      "type": "factorized",
      "num_groups": 2,
      "disentangle_weight": 0.1,
      # train_fqgan_dual.sh:17 --entropy-loss-ratio 0.03: LlamaGen's entropy penalty on each sub-codebook
      "quantizer": {"type": "vq", "codebook_size": 16384, "l2_normalize": True, "entropy_weight": 0.03},
    },
    preprocess="adm_center_crop",
    discriminator={**TAMING_PATCHGAN, "norm": "batch"},  # LlamaGen's vq_loss.py PatchGAN, as vq_loss.py here
  )
  # tokenizer/vq_train_dual.py:117-118: Adam for G and D at args.lr, no scheduler, no weight decay.
  c.optimizer.update(lr=2e-4, disc_lr=2e-4, b1=0.9, b2=0.95, weight_decay=0.0, grad_clip=1.0)
  c.optimizer.update(warmup_steps=0, min_lr_ratio=1.0)
  c.optimizer.disc_steps_before_start = True  # vq_train_dual.py:223-234 steps D's Adam every iteration
  # 40 epochs of ImageNet's 1,281,167 images at 256 (drop_last): 40 x 5,004 steps; no --ema.
  c.training.update(batch_size=256, num_steps=200_160, ema_decay=0.0)
  c.loss.update(l1_weight=0.0, l2_weight=1.0, perceptual_weight=1.0)
  c.loss.update(gan_weight=0.5, adaptive_weight=False, gan_loss="hinge", disc_start=19_999)
  c.loss.disc_loss_weight = 0.5  # vq_loss.py VQLoss_dual_codebook: D's loss scaled by disc_weight
  # models/clip_encoder.py ScalingLayer: F.interpolate(inp, (224, 224)), nearest; the InfoNCE's negatives are
  # each GPU's images (8 GPUs x 32 = 256, no gather). Active with loss.semantic_weight and a teacher.
  c.loss.update(vf_resize="nearest", semantic_group=32)
  return c
