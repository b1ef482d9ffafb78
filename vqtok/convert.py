"""Converts a published tokenizer checkpoint into a vqtok tokenizer directory.

  python -m vqtok.convert FORMAT CHECKPOINT OUTPUT_DIR [--ema | --noema] [--overwrite]

FORMAT is one of: llamagen (vq_ds16_c2i.pt, vq_ds8_c2i.pt), taming
(vqgan_imagenet_f16_1024 / _16384 last.ckpt), maskgit
(tokenizer_imagenet256_checkpoint), open-magvit2 (imagenet_256_L.ckpt,
imagenet_128_L.ckpt), open-magvit2-video (video_128_262144.ckpt: a causal video
tokenizer, 17 frames of 128 px -> 5 x 16 x 16 tokens), ibq (imagenet256_*.ckpt), var (vae_ch160v4096z32.pth,
multi-scale: 680 tokens per image in scale order), titok (tokenizer_titok_{l32,b64,s128}.bin
or the hub's model.safetensors), one-d-piece (turing-motors/One-D-Piece-*-256 model.safetensors: TiTok
with tail token drop, decodes from any prefix), bsq-vit (checkpoint.pt, 18 or 36 bits), movq (a diffusers
VQModel directory with spatial norms: Kandinsky 2.2's or 3's movq/; CHECKPOINT is the directory), gsq
(checkpoint.pt of the HelmholtzAI-FZJ/GSQ-* repositories), fqgan
(fqgan_{dual,triple}_ds{16,8}.pt: factorised sub-codebooks, one index stream each), vidtok
(vidtok_fsq_causal_{488,41616}_*.ckpt with the YAML of the same name beside it: causal video, 1 + 4k
frames; vidtok_fsq_noncausal_{488,41616}_262144.ckpt: non-causal, 4k frames), tokenflow
(tokenflow_clipb_32k_enhanced.pt, tokenflow_siglip_32k.pt: a CLIP or SigLIP and a CNN encoder, one shared
index over the dual codebook, 817 multi-scale tokens per 256 px image / 2227 per 384 px image), unitok
(unitok_tokenizer.pth: the ViTamin-L image tokenizer, 16 x 16 tokens of 8 ids each at 256 px; its text tower
and CLIP heads are not converted). The variant is
read off the file. Neither torch nor the authors' code is needed. OUTPUT_DIR gets config.json and
model.safetensors; tokenize, eval.py and train.py --config.init_from read it.

Feature teachers (frozen vision foundation models for the feature-alignment
losses): dinov2 (dinov2_vit{s,b,l}14[_reg4]_pretrain.pth), clip (OpenAI's
TorchScript ViT-B-16.pt, ViT-L-14.pt), siglip (big_vision's
webli_*_{b16,l16,so400m}_*.npz: the image tower). OUTPUT_DIR is then a
feature-teacher directory, which --config.feature_teacher names.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from vqtok import cli, feature_teacher, files, pretrained, tokenizer_dir

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_bool(
    "ema",
    None,
    "Take the EMA weights (--ema) or the raw ones (--noema). Default: the raw weights, except for open-magvit2(-video),"
    " ibq, simvq and bsq-vit files with EMA copies, which the reference evaluates with.",
  )
  flags.DEFINE_bool("overwrite", False, "Replace OUTPUT_DIR if it exists and is not empty.")


def main(argv: list[str]) -> int:
  if len(argv) != 4:
    raise cli.UsageError(
      "usage: python -m vqtok.convert FORMAT CHECKPOINT OUTPUT_DIR; FORMAT is one of"
      f" {sorted(pretrained.FORMATS | pretrained.TEACHERS)}"
    )
  fmt, checkpoint, output = argv[1:]
  if fmt in pretrained.TEACHERS:
    return _convert_teacher(fmt, checkpoint, output)
  tokenizer, config, meta = pretrained.convert(fmt, checkpoint, ema=FLAGS.ema)
  path = tokenizer_dir.save_tokenizer(tokenizer, config, output, metadata=meta, overwrite=FLAGS.overwrite)
  q = tokenizer.quantizer
  summary = {
    "output": path,
    "format": fmt,
    "token_shape_at_image_size": list(tokenizer.token_shape),
    "image_size": int(config.image_size),
    "codebook_size": int(q.codebook_size),
    "code_dim": int(q.code_dim),
    "parameters": int(sum(v.size for v in files.arrays(tokenizer).values())),
    "source_sha256": meta["source_sha256"],
  }
  if tokenizer.is_video:  # a video tokenizer: the tokens of one clip of the published length
    frames = int(config.video.num_frames)
    summary["token_shape_per_clip"] = [tokenizer.latent_frames(frames), *tokenizer.token_shape]
    summary["frames_per_clip"] = frames
  print(json.dumps(summary, indent=2))
  return 0


def _convert_teacher(fmt: str, checkpoint: str, output: str) -> int:
  if FLAGS.ema:
    raise cli.UsageError(f"{fmt} files hold no EMA weights; drop --ema")
  module, config, meta = pretrained.convert_teacher(fmt, checkpoint)
  path = feature_teacher.save(module, config, output, metadata=meta, overwrite=FLAGS.overwrite)
  summary = {
    "output": path,
    "format": fmt,
    "feature_teacher": {k: v for k, v in config.to_dict().items() if k not in ("mean", "std")},
    "parameters": int(sum(v.size for v in files.arrays(module).values())),
    "source_sha256": meta["source_sha256"],
  }
  print(json.dumps(summary, indent=2))
  return 0


def _usage() -> str:
  every = {**pretrained.FORMATS, **pretrained.TEACHERS}
  rows = "\n".join(f"  {name:10s} {m.FILES}" for name, m in sorted(every.items()))
  return f"{__doc__}\nformats:\n{rows}\n"


if __name__ == "__main__":
  _define_flags()
  if any(a in ("-h", "--help", "-?", "--helpshort") for a in sys.argv[1:]):
    print(_usage())
    print(FLAGS.main_module_help())
    sys.exit(0)
  cli.run(main)
