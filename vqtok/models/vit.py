"""Vision Transformer encoders and decoders for image tokenizers.

Two layouts:

* 2-D grid (ViT-VQGAN, Yu et al., 2022, arXiv:2110.04627; BSQ-ViT, Zhao et al.,
  2024, arXiv:2406.07548): one latent token per patch, ``(B, H/p, W/p, d)``;
  the decoder maps each token back to its ``p x p x 3`` patch with a Linear head.
* 1-D latent tokens (TiTok, Yu et al., 2024, arXiv:2406.07550): ``K`` learned
  latent tokens are appended to the patch tokens; only their outputs are
  quantised, ``(B, K, d)``. The decoder appends the ``K`` tokens to a grid of
  learned mask tokens and reconstructs the patches from the mask positions.

Blocks are pre-norm (LayerNorm, multi-head attention, LayerNorm, GELU MLP).
Attention is ``jax.nn.dot_product_attention`` (no mask, no bias, scale
1/sqrt(head_dim) in every family): XLA's on the CPU and TPU, cuDNN's fused
(flash) kernel on an NVIDIA GPU for bf16/fp16 heads it supports.
Sizes follow big_vision: a table plus ``decode_variant("B/16")``. How families
differ in kind (a class token, a LayerNorm before the blocks, exact or tanh
GELU, the published TiTok's token layout, ViTamin's MBConv stem and GeGLU MLPs)
is a row of ``FAMILIES``; how the latents meet the quantizer (a Linear or
UniTok's ``AttnProjection``) is ``PROJECTIONS``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype

from vqtok.models import mbconv

Dtype = Any

# name -> (width, depth, mlp_dim, num_heads); ViT paper / big_vision sizes.
VIT_SIZES: dict[str, tuple[int, int, int, int]] = {
  "Ti": (192, 12, 768, 3),
  "S": (384, 12, 1536, 6),
  "M": (512, 12, 2048, 8),
  "B": (768, 12, 3072, 12),
  "L": (1024, 24, 4096, 16),
}


@dataclasses.dataclass(frozen=True)
class Family:
  """The parts in which ViT tokenizer families differ in kind (sizes are config values).

  Attributes:
    cls_token: a learned class token leads the sequence (its output is dropped);
      the position embedding then covers it too (``grid**2 + 1`` rows).
    ln_pre: a LayerNorm over the whole sequence before the first block.
    norm_eps: epsilon of every LayerNorm.
    exact_gelu: erf GELU (PyTorch's ``nn.GELU``) rather than the tanh form.
    legacy_latents: the published TiTok encoder reads its (K, width) latent
      outputs as if they were laid out (width, K) before the output 1x1 conv
      (bytedance/1d-tokenizer modeling/modules/blocks.py, TiTokEncoder.forward,
      ``is_legacy``); the weights were trained that way, so it is kept.
    out_conv: a 3x3 conv on the decoded image (TiTok's ``conv_out`` when its
      decoder predicts pixels, ``is_legacy: False``).
    patch_bias: the patch embedding has a bias. BSQ-ViT's has none: a bias
      before ``ln_pre`` would only shift what the LayerNorm removes
      (zhaoyue-zephyrus/bsq-vit transcoder/models/transformer.py,
      TransformerEncoder ``conv1 = nn.Linear(..., bias=not ln_pre)``).
    layer_scale: each residual branch is scaled per channel by a learned
      vector before it is added (CaiT's LayerScale; DINOv2's ``ls1``/``ls2``,
      facebookresearch/dinov2 dinov2/layers/block.py).
    quick_gelu: the MLP's activation is ``x * sigmoid(1.702 x)`` (OpenAI CLIP's
      ``QuickGELU``, openai/CLIP clip/model.py), not a GELU.
    geglu: the MLP is UniTok's ``GeGluMlp`` (``GeGLU``: its own LayerNorm, then
      ``gelu_tanh(x W0) * (x W1)``, then ``W2``), behind the block's own ``norm2``.
    conv_stem: a hybrid ViT: ViTamin's MBConv stages (``mbconv.ConvStem``) take
      the patch embedding's place (``patch_size`` is their downsampling), and
      the decoder maps its tokens to pixels with ``mbconv.ConvHead``.
  """

  cls_token: bool = False
  ln_pre: bool = False
  norm_eps: float = 1e-6
  exact_gelu: bool = False
  legacy_latents: bool = False
  out_conv: bool = False
  patch_bias: bool = True
  layer_scale: bool = False
  quick_gelu: bool = False
  geglu: bool = False
  conv_stem: bool = False


#: ``model.vit_family``: vqtok's own ViT (big_vision style), the published TiTok and BSQ-ViT.
FAMILIES = {
  "vqtok": Family(),
  "titok": Family(cls_token=True, ln_pre=True, norm_eps=1e-5, exact_gelu=True, legacy_latents=True),
  # TiTok's one-stage layout (the VQ-8k tokenizers): latents in order, pixels from the decoder.
  "titok_pixels": Family(cls_token=True, ln_pre=True, norm_eps=1e-5, exact_gelu=True, out_conv=True),
  # BSQ-ViT (transcoder/models/transformer.py): CLIP-style blocks, ln_pre in both ViTs.
  "bsqvit": Family(ln_pre=True, norm_eps=1e-5, exact_gelu=True, patch_bias=False),
  # DINOv2 (dinov2/models/vision_transformer.py): LayerNorm eps 1e-6, nn.GELU, LayerScale.
  "dinov2": Family(cls_token=True, exact_gelu=True, layer_scale=True),
  # OpenAI CLIP's VisionTransformer (clip/model.py): no conv bias, ln_pre, eps 1e-5, QuickGELU.
  "clip": Family(cls_token=True, ln_pre=True, norm_eps=1e-5, patch_bias=False, quick_gelu=True),
  # SigLIP's image tower (big_vision/models/vit.py): Flax's LayerNorm (eps 1e-6) and nn.gelu (tanh),
  # no class token; the same blocks as vqtok's own ViT, named for the published files it loads.
  "siglip": Family(),
  # BEiT v2's VisionTransformer (unilm beitv2 modeling_finetune.py; TokenFlow's tokenizer/vqkd_model.py, its
  # semantic decoder): a class token, nn.GELU, LayerNorm eps 1e-6, ``init_values=0`` (no LayerScale), and
  # ``use_mean_pooling``: no final ``norm`` but ``fc_norm`` on the patch tokens (a final LayerNorm here).
  "beit": Family(cls_token=True, exact_gelu=True),
  # UniTok's ViTamin (FoundationVision/UniTok models/vitamin.py, timm's VisionTransformer): MBConv stages under
  # the ViT, no class token, LayerNorm eps 1e-6, GeGluMlp; its decoder ends in MBConv stages that upsample.
  "vitamin": Family(geglu=True, conv_stem=True),
}

#: How a ViT meets the quantizer (``model.vit_projection``): a Linear, or UniTok's ``AttnProjection``.
PROJECTIONS = ("linear", "attn")


@dataclasses.dataclass(frozen=True)
class TokenDrop:
  """How a 1-D tokenizer learns to decode from the first k of its K tokens (``model.token_drop``).

  In training, the decoder sees only the first k tokens, with k drawn afresh
  at every step, so that any prefix decodes to the best image its length can
  give; at inference ``Tokenizer.decode`` takes any prefix.

  Attributes:
    per_image: one k per image (True) or one for the whole batch.
    sizes: the distribution of k: ``"uniform"`` on 1..K, or ``"pow2"``
      uniform on the powers of two 1, 2, 4, ..., K.
    fill: ``"remove"``: the dropped tokens are left out of the decoder's
      sequence (here masked out of every attention, which is the same);
      ``"token"``: each is replaced by one learned token (``decoder.drop_token``)
      of the quantised tokens' width.
  """

  per_image: bool
  sizes: str
  fill: str


#: ``model.token_drop``: "" (none) and the two published schemes.
TOKEN_DROPS = {
  "": None,
  # One-D-Piece's tail token drop (turingmotors/One-D-Piece modeling/one_d_piece.py,
  # ``apply_tail_token_drop``): ``torch.randint(1, K + 1, (1,))``, one k per batch,
  # the tokens after it sliced off before the decoder (TiTok's decoder then adds
  # ``latent_token_positional_embedding[:k]``), in both training stages.
  "tail": TokenDrop(per_image=False, sizes="uniform", fill="remove"),
  # FlexTok's nested dropout (apple/ml-flextok flextok/model/preprocessors/token_dropout.py,
  # ``MaskedNestedDropout``, size_sampling_mode "pow2"): one k per image, from
  # {1, 2, 4, ..., K}; the dropped tokens are overwritten by a learned mask token.
  "nested": TokenDrop(per_image=True, sizes="pow2", fill="token"),
}


def check_token_drop(name: str, num_tokens: int) -> TokenDrop | None:
  """The row of ``TOKEN_DROPS`` called ``name``; ValueError if unknown or unfit for ``num_tokens``."""
  if name not in TOKEN_DROPS:
    raise ValueError(f"model.token_drop={name!r} is not one of {tuple(TOKEN_DROPS)}")
  drop = TOKEN_DROPS[name]
  if drop is not None and num_tokens < 1:
    raise ValueError(f"model.token_drop={name!r} needs a 1-D tokenizer (model.encoder='vit1d')")
  if drop is not None and drop.sizes == "pow2" and num_tokens & (num_tokens - 1):
    raise ValueError(f"model.token_drop={name!r} draws powers of two: model.num_latent_tokens={num_tokens} must be one")
  return drop


def sample_keep(drop: TokenDrop, key: jax.Array, batch: int, num_tokens: int) -> jax.Array:
  """(batch,) int32: how many leading tokens each image keeps, drawn as ``drop`` says."""
  shape = (batch,) if drop.per_image else ()
  if drop.sizes == "uniform":
    keep = jax.random.randint(key, shape, 1, num_tokens + 1)
  else:
    powers = 2 ** jnp.arange(num_tokens.bit_length(), dtype=jnp.int32)  # 1, 2, ..., K (K a power of two)
    keep = jax.random.choice(key, powers, shape)
  return jnp.broadcast_to(keep, (batch,)).astype(jnp.int32)


def get_family(name: str) -> Family:
  """The row of ``FAMILIES`` called ``name``; ValueError naming the choices otherwise."""
  if name not in FAMILIES:
    raise ValueError(f"unknown ViT family {name!r}; expected one of {tuple(FAMILIES)}")
  return FAMILIES[name]


def decode_variant(variant: str) -> dict[str, int]:
  """Parses ``"B/16"`` into ``width``, ``depth``, ``mlp_dim``, ``num_heads``, ``patch_size``.

  Args:
    variant: ``"<size>"`` or ``"<size>/<patch>"`` with size in ``VIT_SIZES``.

  Returns:
    A dict of keyword arguments for the ViT modules below.
  """
  size, _, patch = str(variant).partition("/")
  if size not in VIT_SIZES:
    raise ValueError(f"unknown ViT size {size!r} in {variant!r}; expected one of {sorted(VIT_SIZES)}")
  width, depth, mlp_dim, heads = VIT_SIZES[size]
  out = dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads)
  if patch:
    if not patch.isdigit() or int(patch) < 1:
      raise ValueError(f"bad patch size in ViT variant {variant!r}")
    out["patch_size"] = int(patch)
  return out


def sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sine-cosine position embedding (MoCo v3 / big_vision), (h*w, width)."""
  if width % 4:
    raise ValueError(f"sincos2d position embedding needs width divisible by 4; got {width}")
  y, x = np.mgrid[:h, :w]
  omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1 or 1))
  y = y.reshape(-1)[:, None] * omega[None, :]
  x = x.reshape(-1)[:, None] * omega[None, :]
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)


