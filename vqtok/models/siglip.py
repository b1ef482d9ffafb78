"""SigLIP image towers as feature teachers (Zhai et al., 2023, arXiv:2303.15343).

The image tower of big_vision's two-tower model (big_vision/models/proj/
image_text/two_towers.py, ``image_model="vit"``, ``pool_type="map"``): a
patch embedding, a learned position embedding over the patch grid and no
class token (big_vision/models/vit.py ``_Model``), vqtok's ViT trunk
(``vit.Transformer``, family ``"siglip"``: Flax's LayerNorm eps 1e-6 and
``nn.gelu``, whose default is the tanh approximation), then multihead
attention pooling (``MAPHead``) and, in files whose image tower has an output
size, a Dense ``head``.

The patch tokens are the encoder's output after its final LayerNorm and
before the MAP head: big_vision's ``out["encoded"]``, what feature alignment
uses. The position embedding is learned for one grid (the published models'
resolution); big_vision resizes it only when loading into a model of
another size, so here an image must be at that resolution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.models import vit

#: big_vision's value_range(-1, 1): (x / 255 - 0.5) / 0.5.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


class MAPHead(nnx.Module):
  """Multihead attention pooling (big_vision/models/vit.py ``MAPHead``): (B, L, D) -> (B, D).

  One learned probe attends over the tokens (no LayerNorm before the
  attention); a pre-norm MLP is added to the pooled vector.
  """

  def __init__(self, width: int, mlp_dim: int, num_heads: int, *, norm_eps: float = 1e-6, rngs: nnx.Rngs):
    self.probe = nnx.Param(nnx.initializers.xavier_uniform()(rngs.params(), (1, 1, width)))
    self.attn = nnx.MultiHeadAttention(
      num_heads=num_heads, in_features=width, decode=False, attention_fn=vit.dot_product_attention, rngs=rngs
    )
    self.norm = nnx.LayerNorm(width, epsilon=norm_eps, rngs=rngs)
    self.mlp1 = nnx.Linear(width, mlp_dim, rngs=rngs)
    self.mlp2 = nnx.Linear(mlp_dim, width, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    probe = jnp.broadcast_to(self.probe[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
    h = self.attn(probe, x)
    h = h + self.mlp2(nnx.gelu(self.mlp1(self.norm(h)), approximate=True))
    return h[:, 0]


class SigLIP(nnx.Module):
  """SigLIP's image tower: pixels in [-1, 1] (B, H, W, 3) -> patch features and the pooled embedding.

  Args:
    width, depth, mlp_dim, num_heads: ViT sizes (B/16: 768, 12, 3072, 12; So400m/14: 1152, 27, 4304, 16).
    patch_size: 16 or 14.
    pos_grid: side of the learned position grid (resolution / patch_size).
    embed_dim: width of the image tower's Dense ``head`` after the MAP head; 0: none
      (the published SigLIP files, whose image output is the MAP head's).
    rngs: initialisation (the weights are then loaded).
  """

  def __init__(
    self,
    *,
    width: int,
    depth: int,
    mlp_dim: int,
    num_heads: int,
    patch_size: int = 16,
    pos_grid: int = 14,
    embed_dim: int = 0,
    rngs: nnx.Rngs,
  ):
    if patch_size < 1 or pos_grid < 1 or embed_dim < 0:
      raise ValueError(f"SigLIP: bad sizes patch_size={patch_size}, pos_grid={pos_grid}, embed_dim={embed_dim}")
    self.width, self.patch_size, self.pos_grid = int(width), int(patch_size), int(pos_grid)
    self.embed_dim = int(embed_dim)
    p, fam = self.patch_size, vit.FAMILIES["siglip"]
    self.patch_embed = nnx.Conv(3, width, (p, p), strides=p, padding="VALID", rngs=rngs)
    self.pos_embed = vit.PosEmbed(pos_grid, pos_grid, width, "learn", rngs=rngs)
    self.transformer = vit.Transformer(width, depth, mlp_dim, num_heads, family=fam, rngs=rngs)
    self.map_head = MAPHead(width, mlp_dim, num_heads, norm_eps=fam.norm_eps, rngs=rngs)
    self.head = nnx.Linear(width, embed_dim, rngs=rngs) if embed_dim else None

  @property
  def resolution(self) -> int:
    return self.pos_grid * self.patch_size

  def hidden(self, pixels: jax.Array, layers: int) -> jax.Array:
    """The tokens (B, g, g, width) after the first ``layers`` blocks, before the final LayerNorm.

    Hugging Face's ``hidden_states[layers]`` (TokenFlow-XL reads ``hidden_states[-2]``, the
    26th of 27 blocks). The patch convolution is VALID, as the published towers': an image
    side that is not a multiple of the patch (so400m/14 at 384 px: 27 patches) leaves its
    last rows and columns unread; the grid must be the position grid.
    """
    b, p, g = pixels.shape[0], self.patch_size, self.pos_grid
    if (pixels.shape[1] // p, pixels.shape[2] // p) != (g, g) or not 0 <= layers <= len(self.transformer.blocks):
      raise ValueError(
        f"SigLIP: {pixels.shape[1]}x{pixels.shape[2]} images make a {pixels.shape[1] // p}x"
        f"{pixels.shape[2] // p} patch grid, the position grid is {g}x{g}; layers={layers}"
      )
    h = self.patch_embed(pixels[:, : g * p, : g * p].astype(jnp.float32)).reshape(b, -1, self.width)
    h = self.pos_embed(h)
    for k in range(layers):
      h = self.transformer.blocks[k](h)
    return h.reshape(b, g, g, self.width)

  def __call__(self, pixels: jax.Array) -> dict[str, jax.Array]:
    """Features of images in [-1, 1] (B, resolution, resolution, 3).

    Returns:
      ``patches`` (B, g, g, width): the encoder's output (big_vision's ``encoded``);
      ``pooled`` (B, width): the MAP head's (``pre_logits``); ``embedding``: the
      image tower's output before two_towers normalises it (``head(pooled)``, or
      ``pooled`` without a head).
    """
    b, r = pixels.shape[0], self.resolution
    if pixels.shape[1:3] != (r, r):
      raise ValueError(f"SigLIP's position grid is for {r}x{r} images; got {pixels.shape[1]}x{pixels.shape[2]}")
    h = self.patch_embed(pixels.astype(jnp.float32)).reshape(b, -1, self.width)
    h = self.transformer(self.pos_embed(h))
    pooled = self.map_head(h)
    g = self.pos_grid
    out = {"patches": h.reshape(b, g, g, self.width), "pooled": pooled}
    out["embedding"] = pooled if self.head is None else self.head(pooled)
    return out
