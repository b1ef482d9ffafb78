"""LFQ's exact codebook entropy: its time alone and its share of the quantizer's step.

For each number of bits, times (fastest of ``--repeats`` after a compile):

* the exact codebook entropy alone, forward and backward (gradient with
  respect to the (tokens, bits) logits), and its compiled scratch memory;
* LFQ's forward+backward (``train=True``, gradient of ``loss + mean(z_q²)``)
  with the entropy on, and with ``entropy_weight=0``: the difference is the
  entropy's share of the quantizer step;
* with ``--step``, the same share of a whole training step (tokenizer update)
  of the tiny preset at 64 px, batch 16 (256 tokens per image, 4096 in all)
  with its quantizer swapped for LFQ of that many bits.

Run against another checkout to compare (``PYTHONPATH=/path/to/other``):

  python bench/entropy.py                       # 2048 tokens, 14 and 18 bits
  python bench/entropy.py --tokens=8192 --bits=18 --chunk=1024
  python bench/entropy.py --bits=18 --step
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import describe_machine
from quantizers import timed

from vqtok import sharding
from vqtok.quantizers import LFQ
from vqtok.quantizers.binary import binary_entropy_terms


@nnx.jit
def quantizer_step(model, z):
  def objective(model, z):
    z_q, out = model(z, train=True)
    return out.loss + jnp.mean(jnp.square(z_q))

  return nnx.grad(objective, argnums=(0, 1))(model, z)


def tiny_step_seconds(bits: int, entropy_weight: float, repeats: int) -> float:
  """Seconds of the tiny preset's tokenizer training step with an LFQ of ``bits`` bits."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import tiny  # noqa: PLC0415
  from vqtok.training.state import init_train_state  # noqa: PLC0415
  from vqtok.training.step import make_train_step  # noqa: PLC0415

  config = tiny.get_config()
  config.quantizer = {"type": "lfq", "bits": bits, "entropy_weight": entropy_weight}
  mesh = sharding.make_mesh((-1, 1))
  state, static = init_train_state(config, lambda a: sharding.state_shardings(a, mesh))
  s, b = config.image_size, config.training.batch_size
  x = np.random.default_rng(0).uniform(-1, 1, (b, s, s, 3)).astype(np.float32)
  batch = sharding.global_batch({"image": x}, mesh)
  step = jax.jit(make_train_step(config, static, with_gan=False, perceptual=None))
  return timed(lambda st: step(st, batch, None), state, repeats=repeats)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tokens", type=int, default=2048)
  p.add_argument("--bits", default="14,18")
  p.add_argument("--chunk", type=int, default=None, help="codes per block (default: the backend's)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--step", action="store_true", help="also the share of the tiny preset's training step")
  a = p.parse_args()
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  print(f"machine: {describe_machine()}; load avg {load:.1f}; tokens={a.tokens}\n")
  print("| bits | entropy fwd+bwd ms | entropy scratch MiB | LFQ step ms | LFQ step, no entropy, ms | entropy share |")
  print("|---:|---:|---:|---:|---:|---:|")
  for bits in [int(b) for b in a.bits.split(",")]:
    logits = 400.0 * jax.random.normal(jax.random.key(0), (a.tokens, bits))  # LFQ's 4 z / 0.01

    def codebook(x, bits=bits):
      return binary_entropy_terms(x, mode="exact", chunk_size=a.chunk)[1]

    grad = jax.jit(jax.value_and_grad(codebook))
    scratch = grad.lower(logits).compile().memory_analysis().temp_size_in_bytes / 2**20
    t_entropy = timed(grad, logits, repeats=a.repeats)
    z = jax.random.normal(jax.random.key(1), (a.tokens, bits))
    on = LFQ(bits=bits, temperature=0.01, chunk_size=a.chunk, rngs=nnx.Rngs(0))
    off = LFQ(bits=bits, temperature=0.01, entropy_weight=0.0, rngs=nnx.Rngs(0))
    t_on = timed(quantizer_step, on, z, repeats=a.repeats)
    t_off = timed(quantizer_step, off, z, repeats=a.repeats)
    share = (t_on - t_off) / t_on
    print(
      f"| {bits} | {t_entropy * 1e3:,.1f} | {scratch:,.0f} | {t_on * 1e3:,.1f} | {t_off * 1e3:,.2f} | {share:.1%} |",
      flush=True,
    )
  if a.step:
    print("\n| bits | tiny step with LFQ, ms | without its entropy, ms | entropy share |\n|---:|---:|---:|---:|")
    for bits in [int(b) for b in a.bits.split(",")]:
      t_on, t_off = (tiny_step_seconds(bits, w, a.repeats) for w in (0.1, 0.0))
      print(f"| {bits} | {t_on * 1e3:,.0f} | {t_off * 1e3:,.0f} | {(t_on - t_off) / t_on:.1%} |", flush=True)


if __name__ == "__main__":
  main()
