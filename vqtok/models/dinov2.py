"""DINOv2 feature teachers (Oquab et al., 2023, arXiv:2304.07193; registers: Darcet et al., arXiv:2309.16588).

A frozen ViT-S/B/L/14 whose features other losses align a tokenizer to. It is
vqtok's ViT trunk (``vit.Transformer``, family ``"dinov2"``: a class token,
LayerNorm eps 1e-6, erf GELU, LayerScale), the authors' patch embedding and
their token order (facebookresearch/dinov2 dinov2/models/vision_transformer.py,
``prepare_tokens_with_masks``): the class token and the patch tokens are
position-embedded, then the register tokens are put between them, unembedded.

The published models are trained at 518 px (a 37 x 37 position grid) and run
at any multiple of 14: the grid is resized as ``interpolate_pos_encoding``
does, bicubic (PyTorch's, no antialiasing) with the scale factor
``(g + interpolate_offset) / 37`` rather than the output size, a historical
offset the published weights were evaluated with (``interpolate_offset=0.1``,
dinov2/hub/backbones.py). At the training grid itself nothing is resized.

The same module, with ``family="clip"`` and ``proj_dim``, is OpenAI CLIP's
``VisionTransformer`` (openai/CLIP clip/model.py): a bias-free patch
convolution, the class token and position embedding, ``ln_pre``, QuickGELU
blocks without LayerScale, ``ln_post`` (here on every token: the patch
features) and ``proj`` of the class token (``encode_image``). CLIP runs at its
training grid only; elsewhere the grid is resized bicubically to the size
(``interpolate_offset=0``), which is vqtok's, not the reference's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vqtok.models import vit
from vqtok.quantizers import interpolate

#: Published sizes (dinov2/models/vision_transformer.py vit_small / vit_base / vit_large: mlp_ratio 4).
#: ViT-g/14 uses a SwiGLU MLP, which vqtok's blocks do not have.
SIZES = ("S", "B", "L")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DINOv2(nnx.Module):
  """DINOv2's ViT: normalised pixels (B, H, W, 3) -> class, register and patch features.

  Args:
    width, depth, mlp_dim, num_heads: ViT sizes (``vit.decode_variant``).
    patch_size: 14 for the published models.
    pos_grid: side of the learned position grid (37: trained at 518 px).
    num_register_tokens: 0, or 4 for the ``_reg`` models.
    interpolate_offset: added to the patch grid in the position-embedding scale factor.
    family: ``"dinov2"`` or ``"clip"`` (a row of ``vit.FAMILIES``: the patch bias, ln_pre,
      the activation, LayerScale, LayerNorm epsilon).
    proj_dim: > 0: a bias-free projection of the class features to this width (CLIP's ``proj``).
    in_channels: channels of the input (3: pixels; TokenFlow's semantic decoder, family ``"beit"``
      with ``patch_size=1``, reads the 32-channel semantic codes).
    rngs: initialisation (the weights are then loaded).
  """

  def __init__(
    self,
    *,
    width: int,
    depth: int,
    mlp_dim: int,
    num_heads: int,
    patch_size: int = 14,
    pos_grid: int = 37,
    num_register_tokens: int = 0,
    interpolate_offset: float = 0.1,
    family: str = "dinov2",
    proj_dim: int = 0,
    in_channels: int = 3,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if num_register_tokens < 0 or pos_grid < 1 or patch_size < 1:
      raise ValueError(
        f"{family}: bad sizes pos_grid={pos_grid}, patch_size={patch_size}, registers={num_register_tokens}"
      )
    self.family_name = family
    self.width, self.patch_size, self.pos_grid = int(width), int(patch_size), int(pos_grid)
    self.num_register_tokens, self.interpolate_offset = int(num_register_tokens), float(interpolate_offset)
    p, init = self.patch_size, nnx.initializers.normal(stddev=0.02)
    fam = vit.get_family(family)
    self.patch_embed = nnx.Conv(
      int(in_channels),
      width,
      (p, p),
      strides=p,
      padding="VALID",
      use_bias=fam.patch_bias,
      param_dtype=param_dtype,
      rngs=rngs,
    )
    self.cls_token = nnx.Param(init(rngs.params(), (1, width), param_dtype))
    self.pos_embed = nnx.Param(init(rngs.params(), (1, pos_grid * pos_grid + 1, width), param_dtype))
    n = self.num_register_tokens
    self.register_tokens = nnx.Param(init(rngs.params(), (n, width), param_dtype)) if n else None
    self.transformer = vit.Transformer(width, depth, mlp_dim, num_heads, family=fam, param_dtype=param_dtype, rngs=rngs)
    self.proj = nnx.Param(init(rngs.params(), (width, int(proj_dim)), param_dtype)) if proj_dim > 0 else None

  def grid(self, height: int, width: int) -> tuple[int, int]:
    """The patch grid of an image; ValueError unless both sides are multiples of the patch size."""
    p = self.patch_size
    if height % p or width % p or height < p or width < p:
      raise ValueError(
        f"the {self.family_name} teacher needs image sides in multiples of its patch {p}; got {height}x{width}"
      )
    return height // p, width // p

  def position_embedding(self, gh: int, gw: int) -> jax.Array:
    """(1, 1 + gh * gw, width): the class row, then the grid resized to (gh, gw) as the reference does."""
    emb = self.pos_embed[...].astype(jnp.float32)
    m = self.pos_grid
    if gh * gw == m * m and gh == gw:  # interpolate_pos_encoding's early return
      return emb
    grid = emb[0, 1:].reshape(m, m, -1)
    off = self.interpolate_offset
    for axis, g in ((0, gh), (1, gw)):
      # F.interpolate(scale_factor=(g + off) / m): the output side is floor(m * s) = g,
      # the sampling step 1 / s; with off == 0 the reference gives the size instead.
      s = (g + off) / m if off else None
      mat = jnp.asarray(interpolate.bicubic_matrix(m, g, s))
      grid = jnp.moveaxis(jnp.tensordot(mat, jnp.moveaxis(grid, axis, 0), axes=1, precision="highest"), 0, axis)
    return jnp.concatenate([emb[:, :1], grid.reshape(1, gh * gw, -1)], axis=1)

  def __call__(self, pixels: jax.Array) -> dict[str, jax.Array]:
    """Features of ImageNet-normalised images (B, H, W, 3).

    Returns:
      ``cls`` (B, width), ``registers`` (B, num_register_tokens, width) and
      ``patches`` (B, H/14, W/14, width): the final LayerNorm's outputs
      (the reference's ``x_norm_clstoken`` / ``_regtokens`` / ``_patchtokens``);
      with ``proj_dim``, also ``embedding`` (B, proj_dim): ``cls @ proj``, and ``patch_embedding``
      (B, H/p, W/p, proj_dim): ``patches @ proj`` (TokenFlow's regression target, vq_loss.py
      ``get_regress_target``: ``encode_image(return_all_tokens=True) @ visual.proj``);
      ``cls_unnormed`` (B, width): the class token before the final LayerNorm
      (CLIP's ``ln_post``; Hugging Face ``CLIPVisionModel``'s
      ``hidden_states[-1][:, 0]``, the target of FQGAN's semantic loss).
    """
    b = pixels.shape[0]
    gh, gw = self.grid(pixels.shape[1], pixels.shape[2])
    h = self.patch_embed(pixels.astype(jnp.float32)).reshape(b, gh * gw, self.width)
    cls = jnp.broadcast_to(self.cls_token[...][None], (b, 1, self.width))
    h = jnp.concatenate([cls, h], axis=1) + self.position_embedding(gh, gw)
    r = self.num_register_tokens
    if r:
      regs = jnp.broadcast_to(self.register_tokens[...][None], (b, r, self.width))
      h = jnp.concatenate([h[:, :1], regs, h[:, 1:]], axis=1)
    t = self.transformer
    h = t.ln_pre(h) if t.ln_pre is not None else h
    for block in t.blocks:
      h = block(h, None)
    unnormed, h = h[:, 0], t.norm(h)
    out = {"cls": h[:, 0], "registers": h[:, 1 : 1 + r], "patches": h[:, 1 + r :].reshape(b, gh, gw, self.width)}
    out["cls_unnormed"] = unnormed
    if self.proj is not None:
      proj = self.proj[...].astype(jnp.float32)
      out["embedding"] = jnp.matmul(out["cls"], proj, precision="highest")
      out["patch_embedding"] = jnp.matmul(out["patches"], proj, precision="highest")
    return out


def normalize(images: np.ndarray | jax.Array, mean=IMAGENET_MEAN, std=IMAGENET_STD):
  """Images in [0, 1] (..., 3) -> ``(x - mean) / std`` (torchvision's ``Normalize``), float32."""
  xp = jnp if isinstance(images, jax.Array) else np
  shape = (1,) * (images.ndim - 1) + (-1,)
  mean, std = xp.asarray(mean, xp.float32).reshape(shape), xp.asarray(std, xp.float32).reshape(shape)
  return (images.astype(xp.float32) - mean) / std
