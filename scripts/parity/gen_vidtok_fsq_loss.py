#!/usr/bin/env python
"""Golden outputs of VidTok's FSQ losses (vqtok's ``FSQ(entropy_weight=..., commitment_weight=...)``).

Usage: /tmp/torchenv/bin/python gen_vidtok_fsq_loss.py /path/to/VidTok [--out FILE]
(torch 2.13.0 CPU, numpy, einops, pyyaml)

The reference is microsoft/VidTok at commit d6ad92d98e8d67617a6ee8fa1ac2111d6bdaa739
(``git --git-dir=... archive d6ad92d vidtok configs | tar -x -C /tmp/vidtok``): its own
``FSQRegularizer`` (vidtok/modules/regularizers.py), imported from the checkout (nothing
copied), called as ``AutoencodingEngine.encode`` calls it (vidtok/models/autoencoder.py:
``self.regularization(z, n_steps=self.global_step // 2)``, z channels-first) with the
entropy and commitment weights and the annealing of configs/vidtok_fsq_causal_488_262144.yaml
(0.1, 2,000 steps, factor 3; 0.25), which the script checks are those of every
configs/**/vidtok_fsq_*.yaml (``recipe``, ``recipe_keys`` in the golden). Its ``aux_loss`` enters the training loss with weight 1
(``regularization_weights: {'aux_loss': 1.0}``, vidtok/modules/losses.py).

Cases (inputs from a seeded numpy generator, stored channels-last as vqtok takes them):
``big``: levels 8^6 (262,144 codes), a (1, 2, 3, 3, 6) video latent, τ 100, step 0;
``mid``: levels 8-5-5-5 (1,000 codes), (2, 3, 4, 4, 4) latents at half scale, τ 1, step 700;
``img``: levels 8-8-8, (2, 4, 4, 3) image latents, τ 10, γ 0.5, step 2,500.
For each: the input, the quantised output, the ids, the unweighted terms (the reference
returns only ``aux_loss``; the terms are recomputed here from the same module's
``quantize``, ``implicit_codebook`` and ``log``/``entropy`` helpers exactly as its forward
does, and their weighted sum is checked against ``aux_loss``), the annealed entropy weight,
``aux_loss``, and the gradient w.r.t. the input of ``aux_loss + sum(out * cot)`` for a fixed
random cotangent ``cot`` (both the straight-through path and the losses), and that of
``aux_loss`` alone (``grad_aux``).
"""

import argparse
import os
import sys

import numpy as np
import torch  # and pyyaml, for the configs

COMMIT = "d6ad92d98e8d67617a6ee8fa1ac2111d6bdaa739"
# configs/vidtok_fsq_causal_*.yaml: every published FSQ model trains with these.
RECIPE = dict(
  entropy_loss_weight=0.1, entropy_loss_annealing_steps=2000, entropy_loss_annealing_factor=3, commitment_loss_weight=0.25
)
CASES = {
  # name: levels, channels-last shape, input scale, inv_temperature, n_steps, diversity_gamma
  "big": ([8, 8, 8, 8, 8, 8], (1, 2, 3, 3, 6), 1.0, 100.0, 0, 1.0),
  "mid": ([8, 5, 5, 5], (2, 3, 4, 4, 4), 0.5, 1.0, 700, 1.0),
  "img": ([8, 8, 8], (2, 4, 4, 3), 1.0, 10.0, 2500, 0.5),
}


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="microsoft/VidTok checkout root (commit d6ad92d)")
  p.add_argument("--out", default="tests/goldens/vidtok_fsq_loss/golden.npz")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args()


