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
"""

from __future__ import annotations

import dataclasses
import functools
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
  ch: int, *, groups: int = 32, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs
) -> nnx.GroupNorm:
  """The blocks' default norm: GroupNorm over ``ch`` channels, eps 1e-6, with scale and bias."""
  return nnx.GroupNorm(ch, num_groups=_num_groups(ch, groups), dtype=dtype, param_dtype=param_dtype, rngs=rngs)


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


def _check_sizes(channels: int, num_res_blocks: int, z_channels: int) -> None:
  if num_res_blocks < 1 or channels < 1 or z_channels < 1:
    raise ValueError(
      f"channels={channels}, num_res_blocks={num_res_blocks} and z_channels={z_channels} must all be >= 1"
    )


class ResBlock(nnx.Module):
  """Pre-activation residual block: (GroupNorm, swish, 3x3 conv) x 2 + skip.

  ``use_bias=False`` is Open-MAGVIT2's block (improved_model.py, ResBlock):
  the same wiring with bias-free convs and shortcut. ``norm`` makes the two
  norms (``group_norm``, or MoVQ's ``SpatialNorm``, which reads ``codes``).
  """

  def __init__(
    self,
    in_ch: int,
    out_ch: int,
    *,
    groups: int = 32,
    use_bias: bool = True,
    norm: Callable[..., nnx.Module] = group_norm,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = norm(in_ch, groups=groups, **kw)
    self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), use_bias=use_bias, **kw)
    self.norm2 = norm(out_ch, groups=groups, **kw)
    self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), use_bias=use_bias, **kw)
    # 1x1 projection on the skip path only when the width changes (taming's nin_shortcut).
    self.skip = nnx.Conv(in_ch, out_ch, (1, 1), use_bias=use_bias, **kw) if in_ch != out_ch else None

  def __call__(self, x: jax.Array, codes: jax.Array | None = None) -> jax.Array:
    h = self.conv1(nnx.swish(_norm(self.norm1, x, codes)))
    h = self.conv2(nnx.swish(_norm(self.norm2, h, codes)))
    return h + (x if self.skip is None else self.skip(x))


