"""GSQ preset: grouped spherical quantization on a MAGVIT-2-style CNN, 256px.

Run:
  python train.py --config=configs/gsq.py:f8-d8-v64k --workdir=runs/gsq \
    --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz

Reference: Wang et al., "Scaling Image Tokenizers with Grouped Spherical
Quantization", 2024 (arXiv:2412.02632); code HelmholtzAI-FZJ/flex_gen
(flex_gen/quantizers/group_sphere_quantizer.py, vqtok's ``gsq`` quantizer;
configs/autoencoder/flexTokenizer/ablation_scaling/vae_gan_scaling_hpo.yaml).
The paper's recipe for scaling: a latent of D = G x d channels looked up as G
groups of d in one shared spherical codebook of V codes; for more compression
(f16, f32) widen D and split it into more groups rather than grow V. Variants
(the config argument), from the authors' README table and published names:

  f8-d8-v64k        f8, D 8, one group, 65,536 codes: the shape of the
                    published GSQ-F8-D8-V64k (HF HelmholtzAI-FZJ).
  f8-d64-v8k-g16    f8, D 64 as 16 x 4, 8,192 codes (README: rFID 0.03).
  f16-d16-v256k-g8  f16, D 16 as 8 x 2, 262,144 codes (README: rFID 0.50).

The authors' CNN: their flexTokenizer (hidden 128, multipliers 1-2-2-4 for
f8 and 1-1-2-2-4 for f16 as the published config.yaml files, two res blocks a
level, adaptive norms, learned up/downsampling) is vqtok's ``flex`` family, so
the published checkpoints convert into this shape (``python -m vqtok.convert
gsq checkpoint.pt tok/``) and ``--config.init_from=tok/`` fine-tunes one.
Recipe from the yaml: AdamW (0.9, 0.99), weight decay 0.05, lr
1e-4 constant for both networks, clipping at 2, EMA 0.999, batch 16, 500k
steps, LPIPS 1, GAN 0.1 without the adaptive weight from step 0 (hinge D;
their G loss is non-saturating, vqtok's G loss follows ``gan_loss``), their
DINO discriminator replaced by the PatchGAN; the reconstruction term is
vqtok's L1.
"""

from vqtok.config import cnn_config
from vqtok.models.discriminator import TAMING_PATCHGAN

# name -> (channel_mult, latent D = code_dim, codebook size V, groups G)
VARIANTS = {
  "f8-d8-v64k": ((1, 2, 2, 4), 8, 65_536, 1),
  "f8-d64-v8k-g16": ((1, 2, 2, 4), 64, 8_192, 16),
  "f16-d16-v256k-g8": ((1, 1, 2, 2, 4), 16, 262_144, 8),
}


def get_config(arg: str = "f8-d8-v64k"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/gsq.py: unknown variant {arg!r}; expected one of {sorted(VARIANTS)}")
  mult, dim, codes, groups = VARIANTS[arg]
  c = cnn_config(
    channels=128,
    channel_mult=mult,
    num_res_blocks=2,
    attention=False,
    cnn_family="flex",
    code_dim=dim,
    # group_sphere_quantizer.py: mse(q, sg(ẑ)) + 0.25 mse(sg(q), ẑ), one spherical codebook for the groups.
    quantizer={"type": "gsq", "codebook_size": codes, "num_groups": groups, "commitment_weight": 0.25},
    discriminator=TAMING_PATCHGAN,
    preprocess="timm_bilinear_center_crop",  # timm's eval transform, flex_gen/datasets/transforms.py
  )
  # vae_gan_scaling_hpo.yaml optim / disc_optim: AdamW, constant lr, max_grad_norm 2.
  c.optimizer.update(lr=1e-4, disc_lr=1e-4, b1=0.9, b2=0.99, weight_decay=0.05, grad_clip=2.0)
  c.optimizer.update(warmup_steps=0, min_lr_ratio=1.0)
  c.training.update(batch_size=16, num_steps=500_000, ema_decay=0.999)
  c.loss.update(perceptual_weight=1.0, gan_weight=0.1, adaptive_weight=False, gan_loss="hinge", disc_start=0)
  return c
