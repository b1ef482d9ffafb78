"""The config schema: every field a preset may set, with its default.

Presets in configs/ start from ``default_config()`` and override fields; train.py
and eval.py validate the result with ``validate_config`` before any work starts.
``load_run_config`` reads the config a training run saved back into this schema.
The fields of the data, model, quantizer, discriminator and loss sections are
declared, with their checks, by the modules that read them (``OWNED``: each a
``ConfigFields`` table next to its registry of data sources, encoders,
quantizer types, discriminators or GAN losses), so a new kind is registered in
one place; this module assembles them and owns the rest (the top-level fields,
the teacher, optimizer, training and eval).
"""

import copy
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from vqtok import files
from vqtok.config_fields import ConfigFields
from vqtok.data import sources, video
from vqtok.losses import adversarial, alignment, perceptual, reconstruction
from vqtok.models import discriminator, tokenizer
from vqtok.quantizers import registry

#: The sections the modules that read them declare, in config order (a section may have several).
OWNED: tuple[ConfigFields, ...] = (
  sources.CONFIG,
  video.CONFIG,
  tokenizer.CONFIG,
  registry.CONFIG,
  discriminator.CONFIG,
  reconstruction.CONFIG,
  perceptual.CONFIG,
  adversarial.CONFIG,
  alignment.CONFIG,
)


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
  # A frozen feature teacher (a directory from `python -m vqtok.convert dinov2`): the feature-alignment
  # losses (loss.vf_weight) compare the latents with its features of each batch. Never trained, never saved.
  c.feature_teacher = ""
  # One frozen feature teacher per FQGAN semantic head (model.feature_head_dims, in order: the i-th
  # teacher supervises the head on sub-code i + 1), for loss.semantic_weight; empty: every head
  # predicts feature_teacher's class token. FQGAN Triple: (DINOv2 ViT-S/14, CLIP ViT-B/16).
  c.feature_teachers = ()

  # ---- data, model, quantizer, discriminator, loss: declared by their modules ----
  sections: dict[str, dict] = {}
  for fields in OWNED:
    sections.setdefault(fields.section, {}).update(copy.deepcopy(dict(fields.defaults)))
  for name, values in sections.items():
    c[name] = ml_collections.ConfigDict(values)
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
  # Parameters exempt from weight decay besides the vectors (biases, norm scales): those whose
  # dotted path contains one of these substrings, as trainers that exempt by name do
  # (1d-tokenizer utils/train_utils.py:230-231: latent tokens, mask token, embeddings).
  c.optimizer.no_decay = ()
  # True: the discriminator's update judges the reconstructions of the tokenizer as updated in
  # the same step (one more tokenizer forward pass), as pytorch-lightning's loop does for
  # taming, whose training_step runs the whole model once per optimizer; False: those the
  # tokenizer's update was computed from (LlamaGen vq_train.py, SEED-Voken's manual steps).
  c.optimizer.disc_sees_updated_generator = False

  # ---- training loop ----
  c.training = ml_collections.ConfigDict()
  c.training.batch_size = 16  # global batch
  c.training.num_steps = 500
  c.training.ema_decay = 0.99  # 0 disables EMA weights
  # True: the k-th update decays the EMA by min(ema_decay, k / (k + 9)), and the first copies the
  # weights (diffusers' / open-muse's EMAModel without use_ema_warmup, as 1d-tokenizer's
  # modeling/modules/ema_model.py:92-107); False: ema_decay from the first update.
  c.training.ema_warmup = False
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


def cnn_config(
  *,
  quantizer: Mapping[str, Any],
  discriminator: Mapping[str, Any],
  image_size: int = 256,
  preprocess: str = "",
  **model,
) -> ml_collections.ConfigDict:
  """``default_config()`` made a CNN tokenizer: the published ones' presets and converters start here.

  Args:
    quantizer: the whole ``quantizer`` section (the quantizer class's arguments).
    discriminator: ``discriminator`` fields to set, e.g. ``discriminator.TAMING_PATCHGAN``.
    image_size: the training image size.
    preprocess: ``data.preprocess`` (the reference's eval resize); "" keeps the default.
    **model: ``model`` fields besides ``encoder="cnn"``, e.g. ``**cnn.TAMING_F16, code_dim=256``.
  """
  c = default_config()
  c.image_size = image_size
  c.model.update(encoder="cnn", **model)
  c.quantizer = quantizer if isinstance(quantizer, ml_collections.ConfigDict) else ml_collections.ConfigDict(quantizer)
  c.discriminator.update(discriminator)
  if preprocess:
    c.data.preprocess = preprocess
  return c


# This module's own fields (the owned sections' are in OWNED).
_NON_NEGATIVE = (
  "loss.proxy_code_weight",
  "optimizer.warmup_steps",
  "optimizer.weight_decay",
  "optimizer.grad_clip",
  "optimizer.min_lr_ratio",
  "training.num_steps",
  "training.eval_every",
  "training.image_every",
  "eval.num_images",
)
_POSITIVE = (
  "image_size",
  "optimizer.lr",
  "optimizer.disc_lr",
  "training.batch_size",
  "training.log_every",
  "training.checkpoint_every",
  "training.keep_checkpoints",
  "eval.batch_size",
)
# Files a config may name, that must exist before any work starts.
_FILES = ("eval.inception_weights",)
_SECTIONS = ("data", "model", "discriminator", "loss", "optimizer", "training", "eval")


