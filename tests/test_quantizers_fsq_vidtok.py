"""FSQ with VidTok's entropy and commitment losses: parity with the authors' ``FSQRegularizer``.

Goldens: ``scripts/parity/gen_vidtok_fsq_loss.py`` on microsoft/VidTok d6ad92d
(vidtok/modules/regularizers.py), three cases: 8^6 codes on a video latent at τ 100
(step 0 of the annealing), 8-5-5-5 at τ 1 (step 700), 8-8-8 on images at τ 10 with
γ 0.5 (step 2,500), the recipe of configs/vidtok_fsq_causal_488_262144.yaml.
Measured (float32, CPU; the codes in one block and in several): ids and outputs
equal; entropies and commitment within 2.6e-6 relative, the loss within 1.7e-6, the
entropy weight exact; the gradient of loss + Σ cot·z_q within 4.6e-6 (norm-wise
relative), that of the loss alone within 1.8e-6 at τ 1 and 10 and 3.2e-5 at τ 100,
where the softmax is nearly one-hot over logits of ~1e3 and float32 is the limit:
the reference's own gradient is 1.2e-5 from a float64 evaluation of the same
formula, vqtok's 7.7e-6. Tolerances: 1e-5 relative (the τ 100 loss-only gradient 5e-5).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import golden_cases, preset

from vqtok import files
from vqtok.quantizers import FSQ, build_quantizer
from vqtok.quantizers.base import QuantizerStats

GOLDENS = os.path.join(os.path.dirname(__file__), "goldens", "vidtok_fsq_loss", "golden.npz")
CASES = ("big", "mid", "img")
#: configs/vidtok_fsq_causal_*.yaml's FSQRegularizer parameters, in vqtok's names.
RECIPE = dict(entropy_weight=0.1, commitment_weight=0.25, entropy_anneal_steps=2000, entropy_anneal_factor=3.0)


def rel(a, b):
  """Norm-wise relative error of ``a`` against the reference ``b``."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def goldens():
  return golden_cases(GOLDENS, CASES)


def _fsq(g, chunk_size=None):
  q = FSQ(
    tuple(int(l) for l in g["levels"]),
    bound="wide",  # VidTok's (lucidrains') bound
    codebook_entropy_weight=float(g["diversity_gamma"]),
    inv_temperature=float(g["inv_temperature"]),
    chunk_size=chunk_size,
    rngs=nnx.Rngs(0),
    **RECIPE,
  )
  q.step[...] = jnp.int32(g["n_steps"])
  return q


def _run(q, x, cot):
  """As the training step runs it: the module as pure dicts, merged inside ``jit``."""
  graphdef, params, rest = files.pure(q)

  def f(x, rest, with_cot):
    m = nnx.merge(graphdef, params, rest)
    z_q, out = m(x, train=True)
    return out.loss + with_cot * jnp.sum(cot * z_q), (z_q, out, files.pure(m)[2])

  grad = jax.jit(jax.value_and_grad(f, has_aux=True))
  (_, (z_q, out, stats)), g_total = grad(x, rest, 1.0)
  _, g_aux = grad(x, rest, 0.0)
  return z_q, out, stats, g_total, g_aux


# Blocks of codes: one block (the default here), and several with a partial last block.
@pytest.mark.parametrize("case,chunk_size", [("big", None), ("big", 50_000), ("mid", 97), ("img", 100)])
def test_parity_with_vidtok(goldens, case, chunk_size):
  g = goldens[case]
  q = _fsq(g, chunk_size)
  z_q, out, stats, g_total, g_aux = _run(q, jnp.asarray(g["x"]), jnp.asarray(g["cot"]))
  np.testing.assert_array_equal(np.asarray(out.indices), g["ids"])
  np.testing.assert_allclose(np.asarray(z_q), g["out"], rtol=0, atol=1e-7)
  for k in ("per_sample_entropy", "codebook_entropy", "commitment"):
    np.testing.assert_allclose(float(out.terms[k]), float(g[k]), rtol=1e-5, err_msg=k)
  gamma = float(g["diversity_gamma"])
  entropy = float(g["per_sample_entropy"]) - gamma * float(g["codebook_entropy"])
  np.testing.assert_allclose(float(out.terms["entropy"]), entropy, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(out.metrics["entropy_weight"]), float(g["entropy_weight"]), rtol=1e-6)
  np.testing.assert_allclose(float(out.loss), float(g["aux_loss"]), rtol=1e-5)
  assert rel(g_total, g["grad"]) < 1e-5
  assert rel(g_aux, g["grad_aux"]) < (5e-5 if case == "big" else 1e-5)
  assert int(stats["step"]) == int(g["n_steps"]) + 1  # the training call advanced the schedule


