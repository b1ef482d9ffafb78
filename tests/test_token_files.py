"""Token files refuse the user's mistakes before anything is written.

Each test reproduces one mistake (the wrong tokenizer, a hand-edited grid, an
index out of range, a folder of other files, two images that would share a
PNG, another tokenizer's token directory) and checks the one-line message and
that what is on disk afterwards is what was there before.
"""

import json
import os
import shutil
import subprocess
import sys

import grain
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT, load_config, snapshot
from PIL import Image

from vqtok import data as data_lib
from vqtok import tokenize, tokenizer_dir
from vqtok import tokens as tokens_lib
from vqtok.images import to_uint8
from vqtok.models import build_tokenizer

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)


@pytest.fixture(scope="module")
def tokdirs(tmp_path_factory):
  """Two tokenizer directories of the runlocal preset: "a", and "b" with its FSQ levels permuted."""
  root = tmp_path_factory.mktemp("tokenizers")
  config = load_config()
  other = load_config(**{"quantizer.levels": (5, 5, 5, 8), "seed": 1})  # the same 1000 codes, another tokenizer
  paths = {}
  for key, c, seed in (("a", config, 0), ("b", other, 1)):
    paths[key] = tokenizer_dir.save_tokenizer(build_tokenizer(c, rngs=nnx.Rngs(seed)), c, str(root / key))
  return {key: (path, *tokenizer_dir.read(path)) for key, path in paths.items()}


def _images(root, names):
  rng = np.random.default_rng(0)
  for name in names:
    os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(os.path.join(root, name))
  return str(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """``a.jpg`` and ``a.png`` side by side, and one image in a subfolder."""
  return _images(tmp_path_factory.mktemp("images"), ["a.jpg", "a.png", "sub/b.png"])


def _encode(tok, folder, out):
  path, tokenizer, config, info = tok
  config = config.copy_and_resolve_references()
  config.data.update(source="folder", path=folder, eval_split="")
  return tokenize.encode_to_files(
    config,
    tokenizer,
    info["step"],
    str(out),
    batch_size=8,
    progress=False,
    tokenizer_metadata=info["metadata"],
    tokenizer_path=path,
  )


def _decode(tok, tokens, out, **kwargs):
  path, tokenizer, config, info = tok
  return tokenize.decode_to_images(
    tokenizer,
    str(tokens),
    str(out),
    config=config,
    tokenizer_metadata=info["metadata"],
    tokenizer_path=path,
    batch_size=8,
    reencode=False,
    progress=False,
    **kwargs,
  )


@pytest.fixture(scope="module")
def tokens(tokdirs, folder, tmp_path_factory):
  """``folder`` encoded by tokenizer "a" (one shard)."""
  out = tmp_path_factory.mktemp("tokens") / "a"
  assert _encode(tokdirs["a"], folder, out)["encoded"] == 3
  return str(out)


def _copy(tokens, tmp_path):
  return shutil.copytree(tokens, tmp_path / "tokens")


def _one_line(excinfo) -> str:
  message = str(excinfo.value)
  assert "\n" not in message
  return message


def _edit_shard(tokens, edit):
  path = os.path.join(tokens, "tokens-00000.npz")
  with np.load(path) as z:
    arrays = dict(z)
  arrays["indices"] = edit(arrays["indices"])
  np.savez(path, **arrays)


def test_fingerprint_names_the_architecture_and_the_source():
  config = load_config()
  fp = tokens_lib.tokenizer_fingerprint(config)
  assert fp == tokens_lib.tokenizer_fingerprint(json.loads(config.to_json_best_effort()))  # as metadata.json holds it
  assert len(fp["fingerprint"]) == 64 and fp["source_sha256"] is None
  # Data, training and the seed are not the tokenizer; the architecture, codebook and size are.
  assert tokens_lib.tokenizer_fingerprint(load_config(**{"seed": 3, "data.path": "/x"})) == fp
  for change in ({"quantizer.levels": (5, 5, 5, 8)}, {"model.channels": 16}, {"image_size": 64}):
    assert tokens_lib.tokenizer_fingerprint(load_config(**change))["fingerprint"] != fp["fingerprint"], change
  converted = tokens_lib.tokenizer_fingerprint(config, {"source": "llamagen", "source_sha256": "ab" * 32})
  assert converted == {"fingerprint": fp["fingerprint"], "source_sha256": "ab" * 32}


def test_a_jpg_and_a_png_keep_their_names_and_decode_to_two_files(tokdirs, tokens, tmp_path):
  meta, idx, names = tokens_lib.read_tokens(tokens)
  assert list(names) == ["a.jpg", "a.png", "sub/b.png"]
  path, tok, config, info = tokdirs["a"]
  assert meta["tokenizer"] == {**tokens_lib.tokenizer_fingerprint(config, info["metadata"]), "path": path}
  summary = _decode(tokdirs["a"], tokens, tmp_path / "dec")
  assert summary == {"decoded": 3, "images": 3, "replaced": 0}
  assert sorted(os.listdir(tmp_path / "dec")) == ["a.jpg.png", "a.png", "sub__b.png"]
  for name, png in (("a.jpg", "a.jpg.png"), ("a.png", "a.png")):
    want = to_uint8(np.clip(np.asarray(tok.decode(jnp.asarray(idx[list(names).index(name)][None]))), -1, 1))[0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "dec" / png)), want)


