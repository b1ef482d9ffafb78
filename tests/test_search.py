"""Tests of the memory-bounded nearest-code search against NumPy brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from vqtok.quantizers.base import entropy
from vqtok.quantizers.search import choose_chunks, nearest_code


def _brute_force(z, c):
  """Exact argmin of squared distances in float64 (numpy's first-index ties)."""
  d = ((z[:, None, :].astype(np.float64) - c[None, :, :]) ** 2).sum(-1)
  return d.argmin(1), d.min(1)


@pytest.mark.parametrize(
  "n,k,chunk,token_chunk",
  [
    (37, 101, None, None),
    (37, 101, 7, None),
    (37, 101, 7, 5),
    (37, 101, 1, 1),
    (37, 101, 200, 3),
    (64, 128, 32, 64),
    (5, 2, 1, None),
  ],
)
def test_matches_brute_force_with_ties(n, k, chunk, token_chunk):
  # Small integers make every distance exact in f32 and create many ties,
  # so the lowest-index rule is checked across chunk boundaries.
  rng = np.random.default_rng(n * k)
  z = rng.integers(-2, 3, size=(n, 3)).astype(np.float32)
  c = rng.integers(-2, 3, size=(k, 3)).astype(np.float32)
  idx, dist = nearest_code(jnp.asarray(z), jnp.asarray(c), chunk_size=chunk, token_chunk_size=token_chunk)
  ref_i, ref_d = _brute_force(z, c)
  assert idx.dtype == jnp.int32 and dist.dtype == jnp.float32
  assert idx.shape == (n,) and dist.shape == (n,)
  np.testing.assert_array_equal(np.asarray(idx), ref_i)
  np.testing.assert_array_equal(np.asarray(dist), ref_d)


def test_duplicated_codes_pick_first_copy():
  c = np.zeros((10, 4), np.float32)
  c[3] = c[7] = 1.0  # two identical nearest codes in different chunks
  z = np.full((6, 4), 0.9, np.float32)
  idx, _ = nearest_code(jnp.asarray(z), jnp.asarray(c), chunk_size=4)
  np.testing.assert_array_equal(np.asarray(idx), np.full(6, 3))


@pytest.mark.parametrize("chunk,budget", [(None, 2**20), (48, 2**20), (None, 4096)])
def test_random_gaussian(chunk, budget):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(300, 16)).astype(np.float32)
  c = rng.normal(size=(1000, 16)).astype(np.float32)
  idx, dist = jax.jit(lambda a, b: nearest_code(a, b, chunk_size=chunk, max_block_bytes=budget))(z, c)
  ref_i, ref_d = _brute_force(z, c)
  np.testing.assert_allclose(np.asarray(dist), ref_d, rtol=1e-4, atol=1e-4)
  # Indices may only differ where the best two distances are within rounding.
  d64 = ((z[:, None].astype(np.float64) - c[None]) ** 2).sum(-1)
  gap = np.sort(d64, 1)[:, 1] - ref_d
  differ = np.asarray(idx) != ref_i
  assert np.all(gap[differ] < 1e-3)
  assert differ.mean() < 0.01


def test_bf16_input_and_no_gradient():
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(size=(20, 8)), jnp.bfloat16)
  c = jnp.asarray(rng.normal(size=(50, 8)), jnp.float32)
  idx, dist = nearest_code(z, c, chunk_size=16)
  ref_i, ref_d = _brute_force(np.asarray(z.astype(jnp.float32)), np.asarray(c))
  np.testing.assert_array_equal(np.asarray(idx), ref_i)
  assert dist.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(dist), ref_d, rtol=1e-4, atol=1e-4)
  gz, gc = jax.grad(lambda a, b: nearest_code(a, b)[1].sum(), argnums=(0, 1))(z.astype(jnp.float32), c)
  assert not np.any(np.asarray(gz)) and not np.any(np.asarray(gc))


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("chunk,token_chunk", [(None, None), (7, 16), (7, 5)])
def test_sharded_equals_brute_force(explicit, chunk, token_chunk):
  devices = np.array(jax.devices())
  if explicit:  # jax.make_mesh's default axis type
    mesh = jax.make_mesh((devices.size,), ("data",))
  else:
    mesh = jax.sharding.Mesh(devices, ("data",))
  rng = np.random.default_rng(3)
  z = rng.integers(-2, 3, size=(64, 3)).astype(np.float32)
  c = rng.integers(-2, 3, size=(100, 3)).astype(np.float32)
  zs = jax.device_put(z, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  idx, dist = jax.jit(lambda a, b: nearest_code(a, b, chunk_size=chunk, token_chunk_size=token_chunk))(zs, c)
  ref_i, ref_d = _brute_force(z, c)
  np.testing.assert_array_equal(np.asarray(idx), ref_i)
  np.testing.assert_array_equal(np.asarray(dist), ref_d)
  assert len(idx.sharding.device_set) == devices.size


def test_memory_is_bounded():
  # The full 4096 x 65536 f32 matrix would be 1 GiB; only compile, never run.
  budget = 4 * 2**20
  f = jax.jit(lambda a, b: nearest_code(a, b, max_block_bytes=budget))
  z = jax.ShapeDtypeStruct((4096, 64), jnp.float32)
  c = jax.ShapeDtypeStruct((65536, 64), jnp.float32)
  stats = f.lower(z, c).compile().memory_analysis()
  assert stats.temp_size_in_bytes < 4 * budget


def test_choose_chunks_respects_budget():
  for n, k, budget in [(8192, 2**18, 2**28), (10**6, 2**18, 2**28), (100, 1000, 2**28), (3, 7, 8), (5000, 3000, 2**20)]:
    chunk, tok = choose_chunks(n, k, max_block_bytes=budget)
    assert 1 <= chunk <= k and 1 <= tok <= n
    assert 4 * chunk * tok <= max(budget, 4 * chunk)
  assert choose_chunks(100, 1000) == (1000, 100)  # small: one block


def test_bad_arguments():
  z, c = jnp.zeros((4, 3)), jnp.zeros((5, 3))
  with pytest.raises(ValueError, match="dimension"):
    nearest_code(z, jnp.zeros((5, 2)))
  with pytest.raises(ValueError, match="expects"):
    nearest_code(z[0], c)
  with pytest.raises(ValueError, match="chunk_size"):
    nearest_code(z, c, chunk_size=0)
  with pytest.raises(ValueError, match="empty"):
    nearest_code(z, jnp.zeros((0, 3)))


def test_entropy_helper():
  rng = np.random.default_rng(2)
  p = rng.dirichlet(np.ones(6), size=4)
  p[0, 2] = 0.0
  p[0] /= p[0].sum()
  np.testing.assert_allclose(np.asarray(entropy(jnp.asarray(p))), scipy.stats.entropy(p, axis=-1), rtol=1e-5)
