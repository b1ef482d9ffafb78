"""Multi-host eval and tokenization: each process takes its share, the results combine.

The real test runs two CPU processes on this machine joined by
``jax.distributed`` (4 fake devices each) and compares them with one process
over 8 devices: token rows (sorted by image name) and every metric of the
eval report must be equal.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

from vqtok import data as data_lib
from vqtok import tokenize
from vqtok import tokens as tokens_lib
from vqtok.data import pipeline
from vqtok.evaluation import fid as fid_lib
from vqtok.evaluation.report import evaluate

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)


def _rows(directory):
  """All token rows of a directory, sorted by image name: (names, indices, source_index)."""
  names, idx, src = [], [], []
  for f in sorted(os.listdir(directory)):
    if f.startswith("tokens-"):
      with np.load(os.path.join(directory, f)) as z:
        names += list(z["names"])
        idx.append(z["indices"])
        src.append(z["source_index"])
  order = np.argsort(names)
  return np.asarray(names)[order], np.concatenate(idx)[order], np.concatenate(src)[order]


def test_feature_stats_merge_equals_one_set():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(23, 6)) * [1, 2, 3, 4, 5, 6] + 10
  parts = [feats[:9], feats[9:9], feats[9:20], feats[20:]]  # one process saw no image
  packed = []
  for p in parts:
    s = fid_lib.FeatureStats()
    if len(p):
      s.update(p)
    packed.append(s.to_array(6))
  merged = fid_lib.FeatureStats.merged(np.stack(packed))
  assert merged.count == 23
  np.testing.assert_allclose(merged.mean(), feats.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(merged.covariance(), np.cov(feats, rowvar=False), rtol=1e-10)
  with pytest.raises(ValueError, match="dimension 6, expected 5"):
    s.to_array(5)


@pytest.mark.parametrize("num,batch,processes", [(10, 8, 2), (20, 8, 4), (3, 8, 2), (16, 4, 1)])
def test_eval_shares_cover_every_image_once(num, batch, processes):
  config = __import__("helpers").load_config()
  src = data_lib.SampleSource("eval")
  seen = []
  for p in range(processes):
    it = pipeline.make_dataset(
      config, split="eval", batch_size=batch, source=src, num_images=num, process_index=p, process_count=processes
    )
    mine = [int(i) for b in it for i, v in zip(b["index"], b["valid"]) if v]
    assert len(mine) == pipeline.eval_share(num, batch, p, processes)
    seen += mine
  assert sorted(seen) == list(range(num))


def test_encode_in_shares_equals_one_process_and_resumes_per_process(run, tmp_path):
  _, config, tok = run  # encodes the 20 held-out sample photos
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  kw = dict(batch_size=16, shard_batches=1, progress=False)  # 8 rows per process: one per device
  tokenize.encode_to_files(config, tok, 0, one, **kw)
  for p in (0, 1):
    got = tokenize.encode_to_files(config, tok, 0, two, process_index=p, process_count=2, **kw)
    assert got["encoded"] == pipeline.eval_share(20, 16, p, 2) == (12, 8)[p]
  files = sorted(f for f in os.listdir(two) if f.startswith("tokens-"))
  assert files == [tokens_lib.shard_name(k, p, 2) for k in range(2) for p in (0, 1)]
  for a, b in zip(_rows(one), _rows(two)):
    np.testing.assert_array_equal(a, b)
  # Process 0 lost its last shard (images 16-19): only process 0 encodes, only that shard.
  os.remove(os.path.join(two, tokens_lib.shard_name(1, 0, 2)))
  again = [tokenize.encode_to_files(config, tok, 0, two, process_index=p, process_count=2, **kw) for p in (0, 1)]
  assert [(g["encoded"], g["shards_already_done"]) for g in again] == [(4, 1), (0, 2)]
  for a, b in zip(_rows(one), _rows(two)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="encoded by 2 process"):
    tokenize.encode_to_files(config, tok, 0, two, **kw)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(args):
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  procs = [
    subprocess.Popen(
      [sys.executable, *args, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={p}"],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
    )  # fmt: skip
    for p in range(2)
  ]
  outs = [p.communicate(timeout=300)[0].decode() for p in procs]
  assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
  return outs


def test_two_processes_encode_and_evaluate_like_one(run, folder, tmp_path):
  workdir, config, tok = run
  folder = shutil.copytree(folder, tmp_path / "images")
  (folder / "broken.png").write_bytes(b"not a PNG")  # skipped by both processes, reported once
  folder = str(folder)
  config = config.copy_and_resolve_references()
  config.data.source, config.data.path = "folder", folder
  # One process over 8 devices, in this process: what the command lines do with one process.
  tokenize.encode_to_files(config, tok, 0, str(tmp_path / "one"), batch_size=8, progress=False)
  want, _ = evaluate(config, tok, batch_size=8, progress=False)

  common = [f"--tokenizer={workdir}", f"--folder={folder}", "--batch_size=8"]
  _two_processes(["-m", "vqtok.tokenize", "encode", *common, f"--output={tmp_path / 'two'}"])
  assert {f for f in os.listdir(tmp_path / "two") if f.startswith("tokens-")} == {
    "tokens-00000-p000.npz", "tokens-00000-p001.npz"
  }  # fmt: skip
  for a, b in zip(_rows(tmp_path / "one"), _rows(tmp_path / "two")):
    np.testing.assert_array_equal(a, b)
  _two_processes(["eval.py", *common, f"--output={tmp_path / 'eval2'}"])
  assert sorted(os.listdir(tmp_path / "eval2")) == ["eval_0.json", "eval_0.png"]  # process 0 alone wrote them
  got = json.loads((tmp_path / "eval2" / "eval_0.json").read_text())
  assert (want["num_processes"], got["num_processes"]) == (1, 2)
  assert got["num_images"] == want["num_images"] == 10
  # The sums are combined exactly (float64 bytes); what is left is float32 round-off of
  # the reconstructions themselves (XLA's CPU programs for 8 and for 4 devices differ).
  for key in ("psnr", "ssim"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
  assert got["codebook"] == want["codebook"]
  assert [name for name, _ in got["skipped_images"]] == [name for name, _ in want["skipped_images"]] == ["broken.png"]
