"""Generate the UniTok tokenizer goldens (ViTamin encoder, AttnProjections, VectorQuantizerM, ViTaminDecoder).

Usage:
  /tmp/torch-unitok/bin/python scripts/parity/gen_unitok.py <unitok_checkout> [--out tests/goldens/unitok]
  /tmp/torch-unitok/bin/python scripts/parity/gen_unitok.py <unitok_checkout> --count

<unitok_checkout> is an export of github.com/FoundationVision/UniTok at
bb8012e8e8d7be66928bedd80506c56a55ea6305 (``models/``, ``open_clip/`` with its
BPE vocabulary). The model is the authors' own ``models.unitok.UniTok`` built
from ``models/vitamin.py`` with timm 1.0.8 (the version UniTok's
requirements.txt pins; timm 1.0.31 passes ``norm_layer``/``bias`` to the MLP,
which UniTok's ``GeGluMlp`` does not take); nothing is re-implemented here.
Environment: torch 2.13.0 (CPU), timm 1.0.8, numpy, einops, open-clip-torch's
dependencies (ftfy, regex). ``utils.dist``/``utils.config`` are stubbed (one
process; ``Args`` is only a type there), and so is torchvision's
``_meta_registrations`` (the wheel's ops library needs CUDA; no op of it runs).

Two changes to the reference, both additions, so that a reduced width fits:
``vitamin_tiny`` is registered exactly as ``vitamin_large`` is (the same
``MbConvStages``/``VitCfg``/hybrid ViT with ``GeGluMlp``), with widths
(8, 16, 32), MBConv depths (1, 2), 2 ViT blocks of 2 heads; and
``ViTaminDecoder``'s width table gets the row ``'vitamin_tiny': (32, 16, 8)``
(its rows are a literal inside ``__init__``; the source is patched in memory).
The decoder keeps UniTok's default depths (4, 2).

Writes, into --out:
  unitok_tiny.pth   the checkpoint in the published layout: ``{'args': dict,
                    'trainer': {'unitok': state_dict}}`` (inference.py reads
                    ``ckpt['args']`` and ``ckpt['trainer']['unitok']``), text tower,
                    ``fc_norm``, ``projection`` and ``logit_scale`` included
  tokenizer.npz     images (2, 3, 32, 32) in [-1, 1]; trunk (B, L, 32) the encoder's
                    output; features (B, L, 16) after ``quant_proj`` (pre-quantization);
                    ids (B, G, L) ``img_to_idx``; decoded (B, 3, 32, 32) ``idx_to_img``
                    (clamped to [-1, 1]); decoded_raw the same before the clamp
                    (``decoder(post_quant_proj(idx_to_f(ids)))``: random weights saturate)
Every parameter (not the frozen zero ``encoder.pos_embed``) gets N(0, 0.05^2)
noise on top of its initialisation, so that no norm is the identity and no
bias zero. Reruns give byte-identical files.

--count builds the published configuration (vitamin_large, 256 px, vocab 32768
x 64 wide in 8 codebooks, ``quant_proj='attn'``, num_query 0) on the CPU
(about 4 GB, a minute), prints the parameter count of the image tokenizer
(encoder, quant_proj, quantizer, post_quant_proj, decoder) and of the rest, and
writes published_keys.json: every state_dict name and shape, the args, the counts.
"""

import argparse
import json
import os
import sys
import types

ap = argparse.ArgumentParser()
ap.add_argument("checkout")
ap.add_argument("--out", default="tests/goldens/unitok")
ap.add_argument("--count", action="store_true")
ARGS = ap.parse_args()
CHECKOUT = os.path.abspath(ARGS.checkout)

sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, CHECKOUT)
utils = types.ModuleType("utils")
utils.__path__ = []
utils.dist = types.SimpleNamespace(initialized=lambda: False)
utils_config = types.ModuleType("utils.config")
utils_config.Args = object
sys.modules.update({"utils": utils, "utils.dist": utils.dist, "utils.config": utils_config})
models = types.ModuleType("models")  # its __init__ imports the discriminator and trainer helpers
models.__path__ = [os.path.join(CHECKOUT, "models")]
sys.modules["models"] = models

path = os.path.join(CHECKOUT, "models", "vitamin.py")
with open(path) as f:
  src = f.read()
row = "'vitamin_large': (1024, 320, 160)"
assert src.count(row) == 1, "ViTaminDecoder's width table changed"
src = src.replace(row, row + ", 'vitamin_tiny': (32, 16, 8)")
vitamin = types.ModuleType("models.vitamin")
vitamin.__file__ = path
sys.modules["models.vitamin"] = vitamin
exec(compile(src, path, "exec"), vitamin.__dict__)

