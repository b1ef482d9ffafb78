"""Image discriminators for the adversarial loss of tokenizer training.

* ``PatchGAN``: the NLayerDiscriminator of pix2pix (Isola et al., 2017,
  arXiv:1611.07004) as used by taming-transformers (Esser et al., 2021). The
  original uses BatchNorm; by default we use GroupNorm so the discriminator is
  stateless (no running statistics to sync or checkpoint, and per-example
  outputs do not depend on the rest of the batch). ``norm="batch"`` gives the
  original's training-mode BatchNorm, for parity with trainers that use it
  (LlamaGen). Returns per-patch logits (B, h, w, 1).
* ``StyleGANDiscriminator``: the residual StyleGAN2 discriminator (Karras et
  al., 2020, arXiv:1912.04958) as used by MaskGIT and MAGVIT(-v2): residual
  blocks with anti-aliased (blurred [1, 3, 3, 1]) stride-2 downsampling, no
  normalisation, leaky-ReLU 0.2. Returns one logit per image (B, 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vqtok.config_fields import ConfigFields
from vqtok.models.cnn import _num_groups


def _lrelu(x: jax.Array) -> jax.Array:
  return nnx.leaky_relu(x, negative_slope=0.2)


class BatchStatNorm(nnx.Module):
  """BatchNorm as a discriminator in training mode runs it: batch statistics only.

  Normalises each channel by the mean and biased variance over batch and
  space (torch ``BatchNorm2d`` in ``train()``, eps 1e-5), then scales and
  shifts. The trainers that use it never run their discriminator in eval mode,
  so no running averages are kept. The statistics are those of the batch given
  to one call: inside ``jit`` on a sharded batch, the global batch (torch DDP
  without SyncBatchNorm uses each device's own).
  """

  def __init__(self, channels: int, *, eps: float = 1e-5, rngs: nnx.Rngs):
    del rngs  # scale 1 and shift 0, as torch initialises them
    self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    shape = (1,) * (x.ndim - 1) + (-1,)
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...].reshape(shape) + self.bias[...].reshape(shape)


def _group_norm(channels: int, *, rngs: nnx.Rngs) -> nnx.Module:
  return nnx.GroupNorm(channels, num_groups=_num_groups(channels), rngs=rngs)


#: The normalisations a PatchGAN may use (``config.discriminator.norm``).
PATCHGAN_NORMS = {"group": _group_norm, "batch": BatchStatNorm}


class PatchGAN(nnx.Module):
  """pix2pix / taming NLayerDiscriminator (see module docstring).

  Args:
    channels: width of the first layer; doubles per layer up to 8x.
    num_layers: number of stride-2 layers (taming uses 3).
    in_channels: image channels.
    norm: ``"group"`` (stateless, per example) or ``"batch"`` (the original's
      BatchNorm with batch statistics, as LlamaGen trains it).
    rngs: parameter initialisation.
  """

  def __init__(
    self, *, channels: int = 64, num_layers: int = 3, in_channels: int = 3, norm: str = "group", rngs: nnx.Rngs
  ):
    if channels < 1 or num_layers < 1:
      raise ValueError(f"PatchGAN needs channels >= 1 and num_layers >= 1; got {channels}, {num_layers}")
    if norm not in PATCHGAN_NORMS:
      raise ValueError(f"unknown PatchGAN norm {norm!r}; expected one of {tuple(PATCHGAN_NORMS)}")
    pad = ((1, 1), (1, 1))
    self.conv_in = nnx.Conv(in_channels, channels, (4, 4), strides=2, padding=pad, rngs=rngs)
    convs, norms = [], []
    ch = channels
    for n in range(1, num_layers + 1):
      out = channels * min(2**n, 8)
      # The last of these keeps the resolution (stride 1), as in pix2pix.
      stride = 2 if n < num_layers else 1
      # No bias: the following norm's shift makes it redundant.
      convs.append(nnx.Conv(ch, out, (4, 4), strides=stride, padding=pad, use_bias=False, rngs=rngs))
      norms.append(PATCHGAN_NORMS[norm](out, rngs=rngs))
      ch = out
    self.convs, self.norms = nnx.List(convs), nnx.List(norms)
    self.conv_out = nnx.Conv(ch, 1, (4, 4), padding=pad, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = _lrelu(self.conv_in(x))
    for conv, norm in zip(self.convs, self.norms):
      h = _lrelu(norm(conv(h)))
    return self.conv_out(h)


def blur_downsample(x: jax.Array) -> jax.Array:
  """Anti-aliased 2x downsampling: depthwise [1,3,3,1]^2/64 blur, stride 2.

  Low-pass filtering before subsampling keeps the discriminator from reacting
  to aliasing (StyleGAN2, Sec. 4; Zhang, "Making CNNs shift-invariant", 2019).
  """
  k = np.array([1.0, 3.0, 3.0, 1.0])
  k = np.outer(k, k) / np.sum(k) ** 2
  c = x.shape[-1]
  kernel = jnp.asarray(np.tile(k[:, :, None, None], (1, 1, 1, c)), x.dtype)
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    window_strides=(2, 2),
    padding=((1, 1), (1, 1)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=c,
  )


class _DownBlock(nnx.Module):
  """conv3x3, lrelu, blur-down, conv3x3, lrelu; skip: blur-down, 1x1 conv."""

  def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(in_ch, in_ch, (3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(in_ch, out_ch, (3, 3), rngs=rngs)
    self.skip = nnx.Conv(in_ch, out_ch, (1, 1), use_bias=False, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = _lrelu(self.conv1(x))
    h = _lrelu(self.conv2(blur_downsample(h)))
    # 1/sqrt(2) keeps the variance of the sum equal to that of each branch.
    return (h + self.skip(blur_downsample(x))) * (1.0 / np.sqrt(2.0))


class StyleGANDiscriminator(nnx.Module):
  """Residual StyleGAN2-style discriminator (see module docstring).

  Args:
    image_size: square input size; must be divisible by ``2 ** num_layers``.
    channels: base width.
    num_layers: number of residual downsampling blocks.
    channel_mult: width multiplier per block (default ``min(2 ** (i + 1), 8)``).
    in_channels: image channels.
    rngs: parameter initialisation.
  """

  def __init__(
    self,
    *,
    image_size: int,
    channels: int = 64,
    num_layers: int = 4,
    channel_mult: Sequence[int] | None = None,
    in_channels: int = 3,
    rngs: nnx.Rngs,
  ):
    if num_layers < 1 or channels < 1:
      raise ValueError(f"StyleGAN discriminator needs channels, num_layers >= 1; got {channels}, {num_layers}")
    if image_size % (2**num_layers):
      raise ValueError(
        f"StyleGAN discriminator with {num_layers} blocks needs image_size divisible by"
        f" {2**num_layers}; got {image_size}"
      )
    if channel_mult is None:
      channel_mult = [min(2 ** (i + 1), 8) for i in range(num_layers)]
    mult = tuple(int(m) for m in channel_mult)
    if len(mult) != num_layers:
      raise ValueError(f"channel_mult {mult} must have num_layers={num_layers} entries")
    self.image_size = image_size
    self.conv_in = nnx.Conv(in_channels, channels, (3, 3), rngs=rngs)
    blocks, ch = [], channels
    for m in mult:
      blocks.append(_DownBlock(ch, channels * m, rngs=rngs))
      ch = channels * m
    self.blocks = nnx.List(blocks)
    self.conv_out = nnx.Conv(ch, ch, (3, 3), rngs=rngs)
    final = image_size // 2**num_layers
    self.dense = nnx.Linear(ch * final * final, ch, rngs=rngs)
    self.logit = nnx.Linear(ch, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"StyleGAN discriminator expects (B, {self.image_size}, {self.image_size}, C); got {x.shape}")
    h = _lrelu(self.conv_in(x))
    for block in self.blocks:
      h = block(h)
    h = _lrelu(self.conv_out(h))
    h = _lrelu(self.dense(h.reshape(h.shape[0], -1)))
    return self.logit(h)


#: The discriminator kinds ``config.discriminator.type`` may name.
DISCRIMINATORS = ("patchgan", "stylegan")
#: The published recipes' discriminators (``config.discriminator``): taming-transformers' PatchGAN
#: (taming, LlamaGen, IBQ), and MAGVIT's StyleGAN one at 256 px (6 blocks: 256 -> 4x4 before the
#: dense head; one fewer per halving of the image).
TAMING_PATCHGAN = {"type": "patchgan", "channels": 64, "num_layers": 3}
MAGVIT_STYLEGAN = {"type": "stylegan", "channels": 64, "num_layers": 6}
#: ``config.discriminator``: the keyword arguments of ``build_discriminator``.
CONFIG = ConfigFields(
  "discriminator",
  {
    "type": "patchgan",  # patchgan | stylegan
    "channels": 16,
    "num_layers": 2,
    "norm": "group",  # patchgan: group (stateless) | batch (batch statistics, as LlamaGen trains it)
  },
  choices={"type": DISCRIMINATORS, "norm": tuple(PATCHGAN_NORMS)},
  open=True,
)


def build_discriminator(spec: Mapping[str, Any], *, image_size: int, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the discriminator named by ``spec.type`` (``config.discriminator``).

  Args:
    spec: mapping with ``type`` in {patchgan, stylegan}, ``channels``,
      ``num_layers``, for patchgan optional ``norm`` (group | batch) and, for
      stylegan, optional ``channel_mult``.
    image_size: training image size (the StyleGAN head depends on it).
    rngs: parameter initialisation.

  Returns:
    The discriminator module; call it on (B, H, W, 3) images for logits.
  """
  kind = spec.get("type", "patchgan")
  if kind not in DISCRIMINATORS:
    raise ValueError(f"unknown discriminator type {kind!r}; expected one of {DISCRIMINATORS}")
  channels, num_layers = int(spec.get("channels", 64)), int(spec.get("num_layers", 3))
  if kind == "patchgan":
    return PatchGAN(channels=channels, num_layers=num_layers, norm=spec.get("norm", "group"), rngs=rngs)
  mult = spec.get("channel_mult", None)
  return StyleGANDiscriminator(
    image_size=image_size,
    channels=channels,
    num_layers=num_layers,
    channel_mult=None if mult is None else tuple(mult),
    rngs=rngs,
  )
