"""MBConv stages: the conv stem of a hybrid ViT encoder and the conv upsampler of its decoder.

ViTamin (Chen et al., 2024, arXiv:2404.02132) puts two stages of MBConv blocks
(inverted bottlenecks: a 1x1 expansion to 4x the output width, a 3x3 depthwise
conv, a 1x1 projection; one LayerNorm before them, GELU after the first two)
under a ViT, down to 1/16 of the image. UniTok (Ma et al., 2025,
arXiv:2502.20321) mirrors it in its decoder with blocks that upsample instead.
Both are one block here, ``MBConv``, with ``resample`` "down", "up" or "".
Names and order follow FoundationVision/UniTok ``models/vitamin.py``
(``Stem``, ``MbConvLNBlock``, ``Downsample2d``, ``StridedConv``,
``InvMbConvLNBlock``, ``Upsample2d``, ``InvStem``); every LayerNorm there is
timm's ``layernorm2d`` with eps 1e-6 (over channels), every GELU the exact one.
Channels last: (B, H, W, C).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Dtype = Any
RESAMPLES = ("", "down", "up")
_EPS = 1e-6
_PAD1 = ((1, 1), (1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
  """timm's ``make_divisible``: the expanded width, a multiple of 8 not under 90% of ``v``."""
  out = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return out + divisor if out < 0.9 * v else out


def avg_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """``nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)`` on (B, H, W, C)."""
  window, strides, pad = (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
  ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pad)
  return total / count


