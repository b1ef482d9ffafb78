#!/usr/bin/env python
"""Golden outputs of VidTok's causal FSQ tokenizer at a reduced width (vqtok's ``vidtok`` CNN family).

Usage: /tmp/torchenv-vidtok/bin/python gen_vidtok.py /path/to/VidTok [--out DIR]

The model is the reference's own ``EncoderCausal3DPadding`` / ``DecoderCausal3DPadding``
(vidtok/modules/model_3dcausal.py) and ``FSQRegularizer`` (vidtok/modules/regularizers.py),
imported from the checkout (nothing copied), built from the parameters of
configs/vidtok_fsq_causal_488_262144.yaml with ch 8 instead of 128, encoded and
decoded as ``AutoencodingEngine.encode`` / ``decode`` do (autoencoder.py; the Lightning
module itself is not built: lightning and rich are stubbed, only util.py imports them).
The weights are drawn from ``numpy.random.default_rng(seed)`` in state-dict order
(``keys.json`` lists names and shapes; the test draws the same numbers and writes
them as a Lightning ``.ckpt``): every parameter random, LayerNorm scales around 1,
``mix_factor`` around 2. Goldens: a 9-frame clip at 16 px in [-1, 1], the
encoder's output (before FSQ), the FSQ ids, the decoded clip from the ids; and a
one-frame clip's. The full-size parameter counts of each published FSQ config
go to ``keys.json`` too.

``--v1_1``: the same for VidTok v1.1 (vidtok/modules/model_3dcausal_v1_1.py, built
from configs/vidtok_v1_1/vidtok_fsq_causal_488_32768_v1_1.yaml's parameters at ch 8:
5 FSQ channels, ``interpolation_mode: trilinear``), encoded and decoded as
autoencoder_v1_1.py's ``encode`` / ``decode`` do without tiling (whole clips, every
module's first chunk), to ``golden_v1_1.npz`` / ``keys_v1_1.json``, with the v1.1
FSQ configs' full-size parameter counts. Its decoder keeps all frames: 9 frames give
12 (the first 3 decode the padding copies of frame 0), 1 gives 4.

``--noncausal``: the non-causal model (vidtok/modules/model_3dnoncausal.py ``Encoder3D`` /
``Decoder3D``, built from configs/vidtok_fsq_noncausal_488_262144.yaml's parameters at ch 8,
6 FSQ channels of 8 levels) on a 16-frame clip (16 -> 4 latent frames -> 16, the
reference's input rule for non-causal models), to ``golden_noncausal.npz`` /
``keys_noncausal.json``, with the non-causal FSQ configs' full-size parameter counts.
"""

import argparse
import json
import os
import sys
import types

import numpy as np
import torch
import yaml


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="microsoft/VidTok checkout root")
  p.add_argument("--out", default="tests/goldens/vidtok")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--ch_mult", default="1,2,4,4", help="1,2,4,4,4: the 4x16x16 layout (a check run; not committed)")
  p.add_argument("--v1_1", action="store_true", help="VidTok v1.1 (model_3dcausal_v1_1.py): *_v1_1 goldens")
  p.add_argument("--noncausal", action="store_true", help="model_3dnoncausal.py: *_noncausal goldens")
  return p.parse_args()


#: configs/vidtok_fsq_causal_488_262144.yaml's encoder params with ch 8 (the test builds vqtok's alike).
REDUCED = dict(
  double_z=False,
  z_channels=6,
  in_channels=3,
  out_ch=3,
  ch=8,
  ch_mult=[1, 2, 4, 4],
  time_downsample_factor=4,
  num_res_blocks=2,
  dropout=0.0,
  use_checkpoint=False,
  init_pad_mode="replicate",
  norm_type="layernorm",
  fix_encoder=False,
  fix_decoder=False,
)
LEVELS = [8, 8, 8, 8, 8, 8]
#: v1.1: configs/vidtok_v1_1/vidtok_fsq_causal_488_32768_v1_1.yaml's params with ch 8.
REDUCED_V1_1 = dict(REDUCED, z_channels=5, interpolation_mode="trilinear")
LEVELS_V1_1 = [8, 8, 8, 8, 8]
CONFIGS_V1_1 = (
  "vidtok_v1_1/vidtok_fsq_causal_41616_262144_v1_1",
  "vidtok_v1_1/vidtok_fsq_causal_488_32768_v1_1",
  "vidtok_v1_1/vidtok_fsq_causal_888_32768_v1_1",
)
CONFIGS = (
  "vidtok_fsq_causal_488_262144",
  "vidtok_fsq_causal_488_32768",
  "vidtok_fsq_causal_488_4096",
  "vidtok_fsq_causal_41616_262144",
)
#: non-causal: configs/vidtok_fsq_noncausal_488_262144.yaml's params with ch 8 (it has no init_pad_mode).
REDUCED_NONCAUSAL = {k: v for k, v in REDUCED.items() if k != "init_pad_mode"}
CONFIGS_NONCAUSAL = ("vidtok_fsq_noncausal_488_262144", "vidtok_fsq_noncausal_41616_262144")


