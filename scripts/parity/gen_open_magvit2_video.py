#!/usr/bin/env python
"""Goldens of Open-MAGVIT2's video tokenizer at a reduced width, for ``python -m vqtok.convert open-magvit2-video``.

Usage: /tmp/torchenv/bin/python gen_open_magvit2_video.py /path/to/SEED-Voken [--out DIR]

The model is the reference's own ``Encoder`` / ``Decoder`` of
src/Open_MAGVIT2/modules/diffusionmodules/improved_video_model.py and ``LFQ``
of modules/vqvae/lookup_free_quantize.py (imported from the checkout, nothing
copied) with ch 32 (its GroupNorms have 32 groups), ch_mult (1, 2, 2): level
0 downsamples space only, level 1 space and time (its rule: stride (2, 2, 2)
where ch_mult is not 1), one res block, z 6 (LFQ with 2^6 codes). The
container below has video_lfqgan.VQModel's children in its order (encoder,
decoder, loss, quantize, then ``model_ema = LitEma(self)`` from
modules/ema.py), so its state dict has the published checkpoint's names: the
model, a stand-in ``loss.*`` network and the ``model_ema.*`` copies
(published file: video_128_262144.ckpt, a Lightning checkpoint with
``state_dict``). VQModel itself is not imported: it needs lightning and the
training loss (LPIPS, a 3-D discriminator).

The weights are too large to commit (2 x 2.9M numbers), so every float tensor
of the state dict, the EMA copies included, is drawn from
``numpy.random.default_rng(seed)`` in state-dict order (``keys.json`` lists
names and shapes; ``model_ema.decay`` and ``num_updates`` keep their
initial values) and the test writes the same checkpoint from the same draws.
The outputs are the EMA weights' (``with model.ema_scope()``, evaluation_video.py),
float64: the latent, the ids (``b t h w``), the decoded clip from the
quantized latent (VQModel.decode), and a near-tie mask (a latent channel
within 1e-5 of zero, relative to the latent's scale), for a 5-frame clip and
its first frame. ``keys.json`` also holds the full-size published names and
shapes (video_128_262144.ckpt's ``ucf101_lfqfan_128_L.yaml``: ch 128, ch_mult
1-2-2-4, 4 res blocks, z 18; model only) and their parameter counts.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="TencentARC/SEED-Voken checkout root")
  p.add_argument("--out", default="tests/goldens/open-magvit2-video")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args()


#: The reduced model; tests/test_pretrained_open_magvit2_video.py writes its checkpoint from the same draws.
REDUCED = dict(ch=32, out_ch=3, in_channels=3, num_res_blocks=1, z_channels=6, ch_mult=(1, 2, 2), resolution=16)
#: configs/Open-MAGVIT2/gpu/ucf101_lfqfan_128_L.yaml (the published video tokenizer's config).
FULL = dict(ch=128, out_ch=3, in_channels=3, num_res_blocks=4, z_channels=18, ch_mult=(1, 2, 2, 4), resolution=128)


def draw(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
  """The weights the test draws too: N(0, 0.2) for kernels, N(0, 0.5) for vectors, GroupNorm scales + 1."""
  v = rng.standard_normal(shape) * (0.2 if len(shape) > 1 else 0.5)
  return v + 1.0 if "norm" in name and name.endswith("weight") else v


def main():
  args = parse()
  root = os.path.abspath(args.ref)
  sys.path.insert(0, root)
  from src.Open_MAGVIT2.modules.diffusionmodules.improved_video_model import Decoder, Encoder  # noqa: PLC0415
  from src.Open_MAGVIT2.modules.ema import LitEma  # noqa: PLC0415
  from src.Open_MAGVIT2.modules.vqvae.lookup_free_quantize import LFQ  # noqa: PLC0415

  class Loss(torch.nn.Module):  # stands in for the training loss's networks (ignored by the converter)
    def __init__(self):
      super().__init__()
      self.discriminator = torch.nn.Conv3d(3, 4, 3)

  class VQModel(torch.nn.Module):  # video_lfqgan.VQModel's children, in its order, and its encode / decode
    def __init__(self, dd):
      super().__init__()
      self.encoder, self.decoder, self.loss = Encoder(**dd), Decoder(**dd), Loss()
      self.quantize = LFQ(dim=dd["z_channels"], codebook_size=2 ** dd["z_channels"])
      self.model_ema = LitEma(self)

  model = VQModel(REDUCED).double().eval()
  rng = np.random.default_rng(args.seed)
  sd = model.state_dict()
  keys = [[k, list(v.shape)] for k, v in sd.items()]
  # Every tensor random; LitEma's scalars (decay, num_updates) keep their initial values.
  drawn = {k: torch.from_numpy(draw(rng, k, tuple(v.shape))) for k, v in sd.items() if v.ndim}
  scalars = {k: v.item() for k, v in sd.items() if not v.ndim}
  model.load_state_dict({**sd, **drawn}, strict=True)

  x = rng.uniform(-1.0, 1.0, (2, 3, 5, 16, 16))
  params = [p for n, p in model.named_parameters() if not n.startswith("model_ema.")]
  model.model_ema.store(params)
  model.model_ema.copy_to(model)  # ema_scope
  out = {"x": x.astype(np.float32)}
  with torch.no_grad():
    for frames, suffix in ((5, ""), (1, "_1")):
      h = model.encoder(torch.from_numpy(x[:, :, :frames]))
      (quant, _, indices), _ = model.quantize(h, return_loss_breakdown=True)
      b, _, t, hh, ww = quant.shape
      out["latent" + suffix] = h.numpy()
      out["ids" + suffix] = indices.reshape(b, t, hh, ww).numpy().astype(np.int32)
      out["decoded" + suffix] = model.decoder(quant).numpy().astype(np.float32)
      out["near_tie" + suffix] = (h.abs() < 1e-5 * h.std()).any(dim=1).numpy()
  model.model_ema.restore(params)

  with torch.device("meta"):  # names and shapes only (370M parameters)
    full = {
      f"{p}.{k}": v
      for p, m in (("encoder", Encoder(**FULL)), ("decoder", Decoder(**FULL)))
      for k, v in m.state_dict().items()
    }
  full_keys = {k: list(v.shape) for k, v in full.items()}
  counts = {
    part: sum(int(np.prod(s)) for k, s in full_keys.items() if k.startswith(part + "."))
    for part in ("encoder", "decoder")
  }
  os.makedirs(args.out, exist_ok=True)
  np.savez_compressed(os.path.join(args.out, "golden.npz"), **out)
  meta = {
    "seed": args.seed,
    "reduced": REDUCED,
    "keys": keys,
    "scalars": scalars,
    "full": FULL,
    "full_keys": full_keys,
    "full_params": counts,
  }
  with open(os.path.join(args.out, "keys.json"), "w") as f:
    json.dump(meta, f, indent=0)
  print({k: v.shape for k, v in out.items()}, counts, "near ties:", int(out["near_tie"].sum()))


if __name__ == "__main__":
  main()
