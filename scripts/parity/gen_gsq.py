"""Generate a reduced GSQ flexTokenizer checkpoint and goldens with flex_gen's own code.

Usage:
  /tmp/torchenv/bin/python scripts/parity/gen_gsq.py <flex_gen checkout> [tests/goldens [<scikit-image data dir>]]

GSQ's tokenizers (HF HelmholtzAI-FZJ/GSQ-*) are ``checkpoint.pt`` files written
by flex_gen's ``Basictokenizer.save``: ``model_state_dict`` and ``config``,
the pickled ``FlexTokenizer`` arguments. This script builds a reduced-width
flexTokenizer as the trainer does (scripts/train_autoencoder.py:
``create_model("flexTokenizer", **model_configs)`` with the OmegaConf config,
so the pickled arguments hold OmegaConf containers as the published ones do;
the registered ``flexTokenizer`` function is called as timm's ``create_model`` does)
with the published options (``use_adaptive_norm``,
``use_learnable_up_down_sample``, a ``gvq`` quantizer with ``use_l2_norm``),
hidden 8 (its GroupNorms then have 8 and 16
groups, as vqtok's ``norm_groups=32`` gives narrow widths; the published
widths, 128 and up, have 32), multipliers (1, 2, 2) (a level whose width changes in each
direction and one whose does not), one res block a level and in the middle,
8-channel latents as 2 groups of 4, 64 codes; makes every weight random (not
the framework's initial values; codes off the unit sphere), saves it with
``save`` to ``<goldens>/gsq/reduced.pt``, reloads it with
``FlexTokenizer.init_and_load_from`` and records in ``golden.npz``:

  names, x        the taming goldens' photos through timm's eval transform
                  (``create_transform(input_size=32, is_training=False,
                  mean=std=0.5)``, as flex_gen/datasets/transforms.py builds it)
  h               the encoder's output (the quantizer's input)
  indices         ``tokenize(x)``: (B, h, w, G) ids
  decoded         ``decode_from_code_indices(indices)``
  near_tie        best and second distance within 1e-5 relative
and the same for the taming goldens' non-square input (suffix ``_nonsquare``).
``quantizer_modes.npz``: flex_gen's ``gvq`` quantizer with ``use_l2_norm``
(GSQ), without (the ``-no_l2`` ablations) and with ``force_1d_clip`` on
one-channel groups (the ``-CLIP`` ablation), each on random latents:
codebook, latents, ids, output and loss. Also ``gsq/published_keys.json``: the tensor names and shapes, and the
parameter count, of a flexTokenizer built from published config.yaml files
(F8: GSQ-F8-D64-G16-V8k, GSQ-F8-D8-V64k; F16: GSQ-F16-D16-G16-V256k-CLIP's
geometry). Needs torch, timm, torchvision, omegaconf, einops,
huggingface_hub, numpy, pillow, and the scikit-image photos. No flex_gen code
is copied: it is imported from the checkout (its package ``__init__`` files,
which import every model and discriminator, are bypassed).
"""

import json
import os
import sys
import types
from collections import OrderedDict

import numpy as np
import PIL.Image
import torch
from omegaconf import OmegaConf

CHECKOUT = os.path.abspath(sys.argv[1])
GOLDENS = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "tests/goldens"
PHOTOS = sys.argv[3] if len(sys.argv) > 3 else None
torch.set_grad_enabled(False)

# Bypass flex_gen/__init__.py and flex_gen/autoencoders/__init__.py (they import every model).
for name in ("flex_gen", "flex_gen.autoencoders"):
  mod = types.ModuleType(name)
  mod.__path__ = [os.path.join(CHECKOUT, *name.split("."))]
  sys.modules[name] = mod
from flex_gen.autoencoders.flexTokenizer import flexTokenizer  # noqa: E402  (the function timm registers)
from flex_gen.autoencoders.flexTokenizer.flexTokenizer import FlexTokenizer  # noqa: E402
from flex_gen.quantizers import AnyQuantizer  # noqa: E402
from timm.data import create_transform  # noqa: E402


