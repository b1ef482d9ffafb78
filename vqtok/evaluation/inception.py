"""The FID InceptionV3 (Szegedy et al., 2016, arXiv:1512.00567) in Flax NNX.

This is the network of the TF graph ``inception-2015-12-05`` that FID
(Heusel et al., 2017) is defined with, in the form pytorch-fid ports it: the
torchvision ``Inception3`` layout with the ``FIDInceptionA/C/E_1/E_2`` blocks,
whose quirks matter for comparable numbers:

* the input is resized to 299x299 (bilinear, half-pixel centres, no
  antialiasing) and mapped to [-1, 1];
* the 3x3 average pools inside the A/C/E blocks do not count padded zeros
  (TF's ``SAME`` average pool);
* the last E block uses a 3x3 *max* pool in its pool branch;
* BatchNorm with ``eps=1e-3``, inference statistics.

Images are NHWC. The output is the 2048-d pool3 feature. Weights come from an
.npz written by ``scripts/convert_inception.py`` (see scripts/README.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vqtok import files

FEATURE_DIM = 2048
INPUT_SIZE = 299
_HIGHEST = jax.lax.Precision.HIGHEST


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv(nnx.Module):
  """Conv (no bias) -> BatchNorm (eps 1e-3, inference) -> ReLU."""

  def __init__(
    self,
    cin: int,
    cout: int,
    kernel: int | tuple[int, int],
    *,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    rngs: nnx.Rngs,
  ):
    ph, pw = _pair(padding)
    self.conv = nnx.Conv(
      cin,
      cout,
      _pair(kernel),
      strides=stride,
      padding=((ph, ph), (pw, pw)),
      use_bias=False,
      precision=_HIGHEST,
      rngs=rngs,
    )
    self.bn = nnx.BatchNorm(cout, epsilon=1e-3, use_running_average=True, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: jax.Array) -> jax.Array:
  # TF's SAME average pool divides by the number of real pixels in the window.
  return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: jax.Array, stride: int, pad: int) -> jax.Array:
  return nnx.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class InceptionA(nnx.Module):
  """35x35 block (FIDInceptionA)."""

  def __init__(self, cin: int, pool_features: int, *, rngs: nnx.Rngs):
    self.branch1x1 = BasicConv(cin, 64, 1, rngs=rngs)
    self.branch5x5_1 = BasicConv(cin, 48, 1, rngs=rngs)
    self.branch5x5_2 = BasicConv(48, 64, 5, padding=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv(96, 96, 3, padding=1, rngs=rngs)
    self.branch_pool = BasicConv(cin, pool_features, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
  """35x35 -> 17x17 reduction (Mixed_6a)."""

  def __init__(self, cin: int, *, rngs: nnx.Rngs):
    self.branch3x3 = BasicConv(cin, 384, 3, stride=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv(96, 96, 3, stride=2, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3(x)
    bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([b3, bd, _max_pool(x, 2, 0)], axis=-1)


class InceptionC(nnx.Module):
  """17x17 block with factorised 7x7 convolutions (FIDInceptionC)."""

  def __init__(self, cin: int, channels_7x7: int, *, rngs: nnx.Rngs):
    c7 = channels_7x7
    self.branch1x1 = BasicConv(cin, 192, 1, rngs=rngs)
    self.branch7x7_1 = BasicConv(cin, c7, 1, rngs=rngs)
    self.branch7x7_2 = BasicConv(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7_3 = BasicConv(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_1 = BasicConv(cin, c7, 1, rngs=rngs)
    self.branch7x7dbl_2 = BasicConv(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_3 = BasicConv(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7dbl_4 = BasicConv(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_5 = BasicConv(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch_pool = BasicConv(cin, 192, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = self.branch7x7dbl_1(x)
    for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
      bd = layer(bd)
    bp = self.branch_pool(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nnx.Module):
  """17x17 -> 8x8 reduction (Mixed_7a)."""

  def __init__(self, cin: int, *, rngs: nnx.Rngs):
    self.branch3x3_1 = BasicConv(cin, 192, 1, rngs=rngs)
    self.branch3x3_2 = BasicConv(192, 320, 3, stride=2, rngs=rngs)
    self.branch7x7x3_1 = BasicConv(cin, 192, 1, rngs=rngs)
    self.branch7x7x3_2 = BasicConv(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7x3_3 = BasicConv(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7x3_4 = BasicConv(192, 192, 3, stride=2, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = self.branch7x7x3_1(x)
    for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
      b7 = layer(b7)
    return jnp.concatenate([b3, b7, _max_pool(x, 2, 0)], axis=-1)


class InceptionE(nnx.Module):
  """8x8 block; ``pool="avg"`` is FIDInceptionE_1, ``pool="max"`` FIDInceptionE_2."""

  def __init__(self, cin: int, *, pool: str, rngs: nnx.Rngs):
    if pool not in ("avg", "max"):
      raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
    self.pool = pool
    self.branch1x1 = BasicConv(cin, 320, 1, rngs=rngs)
    self.branch3x3_1 = BasicConv(cin, 384, 1, rngs=rngs)
    self.branch3x3_2a = BasicConv(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3_2b = BasicConv(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch3x3dbl_1 = BasicConv(cin, 448, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv(448, 384, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3a = BasicConv(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3dbl_3b = BasicConv(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch_pool = BasicConv(cin, 192, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b3 = self.branch3x3_1(x)
    b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
    # The 2015 TF graph max-pools in its last block (a bug there, kept for FID).
    pooled = _avg_pool_same(x) if self.pool == "avg" else _max_pool(x, 1, 1)
    bp = self.branch_pool(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_bilinear(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear resize of NHWC images like ``F.interpolate(align_corners=False)``.

  Args:
    images: ``(B, H, W, C)`` float array.
    size: output ``(height, width)``.

  Returns:
    ``(B, height, width, C)`` array.
  """
  b, _, _, c = images.shape
  # No antialiasing: torch's bilinear interpolate does not low-pass when
  # shrinking, and FID numbers depend on it.
  return jax.image.resize(images, (b, *size, c), method="bilinear", antialias=False)


