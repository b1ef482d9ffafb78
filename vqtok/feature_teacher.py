"""The feature-teacher directory: a frozen vision foundation model that alignment losses compare latents to.

``config.json`` (``teacher``: the model kind, its sizes and its own
preprocessing: ``resize_size``, ``resolution``, ``mean``, ``std``) +
``model.safetensors`` (its arrays by dotted path, metadata naming the source
file and its sha256). ``python -m vqtok.convert dinov2 FILE OUT/`` (or ``siglip``) writes one;
``config.feature_teacher`` names one for training. Written atomically, like a
tokenizer directory.

Two ways in: ``preprocess`` is the teacher's own evaluation transform of an
image file (uint8, resize the short side, center crop, mean/std), ``features``
takes a training batch inside the jitted step (any value range, already at
the tokenizer's size) and resizes it to ``resolution`` first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from vqtok import files
from vqtok.data import transforms
from vqtok.models import dinov2, siglip
from vqtok.quantizers import interpolate

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
FORMAT = "vqtok-feature-teacher-v1"
_SIZES = ("width", "depth", "mlp_dim", "num_heads", "patch_size", "pos_grid", "num_register_tokens")


def _build_dinov2(c: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
  return dinov2.DINOv2(**{k: int(c[k]) for k in _SIZES}, interpolate_offset=float(c["interpolate_offset"]), rngs=rngs)


def _build_clip(c: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
  # OpenAI CLIP's ViT: the DINOv2 module with CLIP's family row and its class-token projection.
  sizes = {k: int(c[k]) for k in _SIZES}
  return dinov2.DINOv2(**sizes, interpolate_offset=0.0, family="clip", proj_dim=int(c["proj_dim"]), rngs=rngs)


def _build_siglip(c: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
  sizes = ("width", "depth", "mlp_dim", "num_heads", "patch_size", "pos_grid", "embed_dim")
  return siglip.SigLIP(**{k: int(c[k]) for k in sizes}, rngs=rngs)


#: ``teacher`` kind -> builder from the directory's config.
BUILDERS: dict[str, Callable[[Mapping[str, Any], nnx.Rngs], nnx.Module]] = {
  "dinov2": _build_dinov2,
  "siglip": _build_siglip,
  "clip": _build_clip,
}


class FeatureTeacherError(ValueError):
  """A feature-teacher directory that is missing, unreadable or of another kind."""


def build(config: Mapping[str, Any]) -> nnx.Module:
  """The teacher module of a config (random weights); FeatureTeacherError for an unknown kind."""
  kind = config.get("teacher")
  if kind not in BUILDERS:
    raise FeatureTeacherError(f"unknown feature teacher {kind!r}; expected one of {sorted(BUILDERS)}")
  with files.fast_tracing():  # built under nnx.eval_shape: see files.fast_tracing
    return BUILDERS[kind](config, nnx.Rngs(0))


def save(
  module: nnx.Module, config: ml_collections.ConfigDict, path: str, *, metadata: Mapping[str, Any], overwrite: bool
) -> str:
  """Writes a feature-teacher directory at ``path`` (atomically); returns its absolute path."""
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise FileExistsError(f"{path} exists and is not a directory")
  if os.path.isdir(path) and os.listdir(path) and not overwrite:
    raise FileExistsError(f"{path} exists and is not empty; choose a new directory (or pass --overwrite)")
  with files.atomic_dir(path) as tmp:
    files.write_safetensors(os.path.join(tmp, WEIGHTS), files.arrays(module), {"format": FORMAT, **metadata})
    with open(os.path.join(tmp, CONFIG), "w") as f:
      json.dump(config.to_dict(), f, indent=2)
    if os.path.isdir(path):
      shutil.rmtree(path)
  return path


def read(path: str) -> tuple[nnx.Module, dict[str, Any]]:
  """``(module, config)`` of the feature-teacher directory at ``path``.

  Raises:
    FeatureTeacherError: not such a directory (a tokenizer directory, say), or an unknown kind.
    ValueError: weights that do not fit the config.
  """
  cfg_path, weights = os.path.join(path, CONFIG), os.path.join(path, WEIGHTS)
  if not (os.path.isfile(cfg_path) and os.path.isfile(weights)):
    raise FeatureTeacherError(
      f"{path}: not a feature-teacher directory (no {CONFIG} and {WEIGHTS}); write one with"
      " python -m vqtok.convert dinov2 FILE DIR"
    )
  arrays, meta = files.read_safetensors(weights)
  if meta.get("format") != FORMAT:
    raise FeatureTeacherError(
      f"{path}: not a feature-teacher directory (format {meta.get('format')!r}, not {FORMAT!r})"
    )
  with open(cfg_path) as f:
    config = json.load(f)
  module = build(config)
  files.assign(module, arrays, source=weights)
  return module, config


def preprocess(image: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
  """The teacher's evaluation transform of one uint8 (H, W, 3) image -> float32 (res, res, 3).

  torchvision's ``Resize(resize_size, bicubic)`` on a PIL image, ``CenterCrop(resolution)``,
  ``ToTensor`` and ``Normalize(mean, std)`` (dinov2/data/transforms.py
  ``make_classification_eval_transform``); with ``preprocess: "squash_bilinear"``
  (SigLIP) the whole image to ``resolution`` by TF's bilinear resize instead
  (``transforms.squash_bilinear_tf``), no crop.
  """
  if config.get("preprocess") == "squash_bilinear":
    img = transforms.squash_bilinear_tf(image, int(config["resolution"]))
  else:
    img = transforms.torchvision_resize_crop(
      image, int(config["resize_size"]), int(config["resolution"]), Image.Resampling.BICUBIC
    )
  return dinov2.normalize(img.astype(np.float32) / np.float32(255.0), config["mean"], config["std"])


#: How ``features`` resizes a batch to the teacher's resolution (PyTorch's ``F.interpolate`` modes).
RESIZES = interpolate.MODES


#: The teacher output FQGAN's semantic loss predicts, by kind: the class token as the reference's
#: ``extract_patch_feats`` selects it (tokenizer/models/dino_encoder.py: Dinov2Model's
#: ``last_hidden_state[:, 0]``, after the final LayerNorm; clip_encoder.py: CLIPVisionModel's
#: ``hidden_states[-1][:, :1]``, before ``post_layernorm``). SigLIP has no class token.
SEMANTIC_TARGETS = {"dinov2": "cls", "clip": "cls_unnormed"}


def outputs(
  teacher: nnx.Module, config: Mapping[str, Any], images: jax.Array, input_range: tuple[float, float], resize: str
) -> dict[str, jax.Array]:
  """The teacher's outputs (``patches`` (B, g, g, width), ``cls`` ...) of a batch in ``input_range``,
  resized to ``resolution``; no gradient."""
  lo, hi = input_range
  x = (jax.lax.stop_gradient(images).astype(jnp.float32) - lo) / (hi - lo)
  r = int(config["resolution"])
  if x.shape[1:3] != (r, r):
    x = interpolate.resize(x, (r, r), resize)
  return jax.lax.stop_gradient(teacher(dinov2.normalize(x, config["mean"], config["std"])))


def features(
  teacher: nnx.Module, config: Mapping[str, Any], images: jax.Array, input_range: tuple[float, float], resize: str
) -> jax.Array:
  """Patch features (B, g, g, width) of a batch in ``input_range``, resized to ``resolution``; no gradient."""
  return outputs(teacher, config, images, input_range, resize)["patches"]


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A feature teacher for the train step: its graph definition and config; its arrays travel separately."""

  graphdef: nnx.GraphDef
  config: Mapping[str, Any]
  path: str


