"""Tests for vqtok.models: CNN / ViT tokenizers, discriminators, presets.

Big presets are only traced (``nnx.eval_shape``); real allocations use tiny
models (16-32 px, <= 16 channels). Parameter counts are checked against
closed-form per-layer counts written here from the papers' layer lists.
"""

import importlib
import math
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vqtok import files, models
from vqtok.config import default_config

PRESETS = ["vqgan_f16", "llamagen_vq16", "magvit2_lfq", "magvit2_lfq_128", "bsq_vit", "titok_s128_pixel", "ibq"]
# Published tokenizer sizes we could check (LlamaGen, arXiv:2406.06525, Table 2).
PUBLISHED_PARAMS = {"llamagen_vq16": 72e6}
# (encoder, decoder, tokenizer) parameters of the reference's own torch modules, built
# from TencentARC/SEED-Voken b9a17ea: IBQ's Encoder, Decoder (+ quant_conv, post_quant_conv,
# embedding in the total; imagenet_ibqgan_262144.yaml) and Open-MAGVIT2's improved_model
# Encoder, Decoder (imagenet_lfqgan_256_L.yaml, imagenet_lfqgan_128_L.yaml).
REFERENCE_PARAMS = {
  "ibq": (46_752_256, 59_903_875, 173_896_579),
  "magvit2_lfq": (49_751_442, 65_376_387, 115_127_829),
  "magvit2_lfq_128": (48_422_162, 63_599_491, 112_021_653),
}


def _load_preset(name):
  return importlib.import_module(f"configs.{name}").get_config()


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _params(module):
  return nnx.state(module, nnx.Param).to_pure_dict()


# ---- tiny configs for real allocations ----


def tiny_config(encoder: str = "cnn", dtype: str = "float32") -> ml_collections.ConfigDict:
  c = default_config()
  c.model.dtype = dtype
  c.model.encoder = encoder
  if encoder == "cnn":
    c.image_size = 16
    c.model.channels = 8
    c.model.channel_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attention = True
    c.model.code_dim = 3
    c.model.z_channels = 6  # != code_dim: exercises the projections
  else:
    c.image_size = 16
    c.model.width, c.model.depth, c.model.mlp_dim = 16, 1, 32
    c.model.num_heads, c.model.patch_size = 2, 4
    c.model.code_dim = 3
    if encoder == "vit1d":
      c.model.num_latent_tokens = 5
  if encoder == "vit1d":  # TiTok-like: cosine VQ with a learned codebook
    c.quantizer = ml_collections.ConfigDict({"type": "vq", "codebook_size": 16, "l2_normalize": True})
  else:  # FSQ with 4 levels on a 3-dim latent: has Linear projections, so params
    c.quantizer = ml_collections.ConfigDict({"type": "fsq", "levels": (5, 5, 5, 5)})
  return c


def _images(c, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(-1, 1, (batch, c.image_size, c.image_size, 3)), jnp.float32)


def fast_rngs(seed: int = 0) -> nnx.Rngs:
  # Eager initialisation compiles one sampler per parameter shape; with the
  # "rbg" PRNG each compile is ~7x cheaper than threefry on CPU, which is most
  # of this file's run time. Same seed -> same parameters, as with threefry.
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


_TOKENIZERS = {}


def tiny_tokenizer(encoder="cnn", dtype="float32"):
  key = (encoder, dtype)
  if key not in _TOKENIZERS:
    _TOKENIZERS[key] = models.build_tokenizer(tiny_config(encoder, dtype), rngs=fast_rngs())
  return _TOKENIZERS[key]


# ---- closed-form parameter counts (taming / ViT layer lists) ----


def conv(k, cin, cout, bias=True):
  return k * k * cin * cout + (cout if bias else 0)


def gn(c):
  return 2 * c


def res(cin, cout):
  return gn(cin) + conv(3, cin, cout) + gn(cout) + conv(3, cout, cout) + (conv(1, cin, cout) if cin != cout else 0)


def attn(c):
  return gn(c) + 4 * (c * c + c)  # q, k, v, proj_out 1x1 convs


