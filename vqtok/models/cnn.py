"""Convolutional encoder and decoder of the VQGAN family (NHWC).

The architecture of Esser et al., "Taming Transformers for High-Resolution Image
Synthesis", CVPR 2021 (arXiv:2012.09841), also used by MaskGIT (Chang et al.,
2022), LlamaGen (Sun et al., 2024, arXiv:2406.06525) and MAGVIT-v2 / Open-MAGVIT2
(Yu et al., 2023, arXiv:2310.05737; Luo et al., 2024, arXiv:2409.04410):

  encoder: conv_in -> per level [num_res_blocks x ResBlock (+ attention at the
    lowest level), stride-2 conv except at the last level] -> mid (ResBlock,
    attention, ResBlock) -> GroupNorm, swish, conv_out to ``z_channels``.
  decoder: the mirror image, with ``num_res_blocks + 1`` blocks per level and
    nearest-neighbour upsampling followed by a 3x3 conv.

``len(channel_mult) - 1`` levels downsample, so ``channel_mult=(1, 1, 2, 2, 4)``
gives a factor of 16. ``attention=False`` drops every attention block (MaskGIT,
MAGVIT-v2); ``attention=True`` is the taming / LlamaGen layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Dtype = Any


def _num_groups(channels: int, groups: int = 32) -> int:
  # GroupNorm needs groups | channels; tiny test models have < 32 channels.
  g = min(groups, channels)
  while channels % g:
    g -= 1
  return g


def check_channel_mult(channel_mult: Sequence[int]) -> tuple[int, ...]:
  """Validates ``channel_mult`` and returns it as a tuple of ints."""
  mult = tuple(int(m) for m in channel_mult)
  if not mult or min(mult) < 1:
    raise ValueError(f"channel_mult must be a non-empty sequence of positive ints; got {channel_mult}")
  return mult


def _check_sizes(channels: int, num_res_blocks: int, z_channels: int) -> None:
  if num_res_blocks < 1 or channels < 1 or z_channels < 1:
    raise ValueError(
      f"channels={channels}, num_res_blocks={num_res_blocks} and z_channels={z_channels} must all be >= 1"
    )


class ResBlock(nnx.Module):
  """Pre-activation residual block: (GroupNorm, swish, 3x3 conv) x 2 + skip."""

  def __init__(
    self, in_ch: int, out_ch: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = nnx.GroupNorm(in_ch, num_groups=_num_groups(in_ch), **kw)
    self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), **kw)
    self.norm2 = nnx.GroupNorm(out_ch, num_groups=_num_groups(out_ch), **kw)
    self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), **kw)
    # 1x1 projection on the skip path only when the width changes (taming's nin_shortcut).
    self.skip = nnx.Conv(in_ch, out_ch, (1, 1), **kw) if in_ch != out_ch else None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(nnx.swish(self.norm1(x)))
    h = self.conv2(nnx.swish(self.norm2(h)))
    return h + (x if self.skip is None else self.skip(x))


class AttnBlock(nnx.Module):
  """Single-head spatial self-attention with a residual, as in taming's AttnBlock."""

  def __init__(self, ch: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.norm = nnx.GroupNorm(ch, num_groups=_num_groups(ch), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
      num_heads=1, in_features=ch, dtype=dtype, param_dtype=param_dtype, decode=False, rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    t = self.norm(x).reshape(b, h * w, c)
    return x + self.attn(t).reshape(b, h, w, c)


class Downsample(nnx.Module):
  """Stride-2 3x3 conv; pads (0, 1) like taming so odd kernels stay aligned."""

  def __init__(self, ch: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.conv = nnx.Conv(
      ch, ch, (3, 3), strides=2, padding=((0, 1), (0, 1)), dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(x)


class Upsample(nnx.Module):
  """Nearest-neighbour 2x upsampling then a 3x3 conv (no checkerboard artefacts)."""

  def __init__(self, ch: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.conv = nnx.Conv(ch, ch, (3, 3), dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return self.conv(x)


def _level_blocks(in_ch: int, out_ch: int, n: int, attention: bool, kw: dict) -> tuple[nnx.List, nnx.List]:
  res, attn = [], []
  for j in range(n):
    res.append(ResBlock(in_ch if j == 0 else out_ch, out_ch, **kw))
    if attention:
      attn.append(AttnBlock(out_ch, **kw))
  return nnx.List(res), nnx.List(attn)


class Encoder(nnx.Module):
  """VQGAN convolutional encoder: (B, H, W, C) -> (B, H/f, W/f, z_channels).

  Args:
    z_channels: output channels (the latent width; the tokenizer projects it to the
      quantizer's ``code_dim`` when they differ).
    channels: base width; level i has ``channels * channel_mult[i]`` channels.
    channel_mult: width multiplier per level; ``len - 1`` stride-2 levels.
    num_res_blocks: residual blocks per level.
    attention: self-attention at the lowest resolution (blocks and mid).
    in_channels: image channels.
    dtype: compute dtype (e.g. ``jnp.bfloat16``).
    param_dtype: parameter dtype (keep float32).
    rngs: parameter initialisation.
  """

  def __init__(
    self,
    z_channels: int,
    *,
    channels: int = 128,
    channel_mult: Sequence[int] = (1, 1, 2, 2, 4),
    num_res_blocks: int = 2,
    attention: bool = False,
    in_channels: int = 3,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    mult = check_channel_mult(channel_mult)
    _check_sizes(channels, num_res_blocks, z_channels)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.downsample_factor = 2 ** (len(mult) - 1)
    self.in_channels = in_channels
    self.conv_in = nnx.Conv(in_channels, channels, (3, 3), **kw)
    res, attn, down = [], [], []
    ch = channels
    for i, m in enumerate(mult):
      last = i == len(mult) - 1
      r, a = _level_blocks(ch, channels * m, num_res_blocks, attention and last, kw)
      ch = channels * m
      res.append(r)
      attn.append(a)
      down.append(None if last else Downsample(ch, **kw))
    self.res, self.attn, self.down = nnx.List(res), nnx.List(attn), nnx.List(down)
    self.mid1 = ResBlock(ch, ch, **kw)
    self.mid_attn = AttnBlock(ch, **kw) if attention else None
    self.mid2 = ResBlock(ch, ch, **kw)
    self.norm_out = nnx.GroupNorm(ch, num_groups=_num_groups(ch), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv_out = nnx.Conv(ch, z_channels, (3, 3), **kw)

  def latent_shape(self, height: int, width: int) -> tuple[int, int]:
    """Latent grid for an image of ``height x width``; ValueError if not divisible."""
    f = self.downsample_factor
    if height % f or width % f or height < f or width < f:
      raise ValueError(
        f"CNN encoder downsamples by {f}: image height and width must be positive"
        f" multiples of {f}; got {height}x{width}"
      )
    return height // f, width // f

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv_in(x)
    for res, attn, down in zip(self.res, self.attn, self.down):
      for j, block in enumerate(res):
        h = block(h)
        if len(attn):
          h = attn[j](h)
      if down is not None:
        h = down(h)
    h = self.mid1(h)
    if self.mid_attn is not None:
      h = self.mid_attn(h)
    h = self.mid2(h)
    return self.conv_out(nnx.swish(self.norm_out(h)))


class Decoder(nnx.Module):
  """VQGAN convolutional decoder: (B, h, w, z_channels) -> (B, h*f, w*f, C).

  Args: as ``Encoder``; ``out_channels`` is the image channel count.
  """

  def __init__(
    self,
    z_channels: int,
    *,
    channels: int = 128,
    channel_mult: Sequence[int] = (1, 1, 2, 2, 4),
    num_res_blocks: int = 2,
    attention: bool = False,
    out_channels: int = 3,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    mult = check_channel_mult(channel_mult)
    _check_sizes(channels, num_res_blocks, z_channels)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.z_channels = z_channels
    self.upsample_factor = 2 ** (len(mult) - 1)
    ch = channels * mult[-1]
    self.conv_in = nnx.Conv(z_channels, ch, (3, 3), **kw)
    self.mid1 = ResBlock(ch, ch, **kw)
    self.mid_attn = AttnBlock(ch, **kw) if attention else None
    self.mid2 = ResBlock(ch, ch, **kw)
    res, attn, up = [], [], []
    # Levels run from the lowest resolution up; the first one keeps attention.
    for k, m in enumerate(reversed(mult)):
      r, a = _level_blocks(ch, channels * m, num_res_blocks + 1, attention and k == 0, kw)
      ch = channels * m
      res.append(r)
      attn.append(a)
      up.append(Upsample(ch, **kw) if k < len(mult) - 1 else None)
    self.res, self.attn, self.up = nnx.List(res), nnx.List(attn), nnx.List(up)
    self.norm_out = nnx.GroupNorm(ch, num_groups=_num_groups(ch), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv_out = nnx.Conv(ch, out_channels, (3, 3), **kw)

  #: attribute path of the last layer's kernel (adaptive GAN weight).
  last_layer_path = ("conv_out", "kernel")

  def __call__(self, z: jax.Array) -> jax.Array:
    h = self.conv_in(z)
    h = self.mid1(h)
    if self.mid_attn is not None:
      h = self.mid_attn(h)
    h = self.mid2(h)
    for res, attn, up in zip(self.res, self.attn, self.up):
      for j, block in enumerate(res):
        h = block(h)
        if len(attn):
          h = attn[j](h)
      if up is not None:
        h = up(h)
    return self.conv_out(nnx.swish(self.norm_out(h)))
