"""Generate FQGAN factorised-quantizer goldens with the authors' own model (showlab/FQGAN).

Usage:
  /tmp/torchenv/bin/python scripts/parity/gen_fqgan.py <fqgan_checkout> [out.npz]

<fqgan_checkout> is a checkout of github.com/showlab/FQGAN (the directory
holding ``tokenizer/``); ``VQ_16`` is imported from its
``tokenizer/vq_model_dual.py`` and ``tokenizer/vq_model_triple.py``, nothing
is re-implemented here. Needs torch, numpy and einops.

For each of the Dual and Triple models (VQ-16, float64, 256 x 256 input, torch's own
random initialisation, one image, codebooks of 64 x 8 so the file stays small), runs the
model's own ``forward`` in training mode (the codebook losses exist only
there) with ``with_disentanglement`` and ratio 0.1, captures with forward hooks
the quantizer inputs (the ``quant_conv_*`` outputs) and outputs, and saves
(default tests/goldens/fqgan/quantizer.npz), for case ``<c>`` in dual, triple
and sub-codes in the reference's decoder order (vis, sem / vis, sem_mid, sem_high):
  <c>/z              (B, h, w, k*8) float32 concatenated quantizer inputs (NHWC)
  <c>/codebooks      (k, K, 8) float32 embedding weights
  <c>/z_q            (B, h, w, k*8) the concatenated quantizer outputs
  <c>/indices        (B, h, w, k) int64 codes
  <c>/codebook, <c>/commitment   summed over the sub-codebooks, unweighted
                     (the reference's vq_loss and commit_loss / beta)
  <c>/disentangle    the model's disentangle_loss / ratio (the unweighted term)
  <c>/entropy        the sub-codebooks' summed entropy losses / their ratio (unweighted)
  <c>/loss           the sum of the sub-codebooks' vq + commit losses plus the
                     model's (weighted) disentangle_loss, as VQLoss_dual_codebook adds them, with
                     the entropy losses (--entropy-loss-ratio 0.03, as train_fqgan_*.sh)
  <c>/grad_z         d loss / d z (the gradient reaching the projections)
  <c>/grad_codebooks d loss / d codebooks
Reruns give byte-identical files.
"""

import importlib
import os
import sys

import numpy as np

CHECKOUT = os.path.abspath(sys.argv[1])
OUT = sys.argv[2] if len(sys.argv) > 2 else "tests/goldens/fqgan/quantizer.npz"
sys.path.insert(0, CHECKOUT)

import torch  # noqa: E402

RATIO = 0.1
ENTROPY = 0.03  # train_fqgan_dual.sh --entropy-loss-ratio
CODES = 64
CASES = {
  "dual": ("tokenizer.vq_model_dual", ("vis", "sem")),
  "triple": ("tokenizer.vq_model_triple", ("vis", "sem_mid", "sem_high")),
}


def run(module_name, names, rng):
  torch.manual_seed(0)
  ref = importlib.import_module(module_name)
  # codebook_show_usage (a logged usage metric) is off: its buffer wraps an
  # nn.Parameter, whose in-place update torch 2.14 refuses in training mode.
  model = ref.VQ_16(
    codebook_size=CODES,
    codebook_show_usage=False,
    entropy_loss_ratio=ENTROPY,
    with_disentanglement=True,
    disentanglement_ratio=RATIO,
  )
  with torch.no_grad():
    for n in names:
      # A random direction per code (the reference's init is a near-constant
      # table before l2 normalisation), so every code can be chosen.
      w = rng.standard_normal((CODES, 8)).astype(np.float32)
      getattr(model, f"quantize_{n}").embedding.weight.copy_(torch.from_numpy(w))
  # float64: with the entropy softmax at τ = 0.01 the reference's float32 gradients carry ~1e-5 of
  # rounding (|z|² + |e|² − 2 z·e, divided by τ); the goldens are its float64 values, stored as float32.
  model.double().train()
  captured = {}

  def keep(key):
    def hook(_, __, out):
      if isinstance(out, tuple):
        captured[key] = out
      else:
        out.retain_grad()
        captured[key] = out

    return hook

  for n in names:
    getattr(model, f"quant_conv_{n}").register_forward_hook(keep(f"z_{n}"))
    getattr(model, f"quantize_{n}").register_forward_hook(keep(f"q_{n}"))
  x = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 256, 256)).astype(np.float32).astype(np.float64))
  outputs = model(x)
  disentangle = outputs[len(names) + 1]
  loss = disentangle
  codebook = commitment = entropy = 0.0
  for n in names:
    vq_loss, commit_loss, entropy_loss, _ = captured[f"q_{n}"][1]
    loss = loss + vq_loss + commit_loss + entropy_loss
    codebook += float(vq_loss)
    commitment += float(commit_loss) / model.quantize_vis.beta
    entropy += float(entropy_loss) / ENTROPY
  loss.backward()
  nhwc = lambda t: t.detach().permute(0, 2, 3, 1).numpy().astype(np.float32)
  f32 = lambda t: t.detach().numpy().astype(np.float32)
  z = np.concatenate([nhwc(captured[f"z_{n}"]) for n in names], axis=-1)
  z_q = np.concatenate([nhwc(captured[f"q_{n}"][0]) for n in names], axis=-1)
  b, h, w = z.shape[:3]
  indices = np.stack([captured[f"q_{n}"][2][2].numpy().reshape(b, h, w) for n in names], axis=-1)
  return {
    "z": z,
    "codebooks": np.stack([f32(getattr(model, f"quantize_{n}").embedding.weight) for n in names]),
    "z_q": z_q,
    "indices": indices.astype(np.int64),
    "codebook": np.float64(codebook),
    "commitment": np.float64(commitment),
    "disentangle": np.float64(float(disentangle) / RATIO),
    "entropy": np.float64(entropy),
    "loss": np.float64(float(loss)),
    "grad_z": np.concatenate([nhwc(captured[f"z_{n}"].grad) for n in names], axis=-1),
    "grad_codebooks": np.stack([f32(getattr(model, f"quantize_{n}").embedding.weight.grad) for n in names]),
    "ratio": np.float64(RATIO),
    "entropy_ratio": np.float64(ENTROPY),
  }


def main():
  rng = np.random.default_rng(2411)
  out = {}
  for case, (module_name, names) in CASES.items():
    for key, value in run(module_name, names, rng).items():
      out[f"{case}/{key}"] = value
  os.makedirs(os.path.dirname(os.path.abspath(OUT)), exist_ok=True)
  np.savez_compressed(OUT, **out)
  for case in CASES:
    print(case, {k.split("/")[1]: float(v) for k, v in out.items() if k.startswith(case) and np.ndim(v) == 0})


if __name__ == "__main__":
  main()