#: Position embeddings ``config.model.posemb`` may name ("none": UniTok's ViTamin, whose is a frozen zero).
POSEMBS = ("learn", "sincos2d", "none")


class PosEmbed(nnx.Module):
  """Adds a learned (``"learn"``) or fixed (``"sincos2d"``) position embedding."""

  def __init__(
    self, h: int, w: int, width: int, kind: str = "learn", *, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs
  ):
    self.kind, self.shape = kind, (h, w, width)
    if kind == "learn":
      init = nnx.initializers.normal(stddev=0.02)
      self.embedding = nnx.Param(init(rngs.params(), (1, h * w, width), param_dtype))
    elif kind == "sincos2d":
      sincos_2d(h, w, width)  # validates the width now rather than at the first call
    elif kind != "none":
      raise ValueError(f"posemb must be one of {POSEMBS}; got {kind!r}")

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == "none":
      return x
    if self.kind == "learn":
      emb = self.embedding[...]
    else:
      # A trace-time constant: no state to checkpoint, nothing to train.
      emb = jnp.asarray(sincos_2d(*self.shape))[None]
    return x + emb.astype(x.dtype)


def _platform() -> str:
  """The default device's platform, with NVIDIA GPUs as ``"cuda"`` (ROCm ones have no cuDNN)."""
  dev = jax.devices()[0]
  if dev.platform == "gpu" and "cuda" in str(dev.client.platform_version).lower():
    return "cuda"
  return dev.platform


