#!/usr/bin/env python
"""Generate a reduced-width LlamaGen VQ checkpoint + golden outputs.

Usage: /tmp/torchenv/bin/python gen_llamagen.py /path/to/LlamaGen-checkout [--out DIR] [options]

All model / preprocessing code is imported from the reference checkout
(tokenizer/tokenizer_image/vq_model.py, dataset/augmentation.py); nothing is copied.
The only code here is glue: build, randomise, save, run, dump.
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="LlamaGen checkout root")
  p.add_argument("--out", default="/tmp/parity/out/llamagen")
  p.add_argument("--keys-dir", default="/tmp/parity")
  p.add_argument("--seed", type=int, default=3)  # seed 3: no near-tie tokens
  p.add_argument("--ch", type=int, default=32)
  p.add_argument("--ch-mult", default="2,1")
  p.add_argument("--num-res-blocks", type=int, default=1)
  p.add_argument("--z-channels", type=int, default=48)
  p.add_argument("--codebook-size", type=int, default=128)
  p.add_argument("--embed-dim", type=int, default=8)
  p.add_argument("--image-size", type=int, default=32)
  p.add_argument("--skip-full", action="store_true", help="skip full-size param counts / key dumps")
  return p.parse_args()


args = parse()
REF = os.path.abspath(args.ref)
sys.path.insert(0, REF)
from tokenizer.tokenizer_image import vq_model as ref  # noqa: E402  (reference code)
from dataset.augmentation import center_crop_arr  # noqa: E402      (reference preprocessing)

torch.set_grad_enabled(False)
os.makedirs(args.out, exist_ok=True)
os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
CH_MULT = [int(c) for c in args.ch_mult.split(",")]


# ----------------------------------------------------------------------------- model
def build_reduced():
  torch.manual_seed(args.seed)
  cfg = ref.ModelArgs(
    codebook_size=args.codebook_size,
    codebook_embed_dim=args.embed_dim,
    codebook_l2_norm=True,  # published default (vq_model.py:16)
    codebook_show_usage=True,  # published default -> quantize.codebook_used buffer (vq_model.py:211-212)
    commit_loss_beta=0.25,
    entropy_loss_ratio=0.0,
    encoder_ch_mult=CH_MULT,
    decoder_ch_mult=CH_MULT,
    z_channels=args.z_channels,
    dropout_p=0.0,
  )
  model = ref.VQModel(cfg)
  # VQModel hard-wires ch=128 / num_res_blocks=2 (vq_model.py:32-33 use the Encoder/Decoder
  # defaults); swap in reference Encoder/Decoder built with the reduced width.
  # Reassigning an existing child keeps its position in state_dict order.
  model.encoder = ref.Encoder(
    ch=args.ch, ch_mult=CH_MULT, num_res_blocks=args.num_res_blocks, z_channels=args.z_channels, dropout=0.0
  )
  model.decoder = ref.Decoder(
    z_channels=args.z_channels, ch=args.ch, ch_mult=CH_MULT, num_res_blocks=args.num_res_blocks, dropout=0.0
  )
  randomise(model)
  model.eval()
  return model


def randomise(model):
  g = torch.Generator().manual_seed(args.seed + 1)
  for name, m in model.named_modules():
    if isinstance(m, torch.nn.GroupNorm):
      m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))  # U(0.5, 1.5)
      m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    elif isinstance(m, torch.nn.Conv2d):
      fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
      m.weight.copy_(torch.randn(m.weight.shape, generator=g) / np.sqrt(fan_in))
      m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
  q = model.quantize
  # un-normalised codebook rows (norms != 1) so the loader must l2-normalise at run time
  q.embedding.weight.copy_(
    torch.randn(q.embedding.weight.shape, generator=g) * (0.5 + torch.rand(q.n_e, 1, generator=g))
  )
  # codebook_used holds recently used indices as float (vq_model.py:243-244)
  q.codebook_used.copy_(torch.randint(0, q.n_e, q.codebook_used.shape, generator=g).float())


def count(mod):
  return sum(p.numel() for p in mod.parameters())


def split_counts(model):
  return OrderedDict(
    encoder=count(model.encoder),
    decoder=count(model.decoder),
    quantizer=count(model.quantize),
    quantizer_buffers=sum(b.numel() for b in model.quantize.buffers()),
    quant_conv_and_post_quant_conv=count(model.quant_conv) + count(model.post_quant_conv),
    total_params=count(model),
  )


def key_list(sd):
  return [{"key": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in sd.items()]


# ----------------------------------------------------------------------------- images
def source_images():
  """3 scikit-image photos saved as PNG (one square 512x512, two non-square)."""
  out = []
  try:
    import skimage.data as d

    photos = [("astronaut", d.astronaut()), ("coffee", d.coffee()), ("chelsea", d.chelsea())]
  except Exception as e:  # deterministic synthetic fallback
    print("skimage unavailable (%s); using synthetic images" % e)
    rs = np.random.RandomState(0)
    yy, xx = np.mgrid[0:300, 0:451]
    photos = [
      ("synth_a", (rs.rand(512, 512, 3) * 255).astype(np.uint8)),
      ("synth_b", np.stack([(xx * 255 // 450), (yy * 255 // 299), ((xx + yy) % 256)], -1).astype(np.uint8)),
      ("synth_c", (np.sin(xx[..., None] / 7.0 + np.arange(3)) * 127 + 128).astype(np.uint8)),
    ]
  for name, arr in photos:
    path = os.path.join(args.out, "images", name + ".png")
    Image.fromarray(arr).save(path)
    out.append((name, path))
  return out


def preprocess(path, size):
  # vq_demo.py:46-56: PIL RGB -> center_crop_arr -> /255. -> 2x-1 (float64) -> NCHW float32
  pil = Image.open(path).convert("RGB")
  img = center_crop_arr(pil, size)
  u8 = np.array(img)
  x = 2.0 * (u8 / 255.0) - 1.0
  x = torch.tensor(x).unsqueeze(0)
  x = torch.einsum("nhwc->nchw", x).float()
  # torchvision path (reconstruction_vq_ddp.py:85-89, extract_codes_c2i.py:65-68):
  # ToTensor = uint8 -> float32 /255, Normalize(0.5,0.5) = (x-0.5)/0.5 in float32
  tv = (torch.from_numpy(u8).permute(2, 0, 1).float().div(255) - 0.5) / 0.5
  return u8, x, float((tv.unsqueeze(0) - x).abs().max())


# ----------------------------------------------------------------------------- run
def run(model, x):
  enc = model.encoder(x)
  h = model.quant_conv(enc)  # latent right before quantisation
  quant, _, (_, _, indices) = model.encode(x)  # vq_model.py:41-45
  dec = model.decode_code(indices, quant.shape)  # vq_model.py:52-55, as in reconstruction_vq_ddp.py:133-134
  quant_ids = model.quantize.get_codebook_entry(indices, quant.shape, channel_first=True)  # vq_model.py:261-276
  dec_from_quant = model.decode(quant)
  # distances (float64) for tie analysis, same formula as vq_model.py:221-230
  z = torch.nn.functional.normalize(h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]).double(), p=2, dim=-1)
  e = torch.nn.functional.normalize(model.quantize.embedding.weight.double(), p=2, dim=-1)
  d = (z**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * z @ e.t()
  top2 = torch.topk(d, 2, dim=1, largest=False)
  gap = top2.values[:, 1] - top2.values[:, 0]
  scale = (z**2).sum(1) + (e[top2.indices[:, 0]] ** 2).sum(1)
  rel_gap = gap / scale
  B, C, H, W = h.shape
  return OrderedDict(
    enc_out=enc.numpy(),
    h_prequant=h.numpy(),
    indices=indices.reshape(B, H, W).numpy().astype(np.int64),
    indices_fp64_argmin=top2.indices[:, 0].reshape(B, H, W).numpy().astype(np.int64),
    quant=quant.numpy(),  # z_q as returned by encode (straight-through z + (z_q - z))
    quant_from_ids=quant_ids.numpy(),  # exact l2-normalised codebook rows (what decode_code feeds post_quant_conv)
    decoded=dec.numpy(),
    decoded_from_quant=dec_from_quant.numpy(),
    decoded_uint8=torch.clamp(127.5 * dec + 128.0, 0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy(),  # vq_demo.py:65
    dist_top2=top2.values.reshape(B, H, W, 2).numpy(),
    dist_rel_gap=rel_gap.reshape(B, H, W).numpy(),
    near_tie=(rel_gap < 1e-5).reshape(B, H, W).numpy(),
  )


def main():
  model = build_reduced()
  sd = model.state_dict()
  cfg = OrderedDict(
    family="llamagen",
    ch=args.ch,
    ch_mult=CH_MULT,
    num_res_blocks=args.num_res_blocks,
    z_channels=args.z_channels,
    codebook_size=args.codebook_size,
    codebook_embed_dim=args.embed_dim,
    codebook_l2_norm=True,
    codebook_show_usage=True,
    dropout_p=0.0,
    in_channels=3,
    out_channels=3,
    image_size=args.image_size,
    seed=args.seed,
    downsample=2 ** (len(CH_MULT) - 1),
    attention="every res block of the last (lowest-res) level, enc and dec, + mid.1",
  )

  # ---- checkpoint in the published layout: {"model": state_dict}
  ckpt_path = os.path.join(args.out, "llamagen_vq_reduced.pt")
  torch.save({"model": sd}, ckpt_path)

  # ---- training-script layout variant (vq_train.py:245-254): extra keys + argparse.Namespace + "ema".
  #      "ema" holds the golden weights; "model" holds perturbed weights. LlamaGen's vq_demo.py:26-33 and
  #      reconstruction_vq_ddp.py:64-71 prefer "ema" over "model"; sample_c2i.py:33 / extract_codes_c2i.py:51 use "model".
  g = torch.Generator().manual_seed(123)
  perturbed = OrderedDict(
    (k, (v + 0.01 * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v.clone()) for k, v in sd.items()
  )
  train_ckpt = {
    "model": perturbed,
    "optimizer": {
      "state": {},
      "param_groups": [
        {
          "lr": 1e-4,
          "betas": (0.9, 0.95),
          "eps": 1e-8,
          "weight_decay": 0.05,
          "params": list(range(len(list(model.parameters())))),
        }
      ],
    },
    "discriminator": OrderedDict(
      [("main.0.weight", torch.randn(8, 3, 4, 4, generator=g)), ("main.0.bias", torch.randn(8, generator=g))]
    ),
    "optimizer_disc": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
    "steps": 12345,
    "args": argparse.Namespace(
      vq_model="VQ-16", codebook_size=args.codebook_size, codebook_embed_dim=args.embed_dim, ema=True
    ),
    "ema": sd,
  }
  train_path = os.path.join(args.out, "llamagen_vq_reduced_trainlayout.pt")
  torch.save(train_ckpt, train_path)

  # ---- reload the published-layout file exactly as LlamaGen's vq_demo.py:25-34 does and use that model
  model2 = build_reduced()
  for p in model2.parameters():
    p.data.zero_()
  checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
  model2.load_state_dict(checkpoint["model"])
  model2.eval()
  model = model2

  # ---- images
  names, u8s, xs, tvdiff = [], [], [], []
  for name, path in source_images():
    u8, x, dtv = preprocess(path, args.image_size)
    names.append(name)
    u8s.append(u8)
    xs.append(x)
    tvdiff.append(dtv)
  x = torch.cat(xs, 0)
  res = run(model, x)
  assert (res["indices"] == res["indices_fp64_argmin"]).all() or res["near_tie"].any()

  # extra: non-square model input (32 x 48) straight from the coffee PNG (PIL bicubic resize), not canonical
  pil = Image.open(os.path.join(args.out, "images", names[1] + ".png")).convert("RGB")
  u8_ns = np.array(pil.resize((args.image_size * 3 // 2, args.image_size), resample=Image.BICUBIC))
  x_ns = torch.einsum("nhwc->nchw", torch.tensor(2.0 * (u8_ns / 255.0) - 1.0).unsqueeze(0)).float()
  res_ns = run(model, x_ns)

  npz = OrderedDict(
    names=np.array(names),
    images_uint8=np.stack(u8s),  # NHWC uint8 after center_crop_arr
    x=x.numpy(),  # NCHW float32 fed to the model
  )
  npz.update(res)
  npz["x_nonsquare"] = x_ns.numpy()
  npz["images_uint8_nonsquare"] = u8_ns[None]
  for k, v in res_ns.items():
    npz[k + "_nonsquare"] = v
  npz["config_json"] = np.array(json.dumps(cfg))
  np.savez(os.path.join(args.out, "llamagen_golden.npz"), **npz)

  cfg["param_counts_reduced"] = split_counts(model)
  cfg["ckpt_bytes"] = os.path.getsize(ckpt_path)
  cfg["trainlayout_ckpt_bytes"] = os.path.getsize(train_path)
  cfg["near_ties"] = int(res["near_tie"].sum()) + int(res_ns["near_tie"].sum())
  cfg["min_rel_gap"] = float(min(res["dist_rel_gap"].min(), res_ns["dist_rel_gap"].min()))
  cfg["unique_tokens"] = int(len(np.unique(res["indices"])))
  cfg["torchvision_vs_numpy_preproc_maxdiff"] = max(tvdiff)
  cfg["out_stats"] = {
    k: [float(np.min(v)), float(np.max(v)), float(np.std(v))] for k, v in res.items() if v.dtype == np.float32
  }
  with open(os.path.join(args.out, "llamagen_reduced_config.json"), "w") as f:
    json.dump(cfg, f, indent=1)
  with open(os.path.join(args.out, "llamagen_reduced_keys.json"), "w") as f:
    json.dump(key_list(sd), f, indent=0)
  print(
    json.dumps(
      {
        k: cfg[k]
        for k in [
          "param_counts_reduced",
          "ckpt_bytes",
          "trainlayout_ckpt_bytes",
          "near_ties",
          "min_rel_gap",
          "unique_tokens",
          "torchvision_vs_numpy_preproc_maxdiff",
        ]
      },
      indent=1,
    )
  )

  # ---- full-size published configs
  if not args.skip_full:
    full = OrderedDict()
    for variant, fn in [("vq16", ref.VQ_16), ("vq8", ref.VQ_8)]:
      torch.manual_seed(0)
      m = fn()  # codebook_size=16384, codebook_embed_dim=8 (ModelArgs defaults, README model zoo)
      full[variant] = split_counts(m)
      with open(os.path.join(args.keys_dir, "llamagen_%s_keys.json" % variant), "w") as f:
        json.dump(key_list(m.state_dict()), f, indent=0)
      del m
    with open(os.path.join(args.out, "llamagen_full_param_counts.json"), "w") as f:
      json.dump(full, f, indent=1)
    print(json.dumps(full, indent=1))


if __name__ == "__main__":
  main()
