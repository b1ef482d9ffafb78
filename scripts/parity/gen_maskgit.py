"""Generate a reduced MaskGIT-VQGAN parity fixture with the reference code.

Usage:
  /tmp/maskgitenv/bin/python /tmp/parity/gen_maskgit.py <maskgit_checkout> [out_dir]

<maskgit_checkout> is a checkout of github.com/google-research/maskgit (the
directory containing the `maskgit/` package).  All model code is imported from
that checkout; nothing is re-implemented here.

Writes into out_dir (default /tmp/parity/maskgit_fixture):
  tokenizer_reduced_checkpoint   msgpack bytes, flax.serialization.to_bytes of
                                 {"params": ...}, readable by
                                 maskgit.utils.restore_from_path
  reduced_config.json            the vqvae sub-config used
  reduced_tree.json              flattened "a/b/c": shape of the checkpoint
  images/*.png                   the 3 source photos (scikit-image data)
  golden.npz                     see GOLDEN_DOC below
and /tmp/parity/maskgit_keys.json (full-size 256px tree + param counts).
"""

import io
import json
import math
import os
import sys

import numpy as np

CKPT_ROOT = os.path.abspath(sys.argv[1])
OUT = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "/tmp/parity/maskgit_fixture"
KEYS_JSON = "/tmp/parity/maskgit_keys.json"
sys.path.insert(0, CKPT_ROOT)

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import traverse_util  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from maskgit import utils as mg_utils  # noqa: E402  (needs tensorflow, matplotlib, requests)
from maskgit.configs import maskgit_class_cond_config  # noqa: E402
from maskgit.configs import vqgan_config  # noqa: E402
from maskgit.libml import losses  # noqa: E402
from maskgit.nets import vqgan_tokenizer  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")  # CPU is fp32 anyway

SEED = 1234
IMAGE_SIZE = 64  # reduced model's "config.image_size"; the reference resizes to this
REDUCED = dict(
  filters=32,  # GroupNorm has 32 groups (flax default), so channels must be k*32
  num_res_blocks=1,
  channel_multipliers=[1, 2, 1],  # 32 -> 64 -> 32: channel change up AND down
  embedding_dim=16,
  codebook_size=128,
  # unchanged from the published vqgan_config:
  conv_downsample=False,
  activation_fn="swish",
  norm_type="GN",
  quantizer="vq",
)

GOLDEN_DOC = {
  "image_names": "source photo names (skimage.data.<name>)",
  "images": "model input, NHWC float32 in [0,1]: PNG -> maskgit.utils.read_image_from_url(height=W=image_size): PIL RGB, BICUBIC resize (no crop), /255",
  "latents": "encoder output (pre-quantization), NHWC float32",
  "ids": "token ids (int32) from VQVAE.encode_to_indices, shape N,h,w",
  "quantized": "quantizer output codes (one_hot(ids) @ codebook), NHWC float32",
  "decoded": "VQVAE.decode_from_indices(ids), NHWC float32, NOT clipped",
  "decoded_from_quantized": "VQVAE.decode(quantized), must equal decoded",
  "dist_best / dist_second": "float64 exact ||z - e||^2 of best and second-best code",
  "ref_dist_best_second": "float32 distances as the reference computes them (a2 - 2ab + b2), best/second",
  "rel_gap": "(d2 - d1) / (||z||^2 + ||e_best||^2), float64 exact distances",
  "near_tie": "rel_gap < 1e-5 (bool, N,h,w)",
  "odd_*": "EXTRA, not reference preprocessing-size: chelsea resized (via read_image_from_url) to 50x70, exercising TF-style SAME avg-pool with odd sizes (pad bottom/right, pad excluded from mean). odd_images/odd_latents/odd_ids/odd_decoded (decoded is 52x72 after 2 upsamplings of 13x18)",
}


def make_config(overrides):
  cf = maskgit_class_cond_config.get_config()  # what inference.py uses for the tokenizer
  cf.image_size = IMAGE_SIZE
  for k, v in overrides.items():
    cf.vqvae[k] = v
  return cf


def _full_pass(module, image):
  # VQVAE.__call__ is broken upstream (it feeds the (quantized, dict) tuple to
  # the decoder), so init through encode + decode, which touches every param.
  quantized, _ = module.encode({"image": image})
  return module.decode(quantized)


def tree_shapes(tree):
  flat = traverse_util.flatten_dict(tree, sep="/")
  return {k: list(np.shape(v)) for k, v in sorted(flat.items())}


def count(tree):
  return int(sum(math.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(tree)))