def cnn_encoder_count(ch, mult, nres, use_attn, z):
  n, cin = conv(3, 3, ch), ch
  for i, m in enumerate(mult):
    last = i == len(mult) - 1
    for _ in range(nres):
      n += res(cin, ch * m) + (attn(ch * m) if use_attn and last else 0)
      cin = ch * m
    if not last:
      n += conv(3, cin, cin)
  n += 2 * res(cin, cin) + (attn(cin) if use_attn else 0)
  return n + gn(cin) + conv(3, cin, z)


def cnn_decoder_count(ch, mult, nres, use_attn, z):
  cin = ch * mult[-1]
  n = conv(3, z, cin) + 2 * res(cin, cin) + (attn(cin) if use_attn else 0)
  for k, m in enumerate(reversed(mult)):
    for _ in range(nres + 1):
      n += res(cin, ch * m) + (attn(ch * m) if use_attn and k == 0 else 0)
      cin = ch * m
    if k < len(mult) - 1:
      n += conv(3, cin, cin)
  return n + gn(cin) + conv(3, cin, 3)


def vit_trunk_count(w, depth, mlp):
  block = 2 * (2 * w) + 4 * (w * w + w) + (w * mlp + mlp) + (mlp * w + w)
  return depth * block + 2 * w


def vit_encoder_count(w, depth, mlp, p, n_patches, d, k=0):
  return (p * p * 3 * w + w) + n_patches * w + vit_trunk_count(w, depth, mlp) + (w * d + d) + 2 * k * w


def vit_decoder_count(w, depth, mlp, p, n_patches, d, k=0):
  extra = (w + k * w) if k else 0  # mask token + latent position embedding
  return (d * w + w) + n_patches * w + vit_trunk_count(w, depth, mlp) + (w * p * p * 3 + p * p * 3) + extra