def attention_implementation(dtype: Dtype, head_dim: int, platform: str | None = None) -> str | None:
  """``"cudnn"`` where cuDNN's fused attention takes these heads, else None (XLA).

  JAX's own default (None) is XLA on every backend, so the fused kernel has to
  be asked for; cuDNN takes fp16/bf16 heads whose size is a multiple of 8, up
  to 128 on every GPU it supports (256 from Hopper on; 128 suffices here).
  """
  if (platform or _platform()) != "cuda":
    return None
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)) or head_dim % 8 or head_dim > 128:
    return None
  return "cudnn"


def dot_product_attention(
  query, key, value, *, mask=None, dropout_rate=0.0, dtype=None, module=None, is_causal=False, **_
):
  """``nnx.MultiHeadAttention``'s ``attention_fn``: (B, T, heads, head_dim) in and out.

  The ViT blocks attend without dropout or sown weights, and with a boolean
  key mask only where ``model.token_drop`` hides a tail of the tokens; Flax's
  own function calls the same ``jax.nn.dot_product_attention`` with JAX's
  default implementation (XLA everywhere), so on the CPU the two agree bit for
  bit. Masked attention stays on XLA.
  """
  if dropout_rate or module is not None or is_causal:
    raise ValueError("the ViT's attention takes no causal mask, dropout or sown weights")
  query, key, value = promote_dtype((query, key, value), dtype=dtype)
  if mask is not None:
    return jax.nn.dot_product_attention(query, key, value, mask=mask)
  impl = attention_implementation(query.dtype, query.shape[-1])
  if impl is not None:
    try:
      return jax.nn.dot_product_attention(query, key, value, implementation=impl)
    except (NotImplementedError, RuntimeError):  # a cuDNN too old for these shapes: XLA's
      pass
  return jax.nn.dot_product_attention(query, key, value)