def load_via_reference(path, h, w):
  """Run maskgit.utils.read_image_from_url on a local file (requests.get stubbed)."""

  class _Resp:
    def __init__(self, content):
      self.content = content

    def raise_for_status(self):
      pass

  orig = mg_utils.requests.get
  with open(path, "rb") as f:
    content = f.read()
  mg_utils.requests.get = lambda url, *a, **k: _Resp(content)
  try:
    return mg_utils.read_image_from_url("file://" + path, height=h, width=w)
  finally:
    mg_utils.requests.get = orig


def randomize(params, key):
  """Replace every leaf with seeded random values (non-default norm params)."""
  flat = traverse_util.flatten_dict(params)
  out = {}
  for i, (path, v) in enumerate(sorted(flat.items())):
    k = jax.random.fold_in(key, i)
    name = path[-1]
    if name == "kernel":
      fan_in = math.prod(v.shape[:-1])
      out[path] = jax.random.normal(k, v.shape, jnp.float32) / math.sqrt(fan_in)
    elif name == "scale":
      out[path] = jax.random.uniform(k, v.shape, jnp.float32, 0.5, 1.5)
    elif name == "bias":
      out[path] = 0.2 * jax.random.normal(k, v.shape, jnp.float32)
    else:  # codebook: placeholder, replaced data-dependently below
      out[path] = v
  return traverse_util.unflatten_dict(out)


