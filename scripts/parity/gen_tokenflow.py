"""Goldens of TokenFlow's dual-codebook shared-index quantizer, from the authors' own code.

Usage:
  /tmp/torchenv/bin/python scripts/parity/gen_tokenflow.py <TokenFlow checkout> [--out tests/goldens/tokenflow]

Imports ``tokenflow/tokenizer/vq_model.py`` from the checkout (ByteFlow-AI/
TokenFlow) with its heavy imports stubbed (transformers, timm, the CLIP and
VQKD modules: none of them is used by the quantizer or the multi-scale loop)
and records in ``quantizer.npz``:

  single_*   ``VectorQuantizer(n_e=16, e_dim=7, beta=0.25, entropy_loss_ratio=0.1, show_usage=False,
             l2_norm=True, split=[4, 3])`` in training mode, codebooks off the
             unit sphere, on random ``(2, 7, 3, 5)`` latents: the two codebooks,
             z, the output, the shared indices, vq_loss, commit_loss,
             entropy_loss, and the gradients of their sum with respect to z and
             to each codebook (the straight-through estimator and the loss terms)
  ms_*       ``TokenFlow.encode``'s multi-scale loop (VAR-style, no phi) over
             scales [1, 2, 3] with the same quantizer, on random 3x3 latents
             given as the encoders' outputs (semantic 4 channels, pixel 3):
             the output ``final_quantize``, the flat indices, the per-scale mean
             of each loss term, the gradient of their sum with respect to the
             latents, the gradient of ``sum(final_quantize * ms_output_weight)``
             (a random weight) with respect to the latents, and
             ``decode_code``'s latent (sum of bicubic-upsampled codes of each
             scale) for those indices

With ``--keys``, instead: builds the published TokenFlow-XL tokenizer
(``tokenflow_siglip_32k.pt``: ``TokenFlowFunc(codebook_size=32768,
teacher="siglip_384")``, random weights; ``SiglipVisionModel.from_pretrained``
replaced by the so400m-patch14-384 config, so nothing is downloaded) with the
real transformers 4.43.4 (the version requirements_tokenflow.txt pins, whose
``SiglipVisionModel`` names its weights ``vision_model.*``) and timm, and
writes ``published_keys.json``: every tensor name and shape of its state dict
(the file's ``model``/``ema`` entry) and the parameter counts per module.

Needs torch and einops (numpy < 2 or >= 2); ``--keys`` also transformers==4.43.4
and timm. No TokenFlow code is copied.
"""

import argparse
import os
import sys
import types

import numpy as np
import torch


def stub(name, **attrs):
  mod = types.ModuleType(name)
  mod.__path__ = []
  for k, v in attrs.items():
    setattr(mod, k, v)
  sys.modules[name] = mod
  return mod


def import_vq_model(checkout):
  root = os.path.join(checkout, "tokenflow")
  never = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stubbed"))
  stub("transformers", SiglipImageProcessor=None, SiglipVisionConfig=None)
  stub("transformers.modeling_utils", get_parameter_device=never, get_parameter_dtype=never)
  stub("transformers.models")
  stub("transformers.models.siglip")
  stub("transformers.models.siglip.modeling_siglip", SiglipVisionModel=None)
  stub("timm", create_model=never)
  stub("timm.models")
  stub("timm.models.layers", trunc_normal_=never)
  pkg = stub("tokenizer")
  pkg.__path__ = [os.path.join(root, "tokenizer")]
  stub("tokenizer.vqkd_model", VisionTransformer=None)
  stub("tokenizer.clip", clip=None)
  import tokenizer.vq_model as vq_model  # noqa: PLC0415

  return vq_model


def grads(loss, tensors):
  return [g.numpy().copy() for g in torch.autograd.grad(loss, tensors)]


def single(vq_model, g):
  # show_usage=False: its sliding window of ids (a logged metric) is a buffer that requires grad,
  # which the in-place shift refuses outside the authors' DDP setup.
  q = vq_model.VectorQuantizer(16, 7, 0.25, 0.1, True, False, split=[4, 3]).train()
  for emb in (q.embedding_vqkd, q.embedding_vqgan):  # off the sphere: the search normalises them
    w = emb.weight
    with torch.no_grad():
      w.copy_(torch.randn(w.shape, generator=g) * (0.5 + torch.rand(w.shape[0], 1, generator=g)))
  z = (1.5 * torch.randn(2, 7, 3, 5, generator=g)).requires_grad_(True)
  z_q, (vq_loss, commit_loss, entropy_loss, *_), (_, _, idx) = q(z)
  total = vq_loss + commit_loss + entropy_loss
  gz, gs, gp = grads(total, [z, q.embedding_vqkd.weight, q.embedding_vqgan.weight])
  return q, {
    "single_semantic_codebook": q.embedding_vqkd.weight.detach().numpy().copy(),
    "single_pixel_codebook": q.embedding_vqgan.weight.detach().numpy().copy(),
    "single_z": z.detach().numpy(),
    "single_z_q": z_q.detach().numpy(),
    "single_indices": idx.numpy().astype(np.int64),
    "single_vq_loss": np.float32(vq_loss.item()),
    "single_commit_loss": np.float32(commit_loss.item()),
    "single_entropy_loss": np.float32(entropy_loss.item()),
    "single_grad_z": gz,
    "single_grad_semantic_codebook": gs,
    "single_grad_pixel_codebook": gp,
  }


