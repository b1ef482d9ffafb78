#!/usr/bin/env python
"""Generate a reduced-width taming-transformers VQGAN checkpoint (Lightning-like .ckpt) + golden outputs.

Usage: /tmp/torchenv/bin/python gen_taming.py /path/to/taming-transformers-checkout [--out DIR] [options]

taming/models/vqgan.py imports pytorch_lightning (line 3) and main.py (line 5), so VQModel itself is not
imported. Its parts are built from the reference modules exactly as VQModel.__init__ does
(vqgan.py:28-34) and composed as VQModel.encode/decode do (vqgan.py:55-64). Decoding from ids follows
Net2NetTransformer.decode_to_img (cond_transformer.py:185-191), because VQModel.decode_code
(vqgan.py:66-69) calls quantize.embed_code, which VectorQuantizer2 does not define.
Preprocessing is the reference's ImagePaths.preprocess_image (taming/data/base.py:45-52).
"""

import argparse
import json
import os
import sys
import types
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("ref", help="taming-transformers checkout root")
  p.add_argument("--out", default="/tmp/parity/out/taming")
  p.add_argument("--keys-dir", default="/tmp/parity")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--ch", type=int, default=32)
  p.add_argument("--ch-mult", default="2,1")
  p.add_argument("--num-res-blocks", type=int, default=1)
  p.add_argument("--z-channels", type=int, default=48)
  p.add_argument("--n-embed", type=int, default=256)
  p.add_argument("--embed-dim", type=int, default=16)
  p.add_argument("--resolution", type=int, default=32)
  p.add_argument("--attn-resolutions", default="16")
  p.add_argument("--skip-full", action="store_true")
  return p.parse_args()


args = parse()
REF = os.path.abspath(args.ref)
sys.path.insert(0, REF)
from taming.modules.diffusionmodules.model import Encoder, Decoder  # noqa: E402
from taming.modules.vqvae.quantize import VectorQuantizer2 as VectorQuantizer  # noqa: E402 (vqgan.py:8)
from taming.modules.discriminator.model import NLayerDiscriminator  # noqa: E402
from taming.data.base import ImagePaths  # noqa: E402

torch.set_grad_enabled(False)
os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
CH_MULT = [int(c) for c in args.ch_mult.split(",")]
ATTN_RES = [int(c) for c in args.attn_resolutions.split(",") if c]


# ----------------------------------------------------------------------------- Lightning stubs
def install_lightning_stubs():
  """Fake `pytorch_lightning` modules so that torch.save pickles references to them by module path."""

  def mod(name):
    m = types.ModuleType(name)
    sys.modules[name] = m
    return m

  pl = mod("pytorch_lightning")
  pl.__version__ = "1.0.8"
  cb = mod("pytorch_lightning.callbacks")
  pl.callbacks = cb
  mc = mod("pytorch_lightning.callbacks.model_checkpoint")
  cb.model_checkpoint = mc
  ut = mod("pytorch_lightning.utilities")
  pl.utilities = ut
  pa = mod("pytorch_lightning.utilities.parsing")
  ut.parsing = pa

  class ModelCheckpoint(object):  # PL 1.0.x stores callback states keyed by the callback *class*
    pass

  ModelCheckpoint.__module__ = mc.__name__
  ModelCheckpoint.__qualname__ = "ModelCheckpoint"
  mc.ModelCheckpoint = ModelCheckpoint
  cb.ModelCheckpoint = ModelCheckpoint

  class AttributeDict(dict):  # type of LightningModule.hparams
    def __getattr__(self, k):
      try:
        return self[k]
      except KeyError:
        raise AttributeError(k)

  AttributeDict.__module__ = pa.__name__
  AttributeDict.__qualname__ = "AttributeDict"
  pa.AttributeDict = AttributeDict
  return ModelCheckpoint, AttributeDict


# ----------------------------------------------------------------------------- model
class TamingVQ(torch.nn.Module):
  """Container with the same child names/order as taming.models.vqgan.VQModel (vqgan.py:28-34),
  minus `loss` (inserted into the saved state_dict at the same position)."""

  def __init__(self, ddconfig, n_embed, embed_dim):
    super().__init__()
    self.encoder = Encoder(**ddconfig)
    self.decoder = Decoder(**ddconfig)
    self.quantize = VectorQuantizer(n_embed, embed_dim, beta=0.25, remap=None, sane_index_shape=False)
    self.quant_conv = torch.nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
    self.post_quant_conv = torch.nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

  def encode(self, x):  # vqgan.py:55-59
    h = self.encoder(x)
    h = self.quant_conv(h)
    quant, emb_loss, info = self.quantize(h)
    return quant, emb_loss, info

  def decode(self, quant):  # vqgan.py:61-64
    quant = self.post_quant_conv(quant)
    return self.decoder(quant)

  def decode_ids(self, index, zshape):  # cond_transformer.py:185-191 (minus the identity permuter)
    bhwc = (zshape[0], zshape[2], zshape[3], zshape[1])
    quant_z = self.quantize.get_codebook_entry(index.reshape(-1), shape=bhwc)
    return self.decode(quant_z)