class InceptionV3(nnx.Module):
  """FID InceptionV3 up to the 2048-d pool3 features (no classifier)."""

  def __init__(self, *, resize_input: bool = True, rngs: nnx.Rngs):
    """Builds the network with random weights (load real ones with ``load_inception``).

    Args:
      resize_input: resize inputs to 299x299 first, as FID requires; turn off
        only to run on other sizes (at least 75x75).
      rngs: random keys for the initial weights.
    """
    self.resize_input = resize_input
    self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, stride=2, rngs=rngs)
    self.Conv2d_2a_3x3 = BasicConv(32, 32, 3, rngs=rngs)
    self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, padding=1, rngs=rngs)
    self.Conv2d_3b_1x1 = BasicConv(64, 80, 1, rngs=rngs)
    self.Conv2d_4a_3x3 = BasicConv(80, 192, 3, rngs=rngs)
    self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
    self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
    self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
    self.Mixed_6a = InceptionB(288, rngs=rngs)
    self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
    self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
    self.Mixed_7a = InceptionD(768, rngs=rngs)
    self.Mixed_7b = InceptionE(1280, pool="avg", rngs=rngs)
    self.Mixed_7c = InceptionE(2048, pool="max", rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    """Pool3 features of images.

    Args:
      images: ``(B, H, W, 3)`` in [0, 255] (uint8 or float); see
        ``metrics.to_uint8_range`` for [-1, 1] model outputs.

    Returns:
      ``(B, 2048)`` float32 features.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"expected (B, H, W, 3) images, got shape {images.shape}")
    x = jnp.asarray(images, jnp.float32) / 255.0
    if self.resize_input:
      x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
    elif min(x.shape[1:3]) < 75:
      raise ValueError(f"InceptionV3 needs inputs of at least 75x75, got {x.shape[1:3]}")
    x = 2.0 * x - 1.0
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = _max_pool(x, 2, 0)
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    x = _max_pool(x, 2, 0)
    for block in (
      self.Mixed_5b,
      self.Mixed_5c,
      self.Mixed_5d,
      self.Mixed_6a,
      self.Mixed_6b,
      self.Mixed_6c,
      self.Mixed_6d,
      self.Mixed_6e,
      self.Mixed_7a,
      self.Mixed_7b,
      self.Mixed_7c,
    ):
      x = block(x)
    return jnp.mean(x, axis=(1, 2))


# pytorch-fid BasicConv2d tensors -> (nnx path tail, layout change).
_TORCH_SUFFIXES = {
  "conv.weight": ("conv.kernel", lambda w: np.transpose(w, (2, 3, 1, 0))),  # OIHW->HWIO
  "bn.weight": ("bn.scale", lambda w: w),
  "bn.bias": ("bn.bias", lambda w: w),
  "bn.running_mean": ("bn.mean", lambda w: w),
  "bn.running_var": ("bn.var", lambda w: w),
}
# Parts of the torch checkpoint that FID features never use.
_TORCH_IGNORED = ("fc.", "AuxLogits.")


def convert_inception_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Maps pytorch-fid ``pt_inception-2015-12-05`` tensors to ``InceptionV3`` arrays.

  Args:
    state_dict: ``{torch name: array}``, e.g. ``Mixed_5b.branch1x1.conv.weight``
      (conv OIHW), ``...bn.running_var``; ``fc.*``, ``AuxLogits.*`` and
      ``num_batches_tracked`` entries are skipped.

  Returns:
    ``{"Mixed_5b.branch1x1.conv.kernel": HWIO float32 array, ...}``, the key
    layout ``load_inception`` reads from an .npz.
  """
  out = {}
  for name, value in state_dict.items():
    if name.startswith(_TORCH_IGNORED) or name.endswith("num_batches_tracked"):
      continue
    for suffix, (tail, fn) in _TORCH_SUFFIXES.items():
      if name.endswith("." + suffix):
        prefix = name[: -len(suffix) - 1]
        out[f"{prefix}.{tail}"] = np.ascontiguousarray(fn(np.asarray(value, np.float32)))
        break
    else:
      raise ValueError(f"unexpected tensor in the Inception state dict: {name}")
  return out


def load_inception(path: str, *, resize_input: bool = True) -> InceptionV3:
  """Builds the FID InceptionV3 with weights from an .npz.

  Args:
    path: .npz written by ``scripts/convert_inception.py``.
    resize_input: see ``InceptionV3``.

  Returns:
    The model, ready for ``model(images)``.
  """
  if not path:
    raise ValueError(
      "no Inception weights given: set eval.inception_weights to an .npz"
      " made by scripts/convert_inception.py (see scripts/README.md)"
    )
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"Inception weights not found: {path}; make them with scripts/convert_inception.py (see scripts/README.md)"
    )
  abstract = nnx.eval_shape(lambda: InceptionV3(resize_input=resize_input, rngs=nnx.Rngs(0)))
  return files.assign(abstract, files.read_npz(path, legacy_sep="/"), source=f"Inception weights {path}")


def feature_fn(model: InceptionV3) -> Callable[[jax.Array], jax.Array]:
  """Returns a jitted ``images -> (B, 2048)`` function of a fixed ``model``."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def features(state, images):
    return nnx.merge(graphdef, state)(images)

  return lambda images: features(state, images)
