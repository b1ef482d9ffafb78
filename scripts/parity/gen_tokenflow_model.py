"""Generate the TokenFlow tokenizer goldens (a reduced-width CLIP-teacher checkpoint) with the authors' own model.

Usage:
  /tmp/torchenv/bin/python scripts/parity/gen_tokenflow_model.py <TokenFlow checkout> [--out tests/goldens/tokenflow]

<TokenFlow checkout> is a checkout of github.com/ByteFlow-AI/TokenFlow. Its
``tokenflow/tokenizer/vq_model.py`` hard-codes the widths, so this script loads
that file with those constants, and only those, replaced by small ones
(``REDUCE``: the CNNs' ``ch`` 128 -> 8 (encoder) and the enhanced decoder's 256
-> 16 and its 4 blocks per level -> 1, GroupNorm 32 -> 8 groups, the semantic ViTs' width 768 -> 192 (CLIP's
heads are width // 64 = 3, the BEiT decoder keeps its 12), the BEiT decoder's
3 blocks -> 1 and mlp_ratio 4 -> 1, CLIP's 512 feature width -> 64, the
``codebook_used`` window 131072 -> 64), builds it with ``z_channels=16`` and runs it as it is otherwise, with
``teacher="clipb_224", enhanced_decoder=True, infer_interpolate=True`` (the
published ``tokenflow_clipb_32k_enhanced.pt`` as scripts/reconstruction_vq.sh
and the text-to-image model run it, at 256 px). ``clip.load_clip_vision``
(which reads OpenAI's TorchScript file) is replaced by the same construction
on a random CLIP ``VisionTransformer`` of one block, ``proj`` deleted as there.
Needs torch, numpy, einops, timm and transformers 4.43.4 (the version requirements_tokenflow.txt pins).

Writes to --out:
  reduced.pt         {"model": state_dict} of the reduced TokenFlow (64 codes of 32 + 8), every
                     parameter redrawn at random (so a layout mistake shows), stored as float16
                     (as OpenAI's CLIP weights are; the model loads them into float32)
  golden.npz         on two 256 x 256 images in [-1, 1] (eval mode):
    images           (2, 256, 256, 3) uint8, the input (x = images / 127.5 - 1, NHWC)
    latents          (2, 16, 16, 40): encode_task_layer(CLIP patches) then quant_conv(encoder(x))
    ids              (2, 817) int64: the shared indices, scale by scale
    decoded_sub      decode_code(ids)[1][:, ::4, ::4] (NHWC), and decoded_mean / decoded_abs_mean of
                     the whole images
    features         (2, 256, 64): decode_code(ids)[0], the semantic decoder's output
  tokenflow_clipb_32k_enhanced_keys.json   the full-size names and shapes (random CLIP ViT-B/16),
                     which the tests count parameters by
  reduced_xl.pt, golden_xl.npz   the same for TokenFlow-XL (``teacher="siglip_384"``, 384 px, 2227 ids):
                     ``SiglipVisionModel.from_pretrained`` replaced by a random transformers SigLIP of
                     width 96, 16 heads (so400m's), 2 layers, patch 14; the BEiT decoder at width 96
                     with 32-wide features; the ``scaling_layer`` buffers (0.5) kept; latents as
                     ``encode``'s siglip branch computes them (``hidden_states[-2]`` of the scaled image,
                     the CNN on the image bicubic-resized to 432 px)
Reruns give byte-identical files.
"""

import argparse
import importlib.util
import json
import os
import sys
import types

import numpy as np
import torch
from transformers import SiglipVisionConfig
from transformers.models.siglip import modeling_siglip

REDUCE = (
  ("ch=128,", "ch=8,"),  # Encoder, Decoder signatures
  ("ch=256,", "ch=16,"),  # the enhanced decoder
  ("num_res_blocks=4,", "num_res_blocks=1,"),  # its blocks per level (the encoder keeps 2)
  ("num_groups=32", "num_groups=8"),
  (
    'encoder_config["embed_dim"] = decoder_config["embed_dim"] = 768',
    'encoder_config["embed_dim"] = decoder_config["embed_dim"] = 192',
  ),
  ("self.decoder_out_dim = 512", "self.decoder_out_dim = 64"),
  ("decoder_config['depth'] = 3", "decoder_config['depth'] = 1"),
  ("mlp_ratio=4.,", "mlp_ratio=1.,"),
  ("torch.zeros(131072)", "torch.zeros(64)"),
  # TokenFlow-XL (siglip_384): the BEiT decoder's default width (SigLIP so400m's) and the feature width.
  ("embed_dim=1152,", "embed_dim=96,"),
  ("self.decoder_out_dim = 1152", "self.decoder_out_dim = 32"),
)


