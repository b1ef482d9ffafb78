"""Generate a reduced MoVQ (diffusers ``VQModel``, ``norm_type="spatial"``) and goldens with diffusers' own code.

Usage:
  /tmp/torchenv/bin/python scripts/parity/gen_movq.py [tests/goldens [<scikit-image data dir>]]

Kandinsky 2.1/2.2's and Kandinsky 3's image decoders (``movq``) are published in
the diffusers layout: ``config.json`` (``_class_name: VQModel``, ``norm_type:
spatial``) and ``diffusion_pytorch_model.safetensors``. This script builds a
reduced-width ``diffusers.VQModel`` of that kind (block_out_channels (32, 64),
one res block per level, attention at the lowest level and in the middle as
Kandinsky's, 4-channel latents, 64 codes), makes every weight random (not the
framework's initial values), writes it with ``save_pretrained`` (the published
layout) to ``<goldens>/movq/reduced/``, reloads it with ``from_pretrained`` and
records in ``golden.npz``:

  names, images_uint8, x   the taming goldens' photos through Kandinsky's image
                           processor (``VaeImageProcessor(resample="bicubic",
                           reducing_gap=1)``, pipeline_kandinsky2_2_img2img.py):
                           PIL bicubic to 32x32, then [-1, 1]
  h_prequant               ``encode(x).latents``: quant_conv(encoder(x)), the
                           latents Kandinsky's img2img starts from (unscaled)
  indices                  the nearest codes of those (``quantize``)
  decoded                  ``decode(codebook[indices], force_not_quantize=True)``
  decoded_latents          ``decode(h_prequant, force_not_quantize=True)``: how
                           the Kandinsky pipelines decode (continuous latents,
                           no quantisation, no scaling_factor)
  near_tie                 best and second distances within 1e-5 relative
and the same for the taming goldens' non-square input (suffix ``_nonsquare``).
Also ``movq/kandinsky22_keys.json``: the tensor names and shapes of a VQModel
built from Kandinsky 2.2's published movq config (diffusers'
scripts/convert_kandinsky_to_diffusers.py ``MOVQ_CONFIG``, the values of
kandinsky-community/kandinsky-2-2-decoder movq/config.json). Needs torch,
diffusers, safetensors, numpy, pillow, and the scikit-image photos
(its data directory, or scikit-image installed).
"""

import json
import os
import sys
from collections import OrderedDict

import numpy as np
import PIL.Image
import torch
from diffusers import VQModel
from diffusers.image_processor import VaeImageProcessor

GOLDENS = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "tests/goldens"
PHOTOS = sys.argv[2] if len(sys.argv) > 2 else None  # default: the installed scikit-image's data/
torch.set_grad_enabled(False)

SIZE = 32
REDUCED = dict(
  in_channels=3,
  out_channels=3,
  down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
  up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
  block_out_channels=[32, 64],
  layers_per_block=1,
  latent_channels=4,
  num_vq_embeddings=64,
  vq_embed_dim=4,
  norm_num_groups=32,
  norm_type="spatial",
  sample_size=SIZE,
)
KANDINSKY22 = dict(
  in_channels=3,
  out_channels=3,
  latent_channels=4,
  down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
  up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  num_vq_embeddings=16384,
  block_out_channels=[128, 256, 256, 512],
  vq_embed_dim=4,
  layers_per_block=2,
  norm_type="spatial",
)


def randomise(model, seed):
  g = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, torch.nn.GroupNorm) and m.weight is not None:
      m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
      m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
      fan_in = int(np.prod(m.weight.shape[1:]))
      m.weight.copy_(torch.randn(m.weight.shape, generator=g) / np.sqrt(fan_in))
      if m.bias is not None:
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    elif isinstance(m, torch.nn.Embedding):
      m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)


def outputs(model, x):
  h = model.encode(x).latents
  quant, _, (_, _, ids) = model.quantize(h)
  ids = ids.reshape(h.shape[0], h.shape[2], h.shape[3])
  codes = model.quantize.embedding.weight[ids].permute(0, 3, 1, 2)
  decoded = model.decode(codes, force_not_quantize=True).sample
  # The forward pass (decode with quantisation) gives the same image from the straight-through latents.
  gap = float((model.decode(h).sample - decoded).abs().max())
  assert gap < 1e-5, gap
  z = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]).double()
  d = torch.cdist(z, model.quantize.embedding.weight.double()) ** 2
  top2 = torch.topk(d, 2, dim=1, largest=False).values
  near = ((top2[:, 1] - top2[:, 0]) / top2[:, 1].abs().clamp_min(1e-12) < 1e-5).reshape(ids.shape)
  return {
    "h_prequant": h.numpy(),
    "indices": ids.numpy().astype(np.int64),
    "decoded": decoded.numpy(),
    "decoded_latents": model.decode(h, force_not_quantize=True).sample.numpy(),
    "near_tie": near.numpy(),
  }


def preprocess(names):
  photos = PHOTOS
  if photos is None:
    import skimage  # noqa: PLC0415  (only for the photos' location)

    photos = os.path.join(os.path.dirname(skimage.__file__), "data")
  proc = VaeImageProcessor(vae_scale_factor=2, resample="bicubic", reducing_gap=1)
  images = [PIL.Image.open(os.path.join(photos, f"{n}.png")).convert("RGB") for n in names]
  u8 = np.stack([np.asarray(proc.resize(im, SIZE, SIZE)) for im in images])
  x = torch.cat([proc.preprocess(im, SIZE, SIZE) for im in images]).numpy()
  np.testing.assert_allclose(x, (u8.transpose(0, 3, 1, 2) / 127.5 - 1.0).astype(np.float32), atol=1e-6)
  return u8, x


def main():
  with np.load(os.path.join(GOLDENS, "taming", "golden.npz")) as t:
    names, x_nonsquare = t["names"], t["x_nonsquare"]
  out = os.path.join(GOLDENS, "movq")
  os.makedirs(out, exist_ok=True)
  torch.manual_seed(0)
  model = VQModel(**REDUCED)
  randomise(model, 1)
  path = os.path.join(out, "reduced")
  model.save_pretrained(path, safe_serialization=True)
  model = VQModel.from_pretrained(path).eval()
  u8, x = preprocess(names)
  golden = OrderedDict(names=names, images_uint8=u8, x=x)
  golden.update(outputs(model, torch.from_numpy(x)))
  golden["x_nonsquare"] = x_nonsquare
  for k, v in outputs(model, torch.from_numpy(x_nonsquare)).items():
    golden[k + "_nonsquare"] = v
  np.savez_compressed(os.path.join(out, "golden.npz"), **golden)
  ids = golden["indices"]
  print(
    f"reduced: {sum(p.numel() for p in model.parameters())} parameters, ids {ids.shape}"
    f" ({len(np.unique(ids))} distinct), near ties {int(golden['near_tie'].sum())}",
  )
  full = VQModel(**KANDINSKY22)
  table = {k: list(v.shape) for k, v in full.state_dict().items()}
  with open(os.path.join(out, "kandinsky22_keys.json"), "w") as f:
    json.dump(table, f, indent=0, sort_keys=True)
  print("kandinsky 2.2 movq:", sum(int(np.prod(v)) for v in table.values()), "parameters")


if __name__ == "__main__":
  main()