def test_annealing_and_step_counter():
  # VidTok: weight(n) = start - n / steps * (start - w) before `steps`, then w; start = factor * w.
  q = FSQ((3, 3), entropy_weight=0.1, entropy_anneal_steps=4, entropy_anneal_factor=3.0, rngs=nnx.Rngs(0))
  z = jnp.linspace(-1, 1, 8, dtype=jnp.float32).reshape(4, 2)
  _, out = q(z, train=False)  # evaluation neither adds the entropy nor advances the schedule
  assert int(q.step[...]) == 0 and "entropy" not in out.terms
  step = nnx.jit(lambda q, z: q(z, train=True)[1].metrics["entropy_weight"])
  weights = [float(step(q, z)) for _ in range(6)]
  np.testing.assert_allclose(weights, [0.3, 0.25, 0.2, 0.15, 0.1, 0.1], rtol=1e-6)
  assert int(q.step[...]) == 6


def test_off_by_default_and_from_config():
  z = jax.random.normal(jax.random.key(0), (2, 5, 4), jnp.float32)
  plain = FSQ((8, 5, 5, 5), rngs=nnx.Rngs(0))
  z_q, out = plain(z, train=True)
  assert float(out.loss) == 0.0 and out.terms == {} and set(out.metrics) == {"usage", "perplexity"}
  assert not jax.tree.leaves(nnx.state(plain, QuantizerStats))  # no step counter: the same state as before
  spec = {"type": "fsq", "levels": [8, 5, 5, 5], "bound": "paper", **RECIPE}
  q = build_quantizer(spec, code_dim=4, rngs=nnx.Rngs(0))
  z_q2, out2 = nnx.jit(lambda q, z: q(z, train=True))(q, z)
  np.testing.assert_array_equal(np.asarray(z_q2), np.asarray(z_q))
  assert float(out2.loss) != 0 and set(out2.terms) >= {"commitment", "entropy"}


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(entropy_weight=-0.1),
    dict(commitment_weight=-1.0),
    dict(codebook_entropy_weight=float("nan")),
    dict(entropy_anneal_factor=-3.0),
    dict(inv_temperature=0.0),
    dict(entropy_anneal_steps=-1),
    dict(entropy_anneal_steps=2.5),
    dict(chunk_size=0),
  ],
)
def test_bad_values_refused(kwargs):
  name = next(iter(kwargs))
  with pytest.raises(ValueError, match=f"FSQ {name} must be"):
    FSQ((8, 8), rngs=nnx.Rngs(0), **kwargs)


def test_vidtok_preset_trains_with_the_references_fsq_losses(goldens):
  # configs/vidtok_fsq_488.py against the values gen_vidtok_fsq_loss.py read from the reference's YAMLs.
  with np.load(GOLDENS) as f:
    recipe = dict(zip(f["recipe_keys"].tolist(), f["recipe"].tolist()))
  c = preset("vidtok_fsq_488", None).quantizer
  assert c.bound == "wide"
  assert c.entropy_weight == recipe["entropy_loss_weight"] and c.commitment_weight == recipe["commitment_loss_weight"]
  assert c.entropy_anneal_steps == recipe["entropy_loss_annealing_steps"]
  assert c.entropy_anneal_factor == recipe["entropy_loss_annealing_factor"]
  q = build_quantizer(c, code_dim=6, rngs=nnx.Rngs(0))
  assert q.codebook_entropy_weight == 1.0 and q.inv_temperature == 100.0  # diversity_gamma, forward's default