def multiscale(vq_model, q, g):
  """TokenFlow.encode's multi-scale loop, with the encoders replaced by given latents."""
  sem = (1.5 * torch.randn(2, 9, 4, generator=g)).requires_grad_(True)  # (B, N, C) patch features
  pix = (1.5 * torch.randn(2, 3, 3, 3, generator=g)).requires_grad_(True)  # (B, C, h, w)
  m = torch.nn.Module.__new__(vq_model.TokenFlow)
  torch.nn.Module.__init__(m)
  m.teacher = "clipb_224"
  m.encoder_vqkd = lambda x, return_patch_tokens: sem
  identity = torch.nn.Linear(4, 4)
  with torch.no_grad():
    identity.weight.copy_(torch.eye(4))
    identity.bias.zero_()
  m.encode_task_layer = torch.nn.Sequential(identity)
  m.encoder = lambda x: pix
  m.quant_conv = torch.nn.Identity()
  m.quantize = q
  m.enable_var = True
  m.scale_rq_layers = [1, 2, 3]
  m.rq_depth = 3
  m.using_shared_conv = False
  m.random_scale_drop = False
  m.semantic_code_dim, m.vqgan_code_dim = 4, 3
  m.train()
  final, losses, inds = m.encode(torch.zeros(2, 3, 8, 8))
  vq_loss, commit_loss, entropy_loss = losses[:3]
  gs, gp = grads(vq_loss + commit_loss + entropy_loss, [sem, pix])
  # The output's own gradient (each scale straight-through to its l2-normalised residual).
  final, _, _ = m.encode(torch.zeros(2, 3, 8, 8))
  weight = torch.randn(final.shape, generator=g)
  os_, op = grads((final * weight).sum(), [sem, pix])
  m.eval()
  with torch.no_grad():
    quant_b = 0.0
    pos = 0
    for s in m.scale_rq_layers:  # decode_code's loop, without the decoders
      codes = q.get_codebook_entry(inds[:, pos : pos + s * s])
      pos += s * s
      codes = codes.reshape(2, s, s, -1).permute(0, 3, 1, 2)
      quant_b = quant_b + torch.nn.functional.interpolate(codes, size=(3, 3), mode="bicubic")
  return {
    "ms_semantic": sem.detach().numpy(),
    "ms_pixel": pix.detach().numpy(),
    "ms_z_q": final.detach().numpy(),
    "ms_indices": inds.detach().numpy().astype(np.int64),
    "ms_vq_loss": np.float32(vq_loss.item()),
    "ms_commit_loss": np.float32(commit_loss.item()),
    "ms_entropy_loss": np.float32(entropy_loss.item()),
    "ms_grad_semantic": gs,
    "ms_grad_pixel": gp,
    "ms_output_weight": weight.numpy(),
    "ms_output_grad_semantic": os_,
    "ms_output_grad_pixel": op,
    "ms_decoded_latent": quant_b.numpy(),
  }


def published_keys(checkout, out_dir):
  import json  # noqa: PLC0415

  from transformers import SiglipVisionConfig  # noqa: PLC0415
  from transformers.models.siglip import modeling_siglip  # noqa: PLC0415

  cfg = SiglipVisionConfig(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=384, patch_size=14
  )
  modeling_siglip.SiglipVisionModel.from_pretrained = classmethod(lambda cls, name: cls(cfg))
  pkg = stub("tokenizer")
  pkg.__path__ = [os.path.join(checkout, "tokenflow", "tokenizer")]
  stub("tokenizer.clip", clip=None)  # the CLIP teacher only (clipb_224)
  import tokenizer.vq_model as vq_model  # noqa: PLC0415

  model = vq_model.TokenFlowFunc(codebook_size=32768, teacher="siglip_384")
  sd = model.state_dict()
  params = dict(model.named_parameters())
  groups = {}
  for k, v in params.items():
    groups[k.split(".")[0]] = groups.get(k.split(".")[0], 0) + v.numel()
  keys = {
    "tokenflow_siglip_32k": {
      "count": int(sum(v.numel() for v in params.values())),
      "count_by_module": groups,
      "buffers": sorted(set(sd) - set(params)),
      "shapes": {k: list(v.shape) for k, v in sd.items()},
    }
  }
  print(keys["tokenflow_siglip_32k"]["count"], groups)
  with open(os.path.join(out_dir, "published_keys.json"), "w") as f:
    json.dump(keys, f)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("checkout")
  ap.add_argument("--out", default="tests/goldens/tokenflow")
  ap.add_argument("--keys", action="store_true", help="write published_keys.json instead (real transformers, timm)")
  args = ap.parse_args()
  if args.keys:
    os.makedirs(args.out, exist_ok=True)
    return published_keys(os.path.abspath(args.checkout), args.out)
  vq_model = import_vq_model(os.path.abspath(args.checkout))
  torch.manual_seed(0)
  g = torch.Generator().manual_seed(1)
  q, out = single(vq_model, g)
  out.update(multiscale(vq_model, q, g))
  os.makedirs(args.out, exist_ok=True)
  np.savez_compressed(os.path.join(args.out, "quantizer.npz"), **out)
  print({k: v.shape for k, v in out.items()})
  print("single ids", out["single_indices"].reshape(-1)[:12], "ms ids", out["ms_indices"][0])


if __name__ == "__main__":
  main()