def _fail(path: str, why: str, field: str = "feature_teacher") -> FeatureTeacherError:
  return FeatureTeacherError(f"config field {field}={path!r}: {why}")


def load_for(
  config: ml_collections.ConfigDict,
  student: nnx.Module,
  *,
  patches: bool = True,
  semantic: bool = False,
  head: int | None = None,
) -> tuple[Loaded, Any]:
  """``(teacher, arrays)`` for ``config.feature_teacher``, checked against the student tokenizer.

  Args:
    config: the run config.
    student: the tokenizer.
    patches: check it for the patch-feature losses (VF, feature reconstruction, eval's feature cosine).
    semantic: check it for FQGAN's semantic loss (a class token as wide as ``model.feature_head_dims``).
    head: ``config.feature_teachers[head]`` instead, the teacher of that semantic head alone
      (its width is checked against that head's).

  Raises:
    FeatureTeacherError: not a feature-teacher directory; a resolution above
      ``image_size`` (the batch would be upsampled) or not a multiple of its
      patch; with ``patches``: its width is not ``model.feature_dim``, or the
      tokenizer's latents are not a 2-D grid, or not the teacher's patch grid
      at its resolution; with ``semantic``: a kind without a class token, or a
      width other than every feature head's.
  """
  if head is None:
    path, field = config.feature_teacher, "feature_teacher"
  else:
    path, field = config.feature_teachers[head], f"feature_teachers[{head}]"
  fail = lambda p, why: _fail(p, why, field)
  try:
    module, tconfig = read(path)
  except FeatureTeacherError as e:
    raise fail(path, str(e)) from None
  width, want = int(tconfig["width"]), int(config.model.get("feature_dim", 0))
  want_field = "model.feature_dim"
  if not want and config.model.get("semantic_encoder", ""):  # TokenFlow's semantic decoder predicts the features
    want, want_field = int(config.model.semantic_feature_dim), "model.semantic_feature_dim"
  rec_target = config.loss.get("feature_rec_target", "patches") if config.loss.get("feature_rec_weight", 0) > 0 else ""
  res, patch, size = int(tconfig["resolution"]), int(tconfig["patch_size"]), int(config.image_size)
  if res > size or res % patch:
    raise fail(
      path, f"its resolution {res} must be a multiple of its patch {patch} and at most image_size={size} (no upsizing)"
    )
  if semantic:
    kind, heads = tconfig.get("teacher"), tuple(int(w) for w in config.model.get("feature_head_dims", ()))
    if kind not in SEMANTIC_TARGETS:
      known = sorted(SEMANTIC_TARGETS)
      raise fail(path, f"loss.semantic_weight predicts a class token; a {kind} teacher has none ({known} do)")
    if head is not None and heads[head] != width:
      why = f"its features are {width} wide, model.feature_head_dims[{head}] is {heads[head]}: they must agree"
      raise fail(path, why)
    if head is None and any(w != width for w in heads):
      raise fail(path, f"its features are {width} wide, model.feature_head_dims is {heads}: each must agree")
  if patches and rec_target == "patch_embedding":
    if not int(tconfig.get("proj_dim", 0)):
      raise fail(
        path,
        f"loss.feature_rec_target='patch_embedding' needs a projection; a {tconfig.get('teacher')} teacher has none",
      )
    width, what = int(tconfig["proj_dim"]), "its projected features are"
  else:
    what = "its features are"
  if patches:
    _check_patches(path, width, want, res, patch, student, what=what, want_field=want_field)
  graphdef, state = nnx.split(module)
  return Loaded(graphdef, tconfig, path), state.to_pure_dict()