def upsample_nearest(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 (``F.interpolate(scale_factor=2, mode='nearest')``)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Resample(nnx.Module):
  """``Downsample2d`` (3x3 average pool, stride 2, then a 1x1 conv where the width changes) or
  ``Upsample2d`` (nearest x2, then a 3x3 conv)."""

  def __init__(self, in_ch: int, out_ch: int, kind: str, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.kind = kind
    if kind == "down":
      self.conv = nnx.Conv(in_ch, out_ch, (1, 1), **kw) if in_ch != out_ch else None
    elif kind == "up":
      self.conv = nnx.Conv(in_ch, out_ch, (3, 3), padding=_PAD1, **kw)
    else:
      raise ValueError(f"Resample kind must be 'down' or 'up'; got {kind!r}")

  def __call__(self, x: jax.Array) -> jax.Array:
    x = avg_pool_3x3_s2(x) if self.kind == "down" else upsample_nearest(x)
    return x if self.conv is None else self.conv(x)


class MBConv(nnx.Module):
  """Pre-norm inverted bottleneck: LayerNorm, 1x1 conv, GELU, [x2 up: nearest + 3x3 conv], 3x3 depthwise
  (stride 2 for "down"), GELU, 1x1 conv; plus the shortcut (``Resample``, a 1x1 conv, or the input)."""

  def __init__(
    self,
    in_ch: int,
    out_ch: int,
    resample: str = "",
    *,
    expand_ratio: float = 4.0,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    if resample not in RESAMPLES:
      raise ValueError(f"MBConv resample must be one of {RESAMPLES}; got {resample!r}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    mid = make_divisible(out_ch * expand_ratio)  # from the output width (vitamin.py)
    if resample:
      self.shortcut = Resample(in_ch, out_ch, resample, **kw)
    elif in_ch != out_ch:
      self.shortcut = nnx.Conv(in_ch, out_ch, (1, 1), **kw)
    else:
      self.shortcut = None
    self.norm = nnx.LayerNorm(in_ch, epsilon=_EPS, **kw)
    self.conv1 = nnx.Conv(in_ch, mid, (1, 1), **kw)
    self.up = Resample(mid, mid, "up", **kw) if resample == "up" else None
    stride = 2 if resample == "down" else 1
    self.conv_dw = nnx.Conv(mid, mid, (3, 3), strides=stride, padding=_PAD1, feature_group_count=mid, **kw)
    self.conv2 = nnx.Conv(mid, out_ch, (1, 1), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    skip = x if self.shortcut is None else self.shortcut(x)
    h = nnx.gelu(self.conv1(self.norm(x)), approximate=False)
    if self.up is not None:
      h = self.up(h)
    h = nnx.gelu(self.conv_dw(h), approximate=False)
    return self.conv2(h) + skip


class Stem(nnx.Module):
  """ViTamin's ``Stem`` (3x3 conv stride 2) or UniTok's ``InvStem`` (x2 ``Resample`` up), then
  LayerNorm + GELU and a 3x3 conv: in_ch -> mid_ch -> out_ch."""

  def __init__(
    self, in_ch: int, mid_ch: int, out_ch: int, resample: str, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if resample == "down":
      self.conv1 = nnx.Conv(in_ch, mid_ch, (3, 3), strides=2, padding=_PAD1, **kw)
    else:
      self.conv1 = Resample(in_ch, mid_ch, "up", **kw)
    self.norm = nnx.LayerNorm(mid_ch, epsilon=_EPS, **kw)
    self.conv2 = nnx.Conv(mid_ch, out_ch, (3, 3), padding=_PAD1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv2(nnx.gelu(self.norm(self.conv1(x)), approximate=False))


def check_stages(widths: Sequence[int], depths: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """``(widths, depths)`` as ints; ValueError unless there is one depth >= 1 per width, and at least one."""
  widths, depths = tuple(int(w) for w in widths), tuple(int(d) for d in depths)
  if len(widths) != len(depths) or not widths or min(depths) < 1 or min(widths) < 1:
    raise ValueError(f"MBConv stages need one depth >= 1 per width; got widths {widths}, depths {depths}")
  return widths, depths


def _stages(widths: Sequence[int], depths: Sequence[int], first: int, resample: str, kw: dict[str, Any]) -> nnx.List:
  """One list of ``MBConv`` blocks per stage, each stage's first block resampling."""
  stages, c = [], first
  for w, d in zip(widths, depths):
    stages.append(nnx.List([MBConv(c if i == 0 else w, w, resample if i == 0 else "", **kw) for i in range(d)]))
    c = w
  return nnx.List(stages)


class ConvStem(nnx.Module):
  """ViTamin's ``MbConvStages``: stem (/2), MBConv stages (/2 each), LayerNorm + 3x3 conv stride 2 to ``width``.

  (B, H, W, in_ch) -> (B, H / 2**(len(widths) + 2), ..., width); the stem is ``widths[0]`` wide.
  """

  def __init__(
    self,
    width: int,
    widths: Sequence[int],
    depths: Sequence[int],
    *,
    in_ch: int = 3,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    widths, depths = check_stages(widths, depths)
    self.stem = Stem(in_ch, widths[0], widths[0], "down", **kw)
    self.stages = _stages(widths, depths, widths[0], "down", kw)
    self.norm = nnx.LayerNorm(widths[-1], epsilon=_EPS, **kw)  # StridedConv: the norm comes first
    self.proj = nnx.Conv(widths[-1], width, (3, 3), strides=2, padding=_PAD1, **kw)
    self.factor = 2 ** (len(widths) + 2)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.stem(x)
    for stage in self.stages:
      for block in stage:
        x = block(x)
    return self.proj(self.norm(x))


class ConvHead(nnx.Module):
  """UniTok's ``ViTaminDecoder`` upsampler: x2 ``Resample`` up to ``widths[0]``, MBConv stages (x2 each),
  ``InvStem`` (x2) to ``out_ch``: (B, h, w, width) -> (B, h * 2**(len(widths) + 2), ..., out_ch)."""

  def __init__(
    self,
    width: int,
    widths: Sequence[int],
    depths: Sequence[int],
    *,
    out_ch: int = 3,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    widths, depths = check_stages(widths, depths)
    self.up = Resample(width, widths[0], "up", **kw)
    self.stages = _stages(widths, depths, widths[0], "up", kw)
    self.stem = Stem(widths[-1], widths[-1], out_ch, "up", **kw)
    self.factor = 2 ** (len(widths) + 2)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.up(x)
    for stage in self.stages:
      for block in stage:
        x = block(x)
    return self.stem(x)