def test_a_cnn_decodes_the_grid_its_tokens_were_encoded_at(tokdirs, folder, tmp_path):
  path = tokdirs["a"][0]
  tokenizer, config, info = tokenizer_dir.read(path)  # a fresh copy, resized below
  config.image_size = tokenizer.image_size = 64  # as ``encode --image_size=64`` does
  _encode((path, tokenizer, config, info), folder, tmp_path / "tokens")
  summary = _decode(tokdirs["a"], tmp_path / "tokens", tmp_path / "dec")  # the 32px tokenizer decodes 16x16 grids
  assert summary["decoded"] == 3 and Image.open(tmp_path / "dec" / "a.png").size == (64, 64)


def test_png_names_that_meet_are_refused(tokdirs, tmp_path):
  folder = _images(tmp_path / "images", ["sub/x.png", "sub__x.png"])
  _encode(tokdirs["a"], folder, tmp_path / "tokens")
  with pytest.raises(ValueError) as e:
    _decode(tokdirs["a"], tmp_path / "tokens", tmp_path / "dec")
  assert "'sub/x.png' and 'sub__x.png' both decode to sub__x.png" in _one_line(e)
  assert not os.path.exists(tmp_path / "dec")


def test_the_wrong_tokenizer_is_refused(tokdirs, tokens, tmp_path):
  with pytest.raises(ValueError) as e:
    _decode(tokdirs["b"], tokens, tmp_path / "dec")
  message = _one_line(e)
  assert f"encoded by tokenizer {tokdirs['a'][0]}, not by {tokdirs['b'][0]}" in message
  assert "quantizer.levels differs" in message
  assert not os.path.exists(tmp_path / "dec")


def test_another_source_checkpoint_is_refused(tokdirs, tokens, tmp_path):
  _, tok, config, _ = tokdirs["a"]
  converted = tokenizer_dir.save_tokenizer(tok, config, str(tmp_path / "c"), metadata={"source_sha256": "ab" * 32})
  with pytest.raises(ValueError) as e:
    _decode((converted, *tokenizer_dir.read(converted)), tokens, tmp_path / "dec")
  assert "source checkpoint differs (sha256 none vs abababababab)" in _one_line(e)
  assert not os.path.exists(tmp_path / "dec")


def test_a_grid_that_does_not_fit_is_refused(tokdirs, tokens, tmp_path):
  copy = _copy(tokens, tmp_path)
  _edit_shard(copy, lambda idx: idx[:, :-1])  # (3, 8, 8) -> (3, 7, 8)
  with pytest.raises(ValueError) as e:
    _decode(tokdirs["a"], copy, tmp_path / "dec")
  assert "tokens-00000.npz: indices of shape (3, 7, 8) do not fit (n, 8, 8)" in _one_line(e)
  assert not os.path.exists(tmp_path / "dec")


def test_an_index_out_of_range_is_refused_before_any_write(tokdirs, tokens, tmp_path):
  copy = _copy(tokens, tmp_path)
  _edit_shard(copy, lambda idx: np.where(np.arange(idx.size).reshape(idx.shape) == 5, 1000, idx))
  dec = tmp_path / "dec"
  os.makedirs(dec)
  (dec / "a.png").write_bytes(b"older")
  before = snapshot(dec)
  with pytest.raises(ValueError) as e:
    _decode(tokdirs["a"], copy, dec, overwrite=True)
  assert "out of range for a codebook of 1000 codes" in _one_line(e)
  assert snapshot(dec) == before


