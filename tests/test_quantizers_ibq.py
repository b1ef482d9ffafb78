"""IBQ: parity with the authors' module, chunked equals dense, bounded memory at 2^18 codes."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import golden_cases

from vqtok.quantizers import IBQ, build_quantizer
from vqtok.quantizers.ibq import argmax_codes

GOLDENS = os.path.join(os.path.dirname(__file__), "goldens", "ibq", "quantizer.npz")


def rel(a, b):
  """Norm-wise relative error of ``a`` against the reference ``b``."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _with_codebook(q, codebook):
  q = nnx.clone(q)
  q.codebook[...] = codebook
  return q


def _objective(q, z, codebook, upstream):
  """loss + sum(upstream * z_q) on channels-last z: the golden's objective."""
  z_q, out = _with_codebook(q, codebook)(z, train=True)
  return out.loss + jnp.sum(upstream * z_q), out


@pytest.fixture(scope="module")
def goldens():
  return golden_cases(GOLDENS)


@pytest.mark.parametrize("case", ["t001", "t05"])
@pytest.mark.parametrize("chunk_size", [None, 40])
def test_loss_and_gradients_equal_the_reference(goldens, case, chunk_size):
  """SEED-Voken's IndexPropagationQuantize (float64, scripts/parity/gen_ibq.py) on the same inputs."""
  g = goldens[case]
  k, d = g["codebook"].shape
  q = IBQ(
    k,
    d,
    commitment_weight=1.0,
    codebook_weight=float(g["beta"]),
    entropy_weight=float(g["entropy_loss_weight"]),
    entropy_temperature=float(g["temperature"]),
    entropy_eps=float(g["eps"]),
    chunk_size=chunk_size,
    precision="highest",
    rngs=nnx.Rngs(0),
  )
  nhwc = lambda a: jnp.asarray(np.transpose(a, (0, 2, 3, 1)), jnp.float32)
  z, upstream, codebook = nhwc(g["z"]), nhwc(g["upstream"]), jnp.asarray(g["codebook"])
  (_, out), (g_z, g_codebook) = jax.value_and_grad(
    lambda z, c: _objective(q, z, c, upstream), argnums=(0, 1), has_aux=True
  )(z, codebook)
  np.testing.assert_array_equal(np.asarray(out.indices).reshape(-1), g["indices"])
  quant = out.terms["ibq"] + out.terms["commitment"] + q.codebook_weight * out.terms["codebook"]
  errors = {
    "quant_loss": rel(quant, g["quant_loss"]),
    "sample_entropy": rel(out.terms["per_sample_entropy"], g["sample_entropy"]),
    "avg_entropy": rel(out.terms["codebook_entropy"], g["avg_entropy"]),
    "entropy_loss": rel(out.terms["entropy"], g["entropy_loss"]),
    "loss": rel(out.loss, g["loss"]),
    "grad_codebook": rel(g_codebook, g["grad_codebook"]),
    "grad_z": rel(np.transpose(np.asarray(g_z), (0, 3, 1, 2)), g["grad_z"]),
  }
  print(case, chunk_size, {k: f"{v:.1e}" for k, v in errors.items()})
  assert max(errors.values()) <= 1e-5, errors
  # Every code receives gradient (index backpropagation), not only the chosen ones.
  assert np.all(np.abs(np.asarray(g_codebook)).sum(-1) > 0)


def _dense_objective(z, codebook, upstream, *, beta, entropy_weight, temperature, eps):
  """The IBQ loss written with the full tokens x codes matrix, by autodiff."""
  x = z.reshape(-1, z.shape[-1])
  logits = x @ codebook.T
  soft = jax.nn.softmax(logits, axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(logits, axis=-1), codebook.shape[0])
  z_q = (hard - jax.lax.stop_gradient(soft) + soft) @ codebook
  code = hard @ codebook
  sg = jax.lax.stop_gradient
  quant = jnp.mean((z_q - x) ** 2) + jnp.mean((sg(code) - x) ** 2) + beta * jnp.mean((code - sg(x)) ** 2)
  p = jax.nn.softmax(logits / temperature, axis=-1)
  sample = jnp.mean(-jnp.sum(p * jax.nn.log_softmax(logits / temperature, axis=-1), axis=-1))
  avg = jnp.mean(p, axis=0)
  codebook_entropy = -jnp.sum(avg * jnp.log(avg + eps))
  loss = quant + entropy_weight * (sample - codebook_entropy)
  return loss + jnp.sum(upstream.reshape(x.shape) * z_q)


