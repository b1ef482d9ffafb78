"""TokenFlow (CLIP ViT-B/16 teacher, enhanced decoder) preset: the dual-codebook tokenizer and its training recipe.

Run (the teacher is a file the user converts once; vqtok's LPIPS weights as for the other presets):
  python -m vqtok.convert clip ViT-B-16.pt teachers/clip_b16/
  python train.py --config=configs/tokenflow_clipb.py --workdir=runs/tokenflow_clipb \
    --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz \
    --config.feature_teacher=teachers/clip_b16
``get_config("runlocal")`` is a reduced copy (tiny widths, 32 px) that the tests train.

Reference: Qu et al., "TokenFlow: Unified Image Tokenizer for Multimodal Understanding
and Generation", 2024 (arXiv:2412.03069); ByteFlow-AI/TokenFlow@9812da0
tokenflow/tokenizer/vq_model.py ``TokenFlow`` with ``teacher="clipb_224"`` and
``enhanced_decoder``: a semantic branch (CLIP ViT-B/16, ``encode_task_layer`` to
32 channels) beside LlamaGen's CNN encoder (ch 128, 2 blocks, ``quant_conv`` to 8),
a dual codebook of 32768 codes (32 semantic + 8 pixel channels, each l2-normalised,
one shared index) in a multi-scale residual loop, the pixel decoder (the
"enhanced" one: ch 256, 4 blocks) and the semantic decoder (a 3-block BEiT ViT and
``decode_task_layer`` to CLIP's 512-wide projected features). Parameters:
376,569,643 in the reference's file; vqtok's count is 376,571,947, the same model
plus the semantic decoder's 3 x 768 zero key biases that the reference adds as
constants (tests/test_pretrained_tokenflow.py). Trained at 224 px: 14 x 14 tokens,
scales 1-2-4-6-8-10-12-14 (``python -m vqtok.convert tokenflow`` writes the 256 px
tokenizer the authors evaluate, the same weights with a 16 x 16 scale added).

Recipe (tokenflow/scripts/train_vq.sh, tokenizer/vq_train.py, vq_loss.py): Adam
(0.9, 0.95) at a constant 1e-4 for G and D, no weight decay, clip 1.0, global batch
32, 100 epochs at 224 px (40,036 steps each, drop_last), no EMA; MSE 1 + LPIPS 1 +
a fixed hinge GAN 0.5 from step 19,999 (20,000 counted from 1), LlamaGen's
BatchNorm PatchGAN with D's loss x0.5 and D's Adam stepped from the start; the
quantizer's codebook + 0.25 commitment terms, averaged over the scales; and the
semantic loss ``vqkd_loss`` (weight 1): ``1 - cos`` between the semantic decoder's
output and the frozen teacher's ``ln_post(patch tokens) @ proj``
(``loss.feature_rec_weight=1``, ``loss.feature_rec_target="patch_embedding"``, the
teacher named by ``config.feature_teacher``), the batch reaching the teacher as it
is (224 px, CLIP's mean/std).

Not expressed (the README's training-recipes row): the semantic encoder starts from
CLIP ViT-B/16's weights in the reference (``clip.load_clip_vision``), here from
random ones unless ``init_from`` names a whole tokenizer (e.g. the converted
TokenFlow); the reference trains with its plain decoder (ch 128, 2 blocks) first
and then the enhanced one alone (train_vq_finetune_enhanced_decoder.sh,
``--finetune_decoder``: only ``decoder.*``), here the enhanced one from the start (the
second stage is ``--config.init_from=RUN --config.training.freeze="('encoder',
'quantizer', 'decoder.semantic', 'decoder.semantic_head', 'decoder.post_quant_conv')"``);
its random drop of one scale in 10% of the steps; resize-and-crop augmentation
(``random_crop_arr``); fp16 autocast.
"""

from vqtok.config import cnn_config
from vqtok.models.discriminator import TAMING_PATCHGAN

STEPS_PER_EPOCH = 1_281_167 // 32  # vq_train.py:161, 166: 8 GPUs x 4, drop_last


