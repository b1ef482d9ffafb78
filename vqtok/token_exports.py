"""Token files in the layouts that PyTorch generator trainers read as they are.

* ``llamagen``: LlamaGen's code directory (FoundationVision/LlamaGen
  ``ce98ec4``), as ``autoregressive/train/extract_codes_c2i.py:41-42, 104-111``
  writes it and ``dataset/imagenet.py``'s ``CustomDataset`` reads it:
  ``OUT/<dataset><size>_codes/<i>.npy``, int64 ``(1, views, tokens)``, and
  ``OUT/<dataset><size>_labels/<i>.npy``, int64 ``(1,)``, one pair per image.
* ``titok-jsonl``: 1d-tokenizer's ``pretokenized.jsonl`` (bytedance/1d-tokenizer
  ``942a96f``), as ``scripts/pretokenization.py:212-216, 119-126`` writes it
  and ``data/webdataset_reader.py``'s ``PretoeknizedDataSetJSONL`` reads it:
  one ``{"class_id": int, "tokens": [int, ...]}`` a line, one line per view.

Each view's tokens are flattened in row-major order (a 16x16 grid gives 256;
multi-scale and 1-D tokens are flat already). Rows go in source order
(``source_index``), so item ``i`` is the ``i``-th image encoded whatever the
number of processes that wrote the shards. ``scripts/parity/gen_token_exports.py``
runs both readers over these exports; ``tests/test_token_exports.py`` checks
the files against what they returned.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from vqtok import files
from vqtok import tokens as tokens_lib

FORMATS = ("llamagen", "titok-jsonl")

#: LlamaGen's ``CustomDataset`` lists exactly this many files, ImageNet's train
#: split (dataset/imagenet.py:26-27), whatever the directory holds.
LLAMAGEN_FILES = 1_281_167

_TMP = ".tmp-export"


def export(tokens_dir: str, output: str, fmt: str, *, dataset: str = "imagenet") -> dict:
  """Writes the token files of ``tokens_dir`` as ``fmt`` expects them, whole or not at all.

  Args:
    tokens_dir: a token directory written by ``vqtok.tokenize encode`` with
      class labels.
    output: ``llamagen``: the directory to give LlamaGen as ``--code-path``;
      ``titok-jsonl``: the ``.jsonl`` file to give 1d-tokenizer as
      ``dataset.params.pretokenization``. It must not exist, or be empty.
    fmt: one of ``FORMATS``.
    dataset: ``llamagen``: the name in ``<dataset><size>_codes``.

  Returns:
    ``{"format", "output", "rows", "views", "tokens", "files", "items",
    "paths", "notes"}``: rows exported, views per row, tokens per view, files
    written, items the trainer's reader sees, the directories or file written,
    and what the trainer needs besides (one line each).

  Raises:
    ValueError: an unknown format, video token files, files without class labels, several
      indices per token (residual or grouped quantizers), or an ``output``
      that holds something; nothing is written then.
  """
  if fmt not in FORMATS:
    raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
  if fmt == "llamagen" and (not dataset or os.sep in dataset or dataset in (".", "..")):
    raise ValueError(f"dataset={dataset!r}: expected a plain name, as in <dataset><size>_codes")
  output = os.path.normpath(output)
  _check_output(output, fmt)
  meta, rows = tokens_lib.read_rows(tokens_dir)
  if meta.get("video"):
    raise ValueError(
      f"{tokens_dir} holds video tokens (rows of {tuple(meta['token_shape'])}); {fmt} is a layout for image tokens"
    )
  codes, labels = _per_view(meta, rows, tokens_dir, fmt)
  if fmt == "llamagen":
    if meta.get("image_size") is None:
      raise ValueError(f"{tokens_dir}: metadata.json has no image_size, which names LlamaGen's <dataset><size>_codes")
    summary = _write_llamagen(codes, labels, output, dataset, int(meta["image_size"]))
  else:
    summary = _write_jsonl(codes, labels, output)
  n, views, tokens = codes.shape
  return {"format": fmt, "output": output, "rows": n, "views": views, "tokens": tokens, **summary}


def _check_output(output: str, fmt: str) -> None:
  if os.path.isdir(output):
    if os.listdir(output):
      raise ValueError(f"{output} exists and is not empty; export never overwrites: give a new path")
    if fmt == "titok-jsonl":
      raise ValueError(f"{output} is a directory; titok-jsonl writes one file (e.g. {output}/pretokenized.jsonl)")
  elif os.path.lexists(output):
    if fmt == "llamagen":
      raise ValueError(f"{output} exists and is not a directory; llamagen writes a directory of codes and labels")
    if os.path.getsize(output):
      raise ValueError(f"{output} exists and is not empty; export never overwrites: give a new path")


def _per_view(meta: dict, rows: dict, tokens_dir: str, fmt: str) -> tuple[np.ndarray, np.ndarray]:
  """``(codes (n, views, tokens) int64, labels (n,) int64)`` in source order, or ValueError."""
  if "labels" not in rows:
    raise ValueError(
      f"{tokens_dir}: no class labels in these token files; {fmt} needs a class id per image"
      " (encode with --labels=subfolder or a TFDS label feature, --label_key)"
    )
  depth = meta.get("index_depth")
  if depth is not None:
    raise ValueError(
      f"{tokens_dir}: {depth} indices per token (a residual or grouped quantizer); {fmt} takes one index per token"
    )
  indices, n = rows["indices"], rows["indices"].shape[0]
  if not n:
    raise ValueError(f"{tokens_dir}: no rows to export")
  names = meta.get("views")
  views = len(names) if names else 1
  per_row = indices.shape[1:]
  if names and (not per_row or per_row[0] != views):
    raise ValueError(f"{tokens_dir}: metadata.json lists {views} views {names}, indices have shape {indices.shape}")
  tokens = math.prod(per_row[1:] if names else per_row)
  want = meta.get("num_tokens") or (math.prod(meta["token_shape"]) if meta.get("token_shape") else None)
  if want is not None and tokens != int(want):
    raise ValueError(
      f"{tokens_dir}: indices of shape {indices.shape} hold {tokens} tokens per view, metadata.json says {want}"
    )
  labels = rows["labels"]
  if labels.min() < 0:
    raise ValueError(f"{tokens_dir}: negative class labels ({int(labels.min())})")
  order = np.argsort(rows["source_index"], kind="stable") if "source_index" in rows else np.arange(n)
  codes = indices.reshape(n, views, tokens)[order].astype(np.int64)
  return np.ascontiguousarray(codes), labels[order].astype(np.int64)


def _write_llamagen(codes: np.ndarray, labels: np.ndarray, output: str, dataset: str, size: int) -> dict:
  n, views, tokens = codes.shape
  parent = os.path.dirname(output)
  if parent:
    os.makedirs(parent, exist_ok=True)
  sub_codes, sub_labels = f"{dataset}{size}_codes", f"{dataset}{size}_labels"
  with files.atomic_dir(output, _TMP) as tmp:
    for sub in (sub_codes, sub_labels):
      os.makedirs(os.path.join(tmp, sub))
    for i in range(n):
      # extract_codes_c2i.py:104-111: codes (1, num_aug, tokens) and labels (1,), both int64, file i = image i.
      np.save(os.path.join(tmp, sub_codes, f"{i}.npy"), codes[i : i + 1])
      np.save(os.path.join(tmp, sub_labels, f"{i}.npy"), labels[i : i + 1])
  notes = []
  if n != LLAMAGEN_FILES:
    notes.append(
      f"LlamaGen's CustomDataset lists exactly {LLAMAGEN_FILES:,} files (dataset/imagenet.py:26-27, ImageNet's"
      f" train split); for these {n:,} rows set that count to {n} in your LlamaGen checkout"
    )
  if views > 1 and "flip" not in output:
    notes.append(
      f"CustomDataset picks one of the {views} views at random only when the code path contains 'flip'"
      f" (dataset/imagenet.py:12, 46-48); {output} does not, so train_c2i.py would read the {views} views as one"
      f" sequence of {views * tokens} tokens: rename it (e.g. ..._flip)"
    )
  if dataset != "imagenet":
    notes.append(
      f"train_c2i.py's --dataset=imagenet_code reads imagenet{size}_codes and imagenet{size}_labels"
      f" (dataset/imagenet.py:57-58), not {sub_codes}"
    )
  side = math.isqrt(tokens)
  if side * side != tokens or size % side or size // side not in (8, 16):
    notes.append(
      f"train_c2i.py's GPT takes (image_size // downsample_size)**2 tokens, downsample_size 8 or 16"
      f" (autoregressive/train/train_c2i.py:101-104, 278); these files hold {tokens} per view at size {size}"
    )
  else:
    notes.append(f"train_c2i.py --code-path {output} --image-size {size} --downsample-size {size // side}")
  return {
    "files": 2 * n,
    "items": n,
    "paths": [os.path.join(output, s) for s in (sub_codes, sub_labels)],
    "notes": notes,
  }


def _write_jsonl(codes: np.ndarray, labels: np.ndarray, output: str) -> dict:
  n, views, _ = codes.shape
  parent = os.path.dirname(output)
  if parent:
    os.makedirs(parent, exist_ok=True)
  with files.atomic_path(output, _TMP) as tmp, open(tmp, "w", encoding="utf-8") as f:
    for row, label in zip(codes.tolist(), labels.tolist()):
      for view in row:
        # pretokenization.py:213-216 and 125-126: json.dump of {"class_id", "tokens"}, then a newline.
        json.dump({"class_id": label, "tokens": view}, f)
        f.write("\n")
  return {"files": 1, "items": n * views, "paths": [output], "notes": []}