def load(checkout, reduce, clip_width, clip_layers):
  root = os.path.join(checkout, "tokenflow", "tokenizer")
  spec = importlib.util.spec_from_file_location("tokenflow_clip_model", os.path.join(root, "clip", "model.py"))
  clip_model = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(clip_model)

  def load_clip_vision(name, download_root=None):
    # clip.py load_clip_vision, on random weights: the sizes of ViT-B/16 (or the reduced ones).
    assert name == "ViT-B/16", name
    visual = clip_model.VisionTransformer(
      input_resolution=224, patch_size=16, width=clip_width, layers=clip_layers, heads=clip_width // 64, output_dim=512
    )
    del visual.proj
    return visual

  pkg = types.ModuleType("tokenizer")
  pkg.__path__ = [root]
  sys.modules["tokenizer"] = pkg
  clip_pkg = types.ModuleType("tokenizer.clip")
  clip_pkg.__path__ = []
  clip_pkg.clip = types.SimpleNamespace(load_clip_vision=load_clip_vision)
  sys.modules["tokenizer.clip"] = clip_pkg
  with open(os.path.join(root, "vq_model.py")) as f:
    src = f.read()
  if reduce:
    for old, new in REDUCE:
      assert src.count(old) >= 1, old
      src = src.replace(old, new)
  name = "tokenizer.vq_model" + ("_reduced" if reduce else "")
  mod = types.ModuleType(name)
  mod.__package__ = "tokenizer"
  mod.__file__ = os.path.join(root, "vq_model.py")
  sys.modules[name] = mod
  exec(compile(src, mod.__file__, "exec"), mod.__dict__)
  return mod


def build(mod, codes, z_channels=256):
  return mod.TokenFlowFunc(
    codebook_size=codes, z_channels=z_channels, teacher="clipb_224", enhanced_decoder=True, infer_interpolate=True
  )


def main():
  p = argparse.ArgumentParser()
  p.add_argument("checkout")
  p.add_argument("--out", default="tests/goldens/tokenflow")
  args = p.parse_args()
  checkout = os.path.abspath(args.checkout)
  os.makedirs(args.out, exist_ok=True)
  torch.manual_seed(0)
  full = build(load(checkout, False, 768, 12), 32768)
  shapes = {k: list(v.shape) for k, v in full.state_dict().items()}
  with open(os.path.join(args.out, "tokenflow_clipb_32k_enhanced_keys.json"), "w") as f:
    json.dump(shapes, f, indent=0, sort_keys=True)
  groups = {}
  for k, v in full.named_parameters():
    groups[k.split(".")[0]] = groups.get(k.split(".")[0], 0) + v.numel()
  print(
    "params (full size)",
    sum(groups.values()),
    groups,
    "buffers",
    sorted(set(shapes) - set(dict(full.named_parameters()))),
  )
  del full

  ref = load(checkout, True, 192, 1)
  model = build(ref, 64, 16)
  randomize(model, torch.Generator().manual_seed(1))
  path = os.path.join(args.out, "reduced.pt")
  torch.save({"model": {k: v.half() for k, v in model.state_dict().items()}}, path)
  # Reload through the reference's own loading path (reconstruction_vq_ddp.py: load_state_dict(checkpoint["model"])).
  model = build(ref, 64, 16)
  model.load_state_dict(torch.load(path, map_location="cpu")["model"])
  model.eval()
  np.savez_compressed(os.path.join(args.out, "golden.npz"), **run(model, 256, 16))
  xl(ref, args.out)