def expected_counts(c):
  m = c.model
  if m.encoder == "cnn":  # the taming family (MaskGIT's is checked in test_pretrained.py)
    z = m.get("z_channels", 0) or m.code_dim
    args = (m.channels, tuple(m.channel_mult), m.num_res_blocks, m.attention, z)
    return cnn_encoder_count(*args), cnn_decoder_count(*args)
  sizes = {"S": (384, 12, 1536), "B": (768, 12, 3072)}
  size, patch = m.variant.split("/")
  w, depth, mlp = sizes[size]
  p = int(patch)
  n = (c.image_size // p) ** 2
  k = m.get("num_latent_tokens", 0) if m.encoder == "vit1d" else 0
  return (vit_encoder_count(w, depth, mlp, p, n, m.code_dim, k), vit_decoder_count(w, depth, mlp, p, n, m.code_dim, k))


# ---- presets (abstract: no allocation) ----


@pytest.mark.parametrize("name", PRESETS)
def test_preset_shapes_and_param_counts(name):
  c = _load_preset(name)
  tok = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  x = jax.ShapeDtypeStruct((2, c.image_size, c.image_size, 3), jnp.float32)
  x_hat, out = nnx.eval_shape(lambda t, x: t(x, train=True), tok, x)
  assert x_hat.shape == x.shape and x_hat.dtype == jnp.float32
  assert out.indices.shape[: 1 + len(tok.token_shape)] == (2,) + tok.token_shape
  assert out.indices.dtype == jnp.int32
  params = _params(tok)
  enc, dec = _count(params["encoder"]), _count(params["decoder"])
  total = _count(params)
  print(
    f"{name}: tokens {tok.token_shape}, encoder {enc / 1e6:.2f}M, decoder {dec / 1e6:.2f}M, total {total / 1e6:.2f}M"
  )
  if c.model.get("cnn_family", "taming") == "taming" or c.model.encoder != "cnn":
    assert (enc, dec) == expected_counts(c)
  if name in PUBLISHED_PARAMS:  # whole tokenizer, as the paper reports it
    assert abs(total / PUBLISHED_PARAMS[name] - 1) < 0.02
  if name in REFERENCE_PARAMS:
    assert (enc, dec, total) == REFERENCE_PARAMS[name]


def test_preset_token_layouts_and_published_sizes():
  # Token layouts and the sizes that the papers state explicitly.
  layouts = {
    "vqgan_f16": (16, 16),
    "llamagen_vq16": (16, 16),
    "magvit2_lfq": (16, 16),
    "magvit2_lfq_128": (16, 16),
    "bsq_vit": (32, 32),
    "titok_s128_pixel": (128,),
    "ibq": (16, 16),
  }
  for name, want in layouts.items():
    c = _load_preset(name)
    if c.model.encoder == "cnn":
      enc = nnx.eval_shape(
        lambda: models.Encoder(1, channels=1, channel_mult=tuple(c.model.channel_mult), rngs=nnx.Rngs(0))
      )
      assert enc.latent_shape(c.image_size, c.image_size) == want
    elif c.model.encoder == "vit":
      p = models.decode_variant(c.model.variant)["patch_size"]
      assert (c.image_size // p,) * 2 == want
    else:
      assert (c.model.num_latent_tokens,) == want
  # taming VQGAN f16: encoder 29.3M, decoder 42.4M (their released model card).
  args = (128, (1, 1, 2, 2, 4), 2, True, 256)
  assert round(cnn_encoder_count(*args) / 1e5) == 293
  assert round(cnn_decoder_count(*args) / 1e5) == 424


def test_preset_validates_against_schema(tmp_path):
  from vqtok.config import validate_config

  lpips = tmp_path / "lpips.npz"  # presets with the reference's LPIPS weight need the converted weights
  lpips.write_bytes(b"")
  for name in PRESETS:
    c = _load_preset(name)
    if c.loss.perceptual_weight > 0:
      c.loss.lpips_weights = str(lpips)
    validate_config(c)


# ---- tiny real models ----


@pytest.mark.parametrize("encoder", ["cnn", "vit", "vit1d"])
def test_roundtrip_and_shapes(encoder):
  tok = tiny_tokenizer(encoder)
  c = tiny_config(encoder)
  x = _images(c)

  @nnx.jit  # one compilation instead of hundreds of eager ops
  def run(tok, x):
    x_hat, out = tok(x, train=False)
    idx = tok.encode(x)
    return x_hat, out, idx, tok.decode(idx)

  x_hat, out, idx, x_dec = run(tok, x)
  assert x_hat.shape == x.shape
  want = {"cnn": (8, 8), "vit": (4, 4), "vit1d": (5,)}[encoder]
  assert tok.token_shape == want and tok.num_tokens == math.prod(want)
  assert idx.shape == (2,) + want and idx.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(x_dec), np.asarray(x_hat))
  np.testing.assert_array_equal(np.asarray(out.indices), np.asarray(idx))


@pytest.mark.parametrize("encoder", ["cnn", "vit1d"])
def test_gradients_reach_every_parameter(encoder):
  tok = tiny_tokenizer(encoder)
  x = _images(tiny_config(encoder))
  graphdef, params, rest = nnx.split(tok, nnx.Param, ...)

  def loss(p):
    x_hat, out = nnx.merge(graphdef, p, rest)(x, train=True)
    return jnp.mean(jnp.abs(x_hat - x)) + out.loss

  grads = jax.jit(jax.grad(loss))(params).to_pure_dict()
  want = {"encoder", "quantizer", "decoder"} | ({"project_in", "project_out"} if encoder == "cnn" else set())
  assert want <= set(grads)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  zero = [jax.tree_util.keystr(k) for k, g in flat if not np.any(np.asarray(g))]
  assert not zero, f"no gradient reaches {zero}"


def test_sharded_equals_unsharded():
  tok = tiny_tokenizer("cnn")
  x = _images(tiny_config("cnn"), batch=8, seed=1)
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  graphdef, state = nnx.split(tok)

  @jax.jit
  def fwd(state, x):
    x_hat, out = nnx.merge(graphdef, state)(x)
    return x_hat, out.indices

  ref, ref_idx = fwd(state, x)
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  state_r = jax.device_put(state, NamedSharding(mesh, P()))
  got, got_idx = fwd(state_r, xs)
  assert len(got.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(got_idx), np.asarray(ref_idx))


def test_bfloat16_compute_float32_params():
  tok16 = tiny_tokenizer("cnn", "bfloat16")
  tok32 = tiny_tokenizer("cnn", "float32")
  dtypes = {p.dtype for p in jax.tree.leaves(_params(tok16))}
  assert dtypes == {jnp.dtype(jnp.float32)}
  x = _images(tiny_config("cnn"))
  idx = jnp.asarray(np.random.default_rng(0).integers(0, 5**4, (2, 8, 8)), jnp.int32)

  @nnx.jit
  def run(t, x, idx):
    h = t.encoder(x)
    return t(x)[0], h.dtype == jnp.bfloat16, h.astype(jnp.float32), t.decode(t.encode(x)), t.decode(idx)

  y16, is_bf16, z16, rt16, d16 = run(tok16, x, idx)
  _, _, z32, _, d32 = run(tok32, x, idx)  # same seed, so the same parameters
  assert bool(is_bf16) and y16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y16)))
  # Rounding flips some codes, so the two halves are compared separately:
  # encoder latents, and decoding of the same indices.
  rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
  assert rel(z16, z32) < 0.03
  assert rel(d16, d32) < 0.03
  np.testing.assert_array_equal(np.asarray(rt16), np.asarray(y16))


