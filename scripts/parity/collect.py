"""Copies the reference generators' outputs into tests/goldens/, keeping only what the tests read.

  python scripts/parity/collect.py --llamagen OUT/llamagen --taming OUT/taming \
      --maskgit OUT/maskgit_fixture --keys OUT

OUT is where gen_llamagen.py, gen_taming.py and gen_maskgit.py wrote (see
scripts/parity/README.md). Runs with NumPy alone.
"""

import argparse
import json
import os
import shutil

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEST = os.path.join(ROOT, "tests", "goldens")

TORCH_KEYS = ("names", "images_uint8", "x", "h_prequant", "indices", "decoded", "near_tie")
MASKGIT_KEYS = ("image_names", "images", "latents", "ids", "decoded", "near_tie")


def _npz(src: str, dst: str, keys: tuple[str, ...], suffixes: tuple[str, ...] = ("",)) -> None:
  with np.load(src) as g:
    arrays = {k + s: g[k + s] for k in keys for s in suffixes if k + s in g}
  np.savez_compressed(dst, **arrays)


def _keys(src: str, dst: str) -> None:
  """Full-size published names and shapes (the generators' dumps), as {name: shape}."""
  with open(src) as f:
    data = json.load(f)
  if isinstance(data, list):
    table = {d["key"]: d["shape"] for d in data}
  else:  # maskgit: {"params": {path: shape}, "param_counts": ...}
    table = {"params": data["params"], "param_counts": data["param_counts"]}
  with open(dst, "w") as f:
    json.dump(table, f, indent=0, sort_keys=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--llamagen", required=True)
  p.add_argument("--taming", required=True)
  p.add_argument("--maskgit", required=True)
  p.add_argument("--keys", required=True, help="folder with the *_keys.json full-size dumps")
  a = p.parse_args()
  for family in ("llamagen", "taming", "maskgit"):
    os.makedirs(os.path.join(DEST, family), exist_ok=True)
  shutil.copy(os.path.join(a.llamagen, "llamagen_vq_reduced.pt"), os.path.join(DEST, "llamagen", "reduced.pt"))
  _npz(
    os.path.join(a.llamagen, "llamagen_golden.npz"),
    os.path.join(DEST, "llamagen", "golden.npz"),
    TORCH_KEYS,
    ("", "_nonsquare"),
  )
  shutil.copy(os.path.join(a.taming, "taming_vqgan_reduced.ckpt"), os.path.join(DEST, "taming", "reduced.ckpt"))
  _npz(
    os.path.join(a.taming, "taming_golden.npz"),
    os.path.join(DEST, "taming", "golden.npz"),
    TORCH_KEYS,
    ("", "_nonsquare"),
  )
  shutil.copy(
    os.path.join(a.maskgit, "tokenizer_reduced_checkpoint"), os.path.join(DEST, "maskgit", "reduced_checkpoint")
  )
  _npz(os.path.join(a.maskgit, "golden.npz"), os.path.join(DEST, "maskgit", "golden.npz"), MASKGIT_KEYS)
  for name, family in (
    ("llamagen_vq16", "llamagen"),
    ("llamagen_vq8", "llamagen"),
    ("taming_f16-1024", "taming"),
    ("taming_f16-16384", "taming"),
    ("maskgit", "maskgit"),
  ):
    _keys(os.path.join(a.keys, f"{name}_keys.json"), os.path.join(DEST, family, f"{name}_keys.json"))


if __name__ == "__main__":
  main()