def check_recipe(ref: str) -> None:
  """RECIPE is every published FSQ config's ``regularizer_config.params`` (levels aside)."""
  import glob

  import yaml

  paths = sorted(glob.glob(os.path.join(ref, "configs", "**", "vidtok_fsq_*.yaml"), recursive=True))
  assert paths, f"no FSQ configs under {ref}/configs"
  for path in paths:
    with open(path) as f:
      params = dict(yaml.safe_load(f)["model"]["params"]["regularizer_config"]["params"])
    params.pop("levels")
    assert params == RECIPE, (path, params)
  print(f"RECIPE = the regularizer params of {len(paths)} FSQ configs")


def main():
  args = parse()
  check_recipe(args.ref)
  sys.path.insert(0, os.path.abspath(args.ref))
  from einops import rearrange

  from vidtok.modules import regularizers as R

  torch.manual_seed(0)
  rng = np.random.default_rng(args.seed)
  out = {}
  for name, (levels, shape, scale, inv_t, n_steps, gamma) in CASES.items():
    reg = R.FSQRegularizer(levels=levels, diversity_gamma=gamma, **RECIPE)
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    cot = rng.standard_normal(shape).astype(np.float32)
    z = torch.tensor(np.moveaxis(x, -1, 1).copy(), requires_grad=True)  # b d ... as encode gives it
    q, log = reg(z, inv_temperature=inv_t, n_steps=n_steps)
    total = log["aux_loss"] + (q * torch.tensor(np.moveaxis(cot, -1, 1).copy())).sum()
    (grad_aux,) = torch.autograd.grad(log["aux_loss"], z, retain_graph=True)
    (grad,) = torch.autograd.grad(total, z)

    # The unweighted terms, as forward computes them (the reference does not return them).
    with torch.no_grad():
      h = rearrange(z, "b d ... -> b (...) d")[:, :, None, :]  # b n c d, c = 1 codebook
      codes = reg.quantize(h)
      distance = -2 * torch.einsum("... i d, j d -> ... i j", h, reg.implicit_codebook)
      prob = (-distance * inv_t).softmax(dim=-1)
      per_sample_probs = rearrange(prob, "b n ... -> (b n) ...")
      per_sample = R.entropy(per_sample_probs).mean()
      codebook = R.entropy(per_sample_probs.mean(dim=0)).mean()
      commit = torch.nn.functional.mse_loss(h, codes).mean()
      w = reg.calculate_entropy_loss_weight(n_steps)
      recomputed = (per_sample - gamma * codebook) * w + commit * RECIPE["commitment_loss_weight"]
      assert torch.allclose(recomputed, log["aux_loss"], rtol=1e-6, atol=0), (recomputed, log["aux_loss"])

    p = f"{name}/"
    out.update({
      p + "levels": np.asarray(levels, np.int32),
      p + "inv_temperature": np.float32(inv_t),
      p + "n_steps": np.int32(n_steps),
      p + "diversity_gamma": np.float32(gamma),
      p + "x": x,
      p + "cot": cot,
      p + "out": np.moveaxis(q.detach().numpy(), 1, -1),
      p + "ids": log["indices"].numpy().astype(np.int32).reshape(shape[:-1]),
      p + "per_sample_entropy": per_sample.numpy(),
      p + "codebook_entropy": codebook.numpy(),
      p + "commitment": commit.numpy(),
      p + "entropy_weight": np.float32(w),
      p + "aux_loss": log["aux_loss"].detach().numpy(),
      p + "grad": np.moveaxis(grad.numpy(), 1, -1),
      p + "grad_aux": np.moveaxis(grad_aux.numpy(), 1, -1),
    })
    print(name, {k: float(out[p + k]) for k in ("per_sample_entropy", "codebook_entropy", "commitment", "aux_loss")})
  out["commit"] = np.asarray(COMMIT)
  out["recipe"] = np.asarray([RECIPE[k] for k in sorted(RECIPE)], np.float64)
  out["recipe_keys"] = np.asarray(sorted(RECIPE))
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  np.savez_compressed(args.out, **out)
  print("wrote", args.out, os.path.getsize(args.out), "bytes")


if __name__ == "__main__":
  main()