def ddconfig_reduced():
  return dict(
    double_z=False,
    z_channels=args.z_channels,
    resolution=args.resolution,
    in_channels=3,
    out_ch=3,
    ch=args.ch,
    ch_mult=CH_MULT,
    num_res_blocks=args.num_res_blocks,
    attn_resolutions=ATTN_RES,
    dropout=0.0,
  )


def ddconfig_full():  # configs/imagenet_vqgan.yaml; LlamaGen tokenizer/vqgan/configs/vqgan_imagenet_f16_{1024,16384}.yaml
  return dict(
    double_z=False,
    z_channels=256,
    resolution=256,
    in_channels=3,
    out_ch=3,
    ch=128,
    ch_mult=[1, 1, 2, 2, 4],
    num_res_blocks=2,
    attn_resolutions=[16],
    dropout=0.0,
  )


def randomise(model, h_std=None):
  g = torch.Generator().manual_seed(args.seed + 1)
  for m in model.modules():
    if isinstance(m, torch.nn.GroupNorm):
      m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
      m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    elif isinstance(m, torch.nn.Conv2d):
      fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
      m.weight.copy_(torch.randn(m.weight.shape, generator=g) / np.sqrt(fan_in))
      m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
  w = model.quantize.embedding.weight
  w.copy_(torch.randn(w.shape, generator=g) * (1.0 if h_std is None else h_std))


def build_reduced():
  torch.manual_seed(args.seed)
  m = TamingVQ(ddconfig_reduced(), args.n_embed, args.embed_dim)
  m.eval()
  randomise(m)
  return m


