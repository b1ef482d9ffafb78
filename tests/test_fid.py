"""Fréchet distance vs an eigen-decomposition reference; FID InceptionV3 checks.

Inception weights cannot be downloaded, so the conversion is run on random
tensors named and shaped exactly like pytorch-fid's ``pt_inception-2015-12-05``
state dict (table below, transcribed from pytorch-fid / torchvision), and
single layers are checked against NumPy convolutions on the torch layout.
"""

import numpy as np
import pytest
from flax import nnx

from vqtok import files
from vqtok.evaluation import (
  FeatureStats,
  InceptionV3,
  convert_inception_state_dict,
  feature_fn,
  fid_from_features,
  frechet_distance,
  load_inception,
  load_stats,
  resize_bilinear,
  save_stats,
)
from vqtok.evaluation import fid as fid_module
from vqtok.evaluation.inception import InceptionA, InceptionE

# ----------------------------------------------------------------- reference


def _ref_frechet(mu1, s1, mu2, s2):
  """tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), a symmetric PSD problem."""
  w, v = np.linalg.eigh(s1)
  r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  e = np.linalg.eigvalsh(r @ s2 @ r)
  d = mu1 - mu2
  return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(e, 0, None)).sum()


def _moments(f):
  return f.mean(0), np.cov(f, rowvar=False)


def test_frechet_distance_matches_reference():
  rng = np.random.default_rng(0)
  f1 = rng.normal(size=(300, 24))
  f2 = rng.normal(size=(250, 24)) @ rng.normal(size=(24, 24)) * 0.5 + 0.7
  got = frechet_distance(*_moments(f1), *_moments(f2))
  np.testing.assert_allclose(got, _ref_frechet(*_moments(f1), *_moments(f2)), rtol=1e-8)
  np.testing.assert_allclose(fid_from_features(f1, f2), got, rtol=1e-8)


def test_frechet_distance_rank_deficient():
  rng = np.random.default_rng(1)
  d = 32
  # Rank-8 features with different null spaces, plus a constant (zero-variance) dim.
  f1 = rng.normal(size=(400, 8)) @ rng.normal(size=(8, d))
  f2 = rng.normal(size=(300, 8)) @ rng.normal(size=(8, d)) + 0.3
  f1[:, 0] = f2[:, 0] = 2.0
  got = frechet_distance(*_moments(f1), *_moments(f2))
  assert np.isfinite(got)
  np.testing.assert_allclose(got, _ref_frechet(*_moments(f1), *_moments(f2)), rtol=1e-6)


@pytest.mark.parametrize("failure", ["nan", "complex"])
def test_frechet_distance_eps_fallback(monkeypatch, failure):
  """When sqrtm of the singular product fails, the eps*I offset is used."""
  rng = np.random.default_rng(2)
  f1 = rng.normal(size=(100, 4)) @ rng.normal(size=(4, 12))
  f2 = rng.normal(size=(100, 4)) @ rng.normal(size=(4, 12))
  real_sqrtm = fid_module.scipy.linalg.sqrtm
  calls = []

  def flaky_sqrtm(a):
    calls.append(a)
    if len(calls) > 1:
      return real_sqrtm(a)
    return np.full_like(a, np.nan) if failure == "nan" else a + 0.5j * np.eye(len(a))

  monkeypatch.setattr(fid_module.scipy.linalg, "sqrtm", flaky_sqrtm)
  m1, s1 = _moments(f1)
  m2, s2 = _moments(f2)
  got = frechet_distance(m1, s1, m2, s2, eps=1e-6)
  assert len(calls) == 2
  np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(12)) @ (s2 + 1e-6 * np.eye(12)))
  # The offset moves FID by O(sqrt(eps) * dim) at most.
  np.testing.assert_allclose(got, _ref_frechet(m1, s1, m2, s2), atol=1e-2)


def test_fid_of_a_set_against_itself_is_zero():
  rng = np.random.default_rng(3)
  f = rng.normal(size=(200, 16)) * 3 + 1
  assert abs(fid_from_features(f, f)) < 1e-6
  low_rank = rng.normal(size=(200, 4)) @ rng.normal(size=(4, 16))
  assert abs(fid_from_features(low_rank, low_rank)) < 1e-4


