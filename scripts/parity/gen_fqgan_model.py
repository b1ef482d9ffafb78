"""Generate the FQGAN-Dual tokenizer goldens (a reduced-width checkpoint) with the authors' own model.

Usage:
  /tmp/torchenv/bin/python scripts/parity/gen_fqgan_model.py <fqgan_checkout> [--out tests/goldens/fqgan]

<fqgan_checkout> is a checkout of github.com/showlab/FQGAN. Its
``tokenizer/vq_model_dual.py`` hard-codes the widths (trunk ``ch=128``,
GroupNorm 32 groups, adapter width 512 and 6 blocks, feature head width 1024
and 3 blocks), so this script loads that file with those constants, and only
those, replaced by small ones (``REDUCE``: trunk ch 8, 8 groups, adapter
width 32 (8 x 4, the trunk's output, as the reference requires) with 2 blocks,
feature head width 32 with 1 block) and runs the module as it is otherwise.
Needs torch, numpy and einops.

Writes to --out:
  reduced.pt         {"model": state_dict} of VQ_16(codebook_size=64, z_channels=16,
                     with_clip_supervision=True), every parameter redrawn at random
                     (so a layout mistake shows), the layout of fqgan_dual_ds16.pt
  golden.npz         on two 256 x 256 images in [-1, 1] (eval mode):
    images           (2, 256, 256, 3) uint8, the input (x = images / 127.5 - 1, NHWC)
    latents          (2, 16, 16, 16) the quantizer inputs, quant_conv_vis then quant_conv_sem
    ids              (2, 16, 16, 2) int64: quantize_vis's then quantize_sem's indices
    decoded_sub      decode_code(ids)[:, ::4, ::4] (NHWC), and decoded_mean / decoded_abs_mean of
                     the whole image (the full images would be 1.5 MB)
    features         (2, 257, 32) feat_pred_head(quant_sem), the semantic head's output
  fqgan_{dual,triple}_ds{16,8}_keys.json   the full-size names and shapes (VQ_16 / VQ_8 with the
                     feature heads), which the tests count parameters by
Reruns give byte-identical files.
"""

import argparse
import json
import os
import sys
import types

import numpy as np

REDUCE = (
  ("ch=128,", "ch=8,"),
  ("num_groups=32", "num_groups=8"),
  ("self.width = 512 ", "self.width = 32 "),
  ("self.num_layers = 6", "self.num_layers = 2"),
  ("self.width = 1024 ", "self.width = 32 "),
  ("self.num_layers = 3", "self.num_layers = 1"),
)


def load(checkout, reduce, variant="dual"):
  with open(os.path.join(checkout, "tokenizer", f"vq_model_{variant}.py")) as f:
    src = f.read()
  if reduce:
    for old, new in REDUCE:
      assert src.count(old) >= 1, old
      src = src.replace(old, new)
  mod = types.ModuleType(f"vq_model_{variant}" + ("_reduced" if reduce else ""))
  exec(compile(src, os.path.join(checkout, "tokenizer", f"vq_model_{variant}.py"), "exec"), mod.__dict__)
  return mod


def main():
  p = argparse.ArgumentParser()
  p.add_argument("checkout")
  p.add_argument("--out", default="tests/goldens/fqgan")
  args = p.parse_args()
  import torch

  os.makedirs(args.out, exist_ok=True)
  torch.manual_seed(0)
  for variant, size in (("dual", "16"), ("triple", "16"), ("dual", "8"), ("triple", "8")):
    full = getattr(load(args.checkout, False, variant), f"VQ_{size}")(with_clip_supervision=True)
    shapes = {k: list(v.shape) for k, v in full.state_dict().items()}
    with open(os.path.join(args.out, f"fqgan_{variant}_ds{size}_keys.json"), "w") as f:
      json.dump(shapes, f, indent=0, sort_keys=True)
    count = sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith("codebook_used"))
    print(f"params {variant} ds{size} (full size)", count)
    if (variant, size) == ("dual", "16"):
      keys = shapes
    del full

  ref = load(args.checkout, True)
  model = ref.VQ_16(codebook_size=64, z_channels=16, with_clip_supervision=True)
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if name.endswith("codebook_used"):
        continue
      if name.endswith("embedding.weight"):
        t.copy_(torch.randn(t.shape, generator=gen))
      elif t.ndim == 1 and (".ln" in name or "norm" in name) and name.endswith("weight"):
        t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=gen))
      else:
        fan_in = max(1, int(np.prod(t.shape[1:]))) if t.ndim > 1 else 16
        t.copy_(torch.randn(t.shape, generator=gen) / np.sqrt(fan_in))
  path = os.path.join(args.out, "reduced.pt")
  torch.save({"model": model.state_dict()}, path)

  # Reload through the reference's own loading path (vq_train_dual.py: load_state_dict(checkpoint["model"])).
  model = ref.VQ_16(codebook_size=64, z_channels=16, with_clip_supervision=True)
  model.load_state_dict(torch.load(path, map_location="cpu")["model"])
  model.eval()
  # Two smooth 8-bit images (they compress; photos would not fit a small file), read as [-1, 1].
  yy, xx = np.mgrid[0:256, 0:256] / 255.0
  a = np.stack([np.sin(3 * xx + 1), np.cos(5 * yy), np.sin(7 * xx * yy + 0.5)], -1)
  b = np.stack([np.cos(9 * xx * xx), np.sin(4 * (xx - yy)), np.cos(6 * yy + 2 * xx)], -1)
  images = np.round((np.stack([a, b]) + 1.0) * 127.5).astype(np.uint8)
  x = np.transpose(images.astype(np.float32) / 127.5 - 1.0, (0, 3, 1, 2))
  with torch.no_grad():
    xt = torch.from_numpy(x)
    quant_sem, quant_vis, info_sem, info_vis = model.encode(xt)
    h_sem, h_vis = model.encoder(xt)
    latents = torch.cat([model.quant_conv_vis(h_vis), model.quant_conv_sem(h_sem)], dim=1)
    ids_vis = info_vis[2].reshape(2, 16, 16)
    ids_sem = info_sem[2].reshape(2, 16, 16)
    decoded = model.decode_code(ids_sem, ids_vis, shape_sem=(2, 8, 16, 16), shape_vis=(2, 8, 16, 16))
    features = model.feat_pred_head(quant_sem)
  nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
  dec = nhwc(decoded)
  np.savez_compressed(
    os.path.join(args.out, "golden.npz"),
    images=images,
    latents=nhwc(latents),
    ids=torch.stack([ids_vis, ids_sem], -1).numpy().astype(np.int64),
    decoded_sub=dec[:, ::4, ::4],
    decoded_mean=np.float64(dec.astype(np.float64).mean()),
    decoded_abs_mean=np.float64(np.abs(dec.astype(np.float64)).mean()),
    features=features.numpy(),
  )
  print(
    "decoded range", float(dec.min()), float(dec.max()), "ids used", len(np.unique(ids_vis)), len(np.unique(ids_sem))
  )


if __name__ == "__main__":
  sys.exit(main())