class NarrowGroupNorm(torch.nn.GroupNorm):
  """GroupNorm(32, c) with min(32, c) groups when c < 32, as vqtok's CNN does: a reduced width can be < 32."""

  def __init__(self, num_groups, num_channels, *args, **kwargs):
    super().__init__(min(num_groups, num_channels), num_channels, *args, **kwargs)


torch.nn.GroupNorm = NarrowGroupNorm  # before flex_gen's modules build any (they call nn.GroupNorm(32, c))

SIZE = 32
REDUCED = {
  "name": "flexTokenizer",
  "embedding_dim": 8,
  "hidden_channels": 8,
  "channel_multipliers": [1, 2, 2],
  "encoder_layer_configs": [1, 1, 1, 1],
  "decoder_layer_configs": [1, 1, 1, 1],
  "use_adaptive_norm": True,
  "use_learnable_up_down_sample": True,
  "quantizer_config": {
    "quantize_type": "gvq",
    "embed_dim": 8,
    "num_embed": 64,
    "commitment_loss_weight": 0.25,
    "use_l2_norm": True,
    "use_uniform_init": False,
    "num_group": 2,
  },
}
F8 = {
  "name": "flexTokenizer",
  "hidden_channels": 128,
  "channel_multipliers": [1, 2, 2, 4],
  "encoder_layer_configs": [2, 2, 2, 2, 2],
  "decoder_layer_configs": [2, 2, 2, 2, 2],
  "use_adaptive_norm": True,
  "use_learnable_up_down_sample": True,
}
F16 = dict(F8, channel_multipliers=[1, 1, 2, 2, 4], encoder_layer_configs=[2] * 6, decoder_layer_configs=[2] * 6)
q = lambda kind, dim, codes, **kw: {
  "embedding_dim": dim,
  "quantizer_config": dict(
    quantize_type=kind, embed_dim=dim, num_embed=codes, commitment_loss_weight=0.25, use_l2_norm=True, **kw
  ),
}
PUBLISHED = {
  "GSQ-F8-D64-G16-V8k": dict(F8, **q("gvq", 64, 8192, num_group=16)),
  "GSQ-F8-D8-V64k": dict(F8, **q("vq", 8, 65536)),
  "GSQ-F16-D16-G16-V256k": dict(F16, **q("gvq", 16, 262144, num_group=16)),
}


def build(cfg):
  cfg = OmegaConf.create(cfg)  # as the trainer's config: the model gets OmegaConf containers
  assert cfg.pop("name") == "flexTokenizer"
  # What timm's create_model calls (newer timm adds a cache_dir argument that flexTokenizer refuses).
  return flexTokenizer(pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None, **cfg)


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
    elif isinstance(m, torch.nn.Embedding):  # off the sphere: the output is the stored code
      m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (0.5 + torch.rand(m.weight.shape[0], 1, generator=g)))


def outputs(model, x):
  h = model.encoder(x)
  ids = model.tokenize(x)  # (B, h, w, G)
  decoded = model.decode_from_code_indices(ids)
  recon = model(x, return_recon_loss_only=True)["recon"]  # the forward pass decodes the same codes
  assert float((recon - decoded).abs().max()) < 1e-5
  qz = model.quantizers
  z = h.permute(0, 2, 3, 1).reshape(-1, qz.embed_dim).double()
  z = z / z.norm(dim=-1, keepdim=True)
  c = qz.codebook.weight.double()
  c = c / c.norm(dim=-1, keepdim=True)
  d = torch.cdist(z, c) ** 2
  top2 = torch.topk(d, 2, dim=1, largest=False).values
  near = ((top2[:, 1] - top2[:, 0]) / top2[:, 1].abs().clamp_min(1e-12) < 1e-5).reshape(ids.shape)
  return {
    "h": h.numpy(),
    "indices": ids.numpy().astype(np.int64),
    "decoded": decoded.numpy(),
    "near_tie": near.numpy(),
  }