def test_feature_stats_running_equals_numpy(tmp_path):
  rng = np.random.default_rng(4)
  # A large offset checks the accumulation does not cancel catastrophically.
  batches = [rng.normal(size=(n, 10)) * 0.01 + 1000.0 for n in (7, 1, 30, 12)]
  stats = FeatureStats()  # dimension taken from the first batch
  for b in batches:
    stats.update(b.astype(np.float32) if len(b) == 1 else b)
  allf = np.concatenate([b if len(b) != 1 else b.astype(np.float32).astype(np.float64) for b in batches])
  assert stats.count == 50 and stats.dim == 10
  np.testing.assert_allclose(stats.mean(), allf.mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.covariance(), np.cov(allf, rowvar=False), rtol=1e-7, atol=1e-12)
  save_stats(str(tmp_path / "ref.npz"), stats)
  mu, sigma = load_stats(str(tmp_path / "ref.npz"))
  np.testing.assert_array_equal(mu, stats.mean())
  np.testing.assert_array_equal(sigma, stats.covariance())


def test_frechet_distance_rejects_non_psd():
  bad = -np.eye(3)  # sqrt of a negative-definite product is purely imaginary
  with pytest.raises(ValueError, match="imaginary"):
    frechet_distance(np.zeros(3), bad, np.zeros(3), np.eye(3))


def test_fid_input_errors(tmp_path):
  with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
    FeatureStats(4).update(np.zeros((3, 5)))
  stats = FeatureStats()
  stats.update(np.zeros((2, 3)))
  with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
    stats.update(np.zeros((2, 4)))
  with pytest.raises(ValueError, match="at least 2"):
    FeatureStats(4).covariance()
  with pytest.raises(ValueError, match="covariances"):
    frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    load_stats(str(tmp_path / "missing.npz"))


# ------------------------------------------------- pytorch-fid state dict table


def _basic(name, cin, cout, kh, kw=None):
  return [(name, cin, cout, kh, kw or kh)]


def _pytorch_fid_convs():
  """(torch prefix, in, out, kh, kw) of every BasicConv2d of FID Inception."""
  t = []
  t += _basic("Conv2d_1a_3x3", 3, 32, 3) + _basic("Conv2d_2a_3x3", 32, 32, 3)
  t += _basic("Conv2d_2b_3x3", 32, 64, 3) + _basic("Conv2d_3b_1x1", 64, 80, 1)
  t += _basic("Conv2d_4a_3x3", 80, 192, 3)
  for blk, cin, pf in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
    t += [
      (f"{blk}.branch1x1", cin, 64, 1, 1),
      (f"{blk}.branch5x5_1", cin, 48, 1, 1),
      (f"{blk}.branch5x5_2", 48, 64, 5, 5),
      (f"{blk}.branch3x3dbl_1", cin, 64, 1, 1),
      (f"{blk}.branch3x3dbl_2", 64, 96, 3, 3),
      (f"{blk}.branch3x3dbl_3", 96, 96, 3, 3),
      (f"{blk}.branch_pool", cin, pf, 1, 1),
    ]
  t += [
    ("Mixed_6a.branch3x3", 288, 384, 3, 3),
    ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
    ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3),
    ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3),
  ]
  for blk, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
    t += [
      (f"{blk}.branch1x1", 768, 192, 1, 1),
      (f"{blk}.branch7x7_1", 768, c7, 1, 1),
      (f"{blk}.branch7x7_2", c7, c7, 1, 7),
      (f"{blk}.branch7x7_3", c7, 192, 7, 1),
      (f"{blk}.branch7x7dbl_1", 768, c7, 1, 1),
      (f"{blk}.branch7x7dbl_2", c7, c7, 7, 1),
      (f"{blk}.branch7x7dbl_3", c7, c7, 1, 7),
      (f"{blk}.branch7x7dbl_4", c7, c7, 7, 1),
      (f"{blk}.branch7x7dbl_5", c7, 192, 1, 7),
      (f"{blk}.branch_pool", 768, 192, 1, 1),
    ]
  t += [
    ("Mixed_7a.branch3x3_1", 768, 192, 1, 1),
    ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
    ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1),
    ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
    ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1),
    ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3),
  ]
  for blk, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
    t += [
      (f"{blk}.branch1x1", cin, 320, 1, 1),
      (f"{blk}.branch3x3_1", cin, 384, 1, 1),
      (f"{blk}.branch3x3_2a", 384, 384, 1, 3),
      (f"{blk}.branch3x3_2b", 384, 384, 3, 1),
      (f"{blk}.branch3x3dbl_1", cin, 448, 1, 1),
      (f"{blk}.branch3x3dbl_2", 448, 384, 3, 3),
      (f"{blk}.branch3x3dbl_3a", 384, 384, 1, 3),
      (f"{blk}.branch3x3dbl_3b", 384, 384, 3, 1),
      (f"{blk}.branch_pool", cin, 192, 1, 1),
    ]
  return t


