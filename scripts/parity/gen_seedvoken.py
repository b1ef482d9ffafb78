"""Generate reduced Open-MAGVIT2 and IBQ checkpoints and goldens with SEED-Voken's own modules.

Usage:
  /tmp/torchenv/bin/python scripts/parity/gen_seedvoken.py <seed_voken_checkout> [tests/goldens]

<seed_voken_checkout> is a checkout of github.com/TencentARC/SEED-Voken (the
directory holding ``src/``). The Encoder, Decoder, quantizers and LitEma are
imported from it; the Lightning module classes (``VQModel``, ``IBQ``) are not,
since they need lightning and the training losses: the containers below have
their child names (encoder, decoder, loss, quantize, [quant_conv,
post_quant_conv], model_ema) and compose them as their ``encode`` / ``decode``
/ ``decode_code`` do (src/Open_MAGVIT2/models/lfqgan.py, src/IBQ/models/ibqgan.py).
Needs torch, numpy, einops.

For each family writes ``<goldens>/<family>/reduced.ckpt`` (a Lightning-like
dict with ``state_dict`` holding the model, a stand-in ``loss.*`` network and
``model_ema.*`` buffers that differ from the model's) and ``golden.npz``: the
model inputs ``x`` (and ``x_nonsquare``) are taken from the taming goldens (the
same photos, resized by the same SmallestMaxSize + CenterCrop), and the
outputs are those of the EMA weights, which the reference's evaluation uses
(``with model.ema_scope()`` in evaluation_image.py): ``h_prequant`` (the
quantizer's input), ``indices``, ``decoded`` (decoded from the indices) and
``near_tie`` (Open-MAGVIT2: a latent channel within 1e-5 of 0 relative to the
latent's scale; IBQ: best and second logits within 1e-5 relative). Reruns give
identical arrays. Also ``<family>/<name>_keys.json``: the names and shapes of
the full-size models (Open-MAGVIT2 256 and 128 px, IBQ with 1024 codes).
"""

import os
import sys
from collections import OrderedDict

import numpy as np
import torch

CHECKOUT = os.path.abspath(sys.argv[1])
GOLDENS = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "tests/goldens"
sys.path.insert(0, CHECKOUT)

from src.IBQ.modules.diffusionmodules.model import Decoder as IBQDecoder  # noqa: E402
from src.IBQ.modules.diffusionmodules.model import Encoder as IBQEncoder  # noqa: E402
from src.IBQ.modules.ema import LitEma as IBQLitEma  # noqa: E402
from src.IBQ.modules.vqvae.quantize import IndexPropagationQuantize  # noqa: E402
from src.Open_MAGVIT2.modules.diffusionmodules.improved_model import Decoder as MagvitDecoder  # noqa: E402
from src.Open_MAGVIT2.modules.diffusionmodules.improved_model import Encoder as MagvitEncoder  # noqa: E402
from src.Open_MAGVIT2.modules.ema import LitEma as MagvitLitEma  # noqa: E402
from src.Open_MAGVIT2.modules.vqvae.lookup_free_quantize import LFQ  # noqa: E402

torch.set_grad_enabled(False)

MAGVIT = dict(
  double_z=False, z_channels=6, resolution=32, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2], num_res_blocks=1
)
IBQ = dict(
  double_z=False,
  z_channels=48,
  resolution=32,
  in_channels=3,
  out_ch=3,
  ch=32,
  ch_mult=[2, 1],
  num_res_blocks=1,
  attn_resolutions=[16],
  dropout=0.0,
)
IBQ_CODES, IBQ_DIM = 256, 16


class Loss(torch.nn.Module):
  """Stands in for the training loss's discriminator (ignored by converters)."""

  def __init__(self):
    super().__init__()
    self.discriminator = torch.nn.Conv2d(3, 4, 3)


class OpenMagvit2(torch.nn.Module):
  """lfqgan.VQModel's children and encode / decode / decode_code."""

  def __init__(self):
    super().__init__()
    self.encoder = MagvitEncoder(**MAGVIT)
    self.decoder = MagvitDecoder(**MAGVIT)
    self.loss = Loss()
    self.quantize = LFQ(dim=MAGVIT["z_channels"], codebook_size=2 ** MAGVIT["z_channels"])
    self.model_ema = MagvitLitEma(self)

  def latent(self, x):
    return self.encoder(x)

  def ids(self, x):
    (quant, _, indices), _ = self.quantize(self.encoder(x), return_loss_breakdown=True)
    return indices.reshape(quant.shape[0], quant.shape[2], quant.shape[3])

  def decode_ids(self, ids):
    b, h, w = ids.shape
    quant = self.quantize.get_codebook_entry(ids.reshape(b, h * w), (b, h, w, MAGVIT["z_channels"]), None)
    return self.decoder(quant)

  def near_tie(self, h):
    return (h.abs() < 1e-5 * h.std()).any(dim=1)


