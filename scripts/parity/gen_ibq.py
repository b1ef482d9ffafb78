"""Generate the IBQ quantizer goldens with the authors' own module (SEED-Voken).

Usage:
  /tmp/torchenv/bin/python scripts/parity/gen_ibq.py <seed_voken_checkout> [out.npz]

<seed_voken_checkout> is a checkout of github.com/TencentARC/SEED-Voken (the
directory holding ``src/IBQ``); ``IndexPropagationQuantize`` is imported from
it, nothing is re-implemented here. Needs torch, numpy and einops.

Runs the module in float64 on fixed float32 inputs, once per case, and saves
(default tests/goldens/ibq/quantizer.npz), for case ``<c>``:
  <c>/z               (B, d, h, w) float32 input latent (NCHW, as the module takes it)
  <c>/codebook        (K, d) float32 embedding weight
  <c>/upstream        (B, d, h, w) float32 weight of a linear function of z_q
  <c>/indices         (B*h*w,) int64 argmax codes
  <c>/z_q             (B, d, h, w) the quantized output
  <c>/quant_loss      the module's quant loss (its three MSE terms)
  <c>/sample_entropy, <c>/avg_entropy, <c>/entropy_loss   the entropy terms
  <c>/loss            quant_loss_weight * quant_loss + entropy_loss_weight * entropy_loss,
                      as VQLPIPSWithDiscriminator combines them (weights 1.0, 0.05:
                      configs/IBQ/gpu/imagenet_ibqgan_262144.yaml)
  <c>/grad_codebook   d(loss + sum(upstream * z_q)) / d codebook
  <c>/grad_z          the same, d / d z
  <c>/temperature ... the module arguments used
Reruns give byte-identical files.
"""

import os
import sys

import numpy as np

CHECKOUT = os.path.abspath(sys.argv[1])
OUT = sys.argv[2] if len(sys.argv) > 2 else "tests/goldens/ibq/quantizer.npz"
sys.path.insert(0, CHECKOUT)

import torch  # noqa: E402

from src.IBQ.modules.vqvae.quantize import IndexPropagationQuantize  # noqa: E402

QUANT_LOSS_WEIGHT = 1.0
ENTROPY_LOSS_WEIGHT = 0.05

# name: (codes K, dim d, batch, h, w, latent scale, code scale, entropy temperature)
# Scales put the logits / temperature at a few units, so neither softmax is
# one-hot and every code gets a gradient worth comparing.
CASES = {
  "t001": (96, 16, 2, 4, 4, 0.05, 0.25, 0.01),
  "t05": (64, 8, 2, 3, 5, 0.7, 0.6, 0.5),
}


def run(k, d, b, h, w, z_scale, c_scale, temperature, rng):
  z = (rng.standard_normal((b, d, h, w)) * z_scale).astype(np.float32)
  codebook = (rng.standard_normal((k, d)) * c_scale).astype(np.float32)
  upstream = rng.standard_normal((b, d, h, w)).astype(np.float32)
  module = IndexPropagationQuantize(
    k,
    d,
    beta=0.25,
    use_entropy_loss=True,
    entropy_temperature=temperature,
    sample_minimization_weight=1.0,
    batch_maximization_weight=1.0,
  ).double()
  with torch.no_grad():
    module.embedding.weight.copy_(torch.from_numpy(codebook.astype(np.float64)))
  zt = torch.from_numpy(z.astype(np.float64)).requires_grad_(True)
  z_q, (quant_loss, sample_entropy, avg_entropy, entropy_loss), (_, _, ind) = module(zt)
  loss = QUANT_LOSS_WEIGHT * quant_loss + ENTROPY_LOSS_WEIGHT * entropy_loss
  objective = loss + (z_q * torch.from_numpy(upstream.astype(np.float64))).sum()
  objective.backward()
  return {
    "z": z,
    "codebook": codebook,
    "upstream": upstream,
    "indices": ind.detach().numpy().astype(np.int64),
    "z_q": z_q.detach().numpy(),
    "quant_loss": quant_loss.detach().numpy(),
    "sample_entropy": sample_entropy.detach().numpy(),
    "avg_entropy": avg_entropy.detach().numpy(),
    "entropy_loss": entropy_loss.detach().numpy(),
    "loss": loss.detach().numpy(),
    "grad_codebook": module.embedding.weight.grad.numpy(),
    "grad_z": zt.grad.numpy(),
    "temperature": np.float64(temperature),
    "beta": np.float64(0.25),
    "entropy_loss_weight": np.float64(ENTROPY_LOSS_WEIGHT),
    "eps": np.float64(1e-5),  # compute_entropy_loss's default
  }


def main():
  torch.manual_seed(0)
  rng = np.random.default_rng(1234)
  out = {}
  for name, args in CASES.items():
    for key, value in run(*args, rng).items():
      out[f"{name}/{key}"] = value
  os.makedirs(os.path.dirname(os.path.abspath(OUT)), exist_ok=True)
  np.savez(OUT, **out)
  for name in CASES:
    print(name, {k.split("/")[1]: float(v) for k, v in out.items() if k.startswith(name) and np.ndim(v) == 0})


if __name__ == "__main__":
  main()
