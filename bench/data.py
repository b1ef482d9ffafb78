"""Throughput of the vqtok.data training pipeline (images per second).

Writes ~200 JPEG images of 512x512 made from the bundled sample photos into a
temporary folder, and the same images into a TFDS array_record dataset, then
times ``make_dataset(split="train")`` at 256 px (random-resized crop + flip,
float32 output) with 0 (threads in the main process), 1, 2 and 4 worker
processes. Prints the machine and a Markdown table.

Run:
  python bench/data.py [--num_images 200] [--batches 20] [--batch_size 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import common  # bench/common.py (the script's own folder is on sys.path)
import numpy as np
from PIL import Image

from vqtok import data
from vqtok.config import default_config


def make_images(n: int, size: int = 512, seed: int = 0) -> list[np.ndarray]:
  """n random 512x512 crops (random scale, flip) of the sample photos."""
  rng = np.random.default_rng(seed)
  photo_dir = data.sources.sample_photo_dir()
  photos = [data.decode_image(os.path.join(photo_dir, name)) for name in data.sources.SAMPLE_PHOTOS]
  out = []
  for i in range(n):
    img = photos[i % len(photos)]
    crop = data.random_resized_crop(img, size, rng, scale=(0.3, 1.0))
    out.append(crop)
  return out


def write_folder(images: list[np.ndarray], root: str) -> None:
  for i, img in enumerate(images):
    sub = os.path.join(root, f"{i % 10:02d}")
    os.makedirs(sub, exist_ok=True)
    Image.fromarray(img).save(os.path.join(sub, f"{i:05d}.jpg"), quality=90)


def write_tfds(images: list[np.ndarray], data_dir: str) -> str:
  """Prepares a TFDS array_record dataset holding ``images`` as JPEG."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  class VqtokBenchImages(tfds.core.GeneratorBasedBuilder):
    """Benchmark images (JPEG-encoded)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {"image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")}
        ),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i, img in enumerate(images):
        yield i, {"image": img}

  tfds.builder("vqtok_bench_images", data_dir=data_dir, file_format="array_record").download_and_prepare()
  return "vqtok_bench_images"


def time_pipeline(config, batch_size: int, batches: int) -> float:
  """Steady-state images per second over ``batches`` batches."""
  it = data.make_dataset(config, split="train", batch_size=batch_size, process_index=0, process_count=1)
  # Drain more batches than the prefetch buffers hold (4 in the main process;
  # about 6 per worker), so the timed ones are produced while we wait.
  warmup = 6 * max(1, config.data.num_workers) + 2
  try:
    for _ in range(warmup):
      next(it)
    t = time.perf_counter()
    for _ in range(batches):
      b = next(it)
      assert b["image"].shape == (batch_size, config.image_size, config.image_size, 3)
    return batches * batch_size / (time.perf_counter() - t)
  finally:
    it.close()


def machine() -> str:
  import grain  # noqa: PLC0415

  return f"{common.describe_machine()}, grain {getattr(grain, '__version__', '?')}, Pillow {Image.__version__}"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--num_images", type=int, default=200)
  p.add_argument("--batches", type=int, default=20)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--image_size", type=int, default=256)
  p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
  args = p.parse_args()
  print(f"machine: {machine()}")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    images = make_images(args.num_images)
    folder = os.path.join(tmp, "folder")
    write_folder(images, folder)
    name = write_tfds(images, os.path.join(tmp, "tfds"))
    print(f"wrote {len(images)} 512px JPEGs (folder and TFDS) in {time.perf_counter() - t:.1f} s")
    for source in ("folder", "tfds"):
      for workers in args.workers:
        c = default_config()
        c.image_size = args.image_size
        c.data.source = source
        c.data.path = folder if source == "folder" else os.path.join(tmp, "tfds")
        c.data.name = name
        c.data.num_workers = workers
        ips = time_pipeline(c, args.batch_size, args.batches)
        rows.append((source, workers, ips))
        print(f"  {source:6s} workers={workers}: {ips:7.1f} images/s", flush=True)
  print()
  print(f"| source | workers | images/s ({args.image_size}px, batch {args.batch_size}) |")
  print("|---|---|---|")
  for source, workers, ips in rows:
    label = "0 (threads)" if workers == 0 else str(workers)
    print(f"| {source} | {label} | {ips:.1f} |")


if __name__ == "__main__":
  main()
