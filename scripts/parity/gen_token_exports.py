#!/usr/bin/env python
"""Run LlamaGen's and 1d-tokenizer's own dataset readers over vqtok's token exports; save what they return.

Two steps, in two environments:

  # 1. vqtok's venv: the small token directories of tests/test_token_exports.py and their exports
  python scripts/parity/gen_token_exports.py --write-exports /tmp/token_exports
  # 2. a torch venv: the references' readers over them -> tests/goldens/token_exports/readers.npz
  /tmp/torchenv/bin/python scripts/parity/gen_token_exports.py /tmp/llamagen /tmp/1dtok \
      --exports /tmp/token_exports --out tests/goldens/token_exports \
      --llamagen-commit ce98ec41803a74a90ce68c40ababa9eaeffeb4ec --titok-commit 942a96fbdd873780179d1b78d5462911528bf8c8

References (commits used): FoundationVision/LlamaGen ce98ec41803a74a90ce68c40ababa9eaeffeb4ec
(``dataset/imagenet.py``: ``CustomDataset``), bytedance/1d-tokenizer
942a96fbdd873780179d1b78d5462911528bf8c8 (``data/webdataset_reader.py``:
``PretoeknizedDataSetJSONL``). Environment: torch 2.14.1 (CPU), numpy 2.4,
pillow. Checkouts (only the reader packages are needed):
``mkdir -p /tmp/llamagen && git -C LlamaGen archive HEAD dataset | tar -x -C /tmp/llamagen``,
``mkdir -p /tmp/1dtok && git -C 1d-tokenizer archive HEAD data | tar -x -C /tmp/1dtok``;
pass ``--llamagen-commit`` / ``--titok-commit`` when they are not git work trees.

No reference code is copied: both classes are imported from the checkouts.
Stubbed in ``sys.modules`` (imported at module level by those files, unused
by the two readers): ``torchvision`` and ``torchvision.datasets`` (LlamaGen's
``ImageFolder``, for ``build_imagenet``), ``torchvision.transforms`` and
``webdataset`` (1d-tokenizer's webdataset pipelines and image transforms).

For each case (``views2``, ``grid``, ``flat``) the golden holds every item
the readers return, stacked, with the readers' own dtypes:

* ``<case>.llamagen.codes`` / ``.labels``: ``CustomDataset(<export>/imagenet<size>_codes,
  ..._labels)[i]`` for each exported image ``i``, from an export whose path
  has no ``flip`` (the reader returns every view: ``(1, views, tokens)``);
  ``<case>.llamagen.len``: ``len(dataset)`` (fixed at 1,281,167 by the reader).
* ``<case>.llamagen_flip.codes`` / ``.view``: the same read from an export
  whose path holds ``flip``, where the reader picks one view with
  ``torch.randint`` (seeded 0; the view it drew is recorded by wrapping
  ``torch.randint``, whose result is returned unchanged).
* ``<case>.titok.class_id`` / ``.tokens`` / ``.len``: ``PretoeknizedDataSetJSONL(<export>.jsonl)[j]``
  for every line ``j``, and its ``len``.
"""

import argparse
import os
import subprocess
import sys
import types

import numpy as np

CASES = ("views2", "grid", "flat")


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("llamagen", nargs="?", help="FoundationVision/LlamaGen checkout root")
  p.add_argument("titok", nargs="?", help="bytedance/1d-tokenizer checkout root")
  p.add_argument("--exports", help="where --write-exports wrote the exports")
  p.add_argument("--out", default="tests/goldens/token_exports")
  p.add_argument("--llamagen-commit", help="recorded in the golden (default: git rev-parse HEAD in the checkout)")
  p.add_argument("--titok-commit", help="as --llamagen-commit, for 1d-tokenizer")
  p.add_argument("--write-exports", metavar="DIR", help="step 1 (vqtok's venv): write the token dirs and exports")
  return p.parse_args()