def test_a_folder_with_other_files_needs_overwrite(tokdirs, tokens, tmp_path):
  dec = tmp_path / "dec"
  os.makedirs(dec)
  (dec / "notes.txt").write_text("mine")
  (dec / "a.png").write_bytes(b"an older a.png")
  (dec / "old.png").write_bytes(b"an older image")
  before = snapshot(dec)
  with pytest.raises(FileExistsError) as e:
    _decode(tokdirs["a"], tokens, dec)
  assert "already holds 3 entries (a.png, notes.txt, old.png)" in _one_line(e) and "--overwrite" in str(e.value)
  assert snapshot(dec) == before
  summary = _decode(tokdirs["a"], tokens, dec, overwrite=True)
  assert summary["decoded"] == 3 and summary["replaced"] == 1
  after = snapshot(dec)
  assert after["notes.txt"] == b"mine" and after["old.png"] == b"an older image"
  assert Image.open(dec / "a.png").size == (32, 32)  # replaced by the decoded image
  # Decoding the same tokens again into the folder it wrote is explicit too.
  with pytest.raises(FileExistsError):
    _decode(tokdirs["a"], tokens, dec)
  assert snapshot(dec) == after


def test_a_token_dir_that_does_not_name_its_tokenizer_is_refused(tokdirs, tokens, tmp_path):
  copy = _copy(tokens, tmp_path)
  meta = json.loads((copy / "metadata.json").read_text())
  del meta["tokenizer"]
  (copy / "metadata.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match=r"does not record which tokenizer encoded the tokens .*; encode them again"):
    _decode(tokdirs["a"], copy, tmp_path / "dec")
  assert not os.path.exists(tmp_path / "dec")


def test_encoding_into_another_tokenizers_dir_is_refused(tokdirs, folder, tokens, tmp_path):
  copy = _copy(tokens, tmp_path)
  before = snapshot(copy)
  with pytest.raises(ValueError) as e:
    _encode(tokdirs["b"], folder, copy)
  message = _one_line(e)
  assert f"holds tokens of another tokenizer ({tokdirs['a'][0]}; encoding with {tokdirs['b'][0]})" in message
  assert "quantizer.levels differs" in message
  assert snapshot(copy) == before
  # The same tokenizer on the same source resumes: here, nothing is left to do.
  again = _encode(tokdirs["a"], folder, copy)
  assert again["encoded"] == 0 and again["shards_already_done"] == again["num_shards"] == 1
  assert snapshot(copy) == before
  # A directory that does not name its tokenizer is nobody's to resume.
  meta = json.loads((copy / "metadata.json").read_text())
  del meta["tokenizer"]
  (copy / "metadata.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="does not record which tokenizer encoded the tokens there"):
    _encode(tokdirs["a"], folder, copy)
  # Shards without metadata.json are nobody's: refused, not counted as done.
  os.remove(copy / "metadata.json")
  with pytest.raises(ValueError, match="shards but no metadata.json"):
    _encode(tokdirs["a"], folder, copy)
  assert sorted(snapshot(copy)) == ["tokens-00000.npz"]


def _cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "vqtok.tokenize", "decode", "--batch_size=8", "--noreencode", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_command_line_refuses_the_wrong_tokenizer_in_one_line(tokdirs, tokens, tmp_path):
  res = _cli(f"--tokenizer={tokdirs['b'][0]}", f"--tokens={tokens}", f"--output={tmp_path / 'dec'}")
  assert res.returncode == 2, res.stderr[-3000:]
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
  assert tokdirs["a"][0] in lines[0] and tokdirs["b"][0] in lines[0] and "quantizer.levels" in lines[0]
  assert not os.path.exists(tmp_path / "dec")


def test_command_line_overwrite_writes_into_a_used_folder(tokdirs, tokens, tmp_path):
  dec = tmp_path / "dec"
  os.makedirs(dec)
  (dec / "notes.txt").write_text("mine")
  res = _cli(f"--tokenizer={tokdirs['a'][0]}", f"--tokens={tokens}", f"--output={dec}", "--overwrite")
  assert res.returncode == 0, res.stderr[-3000:]
  assert json.loads(res.stdout[res.stdout.index("{") :])["decoded"] == 3
  assert sorted(os.listdir(dec)) == ["a.jpg.png", "a.png", "notes.txt", "sub__b.png"]


# ---- labels and compact indices ----


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
  """An ImageFolder layout: two class subfolders."""
  return _images(tmp_path_factory.mktemp("classes"), ["n02/c.png", "n01/b.jpg", "n01/a.png"])


def test_labels_from_class_subfolders_are_stored_with_compact_indices(tokdirs, classes, tmp_path):
  out = tmp_path / "labelled"
  path, tokenizer, config, info = tokdirs["a"]
  config = config.copy_and_resolve_references()
  config.data.update(source="folder", path=classes, eval_split="")
  kw = dict(batch_size=8, progress=False, tokenizer_metadata=info["metadata"], tokenizer_path=path)
  assert tokenize.encode_to_files(config, tokenizer, 0, str(out), labels="subfolder", **kw)["encoded"] == 3
  meta, rows = tokens_lib.read_rows(str(out))
  assert meta["labels"] == {"from": "subfolder", "classes": ["n01", "n02"]}
  assert list(rows["names"]) == ["n01/a.png", "n01/b.jpg", "n02/c.png"]
  np.testing.assert_array_equal(rows["labels"], [0, 0, 1])
  assert rows["labels"].dtype == np.int32 and rows["indices"].dtype == np.int32
  with np.load(out / "tokens-00000.npz") as z:
    assert z["indices"].dtype == np.uint16  # 1000 codes
  # The same tokens as without labels.
  plain = _encode(tokdirs["a"], classes, tmp_path / "plain")
  assert plain["encoded"] == 3 and tokens_lib.read_rows(str(tmp_path / "plain"))[0]["labels"] is None
  np.testing.assert_array_equal(tokens_lib.read_tokens(str(tmp_path / "plain"))[1], rows["indices"])
  # Resumed without labels: refused, naming both, nothing changed.
  before = snapshot(out)
  with pytest.raises(ValueError) as e:
    _encode(tokdirs["a"], classes, out)
  assert "was encoded with labels from subfolder (2 classes); this run asks for without labels" in _one_line(e)
  assert snapshot(out) == before


def test_labels_are_never_guessed(tokdirs, folder, tmp_path):
  # ``folder`` has a.jpg and a.png at its root: they have no class.
  path, tokenizer, config, info = tokdirs["a"]
  config = config.copy_and_resolve_references()
  config.data.update(source="folder", path=folder, eval_split="")
  with pytest.raises(ValueError) as e:
    tokenize.encode_to_files(config, tokenizer, 0, str(tmp_path / "x"), labels="subfolder", progress=False)
  assert "2 image(s) in" in _one_line(e) and "lie outside a class subfolder, so they have no label: a.jpg, a.png" in (
    str(e.value)
  )
  flat = _images(tmp_path / "flat", ["a.png", "b.png"])
  config.data.path = flat
  with pytest.raises(ValueError, match="has no class subfolders"):
    tokenize.encode_to_files(config, tokenizer, 0, str(tmp_path / "x"), labels="subfolder", progress=False)
  assert not os.path.exists(tmp_path / "x")


def test_index_types_are_the_smallest_that_hold_the_codebook():
  assert tokens_lib.index_dtype(256) == np.uint8 and tokens_lib.index_dtype(257) == np.uint16
  assert tokens_lib.index_dtype(65536) == np.uint16 and tokens_lib.index_dtype(1 << 18) == np.int32


# ---- views, and reading rows at random with grain ----


def _encode_views(tok, folder, out, views):
  path, tokenizer, config, info = tok
  config = config.copy_and_resolve_references()
  config.data.update(source="folder", path=folder, eval_split="")
  kw = dict(batch_size=8, progress=False, tokenizer_metadata=info["metadata"], tokenizer_path=path)
  summary = tokenize.encode_to_files(config, tokenizer, 0, str(out), labels="subfolder", views=views, **kw)
  return summary, config, tokenizer


def _crops(img, size):
  """torchvision's TenCrop(size) of an (H, W, 3) image, written out: corners, centre, then the same mirrored."""
  h, w = img.shape[:2]
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  spots = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left)]
  return [im[y : y + size, x : x + size] for im in (img, img[:, ::-1]) for y, x in spots]


