"""LPIPS-VGG16: conversion from torch-named random weights, forward, and maths.

Real weights cannot be downloaded; the random state dicts below use the exact
names and shapes of torchvision ``vgg16`` (``features.{i}``) and the lpips
package's ``weights/v0.1/vgg.pth`` (``lin{l}.model.1.weight``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vqtok import files
from vqtok.losses.perceptual import convert_lpips_state_dict, load_lpips, lpips_from_features

# torchvision vgg16().features: (index, in, out) of each 3x3 conv.
_VGG16_CONVS = [
  (0, 3, 64),
  (2, 64, 64),
  (5, 64, 128),
  (7, 128, 128),
  (10, 128, 256),
  (12, 256, 256),
  (14, 256, 256),
  (17, 256, 512),
  (19, 512, 512),
  (21, 512, 512),
  (24, 512, 512),
  (26, 512, 512),
  (28, 512, 512),
]
_LIN_CHANNELS = [64, 128, 256, 512, 512]
# lpips ScalingLayer constants, from the lpips package.
_SHIFT = np.array([-0.030, -0.088, -0.188])
_SCALE = np.array([0.458, 0.448, 0.450])


def _torch_state_dicts(rng):
  vgg = {}
  for i, cin, cout in _VGG16_CONVS:
    vgg[f"features.{i}.weight"] = rng.standard_normal((cout, cin, 3, 3), np.float32) * np.float32(
      np.sqrt(2.0 / (cin * 9))
    )
    vgg[f"features.{i}.bias"] = rng.normal(0, 0.05, cout).astype(np.float32)
  # The classifier is in the torchvision file but unused (its 100M-entry
  # matrices are left out here to keep the test small).
  vgg["classifier.6.bias"] = np.zeros((1000,), np.float32)
  lin = {
    f"lin{l}.model.1.weight": rng.uniform(0, 1, (1, c, 1, 1)).astype(np.float32) for l, c in enumerate(_LIN_CHANNELS)
  }
  return vgg, lin


@pytest.fixture(scope="module")
def torch_weights():
  return _torch_state_dicts(np.random.default_rng(0))


@pytest.fixture(scope="module")
def model(torch_weights, tmp_path_factory):
  path = tmp_path_factory.mktemp("lpips") / "lpips_vgg.npz"
  np.savez(path, **convert_lpips_state_dict(*torch_weights))
  return load_lpips(str(path))


# Jitted entry points: eager VGG op-by-op dispatch is slow on a small CPU.
_distance = nnx.jit(lambda m, a, b: m(a, b))
_features = nnx.jit(lambda m, a: m.features(a))
_grad = nnx.jit(lambda m, a, b: jax.grad(lambda z: m(z, b).sum())(a))


def _np_lpips(feats_x, feats_y, lin_weights):
  """Zhang et al. eq. 1 on NCHW features, as the lpips package computes it."""
  total = 0.0
  for fx, fy, w in zip(feats_x, feats_y, lin_weights):
    nx = fx / (np.sqrt((fx**2).sum(axis=1, keepdims=True)) + 1e-10)
    ny = fy / (np.sqrt((fy**2).sum(axis=1, keepdims=True)) + 1e-10)
    d = (nx - ny) ** 2
    weighted = (d * w.reshape(1, -1, 1, 1)).sum(axis=1)  # 1x1 conv, one output
    total = total + weighted.mean(axis=(1, 2))
  return total


def test_lpips_from_features_matches_numpy():
  rng = np.random.default_rng(1)
  shapes = [(2, 6, 5, 4), (2, 3, 3, 7), (2, 1, 2, 3)]
  fx = [rng.normal(size=s) for s in shapes]
  fy = [rng.normal(size=s) for s in shapes]
  w = [rng.uniform(0, 1, s[-1]) for s in shapes]
  got = lpips_from_features(
    [jnp.asarray(a, jnp.float32) for a in fx],
    [jnp.asarray(a, jnp.float32) for a in fy],
    [jnp.asarray(a, jnp.float32) for a in w],
  )
  to_nchw = lambda fs: [np.transpose(f, (0, 3, 1, 2)) for f in fs]
  np.testing.assert_allclose(np.asarray(got), _np_lpips(to_nchw(fx), to_nchw(fy), w), rtol=1e-5)


def test_lpips_gradient_finite_at_all_zero_features():
  """A pixel whose ReLU features are all 0 must not turn the gradient into NaN."""
  fx = jnp.zeros((1, 2, 2, 3)).at[0, 0, 0].set(1.0)
  fy = jnp.ones((1, 2, 2, 3))
  g = jax.grad(lambda a: lpips_from_features([a], [fy], [jnp.ones(3)]).sum())(fx)
  assert bool(jnp.isfinite(g).all())


def _np_conv3x3_relu(x, w_oihw, b):
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, wd = x.shape[1:3]
  out = sum(xp[:, i : i + h, j : j + wd] @ w_oihw[:, :, i, j].T.astype(np.float64) for i in range(3) for j in range(3))
  return np.maximum(out + b, 0)


def _np_vgg_taps(x, vgg):
  """relu1_2 ... relu5_3 of torchvision vgg16 features, NHWC, float64."""
  h = (x.astype(np.float64) - _SHIFT) / _SCALE
  taps = []
  for i, _, _ in _VGG16_CONVS:
    if i in (5, 10, 17, 24):  # a 2x2 max pool precedes these convs
      n, hh, ww, c = h.shape
      h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
    h = _np_conv3x3_relu(h, vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"])
    if i in (2, 7, 14, 21, 28):
      taps.append(h)
  return taps


def test_lpips_forward_from_converted_weights(model, torch_weights):
  vgg, lin = torch_weights
  rng = np.random.default_rng(2)
  x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1).astype(np.float32)
  d = np.asarray(_distance(model, x, y))
  assert d.shape == (2,) and np.isfinite(d).all() and (d > 0).all()
  # Zero up to float32 round-off (XLA may schedule the two VGG passes differently).
  np.testing.assert_allclose(np.asarray(_distance(model, x, x)), 0.0, atol=1e-10)
  np.testing.assert_allclose(np.asarray(_distance(model, y, x)), d, rtol=1e-5)
  # Every tap against a NumPy VGG16 on the torch-layout weights.
  fx, fy = _np_vgg_taps(x, vgg), _np_vgg_taps(y, vgg)
  got = _features(model, jnp.asarray(x))
  assert [f.shape for f in got] == [(2, 32 // 2**l, 32 // 2**l, c) for l, c in enumerate(_LIN_CHANNELS)]
  for g, want in zip(got, fx):
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
  nchw = lambda fs: [np.transpose(f, (0, 3, 1, 2)) for f in fs]
  want = _np_lpips(nchw(fx), nchw(fy), [lin[f"lin{l}.model.1.weight"].reshape(-1) for l in range(5)])
  np.testing.assert_allclose(d, want, rtol=1e-3)


def test_lpips_gradient_reaches_images(model):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.uniform(-1, 1, (1, 16, 16, 3)), jnp.float32)
  y = jnp.asarray(rng.uniform(-1, 1, (1, 16, 16, 3)), jnp.float32)
  g = _grad(model, x, y)
  assert g.shape == x.shape and bool(jnp.isfinite(g).all()) and float(jnp.abs(g).max()) > 0


def test_lpips_errors(torch_weights, tmp_path, model):
  with pytest.raises(FileNotFoundError, match="convert_lpips.py"):
    load_lpips(str(tmp_path / "missing.npz"))
  with pytest.raises(ValueError, match="perceptual_weight=0"):
    load_lpips("")
  vgg, lin = torch_weights
  bad = dict(lin, **{"lin2.model.1.weight": np.zeros((1, 128, 1, 1), np.float32)})
  with pytest.raises(ValueError, match="lin2"):
    convert_lpips_state_dict(vgg, bad)
  with pytest.raises(ValueError, match="features.28.bias"):
    convert_lpips_state_dict({k: v for k, v in vgg.items() if k != "features.28.bias"}, lin)
  with pytest.raises(ValueError, match="same shape"):
    model(jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 8, 3)))


def test_lpips_files_with_slash_names_read_the_same(torch_weights, tmp_path, model):
  """Files converted before names were dotted (``vgg/conv1_1/kernel``) load into the same weights."""
  arrays = convert_lpips_state_dict(*torch_weights)
  assert "vgg.conv1_1.kernel" in arrays and "lin4.kernel" in arrays
  np.savez(tmp_path / "old.npz", **{k.replace(".", "/"): v for k, v in arrays.items()})
  old = load_lpips(str(tmp_path / "old.npz"))
  for key, value in files.arrays(old).items():
    np.testing.assert_array_equal(value, files.arrays(model)[key], err_msg=key)


def test_convert_lpips_script(torch_weights, tmp_path, monkeypatch, capsys):
  import importlib.util
  import pathlib
  import sys

  scripts = pathlib.Path(__file__).parents[1] / "scripts"
  monkeypatch.syspath_prepend(str(scripts))
  spec = importlib.util.spec_from_file_location("convert_lpips", scripts / "convert_lpips.py")
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  vgg, lin = torch_weights
  monkeypatch.setattr(script, "read_torch_state_dict", lambda p: vgg if "vgg16" in p else lin)
  script.main(["vgg16-397923af.pth", "vgg.pth", str(tmp_path / "lpips.npz")])
  printed = capsys.readouterr().out
  assert "31 arrays, 14,716,160 numbers" in printed
  same = float(printed.split("LPIPS(x, x) = ")[1].split(",")[0])
  noisy = float(printed.split("x + noise) = ")[1])
  assert same < 1e-10 < noisy
  assert "convert_inception" in sys.modules
