"""train.py trains the tiny causal video preset (configs/video_tiny.py) on the bundled clips and resumes exactly.

With ``video.image_every`` the batches mix clips and the bundled photos as one-frame clips (joint training).
"""

import math
import os
import shutil

import numpy as np
import pytest
from helpers import preset, read_losses

from vqtok import config as config_lib
from vqtok.data import pipeline
from vqtok.training.loop import train_and_evaluate

pytest.importorskip("av")
pytest.importorskip("skvideo")

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)


def test_joint_batches_put_images_as_one_frame_clips_every_kth_batch_and_resume():
  config = config_lib.validate_config(preset("video_tiny", "runlocal", **{"video.image_every": 3}))
  it = pipeline.make_dataset(config, split="train", batch_size=8)
  batches = [next(it) for _ in range(6)]
  assert [b["image"].shape[1] for b in batches] == [5, 5, 1, 5, 5, 1]
  assert all(b["image"].shape[2:] == (16, 16, 3) for b in batches)
  # The clip stream is the plain one with the image batches slotted in: clip batch 2 is batch 3 here.
  plain = pipeline.make_dataset(preset("video_tiny", "runlocal"), split="train", batch_size=8)
  clips = [next(plain)["image"] for _ in range(4)]
  np.testing.assert_array_equal(batches[3]["image"], clips[2])
  # The images are the photos' stream (config.data), not frames of the clips.
  assert not any(np.array_equal(batches[2]["image"][:, 0], c[:, 0]) for c in clips)
  again = pipeline.make_dataset(config, split="train", batch_size=8)
  again.set_state(pipeline.position(it))
  a, b = next(it)["image"], next(again)["image"]
  assert a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize(
  "bad, match", [({"video.image_every": 1}, "images only"), ({"video.image_every": -2}, "image_every")]
)
def test_joint_batches_refuse_bad_values(bad, match):
  with pytest.raises(ValueError, match=match):
    config_lib.validate_config(preset("video_tiny", "runlocal", **bad))
  with pytest.raises(ValueError, match="needs video.source"):
    config_lib.validate_config(preset("tiny", "runlocal", **{"video.image_every": 2}))


def test_video_tiny_trains_and_resumes_exactly(tmp_path):
  # 4 steps with checkpoints at 2 and 4, eval (per-frame PSNR on the held-out clip) and the image at the end;
  # joint batches: steps 2 and 4 train on photos as one-frame clips (a second compile), 1 and 3 on clips.
  overrides = {"training.eval_every": 4, "video.image_every": 2}
  config = config_lib.validate_config(preset("video_tiny", "runlocal", **overrides))
  whole = str(tmp_path / "whole")
  summary = train_and_evaluate(config, whole, progress=False)
  want = read_losses(whole)
  assert sorted(want) == [1, 2, 3, 4] and all(math.isfinite(v) for v in want.values())
  assert summary["evals"][-1]["step"] == 4 and 5 < summary["evals"][-1]["psnr"] < 60
  # The same run stopped after its step-2 checkpoint, then resumed: the same losses, exactly (CPU).
  resumed = str(tmp_path / "resumed")
  shutil.copytree(whole, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
  summary = train_and_evaluate(config, resumed, progress=False)
  assert summary["start_step"] == 2
  got = read_losses(resumed)
  assert [got[s] for s in (3, 4)] == [want[s] for s in (3, 4)]