@pytest.mark.parametrize("views", ["flip", "ten_crop"])
def test_each_view_holds_the_tokens_of_its_transformed_image(tokdirs, classes, tmp_path, views):
  summary, config, tok = _encode_views(tokdirs["a"], classes, tmp_path / views, views)
  assert summary["encoded"] == 3
  meta, rows = tokens_lib.read_rows(str(tmp_path / views))
  n_views = 2 if views == "flip" else 10
  assert len(meta["views"]) == n_views and rows["indices"].shape == (3, n_views, *tok.token_shape)
  size = config.image_size
  for name, row in zip(rows["names"], rows["indices"]):
    img = np.asarray(Image.open(os.path.join(classes, name)).convert("RGB"))
    if views == "flip":
      x = data_lib.center_crop(img, size)
      want = [np.asarray(tok.encode(jnp.asarray(data_lib.to_float(v[None]))))[0] for v in (x, x[:, ::-1])]
    else:  # LlamaGen's --ten-crop: resize and center-crop to int(1.1 * size), then TenCrop(size)
      big = data_lib.center_crop(img, int(size * 1.1))
      want = np.asarray(tok.encode(jnp.asarray(data_lib.to_float(np.stack(_crops(big, size))))))
    np.testing.assert_array_equal(row, np.stack(want), err_msg=name)
  if views == "flip":
    # Decoding takes the first view, the image itself; resuming with other views is refused.
    assert _decode(tokdirs["a"], tmp_path / views, tmp_path / "dec")["decoded"] == 3
    with pytest.raises(ValueError, match=r"was encoded with views \['image', 'flip'\]; this run asks for \['image'\]"):
      tokenize.encode_to_files(config, tok, 0, str(tmp_path / views), labels="subfolder", progress=False)


