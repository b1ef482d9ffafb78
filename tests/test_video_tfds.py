"""TFDS video datasets by name (``video.source="tfds"``, ``eval.py --video=tfds:NAME[:SPLIT]``).

A tiny TFDS video dataset (random frames, PNG-encoded by TFDS, so lossless) is prepared in the
array_record format, as ``ucf101`` would be; clips must be exactly the frames TFDS stored.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, preset
from test_eval_video import _eval, tok, video_config  # noqa: F401  (tok: the module-scoped tokenizer fixture)

from vqtok import config as config_lib
from vqtok import tokenizer_dir
from vqtok import tokens as tokens_lib
from vqtok.data import pipeline, video

FAST_COMPILE = True

LENGTHS = {"train": (12, 15, 18), "test": (9, 11)}  # frames of each example


def frames(split, i):
  rng = np.random.default_rng(100 * ("train", "test").index(split) + i)
  return rng.integers(0, 256, (LENGTHS[split][i], 24, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  tfds = pytest.importorskip("tensorflow_datasets")

  class VqtokTestVideos(tfds.core.GeneratorBasedBuilder):
    """Tiny video dataset: 3 train and 2 test videos of 24x32 random frames, a class label each."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      features = {
        "video": tfds.features.Video(shape=(None, 24, 32, 3)),
        "label": tfds.features.ClassLabel(num_classes=2),
      }
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in LENGTHS}

    def _generate_examples(self, split):
      for i in range(len(LENGTHS[split])):
        yield i, {"video": frames(split, i), "label": i % 2}

  root = tmp_path_factory.mktemp("tfds_video")
  tfds.builder("vqtok_test_videos", data_dir=str(root), file_format="array_record").download_and_prepare()
  return str(root)


def test_clips_are_the_stored_frames(tfds_dir):
  src = video.TfdsVideoSource(
    "vqtok_test_videos", split="train", data_dir=tfds_dir, num_frames=5, stride=2, clips_per_video=2
  )
  assert len(src) == 6  # 3 videos x 2 clips of span 9; the first video (12 frames) has room for one
  np.testing.assert_array_equal(src[0], frames("train", 0)[0:9:2])
  np.testing.assert_array_equal(src[5], frames("train", 2)[9:18:2])
  assert src.describe(5) == "vqtok_test_videos/train/00000002@9" and src.label(5, "label") == 0
  with pytest.raises(ValueError, match=r"00000000@9: 12 frames, too short for a clip of 5 frames with stride 2"):
    src[1]
  resized = video.TfdsVideoSource("vqtok_test_videos", split="test", data_dir=tfds_dir, num_frames=5, size=16)
  assert resized[1].shape == (5, 16, 16, 3) and resized.protocol()["clips"] == 2
  with pytest.raises(ValueError, match=r"feature 'label' is ClassLabel, not a Video \(video.key\)"):
    video.TfdsVideoSource("vqtok_test_videos", split="train", data_dir=tfds_dir, key="label", num_frames=5)
  with pytest.raises(ValueError, match=r"has no split 'validation'"):
    video.TfdsVideoSource("vqtok_test_videos", split="validation", data_dir=tfds_dir, num_frames=5)


def test_training_batches_and_config_checks(tfds_dir):
  over = {"video.source": "tfds", "video.name": "vqtok_test_videos", "video.path": tfds_dir, "video.stride": 1}
  config = config_lib.validate_config(preset("video_tiny", "runlocal", **over))
  it = pipeline.make_dataset(config, split="train", batch_size=8)
  batch = next(it)
  assert batch["image"].shape == (8, 5, 16, 16, 3) and batch["image"].dtype == np.float32
  with pytest.raises(ValueError, match="needs video.name"):
    config_lib.validate_config(preset("video_tiny", "runlocal", **{**over, "video.name": ""}))
  with pytest.raises(ValueError, match="TFDS videos do not keep"):
    config_lib.validate_config(preset("video_tiny", "runlocal", **{**over, "video.fps": 8.0}))


def test_eval_command_on_a_tfds_video_dataset(tok, tfds_dir, tmp_path):  # noqa: F811
  c = video_config(frames=5, clips=1)
  c.video.source = ""
  path = tokenizer_dir.save_tokenizer(tok, c, str(tmp_path / "tok"))
  out = tmp_path / "report"
  args = (f"--tokenizer={path}", "--video=tfds:vqtok_test_videos", f"--data_dir={tfds_dir}", "--batch_size=8")
  res = _eval(*args, f"--output={out}")
  assert res.returncode == 0, res.stderr
  (name,) = [n for n in out.iterdir() if n.suffix == ".json"]
  report = json.loads(name.read_text())
  p = report["protocol"]
  assert report["num_clips"] == 2 and p["dataset"] == "TFDS vqtok_test_videos" and p["split"] == "test"
  res = _eval(*args, "--fps=8", f"--output={tmp_path / 'no'}")
  assert res.returncode != 0 and res.stderr.strip().count("\n") == 0 and "TFDS videos do not keep" in res.stderr
  assert not (tmp_path / "no").exists()


def test_tokenize_encodes_a_tfds_video_dataset_with_its_labels(tok, tfds_dir, tmp_path):  # noqa: F811
  c = video_config(frames=5, clips=1)
  c.video.source = ""
  path = tokenizer_dir.save_tokenizer(tok, c, str(tmp_path / "tok"))
  out = tmp_path / "vtokens"
  cmd = [sys.executable, "-m", "vqtok.tokenize", "encode", f"--tokenizer={path}", f"--output={out}", "--batch_size=8"]
  cmd += ["--videos=tfds:vqtok_test_videos:train", f"--data_dir={tfds_dir}", "--num_frames=5", "--stride=2"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr
  meta, rows = tokens_lib.read_rows(str(out))
  assert meta["labels"] == {"from": "feature:label", "classes": ["0", "1"]}  # the default --label_key, found
  np.testing.assert_array_equal(rows["labels"], [0, 1, 0])
  assert rows["indices"].shape == (3, 3, 4, 4) and meta["video"]["num_frames"] == 5
  assert list(rows["names"]) == [f"vqtok_test_videos/train/0000000{i}@0" for i in range(3)]


def test_tfds_spec_reads_name_and_split_with_the_callers_default():
  from vqtok.data import sources

  assert sources.tfds_spec("tfds:ucf101", "test") == ("ucf101", "test")
  assert sources.tfds_spec("tfds:mnist:3.0.1", "test") == ("mnist", "3.0.1")  # the first ":" ends the name
  assert sources.tfds_spec("tfds:imagenet2012:validation[:100]", "train") == ("imagenet2012", "validation[:100]")
  assert sources.tfds_spec("runs/videos", "test") is None and sources.tfds_spec(None, "test") is None
