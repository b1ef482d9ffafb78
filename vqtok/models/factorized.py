"""FQGAN's factorised encoder and decoder (Bai et al., 2024, arXiv:2411.16681; showlab/FQGAN).

FQGAN keeps LlamaGen's VQGAN CNN but splits its output: after the shared
trunk (``conv_in`` ... middle blocks) each of the k sub-codebooks has its own
head (tokenizer/vq_model_dual.py ``Encoder``): a transformer adapter
(``FactorizedAdapter``: learned position embedding over the fixed latent
grid, ``ln_pre``, CLIP-style blocks, ``ln_post``, at the trunk's width), then
GroupNorm, swish, a 3x3 ``conv_out`` to ``z_channels`` and the 1x1
``quant_conv`` to the sub-codebook's width. The k projections are
concatenated (pixel head first) for the ``Factorized`` quantizer, and the
decoder starts with a 1x1 ``post_quant_conv`` from the concatenated codes.

The adapters' position embedding fixes the latent grid: the encoder takes
images of the training size only.

FQGAN also trains a semantic feature-prediction head on each semantic
sub-code (``FeatPredHead``: an MLP up to the teacher's width, a class token,
position embeddings, ``ln_pre``, CLIP-style blocks, ``ln_post``; Dual: one
of width 1024 for CLIP ViT-L/14; Triple: 384 and 768 for the mid- and
high-level sub-codes). They are ``FeatureHead``s here, kept on the encoder
(``feature_heads``) so that an imported checkpoint keeps them;
``predict_features`` runs them on quantised latents. They are not on the
encode or decode path.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.models import cnn, vit


class AdapterHead(nnx.Module):
  """One sub-codebook's head: transformer adapter, GroupNorm, swish, 3x3 conv, 1x1 projection."""

  def __init__(
    self,
    width: int,
    *,
    grid: int,
    depth: int,
    num_heads: int,
    z_channels: int,
    code_dim: int,
    norm_groups: int,
    dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, rngs=rngs)
    self.pos = nnx.Param(jax.random.normal(rngs.params(), (grid * grid, width)) * width**-0.5)
    # BSQ-ViT's block kind is FQGAN's too: ln_pre, CLIP blocks (erf GELU, LayerNorm eps 1e-5), ln_post.
    self.adapter = vit.Transformer(width, depth, 4 * width, num_heads, family=vit.FAMILIES["bsqvit"], **kw)
    self.norm_out = cnn.group_norm(width, groups=norm_groups, dtype=dtype, rngs=rngs)
    self.conv_out = nnx.Conv(width, z_channels, (3, 3), **kw)
    self.quant_conv = nnx.Linear(z_channels, code_dim, rngs=rngs)

  def __call__(self, h: jax.Array) -> jax.Array:
    b, gh, gw, c = h.shape
    x = h.reshape(b, gh * gw, c) + self.pos[...].astype(h.dtype)[None]
    x = self.adapter(x).reshape(b, gh, gw, c)
    x = self.conv_out(nnx.swish(self.norm_out(x)))
    return self.quant_conv(x.astype(jnp.float32))


class FeatureHead(nnx.Module):
  """FQGAN's ``FeatPredHead``: one sub-code (B, h, w, d) -> (B, 1 + h*w, width) teacher-like features."""

  def __init__(self, code_dim: int, width: int, *, grid: int, depth: int, num_heads: int, rngs: nnx.Rngs):
    self.up1 = nnx.Linear(code_dim, width, rngs=rngs)
    self.up2 = nnx.Linear(width, width, rngs=rngs)
    scale = width**-0.5
    self.cls_token = nnx.Param(jax.random.normal(rngs.params(), (1, width)) * scale)
    self.pos = nnx.Param(jax.random.normal(rngs.params(), (grid * grid + 1, width)) * scale)
    self.transformer = vit.Transformer(width, depth, 4 * width, num_heads, family=vit.FAMILIES["bsqvit"], rngs=rngs)

  def __call__(self, codes: jax.Array) -> jax.Array:
    b, h, w, d = codes.shape
    x = self.up2(nnx.relu(self.up1(codes.reshape(b, h * w, d).astype(jnp.float32))))
    cls = jnp.broadcast_to(self.cls_token[...][None], (b, 1, x.shape[-1]))
    return self.transformer(jnp.concatenate([cls, x], axis=1) + self.pos[...][None])