class IBQModel(torch.nn.Module):
  """ibqgan.IBQ's children (VQModel's, with IndexPropagationQuantize) and encode / decode."""

  def __init__(self):
    super().__init__()
    self.encoder = IBQEncoder(**IBQ)
    self.decoder = IBQDecoder(**IBQ)
    self.loss = Loss()
    self.quantize = IndexPropagationQuantize(IBQ_CODES, IBQ_DIM, beta=0.25, use_entropy_loss=True)
    self.quant_conv = torch.nn.Conv2d(IBQ["z_channels"], IBQ_DIM, 1)
    self.post_quant_conv = torch.nn.Conv2d(IBQ_DIM, IBQ["z_channels"], 1)
    self.model_ema = IBQLitEma(self)

  def latent(self, x):
    return self.quant_conv(self.encoder(x))

  def ids(self, x):
    h = self.latent(x)
    _, _, (_, _, ind) = self.quantize(h)
    return ind.reshape(h.shape[0], h.shape[2], h.shape[3])

  def decode_ids(self, ids):
    b, h, w = ids.shape
    quant = self.quantize.get_codebook_entry(ids.reshape(-1), (b, h, w, IBQ_DIM))
    return self.decoder(self.post_quant_conv(quant))

  def near_tie(self, h):
    z = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]).double()
    logits = z @ self.quantize.embedding.weight.double().T
    top2 = torch.topk(logits, 2, dim=1).values
    gap = (top2[:, 0] - top2[:, 1]) / top2[:, 0].abs().clamp_min(1e-12)
    return (gap < 1e-5).reshape(h.shape[0], h.shape[2], h.shape[3])


def randomise(model, seed):
  """Every weight, bias, norm and Linear parameter random (not the framework's initial values)."""
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


def build(cls, seed):
  torch.manual_seed(seed)
  model = cls()
  randomise(model, seed + 1)  # the raw weights
  ema = cls()
  randomise(ema, seed + 2)  # the EMA weights: other values
  for name, p in ema.named_parameters():
    if not name.startswith("model_ema."):
      getattr(model.model_ema, name.replace(".", "")).copy_(p)
  return model.eval()


def save(model, path):
  ckpt = {"epoch": 3, "global_step": 1234, "state_dict": model.state_dict(), "hyper_parameters": {}}
  torch.save(ckpt, path)


def reload(cls, path):
  model = cls()
  sd = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
  model.load_state_dict(sd, strict=True)
  return model.eval()


def outputs(model, x):
  # ema_scope (lfqgan.py / ibqgan.py): the EMA weights swapped in for evaluation.
  params = [p for n, p in model.named_parameters() if not n.startswith("model_ema.")]
  model.model_ema.store(params)
  model.model_ema.copy_to(model)
  try:
    h = model.latent(x)
    ids = model.ids(x)
    decoded = model.decode_ids(ids)
    near = model.near_tie(h)
  finally:
    model.model_ema.restore(params)
  return {
    "h_prequant": h.numpy(),
    "indices": ids.numpy().astype(np.int64),
    "decoded": decoded.numpy(),
    "near_tie": near.numpy(),
  }


def full_keys():
  """Published names and shapes of the full-size models (generator only), for the full-size tests."""
  import json  # noqa: PLC0415

  magvit = dict(MAGVIT, z_channels=18, ch=128, ch_mult=[1, 1, 2, 2, 4], num_res_blocks=4)
  ibq = dict(IBQ, z_channels=256, resolution=256, ch=128, ch_mult=[1, 1, 2, 2, 4], num_res_blocks=4)
  for family, name, modules in (
    ("open-magvit2", "open-magvit2_256", {"encoder": MagvitEncoder(**magvit), "decoder": MagvitDecoder(**magvit)}),
    (
      "open-magvit2",
      "open-magvit2_128",
      {
        "encoder": MagvitEncoder(**dict(magvit, ch_mult=[1, 2, 2, 4])),
        "decoder": MagvitDecoder(**dict(magvit, ch_mult=[1, 2, 2, 4])),
      },
    ),
    (
      "ibq",
      "ibq_1024",
      {
        "encoder": IBQEncoder(**ibq),
        "decoder": IBQDecoder(**ibq),
        "quantize": IndexPropagationQuantize(1024, 256),
        "quant_conv": torch.nn.Conv2d(256, 256, 1),
        "post_quant_conv": torch.nn.Conv2d(256, 256, 1),
      },
    ),
  ):
    table = {f"{prefix}.{k}": list(v.shape) for prefix, m in modules.items() for k, v in m.state_dict().items()}
    with open(os.path.join(GOLDENS, family, f"{name}_keys.json"), "w") as f:
      json.dump(table, f, indent=0, sort_keys=True)
    print(name, sum(int(np.prod(v)) for v in table.values()), "parameters")


def main():
  with np.load(os.path.join(GOLDENS, "taming", "golden.npz")) as t:
    inputs = {k: t[k] for k in ("names", "images_uint8", "x", "x_nonsquare")}
  for family, cls, seed in (("open-magvit2", OpenMagvit2, 10), ("ibq", IBQModel, 20)):
    out = os.path.join(GOLDENS, family)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "reduced.ckpt")
    save(build(cls, seed), path)
    model = reload(cls, path)
    golden = OrderedDict(names=inputs["names"], images_uint8=inputs["images_uint8"], x=inputs["x"])
    golden.update(outputs(model, torch.from_numpy(inputs["x"])))
    golden["x_nonsquare"] = inputs["x_nonsquare"]
    for k, v in outputs(model, torch.from_numpy(inputs["x_nonsquare"])).items():
      golden[k + "_nonsquare"] = v
    np.savez_compressed(os.path.join(out, "golden.npz"), **golden)
    ids = golden["indices"]
    print(
      family,
      f"ckpt {os.path.getsize(path)} B, ids {ids.shape} ({len(np.unique(ids))} distinct),",
      f"near ties {int(golden['near_tie'].sum() + golden['near_tie_nonsquare'].sum())},",
      f"decoded std {golden['decoded'].std():.3f}",
    )
  full_keys()


if __name__ == "__main__":
  main()