@pytest.mark.parametrize("chunk_size", [7, 32, 100])
@pytest.mark.parametrize("entropy_weight", [0.0, 0.1])
def test_chunked_equals_dense(chunk_size, entropy_weight):
  k, d = 100, 8  # 7 and 32 do not divide 100: padded last chunk
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(4, 5, d)) * 0.5, jnp.float32)
  upstream = jnp.asarray(rng.normal(size=(4, 5, d)), jnp.float32)
  codebook = jnp.asarray(rng.normal(size=(k, d)) * 0.3, jnp.float32)
  kw = dict(beta=0.25, entropy_weight=entropy_weight, temperature=0.1, eps=1e-5)
  q = IBQ(
    k, d, entropy_weight=entropy_weight, entropy_temperature=0.1, chunk_size=chunk_size, precision="highest",
    rngs=nnx.Rngs(0),
  )  # fmt: skip
  with jax.default_matmul_precision("highest"):
    want, want_grads = jax.value_and_grad(lambda z, c: _dense_objective(z, c, upstream, **kw), argnums=(0, 1))(
      z, codebook
    )
  (got, _), got_grads = jax.value_and_grad(lambda z, c: _objective(q, z, c, upstream), argnums=(0, 1), has_aux=True)(
    z, codebook
  )
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
  for a, b in zip(got_grads, want_grads, strict=True):
    assert rel(a, b) < 1e-5


def test_eval_indices_round_trip_and_ties_go_low():
  q = IBQ(50, 6, chunk_size=16, rngs=nnx.Rngs(1))
  z = jnp.asarray(np.random.default_rng(2).normal(size=(3, 7, 6)), jnp.float32)
  z_q, out = q(z)
  want = np.argmax(np.asarray(z).reshape(-1, 6) @ np.asarray(q.codebook[...]).T, axis=-1)
  np.testing.assert_array_equal(np.asarray(out.indices).reshape(-1), want)
  np.testing.assert_array_equal(np.asarray(q.indices_to_codes(out.indices)), np.asarray(z_q))
  z_t, out_t = q(z, train=True)
  np.testing.assert_array_equal(np.asarray(out_t.indices), np.asarray(out.indices))
  np.testing.assert_array_equal(np.asarray(z_t), np.asarray(z_q))
  # A code repeated in a later chunk never wins over its first copy.
  codebook = jnp.concatenate([q.codebook[...], q.codebook[...]])
  np.testing.assert_array_equal(np.asarray(argmax_codes(z.reshape(-1, 6), codebook, chunk_size=16)), want)
  assert set(out.metrics) >= {"usage", "perplexity"}
  np.testing.assert_allclose(float(out.metrics["usage"]), len(np.unique(want)) / 50, rtol=1e-6)


def test_registry_and_bad_arguments():
  q = build_quantizer({"type": "ibq", "codebook_size": 32, "entropy_weight": 0.05}, code_dim=4, rngs=nnx.Rngs(0))
  assert isinstance(q, IBQ) and q.codebook_size == 32 and q.code_dim == 4
  for kwargs, match in [
    (dict(codebook_size=1), "codebook_size"),
    (dict(entropy_temperature=0.0), "entropy_temperature"),
    (dict(entropy_weight=-1.0), "entropy_weight"),
    (dict(chunk_size=0), "chunk_size"),
  ]:
    with pytest.raises(ValueError, match=match):
      IBQ(**{"codebook_size": 8, "code_dim": 4, **kwargs}, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="out of range"):
    q.indices_to_codes(jnp.array([32]))


def test_memory_2_18_codes_256_dim_8192_tokens():
  """Forward and backward at the reference's size stay far below the tokens x codes matrix (8 GiB)."""
  q = IBQ(2**18, 256, entropy_weight=0.05, rngs=nnx.Rngs(0))

  def f(q, z):
    z_q, out = q(z, train=True)
    return out.loss + jnp.sum(z_q)

  z = jax.ShapeDtypeStruct((8, 1024, 256), jnp.float32)
  graphdef, state = nnx.split(q)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
  step = jax.jit(jax.grad(lambda s, z: f(nnx.merge(graphdef, s), z), argnums=(0, 1)))
  mem = step.lower(abstract, z).compile().memory_analysis()
  # Arguments and outputs (codebook and its gradient, 256 MiB each) aside.
  assert mem.temp_size_in_bytes < 2**30, mem.temp_size_in_bytes


@pytest.mark.parametrize("explicit", [False, True])
def test_sharded_equals_unsharded_with_gradients(explicit):
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  devices = np.array(jax.devices())
  mesh = jax.make_mesh((devices.size,), ("data",)) if explicit else jax.sharding.Mesh(devices, ("data",))
  q = IBQ(40, 6, entropy_weight=0.05, entropy_temperature=0.5, chunk_size=16, rngs=nnx.Rngs(0))
  z = jnp.asarray(np.random.default_rng(3).normal(size=(16, 4, 6)), jnp.float32)

  @nnx.jit
  def step(m, x):
    def objective(m, x):
      z_q, out = m(x, train=True)
      return out.loss + jnp.sum(z_q**2), out

    return nnx.grad(objective, argnums=(0, 1), has_aux=True)(m, x)

  (g_m, g_z), out = step(nnx.clone(q), z)
  (g_m_s, g_z_s), out_s = step(nnx.clone(q), jax.device_put(z, NamedSharding(mesh, P("data"))))
  assert len(g_z_s.sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(out_s.indices), np.asarray(out.indices))
  np.testing.assert_allclose(float(out_s.loss), float(out.loss), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g_z_s), np.asarray(g_z), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(g_m_s.codebook[...]), np.asarray(g_m.codebook[...]), rtol=1e-5, atol=1e-6)