def _get(config: ml_collections.ConfigDict, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      raise ValueError(f"config is missing the field {dotted!r}")
    node = node[part]
  return node


def _check_finite(node, prefix: str) -> None:
  """Every float in the config (nested, in lists too) is finite."""
  items = node.items() if isinstance(node, (ml_collections.ConfigDict, dict)) else enumerate(node)
  for k, v in items:
    name = f"{prefix}.{k}" if prefix else str(k)
    if isinstance(v, float) and not math.isfinite(v):
      raise ValueError(f"config field {name}={v!r} must be a finite number")
    if isinstance(v, (ml_collections.ConfigDict, dict, list, tuple)):
      _check_finite(v, name)


def validate_config(config: ml_collections.ConfigDict, *, check_paths: bool = True) -> ml_collections.ConfigDict:
  """Checks field names and values before any work starts.

  ``check_paths=False`` skips the files and folders the config names (for a
  saved config read only for its architecture).

  Raises:
    ValueError: naming the first field that is unknown, missing or out of range.
  """
  default = default_config()
  _check_finite(config, "")
  for section in _SECTIONS:
    if section not in config:
      raise ValueError(f"config is missing the section {section!r}")
  open_sections = {f.section for f in OWNED if f.open}
  for section in _SECTIONS:
    if section in open_sections:  # keyword arguments of the class its type names
      continue
    for key in config[section]:
      if key not in default[section]:
        raise ValueError(f"unknown config field {section}.{key}; known fields: {sorted(default[section])}")
  for key in config:
    if key not in default:
      raise ValueError(f"unknown config field {key!r}; known top-level fields: {sorted(default)}")
  for fields in OWNED:
    for name, options in fields.choices.items():
      value = _get(config, f"{fields.section}.{name}")
      if value not in options:
        raise ValueError(f"config field {fields.section}.{name}={value!r} is not one of {options}")
  non_negative = [f"{f.section}.{name}" for f in OWNED for name in f.non_negative]
  for dotted in (*non_negative, *_NON_NEGATIVE):
    if _get(config, dotted) < 0:
      raise ValueError(f"config field {dotted}={_get(config, dotted)!r} must be >= 0")
  positive = [f"{f.section}.{name}" for f in OWNED for name in f.positive]
  for dotted in (*positive, *_POSITIVE):
    if _get(config, dotted) <= 0:
      raise ValueError(f"config field {dotted}={_get(config, dotted)!r} must be > 0")
  for fields in OWNED:
    if fields.check is not None:
      fields.check(config, check_paths)
  for dotted in ("training.ema_decay", "optimizer.b1", "optimizer.b2"):  # decay rates: 1 would never move
    if not 0 <= _get(config, dotted) < 1:
      raise ValueError(f"config field {dotted}={_get(config, dotted)!r} must be in [0, 1)")
  if config.optimizer.min_lr_ratio > 1:  # the cosine decays from lr to lr * min_lr_ratio
    raise ValueError(f"config field optimizer.min_lr_ratio={config.optimizer.min_lr_ratio!r} must be in [0, 1]")
  _check_teacher_fields(config)
  no_decay = config.optimizer.get("no_decay", ())
  if isinstance(no_decay, str) or not all(isinstance(p, str) and p for p in no_decay):
    raise ValueError(
      f"config field optimizer.no_decay={no_decay!r} must be a list of parameter-name substrings, e.g. ('embed',)"
    )
  if not isinstance(config.training.get("ema_warmup", False), bool):
    raise ValueError(f"config field training.ema_warmup={config.training.ema_warmup!r} must be True or False")
  if len(tuple(config.training.mesh)) != 2:
    raise ValueError(f"config field training.mesh={config.training.mesh!r} must be (data, fsdp)")
  if check_paths:
    files = [f"{f.section}.{name}" for f in OWNED for name in f.files]
    for dotted in (*files, *_FILES):
      if _get(config, dotted) and not os.path.isfile(_get(config, dotted)):
        raise ValueError(f"config field {dotted}={_get(config, dotted)!r}: no such file")
    for field in ("init_from", "teacher"):
      if config.get(field, "") and not os.path.exists(config[field]):
        raise ValueError(f"config field {field}={config[field]!r}: no such tokenizer directory or training workdir")
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
  if any(p.split(".")[0] == "encoder" for p in freeze_prefixes(config)) and not config.get("init_from", ""):
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


def freeze_prefixes(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """``training.freeze`` as a tuple of dotted prefixes (without stray dots)."""
  return tuple(str(p).strip(". ") for p in config.training.get("freeze", ()))


def architecture_diff(saved: ml_collections.ConfigDict, requested: ml_collections.ConfigDict) -> list[str]:
  """Dotted names of the architecture / quantizer fields that differ (``image_size`` included)."""

  def flat(config: ml_collections.ConfigDict) -> dict[str, Any]:
    fields = files.flatten({s: config[s].to_dict() for s in ARCHITECTURE_SECTIONS})
    fields["image_size"] = config.image_size
    return {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in fields.items()}

  a, b = flat(saved), flat(requested)
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
