"""UniTok's multi-codebook quantizer is vqtok's grouped l2 VQ: parity with the authors' module.

UniTok (FoundationVision/UniTok ``models/quant.py``, ``VectorQuantizerM``) splits the channels
into ``num_codebooks`` chunks, each looked up in its own l2-normalised codebook of
``vocab_size / num_codebooks`` codes (argmax of the dot product with the normalised chunk), with
``beta * ||f - sg(q)||² + ||sg(f) - q||²`` and LlamaGen's entropy penalty (ε 1e-7 in the log) per
chunk, and averages the chunks' losses. In vqtok that is ``type="grouped"`` over
``type="vq", l2_normalize=True`` with the weights divided by the number of groups (Grouped sums
its groups' losses) and ``entropy_epsilon=1e-7`` — see ``unitok_spec``. Goldens:
scripts/parity/gen_unitok_quant.py (float32, the module's own dtype); measured: ids equal,
outputs 6e-8, losses within 4.3e-7 relative, the gradients to the features 1e-7 and to the codebooks
9.5e-6 (τ = 0.01 amplifies float32 rounding; 4.2e-7 at τ = 0.5).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import golden_cases

from vqtok.quantizers import build_quantizer

GOLDENS = os.path.join(os.path.dirname(__file__), "goldens", "unitok", "quantizer.npz")


def unitok_spec(vocab_size, num_codebooks, *, beta=0.25, le=0.0, e_temp=0.01):
  """UniTok's ``VectorQuantizerM(vocab_size, vocab_width, beta, le > 0, e_temp, num_codebooks)`` as a vqtok spec.

  ``le``: the trainer's ``wei_entropy`` (its loss is ``Lq + wei_entropy * Le``); the spec's loss is then that sum.
  """
  g = num_codebooks
  inner = {
    "type": "vq",
    "codebook_size": vocab_size // g,
    "l2_normalize": True,
    "commitment_weight": beta / g,
    "codebook_weight": 1.0 / g,
    "entropy_weight": le / g,
    "entropy_temperature": e_temp,
    "entropy_epsilon": 1e-7,
  }
  return {"type": "grouped", "num_groups": g, "quantizer": inner}


def rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def goldens():
  return golden_cases(GOLDENS)


@pytest.mark.parametrize("case", ["g4", "g2"])
def test_grouped_l2_vq_equals_unitoks_quantizer(goldens, case):
  g = goldens[case]
  groups, per, width = g["codebooks"].shape
  spec = unitok_spec(
    groups * per, groups, beta=float(g["beta"]), le=float(g["wei_entropy"]), e_temp=float(g["temperature"])
  )
  q = build_quantizer(spec, code_dim=groups * width, rngs=nnx.Rngs(0))
  upstream = jnp.asarray(g["upstream"])

  def objective(z, codebooks):
    m = nnx.clone(q)
    for i, sub in enumerate(m.quantizers):
      sub.codebook[...] = codebooks[i]
    z_q, out = m(z, train=True)
    return out.loss + jnp.sum(upstream * z_q), (z_q, out)

  (_, (z_q, out)), (g_z, g_c) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
    jnp.asarray(g["features"]), jnp.asarray(g["codebooks"])
  )
  # vqtok: (B, L, G) indices; UniTok's f_to_idx: (B, G, L).
  np.testing.assert_array_equal(np.moveaxis(np.asarray(out.indices), -1, 1), g["indices"])
  entropy = out.terms["entropy"] / groups  # Grouped sums its groups' terms; UniTok averages them
  vq = (float(g["beta"]) * out.terms["commitment"] + out.terms["codebook"]) / groups
  errors = {
    "output": rel(z_q, g["output"]),
    "vq_loss": rel(vq, g["vq_loss"]),
    "entropy_loss": rel(entropy, g["entropy_loss"]),
    "loss": rel(out.loss, g["loss"]),
    "grad_features": rel(g_z, g["grad_features"]),
    "grad_codebooks": rel(g_c, g["grad_codebooks"]),
  }
  print(case, {k: f"{v:.1e}" for k, v in errors.items()})
  # Both sides in float32; at UniTok's τ = 0.01 the entropy's logits are 100x the dot products, so the
  # codebook gradient carries float32 rounding amplified (9.5e-6 measured), the rest stays near 1e-7.
  assert max(v for k, v in errors.items() if not k.startswith("grad")) <= 1e-6, errors
  assert max(errors["grad_features"], errors["grad_codebooks"]) <= 3e-5, errors
  assert np.all(np.abs(np.asarray(g_c)).sum(-1) > 0)  # the entropy term reaches every code


def test_entropy_epsilon_changes_the_entropy_and_bad_values_are_refused():
  z = jax.random.normal(jax.random.key(0), (64, 8))
  terms = []
  for eps in (1e-7, 1e-2):
    spec = {"type": "vq", "codebook_size": 16, "l2_normalize": True, "entropy_weight": 1.0, "entropy_epsilon": eps}
    terms.append(float(build_quantizer(spec, code_dim=8, rngs=nnx.Rngs(0))(z, train=True)[1].terms["entropy"]))
  assert abs(terms[0] - terms[1]) > 1e-3
  with pytest.raises(ValueError, match=r"entropy_epsilon must be in \(0, 1\), got 0.0"):
    build_quantizer({"type": "vq", "codebook_size": 16, "entropy_epsilon": 0.0}, code_dim=8, rngs=nnx.Rngs(0))
