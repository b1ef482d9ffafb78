"""Token exports against what the PyTorch trainers' own readers returned for them.

``tests/goldens/token_exports/readers.npz`` holds, for every item of the
exports of the small token directories built here, what LlamaGen's
``CustomDataset`` and 1d-tokenizer's ``PretoeknizedDataSetJSONL`` returned
(``scripts/parity/gen_token_exports.py``). The tests rebuild the exports and
read them the way those readers index them: LlamaGen's item ``i`` is
``<i>.npy`` of the codes and labels directories, 1d-tokenizer's item ``j`` is
line ``j + 1``.
"""

import json
import linecache
import os

import numpy as np
import pytest

from vqtok import token_exports
from vqtok import tokens as tokens_lib

GOLDEN = os.path.join(os.path.dirname(__file__), "goldens", "token_exports", "readers.npz")
CLASSES = ["cat", "dog", "fox"]

#: Small token directories: 2 views of a 4x4 grid written by two processes
#: (source order interleaved across the shards), one view of a 2x3 grid, and
#: one view of 8 1-D tokens stored as uint16.
CASES = {
  "views2": {
    "views": ["image", "flip"],
    "token_shape": [4, 4],
    "codebook_size": 64,
    "image_size": 64,
    "shards": {"tokens-00000-p000.npz": [0, 2, 4], "tokens-00000-p001.npz": [1, 3]},
  },
  "grid": {
    "views": None,
    "token_shape": [2, 3],
    "codebook_size": 64,
    "image_size": 32,
    "shards": {"tokens-00000.npz": [0, 1, 2]},
  },
  "flat": {
    "views": None,
    "token_shape": [8],
    "codebook_size": 1000,
    "image_size": 32,
    "shards": {"tokens-00000.npz": [0, 1], "tokens-00001.npz": [2, 3]},
  },
}


def expected_codes(case: str, source: int) -> np.ndarray:
  """``(views, tokens)``: the flattened tokens of each view of the image at ``source``."""
  spec = CASES[case]
  views = len(spec["views"] or [None])
  tokens = int(np.prod(spec["token_shape"]))
  v, p = np.meshgrid(np.arange(views), np.arange(tokens), indexing="ij")
  return (source * 37 + v * 11 + p * 5 + 3) % spec["codebook_size"]


def expected_label(source: int) -> int:
  return (2 * source + 1) % len(CLASSES)


def make_tokens(case: str, directory: str, *, labels: bool = True, index_depth: int | None = None) -> str:
  """Writes the token directory of ``case`` (deterministic: no random numbers) and returns it."""
  spec = CASES[case]
  os.makedirs(directory)
  views, shape = spec["views"], list(spec["token_shape"])
  num_images = sum(len(s) for s in spec["shards"].values())
  meta = {
    "format": tokens_lib.FORMAT,
    "tokenizer": {"fingerprint": "0" * 64, "source_sha256": None, "path": "test"},
    "codebook_size": spec["codebook_size"],
    "index_depth": index_depth,
    "token_shape": shape,
    "image_size": spec["image_size"],
    "checkpoint_step": 0,
    "num_images": num_images,
    "images_per_shard": 3,
    "num_processes": 2 if case == "views2" else 1,
    "source": {"source": "folder", "name": "", "path": "images", "eval_split": ""},
    "config": {},
  }
  if labels:
    meta["labels"] = {"from": "subfolder", "classes": CLASSES}
  if views:
    meta["views"] = views
  with open(os.path.join(directory, "metadata.json"), "w") as f:
    json.dump(meta, f)
  for name, sources in spec["shards"].items():
    per_row = ([len(views)] if views else []) + shape
    indices = np.stack([expected_codes(case, s).reshape(per_row) for s in sources])
    if index_depth is not None:
      indices = np.repeat(indices[..., None], index_depth, axis=-1)
    rows = {
      "indices": [indices],
      "names": [f"{CLASSES[expected_label(s)]}/{s}.png" for s in sources],
      "source_index": [np.asarray(sources)],
    }
    if labels:
      rows["labels"] = [np.asarray([expected_label(s) for s in sources])]
    tokens_lib.write_shard(os.path.join(directory, name), rows, spec["codebook_size"])
  return directory