def fake_loss_state_dict(disc_num_layers=2, ndf=8, full=False):
  """loss.* keys with the real names. Discriminator: the reference NLayerDiscriminator
  (vqperceptual.py:46; BatchNorm -> running stats + int64 num_batches_tracked). LPIPS: names of
  taming/modules/losses/lpips.py (ScalingLayer buffers, vgg16 slices, lin0..4), small shapes unless full."""
  sd = OrderedDict()
  g = torch.Generator().manual_seed(7)
  div = 1 if full else 64  # small shapes for the reduced fixture
  chns = [c // div for c in (64, 128, 256, 512, 512)]
  sd["loss.perceptual_loss.scaling_layer.shift"] = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
  sd["loss.perceptual_loss.scaling_layer.scale"] = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
  # torchvision vgg16.features conv layers (index, cin, cout), sliced as lpips.py vgg16: [0,4) [4,9) [9,16) [16,23) [23,30)
  vgg = [
    (0, 3, 64),
    (2, 64, 64),
    (5, 64, 128),
    (7, 128, 128),
    (10, 128, 256),
    (12, 256, 256),
    (14, 256, 256),
    (17, 256, 512),
    (19, 512, 512),
    (21, 512, 512),
    (24, 512, 512),
    (26, 512, 512),
    (28, 512, 512),
  ]
  for idx, cin, cout in vgg:
    sl = 1 + sum(idx >= b for b in (4, 9, 16, 23))
    cin_ = 3 if idx == 0 else cin // div
    sd["loss.perceptual_loss.net.slice%d.%d.weight" % (sl, idx)] = torch.randn(cout // div, cin_, 3, 3, generator=g)
    sd["loss.perceptual_loss.net.slice%d.%d.bias" % (sl, idx)] = torch.randn(cout // div, generator=g)
  for i, c in enumerate(chns):
    sd["loss.perceptual_loss.lin%d.model.1.weight" % i] = torch.randn(1, c, 1, 1, generator=g)
  disc = NLayerDiscriminator(input_nc=3, ndf=64 if full else ndf, n_layers=disc_num_layers, use_actnorm=False)
  for k, v in disc.state_dict().items():
    sd["loss.discriminator." + k] = v
  return sd


def published_state_dict(model, loss_sd):
  """Same key order as VQModel.state_dict(): encoder, decoder, loss, quantize, quant_conv, post_quant_conv."""
  sd = OrderedDict()
  msd = model.state_dict()
  for k, v in msd.items():
    if k.startswith("encoder.") or k.startswith("decoder."):
      sd[k] = v
  sd.update(loss_sd)
  for k, v in msd.items():
    if not (k.startswith("encoder.") or k.startswith("decoder.")):
      sd[k] = v
  return sd


def count(mod):
  return sum(p.numel() for p in mod.parameters())


def split_counts(model):
  return OrderedDict(
    encoder=count(model.encoder),
    decoder=count(model.decoder),
    quantizer=count(model.quantize),
    quant_conv_and_post_quant_conv=count(model.quant_conv) + count(model.post_quant_conv),
    total_params_excluding_loss=count(model),
  )


def key_list(sd):
  return [{"key": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in sd.items()]


# ----------------------------------------------------------------------------- images
def source_images():
  out = []
  try:
    import skimage.data as d

    photos = [("astronaut", d.astronaut()), ("coffee", d.coffee()), ("chelsea", d.chelsea())]
  except Exception as e:
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


def run(model, x):
  enc = model.encoder(x)
  h = model.quant_conv(enc)
  quant, _, (_, _, indices) = model.encode(x)
  B, C, H, W = h.shape
  dec = model.decode_ids(indices, quant.shape)
  quant_ids = model.quantize.get_codebook_entry(indices.reshape(-1), shape=(B, H, W, C))
  dec_from_quant = model.decode(quant)
  z = h.permute(0, 2, 3, 1).reshape(-1, C).double()
  e = model.quantize.embedding.weight.double()
  d = (z**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * z @ e.t()  # quantize.py:68-70 in float64
  top2 = torch.topk(d, 2, dim=1, largest=False)
  gap = top2.values[:, 1] - top2.values[:, 0]
  scale = (z**2).sum(1) + (e[top2.indices[:, 0]] ** 2).sum(1)
  rel_gap = gap / scale
  return OrderedDict(
    enc_out=enc.numpy(),
    h_prequant=h.numpy(),
    indices=indices.reshape(B, H, W).numpy().astype(np.int64),
    indices_fp64_argmin=top2.indices[:, 0].reshape(B, H, W).numpy().astype(np.int64),
    quant=quant.numpy(),
    quant_from_ids=quant_ids.numpy(),
    decoded=dec.numpy(),
    decoded_from_quant=dec_from_quant.numpy(),
    # main.py:291-292 clamp to [-1,1]; main.py:259-262 (x+1)/2*255 -> uint8 (truncation)
    decoded_uint8=((torch.clamp(dec, -1.0, 1.0) + 1.0) / 2.0 * 255).permute(0, 2, 3, 1).numpy().astype(np.uint8),
    dist_top2=top2.values.reshape(B, H, W, 2).numpy(),
    dist_rel_gap=rel_gap.reshape(B, H, W).numpy(),
    near_tie=(rel_gap < 1e-5).reshape(B, H, W).numpy(),
  )


def main():
  ModelCheckpoint, AttributeDict = install_lightning_stubs()
  model = build_reduced()

  names, paths = zip(*source_images())
  ds = ImagePaths(list(paths), size=args.resolution, random_crop=False)  # as ImageNetValidation (imagenet.py:117-120)
  hwc = np.stack([ds.preprocess_image(p) for p in paths])  # float32 HWC in [-1, 1] (base.py:45-52)
  x = torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous().float()  # VQModel.get_input (vqgan.py:76-81)
  # uint8 image after SmallestMaxSize + CenterCrop, for reference
  u8 = np.stack(
    [ds.preprocessor(image=np.array(Image.open(p).convert("RGB")).astype(np.uint8))["image"] for p in paths]
  )
  assert np.array_equal((u8 / 127.5 - 1.0).astype(np.float32), hwc)

  # codebook scale comparable to the latents so many codes are used (data-dependent but deterministic)
  h_std = float(model.quant_conv(model.encoder(x)).std())
  randomise(model, h_std=h_std)

  cfg = OrderedDict(
    family="taming",
    ddconfig=ddconfig_reduced(),
    n_embed=args.n_embed,
    embed_dim=args.embed_dim,
    beta=0.25,
    legacy=True,
    remap=None,
    sane_index_shape=False,
    seed=args.seed,
    image_size=args.resolution,
    downsample=2 ** (len(CH_MULT) - 1),
  )

  # ---- Lightning-like checkpoint
  loss_sd = fake_loss_state_dict(disc_num_layers=2, ndf=8)
  sd = published_state_dict(model, loss_sd)
  g = torch.Generator().manual_seed(11)
  ckpt = {
    "epoch": 7,
    "global_step": 123456,
    "pytorch-lightning_version": "1.0.8",
    "callbacks": {
      ModelCheckpoint: {
        "monitor": "val/rec_loss",
        "best_model_score": torch.tensor(0.1234),
        "best_model_path": "logs/x/checkpoints/epoch=000006.ckpt",
        "current_score": torch.tensor(0.2),
        "dirpath": "logs/x/checkpoints",
      }
    },
    "optimizer_states": [
      {
        "state": {0: {"step": 10, "exp_avg": torch.randn(4, generator=g), "exp_avg_sq": torch.rand(4, generator=g)}},
        "param_groups": [
          {"lr": 4.5e-6, "betas": (0.5, 0.9), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "params": [0]}
        ],
      },
      {
        "state": {},
        "param_groups": [
          {"lr": 4.5e-6, "betas": (0.5, 0.9), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "params": [1]}
        ],
      },
    ],
    "lr_schedulers": [],
    "state_dict": sd,
    "hparams_name": "kwargs",
    "hyper_parameters": AttributeDict(embed_dim=args.embed_dim, n_embed=args.n_embed, ddconfig=ddconfig_reduced()),
  }
  ckpt_path = os.path.join(args.out, "taming_vqgan_reduced.ckpt")
  torch.save(ckpt, ckpt_path)

  # ---- reload (needs the stubs, like real files need pytorch_lightning) the way init_from_ckpt does (vqgan.py:44-52)
  model2 = TamingVQ(ddconfig_reduced(), args.n_embed, args.embed_dim)
  loaded = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
  missing, unexpected = model2.load_state_dict(loaded, strict=False)
  assert not missing and all(k.startswith("loss.") for k in unexpected), (missing, unexpected)
  model2.eval()
  model = model2

  res = run(model, x)
  assert (res["indices"] == res["indices_fp64_argmin"]).all() or res["near_tie"].any()

  # extra: non-square model input (32 x 48) from the coffee PNG via the same cv2 resize path, not canonical
  import albumentations

  coffee = np.array(Image.open(paths[1]).convert("RGB")).astype(np.uint8)
  u8_ns = albumentations.Resize(args.resolution, args.resolution * 3 // 2)(image=coffee)["image"]
  x_ns = torch.from_numpy((u8_ns / 127.5 - 1.0).astype(np.float32))[None].permute(0, 3, 1, 2).contiguous()
  res_ns = run(model, x_ns)

  npz = OrderedDict(names=np.array(names), images_uint8=u8, x=x.numpy())
  npz.update(res)
  npz["x_nonsquare"] = x_ns.numpy()
  npz["images_uint8_nonsquare"] = u8_ns[None]
  for k, v in res_ns.items():
    npz[k + "_nonsquare"] = v
  npz["config_json"] = np.array(json.dumps(cfg))
  np.savez(os.path.join(args.out, "taming_golden.npz"), **npz)

  cfg["param_counts_reduced"] = split_counts(model)
  cfg["ckpt_bytes"] = os.path.getsize(ckpt_path)
  cfg["near_ties"] = int(res["near_tie"].sum()) + int(res_ns["near_tie"].sum())
  cfg["min_rel_gap"] = float(min(res["dist_rel_gap"].min(), res_ns["dist_rel_gap"].min()))
  cfg["unique_tokens"] = int(len(np.unique(res["indices"])))
  cfg["codebook_std"] = h_std
  cfg["attn_present"] = {
    "encoder": [len(b.attn) for b in model.encoder.down],
    "decoder": [len(b.attn) for b in model.decoder.up],
  }
  cfg["out_stats"] = {
    k: [float(np.min(v)), float(np.max(v)), float(np.std(v))] for k, v in res.items() if v.dtype == np.float32
  }
  with open(os.path.join(args.out, "taming_reduced_config.json"), "w") as f:
    json.dump(cfg, f, indent=1)
  with open(os.path.join(args.out, "taming_reduced_keys.json"), "w") as f:
    json.dump(key_list(sd), f, indent=0)
  print(
    json.dumps(
      {
        k: cfg[k]
        for k in ["param_counts_reduced", "ckpt_bytes", "near_ties", "min_rel_gap", "unique_tokens", "attn_present"]
      },
      indent=1,
    )
  )

  if not args.skip_full:
    full = OrderedDict()
    for variant, n_embed, disc_layers in [("f16-1024", 1024, 3), ("f16-16384", 16384, 2)]:
      torch.manual_seed(0)
      m = TamingVQ(ddconfig_full(), n_embed, 256)
      full[variant] = split_counts(m)
      fsd = published_state_dict(m, fake_loss_state_dict(disc_num_layers=disc_layers, full=True))
      full[variant]["loss_params_reconstructed"] = int(sum(v.numel() for k, v in fsd.items() if k.startswith("loss.")))
      with open(os.path.join(args.keys_dir, "taming_%s_keys.json" % variant), "w") as f:
        json.dump(key_list(fsd), f, indent=0)
      del m, fsd
    with open(os.path.join(args.out, "taming_full_param_counts.json"), "w") as f:
      json.dump(full, f, indent=1)
    print(json.dumps(full, indent=1))


if __name__ == "__main__":
  main()