@pytest.mark.parametrize(
  "encoder,shape,match",
  [
    ("cnn", (1, 17, 16, 3), r"\(B, H, W, 3\) with H, W multiples of 2"),
    ("cnn", (1, 16, 16, 4), r"\(B, H, W, 3\) with H, W multiples of 2"),
    ("cnn", (16, 16, 3), r"\(B, H, W, 3\)"),
    ("vit", (1, 32, 32, 3), r"\(B, 16, 16, 3\)"),
    ("vit1d", (1, 12, 12, 3), r"\(B, 16, 16, 3\)"),
    ("vit", (1, 16, 16, 1), r"\(B, 16, 16, 3\)"),
  ],
)
def test_bad_images_raise(encoder, shape, match):
  tok = tiny_tokenizer(encoder)
  with pytest.raises(ValueError, match=match):
    tok(jnp.zeros(shape))
  with pytest.raises(ValueError, match=match):
    tok.encode(jnp.zeros(shape))


def test_residual_quantizer_indices_have_depth_axis():
  # Multi-level indices (B, h, w, levels) go through encode/decode unchanged.
  c = tiny_config("cnn")
  c.quantizer = ml_collections.ConfigDict(
    {"type": "residual", "num_levels": 3, "quantizer": {"type": "fsq", "levels": (5, 5, 5)}}
  )
  tok = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  idx = nnx.eval_shape(lambda t, x: t.encode(x), tok, x)
  assert idx.shape == (2, 8, 8, 3)
  assert nnx.eval_shape(lambda t, i: t.decode(i), tok, idx).shape == (2, 16, 16, 3)
  with pytest.raises(ValueError, match=r"\(B, 8, 8, 3\)"):
    nnx.eval_shape(lambda t, i: t.decode(i), tok, jax.ShapeDtypeStruct((2, 8, 8), jnp.int32))


def test_bad_indices_raise():
  tok = tiny_tokenizer("vit")
  with pytest.raises(ValueError, match=r"\(B, 4, 4\)"):
    tok.decode(jnp.zeros((1, 3, 4), jnp.int32))
  with pytest.raises(ValueError, match="out of range"):
    tok.decode(jnp.full((1, 4, 4), 5**4, jnp.int32))


def test_build_errors():
  c = tiny_config("cnn")
  c.model.encoder = "resnet"
  with pytest.raises(ValueError, match="model.encoder"):
    models.build_tokenizer(c, rngs=nnx.Rngs(0))
  c = tiny_config("vit")
  c.model.patch_size = 5
  with pytest.raises(ValueError, match="divisible by patch_size"):
    models.build_tokenizer(c, rngs=nnx.Rngs(0))
  c = tiny_config("cnn")
  c.image_size = 17
  with pytest.raises(ValueError, match="multiple of the CNN downsampling factor 2"):
    models.build_tokenizer(c, rngs=nnx.Rngs(0))


def test_decode_variant():
  assert models.decode_variant("B/16") == dict(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=16)
  assert models.decode_variant("S")["width"] == 384
  for bad in ("X/16", "B/x"):
    with pytest.raises(ValueError):
      models.decode_variant(bad)


