#!/usr/bin/env python
"""A reduced-width Cosmos 1.0 DV4x8x8-LowRes as NVIDIA publish it (TorchScript archives) and the reference's outputs.

Usage: /tmp/torchenv/bin/python gen_cosmos1.py /path/to/Cosmos [--out DIR]

/path/to/Cosmos is a checkout of NVIDIA/Cosmos at ca2cde0 (the commit before d52bc15 removed the cosmos1
code), or only its ``cosmos1/`` Python files: ``git archive ca2cde0 -- $(git ls-tree -r --name-only ca2cde0
cosmos1/models/tokenizer | grep '\\.py$') cosmos1/__init__.py cosmos1/models/__init__.py | tar x -C DIR``.
The model is the reference's own ``CausalDiscreteVideoTokenizer``
(cosmos1/models/tokenizer/networks/discrete_video.py, imported from the checkout, nothing copied, nothing
stubbed: its imports are torch, numpy, einops and loguru) with its ``discrete_video_4x8x8_lowres`` config
(networks/configs.py: Haar patching 2, z_channels 256, channels_mult 2-4-4, temporal 4, spatial 8, FSQ
8-8-8-5-5-5) at a reduced width: channels 4, one res block, z_channels 32. Cosmos 1.0's modules
(modules/layers3d.py) make a resampling conv a level does not use an ``nn.Identity`` and keep the Haar
filters and FSQ's constants as persistent buffers; the archives, made as gen_cosmos.py makes 0.1's
(``torch.jit.trace`` of ``encoder_jit()``, ``decoder_jit()`` and, ``--autoencoder``, the whole model, saved
with bfloat16 weights; 1.0's inference/utils.py loads them with ``torch.jit.load`` and, given a config,
``load_state_dict(strict=True)`` into these modules), hold those Identity modules and buffers as NVIDIA's
do. The goldens are computed in float64 from the same (bfloat16-rounded) weights: the latent before FSQ
(after ``quant_conv``), the ids, and the frames decoded from the ids, for a 9-frame 16x16 clip and its
first frame alone, in [-1, 1]. ``params.json`` holds the full-size parameter counts of 1.0's
DV4x8x8-LowRes and DV8x16x16, built here from the published configs.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_cosmos import deflate, draw  # the 0.1 script's weight draw and archive recompression

NAME = "Cosmos-1.0-Tokenizer-DV4x8x8-LowRes"
#: Reduced sizes over the reference's ``discrete_video_4x8x8_lowres`` config (z_channels 256 there).
REDUCED = dict(channels=4, num_res_blocks=1, z_channels=32)
FRAMES, SIZE = 9, 16
#: The published 1.0 DV configs (networks/configs.py) whose full-size parameter counts are recorded.
FULL = ("DV4x8x8_LowRes", "DV8x16x16")


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="NVIDIA/Cosmos checkout (or its cosmos1/ Python files) at ca2cde0")
  p.add_argument("--out", default="tests/goldens/cosmos")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--autoencoder", action="store_true", help="also autoencoder.jit (not committed: ~0.5 MB)")
  return p.parse_args()


def build(config: str, **sizes):
  from cosmos1.models.tokenizer.networks import TokenizerConfigs, TokenizerModels  # noqa: PLC0415

  cfg = dict(TokenizerConfigs[config].value)
  cfg.update(sizes)
  return TokenizerModels[cfg["name"]].value(**cfg)


def count(model) -> dict[str, int]:
  params = lambda *ms: sum(p.numel() for m in ms for p in m.parameters())
  return {
    "total": params(model),
    "encoder": params(model.encoder, model.quant_conv),
    "decoder": params(model.decoder, model.post_quant_conv),
  }


def main():
  args = parse()
  sys.path.insert(0, os.path.abspath(args.ref))
  torch.manual_seed(args.seed)
  rng = np.random.default_rng(args.seed)
  out = os.path.join(args.out, NAME)
  os.makedirs(out, exist_ok=True)
  model = build("DV4x8x8_LowRes", **REDUCED).eval()
  sd = model.state_dict()
  # Weights rounded to bfloat16: the archive stores them so, the float64 goldens use the same numbers. The
  # persistent buffers (Haar filters, FSQ's levels, basis and implicit codebook) keep their values.
  weights = {k for k, _ in model.named_parameters()}
  sd = {
    k: torch.from_numpy(draw(rng, k, tuple(v.shape))).to(torch.bfloat16) if k in weights else v for k, v in sd.items()
  }
  model.load_state_dict(sd, strict=True)
  x = rng.uniform(-1.0, 1.0, (1, 3, FRAMES, SIZE, SIZE))
  with torch.no_grad():
    # The archives: traced on the 9-frame clip in float32 (NVIDIA trace in bfloat16 on a GPU; torch's CPU
    # avg_pool3d has no bfloat16), then stored with bfloat16 weights, which keeps the files small.
    model.float()
    model.quantizer.dtype = torch.float32
    xt = torch.from_numpy(x).float()
    enc = torch.jit.trace(model.encoder_jit(), xt, check_trace=False)
    ids = enc(xt)[0]
    dec = torch.jit.trace(model.decoder_jit(), ids, check_trace=False)
    archives = [(enc, "encoder.jit"), (dec, "decoder.jit")]
    if args.autoencoder:  # the whole model: the encoder's and the decoder's tensors again
      archives.append((torch.jit.trace(model, xt, check_trace=False, strict=False), "autoencoder.jit"))
    for m, f in archives:
      m.to(torch.bfloat16)  # the traced modules share the model's parameters
      torch.jit.save(m, os.path.join(out, f))
      deflate(os.path.join(out, f))
    # The goldens, in float64 from the reference's eager modules.
    model.double()
    model.quantizer.dtype = torch.float64
    golden = {}
    for suffix, clip in (("", x), ("1", x[:, :, :1])):
      xc = torch.from_numpy(clip)
      z = model.quant_conv(model.encoder(xc))
      ids, _, _ = model.quantizer(z)
      y = model.decode_code(ids)
      golden.update({f"x{suffix}": clip, f"z{suffix}": z.numpy(), f"ids{suffix}": ids.numpy().astype(np.int32)})
      golden[f"y{suffix}"] = y.numpy()
    # The distance of each latent to FSQ's nearest rounding boundary (near ties may round either way).
    zb = model.quantizer.bound(torch.from_numpy(golden["z"]).movedim(1, -1))
    golden["margin"] = (0.5 - (zb - zb.round()).abs()).amin(-1).numpy()
  # The loaded archive (bfloat16) gives the eager model's ids on this clip, bar near ties.
  loaded = torch.jit.load(os.path.join(out, "encoder.jit")).float()
  with torch.no_grad():
    jit_ids = loaded(torch.from_numpy(x).float())[0].numpy()
  agree = float(np.mean(jit_ids == golden["ids"]))
  np.savez_compressed(
    os.path.join(out, "golden.npz"),
    **{k: np.asarray(v, np.int32 if k.startswith("ids") else np.float32) for k, v in golden.items()},
  )
  print(NAME, {k: v.shape for k, v in golden.items()}, f"bf16 archive ids agree {agree:.3f}")
  # As 1.0's inference/utils.py loads an archive given the config: its state dict is the module's, strictly.
  # Last: the archives' Haar filters are bfloat16-rounded (0.70703125), as NVIDIA's are, and every Patcher's
  # ``wavelets`` buffer is the one tensor of patching.py's ``_WAVELETS``, which loading overwrites in place.
  assert abs(float(model.encoder.patcher3d.wavelets[0]) - 2**-0.5) < 1e-7  # the goldens used 1/sqrt(2)
  fresh = build("DV4x8x8_LowRes", **REDUCED)
  parts = {"encoder.jit": fresh.encoder_jit(), "decoder.jit": fresh.decoder_jit(), "autoencoder.jit": fresh}
  for f in (f for _, f in archives):
    parts[f].load_state_dict(torch.jit.load(os.path.join(out, f)).state_dict(), strict=True)
  params = {name: count(build(name)) for name in FULL}
  with open(os.path.join(out, "params.json"), "w") as f:
    json.dump({"seed": args.seed, "reduced": REDUCED, "full_params": params}, f, indent=1)
  print(params)


if __name__ == "__main__":
  main()