class GeGLU(nnx.Module):
  """UniTok's ``GeGluMlp`` (models/vitamin.py): LayerNorm (eps 1e-6), ``gelu_tanh(x W0) * (x W1)``, ``W2``."""

  def __init__(self, width: int, hidden: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = nnx.LayerNorm(width, epsilon=1e-6, **kw)
    self.w0 = nnx.Linear(width, hidden, **kw)
    self.w1 = nnx.Linear(width, hidden, **kw)
    self.w2 = nnx.Linear(hidden, width, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.norm(x)
    return self.w2(nnx.gelu(self.w0(x), approximate=True) * self.w1(x))


class AttnProjection(nnx.Module):
  """UniTok's ``AttnProjection`` (models/vqvae.py): a width-changing transformer block around the quantizer.

  ``proj(norm3(x)) + attn(norm1(x))``, then ``+ GeGLU(norm2(.))`` (hidden 2 x out);
  the norms are torch's default LayerNorm (eps 1e-5). The attention (``PlainAttention``)
  runs ``num_heads`` heads at the wider of the two widths (one bias-free qkv Linear, learned
  q and v biases, none on k); narrowing, it averages the heads (each then ``out_dim`` wide),
  widening, it concatenates them; then a Linear ``out_dim -> out_dim``.
  """

  def __init__(self, in_dim: int, out_dim: int, num_heads: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    inner = max(in_dim, out_dim)
    if inner % num_heads or (in_dim > out_dim and inner // num_heads != out_dim):
      # PlainAttention then pools the averaged heads (adaptive_avg_pool1d), which no published file needs.
      raise ValueError(f"AttnProjection {in_dim} -> {out_dim}: {num_heads} heads must be {out_dim} wide")
    self.num_heads, self.narrows = num_heads, in_dim > out_dim
    self.norm1 = nnx.LayerNorm(in_dim, epsilon=1e-5, **kw)
    self.norm2 = nnx.LayerNorm(out_dim, epsilon=1e-5, **kw)
    self.norm3 = nnx.LayerNorm(in_dim, epsilon=1e-5, **kw)
    self.qkv = nnx.Linear(in_dim, 3 * inner, use_bias=False, **kw)
    self.q_bias = nnx.Param(jnp.zeros((inner,), param_dtype))
    self.v_bias = nnx.Param(jnp.zeros((inner,), param_dtype))
    self.attn_proj = nnx.Linear(out_dim, out_dim, **kw)
    self.proj = nnx.Linear(in_dim, out_dim, **kw)
    self.mlp = GeGLU(out_dim, 2 * out_dim, **kw)

  def _attention(self, x: jax.Array) -> jax.Array:
    qkv = self.qkv(x)
    zero = jnp.zeros_like(self.q_bias[...])
    bias = jnp.concatenate([self.q_bias[...], zero, self.v_bias[...]]).astype(qkv.dtype)
    qkv = qkv + bias.reshape((1,) * (qkv.ndim - 1) + (-1,))
    q, k, v = jnp.split(qkv.reshape(*x.shape[:-1], 3, self.num_heads, -1), 3, axis=-3)
    h = dot_product_attention(q[..., 0, :, :], k[..., 0, :, :], v[..., 0, :, :])  # (B, N, heads, d)
    h = h.mean(axis=-2) if self.narrows else h.reshape(*h.shape[:-2], -1)
    return self.attn_proj(h)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.proj(self.norm3(x)) + self._attention(self.norm1(x))
    return x + self.mlp(self.norm2(x))


def make_projection(kind: str, in_dim: int, out_dim: int, **kw: Any) -> nnx.Module:
  """A ``PROJECTIONS`` row: ``nnx.Linear`` or ``AttnProjection`` (heads of the narrower width, as UniTok's)."""
  if kind == "linear":
    return nnx.Linear(in_dim, out_dim, **kw)
  if kind == "attn":
    return AttnProjection(in_dim, out_dim, max(in_dim, out_dim) // min(in_dim, out_dim), **kw)
  raise ValueError(f"ViT projection must be one of {PROJECTIONS}; got {kind!r}")


class Block(nnx.Module):
  """Pre-norm transformer block."""

  def __init__(
    self,
    width: int,
    mlp_dim: int,
    num_heads: int,
    *,
    family: Family = FAMILIES["vqtok"],
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.exact_gelu, self.quick_gelu = family.exact_gelu, family.quick_gelu
    self.norm1 = nnx.LayerNorm(width, epsilon=family.norm_eps, **kw)
    self.attn = nnx.MultiHeadAttention(
      num_heads=num_heads, in_features=width, decode=False, attention_fn=dot_product_attention, **kw
    )
    self.norm2 = nnx.LayerNorm(width, epsilon=family.norm_eps, **kw)
    if family.geglu:
      self.mlp, self.mlp1, self.mlp2 = GeGLU(width, mlp_dim, **kw), None, None
    else:
      self.mlp, self.mlp1, self.mlp2 = None, nnx.Linear(width, mlp_dim, **kw), nnx.Linear(mlp_dim, width, **kw)
    if family.layer_scale:
      self.ls1 = nnx.Param(jnp.ones((width,), param_dtype))
      self.ls2 = nnx.Param(jnp.ones((width,), param_dtype))
    else:
      self.ls1 = self.ls2 = None

  @staticmethod
  def _scale(h: jax.Array, ls: nnx.Param | None) -> jax.Array:
    return h if ls is None else h * ls[...].astype(h.dtype).reshape((1,) * (h.ndim - 1) + (-1,))

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    x = x + self._scale(self.attn(self.norm1(x), mask=mask), self.ls1)
    if self.mlp is not None:
      return x + self._scale(self.mlp(self.norm2(x)), self.ls2)
    h = self.mlp1(self.norm2(x))
    h = h * jax.nn.sigmoid(1.702 * h) if self.quick_gelu else nnx.gelu(h, approximate=not self.exact_gelu)
    h = self.mlp2(h)
    return x + self._scale(h, self.ls2)


class Transformer(nnx.Module):
  """``depth`` blocks followed by a final LayerNorm."""

  def __init__(
    self,
    width: int,
    depth: int,
    mlp_dim: int,
    num_heads: int,
    *,
    family: Family = FAMILIES["vqtok"],
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    if width % num_heads:
      raise ValueError(f"ViT width {width} is not divisible by num_heads {num_heads}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.ln_pre = nnx.LayerNorm(width, epsilon=family.norm_eps, **kw) if family.ln_pre else None
    self.blocks = nnx.List([Block(width, mlp_dim, num_heads, family=family, **kw) for _ in range(depth)])
    # Per-token, so normalising every output equals TiTok's ``ln_post`` on the kept tokens.
    self.norm = nnx.LayerNorm(width, epsilon=family.norm_eps, **kw)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``mask``: None, or (B, 1, 1, L) bool, the keys every token may attend to."""
    if self.ln_pre is not None:
      x = self.ln_pre(x)
    for block in self.blocks:
      x = block(x, mask)
    return self.norm(x)


def _grid(image_size: int, patch_size: int) -> int:
  if patch_size < 1 or image_size % patch_size:
    raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
  return image_size // patch_size


def _check_conv_factor(factor: int, patch_size: int, family: str) -> None:
  if factor != patch_size:
    raise ValueError(f"ViT family {family!r}: patch_size {patch_size} must be the MBConv stages' downsampling {factor}")


def unpatchify(x: jax.Array, g: int, p: int, c: int) -> jax.Array:
  """(B, g*g, p*p*c) patch vectors -> (B, g*p, g*p, c) image."""
  b = x.shape[0]
  x = x.reshape(b, g, g, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, g * p, g * p, c)


class _ViTBase(nnx.Module):
  """Shared constructor: geometry, sizes and the transformer trunk."""

  def __init__(
    self,
    image_size: int,
    patch_size: int,
    width: int,
    depth: int,
    mlp_dim: int,
    num_heads: int,
    family: str,
    posemb: str,
    dtype: Dtype,
    param_dtype: Dtype,
    rngs: nnx.Rngs,
  ):
    self.image_size, self.patch_size = int(image_size), int(patch_size)
    self.grid = _grid(self.image_size, self.patch_size)
    self.family = fam = get_family(family)
    self.transformer = Transformer(
      width, depth, mlp_dim, num_heads, family=fam, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )
    if fam.cls_token and posemb != "learn":
      raise ValueError(f"ViT family {family!r} has a learned position embedding; got posemb={posemb!r}")

  def _build_posemb(self, width: int, posemb: str, param_dtype: Dtype, rngs: nnx.Rngs) -> None:
    g = self.grid
    if self.family.cls_token:
      self.cls_token = nnx.Param(nnx.initializers.normal(stddev=width**-0.5)(rngs.params(), (1, width), param_dtype))
      self.posemb = PosEmbed(1, g * g + 1, width, posemb, param_dtype=param_dtype, rngs=rngs)
    else:
      self.cls_token = None
      self.posemb = PosEmbed(g, g, width, posemb, param_dtype=param_dtype, rngs=rngs)

  def _embed_grid(self, h: jax.Array) -> jax.Array:
    """Position-embeds (B, grid**2, width) tokens, behind the class token if the family has one."""
    if self.cls_token is not None:
      cls = jnp.broadcast_to(self.cls_token[...].astype(h.dtype)[None], (h.shape[0], 1, h.shape[-1]))
      h = jnp.concatenate([cls, h], axis=1)
    return self.posemb(h)

  def check_image(self, height: int, width: int) -> None:
    """ValueError unless the image is ``image_size x image_size``."""
    if (height, width) != (self.image_size, self.image_size):
      raise ValueError(f"ViT tokenizer is built for {self.image_size}x{self.image_size} images; got {height}x{width}")


class ViTEncoder(_ViTBase):
  """Patch embedding + transformer: (B, H, W, 3) -> (B, H/p, W/p, z_channels).

  With ``num_latent_tokens=K > 0`` it is TiTok's 1-D encoder and returns
  (B, K, z_channels) from the K learned latent tokens.

  Args:
    z_channels: output channels (quantizer input width).
    image_size: square input size the position embedding is built for.
    patch_size, width, depth, mlp_dim, num_heads: ViT sizes (``decode_variant``).
    num_latent_tokens: 0 for the 2-D grid, K for 1-D latent tokens.
    posemb: ``"learn"``, ``"sincos2d"`` or ``"none"``.
    conv_widths, conv_depths: family ``vitamin``: the MBConv stages' widths and
      blocks (UniTok's ViTamin-L: (160, 320) and (2, 4)); ``patch_size`` must
      be their downsampling, 2 ** (len + 2).
    projection: ``PROJECTIONS``: the head to ``z_channels``.
    in_channels: image channels.
    dtype / param_dtype: compute and parameter dtypes.
    rngs: parameter initialisation.
  """

  def __init__(
    self,
    z_channels: int,
    *,
    image_size: int,
    patch_size: int = 16,
    width: int = 768,
    depth: int = 12,
    mlp_dim: int = 3072,
    num_heads: int = 12,
    num_latent_tokens: int = 0,
    posemb: str = "learn",
    family: str = "vqtok",
    conv_widths: tuple[int, ...] = (),
    conv_depths: tuple[int, ...] = (),
    projection: str = "linear",
    in_channels: int = 3,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    super().__init__(image_size, patch_size, width, depth, mlp_dim, num_heads, family, posemb, dtype, param_dtype, rngs)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    p = self.patch_size
    self.in_channels = in_channels
    self.num_latent_tokens = int(num_latent_tokens)
    if self.family.conv_stem:
      self.patch_embed = mbconv.ConvStem(width, conv_widths, conv_depths, in_ch=in_channels, **kw)
      _check_conv_factor(self.patch_embed.factor, p, family)
    else:
      if conv_widths or conv_depths:
        raise ValueError(f"MBConv stages (model.conv_widths) need vit_family 'vitamin'; got {family!r}")
      self.patch_embed = nnx.Conv(
        in_channels, width, (p, p), strides=p, padding="VALID", use_bias=self.family.patch_bias, **kw
      )
    self._build_posemb(width, posemb, param_dtype, rngs)
    if self.family.legacy_latents and not self.num_latent_tokens:
      raise ValueError(f"ViT family {family!r} needs num_latent_tokens >= 1 (a 1-D tokenizer)")
    if self.num_latent_tokens < 0:
      raise ValueError(f"num_latent_tokens must be >= 0; got {num_latent_tokens}")
    if self.num_latent_tokens:
      init = nnx.initializers.normal(stddev=width**-0.5)
      self.latent_tokens = nnx.Param(init(rngs.params(), (self.num_latent_tokens, width), param_dtype))
      self.latent_posemb = PosEmbed(1, self.num_latent_tokens, width, "learn", param_dtype=param_dtype, rngs=rngs)
    self.head = make_projection(projection, width, z_channels, **kw)

  def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
    """Token layout for an image; ValueError unless it is the configured size."""
    self.check_image(height, width)
    if self.num_latent_tokens:
      return (self.num_latent_tokens,)
    return (self.grid, self.grid)

  def __call__(self, x: jax.Array) -> jax.Array:
    b = x.shape[0]
    h = self.patch_embed(x)
    h = self._embed_grid(h.reshape(b, self.grid * self.grid, -1))
    k = self.num_latent_tokens
    if k:
      lat = self.latent_posemb(self.latent_tokens[...].astype(h.dtype)[None])
      h = jnp.concatenate([h, jnp.broadcast_to(lat, (b,) + lat.shape[1:])], axis=1)
    h = self.transformer(h)
    if k:
      h = h[:, -k:]
      if self.family.legacy_latents:  # (B, K, width) memory read as (B, width, K): see Family
        h = h.reshape(b, h.shape[-1], k).transpose(0, 2, 1)
      return self.head(h)
    h = h[:, 1:] if self.cls_token is not None else h
    return self.head(h).reshape(b, self.grid, self.grid, -1)


class ViTDecoder(_ViTBase):
  """Transformer + Linear patch head: latent tokens -> (B, H, W, 3).

  Takes (B, H/p, W/p, z_channels) for the 2-D layout; with
  ``num_latent_tokens=K > 0`` takes (B, K, z_channels) and reconstructs from a
  grid of learned mask tokens (TiTok). Args as ``ViTEncoder``, and:

  Args:
    out_channels: image channels.
    out_codes: > 0: predict logits over this many proxy codes (TiTok) instead of pixels.
    head_hidden: > 0: a Linear of this width and tanh before the pixel head
      (BSQ-ViT's decoder ``ffn``, 3072 wide; transformer.py TransformerDecoder).
    token_drop: a name in ``TOKEN_DROPS`` (1-D only): how dropped tokens reach
      the decoder (``"nested"`` adds the learned ``drop_token``).
    conv_widths, conv_depths: family ``vitamin``: the upsampling MBConv stages
      (``mbconv.ConvHead``; UniTok's ViTamin-L decoder: (320, 160) and (4, 2)).
    projection: ``PROJECTIONS``: the embedding from ``z_channels``.
  """

  def __init__(
    self,
    z_channels: int,
    *,
    image_size: int,
    patch_size: int = 16,
    width: int = 768,
    depth: int = 12,
    mlp_dim: int = 3072,
    num_heads: int = 12,
    num_latent_tokens: int = 0,
    posemb: str = "learn",
    family: str = "vqtok",
    out_channels: int = 3,
    out_codes: int = 0,
    head_hidden: int = 0,
    token_drop: str = "",
    conv_widths: tuple[int, ...] = (),
    conv_depths: tuple[int, ...] = (),
    projection: str = "linear",
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    super().__init__(image_size, patch_size, width, depth, mlp_dim, num_heads, family, posemb, dtype, param_dtype, rngs)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    p = self.patch_size
    drop = check_token_drop(token_drop, int(num_latent_tokens))
    if drop is not None and drop.fill == "token":
      # FlexTok's ``dropout_mask_token``: trunc_normal_(std=0.02), the width of the quantised tokens.
      init = nnx.initializers.truncated_normal(stddev=0.02)
      self.drop_token = nnx.Param(init(rngs.params(), (1, 1, z_channels), param_dtype))
    else:
      self.drop_token = None
    if head_hidden < 0 or (head_hidden and out_codes):
      raise ValueError(f"head_hidden must be >= 0, and 0 with out_codes (TiTok's head); got {head_hidden}")
    self.z_channels = z_channels
    self.out_channels = out_channels
    self.out_codes = int(out_codes)
    self.num_latent_tokens = int(num_latent_tokens)
    self.embed = make_projection(projection, z_channels, width, **kw)
    self._build_posemb(width, posemb, param_dtype, rngs)
    if self.num_latent_tokens:
      init = nnx.initializers.normal(stddev=width**-0.5)
      self.mask_token = nnx.Param(init(rngs.params(), (1, 1, width), param_dtype))
      self.latent_posemb = PosEmbed(1, self.num_latent_tokens, width, "learn", param_dtype=param_dtype, rngs=rngs)
    if self.family.conv_stem:
      if self.out_codes or head_hidden or self.num_latent_tokens:
        raise ValueError(f"ViT family {family!r} decodes a 2-D grid to pixels with its MBConv stages")
      self.head_hidden = None
      self.head = mbconv.ConvHead(width, conv_widths, conv_depths, out_ch=out_channels, **kw)
      _check_conv_factor(self.head.factor, p, family)
    elif conv_widths or conv_depths:
      raise ValueError(f"MBConv stages (model.decoder_conv_widths) need vit_family 'vitamin'; got {family!r}")
    elif self.out_codes:
      # TiTok's proxy-code head (blocks.py TiTokDecoder ``ffn``): 1x1 convs width -> 2 width,
      # tanh, -> one logit per code of the MaskGIT VQGAN, at every patch position.
      self.head_hidden = nnx.Linear(width, 2 * width, **kw)
      self.head = nnx.Linear(2 * width, self.out_codes, **kw)
    elif head_hidden:
      self.head_hidden = nnx.Linear(width, head_hidden, **kw)
      self.head = nnx.Linear(head_hidden, p * p * out_channels, **kw)
    else:
      self.head_hidden = None
      self.head = nnx.Linear(width, p * p * out_channels, **kw)
    with_conv = self.family.out_conv and not self.out_codes
    self.out_conv = nnx.Conv(out_channels, out_channels, (3, 3), **kw) if with_conv else None
    #: attribute path of the last layer's kernel (adaptive GAN weight).
    self.last_layer_path = ("out_conv", "kernel") if self.out_conv is not None else ("head", "kernel")
    if self.family.conv_stem:
      self.last_layer_path = ("head", "stem", "conv2", "kernel")

  def _drop_tail(self, z: jax.Array, keep: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """``(z, key mask)`` for the first ``keep`` tokens of each image (all of ``z`` when None).

    A prefix shorter than K is decoded as it is (the tokens after it removed),
    or, with a ``drop_token``, padded to K with it; in training ``keep`` says
    how many of the K tokens each image keeps.
    """
    k = z.shape[1]
    if not 1 <= k <= self.num_latent_tokens:
      raise ValueError(f"the decoder takes 1 to {self.num_latent_tokens} latent tokens; got {k}")
    if self.drop_token is None:
      return z, None if keep is None else jnp.arange(k)[None, :] < keep[:, None]
    full = self.num_latent_tokens
    if k < full:
      keep = jnp.full((z.shape[0],), k, jnp.int32) if keep is None else jnp.minimum(keep, k)
      z = jnp.pad(z, ((0, 0), (0, full - k), (0, 0)))
    if keep is not None:
      kept = (jnp.arange(full)[None, :] < keep[:, None])[..., None]
      z = jnp.where(kept, z, self.drop_token[...].astype(z.dtype))
    return z, None

  def __call__(self, z: jax.Array, keep: jax.Array | None = None) -> jax.Array:
    """Images (B, H, W, out_channels), or with ``out_codes`` logits (B, H/p, W/p, out_codes).

    1-D: ``z`` is (B, k, z_channels), k <= K (a prefix decodes as ``TOKEN_DROPS``
    says); ``keep``: None, or (B,) int, the tokens each image keeps (training).
    """
    b, n = z.shape[0], self.grid * self.grid
    if self.num_latent_tokens:
      z, kept = self._drop_tail(z, keep)
      h = self.embed(z)
      # TiTok's ``latent_token_positional_embedding[:seq_len]``: a prefix takes the first rows.
      h = h + self.latent_posemb.embedding[...][:, : h.shape[1]].astype(h.dtype)
      mask = jnp.broadcast_to(self.mask_token[...].astype(h.dtype), (b, n, h.shape[-1]))
      mask = self._embed_grid(mask)
      c = mask.shape[1] - n  # the class token, if any
      attend = None
      if kept is not None:  # the grid (and class token) always; the latent tokens kept
        attend = jnp.concatenate([jnp.ones((b, c + n), bool), kept], axis=1)[:, None, None, :]
      h = self.transformer(jnp.concatenate([mask, h], axis=1), attend)[:, c : c + n]
    else:
      h = self.embed(z.reshape(b, -1, z.shape[-1]))
      h = self.transformer(self._embed_grid(h))
      h = h[:, h.shape[1] - n :]
      if self.family.conv_stem:
        return self.head(h.reshape(b, self.grid, self.grid, -1))
    if self.head_hidden is not None:
      h = jnp.tanh(self.head_hidden(h))
    if self.out_codes:
      return self.head(h).reshape(b, self.grid, self.grid, self.out_codes)
    out = unpatchify(self.head(h), self.grid, self.patch_size, self.out_channels)
    return out if self.out_conv is None else self.out_conv(out)


class FeatureDecoder(nnx.Module):
  """VQ-KD's decoder (BEiT v2 ``modeling_vqkd.py``): a ViT over the quantised tokens, before the task layer.

  BEiT's ``VisionTransformer`` with ``patch_size=1`` on the (h, w) code grid
  (``vqkd_encoder_base_decoder_1x768x12_*``: width 768, 1 block, 12 heads; the
  ``3x768x12`` models: 3 blocks): a linear patch embedding of each code, a
  class token, learned absolute position embeddings, pre-norm blocks (erf GELU,
  LayerNorm eps 1e-6, no LayerScale: ``init_values=0``) and, with
  ``use_mean_pooling``, ``fc_norm`` on the patch tokens (the class token's
  output is dropped). BEiT's attention has no key bias; these blocks have one
  (a value nothing imports). Codes (B, ..., code_dim) -> (B, ..., width).
  """

  FAMILY = Family(cls_token=True, exact_gelu=True)

  def __init__(self, code_dim: int, width: int, *, num_tokens: int, depth: int, num_heads: int, rngs: nnx.Rngs):
    self.patch_embed = nnx.Linear(code_dim, width, rngs=rngs)
    self.cls_token = nnx.Param(jax.random.normal(rngs.params(), (1, width)) * 0.02)
    self.pos = nnx.Param(jax.random.normal(rngs.params(), (num_tokens + 1, width)) * 0.02)
    self.transformer = Transformer(width, depth, 4 * width, num_heads, family=self.FAMILY, rngs=rngs)

  def __call__(self, codes: jax.Array) -> jax.Array:
    b, grid = codes.shape[0], codes.shape[1:-1]
    x = self.patch_embed(codes.reshape(b, -1, codes.shape[-1]))
    cls = jnp.broadcast_to(self.cls_token[...][None], (b, 1, x.shape[-1]))
    x = self.transformer(jnp.concatenate([cls, x], axis=1) + self.pos[...][None])
    return x[:, 1:].reshape(b, *grid, x.shape[-1])
