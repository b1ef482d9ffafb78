"""Generate a reduced SimVQ checkpoint and goldens with SimVQ's own modules, and the full-size key lists.

Usage:
  PYTHONPATH=<site with einops, torchvision> /tmp/torchenv/bin/python scripts/parity/gen_simvq.py \
      <simvq_checkout> [tests/goldens [<scikit-image data dir>]]

<simvq_checkout> is a checkout of github.com/youngsheen/SimVQ (the directory
holding ``taming/``). The Encoder and Decoder (taming/modules/diffusionmodules/
improved_model.py), the ``SimVQ`` quantizer (taming/modules/vqvae/quantize.py),
``LitEma`` (taming/modules/ema.py) and the image preprocessing (``ImagePaths``,
taming/data/base.py: torchvision ``Resize(size)`` bilinear on the short side,
then ``CenterCrop``) are imported from it; albumentations, which base.py
imports but ImagePaths does not use, is stubbed. The Lightning module
(taming/models/vq.py ``VQModel``) is not imported, since it needs lightning
and the training losses: the container below has its child names (encoder,
decoder, loss, quantize, model_ema) and composes them as its ``encode`` /
``decode`` do. Needs torch, numpy, pillow, einops, torchvision (its PIL
transforms only).

Writes ``<goldens>/simvq/reduced.ckpt`` (a Lightning-like dict whose
``state_dict`` holds the model, a stand-in ``loss.*`` network and ``LitEma``
buffers ``model_ema.*`` that differ from the model's; the frozen codebook
``quantize.embedding.weight`` has no EMA copy, as in the published files,
since LitEma copies only parameters that require grad) and ``golden.npz``:
the three scikit-image photos of the taming goldens preprocessed by
``ImagePaths`` (``images_uint8``, ``x``), the taming goldens' non-square input
(``x_nonsquare``), and the outputs of the EMA weights (the reference
evaluates under ``ema_scope``, evaluation.py): ``h_prequant`` (the encoder's
output, the quantizer's input), ``indices``, ``decoded`` (the decoder on the codes of
the ids; evaluation.py decodes the quantizer's straight-through output
``z + (z_q - z).detach()``, which equals them up to float rounding, checked
within 1e-5) and ``near_tie`` (the best and
second distances to the projected codebook within 1e-5 relative). The
reference's ``get_codebook_entry`` looks the ids up in the unprojected
embedding, which its own evaluation never does; the images decoded from the
ids here gather the projected codebook ``embedding_proj(embedding.weight)``,
as the quantizer's forward does. Reruns give identical arrays. Also
``simvq/simvq_<codes>_keys.json``: names and shapes of the published models
(configs/imagenet_simvq_128_B.yaml, with 1024, 8192, 65536 and 262144 codes).
"""

import json
import os
import sys
import types
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image

CHECKOUT = os.path.abspath(sys.argv[1])
GOLDENS = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "tests/goldens"
PHOTOS = sys.argv[3] if len(sys.argv) > 3 else None  # default: the installed scikit-image's data/
sys.path.insert(0, CHECKOUT)
sys.modules.setdefault("albumentations", types.ModuleType("albumentations"))  # imported, unused by ImagePaths

from taming.data.base import ImagePaths  # noqa: E402
from taming.modules.diffusionmodules.improved_model import Decoder, Encoder  # noqa: E402
from taming.modules.ema import LitEma  # noqa: E402
from taming.modules.vqvae.quantize import SimVQ  # noqa: E402

torch.set_grad_enabled(False)

SIZE = 32
DD = dict(
  double_z=False, z_channels=16, resolution=SIZE, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 1], num_res_blocks=1
)
CODES = 128
# configs/imagenet_simvq_128_B.yaml (the published models differ in n_e only).
FULL_DD = dict(
  double_z=False,
  z_channels=128,
  resolution=128,
  in_channels=3,
  out_ch=3,
  ch=128,
  ch_mult=[1, 2, 2, 4],
  num_res_blocks=2,
)
FULL_CODES = (1024, 8192, 65536, 262144)


class Loss(torch.nn.Module):
  """Stands in for the training loss's discriminator (ignored by converters)."""

  def __init__(self):
    super().__init__()
    self.discriminator = torch.nn.Conv2d(3, 4, 3)


class Model(torch.nn.Module):
  """vq.VQModel's children (use_ema=True) and its encode / decode."""

  def __init__(self):
    super().__init__()
    self.encoder = Encoder(**DD)
    self.decoder = Decoder(**DD)
    self.loss = Loss()
    self.quantize = SimVQ(CODES, DD["z_channels"], beta=0.25, legacy=False)
    self.model_ema = LitEma(self)

  def encode(self, x):
    h = self.encoder(x)
    (quant, _, indices), _ = self.quantize(h)
    return h, quant, indices.reshape(h.shape[0], h.shape[2], h.shape[3])

  def decode_ids(self, ids):
    codes = self.quantize.embedding_proj(self.quantize.embedding.weight)
    return self.decoder(torch.nn.functional.embedding(ids, codes).permute(0, 3, 1, 2))

  def near_tie(self, h):
    z = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]).double()
    codes = self.quantize.embedding_proj(self.quantize.embedding.weight).double()
    d = torch.cdist(z, codes) ** 2
    top2 = torch.topk(d, 2, dim=1, largest=False).values
    gap = (top2[:, 1] - top2[:, 0]) / top2[:, 1].abs().clamp_min(1e-12)
    return (gap < 1e-5).reshape(h.shape[0], h.shape[2], h.shape[3])