def _random_torch_state_dict(rng):
  sd = {}
  for name, cin, cout, kh, kw in _pytorch_fid_convs():
    # He-scaled so 94 random layers keep activations O(1).
    sd[f"{name}.conv.weight"] = rng.standard_normal((cout, cin, kh, kw), np.float32) * np.float32(
      np.sqrt(2.0 / (cin * kh * kw))
    )
    sd[f"{name}.bn.weight"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    sd[f"{name}.bn.bias"] = rng.normal(0, 0.1, cout).astype(np.float32)
    sd[f"{name}.bn.running_mean"] = rng.normal(0, 0.1, cout).astype(np.float32)
    sd[f"{name}.bn.running_var"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    sd[f"{name}.bn.num_batches_tracked"] = np.array(0)
  sd["fc.weight"] = np.zeros((1008, 2048), np.float32)
  sd["fc.bias"] = np.zeros((1008,), np.float32)
  return sd


@pytest.fixture(scope="module")
def torch_sd():
  return _random_torch_state_dict(np.random.default_rng(0))


@pytest.fixture(scope="module")
def inception_npz(torch_sd, tmp_path_factory):
  path = tmp_path_factory.mktemp("inception") / "inception.npz"
  np.savez(path, **convert_inception_state_dict(torch_sd))
  return str(path)


def test_inception_param_count_matches_table():
  abstract = nnx.eval_shape(lambda: InceptionV3(rngs=nnx.Rngs(0)))
  params = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
  n_params = sum(int(np.prod(v.shape)) for _, v in params)
  # conv kernels plus BN scale and bias, from the transcribed table.
  want = sum(co * ci * kh * kw + 2 * co for _, ci, co, kh, kw in _pytorch_fid_convs())
  assert n_params == want == 21_785_568


def _np_conv(x, w_oihw, stride, pad):
  """Cross-correlation of NHWC x with torch-layout weights, zero padding."""
  ph, pw = pad
  x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  o, _, kh, kw = w_oihw.shape
  ho = (x.shape[1] - kh) // stride + 1
  wo = (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, o))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
      out += patch @ w_oihw[:, :, i, j].T
  return out


def _np_basic(x, sd, name, stride=1, pad=(0, 0)):
  y = _np_conv(x, sd[f"{name}.conv.weight"].astype(np.float64), stride, pad)
  g, b = sd[f"{name}.bn.weight"], sd[f"{name}.bn.bias"]
  m, v = sd[f"{name}.bn.running_mean"], sd[f"{name}.bn.running_var"]
  return np.maximum((y - m) / np.sqrt(v + 1e-3) * g + b, 0)


def test_converted_layers_match_numpy_on_torch_layout(torch_sd, inception_npz):
  model = load_inception(inception_npz, resize_input=False)
  rng = np.random.default_rng(5)
  x = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
  np.testing.assert_allclose(
    np.asarray(model.Conv2d_1a_3x3(x)), _np_basic(x, torch_sd, "Conv2d_1a_3x3", stride=2), rtol=1e-4, atol=1e-4
  )
  # An asymmetric (1, 7) kernel catches a swapped H/W in the conversion.
  x = rng.normal(size=(1, 5, 9, 128)).astype(np.float32)
  np.testing.assert_allclose(
    np.asarray(model.Mixed_6b.branch7x7_2(x)),
    _np_basic(x, torch_sd, "Mixed_6b.branch7x7_2", pad=(0, 3)),
    rtol=1e-4,
    atol=1e-4,
  )


def test_inception_forward_from_converted_weights(inception_npz):
  model = load_inception(inception_npz, resize_input=False)
  x = np.random.default_rng(6).uniform(0, 255, (2, 75, 75, 3)).astype(np.float32)
  feats = np.asarray(feature_fn(model)(x))
  assert feats.shape == (2, 2048)
  assert np.isfinite(feats).all() and (feats >= 0).all() and feats.std() > 0
  # Different images, different features.
  assert np.abs(feats[0] - feats[1]).max() > 0
  with pytest.raises(ValueError, match="75x75"):
    model(x[:, :64, :64])


def _random_fill(model, rng):
  arrays = {}
  for path, v in nnx.to_flat_state(nnx.state(model)):
    key = files.name(path)
    arr = rng.uniform(0.5, 1.5, v.shape) if key.endswith("var") else rng.normal(0, 0.5, v.shape)
    arrays[key] = arr.astype(np.float32)
  return files.assign(model, arrays, source="test"), arrays


def _np_bn_relu(y, arrays, prefix):
  a = {k[len(prefix) + 1 :]: arrays[k].astype(np.float64) for k in arrays if k.startswith(prefix)}
  return np.maximum((y - a["bn.mean"]) / np.sqrt(a["bn.var"] + 1e-3) * a["bn.scale"] + a["bn.bias"], 0)


def test_fid_block_pools():
  rng = np.random.default_rng(7)
  x = rng.normal(size=(1, 5, 6, 4))
  # FIDInceptionA: 3x3 average pool that ignores the zero padding.
  block, arrays = _random_fill(nnx.eval_shape(lambda: InceptionA(4, 3, rngs=nnx.Rngs(0))), rng)
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ones = np.pad(np.ones((1, 5, 6, 1)), ((0, 0), (1, 1), (1, 1), (0, 0)))
  win = lambda a: sum(a[:, i : i + 5, j : j + 6] for i in range(3) for j in range(3))
  avg = win(xp) / win(ones)
  want = _np_bn_relu(avg @ arrays["branch_pool.conv.kernel"][0, 0].astype(np.float64), arrays, "branch_pool")
  got = np.asarray(block(x.astype(np.float32)))
  assert got.shape == (1, 5, 6, 64 + 64 + 96 + 3)
  np.testing.assert_allclose(got[..., -3:], want, rtol=1e-4, atol=1e-4)
  # FIDInceptionE_2: max pool in the pool branch.
  block, arrays = _random_fill(nnx.eval_shape(lambda: InceptionE(4, pool="max", rngs=nnx.Rngs(0))), rng)
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  mx = np.max([xp[:, i : i + 5, j : j + 6] for i in range(3) for j in range(3)], axis=0)
  want = _np_bn_relu(mx @ arrays["branch_pool.conv.kernel"][0, 0].astype(np.float64), arrays, "branch_pool")
  got = np.asarray(block(x.astype(np.float32)))
  assert got.shape == (1, 5, 6, 2048)
  np.testing.assert_allclose(got[..., -192:], want, rtol=1e-4, atol=1e-4)


def _np_resize_torch(x, out_h, out_w):
  """F.interpolate(mode='bilinear', align_corners=False) on NHWC."""

  def coords(n_in, n_out):
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0

  h0, h1, fh = coords(x.shape[1], out_h)
  w0, w1, fw = coords(x.shape[2], out_w)
  fh, fw = fh[None, :, None, None], fw[None, None, :, None]
  top = x[:, h0][:, :, w0] * (1 - fw) + x[:, h0][:, :, w1] * fw
  bot = x[:, h1][:, :, w0] * (1 - fw) + x[:, h1][:, :, w1] * fw
  return top * (1 - fh) + bot * fh


@pytest.mark.parametrize("size", [(13, 17), (5, 4)])
def test_resize_matches_torch_bilinear(size):
  x = np.random.default_rng(8).uniform(0, 1, (2, 8, 9, 3))
  got = np.asarray(resize_bilinear(x.astype(np.float32), size))
  np.testing.assert_allclose(got, _np_resize_torch(x, *size), atol=1e-5)


def test_inception_conversion_and_loading_errors(torch_sd, tmp_path):
  with pytest.raises(FileNotFoundError, match="convert_inception.py"):
    load_inception(str(tmp_path / "nope.npz"))
  with pytest.raises(ValueError, match="convert_inception.py"):
    load_inception("")
  with pytest.raises(ValueError, match="unexpected tensor"):
    convert_inception_state_dict({"Mixed_5b.branch1x1.weird": np.zeros(1)})
  arrays = convert_inception_state_dict(torch_sd)
  arrays.pop("Mixed_7c.branch_pool.bn.var")
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(ValueError, match="missing"):
    load_inception(str(tmp_path / "bad.npz"))


def test_convert_inception_script(torch_sd, tmp_path, monkeypatch, capsys):
  import importlib.util
  import pathlib

  path = pathlib.Path(__file__).parents[1] / "scripts" / "convert_inception.py"
  spec = importlib.util.spec_from_file_location("convert_inception", path)
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  monkeypatch.setattr(script, "read_torch_state_dict", lambda p: torch_sd)
  out = tmp_path / "inception.npz"
  script.main(["unused.pth", str(out)])
  printed = capsys.readouterr().out
  assert "470 arrays, 21,820,000 numbers" in printed
  assert "shape (1, 2048)" in printed and "all finite True" in printed
  with np.load(out) as f:
    np.testing.assert_array_equal(
      f["Mixed_6b.branch7x7_2.conv.kernel"], np.transpose(torch_sd["Mixed_6b.branch7x7_2.conv.weight"], (2, 3, 1, 0))
    )