class FactorizedEncoder(nnx.Module):
  """A head-less ``cnn.Encoder`` trunk, then ``num_codebooks`` ``AdapterHead``s, concatenated.

  Args:
    trunk: ``cnn.Encoder(..., head=False)``.
    num_codebooks: k, the number of heads / sub-codebooks.
    image_size: the training image size (the adapters' grid is ``image_size / f``).
    depth / num_heads: adapter blocks and attention heads (FQGAN: 6, 8).
    z_channels: each head's ``conv_out`` width (FQGAN: 256).
    code_dim: the concatenated width, k times each sub-codebook's (FQGAN Dual: 16).
    norm_groups: the heads' GroupNorm groups.
    feature_dims: widths of the semantic ``FeatureHead``s, one per sub-code from
      the second on (FQGAN Dual: (1024,); Triple: (384, 768)); () for none.
    feature_depth: their blocks (FQGAN: 3; 8 attention heads like the adapters).
  """

  def __init__(
    self,
    trunk: cnn.Encoder,
    *,
    num_codebooks: int,
    image_size: int,
    depth: int,
    num_heads: int,
    z_channels: int,
    code_dim: int,
    norm_groups: int = 32,
    feature_dims: tuple[int, ...] = (),
    feature_depth: int = 3,
    dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
  ):
    if len(feature_dims) > num_codebooks - 1:
      raise ValueError(
        f"factorised encoder: {len(feature_dims)} feature heads for {num_codebooks - 1} semantic sub-codes"
      )
    if trunk.conv_out is not None:
      raise ValueError("FactorizedEncoder needs a head-less trunk: cnn.Encoder(..., head=False)")
    if num_codebooks < 2 or code_dim % num_codebooks:
      raise ValueError(f"factorised encoder: {num_codebooks} heads must be >= 2 and divide code_dim={code_dim}")
    self.trunk = trunk
    self.in_channels = trunk.in_channels
    self.downsample_factor = f = trunk.downsample_factor
    self.grid = image_size // f
    width = trunk.trunk_channels
    self.heads = nnx.List(
      [
        AdapterHead(
          width,
          grid=self.grid,
          depth=depth,
          num_heads=num_heads,
          z_channels=z_channels,
          code_dim=code_dim // num_codebooks,
          norm_groups=norm_groups,
          dtype=dtype,
          rngs=rngs,
        )
        for _ in range(num_codebooks)
      ]
    )
    self.sub_dim = code_dim // num_codebooks
    self.feature_heads = nnx.List(
      [
        FeatureHead(self.sub_dim, int(w), grid=self.grid, depth=feature_depth, num_heads=num_heads, rngs=rngs)
        for w in feature_dims
      ]
    )

  def latent_shape(self, height: int, width: int) -> tuple[int, int]:
    """The fixed latent grid; ValueError for any other image size."""
    f, g = self.downsample_factor, self.grid
    if (height, width) != (g * f, g * f):
      raise ValueError(
        f"the factorised encoder's adapters have a fixed {g}x{g} grid: images must be {g * f}x{g * f};"
        f" got {height}x{width}"
      )
    return g, g

  def predict_features(self, z_q: jax.Array) -> list[jax.Array]:
    """The feature heads on the semantic sub-codes of quantised latents (B, h, w, code_dim), in order."""
    d = self.sub_dim
    return [head(z_q[..., (g + 1) * d : (g + 2) * d]) for g, head in enumerate(self.feature_heads)]

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.trunk(x)
    return jnp.concatenate([head(h) for head in self.heads], axis=-1)


class ProjectedDecoder(nnx.Module):
  """FQGAN's ``post_quant_conv`` (the concatenated codes to ``z_channels``) before a ``cnn.Decoder``."""

  reads_codes = False

  def __init__(self, decoder: cnn.Decoder, *, code_dim: int, z_channels: int, dtype: Any = jnp.float32, rngs):
    self.post_quant_conv = nnx.Linear(code_dim, z_channels, dtype=dtype, rngs=rngs)
    self.decoder = decoder

  @property
  def last_layer_path(self) -> tuple[str, ...]:
    return ("decoder",) + tuple(self.decoder.last_layer_path)

  def __call__(self, z: jax.Array) -> jax.Array:
    return self.decoder(self.post_quant_conv(z))
