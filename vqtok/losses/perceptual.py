"""LPIPS perceptual distance (Zhang et al., 2018, arXiv:1801.03924), VGG16 trunk.

``d(x, y) = sum_l mean_hw( w_l . (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2 )``
where ``f_l`` are the VGG16 activations relu1_2, relu2_2, relu3_3, relu4_3 and
relu5_3 of the inputs after the lpips package's scaling layer, ``|.|`` is the
channel-wise L2 norm and ``w_l >= 0`` the learned 1x1 "linear" heads (lpips
v0.1). Weights: torchvision ``vgg16`` ``features`` plus the lpips package's
``weights/v0.1/vgg.pth``, converted to one .npz by ``scripts/convert_lpips.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vqtok import files
from vqtok.config_fields import ConfigFields

# ScalingLayer of the lpips package: inputs in [-1, 1] are mapped to roughly
# ImageNet-normalised values, (x - shift) / scale.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# Norm floor of lpips.normalize_tensor.
_NORM_EPS = 1e-10

# VGG16 convs per stage, named conv{stage}_{i}, with torchvision `features`
# indices; a 2x2 max pool precedes every stage but the first.
_VGG_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
_VGG_TORCH_INDEX = {
  "conv1_1": 0,
  "conv1_2": 2,
  "conv2_1": 5,
  "conv2_2": 7,
  "conv3_1": 10,
  "conv3_2": 12,
  "conv3_3": 14,
  "conv4_1": 17,
  "conv4_2": 19,
  "conv4_3": 21,
  "conv5_1": 24,
  "conv5_2": 26,
  "conv5_3": 28,
}
LPIPS_CHANNELS = tuple(stage[-1] for stage in _VGG_STAGES)


def normalize_channels(f: jax.Array) -> jax.Array:
  """Unit-normalises features along the channel (last) axis, as lpips does."""
  sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
  # A pixel where every ReLU channel is 0 has norm 0, where d sqrt is inf and
  # the loss gradient NaN; the double `where` keeps the value, zeroes that grad.
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return f / (norm + _NORM_EPS)


def lpips_from_features(
  feats_x: Sequence[jax.Array], feats_y: Sequence[jax.Array], weights: Sequence[jax.Array]
) -> jax.Array:
  """LPIPS distance from per-layer NHWC features and 1x1 head weights.

  Args:
    feats_x: per-layer features ``(B, H_l, W_l, C_l)`` of the first images.
    feats_y: same for the second images.
    weights: per-layer head weights ``(C_l,)``.

  Returns:
    ``(B,)`` distances.
  """
  if not (len(feats_x) == len(feats_y) == len(weights)):
    raise ValueError(f"need one weight per layer: got {len(feats_x)}, {len(feats_y)}, {len(weights)}")
  total = 0.0
  for fx, fy, w in zip(feats_x, feats_y, weights):
    diff = jnp.square(normalize_channels(fx) - normalize_channels(fy))
    per_pixel = diff @ w.astype(diff.dtype)  # the 1x1 conv to one channel
    total = total + jnp.mean(per_pixel, axis=(1, 2))
  return total


class VGG16Features(nnx.Module):
  """torchvision VGG16 ``features`` up to relu5_3, returning the 5 LPIPS taps."""

  def __init__(self, *, rngs: nnx.Rngs):
    cin = 3
    for s, stage in enumerate(_VGG_STAGES, start=1):
      for i, cout in enumerate(stage, start=1):
        setattr(self, f"conv{s}_{i}", nnx.Conv(cin, cout, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs))
        cin = cout

  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps = []
    for s, stage in enumerate(_VGG_STAGES, start=1):
      if s > 1:
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
      for i in range(1, len(stage) + 1):
        x = jax.nn.relu(getattr(self, f"conv{s}_{i}")(x))
      taps.append(x)
    return taps


class LPIPS(nnx.Module):
  """LPIPS-VGG16 (v0.1) distance between images in [-1, 1].

  The weights are fixed; keep this module outside the model the optimiser
  updates (gradients still flow to the images).
  """

  def __init__(self, *, rngs: nnx.Rngs):
    """Random weights; use ``load_lpips`` for the real ones."""
    self.vgg = VGG16Features(rngs=rngs)
    for l, c in enumerate(LPIPS_CHANNELS):
      setattr(self, f"lin{l}", nnx.Conv(c, 1, (1, 1), use_bias=False, rngs=rngs))

  def features(self, images: jax.Array) -> list[jax.Array]:
    """VGG taps of ``(B, H, W, 3)`` images in [-1, 1] after the scaling layer."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"expected (B, H, W, 3) images, got shape {images.shape}")
    x = images.astype(jnp.float32)
    shift = jnp.asarray(LPIPS_SHIFT, jnp.float32).reshape(1, 1, 1, 3)
    scale = jnp.asarray(LPIPS_SCALE, jnp.float32).reshape(1, 1, 1, 3)
    return self.vgg((x - shift) / scale)

  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """LPIPS distance per image.

    Args:
      x: ``(B, H, W, 3)`` images in [-1, 1].
      y: images of the same shape.

    Returns:
      ``(B,)`` float32 distances.
    """
    if x.shape != y.shape:
      raise ValueError(f"LPIPS inputs must have the same shape, got {x.shape} and {y.shape}")
    b = x.shape[0]
    # One VGG pass over both sets: half the kernel launches of two passes.
    feats = self.features(jnp.concatenate([x, y], axis=0))
    weights = [getattr(self, f"lin{l}").kernel[...].reshape(-1) for l in range(len(LPIPS_CHANNELS))]
    return lpips_from_features([f[:b] for f in feats], [f[b:] for f in feats], weights)