class AttnBlock(nnx.Module):
  """Single-head spatial self-attention with a residual, as in taming's AttnBlock (``norm``: as ``ResBlock``'s)."""

  def __init__(
    self,
    ch: int,
    *,
    groups: int = 32,
    norm: Callable[..., nnx.Module] = group_norm,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.norm = norm(ch, groups=groups, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
      num_heads=1, in_features=ch, dtype=dtype, param_dtype=param_dtype, decode=False, rngs=rngs
    )

  def __call__(self, x: jax.Array, codes: jax.Array | None = None) -> jax.Array:
    b, h, w, c = x.shape
    t = _norm(self.norm, x, codes).reshape(b, h * w, c)
    return x + self.attn(t).reshape(b, h, w, c)


class Downsample(nnx.Module):
  """Stride-2 3x3 conv; pads (0, 1) like taming so odd kernels stay aligned."""

  def __init__(self, ch: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.conv = nnx.Conv(
      ch, ch, (3, 3), strides=2, padding=((0, 1), (0, 1)), dtype=dtype, param_dtype=param_dtype, rngs=rngs
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
  """Nearest-neighbour 2x upsampling then a 3x3 conv (no checkerboard artefacts)."""

  def __init__(self, ch: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.conv = nnx.Conv(ch, ch, (3, 3), dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return self.conv(x)


class PaddedDownsample(nnx.Module):
  """Stride-2 3x3 conv padded 1 on every side (Open-MAGVIT2's encoder downsampling)."""

  def __init__(self, ch: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.conv = nnx.Conv(
      ch, ch, (3, 3), strides=2, padding=((1, 1), (1, 1)), dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(x)


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


class DepthToSpaceUpsample(nnx.Module):
  """A 3x3 conv to 4x the channels, then depth-to-space: 2x upsampling (Open-MAGVIT2's Upsampler)."""

  def __init__(self, ch: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.conv = nnx.Conv(ch, 4 * ch, (3, 3), dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return depth_to_space(self.conv(x), 2)


class AdaptiveGroupNorm(nnx.Module):
  """GroupNorm without affine parameters, then a scale and bias predicted from the quantized latent.

  Open-MAGVIT2's decoder (improved_model.py, AdaptiveGroupNorm): per image and
  channel of the decoder input ``z``, scale = Linear(sqrt(var_hw(z) + eps)) and
  bias = Linear(mean_hw(z)). The variance is torch's default ``var``, the
  unbiased one (divides by h*w - 1), whatever the reference's comment says.
  """

  def __init__(
    self,
    z_channels: int,
    ch: int,
    *,
    groups: int = 32,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.eps = 1e-6
    self.norm = nnx.GroupNorm(
      ch, num_groups=_num_groups(ch, groups), use_scale=False, use_bias=False, epsilon=self.eps, **kw
    )
    self.gamma = nnx.Linear(z_channels, ch, **kw)
    self.beta = nnx.Linear(z_channels, ch, **kw)

  def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
    s = style.astype(jnp.float32)
    ddof = 1 if s.shape[1] * s.shape[2] > 1 else 0  # torch gives NaN for one position; keep it finite
    scale = self.gamma(jnp.sqrt(jnp.var(s, axis=(1, 2), ddof=ddof) + self.eps).astype(x.dtype))
    bias = self.beta(jnp.mean(s, axis=(1, 2)).astype(x.dtype))
    return self.norm(x) * scale[:, None, None, :] + bias[:, None, None, :]


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
  """

  res_block: Callable[..., nnx.Module]
  downsample: type
  conv_in_bias: bool
  conv_out_kernel: int
  mid_blocks: int
  extra_decoder_blocks: int
  upsample: type = Upsample
  level_norm: type | None = None
  decoder_norm: type | None = None

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
  ),
}
# SimVQ's CNN: Open-MAGVIT2's without the decoder's adaptive GroupNorm at each level.
FAMILIES["magvit2_plain"] = dataclasses.replace(FAMILIES["magvit2"], level_norm=None)
# MoVQ: taming's CNN with the decoder's norms conditioned on the quantized latent.
FAMILIES["movq"] = dataclasses.replace(FAMILIES["taming"], decoder_norm=SpatialNorm)


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


def _mid(ch: int, n: int, attention: bool, family: Family, kw: dict) -> tuple[nnx.List, Any]:
  blocks = nnx.List([family.res_block(ch, ch, **kw) for _ in range(n)])
  return blocks, (AttnBlock(ch, **kw) if attention else None)


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
  for j in range(n):
    res.append(family.res_block(in_ch if j == 0 else out_ch, out_ch, **kw))
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
    family: the row of ``FAMILIES`` that names the block kinds.
    norm_groups: GroupNorm groups (fewer when the width is not a multiple);
      32 in every published model. Narrow models want fewer: with one
      channel per group the norm removes each image's mean colour.
    in_channels: image channels.
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
    head: bool = True,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    mult = check_channel_mult(channel_mult)
    _check_sizes(channels, num_res_blocks, z_channels)
    fam = get_family(family)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    bkw = dict(kw, groups=norm_groups)  # normalised blocks
    self.downsample_factor = 2 ** (len(mult) - 1)
    self.in_channels = in_channels
    self.conv_in = nnx.Conv(in_channels, channels, (3, 3), use_bias=fam.conv_in_bias, **kw)
    res, attn, down = [], [], []
    ch = channels
    for i, m in enumerate(mult):
      last = i == len(mult) - 1
      r, a = _level_blocks(ch, channels * m, num_res_blocks, attention and last, fam, bkw)
      ch = channels * m
      res.append(r)
      attn.append(a)
      down.append(None if last else fam.downsample(ch, **kw))
    self.res, self.attn, self.down = nnx.List(res), nnx.List(attn), nnx.List(down)
    self.mid, self.mid_attn = _mid(ch, fam.num_mid_blocks(num_res_blocks), attention, fam, bkw)
    self.trunk_channels = ch
    if head:
      self.norm_out = nnx.GroupNorm(
        ch, num_groups=_num_groups(ch, norm_groups), dtype=dtype, param_dtype=param_dtype, rngs=rngs
      )
      k = fam.conv_out_kernel
      self.conv_out = nnx.Conv(ch, z_channels, (k, k), **kw)
    else:
      self.norm_out = self.conv_out = None

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
  ``decoder_norm`` (MoVQ) reads, ``codes`` in ``__call__`` (0: ``z_channels``).
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
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    mult = check_channel_mult(channel_mult)
    _check_sizes(channels, num_res_blocks, z_channels)
    fam = get_family(family)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    bkw = dict(kw, groups=norm_groups)  # normalised blocks
    #: whether ``__call__`` reads the quantized latent ``codes`` (MoVQ's spatial norms).
    self.reads_codes = fam.decoder_norm is not None
    norm: Callable[..., nnx.Module] = group_norm
    if self.reads_codes:
      norm = functools.partial(fam.decoder_norm, code_channels=code_channels or z_channels)
      bkw["norm"] = norm
    self.z_channels = z_channels
    self.upsample_factor = 2 ** (len(mult) - 1)
    ch = channels * mult[-1]
    self.conv_in = nnx.Conv(z_channels, ch, (3, 3), **kw)
    self.mid, self.mid_attn = _mid(ch, fam.num_mid_blocks(num_res_blocks), attention, fam, bkw)
    res, attn, up, norms = [], [], [], []
    # Levels run from the lowest resolution up; the first one keeps attention.
    blocks = num_res_blocks + fam.extra_decoder_blocks
    for k, m in enumerate(reversed(mult)):
      norms.append(fam.level_norm(z_channels, ch, **bkw) if fam.level_norm is not None else None)
      r, a = _level_blocks(ch, channels * m, blocks, attention and k == 0, fam, bkw)
      ch = channels * m
      res.append(r)
      attn.append(a)
      up.append(fam.upsample(ch, **kw) if k < len(mult) - 1 else None)
    self.res, self.attn, self.up = nnx.List(res), nnx.List(attn), nnx.List(up)
    self.level_norm = nnx.List(norms)
    self.norm_out = norm(ch, groups=norm_groups, **kw)
    self.conv_out = nnx.Conv(ch, out_channels, (3, 3), **kw)

  #: attribute path of the last layer's kernel (adaptive GAN weight).
  last_layer_path = ("conv_out", "kernel")

  def __call__(self, z: jax.Array, codes: jax.Array | None = None) -> jax.Array:
    """Images from latents ``z``; ``codes``: the quantized latent the spatial norms read (default ``z``)."""
    codes = (z if codes is None else codes) if self.reads_codes else None
    h = _run_mid(self.mid, self.mid_attn, self.conv_in(z), codes)
    for norm, res, attn, up in zip(self.level_norm, self.res, self.attn, self.up):
      if norm is not None:
        h = norm(h, z)
      h = _run_level(res, attn, h, codes)
      if up is not None:
        h = up(h)
    return self.conv_out(nnx.swish(_norm(self.norm_out, h, codes)))
