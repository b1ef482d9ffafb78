"""Random access to a big token directory: open it, read rows at random, and what it costs in memory.

  python bench/tokens_read.py [--rows=1281167] [--views=2] [--tokens=256] [--codebook=16384] [--dir=/tmp/bench_tokens]

Writes (once) a token directory of ImageNet-train size with random indices,
in vqtok's own format (``vqtok.tokens.write_shard``: 256 rows a shard, as
``tokenize encode`` writes them at its default batch 16 x 16 batches), then
times ``TokenSource`` opening it, reading 10,000 random rows, and the resident
memory that adds. Prints the bytes per image on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

from common import describe_machine  # noqa: E402

from vqtok import tokens  # noqa: E402


def rss_mib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def write(directory: str, rows: int, views: int, n_tokens: int, codebook: int, per_shard: int = 256) -> None:
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  side = int(round(n_tokens**0.5))
  for k, start in enumerate(range(0, rows, per_shard)):
    n = min(per_shard, rows - start)
    tokens.write_shard(
      os.path.join(directory, tokens.shard_name(k)),
      {
        "indices": [rng.integers(0, codebook, (n, views, side, side), dtype=np.int32)],
        "names": [f"n{(start + i) % 1000:08d}/img_{start + i:08d}.JPEG" for i in range(n)],
        "source_index": [np.arange(start, start + n)],
        "labels": [((np.arange(start, start + n)) % 1000).astype(np.int32)],
      },
      codebook,
    )
  meta = {"format": tokens.FORMAT, "codebook_size": codebook, "token_shape": [side, side], "num_images": rows,
          "views": ["image", "flip"][:views] if views == 2 else [f"view{i}" for i in range(views)],
          "labels": {"from": "subfolder", "classes": [f"n{i:08d}" for i in range(1000)]}}  # fmt: skip
  with open(os.path.join(directory, "metadata.json"), "w") as f:
    json.dump(meta, f)


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--rows", type=int, default=1_281_167)
  p.add_argument("--views", type=int, default=2)
  p.add_argument("--tokens", type=int, default=256)
  p.add_argument("--codebook", type=int, default=16384)
  p.add_argument("--reads", type=int, default=10_000)
  p.add_argument("--dir", default="/tmp/bench_tokens")
  a = p.parse_args()
  print(describe_machine())
  if not os.path.exists(os.path.join(a.dir, "metadata.json")):
    t = time.perf_counter()
    write(a.dir, a.rows, a.views, a.tokens, a.codebook)
    print(f"wrote {a.rows:,} rows in {time.perf_counter() - t:.1f} s")
  files = [f for f in os.listdir(a.dir) if f.endswith(".npz")]
  size = sum(os.path.getsize(os.path.join(a.dir, f)) for f in files)
  what = f"{a.views} views x {a.tokens} tokens as {tokens.index_dtype(a.codebook)}, with its name and label"
  print(f"{len(files):,} shards, {size / 2**30:.2f} GiB: {size / a.rows:.0f} bytes per image ({what})")
  rss0 = rss_mib()
  t = time.perf_counter()
  source = tokens.TokenSource(a.dir)
  opened = time.perf_counter() - t
  rng = np.random.default_rng(1)
  order = rng.integers(0, len(source), a.reads)
  t = time.perf_counter()
  total = 0
  for i in order:
    total += int(source[int(i)]["indices"][0, 0, 0])
  read = time.perf_counter() - t
  print(f"open: {opened:.2f} s for {len(source):,} rows; {a.reads:,} random rows: {read:.2f} s"
        f" ({a.reads / read:,.0f} rows/s); resident memory +{rss_mib() - rss0:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
  main()
