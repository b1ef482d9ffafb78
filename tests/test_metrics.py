"""PSNR / SSIM against scikit-image, codebook statistics against np.bincount."""

import json
import math

import numpy as np
import pytest
import skimage.data
import skimage.transform
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vqtok.evaluation import CodebookUsage, psnr, ssim, to_uint8_range


def _photo_pair(h, w, seed):
  """A real photo resized to (h, w) and a noisy, shifted copy, in [0, 255]."""
  img = skimage.data.astronaut().astype(np.float64)
  img = skimage.transform.resize(img, (h, w, 3), preserve_range=True, anti_aliasing=True)
  rng = np.random.default_rng(seed)
  noisy = np.clip(img + rng.normal(0, 12, img.shape) + 5.0, 0, 255)
  return np.round(img), np.round(noisy)


def _random_pair(h, w, seed):
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 256, (h, w, 3)).astype(np.float64)
  b = np.clip(a + rng.normal(0, 30, a.shape), 0, 255)
  return a, b


def _sk_ssim(a, b):
  return structural_similarity(
    a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=255
  )


@pytest.mark.parametrize("h,w", [(11, 11), (32, 32), (24, 40), (64, 48)])
def test_psnr_ssim_match_skimage(h, w):
  pairs = [_photo_pair(h, w, 0), _random_pair(h, w, 1), _photo_pair(h, w, 2)]
  a = np.stack([p[0] for p in pairs])
  b = np.stack([p[1] for p in pairs])
  got_psnr = np.asarray(psnr(a, b))
  got_ssim = np.asarray(ssim(a, b))
  assert got_psnr.shape == got_ssim.shape == (3,)
  for i, (x, y) in enumerate(pairs):
    np.testing.assert_allclose(got_psnr[i], peak_signal_noise_ratio(x, y, data_range=255), rtol=1e-5)
    np.testing.assert_allclose(got_ssim[i], _sk_ssim(x, y), atol=1e-5)


def test_ssim_single_image_and_full_photo():
  a = skimage.data.chelsea().astype(np.float64)  # 300 x 451, non-square
  rng = np.random.default_rng(3)
  b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
  np.testing.assert_allclose(float(ssim(a, b)), _sk_ssim(a, b), atol=1e-5)
  np.testing.assert_allclose(float(ssim(a, a)), 1.0, atol=1e-6)
  assert math.isinf(float(psnr(a, a)))


def test_metric_input_errors():
  a = np.zeros((2, 16, 16, 3))
  with pytest.raises(ValueError, match="same shape"):
    psnr(a, a[:1])
  with pytest.raises(ValueError, match="at least 11x11"):
    ssim(a[:, :8], a[:, :8])
  with pytest.raises(ValueError, match="data_range"):
    ssim(a, a, data_range=0)
  with pytest.raises(ValueError, match=r"\(H, W, C\)"):
    psnr(a[0, 0], a[0, 0])


def test_to_uint8_range():
  x = np.array([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0], np.float32)
  want = np.clip(np.round((x.astype(np.float64) + 1) / 2 * 255), 0, 255)
  np.testing.assert_array_equal(np.asarray(to_uint8_range(x)), want)


def _np_stats(counts):
  p = counts / counts.sum()
  nz = p[p > 0]
  h = -(nz * np.log2(nz)).sum()
  return (counts > 0).mean(), h, 2.0**h


def test_codebook_usage_matches_bincount():
  rng = np.random.default_rng(0)
  k = 64
  # Skewed, with unused codes, over several batches of different size.
  batches = [
    rng.choice(k // 2, size=(n, 4, 5), p=np.arange(1, k // 2 + 1) / np.arange(1, k // 2 + 1).sum()) for n in (3, 1, 6)
  ]
  acc = CodebookUsage(k)
  for bt in batches:
    acc.update(bt)
  res = acc.result()
  counts = np.bincount(np.concatenate([b.ravel() for b in batches]), minlength=k)
  np.testing.assert_array_equal(acc.counts[0], counts)
  usage, h, ppl = _np_stats(counts)
  np.testing.assert_allclose(res["usage"], usage)
  np.testing.assert_allclose(res["entropy_bits"], h, rtol=1e-12)
  np.testing.assert_allclose(res["perplexity"], ppl, rtol=1e-12)
  assert res["num_images"] == 10
  assert res["bits_per_image"] == pytest.approx(20 * math.log2(k))


def test_codebook_usage_per_level():
  rng = np.random.default_rng(1)
  k, depth = 16, 3
  idx = rng.integers(0, k, (5, 7, depth))
  idx[..., 2] = rng.integers(0, 3, (5, 7))  # last level barely used
  acc = CodebookUsage(k, depth=depth)
  acc.update(idx[:2])
  acc.update(idx[2:])
  res = acc.result()
  for level in range(depth):
    usage, h, ppl = _np_stats(np.bincount(idx[..., level].ravel(), minlength=k))
    np.testing.assert_allclose(res["usage_per_level"][level], usage)
    np.testing.assert_allclose(res["entropy_bits_per_level"][level], h, rtol=1e-12)
    np.testing.assert_allclose(res["perplexity_per_level"][level], ppl, rtol=1e-12)
  assert res["bits_per_image"] == pytest.approx(7 * depth * math.log2(k))
  json.dumps(res)  # the evaluation report is written as JSON


def test_codebook_usage_errors():
  acc = CodebookUsage(8, depth=2)
  with pytest.raises(ValueError, match="out of range"):
    acc.update(np.full((1, 3, 2), 8))
  with pytest.raises(ValueError, match="depth=2"):
    acc.update(np.zeros((1, 3, 4), np.int32))
  with pytest.raises(ValueError, match="integers"):
    acc.update(np.zeros((1, 3, 2), np.float32))
  with pytest.raises(ValueError, match="before any update"):
    acc.result()
  with pytest.raises(ValueError, match="codebook_size"):
    CodebookUsage(0)
