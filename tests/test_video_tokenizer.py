"""Causal video tokenizers (the shared CNN with ``model.temporal_downsample``): the frame rule, an image as a
one-frame video, prefix causality, chunked = whole, quantizers on (B, T, h, w, d) latents, and config checks.
Parity with Open-MAGVIT2's own video tokenizer: tests/test_pretrained_open_magvit2_video.py.

Tiny models (8-16 channels, 16 px, 5-9 frames), run eagerly: no compile.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vqtok.config import default_config, validate_config
from vqtok.models import build_tokenizer, cnn

FAST_COMPILE = True
S_T = 2  # time strides (1, 2): the first level spatial only, as Open-MAGVIT2's video CNN


def video_config(family="magvit2", quantizer=None, time_padding="zeros", video_norm="frame"):
  c = default_config()
  c.image_size = 16
  c.model.update(
    channels=8,
    channel_mult=(1, 1, 2),  # f4: 4x4 latents at 16 px
    num_res_blocks=1,
    norm_groups=4,
    code_dim=4,
    cnn_family=family,
    temporal_downsample=(1, S_T),
    time_padding=time_padding,
    video_norm=video_norm,
  )
  c.quantizer = quantizer or {"type": "fsq", "levels": [5, 5, 5, 5]}
  return validate_config(c)


@pytest.fixture(scope="module")
def tok():
  return build_tokenizer(video_config(), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def clip():
  return jax.random.uniform(jax.random.key(1), (2, 1 + 4 * S_T, 16, 16, 3), minval=-1.0, maxval=1.0)


@pytest.fixture(scope="module")
def ids(tok, clip):
  return tok.encode(clip)


def test_shapes_and_decode(tok, clip, ids):
  assert tok.is_video and tok.temporal_factor == S_T
  assert ids.shape == (2, 5, 4, 4) and ids.dtype == jnp.int32
  video = tok.decode(ids)
  assert video.shape == clip.shape and video.dtype == jnp.float32
  recon, out = tok(clip)
  np.testing.assert_array_equal(np.asarray(out.indices), np.asarray(ids))
  np.testing.assert_allclose(np.asarray(video), np.asarray(recon), atol=1e-6)


@pytest.mark.parametrize("frames", [0, 2, 4, 6, 8])
def test_frame_rule(tok, frames):
  lo = 1 + max(frames - 1, 0) // S_T * S_T
  near = "count is 1" if frames == 0 else f"counts are {lo} and {lo + S_T}"
  with pytest.raises(ValueError, match=rf"takes 1 \+ k\*{S_T} frames .* got {frames} frames: the nearest valid {near}"):
    tok.encode(jnp.zeros((1, frames, 16, 16, 3)))


def test_image_is_one_frame_video(tok, clip, ids):
  # Frame 0 alone makes latent frame 0; a 4-D image is that one-frame video.
  np.testing.assert_array_equal(np.asarray(tok.encode(clip[:, :1])), np.asarray(ids[:, :1]))
  np.testing.assert_array_equal(np.asarray(tok.encode(clip[:, 0])), np.asarray(ids[:, 0]))
  image = tok.decode(ids[:, 0])
  assert image.shape == (2, 16, 16, 3)
  np.testing.assert_allclose(np.asarray(image), np.asarray(tok.decode(ids[:, :1])[:, 0]), atol=1e-6)


def test_prefix_causal(tok, clip, ids):
  # The tokens of the first 1 + k latent frames see only the first 1 + k*s_T frames; decoding likewise.
  for k in range(4):
    later = clip.at[:, 1 + k * S_T + 1 :].set(0.5) if 1 + k * S_T + 1 < clip.shape[1] else clip
    changed = clip.at[:, 1 + k * S_T :].multiply(-1.0)
    for other in (later, changed):
      np.testing.assert_array_equal(np.asarray(tok.encode(other)[:, : 1 + k]), np.asarray(ids[:, : 1 + k]))
  whole = tok.decode(ids)
  other = tok.decode(ids.at[:, 3:].set(0))
  np.testing.assert_array_equal(np.asarray(other[:, : 1 + 2 * S_T]), np.asarray(whole[:, : 1 + 2 * S_T]))
  assert not np.allclose(np.asarray(other[:, 1 + 2 * S_T :]), np.asarray(whole[:, 1 + 2 * S_T :]))


@pytest.mark.parametrize("chunk", [1, 2])  # 2: an uneven last chunk (5 latent frames)
def test_chunked_equals_whole(tok, clip, ids, chunk):
  np.testing.assert_array_equal(np.asarray(tok.encode(clip, chunk=chunk)), np.asarray(ids))
  np.testing.assert_allclose(np.asarray(tok.decode(ids, chunk=chunk)), np.asarray(tok.decode(ids)), atol=1e-5)


def test_chunk_leaves_the_tokenizer_whole(tok, clip, ids):
  tok.encode(clip, chunk=2)  # streams on a copy: no carried frames remain on tok
  assert not any(isinstance(v, cnn.TimeCarry) for _, v in nnx.iter_graph(tok))
  np.testing.assert_array_equal(np.asarray(tok.encode(clip)), np.asarray(ids))


def test_chunk_bad_input(tok, clip, ids):
  with pytest.raises(ValueError, match="chunk must be a positive number of latent frames"):
    tok.encode(clip, chunk=0)
  with pytest.raises(ValueError, match="chunk is for videos"):
    tok.encode(clip[:, 0], chunk=1)


@pytest.mark.parametrize(
  "quantizer", [{"type": "lfq", "bits": 4}, {"type": "vq", "codebook_size": 16}], ids=["lfq", "vq"]
)
def test_quantizers_on_video_latents(quantizer, clip):
  t = build_tokenizer(video_config(quantizer=quantizer), rngs=nnx.Rngs(0))
  ids = t.encode(clip)
  assert ids.shape == (2, 5, 4, 4)
  z_q, out = t.quantize(clip)
  assert z_q.shape == (2, 5, 4, 4, 4)
  np.testing.assert_array_equal(np.asarray(t.quantizer.indices_to_codes(ids)), np.asarray(z_q))
  np.testing.assert_array_equal(np.asarray(t.encode(clip[:, :3])), np.asarray(ids[:, :2]))


def test_replicate_padding_and_taming_family(clip):
  t = build_tokenizer(video_config(family="taming", time_padding="replicate"), rngs=nnx.Rngs(0))
  ids = t.encode(clip)
  assert ids.shape == (2, 5, 4, 4)
  np.testing.assert_array_equal(np.asarray(t.encode(clip[:, :3])), np.asarray(ids[:, :2]))
  np.testing.assert_array_equal(np.asarray(t.encode(clip, chunk=2)), np.asarray(ids))
  assert t.decode(ids, chunk=2).shape == clip.shape


def test_clip_norms_are_not_causal(clip):
  # Open-MAGVIT2's video tokenizer normalises over the whole clip: later frames move the first tokens' latents.
  t = build_tokenizer(video_config(video_norm="clip"), rngs=nnx.Rngs(0))
  z = t._latents(clip)
  assert not np.allclose(np.asarray(t._latents(clip.at[:, 3:].multiply(-1.0))[:, :2]), np.asarray(z[:, :2]))
  with pytest.raises(ValueError, match="chunk needs per-frame norms"):
    t.encode(clip, chunk=1)


def test_replicate_differs_from_zeros():
  # A constant video: replicate padding sees the first frame before it, zeros see black.
  x = jnp.full((1, 1, 8, 8, 3), 0.5)
  kw = dict(rngs=nnx.Rngs(0))
  zeros = cnn.CausalConv(3, 2, (3, 3), time_padding="zeros", **kw)
  rep = cnn.CausalConv(3, 2, (3, 3), time_padding="replicate", **kw)
  assert not np.allclose(np.asarray(zeros(x)), np.asarray(rep(x)))
  k = rep.kernel[...]
  two_d = jax.lax.conv_general_dilated(x[:, 0], k.sum(0), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  want = two_d + rep.bias[...].reshape(1, 1, 1, -1)
  np.testing.assert_allclose(np.asarray(rep(x)[:, 0]), np.asarray(want), atol=1e-6)


@pytest.mark.parametrize(
  "update, match",
  [
    (dict(temporal_downsample=(2,)), r"one time stride >= 1 per downsampling level: 2 for channel_mult"),
    (dict(temporal_downsample=(1, 0)), r"one time stride >= 1 per downsampling level"),
    (dict(cnn_family="maskgit"), r"causal video \(model.temporal_downsample\) is built for the CNN families"),
    (dict(time_padding="reflect"), r"model.time_padding='reflect' is not one of"),
    (dict(video_norm="batch"), r"model.video_norm='batch' is not one of"),
    (dict(encoder="vit", variant="S/4"), r"needs model.encoder='cnn'"),
  ],
)
def test_config_checks(update, match):
  c = video_config()
  c.model.update(**update)
  with pytest.raises(ValueError, match=match):
    validate_config(c)
