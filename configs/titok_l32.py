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

Train it in TiTok's two stages (``two_stage`` below; README "Training TiTok in
two stages"):
  python -m vqtok.convert maskgit tokenizer_imagenet256_checkpoint teacher/
  python train.py --config=configs/titok_l32.py:stage1 --workdir=runs/l32_s1 --config.teacher=teacher/ ...
  python train.py --config=configs/titok_l32.py:stage2 --workdir=runs/l32_s2 --config.init_from=runs/l32_s1 \
    --config.loss.lpips_weights=lpips.npz ...
"""

import ml_collections

from vqtok.config import default_config
from vqtok.models.cnn import TAMING_F16
from vqtok.models.discriminator import MAGVIT_STYLEGAN


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
  c.model.proxy_decoder = ml_collections.ConfigDict({**TAMING_F16, "norm_groups": 32})  # MaskGIT's VQGAN decoder
  c.quantizer = ml_collections.ConfigDict({"type": "vq", "codebook_size": 4096, "l2_normalize": True})
  c.data.preprocess = "torchvision_center_crop"
  c.discriminator.update(MAGVIT_STYLEGAN)
  return c


#: ``get_config`` arguments: the published architecture, or one of TiTok's training stages.
STAGES = ("", "stage1", "stage2")


def two_stage(c: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
  """TiTok's two-stage training recipe on a ``titok_config``.

  From bytedance/1d-tokenizer configs/training/TiTok/stage{1,2}/titok_{l32,b64,s128}.yaml
  (the same for all three sizes), modeling/titok.py, modeling/modules/losses.py
  (``ReconstructionLoss_Stage1`` / ``_Stage2``) and utils/train_utils.py:

  * Both: AdamW lr 1e-4, weight decay 1e-4, cosine to 1e-5 (``min_lr_ratio``
    0.1), grad-norm clip 1.0, EMA 0.999, 8 GPUs x 32 = global batch 256, 256 px.
    No weight decay on vectors nor, by name, on the biases, latent tokens,
    mask token, class token, embeddings and codebooks (``optimizer.no_decay``;
    train_utils.py:230-235); the EMA warms up as diffusers' EMAModel does,
    min(0.999, k / (k + 9)) at the k-th update (``training.ema_warmup``;
    modeling/modules/ema_model.py:92-107). tests/test_train_parity_titok.py
    checks stage 1's steps against the reference's code.
  * ``stage1``: encoder, quantizer and ViT decoder learn, by cross-entropy
    (weight 1, ``loss.proxy_code_weight``), to predict the code the frozen
    MaskGIT VQGAN (``--config.teacher``) assigns to each 16x16 patch of each
    training image, computed on the fly from the batch; plus the quantizer
    loss (weight 1: codebook + 0.25 commitment). No pixel loss, no GAN.
    1,000,000 steps, warm-up 10,000, Adam b2 0.99. The teacher's codebook
    and decoder are copied into ``decoder.codebook`` / ``decoder.pixel`` and
    frozen (the reference has no pixel decoder in this stage; it loads the
    same VQGAN weights there at the start of stage 2).
  * ``stage2``: start from stage 1 (``--config.init_from``); encoder and
    quantizer frozen (``training.freeze``; ``finetune_decoder: True``), the
    ViT decoder, the VQGAN codebook and the VQGAN decoder fine-tuned with L2
    (weight 1 on [0, 1] images = ``l2_weight`` 0.25 on vqtok's [-1, 1]
    ones), a perceptual term (weight 0.1) and a hinge GAN of fixed weight
    0.01 (not adaptive) from step 20,000 with LeCam 0.001; quantizer weight
    0 (commitment 0). 500,000 steps, warm-up 5,000, Adam b2 0.999, the
    discriminator at lr 1e-4.

  Differences from the reference: the perceptual term is vqtok's LPIPS
  (``--config.loss.lpips_weights``), not the reference's ConvNeXt-S (MSE of
  its ImageNet logits at 224 px, ``perceptual_loss: convnext_s``), whose
  weights vqtok cannot ship; the discriminator is vqtok's PatchGAN with
  GroupNorm (128 channels, 3 stride-2 layers), not its blurred
  NLayerDiscriminator (leaky ReLU 0.1, adaptive max-pool to 16x16); LeCam's
  running means decay at 0.99, not 0.999; training crops are vqtok's random
  resized crops, not resize-256 + random crop; compute is float32, not fp16.
  """
  if stage not in STAGES:
    raise ValueError(f"unknown variant {stage!r} of the TiTok presets (known: stage1, stage2)")
  if not stage:
    return c
  c.optimizer.update(lr=1e-4, disc_lr=1e-4, weight_decay=1e-4, min_lr_ratio=0.1, grad_clip=1.0, b1=0.9)
  # train_utils.py:230-231 exempts names containing ln, bias, latent_tokens, mask_token, embedding, norm,
  # gamma or embed; in vqtok's names: every bias (the attention's are (heads, head width) here), the
  # latent tokens, mask and class tokens, patch / latent / position embeddings and codebooks (norm
  # scales are vectors).
  c.optimizer.no_decay = ("bias", "latent_tokens", "mask_token", "cls_token", "embed", "codebook")
  c.training.update(batch_size=256, ema_decay=0.999, ema_warmup=True, log_every=50, image_every=5_000)
  c.training.checkpoint_every = 5_000
  c.training.eval_every = 50_000
  if stage == "stage1":
    c.loss.update(proxy_code_weight=1.0, l1_weight=0.0, l2_weight=0.0, perceptual_weight=0.0, gan_weight=0.0)
    c.training.freeze = ("decoder.pixel", "decoder.codebook")
    c.training.num_steps = 1_000_000
    c.optimizer.update(warmup_steps=10_000, b2=0.99)
  else:
    c.loss.update(l1_weight=0.0, l2_weight=0.25, perceptual_weight=0.1, gan_weight=0.01, adaptive_weight=False)
    c.loss.update(gan_loss="hinge", disc_start=20_000, lecam_weight=0.001)
    c.quantizer.update(commitment_weight=0.0, codebook_weight=0.0)
    c.discriminator.update(type="patchgan", channels=128, num_layers=3)
    c.training.freeze = ("encoder", "quantizer")
    c.training.num_steps = 500_000
    c.optimizer.update(warmup_steps=5_000, b2=0.999)
  return c


def get_config(arg: str | None = None):
  return two_stage(titok_config(width=1024, depth=24, num_latent_tokens=32), arg or "")
