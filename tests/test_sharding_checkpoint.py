"""Mesh construction, FSDP shardings, and Orbax checkpoint round trips."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vqtok import sharding
from vqtok.training import checkpoint

ORBAX_REPLICA_PARALLEL = True  # Orbax's own save path on CPU (conftest.py): the round trips of this module


def test_make_mesh_shapes_and_errors():
  assert jax.device_count() == 8
  assert dict(sharding.make_mesh((-1, 1)).shape) == {"data": 8, "fsdp": 1}
  assert dict(sharding.make_mesh((2, -1)).shape) == {"data": 2, "fsdp": 4}
  assert sharding.make_mesh((1, 1)).size == 1
  with pytest.raises(ValueError, match="does not divide"):
    sharding.make_mesh((3, -1))
  with pytest.raises(ValueError, match="needs 16 devices"):
    sharding.make_mesh((4, 4))
  with pytest.raises(ValueError, match="at most one -1"):
    sharding.make_mesh((-1, -1))


def test_fsdp_splits_large_arrays_only():
  mesh = sharding.make_mesh((2, 4))
  tree = {"big": jnp.zeros((256, 96)), "odd": jnp.zeros((129, 127)), "small": jnp.zeros((8,))}
  sh = sharding.state_shardings(tree, mesh)
  assert sh["big"].spec == jax.sharding.PartitionSpec("fsdp", None)
  assert sh["odd"].spec == jax.sharding.PartitionSpec()  # no axis divisible by 4
  assert sh["small"].spec == jax.sharding.PartitionSpec()
  placed = jax.device_put(tree["big"], sh["big"])
  assert placed.addressable_shards[0].data.shape == (64, 96)


def test_global_batch_is_split_over_all_devices():
  mesh = sharding.make_mesh((-1, 1))
  x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  g = sharding.global_batch({"x": x}, mesh)["x"]
  assert g.shape == (16, 3)
  assert {s.data.shape for s in g.addressable_shards} == {(2, 3)}
  np.testing.assert_array_equal(np.asarray(g), x)


def test_checkpoint_round_trip_keeps_keys_shardings_and_last_n(tmp_path):
  mesh = sharding.make_mesh((4, 2))
  state = {
    "w": jnp.arange(64 * 32, dtype=jnp.float32).reshape(64, 32),
    "key": jax.random.key(3),
    "step": jnp.asarray(7, jnp.int32),
  }
  sh = sharding.state_shardings(state, mesh)
  state = jax.tree.map(jax.device_put, state, sh)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, state, {"data": ocp.args.JsonSave({"next_index": step * 10})})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3]
  restored = ckpt.restore(state)
  data = ckpt._manager.restore(3, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
  assert data == {"next_index": 30}
  np.testing.assert_array_equal(restored["w"], state["w"])
  assert restored["w"].sharding == state["w"].sharding
  assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(state["key"]))
  ckpt.close()


def test_half_written_checkpoint_is_ignored(tmp_path):
  directory = tmp_path / "ckpt"
  ckpt = checkpoint.Checkpointer(str(directory), keep=3, async_save=False)
  ckpt.save(1, {"a": jnp.ones(3)})
  ckpt.close()
  # What a kill during the rename-less phase leaves: a temporary directory.
  os.makedirs(directory / "2.orbax-checkpoint-tmp-123" / "state")
  ckpt = checkpoint.Checkpointer(str(directory), keep=3)
  assert ckpt.latest_step() == 1
  restored = ckpt.restore({"a": jnp.zeros(3)})
  np.testing.assert_array_equal(restored["a"], np.ones(3))
  ckpt.close()
