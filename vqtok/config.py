"""The config schema: every field a preset may set, with its default.

Presets in configs/ start from ``default_config()`` and override fields; train.py
and eval.py validate the result with ``validate_config`` before any work starts.
``load_run_config`` reads the config a training run saved back into this schema.
The lists of allowed choices come from the registries of the modules that
implement them (quantizer types, encoders, discriminators, GAN losses, data
sources), so a new kind is registered in one place.
"""

import json
import os

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """Every config field with its default; presets override some of them."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.image_size = 64
  c.init_from = ""  # a tokenizer directory or training workdir to start from (fine-tuning)
  # A frozen teacher tokenizer (a tokenizer directory or training workdir, e.g. MaskGIT's VQGAN
  # from `python -m vqtok.convert maskgit`): its codes are the targets of loss.proxy_code_weight,
  # and at a fresh start its codebook and decoder fill a TiTok decoder's decoder.codebook and
  # decoder.pixel (TiTok's first stage, bytedance/1d-tokenizer). Never trained, never saved.
  c.teacher = ""

  # ---- data (vqtok.data) ----
  c.data = ml_collections.ConfigDict()
  c.data.source = "samples"  # samples | folder | tfds
  c.data.name = ""  # tfds dataset name, e.g. "cifar10"
  c.data.path = ""  # image folder, or tfds data_dir
  c.data.train_split = "train"
  c.data.eval_split = "test"  # samples: held-out photos; tfds: a split name
  c.data.num_workers = 0  # 0: decode in the main thread
  c.data.image_key = "image"  # tfds: the image feature's key
  c.data.verify = True  # folder: PIL verify() every file at index time (False for huge folders)
  c.data.min_scale = 0.35  # random-resized-crop scale range (training)
  # eval / tokenize resize: center_crop | adm_center_crop (LlamaGen) |
  # short_side_bilinear (taming) | squash_bicubic (MaskGIT) | lanczos_center_crop (VAR)
  # | torchvision_center_crop (TiTok)
  c.data.preprocess = "center_crop"
  c.data.flip = True

  # ---- model (vqtok.models) ----
  c.model = ml_collections.ConfigDict()
  c.model.encoder = "cnn"  # cnn | vit | vit1d
  c.model.channels = 16
  c.model.channel_mult = (1, 2, 2, 4)  # len - 1 downsamplings: f8
  c.model.num_res_blocks = 1
  c.model.attention = False  # self-attention at the lowest resolution
  c.model.code_dim = 4  # width of the vectors the quantizer receives (its code_dim)
  c.model.dtype = "float32"  # compute dtype; parameters stay float32
  c.model.z_channels = 0  # cnn: encoder output width; > 0 adds projections to/from code_dim
  c.model.project_kernel = 1  # cnn: those projections are 1 (Linear) or 3 (3x3 conv, VAR) wide
  c.model.cnn_family = "taming"  # cnn block kinds: taming (also LlamaGen, IBQ) | maskgit | magvit2 (Open-MAGVIT2)
  c.model.norm_groups = 32  # cnn GroupNorm groups (32 in published models; fewer for narrow ones)
  c.model.input_range = (-1.0, 1.0)  # what the encoder sees; batches are always [-1, 1]
  c.model.variant = ""  # vit / vit1d: big_vision size name, e.g. "B/16"
  c.model.decoder_variant = ""  # "" = same as variant
  c.model.posemb = "learn"  # vit position embedding: learn | sincos2d
  c.model.num_latent_tokens = 0  # vit1d (TiTok): number of 1-D latent tokens
  c.model.vit_family = "vqtok"  # vit block kinds: vqtok | titok (published TiTok) | titok_pixels (its VQ-8k)
  # vit1d: > 0 makes the decoder TiTok's: logits over this many codes of a MaskGIT VQGAN,
  # soft codes decoded by that VQGAN's CNN decoder (proxy_decoder sizes).
  c.model.proxy_codebook_size = 0
  c.model.proxy_code_dim = 256
  c.model.proxy_decoder = ml_collections.ConfigDict(
    {"channels": 128, "channel_mult": (1, 1, 2, 2, 4), "num_res_blocks": 2, "norm_groups": 32}
  )
  # vit: explicit sizes; 0 = from variant
  c.model.width = 0
  c.model.depth = 0
  c.model.mlp_dim = 0
  c.model.num_heads = 0
  c.model.patch_size = 0
  # vit: the decoder's own sizes where they differ (0 = as the encoder)
  c.model.decoder_width = 0
  c.model.decoder_depth = 0
  c.model.decoder_mlp_dim = 0
  c.model.decoder_num_heads = 0

  # ---- quantizer (vqtok.quantizers); kwargs of the class named by `type` ----
  c.quantizer = ml_collections.ConfigDict()
  c.quantizer.type = "fsq"  # vq | fsq | lfq | bsq | ibq | residual | grouped | multiscale
  # lfq / bsq: bit_order = "msb_first" (default) | "lsb_first"; tokenizer directories must record it
  c.quantizer.levels = (8, 5, 5, 5)

  # ---- discriminator (vqtok.models.discriminator) ----
  c.discriminator = ml_collections.ConfigDict()
  c.discriminator.type = "patchgan"  # patchgan | stylegan
  c.discriminator.channels = 16
  c.discriminator.num_layers = 2
  c.discriminator.norm = "group"  # patchgan: group (stateless) | batch (batch statistics, as LlamaGen trains it)

  # ---- losses (vqtok.losses) ----
  c.loss = ml_collections.ConfigDict()
  c.loss.l1_weight = 1.0
  c.loss.l2_weight = 0.0
  c.loss.perceptual_weight = 0.0  # needs c.loss.lpips_weights
  c.loss.lpips_weights = ""  # .npz from scripts/convert_lpips.py
  c.loss.gan_weight = 0.1
  c.loss.gan_loss = "hinge"  # hinge | non_saturating
  c.loss.adaptive_weight = True  # taming-transformers adaptive GAN weight
  c.loss.disc_start = 400  # discriminator (and GAN loss) start at this step
  # Scales the discriminator's GAN loss, not its regularisers (LlamaGen: its disc_weight, vq_loss.py:160).
  c.loss.disc_loss_weight = 1.0
  c.loss.lecam_weight = 0.0
  c.loss.r1_weight = 0.0
  # Cross-entropy of a proxy-code decoder's logits against the teacher's code ids (TiTok stage 1).
  c.loss.proxy_code_weight = 0.0

  # ---- optimizer ----
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.lr = 2e-3
  c.optimizer.disc_lr = 2e-3
  c.optimizer.warmup_steps = 50
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 1e-4
  c.optimizer.grad_clip = 1.0  # global-norm clip; 0 disables
  c.optimizer.min_lr_ratio = 0.1  # cosine decay ends at lr * min_lr_ratio
  # True: the discriminator's optimizer also steps, on zero gradients, before loss.disc_start,
  # as trainers that step it every iteration do (LlamaGen vq_train.py:207-216, taming); Adam's
  # step count, and so its bias correction at the first real step, then counts those steps.
  c.optimizer.disc_steps_before_start = False

  # ---- training loop ----
  c.training = ml_collections.ConfigDict()
  c.training.batch_size = 16  # global batch
  c.training.num_steps = 500
  c.training.ema_decay = 0.99  # 0 disables EMA weights
  c.training.mesh = (-1, 1)  # (data, fsdp); -1: all remaining devices
  c.training.log_every = 25
  c.training.eval_every = 100
  c.training.image_every = 250
  c.training.checkpoint_every = 250
  c.training.keep_checkpoints = 2
  # Tokenizer submodules that get no updates, as dotted parameter-path prefixes
  # ("encoder", "quantizer", "decoder.pixel"): their weights stay bit-identical.
  c.training.freeze = ()

  # ---- evaluation ----
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 8
  c.eval.num_images = 0  # 0: the whole split
  c.eval.inception_weights = ""  # .npz from scripts/convert_inception.py
  c.eval.use_ema = True
  return c


def _choices() -> dict[str, tuple[str, ...]]:
  """Allowed values of the choice fields, read from the registries that own them."""
  # Imported here: the registries pull in JAX and Flax, which presets need not.
  from vqtok.data.sources import SOURCES  # noqa: PLC0415
  from vqtok.data.transforms import PREPROCESS  # noqa: PLC0415
  from vqtok.losses.adversarial import GAN_LOSSES  # noqa: PLC0415
  from vqtok.models.cnn import FAMILIES  # noqa: PLC0415
  from vqtok.models.discriminator import DISCRIMINATORS, PATCHGAN_NORMS  # noqa: PLC0415
  from vqtok.models.tokenizer import DTYPES, ENCODERS  # noqa: PLC0415
  from vqtok.models.vit import FAMILIES as VIT_FAMILIES  # noqa: PLC0415
  from vqtok.models.vit import POSEMBS  # noqa: PLC0415
  from vqtok.quantizers import QUANTIZER_TYPES  # noqa: PLC0415

  return {
    "data.source": SOURCES,
    "model.dtype": tuple(DTYPES),
    "model.encoder": ENCODERS,
    "model.cnn_family": tuple(FAMILIES),
    "data.preprocess": tuple(PREPROCESS),
    "model.posemb": POSEMBS,
    "model.vit_family": tuple(VIT_FAMILIES),
    "quantizer.type": QUANTIZER_TYPES,
    "discriminator.type": DISCRIMINATORS,
    "discriminator.norm": tuple(PATCHGAN_NORMS),
    "loss.gan_loss": GAN_LOSSES,
  }


_NON_NEGATIVE = (
  "loss.l1_weight",
  "loss.l2_weight",
  "loss.perceptual_weight",
  "loss.gan_weight",
  "loss.disc_start",
  "loss.disc_loss_weight",
  "loss.lecam_weight",
  "loss.r1_weight",
  "loss.proxy_code_weight",
  "optimizer.warmup_steps",
  "optimizer.weight_decay",
  "optimizer.grad_clip",
  "optimizer.min_lr_ratio",
  "training.num_steps",
  "training.eval_every",
  "training.image_every",
  "data.num_workers",
  "eval.num_images",
)
_POSITIVE = (
  "image_size",
  "optimizer.lr",
  "optimizer.disc_lr",
  "training.batch_size",
  "training.log_every",
  "model.norm_groups",
  "training.checkpoint_every",
  "training.keep_checkpoints",
  "eval.batch_size",
)


def _get(config: ml_collections.ConfigDict, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      raise ValueError(f"config is missing the field {dotted!r}")
    node = node[part]
  return node


def _check_finite(node, prefix: str) -> None:
  """Every float in the config (nested, in lists too) is finite."""
  import math  # noqa: PLC0415

  items = node.items() if isinstance(node, (ml_collections.ConfigDict, dict)) else enumerate(node)
  for k, v in items:
    name = f"{prefix}.{k}" if prefix else str(k)
    if isinstance(v, float) and not math.isfinite(v):
      raise ValueError(f"config field {name}={v!r} must be a finite number")
    if isinstance(v, (ml_collections.ConfigDict, dict, list, tuple)):
      _check_finite(v, name)


# Files and folders a config may name, that must exist before any work starts.
_PATHS = ("loss.lpips_weights", "eval.inception_weights")


def validate_config(config: ml_collections.ConfigDict, *, check_paths: bool = True) -> ml_collections.ConfigDict:
  """Checks field names and values before any work starts.

  ``check_paths=False`` skips the files and folders the config names (for a
  saved config read only for its architecture).

  Raises:
    ValueError: naming the first field that is unknown, missing or out of range.
  """
  default = default_config()
  _check_finite(config, "")
  for section in ("data", "model", "discriminator", "loss", "optimizer", "training", "eval"):
    if section not in config:
      raise ValueError(f"config is missing the section {section!r}")
  for section in ("data", "model", "loss", "optimizer", "training", "eval"):
    for key in config[section]:
      if key not in default[section]:
        raise ValueError(f"unknown config field {section}.{key}; known fields: {sorted(default[section])}")
  for key in config:
    if key not in default:
      raise ValueError(f"unknown config field {key!r}; known top-level fields: {sorted(default)}")
  for dotted, options in _choices().items():
    value = _get(config, dotted)
    if value not in options:
      raise ValueError(f"config field {dotted}={value!r} is not one of {options}")
  for dotted in _NON_NEGATIVE:
    if _get(config, dotted) < 0:
      raise ValueError(f"config field {dotted}={_get(config, dotted)!r} must be >= 0")
  for dotted in _POSITIVE:
    if _get(config, dotted) <= 0:
      raise ValueError(f"config field {dotted}={_get(config, dotted)!r} must be > 0")
  from vqtok.models.tokenizer import check_input_range  # noqa: PLC0415

  check_input_range(config.model.input_range)
  decay = config.training.ema_decay
  if not 0 <= decay < 1:
    raise ValueError(f"config field training.ema_decay={decay!r} must be in [0, 1)")
  if not 0 < config.data.min_scale <= 1:
    raise ValueError(f"config field data.min_scale={config.data.min_scale!r} must be in (0, 1]")
  if config.data.source == "folder" and not config.data.path:
    raise ValueError("data.source='folder' needs data.path (the image directory)")
  if config.data.source == "tfds" and not config.data.name:
    raise ValueError("data.source='tfds' needs data.name (a TFDS dataset name, e.g. 'cifar10')")
  if config.loss.perceptual_weight > 0 and not config.loss.lpips_weights:
    raise ValueError(
      "loss.perceptual_weight > 0 needs loss.lpips_weights (an .npz made by "
      "scripts/convert_lpips.py); set loss.perceptual_weight=0 to train without LPIPS"
    )
  _check_teacher_fields(config)
  if len(tuple(config.training.mesh)) != 2:
    raise ValueError(f"config field training.mesh={config.training.mesh!r} must be (data, fsdp)")
  if check_paths:
    for dotted in _PATHS:
      if _get(config, dotted) and not os.path.isfile(_get(config, dotted)):
        raise ValueError(f"config field {dotted}={_get(config, dotted)!r}: no such file")
    if config.data.source == "folder" and not os.path.isdir(config.data.path):
      raise ValueError(f"config field data.path={config.data.path!r}: no such image folder")
    for field in ("init_from", "teacher"):
      if config.get(field, "") and not os.path.exists(config[field]):
        raise ValueError(f"config field {field}={config[field]!r}: no such tokenizer directory or training workdir")
  scales = config.quantizer.get("scales") if config.quantizer.type == "multiscale" else None
  if scales and config.model.encoder == "cnn":
    factor = 2 ** (len(tuple(config.model.channel_mult)) - 1)
    side = int(config.image_size) // factor
    if int(tuple(scales)[-1]) != side:
      raise ValueError(
        f"config field quantizer.scales={list(scales)} must end at the latent size {side}"
        f" (image_size={config.image_size} over the CNN's downsampling {factor})"
      )
  # Quantizer arguments are checked by building it abstractly (no allocation).
  from flax import nnx  # noqa: PLC0415

  from vqtok.quantizers import build_quantizer  # noqa: PLC0415

  try:
    nnx.eval_shape(lambda: build_quantizer(config.quantizer, code_dim=int(config.model.code_dim), rngs=nnx.Rngs(0)))
  except (TypeError, ValueError) as e:
    raise ValueError(f"config field quantizer: {e}") from e
  return config


def _check_teacher_fields(config: ml_collections.ConfigDict) -> None:
  """``teacher``, ``loss.proxy_code_weight`` and ``training.freeze`` agree with each other and the model."""
  teacher, weight = config.get("teacher", ""), config.loss.get("proxy_code_weight", 0.0)
  if not isinstance(teacher, str):
    raise ValueError(f"config field teacher={teacher!r} must be a path (a tokenizer directory or training workdir)")
  if weight > 0 and not teacher:
    raise ValueError("config field loss.proxy_code_weight > 0 needs teacher (the tokenizer whose codes are targets)")
  if (weight > 0 or teacher) and not config.model.get("proxy_codebook_size", 0):
    field = "loss.proxy_code_weight" if weight > 0 else "teacher"
    raise ValueError(f"config field {field} needs model.proxy_codebook_size > 0 (a decoder that predicts proxy codes)")
  freeze = config.training.get("freeze", ())
  if isinstance(freeze, str) or not all(isinstance(p, str) and p.strip(". ") for p in freeze):
    raise ValueError(
      f"config field training.freeze={freeze!r} must be a list of dotted module paths, e.g. ('encoder', 'quantizer')"
    )
  if any(p.strip(". ").split(".")[0] == "encoder" for p in freeze) and not config.get("init_from", ""):
    raise ValueError(
      f"config field training.freeze={tuple(freeze)!r} freezes the encoder but init_from is empty, so it would stay"
      " at its random initial weights: set init_from (for TiTok's stage 2, the stage-1 run or its export)"
    )


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a training run saved as ``config.json``."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a vqtok training run directory?")
  with open(path) as f:
    saved = json.load(f)
  config = default_config()
  _merge(config, saved)
  return config


def _merge(config: ml_collections.ConfigDict, values: dict) -> None:
  for k, v in values.items():
    if isinstance(v, dict) and k in config and isinstance(config[k], ml_collections.ConfigDict):
      if k == "quantizer":  # free-form kwargs of the quantizer class
        config[k] = ml_collections.ConfigDict(v)
      else:
        _merge(config[k], v)
    elif k in config and isinstance(config[k], tuple) and isinstance(v, list):
      config[k] = tuple(v)
    else:
      with config.ignore_type():
        config[k] = v


# What defines a tokenizer's weights and tokens; data, loss, optimizer, training
# and eval fields may change between runs on the same weights.
ARCHITECTURE_SECTIONS = ("model", "quantizer")


def architecture_diff(saved: ml_collections.ConfigDict, requested: ml_collections.ConfigDict) -> list[str]:
  """Dotted names of the architecture / quantizer fields that differ (``image_size`` included)."""

  def flat(node, prefix):
    if isinstance(node, (ml_collections.ConfigDict, dict)):
      out = {}
      for k in node:
        out.update(flat(node[k], f"{prefix}.{k}" if prefix else k))
      return out
    return {prefix: list(node) if isinstance(node, (tuple, list)) else node}

  a, b = {}, {}
  for section in ARCHITECTURE_SECTIONS:
    a.update(flat(saved[section], section))
    b.update(flat(requested[section], section))
  a["image_size"], b["image_size"] = saved.image_size, requested.image_size
  return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def describe_diff(fields: list[str], limit: int = 4) -> str:
  """``"model.channels, quantizer.levels differ"`` for messages."""
  shown = ", ".join(fields[:limit]) + (f" and {len(fields) - limit} more" if len(fields) > limit else "")
  return f"{shown} differ{'s' if len(fields) == 1 else ''}"


def check_devices(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ValueError unless the training and eval batches divide over ``num_devices``."""
  for field in ("training.batch_size", "eval.batch_size"):
    value = _get(config, field)
    if value % num_devices:
      raise ValueError(
        f"config field {field}={value} must be a multiple of the {num_devices} devices of the mesh"
        f" (e.g. {max(num_devices, value - value % num_devices)})"
      )