from timm.models._registry import register_model  # noqa: E402


@register_model
def vitamin_tiny(pretrained=False, **kwargs):
  stage_1_2 = vitamin.MbConvStages(
    cfg=vitamin.VitCfg(
      embed_dim=(8, 16, 32),
      depths=(1, 2, 1),
      stem_width=8,
      conv_cfg=vitamin.VitConvCfg(norm_layer="layernorm2d", norm_eps=1e-6),
      head_type="1d",
    )
  )
  stage3_args = dict(
    embed_dim=32, depth=2, num_heads=2, mlp_layer=vitamin.GeGluMlp, mlp_ratio=2.0, class_token=False, global_pool="avg"
  )
  return vitamin._create_vision_transformer_hybrid(
    "vitamin_tiny", backbone=stage_1_2, pretrained=pretrained, **dict(stage3_args, **kwargs)
  )


from models.unitok import UniTok  # noqa: E402

TOKENIZER = ("encoder.", "quant_proj.", "quantizer.", "post_quant_proj.", "decoder.")


def args(**kw):
  base = dict(
    model="vitamin_large",
    img_size=256,
    num_query=0,
    quant_proj="attn",
    vocab_size=32768,
    vocab_width=64,
    num_codebooks=8,
    vq_beta=0.25,
    le=0.0,
    e_temp=0.01,
    drop_path=0.0,
    grad_ckpt=False,
    embed_dim=1024,
    text_width=768,
    text_heads=12,
    text_layers=12,
    text_vocab_size=49408,
    text_context_length=77,
  )
  base.update(kw)
  return types.SimpleNamespace(**base)


def count() -> None:
  torch.set_num_threads(1)
  model = UniTok(args())  # on the CPU (timm's drop-path schedule calls .item(), so not on the meta device)
  image = sum(p.numel() for n, p in model.named_parameters() if n.startswith(TOKENIZER))
  frozen = sum(p.numel() for n, p in model.named_parameters() if n.startswith(TOKENIZER) and not p.requires_grad)
  rest = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(TOKENIZER))
  for part in TOKENIZER:
    print(part, sum(p.numel() for n, p in model.named_parameters() if n.startswith(part)))
  print(f"image tokenizer: {image} parameters ({frozen} of them the frozen zero encoder.pos_embed)")
  print(f"text tower and CLIP heads: {rest}")
  shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
  out = {"args": vars(args()), "shapes": shapes, "image_tokenizer_parameters": image, "frozen": frozen, "rest": rest}
  os.makedirs(ARGS.out, exist_ok=True)
  with open(os.path.join(ARGS.out, "published_keys.json"), "w") as f:
    json.dump(out, f, indent=0, sort_keys=True)


def main() -> None:
  torch.manual_seed(0)
  a = args(
    model="vitamin_tiny",
    img_size=32,
    vocab_size=128,
    vocab_width=16,
    num_codebooks=4,
    embed_dim=16,
    text_width=16,
    text_heads=2,
    text_layers=1,
    text_vocab_size=64,
    text_context_length=8,
  )
  model = UniTok(a)
  model.quantizer.init_vocab(-1.0)
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for p in model.parameters():
      if p.requires_grad:
        p.add_(0.05 * torch.randn(p.shape, generator=g))
  model.eval()
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    x = torch.from_numpy(images)
    trunk = model.encoder(x)
    features = model.quant_proj(trunk)
    ids = model.img_to_idx(x)
    decoded = model.idx_to_img(ids)
    decoded_raw = model.decoder(model.post_quant_proj(model.quantizer.idx_to_f(ids)))
  os.makedirs(ARGS.out, exist_ok=True)
  state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
  torch.save({"args": vars(a), "trainer": {"unitok": state}}, os.path.join(ARGS.out, "unitok_tiny.pth"))
  np.savez_compressed(
    os.path.join(ARGS.out, "tokenizer.npz"),
    images=images,
    trunk=trunk.numpy(),
    features=features.numpy(),
    ids=ids.numpy(),
    decoded=decoded.numpy(),
    decoded_raw=decoded_raw.numpy(),
  )
  print("trunk", tuple(trunk.shape), "features", tuple(features.shape), "ids", tuple(ids.shape), ids.flatten()[:16])
  print("decoded", tuple(decoded.shape), float(decoded.abs().max()))
  print("parameters", sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
  count() if ARGS.count else main()