def write_exports(case: str, root: str) -> dict[str, str]:
  """The exports the goldens were made from: ``{"tokens", "llamagen", "llamagen_flip", "jsonl"}`` paths."""
  tokens = make_tokens(case, os.path.join(root, "tokens"))
  paths = {
    "tokens": tokens,
    "llamagen": os.path.join(root, "llamagen"),  # no "flip": CustomDataset returns every view
    "llamagen_flip": os.path.join(root, "llamagen_flip"),  # "flip": it picks one view at random
    "jsonl": os.path.join(root, "pretokenized.jsonl"),
  }
  for key, fmt in (("llamagen", "llamagen"), ("llamagen_flip", "llamagen"), ("jsonl", "titok-jsonl")):
    token_exports.export(tokens, paths[key], fmt)
  return paths


@pytest.fixture(scope="module")
def golden():
  with np.load(GOLDEN) as z:
    return {k: z[k] for k in z.files}


def assert_same(got: np.ndarray, want: np.ndarray, what: str) -> None:
  assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, the reference read {want.dtype}"
  assert got.shape == want.shape, f"{what}: shape {got.shape}, the reference read {want.shape}"
  np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_holds_the_tokens(golden, case):
  """What the reference readers returned is each image's tokens per view and its label, in source order."""
  spec = CASES[case]
  n = sum(len(s) for s in spec["shards"].values())
  views = len(spec["views"] or [None])
  codes, labels = golden[f"{case}.llamagen.codes"], golden[f"{case}.llamagen.labels"]
  assert codes.shape[0] == labels.shape[0] == n
  flip_codes, flip_view = golden[f"{case}.llamagen_flip.codes"], golden[f"{case}.llamagen_flip.view"]
  for i in range(n):
    np.testing.assert_array_equal(codes[i], expected_codes(case, i)[None])
    np.testing.assert_array_equal(labels[i], [expected_label(i)])
    np.testing.assert_array_equal(flip_codes[i], expected_codes(case, i)[flip_view[i]][None])
  if views > 1:
    assert len(set(flip_view.tolist())) > 1, "the golden's random views never differ"
  class_id, tokens = golden[f"{case}.titok.class_id"], golden[f"{case}.titok.tokens"]
  assert int(golden[f"{case}.titok.len"]) == class_id.shape[0] == n * views
  for j in range(n * views):
    np.testing.assert_array_equal(tokens[j], expected_codes(case, j // views)[j % views])
    assert class_id[j] == expected_label(j // views)
  assert int(golden[f"{case}.llamagen.len"]) == token_exports.LLAMAGEN_FILES


@pytest.mark.parametrize("case", sorted(CASES))
def test_llamagen_files_read_as_the_reference_read_them(golden, tmp_path, case):
  paths = write_exports(case, str(tmp_path))
  size = CASES[case]["image_size"]
  codes_dir = os.path.join(paths["llamagen"], f"imagenet{size}_codes")
  labels_dir = os.path.join(paths["llamagen"], f"imagenet{size}_labels")
  want_codes, want_labels = golden[f"{case}.llamagen.codes"], golden[f"{case}.llamagen.labels"]
  n = want_codes.shape[0]
  assert sorted(os.listdir(paths["llamagen"])) == sorted([f"imagenet{size}_codes", f"imagenet{size}_labels"])
  for d in (codes_dir, labels_dir):
    assert sorted(os.listdir(d)) == sorted(f"{i}.npy" for i in range(n))
  flip_dir = os.path.join(paths["llamagen_flip"], f"imagenet{size}_codes")
  flip_codes, flip_view = golden[f"{case}.llamagen_flip.codes"], golden[f"{case}.llamagen_flip.view"]
  for i in range(n):  # dataset/imagenet.py:45-50
    assert_same(np.load(os.path.join(codes_dir, f"{i}.npy")), want_codes[i], f"codes {i}")
    assert_same(np.load(os.path.join(labels_dir, f"{i}.npy")), want_labels[i], f"labels {i}")
    features = np.load(os.path.join(flip_dir, f"{i}.npy"))
    assert_same(features[:, flip_view[i]], flip_codes[i], f"one view of codes {i}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_jsonl_lines_read_as_the_reference_read_them(golden, tmp_path, case):
  paths = write_exports(case, str(tmp_path))
  path = paths["jsonl"]
  want_class, want_tokens = golden[f"{case}.titok.class_id"], golden[f"{case}.titok.tokens"]
  with open(path) as f:
    assert sum(1 for _ in f) == int(golden[f"{case}.titok.len"])  # webdataset_reader.py:285
  linecache.checkcache(path)
  for j in range(want_class.shape[0]):  # webdataset_reader.py:293-296
    data = json.loads(linecache.getline(path, j + 1).strip())
    assert list(data) == ["class_id", "tokens"]  # pretokenization.py:213-216
    assert_same(np.asarray(data["class_id"]), want_class[j], f"class_id of line {j}")
    assert_same(np.asarray(data["tokens"]), want_tokens[j], f"tokens of line {j}")
  assert not os.path.exists(path + ".tmp-export")


def test_summary(tmp_path):
  tokens = make_tokens("views2", str(tmp_path / "tokens"))
  out = str(tmp_path / "codes")
  s = token_exports.export(tokens, out, "llamagen", dataset="toy")
  assert (s["rows"], s["views"], s["tokens"], s["files"], s["items"]) == (5, 2, 16, 10, 5)
  assert s["paths"] == [os.path.join(out, "toy64_codes"), os.path.join(out, "toy64_labels")]
  notes = " ".join(s["notes"])
  assert "1,281,167" in notes and "'flip'" in notes and "imagenet64_codes" in notes
  s = token_exports.export(tokens, str(tmp_path / "tok.jsonl"), "titok-jsonl")
  assert (s["rows"], s["views"], s["files"], s["items"]) == (5, 2, 1, 10)


def test_empty_output_directory_is_filled(tmp_path):
  tokens = make_tokens("grid", str(tmp_path / "tokens"))
  out = tmp_path / "codes"
  out.mkdir()
  token_exports.export(tokens, str(out), "llamagen")
  assert sorted(os.listdir(out)) == ["imagenet32_codes", "imagenet32_labels"]


def _listing(root) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root) for f in dirs + files)


def _refused(match: str, tokens: str, output: str, fmt: str, root) -> None:
  before = _listing(root)
  with pytest.raises(ValueError, match=match) as e:
    token_exports.export(tokens, output, fmt)
  assert "\n" not in str(e.value)
  assert _listing(root) == before


@pytest.mark.parametrize("fmt", token_exports.FORMATS)
def test_refusals(tmp_path, fmt):
  tokens = make_tokens("views2", str(tmp_path / "tokens"))
  _refused("expected one of llamagen, titok-jsonl", tokens, str(tmp_path / "out"), "npy", tmp_path)
  unlabelled = make_tokens("views2", str(tmp_path / "unlabelled"), labels=False)
  _refused(
    "no class labels.*--labels=subfolder or a TFDS label feature", unlabelled, str(tmp_path / "o"), fmt, tmp_path
  )
  deep = make_tokens("grid", str(tmp_path / "deep"), index_depth=2)
  _refused("2 indices per token", deep, str(tmp_path / "out"), fmt, tmp_path)
  full = tmp_path / "full"
  full.mkdir()
  (full / "keep.txt").write_text("mine")
  _refused("exists and is not empty; export never overwrites", tokens, str(full), fmt, tmp_path)
  if fmt == "titok-jsonl":
    (tmp_path / "full.jsonl").write_text("{}\n")
    _refused("exists and is not empty", tokens, str(tmp_path / "full.jsonl"), fmt, tmp_path)
  assert (full / "keep.txt").read_text() == "mine"


def test_failure_leaves_nothing(tmp_path, monkeypatch):
  tokens = make_tokens("views2", str(tmp_path / "tokens"))
  before = _listing(tmp_path)
  calls, save = [], np.save

  def failing_save(*args, **kwargs):
    calls.append(args[0])
    if len(calls) > 3:
      raise OSError(28, "No space left on device")
    return save(*args, **kwargs)

  monkeypatch.setattr(token_exports.np, "save", failing_save)
  with pytest.raises(OSError):
    token_exports.export(tokens, str(tmp_path / "codes"), "llamagen")
  assert _listing(tmp_path) == before and not os.path.exists(tmp_path / "codes.tmp-export")

  def failing_dump(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(token_exports.json, "dump", failing_dump)
  with pytest.raises(OSError):
    token_exports.export(tokens, str(tmp_path / "t.jsonl"), "titok-jsonl")
  assert _listing(tmp_path) == before