def test_a_token_source_reads_rows_at_random_and_views_resume(tokdirs, classes, tmp_path):
  _encode_views(tokdirs["a"], classes, tmp_path / "flip", "flip")
  _, rows = tokens_lib.read_rows(str(tmp_path / "flip"))
  source = tokens_lib.TokenSource(str(tmp_path / "flip"))
  assert len(source) == 3 and source.num_views == 2
  for i in (2, 0, 1):
    record = source[i]
    np.testing.assert_array_equal(record["indices"], rows["indices"][i])
    assert record["name"] == rows["names"][i] and record["label"] == rows["labels"][i]
    assert isinstance(record["indices"], np.ndarray) and record["indices"].dtype == np.int32
  with pytest.raises(IndexError):
    source[3]

  def dataset():
    return grain.MapDataset.source(source).repeat(4).seed(7).shuffle().random_map(tokens_lib.RandomView(2))

  full = [(r["name"], r["view"], r["indices"]) for r in dataset()]
  assert {v for _, v, _ in full} == {0, 1}  # both views are drawn
  for name, view, idx in full:
    np.testing.assert_array_equal(idx, rows["indices"][list(rows["names"]).index(name), view])
  it = iter(dataset().to_iter_dataset())
  first = [next(it)["view"] for _ in range(5)]
  state = it.get_state()
  again = iter(dataset().to_iter_dataset())
  again.set_state(state)  # a resumed run continues the same sequence of rows and views
  rest = [(r["name"], r["view"]) for r in again]
  assert first == [v for _, v, _ in full[:5]] and rest == [(n, v) for n, v, _ in full[5:]]