def preprocess(names):
  photos = PHOTOS
  if photos is None:
    import skimage  # noqa: PLC0415  (only for the photos' location)

    photos = os.path.join(os.path.dirname(skimage.__file__), "data")
  t = create_transform(input_size=SIZE, is_training=False, no_aug=True, mean=[0.5] * 3, std=[0.5] * 3)
  print(t)
  images = [PIL.Image.open(os.path.join(photos, f"{n}.png")).convert("RGB") for n in names]
  return torch.stack([t(im) for im in images]).numpy()


#: The quantizers of the published ablations, as their config.yaml files set them (plus GSQ's own):
#: GSQ-F16-D16-G8-V256k-no_l2 (gvq without use_l2_norm) and GSQ-F16-D16-G16-V256k-CLIP (one-channel
#: groups, uniform init, force_1d_clip).
MODES = {
  "l2": dict(quantize_type="gvq", embed_dim=8, num_embed=64, num_group=2, use_l2_norm=True),
  "none": dict(quantize_type="gvq", embed_dim=8, num_embed=64, num_group=2, use_l2_norm=False),
  "clip": dict(
    quantize_type="gvq", embed_dim=8, num_embed=16, num_group=8, use_l2_norm=False, use_uniform_init=True,
    force_1d_clip=True,
  ),
}


def quantizer_modes():
  """Each mode's quantizer (built as FlexTokenizer builds it) on random latents: ids, output, loss."""
  g = torch.Generator().manual_seed(2)
  out = {}
  for mode, cfg in MODES.items():
    q = AnyQuantizer.build_quantizer(dict(cfg, commitment_loss_weight=0.25))
    w = q.codebook.weight
    w.copy_(torch.randn(w.shape, generator=g) * (0.5 + torch.rand(w.shape[0], 1, generator=g)))
    z = 1.5 * torch.randn(2, cfg["embed_dim"], 3, 5, generator=g)  # (B, C, h, w), as the decoder gives it
    r = q(z)
    out[f"{mode}_codebook"] = w.numpy().copy()
    out[f"{mode}_z"] = z.numpy()
    out[f"{mode}_indices"] = r["codes"].numpy().astype(np.int64)
    out[f"{mode}_quantized"] = r["quantized"].numpy()
    out[f"{mode}_loss"] = np.float32(r["aux_loss"])
  return out


def main():
  with np.load(os.path.join(GOLDENS, "taming", "golden.npz")) as t:
    names, x_nonsquare = t["names"], t["x_nonsquare"]
  out = os.path.join(GOLDENS, "gsq")
  os.makedirs(out, exist_ok=True)
  torch.manual_seed(0)
  model = build(REDUCED)
  randomise(model, 1)
  path = os.path.join(out, "reduced.pt")
  model.save(path)
  model = FlexTokenizer.init_and_load_from(path).eval()
  x = preprocess(names)
  golden = OrderedDict(names=names, x=x)
  golden.update(outputs(model, torch.from_numpy(x)))
  golden["x_nonsquare"] = x_nonsquare
  for k, v in outputs(model, torch.from_numpy(x_nonsquare)).items():
    golden[k + "_nonsquare"] = v
  np.savez_compressed(os.path.join(out, "golden.npz"), **golden)
  np.savez_compressed(os.path.join(out, "quantizer_modes.npz"), **quantizer_modes())
  print("ids", golden["indices"].shape, "near ties", int(golden["near_tie"].sum()), int(golden["near_tie_nonsquare"].sum()))
  keys = {}
  for name, cfg in PUBLISHED.items():
    sd = build(cfg).state_dict()
    keys[name] = {"count": int(sum(v.numel() for v in sd.values())), "shapes": {k: list(v.shape) for k, v in sd.items()}}
    print(name, keys[name]["count"])
  with open(os.path.join(out, "published_keys.json"), "w") as f:
    json.dump(keys, f)


if __name__ == "__main__":
  main()