def _check_patches(
  path: str,
  width: int,
  want: int,
  res: int,
  patch: int,
  student: nnx.Module,
  *,
  what: str = "its features are",
  want_field: str = "model.feature_dim",
) -> None:
  if width != want:
    raise _fail(path, f"{what} {width} wide, {want_field} is {want}: they must agree")
  grid = (res // patch,) * 2
  if len(student.token_shape) != 2:
    raise _fail(path, f"the tokenizer's latents {student.token_shape} are not a 2-D grid to align with patch features")
  if tuple(student.token_shape) != grid:
    raise _fail(path, f"its patch grid at {res}px is {grid}, the tokenizer's latent grid is {student.token_shape}")


def batch_outputs(teacher: Loaded, arrays: Any, images: jax.Array, resize: str) -> dict[str, jax.Array]:
  """``outputs`` of a training batch ([-1, 1]) with the teacher's arrays as an argument (inside ``jit``)."""
  return outputs(nnx.merge(teacher.graphdef, arrays), teacher.config, images, (-1.0, 1.0), resize)


def batch_features(teacher: Loaded, arrays: Any, images: jax.Array, resize: str) -> jax.Array:
  """``features`` of a training batch ([-1, 1]) with the teacher's arrays as an argument (inside ``jit``)."""
  return batch_outputs(teacher, arrays, images, resize)["patches"]


def semantic_target(teacher: Loaded, out: dict[str, jax.Array]) -> jax.Array:
  """The (B, width) class features of ``outputs`` that FQGAN's semantic loss predicts (``SEMANTIC_TARGETS``)."""
  return out[SEMANTIC_TARGETS[teacher.config["teacher"]]]
