"""Convolutional encoder and decoder of the VQGAN family (NHWC).

The architecture of Esser et al., "Taming Transformers for High-Resolution Image
Synthesis", CVPR 2021 (arXiv:2012.09841), also used by MaskGIT (Chang et al.,
2022), LlamaGen (Sun et al., 2024, arXiv:2406.06525) and MAGVIT-v2 / Open-MAGVIT2
(Yu et al., 2023, arXiv:2310.05737; Luo et al., 2024, arXiv:2409.04410):

  encoder: conv_in -> per level [num_res_blocks x ResBlock (+ attention at the
    lowest level), downsampling except at the last level] -> mid blocks ->
    GroupNorm, swish, conv_out to ``z_channels``.
  decoder: conv_in -> mid blocks -> the levels mirrored, with nearest-neighbour
    upsampling followed by a 3x3 conv -> GroupNorm, swish, conv_out.

``len(channel_mult) - 1`` levels downsample, so ``channel_mult=(1, 1, 2, 2, 4)``
gives a factor of 16. ``attention=True`` adds single-head self-attention at
the lowest resolution (taming, LlamaGen).

Families differ in kind, not only in size; each is a row of ``FAMILIES`` naming
its parts (``model.cnn_family`` in the config):

  taming   taming-transformers and LlamaGen: biased convs, stride-2 conv
           downsampling padded (0, 1), mid = ResBlock, [attention], ResBlock,
           ``num_res_blocks + 1`` decoder blocks per level, 3x3 conv_out.
  maskgit  MaskGIT's VQGAN (google-research/maskgit, vqgan_tokenizer.py):
           bias-free res blocks whose width-changing shortcut is a 1x1 conv of
           the branch output, 2x2 average-pool downsampling, ``num_res_blocks``
           mid blocks, ``num_res_blocks`` decoder blocks per level, bias-free
           encoder conv_in and a 1x1 encoder conv_out.
  magvit2  Open-MAGVIT2 (TencentARC/SEED-Voken, improved_model.py): bias-free
           res blocks with taming's wiring, stride-2 conv downsampling padded
           1, ``num_res_blocks`` mid and decoder blocks per level, bias-free
           encoder conv_in, 1x1 encoder conv_out; each decoder level starts
           with an adaptive GroupNorm conditioned on the decoder's input (the
           quantized latent) and upsamples by a conv and depth-to-space.
  magvit2_plain  an earlier Open-MAGVIT2, as SimVQ publishes it (youngsheen/SimVQ,
           taming/modules/diffusionmodules/improved_model.py): ``magvit2``
           without the decoder's adaptive GroupNorm.
  movq     MoVQ (Zheng et al., 2022, arXiv:2209.09002), as diffusers' ``VQModel``
           with ``norm_type="spatial"`` builds it (Kandinsky 2.x's and 3's
           ``movq``): ``taming`` with every GroupNorm of the decoder (res blocks,
           attention, norm_out) a ``SpatialNorm`` conditioned on the quantized
           latent before ``post_quant_conv`` (the decoder's ``codes``).
  flex     GSQ's flexTokenizer (Wang et al., 2024, arXiv:2412.02632;
           HelmholtzAI-FZJ/flex_gen, autoencoders/flexTokenizer/ with
           ``use_adaptive_norm`` and ``use_learnable_up_down_sample``, as its
           published checkpoints are): ``magvit2`` with biased convs (res
           blocks, encoder conv_in), GroupNorm eps 1e-5 (torch's default) in the
           blocks and before both conv_outs, and a level whose width changes
           starts with one more residual block that changes it, before the
           ``num_res_blocks`` blocks at the new width.
  cosmos   NVIDIA Cosmos DV/CV (NVIDIA/Cosmos-Tokenizer, modules/layers3d.py
           EncoderFactorized / DecoderFactorized), causal video only: taming's
           wiring with every conv (2+1)-D (``FactorizedConv``: 1 x k x k, then
           k x 1 x 1 padded with copies of the first frame), hybrid down- and
           upsampling (a strided conv plus pooling, per level in space, time,
           both or neither: ``spatial_downsample``; the decoder's by Cosmos's
           rule, ``cosmos_up_schedule``), attention within frames then causally
           along time in the middle only, and 3-D Haar wavelet patching before
           and after (``wavelet_patch``; ``haar_patch``).
  cosmos1  Cosmos 1.0's (NVIDIA/Cosmos, cosmos1/models/tokenizer/modules/
           layers3d.py): ``cosmos`` with only the resampling convs a level's
           strides use (0.1 keeps all three at every level).

Causal video (``temporal_downsample``, one time stride per downsampling level;
empty: the image CNN above, unchanged). The same parts on (B, T, H, W, C): each
k x k conv becomes a k x k x k ``CausalConv`` (time padded on the left only,
with zeros or copies of the first frame), each norm and attention acts on one
frame at a time, a level downsamples time by its stride within its strided conv
and the decoder's mirrored level upsamples it (depth-to-space in time, or
nearest repetition, keeping one frame of the first group). So 1 + k*s_T frames
make 1 + k latent frames (s_T: the product of the strides), frame 0 alone makes
latent frame 0 (an image is a one-frame video) and latent frame j sees only
frames <= j*s_T. This is Open-MAGVIT2's video tokenizer (TencentARC/SEED-Voken,
src/Open_MAGVIT2/modules/diffusionmodules/improved_video_model.py: ConvBlock3D,
stride (2, 2, 2) at the levels whose ch_mult is not 1, Upsampler with
depth_to_space3d dropping frame 1) with its clip-wide GroupNorms made per frame,
so that it is causal. Long videos run in chunks with ``stream``: each causal
conv keeps the input frames the next chunk's first outputs need.

Non-causal video (``causal=False``, the ``vidtok`` family: VidTok's
model_3dnoncausal.py): every time conv is padded on both sides, k*s_T frames
make k latent frames, and clips are encoded and decoded whole (no streaming).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen
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


def group_norm(
  ch: int,
  *,
  groups: int = 32,
  eps: float = 1e-6,
  dtype: Dtype = jnp.float32,
  param_dtype: Dtype = jnp.float32,
  rngs: nnx.Rngs,
) -> nnx.GroupNorm:
  """The blocks' default norm: GroupNorm over ``ch`` channels, eps 1e-6 unless told, with scale and bias."""
  return nnx.GroupNorm(
    ch, num_groups=_num_groups(ch, groups), epsilon=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
  )


