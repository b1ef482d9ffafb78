"""Evaluation report and token files: encode -> files -> decode, resumable."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROOT, fill, load_config
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from vqtok import data as data_lib
from vqtok import tokenize
from vqtok import tokens as tokens_lib
from vqtok.evaluation.report import evaluate
from vqtok.images import to_uint8
from vqtok.training.checkpoint import load_tokenizer
from vqtok.training.state import init_train_state, tokenizer_from_state

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)


def test_load_tokenizer_restores_the_saved_weights(run):
  workdir, config, tok = run
  loaded, step = load_tokenizer(config, workdir)
  assert step == 0
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)), jnp.float32)
  np.testing.assert_array_equal(loaded.encode(x), tok.encode(x))


def test_report_matches_independent_metrics(run):
  _, config, tok = run
  report, grid = evaluate(config, tok, batch_size=8, progress=False)
  src = data_lib.make_source(config, "eval")
  assert report["num_images"] == len(src)
  # Recompute independently: scikit-image PSNR and a NumPy histogram.
  psnrs, counts = [], np.zeros(tok.quantizer.codebook_size)
  for i in range(len(src)):
    x = data_lib.to_float(data_lib.center_crop(src[i], config.image_size)[None])
    x_hat, q = tok(jnp.asarray(x), train=False)
    a, b = to_uint8(x)[0], to_uint8(np.clip(np.asarray(x_hat), -1, 1))[0]
    psnrs.append(peak_signal_noise_ratio(a, b, data_range=255))
    counts += np.bincount(np.asarray(q.indices).ravel(), minlength=len(counts))
  assert report["psnr"] == pytest.approx(np.mean(psnrs), rel=1e-4)
  assert report["codebook"]["usage"] == pytest.approx(np.mean(counts > 0))
  p = counts / counts.sum()
  assert report["codebook"]["perplexity"] == pytest.approx(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))), rel=1e-5)
  assert grid.dtype == np.uint8 and grid.shape[0] > 2 * config.image_size


def test_encode_is_resumable_and_decode_round_trips(run, folder, tmp_path):
  workdir, config, tok = run
  config = config.copy_and_resolve_references()
  config.data.update(source="folder", path=folder, eval_split="")
  out = str(tmp_path / "tokens")
  first = tokenize.encode_to_files(config, tok, 0, out, batch_size=8, shard_batches=1, progress=False)
  assert first["encoded"] == 10 and first["num_shards"] == 2
  meta, idx, names = tokens_lib.read_tokens(out)
  assert meta["codebook_size"] == 1000 and tuple(meta["token_shape"]) == tok.token_shape
  assert sorted(names) == sorted(
    ["img00.png", "img02.png", "img04.png", "img06.png", "img08.png"] + [f"sub/img{i:02d}.png" for i in (1, 3, 5, 7, 9)]
  )
  # Tokens are those of the tokenizer on the center-cropped images.
  for name, row in zip(names, idx):
    img = np.asarray(Image.open(os.path.join(folder, name)).convert("RGB"))
    x = data_lib.to_float(data_lib.center_crop(img, config.image_size)[None])
    np.testing.assert_array_equal(np.asarray(tok.encode(jnp.asarray(x)))[0], row)

  # Interrupted after the first shard: rerunning encodes only the rest.
  os.remove(os.path.join(out, "tokens-00001.npz"))
  again = tokenize.encode_to_files(config, tok, 0, out, batch_size=8, shard_batches=1, progress=False)
  assert again["shards_already_done"] == 1 and again["encoded"] == 2
  _, idx2, names2 = tokens_lib.read_tokens(out)
  np.testing.assert_array_equal(idx2, idx)
  assert list(names2) == list(names)

  # A different checkpoint step into the same directory is refused.
  with pytest.raises(ValueError, match="checkpoint_step"):
    tokenize.encode_to_files(config, tok, 5, out, batch_size=8, shard_batches=1, progress=False)

  dec = tokenize.decode_to_images(tok, out, str(tmp_path / "decoded"), batch_size=8, progress=False)
  assert dec["decoded"] == 10 and 0.0 <= dec["token_agreement"] <= 1.0
  png = np.asarray(Image.open(tmp_path / "decoded" / "sub__img03.png"))
  row = idx[list(names).index("sub/img03.png")]
  want = to_uint8(np.clip(np.asarray(tok.decode(jnp.asarray(row[None]))), -1, 1))[0]
  np.testing.assert_array_equal(png, want)


def test_out_of_range_tokens_are_a_clear_error(run, tmp_path):
  _, _, tok = run
  out = tmp_path / "bad"
  os.makedirs(out)
  with open(out / "metadata.json", "w") as f:
    json.dump({"codebook_size": 1000}, f)
  idx = np.zeros((1, *tok.token_shape), np.int32)
  idx[0, 0, 0] = 1000
  np.savez(out / "tokens-00000.npz", indices=idx, names=np.asarray(["a"]), source_index=np.zeros(1, np.int64))
  with pytest.raises(ValueError, match="out of range"):
    tokenize.decode_to_images(tok, str(out), str(tmp_path / "dec"), progress=False)


def _command(args):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _one_error_line(res):
  lines = [line for line in res.stderr.splitlines() if line.strip()]
  assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
  return lines[0]


def test_tokenize_command_line_on_a_full_disk_then_with_room(run, folder, small_disk):
  workdir, _, _ = run
  disk = small_disk(1 << 20)
  out = os.path.join(disk, "cli")
  base = ["-m", "vqtok.tokenize", "encode", f"--tokenizer={workdir}", f"--folder={folder}"]
  base += ["--batch_size=8", "--shard_batches=1"]
  # The same command with room first: the pages metadata.json and the first shard take (the
  # metadata holds the whole config, so its size moves as fields are added).
  roomy = os.path.join(os.path.dirname(disk), "roomy")
  assert _command([*base, f"--output={roomy}"]).returncode == 0
  pages = lambda name: -(-os.path.getsize(os.path.join(roomy, name)) // 4096) * 4096
  filler = fill(disk, pages("metadata.json") + pages("tokens-00000.npz"))  # room for those two, no more
  cmd = [*base, f"--output={out}"]
  line = _one_error_line(_command(cmd))
  assert re.fullmatch(
    rf"error: writing {out}/tokens-00001.npz failed: No space left on device \(\S+ \w+ free there\)  \(--debug for"
    r" the traceback\)",
    line,
  ), line
  assert sorted(os.listdir(out)) == ["metadata.json", "tokens-00000.npz"]  # the shard written so far, whole
  os.remove(filler)
  res = _command(cmd)
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads(res.stdout[res.stdout.index("{") :])
  assert summary["shards_already_done"] == 1 and summary["encoded"] == 2
  _, idx, names = tokens_lib.read_tokens(out)
  assert len(idx) == len(set(names)) == 10


def test_eval_command_line_on_a_full_disk_then_with_room(run, small_disk):
  workdir, _, _ = run
  disk = small_disk(1 << 20)
  old = os.path.join(disk, "eval_0.json")
  with open(old, "w") as f:
    f.write('{"old": "report"}')
  filler = fill(disk, 0)
  cmd = ["eval.py", "--config", "configs/tiny.py:runlocal", f"--tokenizer={workdir}", f"--output={disk}"]
  line = _one_error_line(_command(cmd))
  assert line.startswith(f"error: writing {old} failed: No space left on device ("), line
  assert sorted(os.listdir(disk)) == ["eval_0.json", "filler"]  # the old report, whole; no temporary file
  with open(old) as f:
    assert json.load(f) == {"old": "report"}
  os.remove(filler)
  res = _command(cmd)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "Warning" not in res.stderr, res.stderr[-3000:]  # e.g. a float64 sum that JAX would make float32
  with open(old) as f:
    report = json.load(f)
  assert report["step"] == 0 and report["num_images"] == 20 and report["use_ema"] is True
  assert {"psnr", "ssim", "codebook"} <= set(report) and "rfid" not in report  # no Inception weights
  assert Image.open(os.path.join(disk, "eval_0.png")).mode == "RGB"


def test_export_writes_a_tokenizer_dir_that_everything_reads(run, tmp_path):
  import vqtok
  from vqtok.training.loop import init_from

  workdir, config, tok = run
  out = tmp_path / "tok"
  res = subprocess.run(
    [sys.executable, "-m", "vqtok.export", f"--tokenizer={workdir}", f"--output={out}"],
    cwd=ROOT, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert res.returncode == 0, res.stderr
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (8, 32, 32, 3)), jnp.float32)
  np.testing.assert_array_equal(vqtok.load_tokenizer(str(out)).encode(x), tok.encode(x))
  # eval.py on the directory alone: its own config, the report beside it.
  res = subprocess.run(
    [sys.executable, "eval.py", f"--tokenizer={out}", "--num_images=8", "--batch_size=8"],
    cwd=ROOT, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert res.returncode == 0, res.stderr
  assert json.loads((out / "eval_0.json").read_text())["num_images"] == 8
  # Fine-tuning starts from those weights: a fresh init replaced by them.
  ft = load_config(**{"init_from": str(out), "seed": 7})
  state, static = init_train_state(ft)
  shardings = jax.tree.map(lambda a: a.sharding, state)
  assert not np.array_equal(tokenizer_from_state(static, state, use_ema=False).encode(x), tok.encode(x))
  state = init_from(ft, state, static, shardings)
  for ema in (False, True):
    np.testing.assert_array_equal(tokenizer_from_state(static, state, use_ema=ema).encode(x), tok.encode(x))
  assert int(state.step) == 0
  other = load_config(**{"init_from": str(out), "model.channels": 16})
  state, static = init_train_state(other)
  with pytest.raises(ValueError, match=r"model\.channels differs"):
    init_from(other, state, static, jax.tree.map(lambda a: a.sharding, state))


def test_init_from_must_exist():
  with pytest.raises(ValueError, match="init_from='/nonexistent/tok'"):
    load_config(**{"init_from": "/nonexistent/tok"})