def get_config(arg: str | None = None):
  c = cnn_config(
    channels=128,
    channel_mult=(1, 1, 2, 2, 4),
    num_res_blocks=2,
    attention=True,
    z_channels=256,
    code_dim=40,  # 32 semantic channels first, then 8 pixel ones
    decoder_channels=256,  # the enhanced decoder (vq_model.py:98-101)
    decoder_num_res_blocks=4,
    semantic_encoder="clip",  # CLIP ViT-B/16; the semantic_* defaults are its sizes and the BEiT decoder's
    semantic_feature_dim=512,  # decode_task_layer: CLIP's projected width
    quantizer={
      "type": "multiscale",
      "scales": [1, 2, 4, 6, 8, 10, 12, 14],  # vq_model.py:115-117 clipb_224 at 224 px
      "phi_ratio": 0.0,
      "form": "tokenflow",
      # vq_train.py:372-378: --codebook-size 32768 (train_vq.sh:14), 32 + 8 channels, l2, beta 0.25, no entropy.
      "quantizer": {
        "type": "dual",
        "codebook_size": 32768,
        "semantic_dim": 32,
        "l2_normalize": True,
        "commitment_weight": 0.25,
      },
    },
    image_size=224,  # train_vq.sh:13 --image-size 224
    preprocess="adm_center_crop",
    discriminator={**TAMING_PATCHGAN, "norm": "batch"},  # LlamaGen's discriminator_patchgan.py
  )
  # vq_train.py:135-136: Adam for G and D at args.lr (1e-4, l.393), betas (0.9, 0.95) (l.395-396), no scheduler.
  c.optimizer.update(lr=1e-4, disc_lr=1e-4, b1=0.9, b2=0.95, weight_decay=0.0, grad_clip=1.0)
  c.optimizer.update(warmup_steps=0, min_lr_ratio=1.0)
  c.optimizer.disc_steps_before_start = True  # vq_train.py:287-297 steps D's Adam every iteration
  c.training.update(batch_size=32, num_steps=100 * STEPS_PER_EPOCH, ema_decay=0.0)  # train_vq.sh:15-16; no --ema
  c.loss.update(l1_weight=0.0, l2_weight=1.0, perceptual_weight=1.0)  # vq_train.py:379-381
  c.loss.update(gan_weight=0.5, adaptive_weight=False, gan_loss="hinge", disc_start=19_999)  # l.382-386
  c.loss.disc_loss_weight = 0.5  # vq_loss.py: d_adversarial_loss = disc_weight * disc_loss(...)
  # vq_loss.py calculate_clip_rec_loss / get_regress_target: 1 - cos against CLIP's projected patch tokens.
  c.loss.update(feature_rec_weight=1.0, feature_rec_target="patch_embedding")
  if arg == "runlocal":
    runlocal(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/tokenflow_clipb.py (known: runlocal)")
  return c


def runlocal(c):
  """``c`` at test size: 32 px, a CNN and ViTs of width 8-16 with patch 4 (8 x 8 tokens), 64 codes."""
  c.image_size = 32
  c.model.update(channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, z_channels=8, norm_groups=4)
  c.model.update(decoder_channels=8, decoder_num_res_blocks=1)
  c.model.update(semantic_width=16, semantic_depth=1, semantic_mlp_dim=32, semantic_num_heads=2)
  c.model.update(semantic_patch_size=4, semantic_pos_grid=8, semantic_feature_dim=8)
  c.model.update(semantic_decoder_depth=1, semantic_decoder_mlp_dim=32, semantic_decoder_num_heads=2)
  c.model.code_dim = 12
  c.quantizer.scales = [1, 2, 4, 8]
  c.quantizer.quantizer.update(codebook_size=64, semantic_dim=8)
  c.discriminator.channels = 8
  c.training.update(batch_size=8, num_steps=1, log_every=1, eval_every=0, image_every=0, checkpoint_every=1)
  c.loss.update(perceptual_weight=0.0, disc_start=100)
  c.eval.batch_size = 8
  return c