def stub_lightning():
  # util.py imports rank_zero_only and rich's print for logging only.
  rz = types.ModuleType("lightning.pytorch.utilities.rank_zero")
  rz.rank_zero_only = lambda f: f
  for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities"):
    sys.modules[name] = types.ModuleType(name)
  sys.modules["lightning.pytorch.utilities.rank_zero"] = rz
  rich = types.ModuleType("rich")
  rich.print = print
  sys.modules.setdefault("rich", rich)


def draw(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
  """The weights the test draws too: N(0, 0.2) for kernels, N(0, 0.5) for vectors, norm scales and mix + 1, 2."""
  v = rng.standard_normal(shape) * (0.2 if len(shape) > 1 else 0.5)
  if "norm" in name and name.endswith(".weight"):
    v = v + 1.0
  if name.endswith("mix_factor"):
    v = v + 2.0
  return v


def main():
  args = parse()
  stub_lightning()
  sys.path.insert(0, os.path.abspath(args.ref))
  if args.v1_1:
    from vidtok.modules.model_3dcausal_v1_1 import DecoderCausal3DPadding, EncoderCausal3DPadding  # noqa: PLC0415
  elif args.noncausal:
    from vidtok.modules.model_3dnoncausal import Decoder3D as DecoderCausal3DPadding  # noqa: PLC0415
    from vidtok.modules.model_3dnoncausal import Encoder3D as EncoderCausal3DPadding  # noqa: PLC0415
  else:
    from vidtok.modules.model_3dcausal import DecoderCausal3DPadding, EncoderCausal3DPadding  # noqa: PLC0415
  from vidtok.modules.regularizers import FSQRegularizer  # noqa: PLC0415

  torch.manual_seed(0)
  reduced, levels = (REDUCED_V1_1, LEVELS_V1_1) if args.v1_1 else (REDUCED, LEVELS)
  if args.noncausal:
    reduced = REDUCED_NONCAUSAL
  reduced["ch_mult"] = [int(v) for v in args.ch_mult.split(",")]
  enc, dec = EncoderCausal3DPadding(**reduced).double(), DecoderCausal3DPadding(**reduced).double()
  fsq = FSQRegularizer(levels=levels)
  rng = np.random.default_rng(args.seed)
  keys = {}
  for prefix, m in (("encoder", enc), ("decoder", dec)):
    sd = m.state_dict()
    keys[prefix] = [[k, list(v.shape)] for k, v in sd.items()]
    m.load_state_dict({k: torch.from_numpy(draw(rng, k, tuple(v.shape))) for k, v in sd.items()})
  enc.eval(), dec.eval(), fsq.eval()
  # The causal models' 9 frames (1 + 2*4) and a first frame alone; the non-causal model's 16 (4*4).
  x = rng.uniform(-1.0, 1.0, (1, 3, 16 if args.noncausal else 9, 16, 16))
  out = {"x": x.astype(np.float32)}
  with torch.no_grad():
    for tag, clip in (("", x),) if args.noncausal else (("", x), ("1", x[:, :, :1])):
      # v1.1 (autoencoder_v1_1.py encode / decode without tiling): each whole clip is every module's first chunk.
      for m in (*enc.modules(), *dec.modules()):
        if hasattr(m, "is_first_chunk"):
          m.is_first_chunk, m.causal_cache = True, None
      z = enc(torch.from_numpy(clip))
      # AutoencodingEngine.encode: the regularizer (FSQ, no projections) on the encoder's output, in float32.
      zq, log = fsq(z.float())
      # decode(indices, decode_from_indices=True): indices_to_latent, then the decoder.
      y = dec(zq.double())
      out[f"z{tag}"], out[f"ids{tag}"] = z.numpy(), log["indices"].numpy().astype(np.int32)
      out[f"y{tag}"] = y.numpy().astype(np.float32)
      print(tag or f"{x.shape[2]} frames", tuple(z.shape), tuple(log["indices"].shape), tuple(y.shape))
  os.makedirs(args.out, exist_ok=True)
  suffix = "_v1_1" if args.v1_1 else "_noncausal" if args.noncausal else ""
  np.savez_compressed(os.path.join(args.out, f"golden{suffix}.npz"), **out)
  # Full-size parameter counts, each model built from its published YAML.
  full = {}
  for name in CONFIGS_V1_1 if args.v1_1 else CONFIGS_NONCAUSAL if args.noncausal else CONFIGS:
    with open(os.path.join(args.ref, "configs", f"{name}.yaml")) as f:
      params = yaml.safe_load(f)["model"]["params"]["encoder_config"]["params"]
    e, d = EncoderCausal3DPadding(**params), DecoderCausal3DPadding(**params)
    full[os.path.basename(name)] = {
      "encoder": sum(p.numel() for p in e.parameters()),
      "decoder": sum(p.numel() for p in d.parameters()),
    }
  with open(os.path.join(args.out, f"keys{suffix}.json"), "w") as f:
    json.dump({"seed": args.seed, "reduced": reduced, "levels": levels, "keys": keys, "full_params": full}, f, indent=1)
  print(json.dumps(full))


if __name__ == "__main__":
  main()