def write_exports(root):
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sys.path[:0] = [repo, os.path.join(repo, "tests")]
  import test_token_exports  # noqa: PLC0415  (the token directories the test builds; needs vqtok)

  if os.path.exists(root):
    sys.exit(f"{root} exists; give a new directory")
  if "flip" in os.path.abspath(root):
    sys.exit(f"{root}: LlamaGen's reader looks for 'flip' in the path; choose one without it")
  for case in CASES:
    paths = test_token_exports.write_exports(case, os.path.join(root, case))
    print(case, paths)


def _stub(name, **attrs):
  mod = types.ModuleType(name)
  mod.__dict__.update(attrs)
  sys.modules[name] = mod
  return mod


def _commit(checkout):
  try:
    return subprocess.check_output(["git", "-C", checkout, "rev-parse", "HEAD"], text=True).strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def read_with_references(args):
  import torch  # noqa: PLC0415  (the torch venv only)

  for ref in (args.llamagen, args.titok):
    sys.path.insert(0, os.path.abspath(ref))
  _stub("torchvision", __path__=[])
  _stub("torchvision.datasets", ImageFolder=object)
  _stub("torchvision.transforms")
  sys.modules["torchvision"].datasets = sys.modules["torchvision.datasets"]
  sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
  _stub("webdataset")
  from data.webdataset_reader import PretoeknizedDataSetJSONL  # noqa: PLC0415  (reference code, 1d-tokenizer)
  from dataset.imagenet import CustomDataset  # noqa: PLC0415  (reference code, LlamaGen)

  drawn = []
  randint = torch.randint

  def recording_randint(*a, **k):
    out = randint(*a, **k)
    drawn.append(int(out.item()))
    return out

  golden = {
    "commits.llamagen": np.asarray(args.llamagen_commit or _commit(args.llamagen)),
    "commits.1d-tokenizer": np.asarray(args.titok_commit or _commit(args.titok)),
  }
  for case in CASES:
    root = os.path.join(args.exports, case)
    sub = [d for d in sorted(os.listdir(os.path.join(root, "llamagen"))) if d.endswith("_codes")]
    assert len(sub) == 1, sub
    codes_name, labels_name = sub[0], sub[0][: -len("_codes")] + "_labels"
    n = len(os.listdir(os.path.join(root, "llamagen", codes_name)))

    for key in ("llamagen", "llamagen_flip"):
      ds = CustomDataset(os.path.join(root, key, codes_name), os.path.join(root, key, labels_name))
      # Without "ten_crop/" in the path the "augmented" directory is the same one (dataset/imagenet.py:14-18).
      assert ds.flip == (key == "llamagen_flip") and ds.aug_feature_dir in (None, ds.feature_dir)
      torch.manual_seed(0)
      items, views = [], []
      torch.randint = recording_randint
      try:
        for i in range(n):
          del drawn[:]
          items.append(ds[i])
          views.append(drawn[0] if drawn else -1)
      finally:
        torch.randint = randint
      golden[f"{case}.{key}.codes"] = np.stack([x.numpy() for x, _ in items])
      if key == "llamagen":
        golden[f"{case}.{key}.labels"] = np.stack([y.numpy() for _, y in items])
        golden[f"{case}.{key}.len"] = np.asarray(len(ds))
      else:
        golden[f"{case}.{key}.view"] = np.asarray(views, np.int64)

    ds = PretoeknizedDataSetJSONL(os.path.join(root, "pretokenized.jsonl"))
    items = [ds[j] for j in range(len(ds))]
    golden[f"{case}.titok.class_id"] = np.stack([c.numpy() for c, _ in items])
    golden[f"{case}.titok.tokens"] = np.stack([t.numpy() for _, t in items])
    golden[f"{case}.titok.len"] = np.asarray(len(ds))

  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "readers.npz")
  np.savez_compressed(path, **golden)
  for k, v in golden.items():
    print(f"{k}: {v.dtype} {v.shape}")
  print("wrote", path)


def main():
  args = parse()
  if args.write_exports:
    write_exports(args.write_exports)
  elif args.llamagen and args.titok and args.exports:
    read_with_references(args)
  else:
    sys.exit("give --write-exports DIR, or LLAMAGEN TITOK --exports DIR")


if __name__ == "__main__":
  main()