def xl(ref, out):
  """TokenFlow-XL (tokenflow_siglip_32k.pt) reduced: SigLIP width 96 with so400m's 16 heads, 2 layers."""

  cfg = SiglipVisionConfig(
    hidden_size=96, intermediate_size=48, num_hidden_layers=2, num_attention_heads=16, image_size=384, patch_size=14
  )
  modeling_siglip.SiglipVisionModel.from_pretrained = classmethod(lambda cls, name: cls(cfg))
  build_xl = lambda: ref.TokenFlowFunc(codebook_size=64, z_channels=16, teacher="siglip_384")
  model = build_xl()
  randomize(model, torch.Generator().manual_seed(2))
  path = os.path.join(out, "reduced_xl.pt")
  torch.save({"model": {k: v.half() for k, v in model.state_dict().items()}}, path)
  model = build_xl()
  model.load_state_dict(torch.load(path, map_location="cpu")["model"])
  model.eval()
  np.savez_compressed(os.path.join(out, "golden_xl.npz"), **run(model, 384, 27))


def randomize(model, gen):
  """Every tensor redrawn (codebooks N(0, 1), norms 1 + N(0, 0.2), biases N(0, 0.1), weights N(0, 1 / fan_in))."""
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if name.endswith("codebook_used") or name.startswith("scaling_layer."):  # buffers: SigLIP's constant mean/std
        continue
      if name.startswith("quantize."):
        t.copy_(torch.randn(t.shape, generator=gen))
      elif t.ndim == 1 and ("ln" in name or "norm" in name) and name.endswith("weight"):
        t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=gen))
      elif t.ndim == 1 and "embedding" not in name:  # biases
        t.copy_(0.1 * torch.randn(t.shape, generator=gen))
      else:
        fan_in = max(1, int(np.prod(t.shape[1:]))) if t.ndim > 1 else 16
        if "embed" in name or "token" in name:
          fan_in = 4
        t.copy_(torch.randn(t.shape, generator=gen) / np.sqrt(fan_in))


def run(model, size, grid):
  """The reference's outputs on two smooth 8-bit size x size images (eval mode)."""
  yy, xx = np.mgrid[0:size, 0:size] / 255.0
  a = np.stack([np.sin(3 * xx + 1), np.cos(5 * yy), np.sin(7 * xx * yy + 0.5)], -1)
  b = np.stack([np.cos(9 * xx * xx), np.sin(4 * (xx - yy)), np.cos(6 * yy + 2 * xx)], -1)
  images = np.round((np.stack([a, b]) + 1.0) * 127.5).astype(np.uint8)
  x = np.transpose(images.astype(np.float32) / 127.5 - 1.0, (0, 3, 1, 2))
  with torch.no_grad():
    xt = torch.from_numpy(x)
    quant, _, ids = model.encode(xt)
    if model.teacher == "siglip_384":  # TokenFlow.encode's siglip branch, step by step
      hidden = model.encoder_vqkd(model.scaling_layer(xt), output_hidden_states=True).hidden_states[-2]
      sem = model.encode_task_layer(hidden)
      xt = torch.nn.functional.interpolate(xt, size=(16 * grid, 16 * grid), mode="bicubic")
    else:
      sem = model.encode_task_layer(model.encoder_vqkd(xt, return_patch_tokens=True))
    pix = model.quant_conv(model.encoder(xt)).permute(0, 2, 3, 1).reshape(2, grid * grid, -1)
    latents = torch.cat([sem, pix], -1).reshape(2, grid, grid, -1)
    features, decoded = model.decode_code(ids)
    _, forward = model.decode(quant)
  nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
  dec = nhwc(decoded)
  print("decode_code vs forward decode max abs", float(np.abs(dec - nhwc(forward)).max()))
  print("ids", tuple(ids.shape), "used", len(np.unique(ids.numpy())), "decoded", dec.shape, dec.min(), dec.max())
  return dict(
    images=images,
    latents=latents.numpy(),
    ids=ids.numpy().astype(np.int64),
    decoded_sub=dec[:, ::4, ::4],
    decoded_mean=np.float64(dec.astype(np.float64).mean()),
    decoded_abs_mean=np.float64(np.abs(dec.astype(np.float64)).mean()),
    features=features.numpy(),
  )


if __name__ == "__main__":
  sys.exit(main())