def test_unpatchify_matches_numpy():
  from vqtok.models.vit import unpatchify

  g, p, c = 3, 2, 3
  x = np.random.default_rng(0).normal(size=(2, g * g, p * p * c)).astype(np.float32)
  want = np.zeros((2, g * p, g * p, c), np.float32)
  for t in range(g * g):  # token t is patch (row t // g, column t % g), row-major pixels
    r, q = divmod(t, g)
    want[:, r * p : (r + 1) * p, q * p : (q + 1) * p, :] = x[:, t].reshape(2, p, p, c)
  np.testing.assert_array_equal(np.asarray(unpatchify(jnp.asarray(x), g, p, c)), want)


def test_vit_attention_matches_einsum_softmax():
  """The blocks' attention: a plain softmax(q k^T / sqrt(head_dim)) v from the module's own weights."""
  from vqtok.models.vit import Block

  block = Block(32, 64, 4, rngs=nnx.Rngs(0))  # head_dim 8
  x = np.random.default_rng(0).normal(size=(2, 10, 32)).astype(np.float32)
  attend = nnx.jit(lambda m, a: m(a))
  got = np.asarray(attend(block.attn, jnp.asarray(x)))
  a = block.attn
  proj = lambda n: np.einsum("btd,dnh->btnh", x, np.asarray(n.kernel[...], np.float64)) + np.asarray(n.bias[...])
  q, k, v = proj(a.query), proj(a.key), proj(a.value)
  logits = np.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(8)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  heads = np.einsum("bnts,bsnh->btnh", probs, v)
  want = np.einsum("btnh,nho->bto", heads, np.asarray(a.out.kernel[...], np.float64)) + np.asarray(a.out.bias[...])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Flax's default attention_fn, the path before this one: the same XLA attention, bit for bit.
  a.attention_fn = nnx.dot_product_attention
  np.testing.assert_array_equal(np.asarray(attend(a, jnp.asarray(x))), got)


def test_vit_attention_implementation_per_platform():
  from vqtok.models.vit import attention_implementation, dot_product_attention

  assert attention_implementation(jnp.bfloat16, 64) is None  # the test machine's CPU: XLA
  assert attention_implementation(jnp.bfloat16, 64, platform="cuda") == "cudnn"
  assert attention_implementation(jnp.float16, 128, platform="cuda") == "cudnn"
  for dtype, head_dim in ((jnp.float32, 64), (jnp.bfloat16, 12), (jnp.bfloat16, 256)):
    assert attention_implementation(dtype, head_dim, platform="cuda") is None
  assert attention_implementation(jnp.bfloat16, 64, platform="tpu") is None
  q = jax.random.normal(jax.random.key(0), (1, 4, 2, 8))
  with pytest.raises(ValueError, match="no causal mask, dropout"):
    dot_product_attention(q, q, q, is_causal=True)
  # A key mask (token drop's hidden tail) attends only to the kept keys.
  keep = jnp.arange(4) < 3
  masked = dot_product_attention(q, q, q, mask=jnp.broadcast_to(keep, (1, 2, 4, 4)))
  np.testing.assert_allclose(masked, dot_product_attention(q, q[:, :3], q[:, :3]), rtol=1e-6, atol=1e-6)


def test_last_layer_path_matches_trainer_params():
  tok = tiny_tokenizer("cnn")
  node = _params(tok)
  for k in models.last_layer_path(tok):
    node = node[k]
  kernel = models.get_last_layer(tok)
  assert kernel.shape == (3, 3, 8, 3)  # 3x3 conv from the top-level width to RGB
  np.testing.assert_array_equal(np.asarray(node), np.asarray(kernel))


# ---- discriminators ----


