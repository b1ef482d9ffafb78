"""Generate the UniTok multi-codebook quantizer goldens with the authors' own module.

Usage:
  /tmp/torchenv/bin/python scripts/parity/gen_unitok_quant.py <unitok_checkout> [out.npz]

<unitok_checkout> is an export of github.com/FoundationVision/UniTok at
bb8012e8e8d7be66928bedd80506c56a55ea6305 (the directory holding ``models/quant.py``);
``VectorQuantizerM`` is loaded from that file (its only project import,
``utils.dist``, is stubbed: one process), nothing is re-implemented here. Needs
torch and numpy.

The module casts to float32 itself, so it runs in float32 on fixed inputs, in
training mode, once per case, and saves (default tests/goldens/unitok/quantizer.npz),
for case ``<c>``:
  <c>/features      (B, L, C) float32 input (UniTok's token layout)
  <c>/codebooks     (G, K/G, C/G) float32 raw embedding weights (normalised inside)
  <c>/upstream      (B, L, C) float32 weight of a linear function of the output
  <c>/indices       (B, G, L) int64 ``f_to_idx``
  <c>/output        (B, L, C) the quantized features (straight-through)
  <c>/vq_loss       mean over codebooks of beta * ||f - sg(q)||^2 + ||sg(f) - q||^2 (MSE)
  <c>/entropy_loss  mean over codebooks of get_entropy_loss (per-sample minus codebook entropy)
  <c>/loss          vq_loss + wei_entropy * entropy_loss (trainer.py's Lq and Le weights 1 and WEI_ENTROPY)
  <c>/grad_features d(loss + sum(upstream * output)) / d features
  <c>/grad_codebooks the same, d / d codebooks (raw weights)
  <c>/beta, <c>/temperature, <c>/wei_entropy   the arguments used
Reruns give byte-identical files.
"""

import importlib.util
import os
import sys
import types

import numpy as np

CHECKOUT = os.path.abspath(sys.argv[1])
OUT = sys.argv[2] if len(sys.argv) > 2 else "tests/goldens/unitok/quantizer.npz"

import torch  # noqa: E402

utils = types.ModuleType("utils")
utils.dist = types.SimpleNamespace(initialized=lambda: False)
sys.modules["utils"] = utils
spec = importlib.util.spec_from_file_location("unitok_quant", os.path.join(CHECKOUT, "models", "quant.py"))
quant = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quant)

# name: (vocab_size K, vocab_width C, num_codebooks G, batch, tokens L, beta, entropy temperature, wei_entropy)
CASES = {
  "g4": (64, 16, 4, 2, 10, 0.25, 0.01, 0.1),  # UniTok's temperature (e_temp 0.01)
  "g2": (48, 12, 2, 3, 7, 0.25, 0.5, 1.0),  # a soft softmax: every code gets entropy gradient
}


def run(k, c, g, b, n, beta, temperature, wei_entropy, rng):
  module = quant.VectorQuantizerM(
    vocab_size=k, vocab_width=c, beta=beta, use_entropy_loss=True, entropy_temp=temperature, num_codebooks=g
  )
  module.init_vocab(-1.0)  # UniTok's default vocab_init; overwritten below by normal draws (any scale works)
  codebooks = rng.standard_normal((g, k // g, c // g)).astype(np.float32)
  with torch.no_grad():
    for cb, w in zip(module.codebooks, codebooks):
      cb.codebook.weight.copy_(torch.from_numpy(w))
  module.train()
  features = torch.from_numpy(rng.standard_normal((b, n, c)).astype(np.float32)).requires_grad_(True)
  upstream = rng.standard_normal((b, n, c)).astype(np.float32)
  output, vq_loss, entropy_loss, _ = module(features)
  loss = vq_loss + wei_entropy * entropy_loss
  (loss + (output * torch.from_numpy(upstream)).sum()).backward()
  with torch.no_grad():
    indices = module.f_to_idx(features)
  return {
    "features": features.detach().numpy(),
    "codebooks": codebooks,
    "upstream": upstream,
    "indices": indices.numpy(),
    "output": output.detach().numpy(),
    "vq_loss": np.float32(vq_loss.item()),
    "entropy_loss": np.float32(entropy_loss.item()),
    "loss": np.float32(loss.item()),
    "grad_features": features.grad.numpy(),
    "grad_codebooks": np.stack([cb.codebook.weight.grad.numpy() for cb in module.codebooks]),
    "beta": np.float32(beta),
    "temperature": np.float32(temperature),
    "wei_entropy": np.float32(wei_entropy),
  }


def main():
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  arrays = {}
  for name, args in CASES.items():
    for key, value in run(*args, rng).items():
      arrays[f"{name}/{key}"] = value
  os.makedirs(os.path.dirname(OUT) or ".", exist_ok=True)
  np.savez(OUT, **arrays)
  print(f"wrote {OUT}: {len(arrays)} arrays")


if __name__ == "__main__":
  main()
