"""The image tokenizer: encoder -> (projection) -> quantizer -> (projection) -> decoder.

The VQ-VAE / VQGAN pipeline (van den Oord et al., 2017, arXiv:1711.00937; Esser
et al., 2021, arXiv:2012.09841). Any encoder/decoder pair from ``cnn`` or
``vit`` combines with any quantizer that follows the contract in
``vqtok.quantizers.base``. When the encoder width (``z_channels``) differs from
the quantizer's ``code_dim``, Linear maps (taming's 1x1 ``quant_conv`` /
``post_quant_conv``; LlamaGen's 256 -> 8 codebook projection) bridge them.

A CNN tokenizer built with ``model.temporal_downsample`` is a causal video
tokenizer (``cnn``'s causal 3-D form): ``encode`` takes (B, T, H, W, 3) with
T = 1 + k*s_T and gives (B, 1 + k, h, w) ids, ``decode`` the reverse; an image
(B, H, W, 3) is a one-frame video, so every image path works with it. Long
videos go in chunks (``chunk``) with the causal convs' state carried over.
With ``model.causal=False`` (VidTok's non-causal files) it is a non-causal video
tokenizer: T = k*s_T frames give (B, k, h, w) ids, whole clips only (no images,
no chunks).

The quantizer always runs in float32, whatever the compute dtype: nearest-code
search and entropy terms are not reliable in bfloat16, and it makes
``decode(encode(x))`` bit-identical to the eval-mode forward reconstruction.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vqtok import files
from vqtok.config_fields import ConfigFields
from vqtok.models import cnn, dinov2, dual, factorized, siglip, vit
from vqtok.quantizers import QuantizerOutput, build_quantizer
from vqtok.quantizers.base import Quantizer

#: Compute dtypes ``config.model.dtype`` may name.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
#: Encoder/decoder kinds ``config.model.encoder`` may name: the CNN, the 2-D ViT,
#: and the 1-D (TiTok) ViT with learned latent tokens.
ENCODERS = ("cnn", "vit", "vit1d")
#: ``config.model.semantic_encoder``: "" (none) or the ViT family of TokenFlow's semantic encoder.
SEMANTIC_ENCODERS = ("", "clip", "siglip")


def check_input_range(value: Any) -> tuple[float, float]:
  """``(lo, hi)`` as floats, finite with lo < hi; ValueError otherwise."""
  try:
    lo, hi = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f"model.input_range must be two numbers (lo, hi); got {value!r}") from None
  if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
    raise ValueError(f"model.input_range must be finite with lo < hi; got {value!r}")
  return lo, hi


def _check_config(config: Any, check_paths: bool) -> None:
  check_input_range(config.model.input_range)
  if config.model.get("feature_head_hidden", 0) and not config.model.get("feature_dim", 0):
    raise ValueError("config field model.feature_head_hidden needs model.feature_dim (the width of the head's output)")
  if config.model.get("feature_head_blocks", 0) and not config.model.get("feature_head_hidden", 0):
    raise ValueError("config field model.feature_head_blocks needs model.feature_head_hidden (the decoder's width)")
  k = int(config.model.num_latent_tokens) if config.model.encoder == "vit1d" else 0
  vit.check_token_drop(config.model.token_drop, k)
  scales = config.quantizer.get("scales") if config.quantizer.type == "multiscale" else None
  if tuple(config.model.get("temporal_downsample", ())):
    if config.model.encoder != "cnn":
      raise ValueError(
        f"model.temporal_downsample (causal video) needs model.encoder='cnn'; got {config.model.encoder!r}"
      )
    cnn.check_temporal_downsample(config.model.temporal_downsample, config.model.channel_mult, config.model.cnn_family)
    cnn.check_causal(config.model.get("causal", True), config.model.temporal_downsample, config.model.cnn_family)
    cnn.check_temporal_upsample(config.model.get("temporal_upsample", ()), config.model.temporal_downsample)
    cnn.check_spatial_downsample(
      config.model.get("spatial_downsample", ()),
      config.model.temporal_downsample,
      config.model.channel_mult,
      config.model.cnn_family,
    )
    if scales or int(config.model.get("project_kernel", 1)) != 1:
      raise ValueError(
        "model.temporal_downsample (causal video) works with per-position quantizers and project_kernel=1"
      )
  elif tuple(config.model.get("spatial_downsample", ())) or int(config.model.get("wavelet_patch", 1)) != 1:
    raise ValueError("model.spatial_downsample and model.wavelet_patch are for causal video CNNs (Cosmos)")
  elif not config.model.get("causal", True):
    raise ValueError("model.causal=False (a non-causal video CNN) needs model.temporal_downsample")
  cnn.check_wavelet_patch(config.model.get("wavelet_patch", 1), config.model.get("temporal_downsample", ()))
  video_data = bool(config.get("video", {}).get("source", ""))
  strides = tuple(config.model.get("temporal_downsample", ()))
  if video_data and not strides:
    raise ValueError("video.source (video clips) needs a causal video tokenizer: set model.temporal_downsample")
  causal = bool(config.model.get("causal", True))
  if video_data:
    try:
      factor = int(config.model.get("wavelet_patch", 1)) * math.prod(int(t) for t in strides)
      cnn.video_frames(config.video.num_frames, factor, causal)
    except ValueError as e:
      raise ValueError(f"config field video.num_frames={config.video.num_frames}: {e}") from None
    if not causal and config.video.get("image_every", 0):
      raise ValueError(
        "video.image_every trains on images as one-frame clips; a non-causal video tokenizer (model.causal=False)"
        " takes clips of k*s_T frames only: set video.image_every=0"
      )
  if scales and config.model.encoder == "cnn":
    factor = 2 ** (len(tuple(config.model.channel_mult)) - 1)
    what = "the CNN's downsampling"
    if config.model.get("semantic_encoder", ""):  # TokenFlow: the token grid is the semantic ViT's patch grid
      factor, what = int(config.model.semantic_patch_size), "the semantic ViT's patch"
    side = int(config.image_size) // factor
    if int(tuple(scales)[-1]) != side:
      raise ValueError(
        f"config field quantizer.scales={list(scales)} must end at the latent size {side}"
        f" (image_size={config.image_size} over {what} {factor})"
      )


#: ``config.model``: the encoder and decoder (``ENCODERS``; cnn and vit fields), read by ``build_tokenizer``.
CONFIG = ConfigFields(
  "model",
  {
    "encoder": "cnn",  # cnn | vit | vit1d
    "channels": 16,
    "channel_mult": (1, 2, 2, 4),  # len - 1 downsamplings: f8
    "num_res_blocks": 1,
    "attention": False,  # self-attention at the lowest resolution
    "code_dim": 4,  # width of the vectors the quantizer receives (its code_dim)
    "dtype": "float32",  # compute dtype; parameters stay float32
    "z_channels": 0,  # cnn: encoder output width; > 0 adds projections to/from code_dim
    "project_kernel": 1,  # cnn: those projections are 1 (Linear) or 3 (3x3 conv, VAR) wide
    # cnn block kinds: taming (also LlamaGen, IBQ) | maskgit | magvit2 (Open-MAGVIT2) | magvit2_plain (SimVQ)
    # | movq (taming with MoVQ's spatially conditioned decoder norms; Kandinsky's movq) | flex (GSQ's flexTokenizer)
    "cnn_family": "taming",
    "norm_groups": 32,  # cnn GroupNorm groups (32 in published models; fewer for narrow ones)
    # cnn: () an image tokenizer; else a causal video tokenizer with one time stride per downsampling level
    # (len(channel_mult) - 1 of them; Open-MAGVIT2's 4x8x8: (1, 2, 2)): 1 + k*prod frames -> 1 + k latent frames
    "temporal_downsample": (),
    # causal video: the decoder's time strides, listed as temporal_downsample; () mirrors it (VidTok's differ)
    "temporal_upsample": (),
    "time_padding": "zeros",  # causal video: before the first frame, zeros | replicate (copies of it)
    # video: False makes the CNN non-causal (cnn_family vidtok, VidTok's model_3dnoncausal.py): time convs padded
    # on both sides (time_padding: zeros | replicate of the edge frames), k*prod frames -> k latent frames
    "causal": True,
    # causal video, cnn_family vidtok: the decoder doubles time by repeat (v1.0) | linear (v1.1's trilinear)
    "time_upsample": "repeat",
    # causal video: GroupNorm statistics per frame (causal) | clip (Open-MAGVIT2's video tokenizer: not causal)
    "video_norm": "frame",
    # causal video, factorised CNN families (cosmos): the space stride per downsampling level, 2s then 1s
    # (() = 2 each; Cosmos DV4x8x8: (2, 1)), and the 3-D Haar wavelet patch before the CNN (1 = none; Cosmos: 4)
    "spatial_downsample": (),
    "wavelet_patch": 1,
    "input_range": (-1.0, 1.0),  # what the encoder sees; batches are always [-1, 1]
    "variant": "",  # vit / vit1d: big_vision size name, e.g. "B/16"
    "decoder_variant": "",  # "" = same as variant
    "posemb": "learn",  # vit position embedding: learn | sincos2d
    "num_latent_tokens": 0,  # vit1d (TiTok): number of 1-D latent tokens
    # vit1d: train the decoder on random prefixes of the tokens, so that decode(num_tokens=k) works:
    # "" (off) | tail (One-D-Piece) | nested (FlexTok) (vit.TOKEN_DROPS)
    "token_drop": "",
    "vit_family": "vqtok",  # vit block kinds: vqtok | titok (published TiTok) | titok_pixels (its VQ-8k) | bsqvit
    # vit: the encoder's head to code_dim and the decoder's embedding from it: linear | attn (UniTok's AttnProjection)
    "vit_projection": "linear",
    # vit_family vitamin (UniTok): the encoder's MBConv stages under the ViT (widths, blocks per stage; ViTamin-L:
    # (160, 320), (2, 4)) and the decoder's upsampling ones after it ((320, 160), (4, 2)); patch_size 2**(len + 2)
    "conv_widths": (),
    "conv_depths": (),
    "decoder_conv_widths": (),
    "decoder_conv_depths": (),
    # vit1d: > 0 makes the decoder TiTok's: logits over this many codes of a MaskGIT VQGAN,
    # soft codes decoded by that VQGAN's CNN decoder (proxy_decoder sizes).
    "proxy_codebook_size": 0,
    "proxy_code_dim": 256,
    "proxy_decoder": {**cnn.TAMING_F16, "norm_groups": 32},  # MaskGIT's VQGAN decoder
    # vit: explicit sizes; 0 = from variant
    "width": 0,
    "depth": 0,
    "mlp_dim": 0,
    "num_heads": 0,
    "patch_size": 0,
    # vit: the decoder's own sizes where they differ (0 = as the encoder)
    "decoder_width": 0,
    "decoder_depth": 0,
    "decoder_mlp_dim": 0,
    "decoder_num_heads": 0,
    # vit: > 0 puts a Linear of this width and tanh before the decoder's pixel head (BSQ-ViT: 3072)
    "pixel_head_hidden": 0,
    # > 0: a bias-free Linear from the quantised latents to a feature teacher's width, for the
    # feature-alignment losses (VA-VAE's ``linear_proj`` with reverse_proj; DINOv2 ViT-L: 1024)
    "feature_dim": 0,
    # > 0: the feature head is VQ-KD's task layer instead (BEiT v2 modeling_vqkd.py decode_task_layer:
    # Linear to this width, tanh, Linear to feature_dim, with biases), for loss.feature_rec_weight
    "feature_head_hidden": 0,
    # > 0 (with feature_head_hidden): VQ-KD's ViT decoder of this many blocks, at the task layer's
    # width, before it (vit.FeatureDecoder; vqkd_encoder_base_decoder_1x768x12: 1 block, 12 heads)
    "feature_head_blocks": 0,
    "feature_head_num_heads": 12,
    # cnn: k > 0 makes the encoder FQGAN's: the trunk, then k heads (transformer adapter of
    # adapter_depth blocks and adapter_num_heads heads, conv_out to z_channels, a projection to
    # code_dim / k), concatenated for quantizer.type=factorized (num_groups k) (models/factorized.py)
    "factorized_heads": 0,
    "adapter_depth": 6,
    "adapter_num_heads": 8,
    # FQGAN's semantic feature-prediction heads, one per sub-code from the second on: their widths
    # (Dual: (1024,), CLIP ViT-L/14; Triple: (384, 768)) and blocks
    "feature_head_dims": (),
    "feature_head_depth": 3,
    # cnn: the pixel decoder's own width and blocks per level where they differ from the encoder's (0 = the
    # same; TokenFlow's enhanced decoder: 256 and 4)
    "decoder_channels": 0,
    "decoder_num_res_blocks": 0,
    # cnn: "clip" or "siglip" makes the tokenizer TokenFlow's (models/dual.py): a pretrained ViT of this family
    # beside the CNN encoder, each projected to its part of a quantizer.type=dual codebook (inside multiscale),
    # and a semantic decoder (a BEiT ViT) beside the CNN decoder
    "semantic_encoder": "",
    "semantic_width": 768,  # the semantic ViT (CLIP ViT-B/16) and its decoder's width
    "semantic_depth": 12,
    "semantic_mlp_dim": 3072,
    "semantic_num_heads": 12,
    "semantic_patch_size": 16,  # must equal the CNN's downsampling
    "semantic_pos_grid": 14,  # both ViTs' learned position grid (trained at 224 px)
    "semantic_interpolate_offset": 0.1,  # the grid's resize to other sizes, as interpolate_pos_encoding
    "semantic_layer": 0,  # 0: the ViT's output features; k: after its first k blocks (TokenFlow-XL: 26 of 27)
    "semantic_decoder_depth": 3,
    "semantic_decoder_mlp_dim": 3072,
    "semantic_decoder_num_heads": 12,
    "semantic_feature_dim": 512,  # the semantic decoder's output (the teacher features it reconstructs)
  },
  choices={
    "dtype": tuple(DTYPES),
    "encoder": ENCODERS,
    "cnn_family": tuple(cnn.FAMILIES),
    "time_padding": cnn.TIME_PADDINGS,
    "time_upsample": cnn.TIME_UPSAMPLES,
    "video_norm": cnn.VIDEO_NORMS,
    "posemb": vit.POSEMBS,
    "vit_family": tuple(vit.FAMILIES),
    "vit_projection": vit.PROJECTIONS,
    "token_drop": tuple(vit.TOKEN_DROPS),
    "semantic_encoder": SEMANTIC_ENCODERS,
  },
  positive=(
    "norm_groups",
    "adapter_depth",
    "adapter_num_heads",
    "feature_head_depth",
    "feature_head_num_heads",
    "semantic_width",
    "semantic_depth",
    "semantic_mlp_dim",
    "semantic_num_heads",
    "semantic_patch_size",
    "semantic_pos_grid",
    "semantic_decoder_depth",
    "semantic_decoder_mlp_dim",
    "semantic_decoder_num_heads",
    "semantic_feature_dim",
  ),
  non_negative=(
    "pixel_head_hidden",
    "feature_dim",
    "feature_head_hidden",
    "feature_head_blocks",
    "factorized_heads",
    "decoder_channels",
    "decoder_num_res_blocks",
    "semantic_interpolate_offset",
    "semantic_layer",
  ),
  check=_check_config,
)


class Tokenizer(nnx.Module):
  """Discrete image tokenizer.

  Args:
    encoder: ``cnn.Encoder`` or ``vit.ViTEncoder`` (has ``latent_shape``).
    quantizer: any ``Quantizer``.
    decoder: the matching decoder; takes ``z_channels``-wide latents.
    image_size: the training image size (defines ``token_shape``).
    z_channels: encoder output / decoder input width.
    project: add Linear maps from ``z_channels`` to ``quantizer.code_dim`` and
      back (taming's 1x1 quant_conv / post_quant_conv); None: only when the
      widths differ.
    input_range: the value range the encoder was trained on, (-1, 1) or
      (0, 1) (MaskGIT). Images are always passed in [-1, 1]; they are mapped
      to this range before the encoder, and decoder outputs mapped back.
    dtype: compute dtype of the projections (parameters stay float32).
    project_kernel: 1: the projections are Linear maps (1x1 convolutions);
      3: 3x3 convolutions (VAR), CNN only.
    feature_dim: > 0 adds ``feature_proj``, a bias-free Linear from the
      quantised latents to a feature teacher's width (``project_features``).
    feature_head_hidden: > 0 (with ``feature_dim``): ``feature_proj`` is
      VQ-KD's task layer instead, Linear to this width, tanh, Linear.
    feature_head_blocks: > 0 (with ``feature_head_hidden``): VQ-KD's ViT
      decoder (``vit.FeatureDecoder``) of this many blocks at the task layer's
      width before it, with ``feature_head_num_heads`` attention heads.
    token_drop: 1-D tokenizers: a name in ``vit.TOKEN_DROPS``; in training
      the decoder sees a random prefix of the tokens (its draws come from the
      ``dropout`` stream of ``rngs``, else ``default``).
    rngs: parameter initialisation.
  """

  def __init__(
    self,
    encoder: nnx.Module,
    quantizer: Quantizer,
    decoder: nnx.Module,
    *,
    image_size: int,
    z_channels: int,
    project: bool | None = None,
    input_range: tuple[float, float] = (-1.0, 1.0),
    dtype: Any = jnp.float32,
    project_kernel: int = 1,
    feature_dim: int = 0,
    feature_head_hidden: int = 0,
    feature_head_blocks: int = 0,
    feature_head_num_heads: int = 12,
    token_drop: str = "",
    rngs: nnx.Rngs,
  ):
    self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
    self.image_size = int(image_size)
    self.dtype = dtype
    self.input_range = check_input_range(input_range)
    code_dim = quantizer.code_dim
    if project is None:
      project = z_channels != code_dim
    if not project and z_channels != code_dim:
      raise ValueError(
        f"z_channels={z_channels} differs from the quantizer's code_dim={code_dim}: a projection is needed"
      )
    if project_kernel not in (1, 3) or (project_kernel != 1 and not isinstance(encoder, cnn.Encoder)):
      raise ValueError(f"project_kernel must be 1, or 3 with the CNN encoder; got {project_kernel!r}")
    if project and project_kernel == 1:
      self.project_in = nnx.Linear(z_channels, code_dim, rngs=rngs)
      self.project_out = nnx.Linear(code_dim, z_channels, dtype=dtype, rngs=rngs)
    elif project:
      # VAR's quant_conv / post_quant_conv are 3x3 convolutions (models/vqvae.py).
      k = (project_kernel, project_kernel)
      self.project_in = nnx.Conv(z_channels, code_dim, k, padding="SAME", rngs=rngs)
      self.project_out = nnx.Conv(code_dim, z_channels, k, padding="SAME", dtype=dtype, rngs=rngs)
    else:
      self.project_in = self.project_out = None
    # VA-VAE (hustvl/LightningDiT vavae/ldm/models/autoencoder.py, reverse_proj): a 1x1 conv without bias.
    if feature_dim > 0 and feature_head_hidden > 0:
      # VQ-KD (BEiT v2 modeling_vqkd.py decode_task_layer): Linear, Tanh, Linear; after its decoder.
      decoder_blocks = []
      if feature_head_blocks > 0:
        n = math.prod(encoder.latent_shape(self.image_size, self.image_size))
        kw = dict(num_tokens=n, depth=feature_head_blocks, num_heads=feature_head_num_heads, rngs=rngs)
        decoder_blocks = [vit.FeatureDecoder(code_dim, feature_head_hidden, **kw)]
      self.feature_proj = nnx.Sequential(
        *decoder_blocks,
        nnx.Linear(feature_head_hidden if decoder_blocks else code_dim, feature_head_hidden, rngs=rngs),
        jnp.tanh,
        nnx.Linear(feature_head_hidden, feature_dim, rngs=rngs),
      )
    elif feature_dim > 0:
      self.feature_proj = nnx.Linear(code_dim, feature_dim, use_bias=False, rngs=rngs)
    else:
      self.feature_proj = None
    self.in_channels = encoder.in_channels
    self.token_drop = token_drop
    self._drop = vit.check_token_drop(token_drop, getattr(encoder, "num_latent_tokens", 0))
    self.drop_rng = rngs["dropout"].fork() if self._drop is not None else nnx.data(None)
    scales = quantizer.scale_schedule
    if scales is not None and self.token_shape != (scales[-1], scales[-1]):
      # Multi-scale quantizers: the finest scale is the latent itself.
      raise ValueError(
        f"quantizer scale schedule {list(scales)} ends at {scales[-1]}x{scales[-1]}, but the encoder's latent"
        f" at image_size={self.image_size} is {'x'.join(map(str, self.token_shape))}"
      )

  @property
  def token_shape(self) -> tuple[int, ...]:
    """Tokens per image, e.g. ``(16, 16)`` (2-D grid) or ``(128,)`` (1-D)."""
    return tuple(self.encoder.latent_shape(self.image_size, self.image_size))

  @property
  def is_video(self) -> bool:
    """Whether it is a video tokenizer: (B, T, H, W, C) in, (B, T', h, w) ids out (causal: images too, as T = 1)."""
    return bool(getattr(self.encoder, "video", False))

  @property
  def causal(self) -> bool:
    """Whether a video tokenizer's frame rule is the causal one (1 + k*s_T -> 1 + k), not k*s_T -> k."""
    return self.is_video and bool(self.encoder.causal)

  @property
  def temporal_factor(self) -> int:
    """s_T: 1 + k*s_T frames make 1 + k latent frames (non-causal: k*s_T make k; 1 for image tokenizers)."""
    return int(getattr(self.encoder, "time_downsample_factor", 1)) if self.is_video else 1

  def latent_frames(self, num_frames: int) -> int:
    """Latent frames of a video of ``num_frames``; ValueError naming the nearest valid counts otherwise."""
    if not self.is_video:
      raise ValueError("latent_frames is for video tokenizers (model.temporal_downsample)")
    return self.encoder.latent_frames(num_frames)

  @property
  def any_grid(self) -> bool:
    """Whether it encodes images of any size (a multiple of its downsampling) and decodes any token grid (CNNs)."""
    return isinstance(self.encoder, cnn.Encoder)

  @property
  def num_tokens(self) -> int:
    """Number of tokens per image at ``image_size``."""
    return math.prod(self.token_shape)

  def expected_image_shape(self) -> str:
    """Human-readable accepted input shape, for error messages."""
    c, s = self.in_channels, self.image_size
    if self.is_video:
      f, t = self.encoder.downsample_factor, self.temporal_factor
      if not self.causal:
        return f"(B, T, H, W, {c}) with T = k*{t} and H, W multiples of {f}"
      return f"(B, T, H, W, {c}) with T = 1 + k*{t} and H, W multiples of {f}, or an image (B, H, W, {c})"
    if self.any_grid:
      f = self.encoder.downsample_factor
      return f"(B, H, W, {c}) with H, W multiples of {f}, e.g. (B, {s}, {s}, {c})"
    return f"(B, {s}, {s}, {c})"

  def _check_images(self, images: jax.Array) -> None:
    c = self.in_channels
    if self.is_video and images.ndim == 5 and images.shape[-1] == c:
      self.encoder.latent_frames(images.shape[1])  # the frame rule's own message
    if self.is_video and not self.causal and images.ndim == 4:
      raise ValueError(
        f"a non-causal video tokenizer takes clips of k*{self.temporal_factor} frames, (B, T, H, W, {c}); an image"
        f" {tuple(images.shape)} is one frame: give it clips"
      )
    try:
      if images.ndim not in ((4, 5) if self.is_video else (4,)) or images.shape[-1] != c:
        raise ValueError(f"got {tuple(images.shape)}")
      self.encoder.latent_shape(images.shape[-3], images.shape[-2])
    except ValueError as e:
      raise ValueError(
        f"tokenizer expects images of shape {self.expected_image_shape()}; got {tuple(images.shape)} ({e})"
      ) from None

  def _to_model_range(self, images: jax.Array) -> jax.Array:
    lo, hi = self.input_range
    if (lo, hi) == (-1.0, 1.0):
      return images
    return lo + (images + 1.0) * ((hi - lo) / 2.0)

  def _from_model_range(self, images: jax.Array) -> jax.Array:
    lo, hi = self.input_range
    if (lo, hi) == (-1.0, 1.0):
      return images
    return (images - lo) * (2.0 / (hi - lo)) - 1.0

  def _latents(self, images: jax.Array, check: bool = True) -> jax.Array:
    if check:
      self._check_images(images)
    x = self._to_model_range(images)
    if self.is_video and x.ndim == 4:  # an image is a one-frame video
      z = self.encoder(x[:, None])[:, 0].astype(jnp.float32)
    else:
      z = self.encoder(x).astype(jnp.float32)
    if self.project_in is not None:
      z = self.project_in(z)
    return z

  def _decoder_input(self, z_q: jax.Array) -> jax.Array:
    z_q = z_q.astype(jnp.float32)
    if self.project_out is not None:
      z_q = self.project_out(z_q)
    return z_q.astype(self.dtype)

  def _reconstruct(self, z_q: jax.Array, keep: jax.Array | None = None) -> jax.Array:
    h = self._decoder_input(z_q)
    if getattr(self.decoder, "reads_codes", False):  # MoVQ: the norms read z_q itself, before project_out
      out = self.decoder(h, z_q.astype(self.dtype))
    elif self.is_video and h.ndim == 4:  # one latent frame decodes to an image
      out = self.decoder(h[:, None])[:, 0]
    else:
      out = self.decoder(h) if keep is None else self.decoder(h, keep)
    return self._from_model_range(out.astype(jnp.float32))

  def quantize(self, images: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantised latents ``z_q`` of ``images`` and the quantizer output (the first half of ``__call__``)."""
    return self.quantizer(self._latents(images), train=train)

  def reconstruct(self, z_q: jax.Array, *, keep: jax.Array | None = None) -> jax.Array:
    """Images (B, H, W, 3) float32 in [-1, 1] from quantised latents (the second half of ``__call__``).

    ``keep``: 1-D tokenizers: None, or (B,) int, how many leading tokens of each
    image the decoder sees (``sample_keep``); 1-D ``z_q`` may also be a prefix.
    """
    return self._reconstruct(z_q, keep)

  def sample_keep(self, batch: int) -> jax.Array | None:
    """(batch,) int32 prefix lengths drawn as ``token_drop`` says (advances its RNG); None without one."""
    if self._drop is None:
      return None
    return vit.sample_keep(self._drop, self.drop_rng(), batch, self.encoder.num_latent_tokens)

  def project_features(self, z_q: jax.Array) -> jax.Array:
    """Quantised latents (..., code_dim) mapped to the feature teacher's width (``model.feature_dim``), float32.

    Without that projection, a decoder that predicts the teacher's features (TokenFlow's semantic
    decoder, ``model.semantic_encoder``) gives them: (B, h, w, ``model.semantic_feature_dim``).
    """
    if self.feature_proj is None and hasattr(self.decoder, "predict_features"):
      return self.decoder.predict_features(z_q)
    if self.feature_proj is None:
      raise ValueError("project_features needs model.feature_dim > 0 (a projection to the teacher's features)")
    return self.feature_proj(z_q.astype(jnp.float32))

  def predict_features(self, z_q: jax.Array) -> list[jax.Array]:
    """FQGAN's feature heads on the semantic sub-codes of quantised latents: (B, 1 + h*w, width) each, in order."""
    heads = getattr(self.encoder, "feature_heads", None)
    if not heads:
      raise ValueError("predict_features needs model.feature_head_dims (feature heads on a factorised encoder)")
    return self.encoder.predict_features(z_q)

  @property
  def has_proxy_codes(self) -> bool:
    """Whether the decoder predicts logits over a proxy codebook (TiTok's ``ProxyCodeDecoder``)."""
    return isinstance(self.decoder, ProxyCodeDecoder)

  def proxy_logits(self, z_q: jax.Array, *, keep: jax.Array | None = None) -> jax.Array:
    """(B, h, w, proxy_codebook_size) float32 logits of a proxy-code decoder (TiTok's first-stage output)."""
    if not self.has_proxy_codes:
      raise ValueError("proxy_logits needs a decoder that predicts proxy codes (model.proxy_codebook_size > 0)")
    return self.decoder.logits(self._decoder_input(z_q), keep)

  def __call__(self, images: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Reconstructs ``images``.

    Args:
      images: (B, H, W, 3) float in [-1, 1].
      train: training mode for the quantizer (codebook updates, dropout) and
        the token drop.

    Returns:
      ``(reconstruction, quantizer_output)``; the reconstruction is float32
      (B, H, W, 3).
    """
    z_q, out = self.quantize(images, train=train)
    return self._reconstruct(z_q, self.sample_keep(images.shape[0]) if train else None), out

  def encode(self, images: jax.Array, *, chunk: int | None = None) -> jax.Array:
    """Token indices of ``images`` (eval mode): int32 ``(B,) + token_shape [+ (depth,)]``.

    Video tokenizers: (B, T, H, W, C) videos give ``(B, T', h, w)`` ids with
    T' = ``latent_frames(T)``. ``chunk``: encode ``chunk`` latent frames at a
    time (the first chunk's 1 + (chunk-1)*s_T frames, then chunk*s_T frames
    each), the causal convs carrying their state from chunk to chunk, so that
    memory does not grow with the length; the ids are those of the whole encode.
    """
    if chunk is None:
      _, out = self.quantizer(self._latents(images), train=False)
      return out.indices
    self._check_images(images)
    spans = self._chunks(images, chunk)
    stream = cnn.stream(nnx.merge(*nnx.split(self)))
    s = self.temporal_factor
    ids = []
    for a, b in spans:  # latent frames [a, b) come from frames [1 + (a-1)*s, 1 + (b-1)*s), the first from 0
      frames = images[:, 0 if a == 0 else 1 + (a - 1) * s : 1 + (b - 1) * s]
      ids.append(stream.quantizer(stream._latents(frames, check=False), train=False)[1].indices)
    return jnp.concatenate(ids, axis=1)

  def _chunks(self, x: jax.Array, chunk: int, latent: bool = False) -> list[tuple[int, int]]:
    """``[a, b)`` spans of ``chunk`` latent frames covering those of ``x`` (a video, or ids if ``latent``)."""
    if not self.is_video or x.ndim != (4 if latent else 5):
      raise ValueError(
        f"chunk is for videos of causal video tokenizers (model.temporal_downsample); got shape {tuple(x.shape)}"
      )
    if not self.causal:
      # VidTok's own inference cuts long videos into independent k*s_T-frame clips; nothing carries over.
      raise ValueError(
        "chunk is for causal video tokenizers: a non-causal one (model.causal=False) sees the whole clip in every"
        " time conv; encode and decode whole clips"
      )
    if self.encoder.video_norm != "frame":
      raise ValueError(
        f"chunk needs per-frame norms (model.video_norm='frame'); {self.encoder.video_norm!r} norms see the whole clip"
      )
    if int(chunk) != chunk or chunk < 1:
      raise ValueError(f"chunk must be a positive number of latent frames; got {chunk!r}")
    n = x.shape[1] if latent else self.latent_frames(x.shape[1])
    return [(a, min(a + int(chunk), n)) for a in range(0, n, int(chunk))]

  @property
  def one_d(self) -> bool:
    """Whether its tokens are a 1-D sequence whose prefixes decode (TiTok's latent tokens)."""
    return bool(getattr(self.encoder, "num_latent_tokens", 0))

  def _prefix(self, indices: jax.Array, num_tokens: int | None) -> jax.Array:
    """The first ``num_tokens`` (or all given) of 1-D ``indices``; ValueError past ``num_tokens``."""
    total = self.num_tokens
    given = indices.shape[1] if indices.ndim >= 2 else 0
    k = given if num_tokens is None else int(num_tokens)
    if not 1 <= k <= min(given or total, total):
      raise ValueError(
        f"decode: this tokenizer has {total} tokens per image; cannot decode from {k}"
        + (f" (given {given})" if given and given < k <= total else "")
      )
    if k < total and not self.token_drop:
      _warn_untrained_prefix(k, total)
    return indices[:, :k]

  def decode(
    self, indices: jax.Array, *, num_scales: int | None = None, num_tokens: int | None = None, chunk: int | None = None
  ) -> jax.Array:
    """Images (B, H, W, 3) float32 from token indices as returned by ``encode``.

    Args:
      indices: token indices, as ``encode`` returns them; 1-D tokenizers also
        take the first k of them, (B, k) with k <= ``num_tokens``.
      num_scales: multi-scale quantizers only: decode from the first
        ``num_scales`` scales (a coarse preview); None: all.
      num_tokens: 1-D tokenizers only: decode from the first ``num_tokens``
        tokens; None: all given. A tokenizer trained without ``token_drop``
        decodes a prefix poorly (it warns once).
      chunk: video tokenizers only: decode ``chunk`` latent frames at a time,
        the causal convs carrying their state (as ``encode``); the same video.

    Raises:
      ValueError: wrong rank / token layout, more tokens than the tokenizer
        has, or indices outside the codebook.
    """
    indices = jnp.asarray(indices)
    if num_tokens is not None and not self.one_d:
      raise ValueError(f"decode: num_tokens is for 1-D tokenizers; this one's tokens are {self.token_shape}")
    depth = self.quantizer.index_depth
    tail = () if depth is None else (depth,)
    if self.one_d and num_scales is None:
      if indices.ndim != 2 + len(tail) or indices.shape[2:] != tail:
        want = ", ".join(map(str, (self.num_tokens,) + tail))
        raise ValueError(f"decode expects indices of shape (B, {want}) or a prefix of them; got {tuple(indices.shape)}")
      return self._reconstruct(self.quantizer.indices_to_codes(self._prefix(indices, num_tokens)))
    n = len(self.token_shape)
    per_image = self.quantizer.index_shape((1,) + self.token_shape + (self.quantizer.code_dim,))[1:]
    if self.any_grid and per_image == self.token_shape + tail:
      # A CNN decodes any grid; a video tokenizer also (B, T', h, w) ids (a non-causal one only those).
      ranks = ((1 + n, 2 + n) if self.causal else (2 + n,)) if self.is_video else (1 + n,)
      ok = indices.ndim - len(tail) in ranks and indices.shape[indices.ndim - len(tail) :] == tail
    else:
      ok = indices.shape[1:] == per_image
    if not ok:
      frames = "T', " if self.is_video and not self.causal else ""  # a non-causal tokenizer decodes clips only
      raise ValueError(
        f"decode expects indices of shape (B, {frames}{', '.join(map(str, per_image))}); got {tuple(indices.shape)}"
      )
    if num_scales is not None:
      if self.quantizer.scale_schedule is None:
        name = type(self.quantizer).__name__
        raise ValueError(f"decode: num_scales is for multi-scale quantizers; this one is {name}")
      return self._reconstruct(self.quantizer.indices_to_codes(indices, num_scales=num_scales))
    if chunk is not None:
      stream = cnn.stream(nnx.merge(*nnx.split(self)))
      parts = [
        stream._reconstruct(stream.quantizer.indices_to_codes(indices[:, a:b]))
        for a, b in self._chunks(indices[..., 0] if tail else indices, chunk, latent=True)
      ]
      return jnp.concatenate(parts, axis=1)
    return self._reconstruct(self.quantizer.indices_to_codes(indices))


_warned_prefix = False


def _warn_untrained_prefix(k: int, total: int) -> None:
  """Once per process: a prefix decoded by a tokenizer trained on all its tokens."""
  global _warned_prefix
  if not _warned_prefix:
    _warned_prefix = True
    warnings.warn(
      f"decoding from the first {k} of {total} tokens with a tokenizer trained without model.token_drop:"
      " it was never trained on prefixes and decodes them poorly (train with model.token_drop='tail')",
      stacklevel=4,
    )


class ProxyCodeDecoder(nnx.Module):
  """TiTok's decoder: ViT logits over a MaskGIT VQGAN's codes, then that VQGAN's CNN decoder.

  The ViT predicts, at each patch position, logits over the ``num_codes``
  codes of a (frozen, imported) MaskGIT VQGAN; the softmax-weighted mean of
  those codes (soft codes, not the argmax) goes through the VQGAN's decoder,
  as the published TiTok does (bytedance/1d-tokenizer modeling/titok.py,
  ``TiTok.decode``). ``logits`` is the first-stage training target's input.

  Args:
    vit: a ``vit.ViTDecoder`` built with ``out_codes=num_codes``.
    pixel: the VQGAN's ``cnn.Decoder`` (MaskGIT family), taking ``code_dim`` channels.
    num_codes / code_dim: the VQGAN codebook's shape.
    dtype: compute dtype of the pixel decoder's input.
    rngs: parameter initialisation.
  """

  def __init__(
    self, vit_decoder: nnx.Module, pixel: nnx.Module, *, num_codes: int, code_dim: int, dtype: Any, rngs: nnx.Rngs
  ):
    self.vit, self.pixel, self.dtype = vit_decoder, pixel, dtype
    # MaskGIT's codebook init (maskgit_vqgan.py VectorQuantizer): uniform in +-1/num_codes.
    init = nnx.initializers.uniform(scale=2.0 / num_codes)
    self.codebook = nnx.Param(init(rngs.params(), (num_codes, code_dim), jnp.float32) - 1.0 / num_codes)

  last_layer_path = ("pixel", "conv_out", "kernel")

  def logits(self, z: jax.Array, keep: jax.Array | None = None) -> jax.Array:
    """(B, h, w, num_codes) float32 logits over the VQGAN's codes (``keep``: as ``vit.ViTDecoder``)."""
    return self.vit(z, keep).astype(jnp.float32)

  def __call__(self, z: jax.Array, keep: jax.Array | None = None) -> jax.Array:
    probs = jax.nn.softmax(self.logits(z, keep), axis=-1)
    codes = jnp.einsum("bhwn,nd->bhwd", probs, self.codebook[...], precision=jax.lax.Precision.HIGHEST)
    return self.pixel(codes.astype(self.dtype))


def last_layer_path(tokenizer: Tokenizer) -> tuple[Any, ...]:
  """Path of the decoder's output kernel inside ``nnx.state(tokenizer, nnx.Param)``.

  The trainer uses it for the taming-style adaptive GAN weight (the ratio of
  reconstruction and GAN gradient norms at this layer).
  """
  return ("decoder",) + tuple(tokenizer.decoder.last_layer_path)


def encoder_last_layer_path(tokenizer: Tokenizer) -> tuple[Any, ...]:
  """Path of the encoder's output kernel in ``nnx.state(tokenizer, nnx.Param)`` (CNN ``conv_out``, ViT ``head``).

  VA-VAE balances its vision-foundation loss against the reconstruction at
  this layer (``enc_last_layer = self.encoder.conv_out.weight``).
  """
  if isinstance(getattr(tokenizer.encoder, "head", None), vit.AttnProjection):
    return ("encoder", "head", "mlp", "w2", "kernel")  # UniTok's AttnProjection ends in its GeGLU's W2
  return ("encoder", "conv_out" if isinstance(tokenizer.encoder, cnn.Encoder) else "head", "kernel")


def get_last_layer(tokenizer: Tokenizer) -> jax.Array:
  """The decoder's output kernel (see ``last_layer_path``)."""
  node: Any = tokenizer
  for key in last_layer_path(tokenizer):
    node = getattr(node, key)
  return node[...]


def _vit_kwargs(m: ml_collections.ConfigDict, variant_key: str, prefix: str = "") -> dict[str, Any]:
  variant = m.get(variant_key, None) or m.get("variant", None)
  kw = vit.decode_variant(variant) if variant else {}
  for key in ("width", "depth", "mlp_dim", "num_heads", "patch_size"):
    if m.get(key, None):  # explicit fields override the variant
      kw[key] = int(m[key])
    if prefix and m.get(prefix + key, None):  # and decoder_* fields the shared ones, for the decoder
      kw[key] = int(m[prefix + key])
  missing = [k for k in ("width", "depth", "mlp_dim", "num_heads", "patch_size") if k not in kw]
  if missing:
    raise ValueError(f"ViT model config needs model.variant (e.g. 'B/16') or the fields {missing}")
  return kw


def _proxy_code_decoder(
  m: ml_collections.ConfigDict, z: int, num_codes: int, dec_kw: dict[str, Any], common: dict[str, Any]
) -> ProxyCodeDecoder:
  """TiTok's ViT -> MaskGIT VQGAN decoder (``model.proxy_*`` fields)."""
  if m.encoder != "vit1d":
    raise ValueError("model.proxy_codebook_size > 0 needs model.encoder='vit1d' (TiTok)")
  pd = m.proxy_decoder
  mult = cnn.check_channel_mult(pd.channel_mult)
  vit_dec = vit.ViTDecoder(z, **dec_kw, **common, out_codes=num_codes, token_drop=m.get("token_drop", ""))
  f = 2 ** (len(mult) - 1)
  if vit_dec.patch_size != f:
    raise ValueError(
      f"the ViT decoder's patch_size {vit_dec.patch_size} must equal the proxy decoder's upsampling factor {f}"
      f" (model.proxy_decoder.channel_mult={mult})"
    )
  code_dim = int(m.proxy_code_dim)
  pixel = cnn.Decoder(
    code_dim,
    channels=int(pd.channels),
    channel_mult=mult,
    num_res_blocks=int(pd.num_res_blocks),
    attention=False,
    family="maskgit",
    norm_groups=int(pd.get("norm_groups", 32)),
    dtype=common["dtype"],
    rngs=common["rngs"],
  )
  return ProxyCodeDecoder(
    vit_dec, pixel, num_codes=num_codes, code_dim=code_dim, dtype=common["dtype"], rngs=common["rngs"]
  )


def _decoder_kw(m: ml_collections.ConfigDict, kw: dict[str, Any]) -> dict[str, Any]:
  """The CNN decoder's arguments: the encoder's, with ``model.decoder_channels`` / ``decoder_num_res_blocks``."""
  out = dict(kw)
  if int(m.get("decoder_channels", 0)):
    out["channels"] = int(m.decoder_channels)
  if int(m.get("decoder_num_res_blocks", 0)):
    out["num_res_blocks"] = int(m.decoder_num_res_blocks)
  return out


def _dual(
  m: ml_collections.ConfigDict,
  quantizer: Quantizer,
  z: int,
  code_dim: int,
  kw: dict[str, Any],
  image_size: int,
  rngs: nnx.Rngs,
) -> tuple[dual.DualEncoder, dual.DualDecoder]:
  """TokenFlow's semantic ViT + CNN encoder and semantic ViT + CNN decoder (``model.semantic_*`` fields)."""
  inner = getattr(quantizer, "quantizer", quantizer)  # multiscale wraps the dual codebook
  sd = getattr(inner, "semantic_dim", None)
  if sd is None:
    raise ValueError(
      "model.semantic_encoder needs quantizer.type='dual' (or 'multiscale' over it): one shared index for the"
      f" semantic and pixel codes; got {type(quantizer).__name__}"
    )
  width, grid, offset = int(m.semantic_width), int(m.semantic_pos_grid), float(m.semantic_interpolate_offset)
  vit_kw = dict(
    width=width,
    depth=int(m.semantic_depth),
    mlp_dim=int(m.semantic_mlp_dim),
    num_heads=int(m.semantic_num_heads),
    patch_size=int(m.semantic_patch_size),
    pos_grid=grid,
    rngs=rngs,
  )
  if m.semantic_encoder == "siglip":
    semantic = siglip.SigLIP(**vit_kw)
  else:
    semantic = dinov2.DINOv2(**vit_kw, interpolate_offset=offset, family=m.semantic_encoder)
  layer = int(m.get("semantic_layer", 0))
  if layer > int(m.semantic_depth) or (layer and m.semantic_encoder != "siglip"):
    raise ValueError(
      f"model.semantic_layer={layer}: reading an inner block is for semantic_encoder='siglip', at most"
      f" semantic_depth={m.semantic_depth}"
    )
  encoder = dual.DualEncoder(
    semantic,
    cnn.Encoder(z, rngs=rngs, **kw),
    family=m.semantic_encoder,
    layer=layer,
    semantic_dim=sd,
    pixel_dim=code_dim - sd,
    z_channels=z,
    rngs=rngs,
  )
  semantic_decoder = dinov2.DINOv2(
    width=width,
    depth=int(m.semantic_decoder_depth),
    mlp_dim=int(m.semantic_decoder_mlp_dim),
    num_heads=int(m.semantic_decoder_num_heads),
    patch_size=1,
    pos_grid=grid,
    interpolate_offset=offset,
    family="beit",
    in_channels=sd,
    rngs=rngs,
  )
  decoder = dual.DualDecoder(
    semantic_decoder,
    cnn.Decoder(z, code_channels=code_dim, rngs=rngs, **_decoder_kw(m, kw)),
    semantic_dim=sd,
    pixel_dim=code_dim - sd,
    z_channels=z,
    feature_dim=int(m.semantic_feature_dim),
    # The CNN decodes the semantic grid times its upsampling; the image is resized back where that differs.
    output_size=image_size
    if image_size != encoder.latent_shape(image_size, image_size)[0] * encoder.downsample_factor
    else 0,
    dtype=kw["dtype"],
    rngs=rngs,
  )
  return encoder, decoder


def build_tokenizer(config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> Tokenizer:
  """Builds the tokenizer described by ``config.model`` and ``config.quantizer``.

  Model fields (see configs/*.py): ``encoder`` in {cnn, vit, vit1d},
  ``code_dim`` (the quantizer's vector width), ``dtype``; cnn: ``channels``,
  ``channel_mult``, ``num_res_blocks``, ``attention``, ``cnn_family``, and
  ``z_channels`` (> 0: Linear projections to and from ``code_dim``);
  ``input_range``;
  vit/vit1d: ``variant`` (e.g. "B/8") and optional ``decoder_variant``, or
  ``width``/``depth``/``mlp_dim``/``num_heads``/``patch_size``; ``posemb``;
  ``pixel_head_hidden`` (> 0: a tanh layer of that width before the pixel head);
  vit1d: ``num_latent_tokens``; ``vit_family`` (vqtok | titok); ``proxy_codebook_size``
  (> 0: TiTok's decoder, logits over a MaskGIT VQGAN's codes decoded by that
  VQGAN's CNN decoder), ``proxy_code_dim``, ``proxy_decoder`` (its ``channels``,
  ``channel_mult``, ``num_res_blocks``, ``norm_groups``).

  Args:
    config: the run config (``image_size``, ``model``, ``quantizer``).
    rngs: parameter initialisation.

  Returns:
    An initialised ``Tokenizer``.
  """
  with files.fast_tracing():  # built under nnx.eval_shape or a jitted init: see files.fast_tracing
    return _build_tokenizer(config, rngs=rngs)


def _build_tokenizer(config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> Tokenizer:
  """``build_tokenizer``'s body."""
  m = config.model
  image_size = int(config.image_size)
  if m.dtype not in DTYPES:
    raise ValueError(f"model.dtype={m.dtype!r} is not one of {sorted(DTYPES)}")
  dtype = DTYPES[m.dtype]
  code_dim = int(m.code_dim)
  kind = m.encoder
  if kind not in ENCODERS:
    raise ValueError(f"model.encoder={kind!r} is not one of {ENCODERS}")
  # First, so that a bad quantizer spec fails before the big modules are built.
  quantizer = build_quantizer(config.quantizer, code_dim=code_dim, rngs=rngs)
  if kind == "cnn":
    z = int(m.get("z_channels", 0) or code_dim)
    project = int(m.get("z_channels", 0)) > 0
    mult = cnn.check_channel_mult(m.channel_mult)
    f = int(m.get("wavelet_patch", 1)) * 2 ** (len(mult) - 1 - list(m.get("spatial_downsample", ())).count(1))
    if image_size % f:  # checked before any parameter is initialised
      raise ValueError(
        f"image_size={image_size} must be a multiple of the CNN downsampling factor {f} (model.channel_mult={mult})"
      )
    kw = dict(
      channels=int(m.channels),
      channel_mult=mult,
      num_res_blocks=int(m.num_res_blocks),
      attention=bool(m.attention),
      family=m.get("cnn_family", "taming"),
      norm_groups=int(m.get("norm_groups", 32)),
      temporal_downsample=tuple(m.get("temporal_downsample", ())),
      time_padding=m.get("time_padding", "zeros"),
      causal=bool(m.get("causal", True)),
      video_norm=m.get("video_norm", "frame"),
      spatial_downsample=tuple(m.get("spatial_downsample", ())),
      wavelet_patch=int(m.get("wavelet_patch", 1)),
      dtype=dtype,
    )
    heads = int(m.get("factorized_heads", 0))
    if heads:
      if not project:
        raise ValueError("model.factorized_heads needs model.z_channels > 0 (each head's conv_out width)")
      encoder = factorized.FactorizedEncoder(
        cnn.Encoder(z, head=False, rngs=rngs, **kw),
        num_codebooks=heads,
        image_size=image_size,
        depth=int(m.get("adapter_depth", 6)),
        num_heads=int(m.get("adapter_num_heads", 8)),
        z_channels=z,
        code_dim=code_dim,
        norm_groups=kw["norm_groups"],
        feature_dims=tuple(int(w) for w in m.get("feature_head_dims", ())),
        feature_depth=int(m.get("feature_head_depth", 3)),
        dtype=dtype,
        rngs=rngs,
      )
      pixels = cnn.Decoder(z, code_channels=code_dim, rngs=rngs, **_decoder_kw(m, kw))
      decoder = factorized.ProjectedDecoder(pixels, code_dim=code_dim, z_channels=z, dtype=dtype, rngs=rngs)
      # The projections are the heads' quant_conv and the decoder's post_quant_conv.
      z, project = code_dim, False
    elif m.get("semantic_encoder", ""):
      if not project:
        raise ValueError("model.semantic_encoder needs model.z_channels > 0 (the CNNs' width)")
      encoder, decoder = _dual(m, quantizer, z, code_dim, kw, image_size, rngs)
      # The projections are the pixel branch's quant_conv and post_quant_conv.
      z, project = code_dim, False
    else:
      encoder = cnn.Encoder(z, rngs=rngs, **kw)
      up = dict(temporal_upsample=tuple(m.get("temporal_upsample", ())), time_upsample=m.get("time_upsample", "repeat"))
      decoder = cnn.Decoder(z, code_channels=code_dim, rngs=rngs, **up, **_decoder_kw(m, kw))
  else:  # vit, vit1d
    z, project = code_dim, False
    k = int(m.get("num_latent_tokens", 0)) if kind == "vit1d" else 0
    if kind == "vit1d" and k < 1:
      raise ValueError("model.encoder='vit1d' needs model.num_latent_tokens >= 1")
    common = dict(
      image_size=image_size,
      num_latent_tokens=k,
      posemb=m.get("posemb", "learn"),
      family=m.get("vit_family", "vqtok"),
      dtype=dtype,
      rngs=rngs,
    )
    enc_kw, dec_kw = _vit_kwargs(m, "variant"), _vit_kwargs(m, "decoder_variant", "decoder_")
    proj = m.get("vit_projection", "linear")
    conv = dict(conv_widths=tuple(m.get("conv_widths", ())), conv_depths=tuple(m.get("conv_depths", ())))
    encoder = vit.ViTEncoder(z, **enc_kw, **common, **conv, projection=proj)
    dec_conv = dict(
      conv_widths=tuple(m.get("decoder_conv_widths", ())), conv_depths=tuple(m.get("decoder_conv_depths", ()))
    )
    num_codes = int(m.get("proxy_codebook_size", 0))
    if num_codes:
      decoder = _proxy_code_decoder(m, z, num_codes, dec_kw, common)
    else:
      decoder = vit.ViTDecoder(
        z,
        **dec_kw,
        **common,
        **dec_conv,
        projection=proj,
        head_hidden=int(m.get("pixel_head_hidden", 0)),
        token_drop=m.get("token_drop", ""),
      )
  return Tokenizer(
    encoder,
    quantizer,
    decoder,
    image_size=image_size,
    z_channels=z,
    project=project,
    input_range=tuple(m.get("input_range", (-1.0, 1.0))),
    dtype=dtype,
    project_kernel=int(m.get("project_kernel", 1)),
    feature_dim=int(m.get("feature_dim", 0)),
    feature_head_hidden=int(m.get("feature_head_hidden", 0)),
    feature_head_blocks=int(m.get("feature_head_blocks", 0)),
    feature_head_num_heads=int(m.get("feature_head_num_heads", 12)),
    token_drop=m.get("token_drop", "") if kind == "vit1d" else "",
    rngs=rngs,
  )