def test_blur_downsample_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 8, 6, 3)).astype(np.float32)
  k1 = np.array([1, 3, 3, 1]) / 8.0
  pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = np.zeros((2, 4, 3, 3))
  for i in range(4):
    for j in range(3):
      win = pad[:, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4, :]
      want[:, i, j, :] = np.einsum("bhwc,h,w->bc", win, k1, k1)
  got = models.blur_downsample(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_patchgan_count_and_shape():
  # taming NLayerDiscriminator(ndf=64, n_layers=3): 2,764,737 params with
  # BatchNorm; GroupNorm has the same 2 params per channel.
  d = nnx.eval_shape(
    lambda: models.build_discriminator(
      {"type": "patchgan", "channels": 64, "num_layers": 3}, image_size=256, rngs=nnx.Rngs(0)
    )
  )
  want = (
    conv(4, 3, 64)
    + conv(4, 64, 128, False)
    + gn(128)
    + conv(4, 128, 256, False)
    + gn(256)
    + conv(4, 256, 512, False)
    + gn(512)
    + conv(4, 512, 1)
  )
  assert _count(_params(d)) == want
  out = nnx.eval_shape(lambda d, x: d(x), d, jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32))
  assert out.shape == (2, 30, 30, 1)  # pix2pix's 70x70-receptive-field patch grid


def test_stylegan_discriminator_runs_and_trains():
  d = models.build_discriminator({"type": "stylegan", "channels": 4, "num_layers": 2}, image_size=16, rngs=fast_rngs())
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)
  assert nnx.eval_shape(lambda d, x: d(x), d, x).shape == (2, 1)
  grads = nnx.jit(nnx.grad(lambda m: jnp.mean(m(x))))(d)
  assert all(np.any(np.asarray(g)) for g in jax.tree.leaves(nnx.state(grads, nnx.Param)))
  with pytest.raises(ValueError, match="16"):
    d(jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="discriminator type"):
    models.build_discriminator({"type": "bad"}, image_size=16, rngs=nnx.Rngs(0))


# ---- the Open-MAGVIT2 (magvit2) CNN family ----


def test_depth_to_space_matches_the_reference_layout():
  from vqtok.models.cnn import depth_to_space

  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 3, 5, 4 * 6)).astype(np.float32)
  # The reference's DCR order on channels-first data: view (b, 2, 2, c, h, w),
  # permute to (b, c, h, 2, w, 2), merge; written here on an NCHW copy.
  nchw = x.transpose(0, 3, 1, 2).reshape(2, 2, 2, 6, 3, 5)
  want = nchw.transpose(0, 3, 4, 1, 5, 2).reshape(2, 6, 6, 10).transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(np.asarray(depth_to_space(jnp.asarray(x), 2)), want)


