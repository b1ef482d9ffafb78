"""Encoding a folder of JPEGs to token files: the whole command against the bare jitted encode.

Writes JPEG photos (random crops of the bundled sample photos, 500x375 as in
ImageNet) into a temporary folder, builds a random-weight tokenizer of a preset,
then times ``tokenize.encode_to_files`` over the folder (decoding, resizing,
encoding and writing the shards) and the same tokenizer's jitted encode on the
same number of batches already on the device. The ratio says how much of the
device's rate the command keeps; the host's share is decoding and resizing,
which grain's threads overlap with the device's work.

Run:
  python bench/encode.py [--config=configs/tiny.py] [--num_images=512] [--batch_size=64]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import jax
import numpy as np
from flax import nnx
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

from common import describe_machine  # noqa: E402

from vqtok import data, models, sharding, tokenize  # noqa: E402


def write_jpegs(folder: str, n: int, seed: int = 0) -> None:
  rng = np.random.default_rng(seed)
  photo_dir = data.sources.sample_photo_dir()
  photos = [data.decode_image(os.path.join(photo_dir, name)) for name in data.sources.SAMPLE_PHOTOS]
  for i in range(n):
    photo = photos[i % len(photos)]
    img = Image.fromarray(photo).resize((640, 480))
    x, y = rng.integers(0, 140), rng.integers(0, 105)
    img.crop((x, y, x + 500, y + 375)).save(os.path.join(folder, f"img_{i:05d}.JPEG"), quality=90)


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--config", default=os.path.join(ROOT, "configs/tiny.py"), help="a preset file[:variant]")
  p.add_argument("--num_images", type=int, default=512)
  p.add_argument("--batch_size", type=int, default=64)
  a = p.parse_args()
  print(describe_machine())
  path, _, arg = a.config.partition(":")
  spec = importlib.util.spec_from_file_location("preset", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  tokenizer = models.build_tokenizer(config, rngs=nnx.Rngs(0))
  with tempfile.TemporaryDirectory() as tmp:
    folder, out = os.path.join(tmp, "images"), os.path.join(tmp, "tokens")
    os.makedirs(folder)
    write_jpegs(folder, a.num_images)
    config.data.update(source="folder", path=folder, eval_split="")
    # Once to compile (a throw-away directory), then timed.
    tokenize.encode_to_files(config, tokenizer, 0, out + "_warm", batch_size=a.batch_size, progress=False)
    t = time.perf_counter()
    summary = tokenize.encode_to_files(config, tokenizer, 0, out, batch_size=a.batch_size, progress=False)
    command = summary["encoded"] / (time.perf_counter() - t)

  mesh = sharding.make_mesh((-1, 1), devices=jax.local_devices())
  encode = tokenize._jit_tokenizer(tokenizer, "encode", mesh)
  s = int(config.image_size)
  x = jax.device_put(np.zeros((a.batch_size, s, s, 3), np.float32), sharding.batch_sharding(mesh))
  jax.block_until_ready(encode(x))
  steps = -(-a.num_images // a.batch_size)
  t = time.perf_counter()
  for _ in range(steps):
    out_ids = encode(x)
  jax.block_until_ready(out_ids)
  bare = steps * a.batch_size / (time.perf_counter() - t)
  name = os.path.basename(a.config)
  print("| config | image size | batch | images | command (img/s) | bare encode (img/s) | command / bare |")
  print("|---|---|---|---|---|---|---|")
  print(f"| {name} | {s} | {a.batch_size} | {a.num_images} | {command:,.0f} | {bare:,.0f} | {command / bare:.2f} |")


if __name__ == "__main__":
  main()