def test_encoded_views_export_for_llamagen_and_titok_from_the_command_line(tokdirs, classes, tmp_path):
  """Done-when of the token-files issue: subfolder labels and flip views, read by grain above, exported here."""
  _encode_views(tokdirs["a"], classes, tmp_path / "flip", "flip")
  _, rows = tokens_lib.read_rows(str(tmp_path / "flip"))
  order = np.argsort(rows["source_index"])

  def export(*args):
    return subprocess.run(
      [sys.executable, "-m", "vqtok.tokenize", "export", f"--tokens={tmp_path / 'flip'}", *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
    )

  res = export("--format=llamagen", f"--output={tmp_path / 'codes_flip'}")
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads(res.stdout[res.stdout.index("{") :])
  assert (summary["rows"], summary["views"], summary["files"]) == (3, 2, 6)
  size = json.loads((tmp_path / "flip" / "metadata.json").read_text())["image_size"]
  for i, row in enumerate(order):
    codes = np.load(tmp_path / "codes_flip" / f"imagenet{size}_codes" / f"{i}.npy")
    label = np.load(tmp_path / "codes_flip" / f"imagenet{size}_labels" / f"{i}.npy")
    assert codes.dtype == label.dtype == np.int64 and codes.shape == (1, 2, rows["indices"][0, 0].size)
    np.testing.assert_array_equal(codes[0], rows["indices"][row].reshape(2, -1))
    assert label.tolist() == [rows["labels"][row]]
  res = export("--format=titok-jsonl", f"--output={tmp_path / 'pretokenized.jsonl'}")
  assert res.returncode == 0, res.stderr[-3000:]
  lines = [json.loads(line) for line in (tmp_path / "pretokenized.jsonl").read_text().splitlines()]
  want = [(int(rows["labels"][r]), rows["indices"][r, v].reshape(-1).tolist()) for r in order for v in (0, 1)]
  assert [(d["class_id"], d["tokens"]) for d in lines] == want
  # Files without labels, or an output that holds something: one line, nothing written.
  res = export("--format=titok-jsonl", f"--output={tmp_path / 'pretokenized.jsonl'}")
  assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
  assert "exists and is not empty; export never overwrites" in res.stderr
  res = export("--format=tar", f"--output={tmp_path / 'x'}")
  assert res.returncode != 0 and "llamagen" in res.stderr and not os.path.exists(tmp_path / "x")


# ---- captions ----


def _captions(path, items):
  with open(path, "w") as f:
    f.write("".join(json.dumps(item) + "\n" for item in items))
  return str(path)


def test_captions_are_stored_with_their_rows(tokdirs, classes, tmp_path):
  path, tokenizer, config, info = tokdirs["a"]
  config = config.copy_and_resolve_references()
  config.data.update(source="folder", path=classes, eval_split="")
  texts = {"n01/a.png": "a cat", "n01/b.jpg": "another cat", "n02/c.png": "a dog, ünïcode"}
  file = _captions(tmp_path / "captions.jsonl", [{"name": k, "caption": v} for k, v in reversed(texts.items())])
  out = str(tmp_path / "captioned")
  tokenize.encode_to_files(config, tokenizer, 0, out, captions=file, labels="subfolder", progress=False)
  meta, rows = tokens_lib.read_rows(out)
  assert meta["captions"]["from"] == "file" and [texts[n] for n in rows["names"]] == list(rows["captions"])
  source = tokens_lib.TokenSource(out)
  assert [source[i]["caption"] for i in range(3)] == list(rows["captions"])
  # Resumed with other captions: refused, naming both.
  other = _captions(tmp_path / "other.jsonl", [{"name": k, "caption": v + "!"} for k, v in texts.items()])
  with pytest.raises(ValueError, match=r"was encoded with the captions of .*captions.jsonl; this run asks for .*other"):
    tokenize.encode_to_files(config, tokenizer, 0, out, captions=other, labels="subfolder", progress=False)


@pytest.mark.parametrize(
  "lines,message",
  [
    ([{"name": "n01/a.png", "caption": "x"}, {"name": "n01/zz.png", "caption": "y"}],
     r"does not match the images \(2 image\(s\) have no caption: n01/b.jpg, n02/c.png; 1 caption\(s\) name no image:"
     r" n01/zz.png\)"),
    (['{"name": "n01/a.png", "caption": "x"}', "{not json"], r"captions.jsonl:2: not JSON"),
    ([{"name": "n01/a.png", "caption": 3}], r"captions.jsonl:1: the caption of 'n01/a.png' is not a string"),
    ([{"name": "n01/a.png", "caption": "x"}, {"name": "n01/a.png", "caption": "y"}], r":2: 'n01/a.png' has a caption"),
  ],
)  # fmt: skip
def test_captions_that_do_not_match_are_refused_before_any_write(tokdirs, classes, tmp_path, lines, message):
  path, tokenizer, config, info = tokdirs["a"]
  config = config.copy_and_resolve_references()
  config.data.update(source="folder", path=classes, eval_split="")
  file = tmp_path / "captions.jsonl"
  file.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
  with pytest.raises(ValueError, match=message) as e:
    tokenize.encode_to_files(config, tokenizer, 0, str(tmp_path / "out"), captions=str(file), progress=False)
  _one_line(e)
  assert not os.path.exists(tmp_path / "out")