def test_adaptive_group_norm_matches_numpy():
  from vqtok.models.cnn import AdaptiveGroupNorm

  rng = np.random.default_rng(1)
  norm = AdaptiveGroupNorm(5, 8, groups=4, rngs=nnx.Rngs(0))
  norm.gamma.kernel[...] = jnp.asarray(rng.standard_normal((5, 8)), jnp.float32)
  norm.beta.bias[...] = jnp.asarray(rng.standard_normal(8), jnp.float32)
  x = rng.standard_normal((2, 4, 6, 8))
  style = rng.standard_normal((2, 3, 3, 5))
  g = x.reshape(2, 4, 6, 4, 2)
  normed = ((g - g.mean((1, 2, 4), keepdims=True)) / np.sqrt(g.var((1, 2, 4), keepdims=True) + 1e-6)).reshape(x.shape)
  flat = style.reshape(2, 9, 5)
  scale = np.sqrt(flat.var(1, ddof=1) + 1e-6) @ np.asarray(norm.gamma.kernel) + np.asarray(norm.gamma.bias)
  bias = flat.mean(1) @ np.asarray(norm.beta.kernel) + np.asarray(norm.beta.bias)
  want = normed * scale[:, None, None, :] + bias[:, None, None, :]
  got = norm(jnp.asarray(x, jnp.float32), jnp.asarray(style, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_magvit2_family_round_trip_and_gradients():
  c = tiny_config()
  c.model.cnn_family = "magvit2"
  c.model.attention = False
  c.model.z_channels = 0
  c.model.code_dim = 4
  c.quantizer = ml_collections.ConfigDict({"type": "lfq", "bits": 4, "bit_order": "lsb_first"})
  tok = models.build_tokenizer(c, rngs=nnx.Rngs(0))
  dec = tok.decoder
  assert [type(u).__name__ for u in dec.up] == ["DepthToSpaceUpsample", "NoneType"]
  assert all(type(n).__name__ == "AdaptiveGroupNorm" for n in dec.level_norm)
  assert tok.encoder.conv_in.bias is None and dec.conv_in.bias is not None
  x = _images(c)
  recon, out = tok(x)
  assert recon.shape == x.shape and out.indices.shape == (2, 8, 8)

  def loss(t):
    r, o = t(x, train=True)
    return jnp.mean((r - x) ** 2) + o.loss

  grads = nnx.jit(nnx.grad(loss))(tok)
  norms = {"/".join(map(str, p)): float(jnp.abs(v[...]).sum()) for p, v in nnx.state(grads, nnx.Param).flat_state()}
  assert all(v > 0 for k, v in norms.items() if "level_norm" in k), norms


def test_magvit2_plain_is_magvit2_without_the_adaptive_norms():
  # SimVQ's CNN (an earlier Open-MAGVIT2): the same parameters but the decoder's level norms.
  def shapes(family):
    c = tiny_config()
    c.model.update(cnn_family=family, attention=False, z_channels=0, code_dim=4)
    abstract = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
    return {k: v for k, v in files.shapes(abstract).items() if not k.startswith("quantizer.")}

  plain, magvit2 = shapes("magvit2_plain"), shapes("magvit2")
  assert plain == {k: v for k, v in magvit2.items() if ".level_norm." not in k}
  assert len(plain) < len(magvit2)


def test_movq_is_taming_with_spatial_norms_in_the_decoder():
  # MoVQ's decoder: each GroupNorm becomes a SpatialNorm (the GroupNorm, then gamma and beta maps
  # from the code_dim-wide quantized latent); the encoder and the rest are taming's.
  def shapes(family):
    c = tiny_config()
    c.model.update(cnn_family=family, attention=True, z_channels=8, code_dim=4)
    abstract = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
    return {k: v for k, v in files.shapes(abstract).items() if not k.startswith("quantizer.")}

  movq, taming = shapes("movq"), shapes("taming")
  spatial = {k: v for k, v in movq.items() if k.endswith((".gamma.kernel", ".beta.kernel"))}
  assert spatial and all(k.startswith("decoder.") and v[0] == 4 for k, v in spatial.items())
  plain = {re.sub(r"(norm\w*)\.norm\.", r"\1.", k): v for k, v in movq.items()}
  plain = {k: v for k, v in plain.items() if ".gamma." not in k and ".beta." not in k}
  assert plain == taming


def test_flex_is_magvit2_with_biases_width_blocks_and_torch_eps():
  # GSQ's flexTokenizer: Open-MAGVIT2's CNN with biased convs, one more res block at each level whose
  # width changes (the block that changes it), and torch's GroupNorm eps (1e-5) but in the level norms.
  def build(family):
    c = tiny_config()
    c.model.update(cnn_family=family, channel_mult=(1, 2), attention=False, z_channels=0, code_dim=4)
    return nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))

  flex, magvit2 = build("flex"), build("magvit2")
  fs, ms = files.shapes(flex), files.shapes(magvit2)
  extra = {k for k in fs if k not in ms}
  # The width-changing levels (encoder level 1, decoder level 1) hold one block more.
  assert [len(r) for r in flex.encoder.res] == [len(r) + i for i, r in enumerate(magvit2.encoder.res)]
  assert [len(r) for r in flex.decoder.res] == [len(r) + i for i, r in enumerate(magvit2.decoder.res)]
  assert "encoder.conv_in.bias" in extra and "encoder.res.0.0.conv1.bias" in extra
  assert flex.encoder.res[1][0].norm1.epsilon == flex.decoder.norm_out.epsilon == flex.encoder.norm_out.epsilon == 1e-5
  assert flex.decoder.level_norm[0].norm.epsilon == magvit2.encoder.norm_out.epsilon == 1e-6
  c = tiny_config()
  c.model.update(cnn_family="flex", attention=True)
  with pytest.raises(ValueError, match="the 'flex' CNN family has no attention"):
    models.build_tokenizer(c, rngs=nnx.Rngs(0))
