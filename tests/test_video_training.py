"""train.py trains the tiny causal video preset (configs/video_tiny.py) on the bundled clips and resumes exactly."""

import math
import os
import shutil

import pytest
from helpers import preset, read_losses

from vqtok import config as config_lib
from vqtok.training.loop import train_and_evaluate

pytest.importorskip("av")
pytest.importorskip("skvideo")

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)


def test_video_tiny_trains_and_resumes_exactly(tmp_path):
  # 4 steps with checkpoints at 2 and 4, eval (per-frame PSNR on the held-out clip) and the image at the end.
  config = config_lib.validate_config(preset("video_tiny", "runlocal", **{"training.eval_every": 4}))
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
