"""Tests of vqtok.quantizers.interpolate against PyTorch's F.interpolate.

Two independent references: a direct per-pixel NumPy evaluation (float64) of
the definitions (adaptive average pooling; Keys' cubic at A = -0.75 on
clamped neighbours), and golden outputs of torch's own F.interpolate
(tests/goldens/interpolate, from scripts/parity/gen_interpolate.py).
"""

import itertools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqtok.quantizers.interpolate import area_matrix, bicubic_matrix, resize

SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PAIRS = list(itertools.product(SIZES, SIZES))
GOLDEN = pathlib.Path(__file__).parent / "goldens" / "interpolate" / "golden.npz"


def np_area(x, h, w):
  """Adaptive average pooling, one output cell at a time (x: (H, W, C))."""
  H, W = x.shape[:2]
  out = np.zeros((h, w, x.shape[2]))
  for i in range(h):
    i0, i1 = math.floor(i * H / h), math.ceil((i + 1) * H / h)
    for j in range(w):
      j0, j1 = math.floor(j * W / w), math.ceil((j + 1) * W / w)
      out[i, j] = x[i0:i1, j0:j1].mean(axis=(0, 1))
  return out


def keys_kernel(s, a=-0.75):
  s = abs(s)
  if s <= 1:
    return (a + 2) * s**3 - (a + 3) * s**2 + 1
  if s < 2:
    return a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a
  return 0.0


def np_bicubic(x, h, w):
  """Bicubic with half-pixel centres, 4x4 clamped taps, no antialiasing."""
  H, W = x.shape[:2]
  out = np.zeros((h, w, x.shape[2]))
  for i in range(h):
    si = (i + 0.5) * H / h - 0.5
    bi = math.floor(si)
    for j in range(w):
      sj = (j + 0.5) * W / w - 0.5
      bj = math.floor(sj)
      for di in range(-1, 3):
        for dj in range(-1, 3):
          wt = keys_kernel(si - (bi + di)) * keys_kernel(sj - (bj + dj))
          out[i, j] += wt * x[min(max(bi + di, 0), H - 1), min(max(bj + dj, 0), W - 1)]
  return out


NP_REF = {"area": np_area, "bicubic": np_bicubic}
MATRIX = {"area": area_matrix, "bicubic": bicubic_matrix}


def separable(mode, x, h, w):
  """What ``resize`` computes, in NumPy: the per-axis weight matrices applied to (H, W, C)."""
  return np.einsum("oh,pw,hwc->opc", MATRIX[mode](x.shape[0], h), MATRIX[mode](x.shape[1], w), x)


@pytest.mark.parametrize("mode", ["area", "bicubic"])
def test_weights_match_numpy_for_every_schedule_ratio(mode):
  rng = np.random.default_rng(1)
  worst = 0.0
  for n_in, n_out in PAIRS:
    x = rng.standard_normal((n_in, n_in, 3))
    worst = max(worst, float(np.max(np.abs(separable(mode, x, n_out, n_out) - NP_REF[mode](x, n_out, n_out)))))
  assert worst < 2e-5, worst
  # resize itself (jit, batch axes) on a few of the ratios.
  for n_in, n_out in [(1, 16), (3, 16), (13, 16), (16, 5), (16, 13), (10, 6)]:
    x = rng.standard_normal((2, n_in, n_in, 3)).astype(np.float32)
    got = np.asarray(jax.jit(resize, static_argnums=(1, 2))(jnp.asarray(x), (n_out, n_out), mode))
    assert got.shape == (2, n_out, n_out, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got[1], NP_REF[mode](x[1].astype(np.float64), n_out, n_out), atol=2e-5)


@pytest.mark.parametrize("mode", ["area", "bicubic"])
def test_resize_non_square_and_batch_axes(mode):
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 3, 7, 10, 2)).astype(np.float32)
  got = np.asarray(resize(jnp.asarray(x), (13, 4), mode))
  assert got.shape == (2, 3, 13, 4, 2)
  ref = NP_REF[mode](x[1, 2].astype(np.float64), 13, 4)
  np.testing.assert_allclose(got[1, 2], ref, atol=2e-5)


@pytest.mark.parametrize("mode", ["area", "bicubic"])
def test_resize_matches_torch_goldens(mode):
  g = np.load(GOLDEN)
  worst = 0.0
  for n_in in SIZES:
    x = g[f"in_{n_in}"]
    for n_out in SIZES:
      ref = g[f"{mode}_{n_in}_{n_out}"]
      got = separable(mode, x[0], n_out, n_out)[None]
      assert got.shape == ref.shape
      worst = max(worst, float(np.max(np.abs(got - ref))))
    # resize itself, on a non-square output (catches swapped axes).
    got = np.asarray(resize(jnp.asarray(x), (5, 13), mode))
    np.testing.assert_allclose(got, g[f"{mode}_{n_in}_5x13"], atol=5e-6)
  # float32 summation order differs from torch's kernel: a few ulp of values ~1-3.
  assert worst < 5e-6, worst


def test_resize_differs_from_jax_image_resize():
  # The reason this module exists: jax's cubic (a = -0.5, antialiased) is not torch's.
  g = np.load(GOLDEN)
  x = jnp.asarray(g["in_4"])
  ours = np.asarray(resize(x, 13, "bicubic"))
  theirs = np.asarray(jax.image.resize(x, (1, 13, 13, 1), "cubic"))
  assert np.max(np.abs(ours - theirs)) > 1e-3
  np.testing.assert_allclose(ours, g["bicubic_4_13"], atol=2e-6)


def test_resize_identity_and_errors():
  x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
  for mode in ("area", "bicubic"):
    np.testing.assert_array_equal(np.asarray(resize(x, 4, mode)), np.asarray(x))
  with pytest.raises(ValueError, match="mode"):
    resize(x, 2, "lanczos")
  with pytest.raises(ValueError, match="H, W, C"):
    resize(jnp.zeros((4, 4)), 2, "area")
  with pytest.raises(ValueError, match="output size"):
    resize(x, (0, 2), "area")