class SpatialNorm(nnx.Module):
  """GroupNorm, then a scale and shift per position from the quantized latent (MoVQ's spatial normalisation).

  diffusers' ``SpatialNorm`` (models/attention_processor.py): the latent ``codes``
  is resized to the feature's grid by nearest neighbour (``F.interpolate``,
  source index ``floor(i * in / out)``), and ``GroupNorm(x) * conv_y(codes) +
  conv_b(codes)``, both 1x1 convolutions (Linear maps here, ``gamma``/``beta``).
  """

  def __init__(
    self,
    ch: int,
    *,
    code_channels: int,
    groups: int = 32,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = group_norm(ch, groups=groups, **kw)
    self.gamma = nnx.Linear(code_channels, ch, **kw)
    self.beta = nnx.Linear(code_channels, ch, **kw)

  def __call__(self, x: jax.Array, codes: jax.Array) -> jax.Array:
    (h, w), (zh, zw) = x.shape[1:3], codes.shape[1:3]
    rows, cols = (jnp.arange(h) * zh) // h, (jnp.arange(w) * zw) // w
    c = codes[:, rows][:, :, cols].astype(x.dtype)
    return self.norm(x) * self.gamma(c) + self.beta(c)


def _norm(norm: nnx.Module, x: jax.Array, codes: jax.Array | None) -> jax.Array:
  # Only a SpatialNorm reads the quantized latent.
  return norm(x, codes) if isinstance(norm, SpatialNorm) else norm(x)


class FrameGroupNorm(nnx.GroupNorm):
  """GroupNorm of each frame on its own: (B, T, H, W, C) is normalised as B*T images (causal in time)."""

  def __call__(self, x: jax.Array, *args, **kwargs) -> jax.Array:
    if x.ndim <= 4:
      return super().__call__(x, *args, **kwargs)
    return super().__call__(x.reshape((-1,) + x.shape[-3:]), *args, **kwargs).reshape(x.shape)


def frame_group_norm(
  ch: int, *, groups: int = 32, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs
) -> FrameGroupNorm:
  """``group_norm`` for video: the same parameters, statistics per frame."""
  return FrameGroupNorm(ch, num_groups=_num_groups(ch, groups), dtype=dtype, param_dtype=param_dtype, rngs=rngs)


#: What a video CNN's GroupNorms normalise over: each frame (causal; chunks carry over) or the whole
#: clip (Open-MAGVIT2's video tokenizer, whose torch GroupNorms on (B, C, T, H, W) span time: not causal).
VIDEO_NORMS = ("frame", "clip")

#: How a causal conv fills the frames before the first: zeros (Open-MAGVIT2's ConvBlock3D, VidTok's
#: CausalConv3d) or copies of the first frame (Cosmos's CausalConv3d, VidTok's input padding).
TIME_PADDINGS = ("zeros", "replicate")
#: How a VidTok decoder doubles time: every frame repeated (v1.0, v1.1's "nearest") or linearly interpolated
#: (v1.1's "trilinear", torch's half-pixel rule, edge frames clamped; the first latent frame's frames apart).
TIME_UPSAMPLES = ("repeat", "linear")


class TimeCarry(nnx.Variable):
  """The input frames a streaming ``CausalConv`` keeps for the next chunk (state, never a parameter)."""


def pad_time(x: jax.Array, before: int, after: int, time_padding: str) -> jax.Array:
  """(B, T, ...) with ``before`` frames put before the first and ``after`` after the last: zeros, or
  copies of the edge frames ("replicate")."""
  if not (before or after):
    return x
  if time_padding == "replicate":
    return jnp.concatenate([jnp.repeat(x[:, :1], before, axis=1), x, jnp.repeat(x[:, -1:], after, axis=1)], axis=1)
  return jnp.pad(x, ((0, 0), (before, after)) + ((0, 0),) * (x.ndim - 2))


class CausalConv(nnx.Conv):
  """A k x k conv made a k x k x k conv on (B, T, H, W, C), causal in time.

  Built from a 2-D conv's arguments (the kernel's time size is its first
  spatial size, so 1x1 stays 1x1x1, unless ``time_kernel`` is given: a
  factorised CNN's (1, k, k) and (k, 1, 1) convs). Time is padded on the left only, by
  ``k - 1`` frames (``time_padding``: zeros or the first frame); with time
  stride ``s`` output frame j sees input frames ``s*j - k + 1 .. s*j``.

  ``causal=False`` (a non-causal video CNN, ``model.causal``): time is padded
  as space is, ``(k - 1) // 2`` frames on each side (zeros or copies of the
  edge frames), torch's ``Conv3d(padding=k // 2)``; it does not stream.

  Streaming (``streaming = True``, see ``stream``): after each call the conv
  keeps the padded input's frames from ``s * (outputs)`` on (``k - s`` frames
  when chunks hold a multiple of ``s`` frames) in a ``TimeCarry`` and puts
  them, instead of the padding, before the next chunk; so the chunks' outputs
  are those of one call on the whole video.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: Sequence[int],
    strides: int | Sequence[int] = 1,
    *,
    padding: Any = "SAME",
    time_stride: int = 1,
    time_padding: str = "zeros",
    time_kernel: int | None = None,
    causal: bool = True,
    **kwargs,
  ):
    k = tuple(int(v) for v in kernel_size)
    s = (strides,) * len(k) if isinstance(strides, int) else tuple(strides)
    if time_padding not in TIME_PADDINGS:
      raise ValueError(f"time_padding={time_padding!r} is not one of {TIME_PADDINGS}")
    if padding == "SAME":
      if set(s) != {1}:
        raise ValueError(f"CausalConv: 'SAME' padding needs stride 1; got strides {s}")
      padding = tuple((v // 2, v // 2) for v in k)
    kt = k[0] if time_kernel is None else int(time_kernel)
    super().__init__(
      in_features, out_features, (kt,) + k, (int(time_stride),) + s, padding=((0, 0),) + tuple(padding), **kwargs
    )
    self.time_kernel, self.time_stride, self.time_padding = kt, int(time_stride), time_padding
    self.causal = bool(causal)
    self.streaming = False

  def __call__(self, x: jax.Array) -> jax.Array:
    k, s = self.time_kernel, self.time_stride
    if self.streaming and not self.causal:
      raise ValueError("a non-causal conv sees the frames after each one: it cannot run in chunks")
    if hasattr(self, "carry"):
      x = jnp.concatenate([self.carry[...].astype(x.dtype), x], axis=1)
    elif k > 1:
      before = k - 1 if self.causal else (k - 1) // 2
      x = pad_time(x, before, k - 1 - before, self.time_padding)
    if x.shape[1] < k:
      raise ValueError(f"CausalConv: {x.shape[1]} frames with padding; the time kernel needs {k}")
    if self.streaming:
      rest = x[:, s * ((x.shape[1] - k) // s + 1) :]
      if hasattr(self, "carry"):
        self.carry[...] = rest
      else:
        self.carry = TimeCarry(rest)
    return super().__call__(x)


def stream(module: nnx.Module, on: bool = True) -> nnx.Module:
  """Sets every ``CausalConv`` (and Cosmos's ``TimeAttnBlock``) of ``module`` streaming (``on``) or not; off
  drops the carried frames.

  Use on a copy (``nnx.merge(*nnx.split(m))``): chunk after chunk, the module's
  causal convs then carry their state, and its outputs are those of the whole
  video. The first chunk holds 1 + k*s_T frames, later ones multiples of s_T.
  """
  for _, node in nnx.iter_graph(module):
    if isinstance(node, (CausalConv, TimeAttnBlock)):
      node.streaming = on
      if not on and hasattr(node, "carry"):
        del node.carry
  return module


def _first_chunk(conv: nnx.Module) -> bool:
  """Whether the causal ``conv`` (a CausalConv or FactorizedConv) has seen no frames yet (no carried state)."""
  return not hasattr(conv.time if isinstance(conv, FactorizedConv) else conv, "carry")


def _stretch_time(x: jax.Array, factor: int, first: bool) -> jax.Array:
  """Each frame repeated ``factor`` times; a first chunk keeps one copy of its first frame (1 + k -> 1 + k*f)."""
  if factor == 1:
    return x
  x = jnp.repeat(x, factor, axis=1)
  return x[:, factor - 1 :] if first else x


def causal_frames(num_frames: int, factor: int) -> int:
  """Latent frames of ``num_frames = 1 + k * factor`` frames (1 + k); ValueError naming the nearest valid counts."""
  t = int(num_frames)
  if t >= 1 and (t - 1) % factor == 0:
    return 1 + (t - 1) // factor
  lo = 1 + max(t - 1, 0) // factor * factor
  near = "the nearest valid count is 1" if t < 1 else f"the nearest valid counts are {lo} and {lo + factor}"
  raise ValueError(
    f"a causal video tokenizer with temporal downsampling {factor} takes 1 + k*{factor} frames"
    f" (1, {1 + factor}, {1 + 2 * factor}, ...); got {t} frames: {near}"
  )


def noncausal_frames(num_frames: int, factor: int) -> int:
  """Latent frames of ``num_frames = k * factor`` frames (k >= 1), a non-causal video tokenizer's rule; ValueError
  naming the nearest valid counts."""
  t = int(num_frames)
  if t >= factor and t % factor == 0:
    return t // factor
  lo = t // factor * factor
  near = (
    f"the nearest valid count is {factor}" if lo < factor else f"the nearest valid counts are {lo} and {lo + factor}"
  )
  raise ValueError(
    f"a non-causal video tokenizer with temporal downsampling {factor} takes k*{factor} frames"
    f" ({factor}, {2 * factor}, {3 * factor}, ...); got {t} frames: {near}"
  )


def video_frames(num_frames: int, factor: int, causal: bool = True) -> int:
  """Latent frames of a video of ``num_frames`` by the causal rule (1 + k*s_T -> 1 + k) or the non-causal one
  (k*s_T -> k); ValueError naming the nearest valid counts."""
  return causal_frames(num_frames, factor) if causal else noncausal_frames(num_frames, factor)


def _check_sizes(channels: int, num_res_blocks: int, z_channels: int) -> None:
  if num_res_blocks < 1 or channels < 1 or z_channels < 1:
    raise ValueError(
      f"channels={channels}, num_res_blocks={num_res_blocks} and z_channels={z_channels} must all be >= 1"
    )


class ResBlock(nnx.Module):
  """Pre-activation residual block: (GroupNorm, swish, 3x3 conv) x 2 + skip.

  ``use_bias=False`` is Open-MAGVIT2's block (improved_model.py, ResBlock):
  the same wiring with bias-free convs and shortcut. ``norm`` makes the two
  norms (``group_norm``, or MoVQ's ``SpatialNorm``, which reads ``codes``);
  ``conv`` the convs (``nnx.Conv``, or a ``CausalConv`` for video).
  """

  def __init__(
    self,
    in_ch: int,
    out_ch: int,
    *,
    groups: int = 32,
    use_bias: bool = True,
    norm: Callable[..., nnx.Module] = group_norm,
    conv: Callable[..., nnx.Module] = nnx.Conv,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = norm(in_ch, groups=groups, **kw)
    self.conv1 = conv(in_ch, out_ch, (3, 3), use_bias=use_bias, **kw)
    self.norm2 = norm(out_ch, groups=groups, **kw)
    self.conv2 = conv(out_ch, out_ch, (3, 3), use_bias=use_bias, **kw)
    # 1x1 projection on the skip path only when the width changes (taming's nin_shortcut).
    self.skip = conv(in_ch, out_ch, (1, 1), use_bias=use_bias, **kw) if in_ch != out_ch else None

  def __call__(self, x: jax.Array, codes: jax.Array | None = None) -> jax.Array:
    h = self.conv1(nnx.swish(_norm(self.norm1, x, codes)))
    h = self.conv2(nnx.swish(_norm(self.norm2, h, codes)))
    return h + (x if self.skip is None else self.skip(x))


class AttnBlock(nnx.Module):
  """Single-head spatial self-attention with a residual, as in taming's AttnBlock (``norm``: as ``ResBlock``'s).

  On video (B, T, H, W, C) each frame attends within itself (causal in time).
  """

  def __init__(
    self,
    ch: int,
    *,
    groups: int = 32,
    norm: Callable[..., nnx.Module] = group_norm,
    conv: Callable[..., nnx.Module] | None = None,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    del conv  # q, k, v and the output are Linear maps, per position
    self.norm = norm(ch, groups=groups, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
      num_heads=1, in_features=ch, dtype=dtype, param_dtype=param_dtype, decode=False, rngs=rngs
    )

  def __call__(self, x: jax.Array, codes: jax.Array | None = None) -> jax.Array:
    h, w, c = x.shape[-3:]
    t = _norm(self.norm, x, codes).reshape(-1, h * w, c)
    return x + self.attn(t).reshape(x.shape)


def _time_kw(time_stride: int) -> dict[str, int]:
  # Only a CausalConv takes a time stride; image convs are built exactly as before.
  return {} if time_stride == 1 else {"time_stride": time_stride}


class Downsample(nnx.Module):
  """Stride-2 3x3 conv; pads (0, 1) like taming so odd kernels stay aligned (video: ``time_stride`` in time)."""

  PADDING = ((0, 1), (0, 1))

  def __init__(
    self,
    ch: int,
    *,
    conv: Callable[..., nnx.Module] = nnx.Conv,
    time_stride: int = 1,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.conv = conv(
      ch,
      ch,
      (3, 3),
      strides=2,
      padding=self.PADDING,
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
      **_time_kw(time_stride),
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(x)


class MaskGitResBlock(nnx.Module):
  """MaskGIT's residual block: bias-free (GroupNorm, swish, 3x3 conv) x 2.

  When the width changes, the reference adds a 1x1 conv *of the branch output*
  to the branch output and drops the input (maskgit/nets/vqgan_tokenizer.py,
  ResBlock, lines 51-59): ``h + conv1x1(h)``, not ``conv1x1(x) + h``.
  """

  def __init__(
    self,
    in_ch: int,
    out_ch: int,
    *,
    groups: int = 32,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = nnx.GroupNorm(in_ch, num_groups=_num_groups(in_ch, groups), **kw)
    self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), use_bias=False, **kw)
    self.norm2 = nnx.GroupNorm(out_ch, num_groups=_num_groups(out_ch, groups), **kw)
    self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), use_bias=False, **kw)
    self.skip = nnx.Conv(out_ch, out_ch, (1, 1), use_bias=False, **kw) if in_ch != out_ch else None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(nnx.swish(self.norm1(x)))
    h = self.conv2(nnx.swish(self.norm2(h)))
    return x + h if self.skip is None else h + self.skip(h)


class AvgPoolDownsample(nnx.Module):
  """2x2 stride-2 average pool, 'SAME' padding with the padded cells left out of the mean (MaskGIT)."""

  def __init__(self, ch: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    del ch, param_dtype, rngs  # no parameters
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    return flax.linen.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME", count_include_pad=False)


class Upsample(nnx.Module):
  """Nearest-neighbour 2x upsampling then a 3x3 conv (no checkerboard artefacts).

  Video: frames repeated ``time_stride`` times too, a first chunk keeping one
  copy of its first frame (1 + k frames -> 1 + k*s), before the causal conv.
  """

  def __init__(
    self,
    ch: int,
    *,
    conv: Callable[..., nnx.Module] = nnx.Conv,
    time_stride: int = 1,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.time_stride = time_stride
    self.conv = conv(ch, ch, (3, 3), dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, first: bool = True) -> jax.Array:
    if x.ndim == 5:
      x = _stretch_time(x, self.time_stride, first)
    x = jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2)
    return self.conv(x)


class PaddedDownsample(Downsample):
  """Stride-2 3x3 conv padded 1 on every side (Open-MAGVIT2's encoder downsampling; video: ``time_stride``)."""

  PADDING = ((1, 1), (1, 1))


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
  """(B, H, W, b*b*C) -> (B, H*b, W*b, C), channel ``(i*b + j)*C + c`` going to offset (i, j).

  The DCR order of Open-MAGVIT2's ``depth_to_space`` (improved_model.py): the
  channel axis splits as (row offset, column offset, channel).
  """
  b_, h, w, c = x.shape
  out = c // (block * block)
  x = x.reshape(b_, h, w, block, block, out)
  x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
  return x.reshape(b_, h * block, w * block, out)


def depth_to_space_3d(x: jax.Array, time_block: int, block: int = 2) -> jax.Array:
  """(B, T, H, W, t*b*b*C) -> (B, T*t, H*b, W*b, C), channel ``((i*b + j)*b + k)*C + c`` to offset (i, j, k).

  Open-MAGVIT2's ``depth_to_space3d`` (improved_video_model.py): the channel
  axis splits as (time offset, row offset, column offset, channel).
  """
  b_, t, h, w, c = x.shape
  out = c // (time_block * block * block)
  x = x.reshape(b_, t, h, w, time_block, block, block, out)
  x = jnp.transpose(x, (0, 1, 4, 2, 5, 3, 6, 7))
  return x.reshape(b_, t * time_block, h * block, w * block, out)


class DepthToSpaceUpsample(nnx.Module):
  """A 3x3 conv to 4x the channels, then depth-to-space: 2x upsampling (Open-MAGVIT2's Upsampler).

  Video: a causal 3x3x3 conv to ``4 * time_stride`` times the channels, then
  depth-to-space in time as well; of a first chunk's first group of frames only
  the first is kept, as the reference's Upsampler drops frame 1 (1 + k -> 1 + k*s).
  """

  def __init__(
    self,
    ch: int,
    *,
    conv: Callable[..., nnx.Module] = nnx.Conv,
    time_stride: int = 1,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.time_stride = time_stride
    self.conv = conv(ch, 4 * time_stride * ch, (3, 3), dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, first: bool = True) -> jax.Array:
    if x.ndim == 4:
      return depth_to_space(self.conv(x), 2)
    s = self.time_stride
    x = depth_to_space_3d(self.conv(x), s, 2)
    return jnp.concatenate([x[:, :1], x[:, s:]], axis=1) if first and s > 1 else x


class AdaptiveGroupNorm(nnx.Module):
  """GroupNorm without affine parameters, then a scale and bias predicted from the quantized latent.

  Open-MAGVIT2's decoder (improved_model.py, AdaptiveGroupNorm): per image and
  channel of the decoder input ``z``, scale = Linear(sqrt(var_hw(z) + eps)) and
  bias = Linear(mean_hw(z)). The variance is torch's default ``var``, the
  unbiased one (divides by h*w - 1), whatever the reference's comment says.
  Video: per frame, the style stretched to x's frames by the decoder (causal);
  ``clip=True``: over the whole clip, norm and style statistics alike
  (improved_video_model.py's AdaptiveGroupNorm: var and mean over (t h w)).
  """

  def __init__(
    self,
    z_channels: int,
    ch: int,
    *,
    groups: int = 32,
    clip: bool = False,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.eps, self.clip = 1e-6, clip
    self.norm = nnx.GroupNorm(
      ch, num_groups=_num_groups(ch, groups), use_scale=False, use_bias=False, epsilon=self.eps, **kw
    )
    self.gamma = nnx.Linear(z_channels, ch, **kw)
    self.beta = nnx.Linear(z_channels, ch, **kw)

  def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
    s = style.astype(jnp.float32)
    axes = tuple(range(1, s.ndim - 1)) if self.clip else (-3, -2)
    ddof = 1 if math.prod(s.shape[a] for a in axes) > 1 else 0  # torch gives NaN for one position; keep it finite
    scale = self.gamma(jnp.sqrt(jnp.var(s, axis=axes, ddof=ddof) + self.eps).astype(x.dtype))
    bias = self.beta(jnp.mean(s, axis=axes).astype(x.dtype))
    if self.clip:
      lead = (slice(None),) + (None,) * (x.ndim - 2)
      return self.norm(x) * scale[lead] + bias[lead]
    normed = self.norm(x.reshape((-1,) + x.shape[-3:])).reshape(x.shape)
    return normed * scale[..., None, None, :] + bias[..., None, None, :]


# ---- VidTok's factorised (2+1)-D parts (microsoft/VidTok, vidtok/modules/model_3dcausal.py) --------------
# The ``vidtok`` family: residual blocks are a 2-D block per frame followed by a 1-D causal block per pixel
# over time, norms are LayerNorms over the channels, time is downsampled and upsampled by modules of their
# own that mix an average (or a repetition) with a causal conv, and the video is padded in front by
# s_T - 1 copies of its first frame (the decoder drops its first s_T - 1 outputs).
# Non-causal (``causal=False``; model_3dnoncausal.py: Encoder3D, Decoder3D): the same parts with every time
# conv padded (k - 1) / 2 frames on each side (torch's padding=1), the time downsampling padded by one frame
# after the clip instead of before it, and no frames padded in front nor dropped: k*s_T frames -> k.


def layer_norm(
  ch: int,
  *,
  groups: int = 32,
  eps: float = 1e-6,
  dtype: Dtype = jnp.float32,
  param_dtype: Dtype = jnp.float32,
  rngs: nnx.Rngs,
) -> nnx.LayerNorm:
  """VidTok's norm (``norm_type: layernorm``): a LayerNorm over the channels of each position, eps 1e-6."""
  del groups  # the blocks pass it to any norm
  return nnx.LayerNorm(ch, epsilon=eps, use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class TimeConv(CausalConv):
  """A ``CausalConv`` with its own time kernel and padding: VidTok's CausalConv1d and strided CausalConv3d.

  ``kernel_size`` is the spatial kernel ((1, 1): VidTok's per-pixel ``Conv1d`` over time, ``time_kernel``
  3), ``time_pad`` the frames put before the first and after the last (default ``(time_kernel - 1, 0)``,
  non-causal ``((k - 1) // 2, k - 1 - (k - 1) // 2)``; VidTok's strided conv: ``k - s`` before, or after
  when non-causal, so 2m frames give m). Streaming carries frames as ``CausalConv`` does.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: Sequence[int],
    *,
    time_kernel: int,
    time_stride: int = 1,
    time_pad: tuple[int, int] | None = None,
    time_padding: str = "zeros",
    causal: bool = True,
    **kwargs,
  ):
    k = tuple(int(v) for v in kernel_size)
    if time_padding not in TIME_PADDINGS:
      raise ValueError(f"time_padding={time_padding!r} is not one of {TIME_PADDINGS}")
    space = tuple((v // 2, v // 2) for v in k)
    nnx.Conv.__init__(
      self,
      in_features,
      out_features,
      (int(time_kernel),) + k,
      (int(time_stride),) + (1,) * len(k),
      padding=((0, 0),) + space,
      **kwargs,
    )
    self.time_kernel, self.time_stride, self.time_padding = int(time_kernel), int(time_stride), time_padding
    self.causal = bool(causal)
    kt = self.time_kernel - 1
    default = (kt, 0) if causal else (kt // 2, kt - kt // 2)
    self.time_pad = default if time_pad is None else tuple(int(v) for v in time_pad)
    self.streaming = False

  def pad_time(self, x: jax.Array) -> jax.Array:
    """``x`` with the carried frames (streaming) or ``time_pad`` padding frames before (and after) it."""
    k, s = self.time_kernel, self.time_stride
    if self.streaming and not self.causal:
      raise ValueError("a non-causal conv sees the frames after each one: it cannot run in chunks")
    if hasattr(self, "carry"):
      x = jnp.concatenate([self.carry[...].astype(x.dtype), x], axis=1)
    else:
      x = pad_time(x, *self.time_pad, self.time_padding)
    if x.shape[1] < k:
      raise ValueError(f"TimeConv: {x.shape[1]} frames with padding; the time kernel needs {k}")
    if self.streaming:
      rest = x[:, s * ((x.shape[1] - k) // s + 1) :]
      if hasattr(self, "carry"):
        self.carry[...] = rest
      else:
        self.carry = TimeCarry(rest)
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.Conv.__call__(self, self.pad_time(x))


def _time_options(conv: Callable[..., nnx.Module] | None) -> dict[str, Any]:
  """The ``time_padding`` and ``causal`` a video conv partial (``_video_parts``) was given (zeros, causal)."""
  kw = getattr(conv, "keywords", {})
  return {"time_padding": kw.get("time_padding", "zeros"), "causal": kw.get("causal", True)}


def _lerp_time_2x(x: jax.Array) -> jax.Array:
  """torch's linear 2x interpolation over time (half-pixel centres, align_corners=False): output 2i is
  ``0.75 x[i] + 0.25 x[i - 1]``, 2i + 1 ``0.75 x[i] + 0.25 x[i + 1]``, the missing neighbour at either end
  the edge frame itself."""
  prev = jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)
  nxt = jnp.concatenate([x[:, 1:], x[:, -1:]], axis=1)
  both = jnp.stack([0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt], axis=2)
  return both.reshape(x.shape[0], 2 * x.shape[1], *x.shape[2:])


def time_conv(in_ch: int, out_ch: int, kernel_size: Sequence[int], **kwargs) -> TimeConv:
  """A k x k conv's arguments made VidTok's per-pixel causal conv over time: k frames, 1 x 1 in space."""
  kwargs.pop("conv", None)
  return TimeConv(in_ch, out_ch, (1, 1), time_kernel=int(kernel_size[0]), **kwargs)


class MixTimeDownsample(TimeConv):
  """VidTok's TimeDownsampleResCausal2x: ``a * mean(3 frames) + (1 - a) * conv(3x3x3, time stride 2)``.

  ``a = sigmoid(mix_factor)``; both branches read the same frames (one frame before the video, ``k - s``:
  zeros in v1.0, the first frame in v1.1, ``time_padding``), so 2m frames give m and output j sees frames
  2j - 1 .. 2j + 1. Non-causal (model_3dnoncausal.py TimeDownsampleRes2x): the frame goes after the clip
  (zeros), so output j sees frames 2j .. 2j + 2, the last output the padding frame.
  """

  def __init__(
    self,
    ch: int,
    *,
    time_stride: int = 2,
    time_padding: str = "zeros",
    causal: bool = True,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs,
  ):
    if time_stride != 2:
      raise ValueError(f"the vidtok CNN family downsamples time by 2 per level; got a time stride of {time_stride}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    pad = (1, 0) if causal else (0, 1)
    super().__init__(
      ch, ch, (3, 3), time_kernel=3, time_stride=2, time_pad=pad, time_padding=time_padding, causal=causal, **kw
    )
    self.mix_factor = nnx.Param(jnp.full((1,), 2.0, param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    xp = self.pad_time(x)
    k, s = self.time_kernel, self.time_stride
    n = (xp.shape[1] - k) // s + 1
    mean = sum(xp[:, i : i + s * (n - 1) + 1 : s] for i in range(k)) / k
    a = jax.nn.sigmoid(self.mix_factor[...][0]).astype(mean.dtype)
    return a * mean + (1 - a) * nnx.Conv.__call__(self, xp)


class MixTimeUpsample(CausalConv):
  """VidTok's TimeUpsampleResCausal2x: time doubled, then ``a * x + (1 - a) * causal conv(x)``.

  ``mode`` "repeat": every frame repeated (v1.0); "linear" (v1.1's trilinear): a whole video's first
  ``group`` frames (those of its first latent frame) and the rest each interpolated alone
  (``_lerp_time_2x``), as v1.1 does for a first chunk; streaming chunks after the first are refused.
  Non-causal (model_3dnoncausal.py TimeUpsampleRes2x): repetition, and the conv padded on both sides.
  """

  def __init__(
    self,
    ch: int,
    *,
    time_stride: int = 2,
    time_padding: str = "zeros",
    causal: bool = True,
    mode: str = "repeat",
    group: int = 1,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs,
  ):
    if mode not in TIME_UPSAMPLES:
      raise ValueError(f"time_upsample={mode!r} is not one of {TIME_UPSAMPLES}")
    if mode == "linear" and time_stride != 2:
      raise ValueError(f"linear time upsampling doubles time; got a time stride of {time_stride}")
    if mode == "linear" and not causal:
      raise ValueError("linear time upsampling is causal VidTok v1.1's; a non-causal one (causal=False) repeats frames")
    kw = dict(time_padding=time_padding, causal=causal, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    super().__init__(ch, ch, (3, 3), **kw)
    self.factor, self.mode, self.group = int(time_stride), mode, int(group)
    self.mix_factor = nnx.Param(jnp.full((1,), 2.0, param_dtype))

  def __call__(self, x: jax.Array, first: bool = True) -> jax.Array:
    if self.mode == "repeat":
      x = jnp.repeat(x, self.factor, axis=1)
    elif not first:
      raise ValueError("linear time upsampling (VidTok v1.1) decodes whole videos; chunked decoding is not supported")
    else:
      g = self.group
      x = (
        _lerp_time_2x(x) if x.shape[1] <= g else jnp.concatenate([_lerp_time_2x(x[:, :g]), _lerp_time_2x(x[:, g:])], 1)
      )
    a = jax.nn.sigmoid(self.mix_factor[...][0]).astype(x.dtype)
    return a * x + (1 - a) * super().__call__(x)


class FactorisedResBlock(nnx.Module):
  """VidTok's (2+1)-D residual pair: a ``ResBlock`` of 3x3 convs per frame (``space``), then one of 3-frame
  causal convs per pixel (``time``, padded as ``conv`` is: zeros in v1.0, the first frame in v1.1, on both
  sides when non-causal; its width is the output's)."""

  def __init__(
    self,
    in_ch: int,
    out_ch: int,
    *,
    groups: int = 32,
    norm: Callable[..., nnx.Module] = layer_norm,
    conv: Callable[..., nnx.Module] | None = None,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    # the 3-D convs are the mid blocks'; this block's time convs pad as they do
    kw = dict(groups=groups, norm=norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.space = ResBlock(in_ch, out_ch, conv=nnx.Conv, **kw)
    self.time = ResBlock(out_ch, out_ch, conv=functools.partial(time_conv, **_time_options(conv)), **kw)

  def __call__(self, x: jax.Array, codes: jax.Array | None = None) -> jax.Array:
    return self.time(self.space(x))


class FactorisedDownsample(Downsample):
  """VidTok: taming's stride-2 3x3 conv padded (0, 1) on each frame, then with a time stride a ``MixTimeDownsample``."""

  def __init__(
    self,
    ch: int,
    *,
    conv: Callable[..., nnx.Module] | None = None,
    time_stride: int = 1,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    super().__init__(ch, **kw)
    tkw = _time_options(conv)
    self.time = MixTimeDownsample(ch, time_stride=time_stride, **tkw, **kw) if time_stride > 1 else None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv(x)
    return h if self.time is None else self.time(h)


class FactorisedUpsample(Upsample):
  """VidTok: nearest 2x and a 3x3 conv on each frame, then with a time stride a ``MixTimeUpsample``
  (``time_upsample``; ``time_group``: frames per latent frame at its input)."""

  def __init__(
    self,
    ch: int,
    *,
    conv: Callable[..., nnx.Module] | None = None,
    time_stride: int = 1,
    time_upsample: str = "repeat",
    time_group: int = 1,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    super().__init__(ch, **kw)
    tkw = dict(_time_options(conv), mode=time_upsample, group=time_group)
    self.time = MixTimeUpsample(ch, time_stride=time_stride, **tkw, **kw) if time_stride > 1 else None

  def __call__(self, x: jax.Array, first: bool = True) -> jax.Array:
    # the decoder drops the padding frames at its end
    h = super().__call__(x)
    return h if self.time is None else self.time(h, first)


# ---- Cosmos: NVIDIA Cosmos-Tokenizer's factorised causal video CNN ---------------------------------------
# The parts of the ``cosmos`` family (Cosmos DV/CV, cosmos_tokenizer/modules/layers3d.py: EncoderFactorized,
# DecoderFactorized; patching.py: Patcher3D, UnPatcher3D). Every conv is a CausalConv3d padded in time on
# the left with copies of the first frame; norms are GroupNorms with one group, per frame (CausalNormalize).

_HAAR = 1.0 / math.sqrt(2.0)


class FactorizedConv(nnx.Module):
  """A k x k conv made a causal (2+1)-D conv: (1, k, k) in space (in -> out), then (k, 1, 1) in time (out -> out).

  Cosmos's ``nn.Sequential(CausalConv3d((1, k, k), padding=1), CausalConv3d((k, 1, 1), padding=0))``
  (layers3d.py: conv_in, conv_out, CausalResnetBlockFactorized3d): space padded with zeros, time on the
  left with ``k - 1`` copies of the first frame (``time_padding``).
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: Sequence[int],
    *,
    time_padding: str = "replicate",
    use_bias: bool = True,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    k = int(tuple(kernel_size)[0])
    kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.space = CausalConv(in_features, out_features, kernel_size, time_kernel=1, **kw)
    self.time = CausalConv(out_features, out_features, (1, 1), time_kernel=k, time_padding=time_padding, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.time(self.space(x))


def factorized_conv(in_features: int, out_features: int, kernel_size: Sequence[int], **kwargs: Any) -> nnx.Module:
  """The ``conv`` of a factorised family: ``FactorizedConv``, or one 1x1x1 ``CausalConv`` for a 1x1 kernel."""
  if tuple(kernel_size) == (1, 1):  # Cosmos's nin_shortcut: a single CausalConv3d of kernel 1
    return CausalConv(in_features, out_features, kernel_size, **kwargs)
  return FactorizedConv(in_features, out_features, kernel_size, **kwargs)


class TimeAttnBlock(nnx.Module):
  """Single-head causal self-attention along time at each position, with a residual.

  Cosmos's CausalTemporalAttnBlock (layers3d.py): norm, q/k/v 1x1x1 convs, softmax of q.k / sqrt(C)
  under a lower-triangular mask (frame t attends to frames <= t), proj_out, + x.
  """

  def __init__(
    self,
    ch: int,
    *,
    groups: int = 32,
    norm: Callable[..., nnx.Module] = group_norm,
    conv: Callable[..., nnx.Module] | None = None,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    del conv  # q, k, v and the output are Linear maps, per position
    self.norm = norm(ch, groups=groups, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
      num_heads=1, in_features=ch, dtype=dtype, param_dtype=param_dtype, decode=False, rngs=rngs
    )
    self.streaming = False

  def __call__(self, x: jax.Array, codes: jax.Array | None = None) -> jax.Array:
    b, t, h, w, c = x.shape
    y = jnp.moveaxis(self.norm(x), 1, 3).reshape(b * h * w, t, c)
    # Streaming (``stream``): the earlier chunks' normalised frames are kept (TimeCarry) as keys and values,
    # so chunks attend as the whole clip does; the cache grows with the length at this (the lowest) resolution.
    past = self.carry[...].astype(y.dtype) if hasattr(self, "carry") else y[:, :0]
    kv = jnp.concatenate([past, y], axis=1)
    mask = jnp.arange(kv.shape[1])[None, :] <= past.shape[1] + jnp.arange(t)[:, None]
    if self.streaming:
      self.carry = TimeCarry(kv)  # a new length each chunk
    y = self.attn(y, kv, kv, mask=mask[None, None])
    return x + jnp.moveaxis(y.reshape(b, h, w, t, c), 3, 1)


class SpaceTimeAttnBlock(nnx.Module):
  """Attention within each frame (``AttnBlock``), then causal attention along time (``TimeAttnBlock``).

  Cosmos's middle attention: ``nn.Sequential(CausalAttnBlock, CausalTemporalAttnBlock)``.
  """

  def __init__(self, ch: int, **kwargs: Any):
    self.space = AttnBlock(ch, **kwargs)
    self.time = TimeAttnBlock(ch, **kwargs)

  def __call__(self, x: jax.Array, codes: jax.Array | None = None) -> jax.Array:
    return self.time(self.space(x, codes), codes)


class HybridDownsample(nnx.Module):
  """Cosmos's CausalHybridDownsample3d: a strided conv plus average pooling, in space then in time, then 1x1x1.

  Space (``space_stride`` 2): ``conv1`` (1, 3, 3) stride 2 padded (0, 1) + 2x2 mean; time
  (``time_stride`` 2): ``conv2`` (3, 1, 1) stride 2 on the clip with two copies of its first frame
  before it, + the mean of frame pairs of the clip with one copy before it (1 + 2k -> 1 + k frames);
  then ``conv3`` (1x1x1). With neither stride the level passes its input on unchanged, as the
  reference does. Cosmos 0.1 (cosmos_tokenizer/modules/layers3d.py) builds all three convs whatever
  the strides (they are in its published files); 1.0 (cosmos1/models/tokenizer/modules/layers3d.py)
  makes a conv it does not use an ``nn.Identity``, with no weights: ``used_only`` (the ``cosmos1``
  family) builds only the convs the strides use (None for the others).
  """

  def __init__(
    self,
    ch: int,
    *,
    conv: Callable[..., nnx.Module] | None = None,
    time_stride: int = 1,
    space_stride: int = 2,
    used_only: bool = False,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    del conv  # its convs are its own
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.space_stride, self.time_stride = int(space_stride), int(time_stride)
    space, time = self.space_stride == 2 or not used_only, self.time_stride == 2 or not used_only
    self.conv1 = CausalConv(ch, ch, (3, 3), strides=2, padding=((0, 1), (0, 1)), time_kernel=1, **kw) if space else None
    self.conv2 = (
      CausalConv(ch, ch, (1, 1), padding=((0, 0), (0, 0)), time_kernel=3, time_stride=2, time_padding="replicate", **kw)
      if time
      else None
    )
    self.conv3 = CausalConv(ch, ch, (1, 1), time_kernel=1, **kw) if space or time else None

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.space_stride == 1 and self.time_stride == 1:
      return x
    if self.space_stride == 2:
      b, t, h, w, c = x.shape
      x = self.conv1(x) + x.reshape(b, t, h // 2, 2, w // 2, 2, c).mean(axis=(3, 5))
    if self.time_stride == 2:
      # 1 + 2k frames pair as (x0, x0), (x1, x2) ...; a streaming chunk after the first starts a pair.
      padded = jnp.concatenate([x[:, :1], x], axis=1) if _first_chunk(self.conv2) else x
      pairs = padded.reshape((x.shape[0], padded.shape[1] // 2, 2) + x.shape[2:]).mean(axis=2)
      x = self.conv2(x) + pairs
    return self.conv3(x)


class HybridUpsample(nnx.Module):
  """Cosmos's CausalHybridUpsample3d: repetition plus a residual conv, in time then in space, then 1x1x1.

  Time (``time_stride`` 2): each frame twice, a first chunk dropping one copy of its first frame
  (1 + k -> 1 + 2k), then ``+ conv1`` ((3, 1, 1), causal); space (``space_stride`` 2): nearest 2x,
  then ``+ conv2`` ((1, 3, 3)); then ``conv3`` (1x1x1). Neither: the identity (its convs unused).
  ``used_only``: only the convs the strides use (Cosmos 1.0's, as ``HybridDownsample``).
  """

  def __init__(
    self,
    ch: int,
    *,
    conv: Callable[..., nnx.Module] | None = None,
    time_stride: int = 1,
    space_stride: int = 2,
    used_only: bool = False,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    del conv
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.space_stride, self.time_stride = int(space_stride), int(time_stride)
    space, time = self.space_stride == 2 or not used_only, self.time_stride == 2 or not used_only
    self.conv1 = CausalConv(ch, ch, (1, 1), time_kernel=3, time_padding="replicate", **kw) if time else None
    self.conv2 = CausalConv(ch, ch, (3, 3), time_kernel=1, **kw) if space else None
    self.conv3 = CausalConv(ch, ch, (1, 1), time_kernel=1, **kw) if space or time else None

  def __call__(self, x: jax.Array, first: bool = True) -> jax.Array:
    if self.space_stride == 1 and self.time_stride == 1:
      return x
    if self.time_stride == 2:
      x = _stretch_time(x, 2, first)
      x = self.conv1(x) + x
    if self.space_stride == 2:
      x = jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2)
      x = self.conv2(x) + x
    return self.conv3(x)


def cosmos_up_schedule(space: Sequence[int], time: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """(space, time) strides of the decoder's upsamplings, from the lowest resolution, given the encoder's.

  The rule of Cosmos's DecoderFactorized (layers3d.py, ``legacy_mode=False``), which is not the
  encoder's mirror: with ``ns`` spatial and ``nt`` temporal downsamplings, upsampling ``r`` is
  temporal iff ``0 < r < nt + 1``, spatial iff temporal or (``r < ns`` and ``ns > nt``). So DV4x8x8
  (encoder: space at level 0) upsamples space at the first upsampling, not the last.
  """
  ns, nt = sum(int(v) == 2 for v in space), sum(int(v) == 2 for v in time)
  out = []
  for r in range(len(tuple(space))):
    t_up = 0 < r < nt + 1
    s_up = t_up or (r < ns and ns > nt)
    out.append((2 if s_up else 1, 2 if t_up else 1))
  return tuple(out)


def _haar_split(x: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
  even = jax.lax.slice_in_dim(x, 0, None, 2, axis)
  odd = jax.lax.slice_in_dim(x, 1, None, 2, axis)
  return (even + odd) * _HAAR, (even - odd) * _HAAR


def _haar_merge(low: jax.Array, high: jax.Array, axis: int) -> jax.Array:
  pair = jnp.stack([(low + high) * _HAAR, (low - high) * _HAAR], axis=axis + 1)
  return pair.reshape(low.shape[:axis] + (2 * low.shape[axis],) + low.shape[axis + 1 :])


def haar_patch(x: jax.Array, patch: int, first: bool = True) -> jax.Array:
  """Cosmos's Patcher3D (patching.py, ``_haar``): (B, T, H, W, C) -> (B, T'/p, H/p, W/p, C*p**3).

  Frame 0 is repeated ``p`` times (1 + k*p frames -> (1 + k)*p), then log2(p) times: a Haar
  step (low (a + b)/sqrt(2), high (a - b)/sqrt(2)) along time, height and width, the 8 bands
  concatenated on channels in the order lll, llh, lhl, lhh, hll, hlh, hhl, hhh, divided by 2*sqrt(2).
  The steps are local to blocks of p frames, so a streaming chunk after the first (``first=False``,
  a multiple of p frames) is patched on its own.
  """
  if first:
    x = jnp.concatenate([jnp.repeat(x[:, :1], patch, axis=1), x[:, 1:]], axis=1)
  for _ in range(int(math.log2(patch))):
    bands = [x]
    for axis in (1, 2, 3):
      bands = [half for band in bands for half in _haar_split(band, axis)]
    x = jnp.concatenate(bands, axis=-1) / (2.0 * math.sqrt(2.0))
  return x


def haar_unpatch(x: jax.Array, patch: int, first: bool = True) -> jax.Array:
  """The inverse of ``haar_patch`` (UnPatcher3D, ``_ihaar``): width, height then time merged per level,
  and the first ``p - 1`` frames dropped (``first``: a whole clip or its first chunk)."""
  for _ in range(int(math.log2(patch))):
    bands = jnp.split(x * (2.0 * math.sqrt(2.0)), 8, axis=-1)
    for axis in (3, 2, 1):
      bands = [_haar_merge(bands[i], bands[i + 1], axis) for i in range(0, len(bands), 2)]
    x = bands[0]
  return x[:, patch - 1 :] if first else x


@dataclasses.dataclass(frozen=True)
class Family:
  """The parts in which CNN families differ in kind (sizes are config values).

  Attributes:
    res_block: the residual block class (or a partial of one, e.g. bias-free).
    downsample: the downsampling class (one per level but the last).
    conv_in_bias: whether the encoder's first conv has a bias.
    conv_out_kernel: kernel size of the encoder's last conv.
    mid_blocks: residual blocks in the middle; 0 means ``num_res_blocks``.
    extra_decoder_blocks: decoder blocks per level beyond ``num_res_blocks``.
    upsample: the decoder's upsampling class (one per level but the last).
    level_norm: None, or a class normalising the input of each decoder level
      conditioned on the decoder's input (``AdaptiveGroupNorm``).
    decoder_norm: None, or a class taking the place of every GroupNorm of the
      decoder, conditioned on the quantized latent (``SpatialNorm``).
    norm_eps: None (1e-6), or the epsilon of the blocks' GroupNorms and of
      both ``norm_out``s (not of ``level_norm``).
    width_block: a level whose width changes starts with one more residual
      block, the one that changes it (flexTokenizer's), instead of changing it
      in the first of its ``num_res_blocks`` blocks.
    video: whether its parts take a causal conv and a time stride (causal
      video with ``temporal_downsample``).
    mid_block: None (``res_block``), or the middle's residual block class.
    block_norm: None (GroupNorm), or the norm of every block and both
      ``norm_out``s (``layer_norm``).
    pad_frames: video: the encoder puts s_T - 1 copies of the first frame
      before the video and the decoder drops its first s_T - 1 frames
      (VidTok), instead of running the first frame alone.
    factorized: (Cosmos) its convs are (2+1)-D (``factorized_conv``), its
      down- and upsamplings take a ``space_stride`` (``model.spatial_downsample``:
      a level may downsample time, space, both or neither), the decoder's
      strides come from ``up_schedule``, and time is padded with copies of
      the first frame whatever ``time_padding`` says.
    attn_block: the middle's attention class.
    level_attention: whether ``attention`` also puts attention after each
      block of the lowest level (taming), or only in the middle (VidTok, Cosmos).
    up_schedule: None (the decoder mirrors the encoder), or a function of the
      encoder's (space, time) strides giving the decoder's, from the lowest level.
  """

  res_block: Callable[..., nnx.Module]
  downsample: Callable[..., nnx.Module]
  conv_in_bias: bool
  conv_out_kernel: int
  mid_blocks: int
  extra_decoder_blocks: int
  upsample: Callable[..., nnx.Module] = Upsample
  level_norm: type | None = None
  decoder_norm: type | None = None
  norm_eps: float | None = None
  width_block: bool = False
  video: bool = False
  mid_block: Callable[..., nnx.Module] | None = None
  block_norm: Callable[..., nnx.Module] | None = None
  level_attention: bool = True
  pad_frames: bool = False
  factorized: bool = False
  attn_block: type = AttnBlock
  up_schedule: Callable[..., tuple[tuple[int, int], ...]] | None = None

  def num_mid_blocks(self, num_res_blocks: int) -> int:
    return self.mid_blocks or num_res_blocks


FAMILIES = {
  "taming": Family(
    res_block=ResBlock,
    downsample=Downsample,
    conv_in_bias=True,
    conv_out_kernel=3,
    mid_blocks=2,
    extra_decoder_blocks=1,
    video=True,
  ),
  "maskgit": Family(
    res_block=MaskGitResBlock,
    downsample=AvgPoolDownsample,
    conv_in_bias=False,
    conv_out_kernel=1,
    mid_blocks=0,
    extra_decoder_blocks=0,
  ),
  "magvit2": Family(
    res_block=functools.partial(ResBlock, use_bias=False),
    downsample=PaddedDownsample,
    conv_in_bias=False,
    conv_out_kernel=1,
    mid_blocks=0,
    extra_decoder_blocks=0,
    upsample=DepthToSpaceUpsample,
    level_norm=AdaptiveGroupNorm,
    video=True,
  ),
}
# SimVQ's CNN: Open-MAGVIT2's without the decoder's adaptive GroupNorm at each level.
FAMILIES["magvit2_plain"] = dataclasses.replace(FAMILIES["magvit2"], level_norm=None)
# MoVQ: taming's CNN with the decoder's norms conditioned on the quantized latent.
FAMILIES["movq"] = dataclasses.replace(FAMILIES["taming"], decoder_norm=SpatialNorm, video=False)
# GSQ's flexTokenizer: Open-MAGVIT2's CNN with biases, torch's GroupNorm eps and a block per width change.
FAMILIES["flex"] = dataclasses.replace(
  FAMILIES["magvit2"], res_block=ResBlock, conv_in_bias=True, norm_eps=1e-5, width_block=True, video=False
)
# VidTok (microsoft/VidTok, vidtok/modules/model_3dcausal.py: EncoderCausal3DPadding, DecoderCausal3DPadding):
# taming's levels and middle with (2+1)-D blocks in the levels, 3-D causal mid blocks and LayerNorms.
FAMILIES["vidtok"] = Family(
  res_block=FactorisedResBlock,
  downsample=FactorisedDownsample,
  conv_in_bias=True,
  conv_out_kernel=3,
  mid_blocks=2,
  extra_decoder_blocks=1,
  upsample=FactorisedUpsample,
  video=True,
  mid_block=ResBlock,
  block_norm=layer_norm,
  level_attention=False,
  pad_frames=True,
)
# Cosmos DV/CV (NVIDIA/Cosmos-Tokenizer, layers3d.py EncoderFactorized / DecoderFactorized): taming's wiring
# (biased convs, mid = block, attention, block; num_res_blocks + 1 decoder blocks) with (2+1)-D convs, attention
# in space then causally in time in the middle only, hybrid (conv + pooling) resampling, 3x3 conv_out. Its
# norms are GroupNorms of one group per frame: model.norm_groups=1. Haar patching: model.wavelet_patch.
FAMILIES["cosmos"] = dataclasses.replace(
  FAMILIES["taming"],
  downsample=HybridDownsample,
  upsample=HybridUpsample,
  factorized=True,
  attn_block=SpaceTimeAttnBlock,
  level_attention=False,
  up_schedule=cosmos_up_schedule,
)
# Cosmos 1.0 (NVIDIA/Cosmos cosmos1/models/tokenizer/modules/layers3d.py; Cosmos-1.0-Tokenizer-DV8x16x16,
# DV4x8x8-LowRes): 0.1's CNN but a level's down- or upsampling holds only the convs its strides use (the
# others are ``nn.Identity``s, without weights), so a level that resamples in space or time alone has fewer.
FAMILIES["cosmos1"] = dataclasses.replace(
  FAMILIES["cosmos"],
  downsample=functools.partial(HybridDownsample, used_only=True),
  upsample=functools.partial(HybridUpsample, used_only=True),
)


#: The levels of the published f16 CNNs at 256 px (16x16 latents): taming-transformers' ImageNet
#: VQGAN (configs/imagenet_vqgan.yaml: ch 128, ch_mult 1-1-2-2-4, 2 res blocks), which MaskGIT's
#: VQGAN (also TiTok's pixel decoder) and LlamaGen's VQ-16 repeat and IBQ, Open-MAGVIT2 (4 res
#: blocks) and VAR (ch 160) vary. ``model`` fields; a preset adds attention, z_channels, the family.
TAMING_F16 = {"channels": 128, "channel_mult": (1, 1, 2, 2, 4), "num_res_blocks": 2}


def get_family(name: str) -> Family:
  """The row of ``FAMILIES`` called ``name``; ValueError naming the choices otherwise."""
  if name not in FAMILIES:
    raise ValueError(f"unknown CNN family {name!r}; expected one of {tuple(FAMILIES)}")
  return FAMILIES[name]


def _check_attention(family: Family, attention: bool, name: str) -> None:
  # flexTokenizer places its attention otherwise (after every block of a level); its published models have none.
  if attention and family.width_block:
    raise ValueError(f"the {name!r} CNN family has no attention; set model.attention=False")


def check_temporal_downsample(
  temporal_downsample: Sequence[int], channel_mult: Sequence[int], family: str
) -> tuple[int, ...]:
  """Validates the time strides per downsampling level (empty: an image CNN) and returns them as ints."""
  ts = tuple(int(t) for t in temporal_downsample)
  if not ts:
    return ()
  levels = len(tuple(channel_mult)) - 1
  if len(ts) != levels or min(ts) < 1:
    raise ValueError(
      f"model.temporal_downsample={list(temporal_downsample)} needs one time stride >= 1 per downsampling level:"
      f" {levels} for channel_mult={tuple(channel_mult)} (e.g. {(1,) + (2,) * (levels - 1) if levels else ()})"
    )
  if not get_family(family).video:
    video = tuple(k for k, f in FAMILIES.items() if f.video)
    raise ValueError(f"causal video (model.temporal_downsample) is built for the CNN families {video}; not {family!r}")
  return ts


def check_spatial_downsample(
  spatial_downsample: Sequence[int], temporal_downsample: Sequence[int], channel_mult: Sequence[int], family: str
) -> tuple[int, ...]:
  """The space strides per downsampling level: 2 each (empty), or, for a factorised family (Cosmos), as given.

  A factorised family downsamples space and time at the first levels only (strides 2, ..., 2, 1, ..., 1,
  as Cosmos's ``i_level < num_spatial_downs``), with time strides of 1 or 2.
  """
  levels = len(tuple(channel_mult)) - 1
  ss = tuple(int(v) for v in spatial_downsample)
  if not get_family(family).factorized:
    if not ss:
      return (2,) * levels
    factorized = tuple(k for k, f in FAMILIES.items() if f.factorized)
    raise ValueError(f"model.spatial_downsample is for the CNN families {factorized}; not {family!r}")
  ss = ss or (2,) * levels
  ts = tuple(int(v) for v in temporal_downsample)
  for name, strides in (("spatial_downsample", ss), ("temporal_downsample", ts)):
    if len(strides) != levels or set(strides) - {1, 2} or list(strides) != sorted(strides, reverse=True):
      raise ValueError(
        f"model.{name}={list(strides)}: the {family!r} family takes one stride per downsampling level"
        f" ({levels} for channel_mult={tuple(channel_mult)}), 2s then 1s (e.g. {[2] + [1] * (levels - 1)})"
      )
  return ss


def check_wavelet_patch(wavelet_patch: int, temporal_downsample: Sequence[int]) -> int:
  """Validates the Haar wavelet patch size: 1 (none) or a power of 2, for causal video CNNs only."""
  p = int(wavelet_patch)
  if p < 1 or p & (p - 1):
    raise ValueError(f"model.wavelet_patch={wavelet_patch!r} must be 1 (none) or a power of 2 (Cosmos: 4)")
  if p > 1 and not tuple(temporal_downsample):
    raise ValueError("model.wavelet_patch (3-D Haar patching) is for causal video CNNs: set model.temporal_downsample")
  return p


#: The CNN families with a non-causal video form (``model.causal=False``): VidTok's model_3dnoncausal.py.
NONCAUSAL_FAMILIES = ("vidtok",)


def check_causal(causal: bool, temporal_downsample: Sequence[int], family: str) -> bool:
  """``model.causal``: True, or False for a non-causal video CNN of a family that has one (k*s_T frames -> k)."""
  if causal:
    return True
  if not tuple(temporal_downsample):
    raise ValueError("model.causal=False (a non-causal video CNN) needs model.temporal_downsample")
  if family not in NONCAUSAL_FAMILIES:
    raise ValueError(f"model.causal=False: a non-causal video CNN is built for the CNN families {NONCAUSAL_FAMILIES}")
  return False


def _video_parts(
  ts: tuple[int, ...], time_padding: str, video_norm: str, family: Family | None = None, causal: bool = True
) -> tuple[Callable[..., nnx.Module], dict[str, Any]]:
  """The conv and the blocks' extra arguments: ``nnx.Conv`` and none (images), or causal (or, ``causal=False``,
  centred) video convs and video norms."""
  if not ts:
    return nnx.Conv, {}
  if time_padding not in TIME_PADDINGS:
    raise ValueError(f"model.time_padding={time_padding!r} is not one of {TIME_PADDINGS}")
  if video_norm not in VIDEO_NORMS:
    raise ValueError(f"model.video_norm={video_norm!r} is not one of {VIDEO_NORMS}")
  conv = functools.partial(CausalConv, time_padding=time_padding, **({} if causal else {"causal": False}))
  if family is not None and family.factorized:  # Cosmos: (2+1)-D convs, time padded with the first frame
    conv = functools.partial(factorized_conv, time_padding="replicate")
  return conv, {"conv": conv, "norm": frame_group_norm if video_norm == "frame" else group_norm}


def _check_video_family(fam: Family, ts: tuple[int, ...], family: str) -> None:
  # VidTok's (2+1)-D blocks convolve over time: they exist only as a video CNN.
  if fam.pad_frames and not ts:
    raise ValueError(f"the {family!r} CNN family is a causal video CNN: set model.temporal_downsample")


def check_temporal_upsample(temporal_upsample: Sequence[int], temporal_downsample: Sequence[int]) -> tuple[int, ...]:
  """The decoder's time strides, listed as ``temporal_downsample`` (entry i mirrors the encoder's downsampling i);
  empty: the mirror of ``temporal_downsample``. Their products must agree (the frame rule)."""
  down = tuple(int(t) for t in temporal_downsample)
  up = tuple(int(t) for t in temporal_upsample) or down
  if len(up) != len(down) or (up and (min(up) < 1 or math.prod(up) != math.prod(down))):
    raise ValueError(
      f"model.temporal_upsample={list(temporal_upsample)} needs one time stride >= 1 per upsampling level"
      f" ({len(down)}) with the product of model.temporal_downsample={list(down)} ({math.prod(down)})"
    )
  return up


def _mid(ch: int, n: int, attention: bool, family: Family, kw: dict) -> tuple[nnx.List, Any]:
  block = family.mid_block or family.res_block
  blocks = nnx.List([block(ch, ch, **kw) for _ in range(n)])
  return blocks, (family.attn_block(ch, **kw) if attention else None)


def _run_mid(blocks: nnx.List, attn: Any, h: jax.Array, codes: jax.Array | None = None) -> jax.Array:
  # Attention sits after the first mid block (taming's block_1, attn_1, block_2).
  for j, block in enumerate(blocks):
    h = _call(block, h, codes)
    if j == 0 and attn is not None:
      h = attn(h, codes)
  return h


def _call(block: nnx.Module, h: jax.Array, codes: jax.Array | None) -> jax.Array:
  # MaskGIT's blocks have no conditioned norms and take no codes.
  return block(h) if codes is None else block(h, codes)


def _run_level(res: nnx.List, attn: nnx.List, h: jax.Array, codes: jax.Array | None = None) -> jax.Array:
  for j, block in enumerate(res):
    h = _call(block, h, codes)
    if len(attn):
      h = attn[j](h, codes)
  return h


def _level_blocks(
  in_ch: int, out_ch: int, n: int, attention: bool, family: Family, kw: dict
) -> tuple[nnx.List, nnx.List]:
  res, attn = [], []
  if family.width_block and in_ch != out_ch:  # the block that changes the width comes first, on its own
    n += 1
  for j in range(n):
    res.append(family.res_block(in_ch if j == 0 else out_ch, out_ch, **kw))
    if attention and family.level_attention:
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
    family: the row of ``FAMILIES`` that names the block kinds.
    norm_groups: GroupNorm groups (fewer when the width is not a multiple);
      32 in every published model. Narrow models want fewer: with one
      channel per group the norm removes each image's mean colour.
    in_channels: image channels.
    temporal_downsample: empty: an image CNN on (B, H, W, C); else a causal
      video CNN on (B, T, H, W, C) with these time strides, one per
      downsampling level (Open-MAGVIT2's 4x8x8: ``(1, 2, 2)``).
    time_padding: video: what a causal conv puts before the first frame,
      "zeros" or "replicate" (copies of the first frame).
    causal: video: False makes the CNN non-causal (families in
      ``NONCAUSAL_FAMILIES``: VidTok's model_3dnoncausal.py): time convs padded
      on both sides, k*s_T frames -> k latent frames, whole clips only.
    video_norm: video: GroupNorm statistics per "frame" (causal) or over the
      "clip" (Open-MAGVIT2's video tokenizer; not causal).
    spatial_downsample: a factorised family (Cosmos): the space stride per
      downsampling level, 2 or 1 (empty: 2 each).
    wavelet_patch: video: p > 1 starts with Cosmos's 3-D Haar wavelet
      patching (``haar_patch``: p in time and space, C*p**3 channels).
    head: end with GroupNorm, swish and ``conv_out`` to ``z_channels``; False
      stops after the middle blocks, at the widest level's width
      (``trunk_channels``), for models whose heads follow (FQGAN).
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
    family: str = "taming",
    norm_groups: int = 32,
    in_channels: int = 3,
    temporal_downsample: Sequence[int] = (),
    time_padding: str = "zeros",
    causal: bool = True,
    video_norm: str = "frame",
    spatial_downsample: Sequence[int] = (),
    wavelet_patch: int = 1,
    head: bool = True,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    mult = check_channel_mult(channel_mult)
    _check_sizes(channels, num_res_blocks, z_channels)
    fam = get_family(family)
    _check_attention(fam, attention, family)
    ts = check_temporal_downsample(temporal_downsample, mult, family)
    _check_video_family(fam, ts, family)
    ss = check_spatial_downsample(spatial_downsample, ts, mult, family)
    patch = check_wavelet_patch(wavelet_patch, ts)
    causal = check_causal(causal, ts, family)
    conv, video = _video_parts(ts, time_padding, video_norm, fam, causal)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    bkw = dict(kw, groups=norm_groups, **video)  # normalised blocks
    if fam.norm_eps is not None:  # an image-only family (flex)
      bkw["norm"] = functools.partial(group_norm, eps=fam.norm_eps)
    if fam.block_norm is not None:  # VidTok's LayerNorms
      bkw["norm"] = fam.block_norm
    self.downsample_factor = patch * math.prod(ss)
    #: whether it is a video CNN on (B, T, H, W, C), and a causal one; its time strides and their product s_T.
    self.video, self.causal, self.temporal_strides = bool(ts), bool(ts) and causal, ts
    self.time_downsample_factor = patch * math.prod(ts)
    self.wavelet_patch = patch
    #: VidTok: s_T - 1 copies of the first frame go before the video (causal only).
    self.pad_frames = fam.pad_frames and causal
    self.in_channels = in_channels
    self.conv_in = conv(in_channels * patch**3, channels, (3, 3), use_bias=fam.conv_in_bias, **kw)
    res, attn, down = [], [], []
    ch = channels
    for i, m in enumerate(mult):
      last = i == len(mult) - 1
      r, a = _level_blocks(ch, channels * m, num_res_blocks, attention and last and fam.level_attention, fam, bkw)
      ch = channels * m
      res.append(r)
      attn.append(a)
      tkw = dict(conv=conv, time_stride=ts[i]) if ts and not last else {}
      if fam.factorized and not last:
        tkw["space_stride"] = ss[i]
      down.append(None if last else fam.downsample(ch, **kw, **tkw))
    self.res, self.attn, self.down = nnx.List(res), nnx.List(attn), nnx.List(down)
    self.mid, self.mid_attn = _mid(ch, fam.num_mid_blocks(num_res_blocks), attention, fam, bkw)
    self.video_norm = video_norm if ts else ""
    self.trunk_channels = ch
    if head:
      out_norm = fam.block_norm or video.get("norm", functools.partial(group_norm, eps=fam.norm_eps or 1e-6))
      self.norm_out = out_norm(ch, groups=norm_groups, **kw)
      k = fam.conv_out_kernel
      self.conv_out = conv(ch, z_channels, (k, k), **kw)
    else:
      self.norm_out = self.conv_out = None

  def latent_frames(self, num_frames: int) -> int:
    """Latent frames of a video of ``num_frames`` (1 + k*s_T -> 1 + k; non-causal: k*s_T -> k); ValueError for
    other counts."""
    return video_frames(num_frames, self.time_downsample_factor, self.causal)

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
    if self.pad_frames and not hasattr(self.conv_in, "carry"):  # a whole video or its first chunk
      x = jnp.concatenate([jnp.repeat(x[:, :1], self.time_downsample_factor - 1, axis=1), x], axis=1)
    if self.wavelet_patch > 1:
      x = haar_patch(x, self.wavelet_patch, _first_chunk(self.conv_in))
    h = self.conv_in(x)
    for res, attn, down in zip(self.res, self.attn, self.down):
      h = _run_level(res, attn, h)
      if down is not None:
        h = down(h)
    h = _run_mid(self.mid, self.mid_attn, h)
    if self.conv_out is None:
      return h
    return self.conv_out(nnx.swish(self.norm_out(h)))


class Decoder(nnx.Module):
  """VQGAN convolutional decoder: (B, h, w, z_channels) -> (B, h*f, w*f, C).

  Args: as ``Encoder``; ``out_channels`` is the image channel count;
  ``code_channels`` the width of the quantized latent that a family with
  ``decoder_norm`` (MoVQ) reads, ``codes`` in ``__call__`` (0: ``z_channels``);
  ``temporal_upsample`` the time strides of the upsamplings, listed as
  ``temporal_downsample`` (empty: the same; VidTok's decoder upsamples time
  at other levels than its encoder downsamples it).
  """

  def __init__(
    self,
    z_channels: int,
    *,
    channels: int = 128,
    channel_mult: Sequence[int] = (1, 1, 2, 2, 4),
    num_res_blocks: int = 2,
    attention: bool = False,
    family: str = "taming",
    norm_groups: int = 32,
    out_channels: int = 3,
    code_channels: int = 0,
    temporal_downsample: Sequence[int] = (),
    temporal_upsample: Sequence[int] = (),
    time_padding: str = "zeros",
    causal: bool = True,
    time_upsample: str = "repeat",
    video_norm: str = "frame",
    spatial_downsample: Sequence[int] = (),
    wavelet_patch: int = 1,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    mult = check_channel_mult(channel_mult)
    _check_sizes(channels, num_res_blocks, z_channels)
    fam = get_family(family)
    _check_attention(fam, attention, family)
    ts = check_temporal_downsample(temporal_downsample, mult, family)
    _check_video_family(fam, ts, family)
    ss = check_spatial_downsample(spatial_downsample, ts, mult, family)
    self.wavelet_patch = patch = check_wavelet_patch(wavelet_patch, ts)
    causal = check_causal(causal, ts, family)
    conv, video = _video_parts(ts, time_padding, video_norm, fam, causal)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    bkw = dict(kw, groups=norm_groups)  # normalised blocks
    self.video, self.causal, self.video_norm = bool(ts), bool(ts) and causal, (video_norm if ts else "")
    # The k-th upsampling (from the lowest resolution) mirrors the encoder's downsampling len(mult) - 2 - k
    # (in time: model.temporal_upsample's entry, VidTok), unless the family has a rule of its own (Cosmos).
    self.up_strides = tuple(reversed(check_temporal_upsample(temporal_upsample, ts))) if ts else (1,) * (len(mult) - 1)
    up_space = tuple(reversed(ss))
    if fam.up_schedule is not None and ts:
      up_space, self.up_strides = (tuple(v) for v in zip(*fam.up_schedule(ss, ts))) if ss else ((), ())
      if math.prod(up_space) != math.prod(ss) or math.prod(self.up_strides) != math.prod(ts):
        raise ValueError(
          f"the {family!r} decoder's rule upsamples space {up_space} and time {self.up_strides}, which do not undo"
          f" the encoder's strides {ss} and {ts}"
        )
    if time_upsample not in TIME_UPSAMPLES:
      raise ValueError(f"model.time_upsample={time_upsample!r} is not one of {TIME_UPSAMPLES}")
    if time_upsample != "repeat" and not (ts and causal and fam.upsample is FactorisedUpsample):
      raise ValueError(f"model.time_upsample={time_upsample!r} is the causal 'vidtok' CNN family's (VidTok v1.1)")
    #: VidTok: the first s_T - 1 output frames (those of the encoder's padding) are dropped (causal only).
    self.drop_frames = math.prod(ts) - 1 if fam.pad_frames and causal else 0
    #: whether ``__call__`` reads the quantized latent ``codes`` (MoVQ's spatial norms).
    self.reads_codes = fam.decoder_norm is not None
    norm: Callable[..., nnx.Module] = group_norm
    if self.reads_codes:
      norm = functools.partial(fam.decoder_norm, code_channels=code_channels or z_channels)
      bkw["norm"] = norm
    elif fam.norm_eps is not None:
      norm = bkw["norm"] = functools.partial(group_norm, eps=fam.norm_eps)
    self.z_channels = z_channels
    self.upsample_factor = patch * math.prod(ss)
    ch = channels * mult[-1]
    self.conv_in = conv(z_channels, ch, (3, 3), **kw)
    lnkw = {k: v for k, v in bkw.items() if k != "norm"}  # the level norms take no conv nor block norm
    if ts and video_norm == "clip":
      lnkw["clip"] = True
    bkw.update(video)
    if fam.block_norm is not None:  # VidTok's LayerNorms
      norm = bkw["norm"] = fam.block_norm
    self.mid, self.mid_attn = _mid(ch, fam.num_mid_blocks(num_res_blocks), attention, fam, bkw)
    res, attn, up, norms = [], [], [], []
    # Levels run from the lowest resolution up; the first one keeps attention.
    blocks = num_res_blocks + fam.extra_decoder_blocks
    for k, m in enumerate(reversed(mult)):
      norms.append(fam.level_norm(z_channels, ch, **lnkw) if fam.level_norm is not None else None)
      r, a = _level_blocks(ch, channels * m, blocks, attention and k == 0 and fam.level_attention, fam, bkw)
      ch = channels * m
      res.append(r)
      attn.append(a)
      tkw = dict(conv=conv, time_stride=self.up_strides[k]) if ts and k < len(mult) - 1 else {}
      if tkw and time_upsample != "repeat":  # VidTok v1.1: each first latent frame's frames interpolated alone
        tkw.update(time_upsample=time_upsample, time_group=math.prod(self.up_strides[:k]))
      if fam.factorized and k < len(mult) - 1:
        tkw["space_stride"] = up_space[k]
      up.append(fam.upsample(ch, **kw, **tkw) if k < len(mult) - 1 else None)
    self.res, self.attn, self.up = nnx.List(res), nnx.List(attn), nnx.List(up)
    self.level_norm = nnx.List(norms)
    self.norm_out = (fam.block_norm or video.get("norm", norm))(ch, groups=norm_groups, **kw)
    self.conv_out = conv(ch, out_channels * patch**3, (3, 3), **kw)

  #: attribute path of the last layer's kernel (adaptive GAN weight).
  last_layer_path = ("conv_out", "kernel")

  def __call__(self, z: jax.Array, codes: jax.Array | None = None) -> jax.Array:
    """Images from latents ``z``; ``codes``: the quantized latent the spatial norms read (default ``z``)."""
    codes = (z if codes is None else codes) if self.reads_codes else None
    # Video: a streaming chunk after the first continues the frames (no first frame to keep alone).
    first = _first_chunk(self.conv_in)
    h = _run_mid(self.mid, self.mid_attn, self.conv_in(z), codes)
    factor = 1  # frames of h per latent frame
    for k, (norm, res, attn, up) in enumerate(zip(self.level_norm, self.res, self.attn, self.up)):
      if norm is not None:
        h = norm(h, _stretch_time(z, factor, first) if self.video_norm == "frame" else z)
      h = _run_level(res, attn, h, codes)
      if up is not None:
        h = up(h) if not self.video else up(h, first)
        factor *= self.up_strides[k]
    h = self.conv_out(nnx.swish(_norm(self.norm_out, h, codes)))
    if first and self.drop_frames:
      h = h[:, self.drop_frames :]
    return haar_unpatch(h, self.wavelet_patch, first) if self.wavelet_patch > 1 else h