def randomise(model, seed):
  """Every weight, bias, norm and codebook random (not the framework's initial values)."""
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


def build(seed):
  torch.manual_seed(seed)
  model = Model()
  randomise(model, seed + 1)  # the raw weights
  ema = Model()
  randomise(ema, seed + 2)  # the EMA weights: other values (the frozen codebook has no EMA copy)
  for name, p in ema.named_parameters():
    if not name.startswith("model_ema.") and name.replace(".", "") in model.model_ema.m_name2s_name.values():
      getattr(model.model_ema, name.replace(".", "")).copy_(p)
  assert "quantizeembeddingweight" not in dict(model.model_ema.named_buffers())
  return model.eval()


def save(model, path):
  ckpt = {"epoch": 3, "global_step": 1234, "state_dict": model.state_dict(), "hyper_parameters": {}}
  torch.save(ckpt, path)


def reload(path):
  model = Model()
  sd = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
  model.load_state_dict(sd, strict=True)
  return model.eval()


def outputs(model, x):
  # VQModel.ema_scope: the EMA weights swapped in for evaluation.
  params = [p for n, p in model.named_parameters() if not n.startswith("model_ema.")]
  model.model_ema.store(params)
  model.model_ema.copy_to(model)
  try:
    h, quant, ids = model.encode(x)
    decoded = model.decode_ids(ids)
    # evaluation.py decodes the straight-through output z + (z_q - z).detach(): z_q up to rounding.
    gap = float((model.decoder(quant) - decoded).abs().max())
    assert gap < 1e-5, gap
    print(f"decoding the quantizer's output vs the ids: max abs {gap:.1e}")
    near = model.near_tie(h)
  finally:
    model.model_ema.restore(params)
  return {
    "h_prequant": h.numpy(),
    "indices": ids.numpy().astype(np.int64),
    "decoded": decoded.numpy(),
    "near_tie": near.numpy(),
  }


def preprocess(names):
  """ImagePaths (the validation set's, random_crop False) on the scikit-image photos."""
  photos = PHOTOS
  if photos is None:
    import skimage  # noqa: PLC0415  (only for the photos' location)

    photos = os.path.join(os.path.dirname(skimage.__file__), "data")
  paths = [os.path.join(photos, f"{n}.png") for n in names]
  ip = ImagePaths(paths, size=SIZE, random_crop=False)
  u8 = np.stack([np.array(ip.preprocessor(Image.open(p).convert("RGB"))) for p in paths])
  x = np.stack([ip[i]["image"] for i in range(len(paths))])
  np.testing.assert_array_equal(x, (u8 / 127.5 - 1.0).astype(np.float32))
  return u8, np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def full_keys(out):
  for codes in FULL_CODES:
    modules = {
      "encoder": Encoder(**FULL_DD),
      "decoder": Decoder(**FULL_DD),
      "quantize": SimVQ(codes, 128, legacy=False),
    }
    table = {f"{prefix}.{k}": list(v.shape) for prefix, m in modules.items() for k, v in m.state_dict().items()}
    with open(os.path.join(out, f"simvq_{codes}_keys.json"), "w") as f:
      json.dump(table, f, indent=0, sort_keys=True)
    print(f"simvq {codes} codes:", sum(int(np.prod(v)) for v in table.values()), "parameters")


def main():
  with np.load(os.path.join(GOLDENS, "taming", "golden.npz")) as t:
    names, x_nonsquare = t["names"], t["x_nonsquare"]
  out = os.path.join(GOLDENS, "simvq")
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, "reduced.ckpt")
  save(build(30), path)
  model = reload(path)
  u8, x = preprocess(names)
  golden = OrderedDict(names=names, images_uint8=u8, x=x)
  golden.update(outputs(model, torch.from_numpy(x)))
  golden["x_nonsquare"] = x_nonsquare
  for k, v in outputs(model, torch.from_numpy(x_nonsquare)).items():
    golden[k + "_nonsquare"] = v
  np.savez_compressed(os.path.join(out, "golden.npz"), **golden)
  ids = golden["indices"]
  print(
    f"ckpt {os.path.getsize(path)} B, ids {ids.shape} ({len(np.unique(ids))} distinct),",
    f"near ties {int(golden['near_tie'].sum() + golden['near_tie_nonsquare'].sum())},",
    f"decoded std {golden['decoded'].std():.3f}",
  )
  full_keys(out)


if __name__ == "__main__":
  main()