def convert_lpips_state_dict(
  vgg_state_dict: Mapping[str, np.ndarray], lin_state_dict: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
  """Maps torchvision VGG16 and lpips ``vgg.pth`` tensors to ``LPIPS`` arrays.

  Args:
    vgg_state_dict: torchvision ``vgg16`` tensors; ``features.{i}.weight``
      (OIHW) and ``features.{i}.bias`` are used, ``classifier.*`` is skipped.
      A ``net.slice{k}.{i}.*`` layout (a saved ``lpips.LPIPS``) works too.
    lin_state_dict: lpips ``vgg.pth`` tensors ``lin{l}.model.1.weight``
      of shape ``(1, C_l, 1, 1)``.

  Returns:
    ``{"vgg.conv1_1.kernel": HWIO array, ..., "lin0.kernel": (1, 1, C, 1)}``.
  """

  def find(index: int, kind: str) -> np.ndarray:
    for key in (f"features.{index}.{kind}", *(f"net.slice{k}.{index}.{kind}" for k in range(1, 6))):
      if key in vgg_state_dict:
        return np.asarray(vgg_state_dict[key], np.float32)
    raise ValueError(f"VGG16 state dict has no features.{index}.{kind}")

  out = {}
  for name, index in _VGG_TORCH_INDEX.items():
    out[f"vgg.{name}.kernel"] = np.ascontiguousarray(np.transpose(find(index, "weight"), (2, 3, 1, 0)))  # OIHW -> HWIO
    out[f"vgg.{name}.bias"] = find(index, "bias")
  for l, c in enumerate(LPIPS_CHANNELS):
    for key in (f"lin{l}.model.1.weight", f"lin{l}.model.0.weight"):
      if key in lin_state_dict:
        w = np.asarray(lin_state_dict[key], np.float32)
        break
    else:
      raise ValueError(f"LPIPS state dict has no lin{l}.model.1.weight")
    if w.shape != (1, c, 1, 1):
      raise ValueError(f"lin{l} weight must have shape (1, {c}, 1, 1), got {w.shape}")
    out[f"lin{l}.kernel"] = np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))
  return out


def load_lpips(path: str) -> LPIPS:
  """Builds LPIPS-VGG16 with weights from an .npz.

  Args:
    path: .npz written by ``scripts/convert_lpips.py``.

  Returns:
    The ``LPIPS`` module.
  """
  if not path:
    raise ValueError(
      "no LPIPS weights given: set loss.lpips_weights to an .npz made by"
      " scripts/convert_lpips.py (see scripts/README.md), or set"
      " loss.perceptual_weight=0"
    )
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"LPIPS weights not found: {path}; make them with scripts/convert_lpips.py (see scripts/README.md)"
    )
  abstract = nnx.eval_shape(lambda: LPIPS(rngs=nnx.Rngs(0)))
  return files.assign(abstract, files.read_npz(path, legacy_sep="/"), source=f"LPIPS weights {path}")


def pure_lpips(model: LPIPS) -> tuple[Any, Any]:
  """``(fn, params)``: ``model`` as a pure ``fn(params, x, y) -> (B,)`` and its weights.

  The form a jitted function takes it in: the weights are an argument, not
  constants baked into the compiled program.
  """
  graphdef, params = nnx.split(model)
  return (lambda p, x, y: nnx.merge(graphdef, p)(x, y)), params.to_pure_dict()


def _check_config(config, check_paths: bool) -> None:
  if config.loss.perceptual_weight > 0 and not config.loss.lpips_weights:
    raise ValueError(
      "loss.perceptual_weight > 0 needs loss.lpips_weights (an .npz made by "
      "scripts/convert_lpips.py); set loss.perceptual_weight=0 to train without LPIPS"
    )


#: ``config.loss`` fields of the LPIPS term.
CONFIG = ConfigFields(
  "loss",
  {
    "perceptual_weight": 0.0,  # needs lpips_weights
    "lpips_weights": "",  # .npz from scripts/convert_lpips.py
  },
  non_negative=("perceptual_weight",),
  files=("lpips_weights",),
  check=_check_config,
)
