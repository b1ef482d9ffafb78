"""VQGAN f16 preset: the taming-transformers CNN with a 1024-code VQ, 256px.

Run:
  python train.py --config=configs/vqgan_f16.py --workdir=runs/vqgan_f16 \
    --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz

Reference: Esser et al., "Taming Transformers", CVPR 2021 (arXiv:2012.09841),
ImageNet f16 / 1024 config (ch 128, ch_mult 1-1-2-2-4, 2 res blocks, attention
at 16x16, z_channels = embed_dim = 256). MaskGIT (Chang et al., 2022) uses
the same levels and codebook without attention: --config.model.attention=False.
16x16 = 256 tokens per image.
Parameters: 72,141,699 (encoder 29.30M, decoder 42.45M, codebook 0.26M, and
taming's 1x1 quant_conv / post_quant_conv, kept at equal widths, as Linear
projections: 0.13M) plus a 2.77M PatchGAN; the same count as taming's own
VQModel (tests/test_pretrained.py checks it against the reference's tensors).
``python -m vqtok.convert taming last.ckpt DIR`` imports the published weights.

Recipe: taming-transformers configs/imagenet_vqgan.yaml as its README runs it
(``main.py --base configs/imagenet_vqgan.yaml -t True --gpus 0,``: one GPU,
batch 12, so main.py's lr = 12 x 4.5e-6 = 5.4e-5), taming/models/vqgan.py and
taming/modules/losses/vqperceptual.py: Adam (0.5, 0.9) at a constant lr for
both networks, no clipping, no EMA, L1 1 + LPIPS 1 + adaptive hinge GAN 0.8
from step 250,001, no flips. taming scales lr with the batch: with
``--config.training.batch_size=B`` set ``--config.optimizer.lr`` and
``disc_lr`` to B x 4.5e-6. The released checkpoint's GPU count and length are
not published. tests/test_recipes.py holds the values with their lines;
README "Training recipes" lists the differences.
"""

from vqtok.config import cnn_config
from vqtok.models.cnn import TAMING_F16
from vqtok.models.discriminator import TAMING_PATCHGAN


def get_config():
  c = cnn_config(
    **TAMING_F16,
    attention=True,
    z_channels=256,
    code_dim=256,
    # taming's VectorQuantizer2(beta=0.25, legacy=True) puts beta on the codebook term:
    # mean((sg(z_q) - z)^2) + 0.25 * mean((z_q - sg(z))^2) (taming/modules/vqvae/quantize.py).
    quantizer={"type": "vq", "codebook_size": 1024, "commitment_weight": 1.0, "codebook_weight": 0.25},
    discriminator={**TAMING_PATCHGAN, "norm": "batch"},  # NLayerDiscriminator with BatchNorm (train mode)
  )
  # vqgan.py configure_optimizers: Adam, no scheduler; lr = ngpu x batch x base_learning_rate.
  c.optimizer.update(lr=5.4e-5, disc_lr=5.4e-5, b1=0.5, b2=0.9, weight_decay=0.0, grad_clip=0.0)
  c.optimizer.update(warmup_steps=0, min_lr_ratio=1.0)
  # The yaml sets no length (Lightning's default would be 1000 epochs): 1M steps is vqtok's choice.
  c.training.update(batch_size=12, num_steps=1_000_000, ema_decay=0.0)
  # vqperceptual.py: L1 + LPIPS, adaptive weight x disc_weight; adopt_weight is 0 while global_step < 250001.
  c.loss.update(l1_weight=1.0, l2_weight=0.0, perceptual_weight=1.0)
  c.loss.update(gan_weight=0.8, adaptive_weight=True, gan_loss="hinge", disc_start=250_001)
  c.data.flip = False  # taming/data/base.py: SmallestMaxSize + RandomCrop, no flip
  # Lightning steps D's optimizer (optimizer_idx 1) every batch, on a zero loss before disc_start.
  c.optimizer.disc_steps_before_start = True
  # Lightning runs training_step once per optimizer: D's update sees the updated G's reconstructions.
  c.optimizer.disc_sees_updated_generator = True
  return c
