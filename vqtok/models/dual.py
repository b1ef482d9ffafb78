"""TokenFlow's two-branch encoder and decoder (Qu et al., 2024, arXiv:2412.03069; ByteFlow-AI/TokenFlow).

TokenFlow encodes an image twice (tokenflow/tokenizer/vq_model.py ``TokenFlow``):

* a **semantic** branch, a pretrained ViT (``encoder_vqkd``: CLIP ViT-B/16 for
  ``clipb_224``, SigLIP so400m/14 read at its 26th of 27 blocks for
  ``siglip_384``) whose patch features go through ``encode_task_layer``
  (Linear, tanh, Linear) to the 32 semantic code channels;
* a **pixel** branch, LlamaGen's VQGAN encoder (a ``cnn.Encoder``) and its 1x1
  ``quant_conv`` to the 8 pixel code channels.

The two latents share one grid and are concatenated, semantic first, for the
dual codebook with one shared index (``quantizers.DualCodebook``, inside
``MultiScaleResidual(form="tokenflow")``). The decoder splits the codes again:
the pixel part through ``post_quant_conv`` and LlamaGen's decoder to the image
(``__call__``), the semantic part through ``decoder_vqkd`` (a BEiT v2 ViT of
3 blocks reading the codes as 1x1 patches, ``vit.FAMILIES["beit"]``) and
``decode_task_layer`` to the teacher's features (``predict_features``; not on
the decode path, kept so that an imported checkpoint keeps it).

The semantic encoder is a ``dinov2.DINOv2`` (family ``"clip"``: a class token, a
learned position grid resized as the reference's ``interpolate_pos_encoding``
does) or a ``siglip.SigLIP``; the semantic decoder a ``dinov2.DINOv2`` (family
``"beit"``); the CNNs are ``cnn.Encoder`` / ``cnn.Decoder``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.models import cnn, dinov2
from vqtok.quantizers import interpolate


def task_layer(width: int, hidden: int, out: int, *, rngs: nnx.Rngs) -> nnx.Sequential:
  """BEiT v2's / TokenFlow's ``encode_task_layer`` / ``decode_task_layer``: Linear, tanh, Linear."""
  return nnx.Sequential(nnx.Linear(width, hidden, rngs=rngs), jnp.tanh, nnx.Linear(hidden, out, rngs=rngs))


def siglip_scaling(x: jax.Array) -> jax.Array:
  """TokenFlow's ``ScalingLayerForSigLip``: [-1, 1] -> uint8 range, clamped, then SigLIP's (x / 255 - 0.5) / 0.5."""
  return (jnp.clip((x + 1.0) * 127.5, 0.0, 255.0) / 255.0 - 0.5) / 0.5


#: What each semantic ViT family sees of the [-1, 1] image (vq_model.py ``scaling_layer``): clipb_224
#: feeds it to CLIP as it is (``scaling_layer = None``), siglip_384 through ``ScalingLayerForSigLip``.
SEMANTIC_INPUTS = {"clip": lambda x: x, "siglip": siglip_scaling}


class DualEncoder(nnx.Module):
  """A semantic ViT and a pixel CNN on the same image, concatenated: (B, H, W, 3) -> (B, g, g, d_s + d_p).

  The token grid is the semantic ViT's; the CNN reads the image bicubically resized to that grid
  times its downsampling where the two differ (TokenFlow-XL: SigLIP/14 at 384 px makes 27 x 27
  patches, so the CNN reads 432 px: vq_model.py ``F.interpolate(x, size=16 * 27, mode="bicubic")``).

  Args:
    semantic: the pretrained ViT: ``dinov2.DINOv2`` (family ``"clip"``) or ``siglip.SigLIP``.
    pixel: a ``cnn.Encoder`` ending in ``z_channels``.
    family: the semantic ViT's family (a key of ``SEMANTIC_INPUTS``).
    layer: 0: the ViT's output features; k > 0: the tokens after its first k blocks, before the
      final norm (TokenFlow-XL: 26 of SigLIP's 27, ``hidden_states[-2]``).
    semantic_dim / pixel_dim: the code channels of each branch (TokenFlow: 32, 8).
    z_channels: the CNN's output width (TokenFlow: 256).
  """

  def __init__(
    self,
    semantic: nnx.Module,
    pixel: cnn.Encoder,
    *,
    family: str,
    layer: int = 0,
    semantic_dim: int,
    pixel_dim: int,
    z_channels: int,
    rngs: nnx.Rngs,
  ):
    if family not in SEMANTIC_INPUTS:
      raise ValueError(
        f"dual encoder: unknown semantic ViT family {family!r}; expected one of {tuple(SEMANTIC_INPUTS)}"
      )
    self.family, self.layer = family, int(layer)
    self.semantic, self.pixel = semantic, pixel
    self.semantic_head = task_layer(semantic.width, semantic.width, semantic_dim, rngs=rngs)
    self.quant_conv = nnx.Linear(z_channels, pixel_dim, rngs=rngs)
    self.in_channels = pixel.in_channels
    self.downsample_factor = pixel.downsample_factor

  def latent_shape(self, height: int, width: int) -> tuple[int, int]:
    p = self.semantic.patch_size
    if isinstance(self.semantic, dinov2.DINOv2):
      return self.semantic.grid(height, width)
    if height < p or width < p:
      raise ValueError(f"the {self.family} ViT needs images of at least its patch {p}; got {height}x{width}")
    return height // p, width // p

  def __call__(self, x: jax.Array) -> jax.Array:
    gh, gw = self.latent_shape(x.shape[1], x.shape[2])
    xs = SEMANTIC_INPUTS[self.family](x.astype(jnp.float32))
    s = self.semantic.hidden(xs, self.layer) if self.layer else self.semantic(xs)["patches"]
    s = self.semantic_head(s)
    f = self.downsample_factor
    if (gh * f, gw * f) != x.shape[1:3]:
      x = interpolate.resize(x.astype(jnp.float32), (gh * f, gw * f), "bicubic").astype(x.dtype)
    p = self.quant_conv(self.pixel(x).astype(jnp.float32))
    return jnp.concatenate([s, p], axis=-1)


class DualDecoder(nnx.Module):
  """Splits the codes: the pixel part to the image (``__call__``), the semantic part to features.

  Args:
    semantic: the semantic decoder ViT (``dinov2.DINOv2``, family ``"beit"``,
      ``patch_size=1``, ``in_channels=semantic_dim``).
    pixel: a ``cnn.Decoder`` taking ``z_channels``.
    semantic_dim / pixel_dim: the code channels of each branch.
    z_channels: the pixel decoder's input width (``post_quant_conv``'s output).
    feature_dim: the width of the reconstructed teacher features (CLIP ViT-B/16: 512).
    output_size: > 0: the image is resized bicubically to this side (TokenFlow-XL decodes 432 px and
      returns 384: vq_model.py ``decode``); 0: the CNN's output as it is.
  """

  def __init__(
    self,
    semantic: dinov2.DINOv2,
    pixel: cnn.Decoder,
    *,
    semantic_dim: int,
    pixel_dim: int,
    z_channels: int,
    feature_dim: int,
    output_size: int = 0,
    dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.semantic_dim, self.output_size = int(semantic_dim), int(output_size)
    self.semantic, self.pixel = semantic, pixel
    self.semantic_head = task_layer(semantic.width, semantic.width, feature_dim, rngs=rngs)
    self.post_quant_conv = nnx.Linear(pixel_dim, z_channels, dtype=dtype, rngs=rngs)

  @property
  def last_layer_path(self) -> tuple[str, ...]:
    return ("pixel",) + tuple(self.pixel.last_layer_path)

  def predict_features(self, z_q: jax.Array) -> jax.Array:
    """The semantic decoder on quantised latents (B, h, w, d_s + d_p): (B, h, w, feature_dim) float32."""
    codes = z_q[..., : self.semantic_dim].astype(jnp.float32)
    return self.semantic_head(self.semantic(codes)["patches"])

  def __call__(self, z: jax.Array) -> jax.Array:
    out = self.pixel(self.post_quant_conv(z[..., self.semantic_dim :]))
    n = self.output_size
    if n and out.shape[1:3] != (n, n):
      out = interpolate.resize(out.astype(jnp.float32), (n, n), "bicubic").astype(out.dtype)
    return out
