"""The config schema: every field a preset may set, with its default.

Presets in configs/ start from ``default_config()`` and override fields; train.py
and eval.py validate the result with ``validate_config`` before any work starts.
"""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """Every config field with its default; presets override some of them."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.image_size = 64

  # ---- data (vqtok.data) ----
  c.data = ml_collections.ConfigDict()
  c.data.source = "samples"  # samples | folder | tfds
  c.data.name = ""  # tfds dataset name, e.g. "cifar10"
  c.data.path = ""  # image folder, or tfds data_dir
  c.data.train_split = "train"
  c.data.eval_split = "test"  # samples: held-out photos; tfds: a split name
  c.data.num_workers = 0  # 0: decode in the main thread
  c.data.shuffle_buffer = 0  # unused by random-access sources; kept for tfds
  c.data.min_scale = 0.35  # random-resized-crop scale range (training)
  c.data.flip = True

  # ---- model (vqtok.models) ----
  c.model = ml_collections.ConfigDict()
  c.model.encoder = "cnn"  # cnn | vit | vit1d
  c.model.channels = 32
  c.model.channel_mult = (1, 2, 2, 4)  # len - 1 downsamplings: f8
  c.model.num_res_blocks = 1
  c.model.attention = False  # self-attention at the lowest resolution
  c.model.latent_dim = 4  # channels into the quantizer (= quantizer code_dim)
  c.model.dtype = "float32"  # compute dtype; parameters stay float32

  # ---- quantizer (vqtok.quantizers); kwargs of the class named by `type` ----
  c.quantizer = ml_collections.ConfigDict()
  c.quantizer.type = "fsq"  # vq | fsq | lfq | bsq | residual | grouped
  c.quantizer.levels = (8, 5, 5, 5)

  # ---- discriminator (vqtok.models.discriminator) ----
  c.discriminator = ml_collections.ConfigDict()
  c.discriminator.type = "patchgan"  # patchgan | stylegan
  c.discriminator.channels = 32
  c.discriminator.num_layers = 2

  # ---- losses (vqtok.losses) ----
  c.loss = ml_collections.ConfigDict()
  c.loss.l1_weight = 1.0
  c.loss.l2_weight = 0.0
  c.loss.perceptual_weight = 0.0  # needs c.loss.lpips_weights
  c.loss.lpips_weights = ""  # .npz from scripts/convert_lpips.py
  c.loss.gan_weight = 0.1
  c.loss.gan_loss = "hinge"  # hinge | non_saturating
  c.loss.adaptive_weight = True  # taming-transformers adaptive GAN weight
  c.loss.disc_start = 300  # discriminator (and GAN loss) start at this step
  c.loss.lecam_weight = 0.0
  c.loss.r1_weight = 0.0

  # ---- optimizer ----
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.lr = 1e-3
  c.optimizer.disc_lr = 1e-3
  c.optimizer.warmup_steps = 50
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.grad_clip = 1.0

  # ---- training loop ----
  c.training = ml_collections.ConfigDict()
  c.training.batch_size = 16  # global batch
  c.training.num_steps = 600
  c.training.ema_decay = 0.99  # 0 disables EMA weights
  c.training.mesh = (-1, 1)  # (data, fsdp); -1: all remaining devices
  c.training.log_every = 25
  c.training.eval_every = 200
  c.training.image_every = 200
  c.training.checkpoint_every = 200
  c.training.keep_checkpoints = 2

  # ---- evaluation ----
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 8
  c.eval.num_images = 0  # 0: the whole split
  c.eval.inception_weights = ""  # .npz from scripts/convert_inception.py
  c.eval.use_ema = True
  return c
