#!/usr/bin/env python
"""Reduced-width Cosmos DV archives (encoder.jit, decoder.jit, autoencoder.jit) and the reference's outputs.

Usage: /tmp/torchenv-cosmos/bin/python gen_cosmos.py /path/to/Cosmos-Tokenizer [--out DIR]

The model is the reference's own ``CausalDiscreteVideoTokenizer``
(cosmos_tokenizer/networks/discrete_video.py, imported from the checkout,
nothing copied) with its ``discrete_video`` config (networks/configs.py:
Haar patching 4, channels_mult 2-4-4, factorised encoder and decoder, FSQ
8-8-8-5-5-5) at a reduced width: channels 4, one res block, z_channels 8.
The archives are made as NVIDIA's are loaded and run (cosmos_tokenizer/utils.py:
``torch.jit.load`` of ``encoder_jit()``, ``decoder_jit()`` and the whole
model): ``torch.jit.trace`` of those modules, saved with ``torch.jit.save``
with bfloat16 weights. The goldens are
computed in float64 from the same (bfloat16-rounded) weights: the latent
before FSQ (after ``quant_conv``), the ids, and the frames decoded from the
ids, for a 9-frame clip and a 1-frame clip (an image) in [-1, 1]. Each
variant writes a directory named as the published ones
(``Cosmos-0.1-Tokenizer-DV4x8x8`` ...). ``params.json`` holds the
full-size models' parameter counts, built here from the published config.
"""

import argparse
import json
import os
import sys
import zipfile

import numpy as np
import torch

#: Reduced sizes over the reference's ``discrete_video`` config.
REDUCED = dict(channels=4, num_res_blocks=1, z_channels=8)
#: (name, temporal, spatial compression, input height/width) of the variants written.
#: DV8x8x8 comes last so the random draws of the first two (and their goldens) stay as they were.
VARIANTS = (
  ("Cosmos-0.1-Tokenizer-DV4x8x8", 4, 8, 16),
  ("Cosmos-0.1-Tokenizer-DV8x16x16", 8, 16, 32),
  ("Cosmos-0.1-Tokenizer-DV8x8x8", 8, 8, 16),
)
#: The published variants whose full-size parameter counts are recorded.
FULL = (("DV4x8x8", 4, 8), ("DV8x8x8", 8, 8), ("DV8x16x16", 8, 16))


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="NVIDIA/Cosmos-Tokenizer checkout root")
  p.add_argument("--out", default="tests/goldens/cosmos")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args()


def build(temporal: int, spatial: int, **sizes):
  from cosmos_tokenizer.networks import TokenizerConfigs, TokenizerModels  # noqa: PLC0415

  cfg = dict(TokenizerConfigs.DV.value)
  cfg.update(temporal_compression=temporal, spatial_compression=spatial, **sizes)
  return TokenizerModels.DV.value(**cfg)


def draw(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
  """N(0, 0.3) kernels, N(0, 0.3) vectors, norm scales around 1: random but not saturating everywhere."""
  v = rng.standard_normal(shape) * 0.3
  return v + 1.0 if ".norm" in name and name.endswith(".weight") else v


def deflate(path: str) -> None:
  """The archive's entries recompressed (torch stores them uncompressed; FSQ's implicit codebook buffer,
  64,000 x 6, compresses well) and its debug records left out, to keep the goldens small. torch.jit.load
  (checked below) and vqtok read it as the original."""
  with zipfile.ZipFile(path) as z:
    entries = [(i, z.read(i)) for i in z.infolist()]
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    for info, data in entries:
      if info.filename.endswith(".debug_pkl"):  # source ranges for error messages; torch.jit.load does without
        continue
      z.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)


def main():
  args = parse()
  sys.path.insert(0, os.path.abspath(args.ref))
  torch.manual_seed(args.seed)
  rng = np.random.default_rng(args.seed)
  os.makedirs(args.out, exist_ok=True)
  for name, temporal, spatial, size in VARIANTS:
    model = build(temporal, spatial, **REDUCED).eval()
    sd = model.state_dict()
    # Weights rounded to bfloat16: the archive stores them so, the float64 goldens use the same numbers.
    sd = {k: torch.from_numpy(draw(rng, k, tuple(v.shape))).to(torch.bfloat16) for k, v in sd.items()}
    model.load_state_dict(sd)
    x = rng.uniform(-1.0, 1.0, (1, 3, 9, size, size))
    out = os.path.join(args.out, name)
    os.makedirs(out, exist_ok=True)
    with torch.no_grad():
      # The archives: traced on a 9-frame clip in float32 (NVIDIA trace in bfloat16 on a GPU; torch's CPU
      # avg_pool3d has no bfloat16), then stored with bfloat16 weights, which keeps the files small.
      model.float()
      model.quantizer.dtype = torch.float32
      xt = torch.from_numpy(x).float()
      enc = torch.jit.trace(model.encoder_jit(), xt, check_trace=False)
      ids = enc(xt)[0]
      dec = torch.jit.trace(model.decoder_jit(), ids, check_trace=False)
      auto = torch.jit.trace(model, xt, check_trace=False, strict=False)
      # The whole model's archive only once (DV4x8x8): it holds the encoder's and the decoder's tensors again.
      whole = ((auto, "autoencoder.jit"),) if (temporal, spatial) == (4, 8) else ()
      archives = ((enc, "encoder.jit"), (dec, "decoder.jit")) + whole
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
        ids, codes, _ = model.quantizer(z)
        y = model.decode_code(ids)
        golden.update({f"x{suffix}": clip, f"z{suffix}": z.numpy(), f"ids{suffix}": ids.numpy().astype(np.int32)})
        golden[f"y{suffix}"] = y.numpy()
      # The distance of each latent to FSQ's nearest rounding boundary (near ties may round either way).
      zb = model.quantizer.bound(torch.from_numpy(golden["z"]).movedim(1, -1))
      golden["margin"] = (0.5 - (zb - zb.round()).abs()).amin(-1).numpy()
    # The loaded archives (bfloat16) give the eager model's ids on this clip, bar near ties.
    loaded = torch.jit.load(os.path.join(out, "encoder.jit")).float()
    with torch.no_grad():
      jit_ids = loaded(torch.from_numpy(x).float())[0].numpy()
    agree = float(np.mean(jit_ids == golden["ids"]))
    np.savez_compressed(
      os.path.join(out, "golden.npz"),
      **{k: np.asarray(v, np.int32 if k.startswith("ids") else np.float32) for k, v in golden.items()},
    )
    print(name, {k: v.shape for k, v in golden.items()}, f"bf16 archive ids agree {agree:.3f}")
  params = {}
  for name, temporal, spatial in FULL:
    m = build(temporal, spatial)
    params[name] = {
      "total": sum(p.numel() for p in m.parameters()),
      "encoder": sum(p.numel() for p in m.encoder.parameters()) + sum(p.numel() for p in m.quant_conv.parameters()),
      "decoder": sum(p.numel() for p in m.decoder.parameters())
      + sum(p.numel() for p in m.post_quant_conv.parameters()),
    }
  with open(os.path.join(args.out, "params.json"), "w") as f:
    json.dump({"seed": args.seed, "reduced": REDUCED, "full_params": params}, f, indent=1)
  print(params)


if __name__ == "__main__":
  main()
