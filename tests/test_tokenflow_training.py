"""configs/tokenflow_clipb.py: TokenFlow's training recipe on the imported architecture.

The full preset is the imported model (the same parameters, trained at 224 px)
and validates once its files are given; its reduced copy (``:runlocal``) takes
a training step with the semantic loss against a tiny random CLIP teacher:
1 - cos between the semantic decoder's output and the teacher's projected
patch tokens (tokenflow/tokenizer/vq_loss.py ``calculate_clip_rec_loss``).
"""

import importlib
import math

import numpy as np
import pytest
from flax import nnx
from test_pretrained_tokenflow import FULL_CLIPB
from test_semantic_loss import _clip_dir

from vqtok import config as config_lib
from vqtok import feature_teacher, models
from vqtok.training.loop import train_and_evaluate

PRESET = importlib.import_module("configs.tokenflow_clipb")
FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py): a training step, no parity


def test_preset_is_the_imported_architecture_and_validates_with_its_files(tmp_path):
  c = PRESET.get_config()
  with pytest.raises(ValueError, match="lpips_weights"):
    config_lib.validate_config(c)
  (tmp_path / "lpips.npz").write_bytes(b"")
  c.loss.lpips_weights = str(tmp_path / "lpips.npz")
  with pytest.raises(ValueError, match="feature_rec_weight > 0 needs feature_teacher"):
    config_lib.validate_config(c)
  c.feature_teacher = str(tmp_path)
  config_lib.validate_config(c)
  abstract = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  count = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param)))
  # The converter's model (tests/test_pretrained_tokenflow.py): the reference's count plus the
  # semantic decoder's zero key biases (3 blocks x 768) that the reference adds as constants.
  assert count == FULL_CLIPB + 3 * 768
  assert abstract.token_shape == (14, 14) and abstract.quantizer.num_tokens == 561


def test_reduced_preset_takes_a_training_step_with_the_semantic_loss(tmp_path):
  teacher = _clip_dir(tmp_path / "clip", grid=8)  # 32 px, patch 4: the reduced tokenizer's 8 x 8 grid
  c = PRESET.get_config("runlocal")
  c.feature_teacher = teacher
  config_lib.validate_config(c)
  final = train_and_evaluate(c, str(tmp_path / "run"), progress=False)["final_metrics"]
  # Untrained, the predicted and the teacher's projected features are about orthogonal: 1 - cos near 1.
  assert 0.5 < final["loss/feature_rec"] < 1.5
  assert math.isfinite(final["loss"]) and final["loss"] > final["reconstruction"] + final["loss/feature_rec"] - 1e-4
  # The target's width is the teacher's projection (8), not its width (16); a teacher without one is refused.
  assert feature_teacher.read(teacher)[1]["proj_dim"] == c.model.semantic_feature_dim == 8
  c.loss.feature_rec_target = "patches"
  with pytest.raises(feature_teacher.FeatureTeacherError, match="16 wide, model.semantic_feature_dim is 8"):
    train_and_evaluate(c, str(tmp_path / "run2"), progress=False)
