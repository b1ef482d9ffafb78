"""TokenFlow's two-branch encoder and decoder (Qu et al., 2024, arXiv:2412.03069; ByteFlow-AI/TokenFlow).

TokenFlow encodes an image twice (tokenflow/tokenizer/vq_model.py ``TokenFlow``):

* a **semantic** branch, a pretrained ViT (``encoder_vqkd``: CLIP ViT-B/16 for
  ``clipb_224``) whose patch features go through ``encode_task_layer``
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

Both ViTs are ``dinov2.DINOv2`` modules (a class token, a learned position grid
resized as the reference's ``interpolate_pos_encoding`` does); the CNNs are
``cnn.Encoder`` / ``cnn.Decoder``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.models import cnn, dinov2


def task_layer(width: int, hidden: int, out: int, *, rngs: nnx.Rngs) -> nnx.Sequential:
  """BEiT v2's / TokenFlow's ``encode_task_layer`` / ``decode_task_layer``: Linear, tanh, Linear."""
  return nnx.Sequential(nnx.Linear(width, hidden, rngs=rngs), jnp.tanh, nnx.Linear(hidden, out, rngs=rngs))


class DualEncoder(nnx.Module):
  """A semantic ViT and a pixel CNN on the same image, concatenated: (B, H, W, 3) -> (B, h, w, d_s + d_p).

  Args:
    semantic: the pretrained ViT (``dinov2.DINOv2``, e.g. family ``"clip"``); its
      patch grid must equal the CNN's latent grid.
    pixel: a ``cnn.Encoder`` ending in ``z_channels``.
    semantic_dim / pixel_dim: the code channels of each branch (TokenFlow: 32, 8).
    z_channels: the CNN's output width (TokenFlow: 256).
  """

  def __init__(
    self,
    semantic: dinov2.DINOv2,
    pixel: cnn.Encoder,
    *,
    semantic_dim: int,
    pixel_dim: int,
    z_channels: int,
    rngs: nnx.Rngs,
  ):
    if semantic.patch_size != pixel.downsample_factor:
      raise ValueError(
        f"dual encoder: the semantic ViT's patch {semantic.patch_size} must equal the CNN's downsampling"
        f" {pixel.downsample_factor} (one token grid for both branches)"
      )
    self.semantic, self.pixel = semantic, pixel
    self.semantic_head = task_layer(semantic.width, semantic.width, semantic_dim, rngs=rngs)
    self.quant_conv = nnx.Linear(z_channels, pixel_dim, rngs=rngs)
    self.in_channels = pixel.in_channels
    self.downsample_factor = pixel.downsample_factor

  def latent_shape(self, height: int, width: int) -> tuple[int, int]:
    self.semantic.grid(height, width)
    return self.pixel.latent_shape(height, width)

  def __call__(self, x: jax.Array) -> jax.Array:
    # TokenFlow's clipb_224 feeds the [-1, 1] image to CLIP as it is (``scaling_layer = None``).
    s = self.semantic_head(self.semantic(x.astype(jnp.float32))["patches"])
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
    dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.semantic_dim = int(semantic_dim)
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
    return self.pixel(self.post_quant_conv(z[..., self.semantic_dim :]))