def main():
  os.makedirs(os.path.join(OUT, "images"), exist_ok=True)

  # ---------------- full-size published config: tree + counts -------------
  full_cf = make_config({})
  full_cf.image_size = 256
  full_model = vqgan_tokenizer.VQVAE(config=full_cf, train=False, dtype=jnp.float32)
  full_vars = jax.eval_shape(
    lambda: full_model.init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 3)), method=_full_pass)
  )
  full_counts = {k: count(v) for k, v in full_vars["params"].items()}
  full_counts["total"] = sum(full_counts.values())
  with open(KEYS_JSON, "w") as f:
    json.dump(
      {
        "source": "google-research/maskgit maskgit/nets/vqgan_tokenizer.py with maskgit_class_cond_config (vqgan_config.vqvae), image_size 256",
        "collections": sorted(full_vars.keys()),
        "param_counts": full_counts,
        "vqvae_config": full_cf.vqvae.to_dict(),
        "params": tree_shapes(full_vars["params"]),
      },
      f,
      indent=1,
    )
  print("full-size 256px tokenizer params:", full_counts)

  # ---------------- reduced model -----------------------------------------
  cf = make_config(REDUCED)
  model = vqgan_tokenizer.VQVAE(config=cf, train=False, dtype=jnp.float32)
  key = jax.random.PRNGKey(SEED)
  variables = model.init(key, jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)), method=_full_pass)
  assert set(variables.keys()) == {"params"}, variables.keys()
  params = randomize(flax.core.unfreeze(variables["params"]), jax.random.fold_in(key, 1))

  # ---------------- images -------------------------------------------------
  names = ["astronaut", "coffee", "chelsea"]
  paths = []
  for n in names:
    p = os.path.join(OUT, "images", f"{n}.png")
    Image.fromarray(getattr(skdata, n)()).save(p)
    paths.append(p)
  images = np.stack([load_via_reference(p, IMAGE_SIZE, IMAGE_SIZE) for p in paths]).astype(np.float32)

  # Data-dependent (but seeded) codebook so the ids are diverse: draw codes from
  # a normal matched to the per-dim stats of the encoder latents.
  lat0 = model.apply({"params": params}, images, method=lambda m, x: m.encoder(x))
  lat0 = np.asarray(lat0).reshape(-1, cf.vqvae.embedding_dim)
  mu, sd = lat0.mean(0), lat0.std(0)
  cb = mu + sd * np.asarray(
    jax.random.normal(jax.random.fold_in(key, 2), (cf.vqvae.codebook_size, cf.vqvae.embedding_dim))
  )
  params["quantizer"]["codebook"] = jnp.asarray(cb, jnp.float32)
  variables = {"params": params}

  # ---------------- save in the published format ----------------------------
  ckpt_path = os.path.join(OUT, "tokenizer_reduced_checkpoint")
  np_vars = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), variables)
  with open(ckpt_path, "wb") as f:
    f.write(flax.serialization.to_bytes(np_vars))
  size = os.path.getsize(ckpt_path)
  print("checkpoint bytes:", size)
  assert size <= 1_500_000, size

  # restore with the reference's own function and use ONLY that from now on
  restored = mg_utils.restore_from_path(ckpt_path)
  assert type(restored) is dict and list(restored.keys()) == ["params"], type(restored)
  rflat = traverse_util.flatten_dict(restored)
  for k, v in traverse_util.flatten_dict(np_vars).items():
    assert rflat[k].dtype == np.float32 and np.array_equal(rflat[k], v), k
  variables = restored

  with open(os.path.join(OUT, "reduced_config.json"), "w") as f:
    json.dump({"image_size": IMAGE_SIZE, "seed": SEED, "vqvae": cf.vqvae.to_dict()}, f, indent=1)
  red_counts = {k: count(v) for k, v in variables["params"].items()}
  red_counts["total"] = sum(red_counts.values())
  with open(os.path.join(OUT, "reduced_tree.json"), "w") as f:
    json.dump(
      {"top_level": list(variables.keys()), "param_counts": red_counts, "params": tree_shapes(variables["params"])},
      f,
      indent=1,
    )

  # ---------------- goldens (through the reference methods) -------------------
  def run(imgs):
    lat = model.apply(variables, imgs, method=lambda m, x: m.encoder(x))
    quantized, rd = model.apply(variables, {"image": imgs}, method=model.encode)
    ids = model.apply(variables, {"image": imgs}, method=model.encode_to_indices)
    dec = model.apply(variables, ids, method=model.decode_from_indices, mutable=False)
    dec_q = model.apply(variables, quantized, method=model.decode)
    np.testing.assert_array_equal(np.asarray(rd["encoding_indices"]), np.asarray(ids))
    np.testing.assert_array_equal(np.asarray(rd["raw"]), np.asarray(lat))
    return (
      np.asarray(lat, np.float32),
      np.asarray(ids, np.int32),
      np.asarray(quantized, np.float32),
      np.asarray(dec, np.float32),
      np.asarray(dec_q, np.float32),
    )

  lat, ids, quantized, dec, dec_q = run(images)
  np.testing.assert_allclose(dec, dec_q, rtol=0, atol=1e-6)
  codebook = np.asarray(variables["params"]["quantizer"]["codebook"], np.float32)
  np.testing.assert_array_equal(quantized, codebook[ids])

  # distances: exact float64, and the reference's float32 formula
  z = lat.reshape(-1, lat.shape[-1]).astype(np.float64)
  e = codebook.astype(np.float64)
  d = ((z[:, None, :] - e[None]) ** 2).sum(-1)
  order = np.argsort(d, axis=1, kind="stable")
  d1 = np.take_along_axis(d, order[:, :1], 1)[:, 0]
  d2 = np.take_along_axis(d, order[:, 1:2], 1)[:, 0]
  rel_gap = (d2 - d1) / ((z**2).sum(1) + (e[order[:, 0]] ** 2).sum(1))
  dref = np.asarray(
    losses.squared_euclidean_distance(jnp.asarray(lat.reshape(-1, lat.shape[-1])), jnp.asarray(codebook))
  )
  dref_sorted = np.sort(dref, axis=1)[:, :2]
  exact_agree = float((order[:, 0] == ids.reshape(-1)).mean())
  shp = ids.shape
  near_tie = (rel_gap < 1e-5).reshape(shp)

  # extra odd-size case
  odd_img = load_via_reference(paths[2], 50, 70)[None].astype(np.float32)
  o_lat, o_ids, o_q, o_dec, _ = run(odd_img)

  np.savez_compressed(
    os.path.join(OUT, "golden.npz"),
    image_names=np.array(names),
    images=images,
    latents=lat,
    ids=ids,
    quantized=quantized,
    decoded=dec,
    decoded_from_quantized=dec_q,
    dist_best=d1.reshape(shp),
    dist_second=d2.reshape(shp),
    ref_dist_best_second=dref_sorted.reshape(shp + (2,)).astype(np.float32),
    rel_gap=rel_gap.reshape(shp),
    near_tie=near_tie,
    odd_images=odd_img,
    odd_latents=o_lat,
    odd_ids=o_ids,
    odd_quantized=o_q,
    odd_decoded=o_dec,
    doc=np.array(json.dumps(GOLDEN_DOC)),
  )

  summary = {
    "checkpoint_bytes": size,
    "reduced_param_counts": red_counts,
    "images": images.shape,
    "latents": lat.shape,
    "ids": ids.shape,
    "decoded": dec.shape,
    "unique_ids": int(len(np.unique(ids))),
    "near_ties": int(near_tie.sum()),
    "min_rel_gap": float(rel_gap.min()),
    "argmin_exact_vs_reference_agree": exact_agree,
    "latent_range": [float(lat.min()), float(lat.max())],
    "decoded_range": [float(dec.min()), float(dec.max())],
    "odd": {"images": odd_img.shape, "latents": o_lat.shape, "decoded": o_dec.shape},
    "versions": {"jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__},
  }
  with open(os.path.join(OUT, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1, default=list)
  print(json.dumps(summary, indent=1, default=list))


if __name__ == "__main__":
  main()
