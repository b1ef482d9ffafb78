"""FQGAN's semantic feature prediction: the loss against a NumPy transcription of the reference, the teacher's
class-token targets and nearest resize, and a tiny factorised tokenizer that trains with it and resumes exactly.

The reference is showlab/FQGAN tokenizer/models/clip_encoder.py (and the same
code in dino_encoder.py) ``forward``: the batch goes from [-1, 1] to [0, 1],
``F.interpolate(inp, (224, 224))`` (nearest), the teacher's mean/std; the
predicted class token ``semantic_feat[:, :1]`` and the teacher's are divided
by their norms, ``loss_mat = (pred @ teacher.T).exp()`` and ``-(diag /
row_sum).log().mean()``.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from helpers import load_config, read_losses, resume_copy
from test_alignment import _teacher_dir as _dinov2_dir

from vqtok import feature_teacher, load
from vqtok.losses import alignment
from vqtok.models import dinov2
from vqtok.quantizers import interpolate
from vqtok.training.loop import read_feature_teacher, train_and_evaluate
from vqtok.training.state import abstract_train_state
from vqtok.training.step import make_train_step

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)

# torch 2.x F.interpolate(x, size, mode="nearest") row indices (torchenv, printed once by hand).
TORCH_NEAREST = {
  (10, 7): [0, 1, 2, 4, 5, 7, 8],
  (7, 10): [0, 0, 1, 2, 2, 3, 4, 4, 5, 6],
  (13, 5): [0, 2, 5, 7, 10],
  (32, 28): [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30],
}


def _reference(pred, target):
  """clip_encoder.py CLIPVisionTower.forward's loss on float64 (B, c) class tokens."""
  p = pred / np.linalg.norm(pred, axis=-1, keepdims=True)
  t = target / np.linalg.norm(target, axis=-1, keepdims=True)
  loss_mat = np.exp(p @ t.T)
  return float(-np.log(np.diag(loss_mat) / loss_mat.sum(1)).mean())


def test_semantic_loss_matches_fqgan_infonce():
  rng = np.random.default_rng(0)
  target = rng.normal(size=(8, 12))
  pred = 0.8 * target + rng.normal(size=target.shape)
  got = alignment.semantic_loss(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32))
  np.testing.assert_allclose(float(got), _reference(pred, target), rtol=1e-5)
  # Groups: each DDP rank's batch is its own set of negatives (vq_loss.py gathers nothing).
  grouped = alignment.semantic_loss(pred, target, group=4)
  want = np.mean([_reference(pred[i : i + 4], target[i : i + 4]) for i in (0, 4)])
  np.testing.assert_allclose(float(grouped), want, rtol=1e-5)
  # Scale-free; the gradient reaches the prediction, never the teacher.
  np.testing.assert_allclose(float(alignment.semantic_loss(3.0 * pred, target)), float(got), rtol=1e-5)
  import jax

  g_pred, g_target = jax.grad(lambda a, b: alignment.semantic_loss(a, b), argnums=(0, 1))(pred, target)
  assert np.abs(np.asarray(g_pred)).sum() > 0 and not np.asarray(g_target).any()
  with pytest.raises(ValueError, match="must divide the batch of 8"):
    alignment.semantic_loss(pred, target, group=3)
  with pytest.raises(ValueError, match="must be equal"):
    alignment.semantic_loss(pred[:, :4], target)


def test_nearest_resize_is_torchs():
  for (n_in, n_out), want in TORCH_NEAREST.items():
    assert interpolate.nearest_matrix(n_in, n_out).argmax(axis=1).tolist() == want
  x = np.random.default_rng(1).normal(size=(2, 10, 13, 3)).astype(np.float32)
  got = np.asarray(interpolate.resize(jnp.asarray(x), (7, 5), "nearest"))
  np.testing.assert_array_equal(got, x[:, TORCH_NEAREST[10, 7]][:, :, TORCH_NEAREST[13, 5]])


def _clip_dir(path, width=16, grid=7):
  """A random tiny CLIP ViT (patch 4, 7 x 7 grid at 28 px: not the tokenizer's 8 x 8) as a teacher directory."""
  sizes = dict(width=width, depth=1, mlp_dim=32, num_heads=2, patch_size=4, pos_grid=grid, num_register_tokens=0)
  module = dinov2.DINOv2(**sizes, interpolate_offset=0.0, family="clip", proj_dim=8, rngs=nnx.Rngs(2))
  config = {
    "teacher": "clip",
    **sizes,
    "proj_dim": 8,
    "resize_size": 4 * grid,
    "resolution": 4 * grid,
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
  }
  return feature_teacher.save(module, ml_collections.ConfigDict(config), str(path), metadata={}, overwrite=False)


def _fqgan_tiny(teacher, **more):
  """configs/tiny.py:runlocal as a Dual FQGAN: two heads of 4-wide sub-codes, a 16-wide feature head."""
  quantizer = {
    "type": "factorized",
    "num_groups": 2,
    "disentangle_weight": 0.1,
    "quantizer": {"type": "vq", "codebook_size": 32, "l2_normalize": True},
  }
  over = {
    "feature_teacher": teacher,
    "model.code_dim": 8,
    "model.z_channels": 12,
    "model.factorized_heads": 2,
    "model.adapter_depth": 1,
    "model.adapter_num_heads": 2,
    "model.feature_head_dims": (16,),
    "model.feature_head_depth": 1,
    "loss.semantic_weight": 0.5,
    "loss.semantic_group": 4,
    "loss.vf_resize": "nearest",
    "training.num_steps": 3,
    "loss.disc_start": 100,  # one compiled step, without the GAN
    "training.checkpoint_every": 2,
    **more,
  }
  return load_config(quantizer=quantizer, **over)


def test_one_feature_teacher_serves_the_dual_fqgan_semantic_head(tmp_path):
  # Dual FQGAN: config.feature_teacher alone, without a training run (each compiles for half a minute of CI). The
  # semantic loss trains (its values, its weighted sum in the total, exact resume) in the Triple run below; one
  # teacher's pass for all feature losses (and load's feature_teacher) in test_alignment.py's DINOv2 run.
  teacher = _clip_dir(tmp_path / "teacher")
  config = _fqgan_tiny(teacher)
  # One teacher, not one per head; its 7 x 7 patch grid (the tokenizer's is 8 x 8) does not matter to a class token.
  loaded, arrays = read_feature_teacher(config)
  assert isinstance(loaded, feature_teacher.Loaded) and loaded.path == teacher and loaded.config["teacher"] == "clip"
  # The step with it, traced (not compiled): one semantic term, of the one head, with no per-head terms.
  state, static = abstract_train_state(config)
  assert len(nnx.merge(static.g_def, state.g_params, state.g_rest).encoder.feature_heads) == 1
  step = make_train_step(config, static, with_gan=False, feature_teacher=loaded)
  batch = {"image": jax.ShapeDtypeStruct((config.training.batch_size, 32, 32, 3), jnp.float32)}
  _, metrics = jax.eval_shape(step, state, batch, None, None, arrays)
  assert metrics["loss/semantic"].shape == () and not [k for k in metrics if k.startswith("loss/semantic_")]


def test_semantic_targets_and_bad_settings(tmp_path):
  teacher = _clip_dir(tmp_path / "clip")
  module, tconfig = feature_teacher.read(teacher)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  out = feature_teacher.outputs(module, tconfig, x, (-1.0, 1.0), "nearest")
  # CLIP's target is the class token before ln_post (Hugging Face hidden_states[-1]); DINOv2's after its norm.
  np.testing.assert_allclose(module.transformer.norm(out["cls_unnormed"]), out["cls"], rtol=1e-5, atol=1e-6)
  assert not np.allclose(out["cls_unnormed"], out["cls"])
  loaded = feature_teacher.Loaded(None, tconfig, teacher)
  assert feature_teacher.semantic_target(loaded, out) is out["cls_unnormed"]
  assert feature_teacher.SEMANTIC_TARGETS["dinov2"] == "cls"
  with pytest.raises(ValueError, match="semantic_weight > 0 needs feature_teacher"):
    _fqgan_tiny("")
  with pytest.raises(ValueError, match=r"loss.vf_adaptive: .* factorised encoder \(model.factorized_heads=2\)"):
    _fqgan_tiny(teacher, **{"loss.vf_weight": 0.1, "model.feature_dim": 16})
  with pytest.raises(ValueError, match="semantic_weight > 0 needs model.feature_head_dims"):
    _fqgan_tiny(teacher, **{"model.feature_head_dims": ()})
  wide = _fqgan_tiny(teacher, **{"model.feature_head_dims": (8,)})
  with pytest.raises(feature_teacher.FeatureTeacherError, match=r"16 wide, model.feature_head_dims is \(8,\)"):
    train_and_evaluate(wide, str(tmp_path / "run"), progress=False)


def _fqgan_triple_tiny(teachers, **more):
  """``_fqgan_tiny`` as a Triple: pixel, mid- and high-level sub-codes of 4, one 16-wide head per semantic one."""
  over = {
    "feature_teacher": "",
    "feature_teachers": tuple(teachers),
    "quantizer.num_groups": 3,
    "model.code_dim": 12,
    "model.factorized_heads": 3,
    "model.feature_head_dims": (16, 16),
    **more,
  }
  return _fqgan_tiny("", **over)


def test_tiny_fqgan_triple_trains_with_one_teacher_per_head_and_resumes_exactly(tmp_path):
  # FQGAN Triple's pairing: DINOv2 (32 px here) for the mid-level head, CLIP (28 px) for the high-level one.
  teachers = (_dinov2_dir(tmp_path / "dinov2"), _clip_dir(tmp_path / "clip"))
  config = _fqgan_triple_tiny(teachers)
  run = tmp_path / "run"
  final = train_and_evaluate(config, str(run), progress=False)["final_metrics"]
  losses = read_losses(str(run))
  assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values())
  # Each head's InfoNCE is about log(4) while untrained; the semantic term is their sum, weighted once.
  heads = final["loss/semantic_1"], final["loss/semantic_2"]
  assert all(0.5 * math.log(4) < h < 2 * math.log(4) for h in heads)
  assert final["loss/semantic"] == pytest.approx(sum(heads), rel=1e-6)
  total = final["reconstruction"] + final["quantizer_loss"] + 0.5 * final["loss/semantic"]
  assert final["loss"] == pytest.approx(total, rel=1e-5)
  tok, saved, _ = load.load(str(run))
  assert tuple(saved.feature_teachers) == teachers and len(tok.encoder.feature_heads) == 2
  resumed = resume_copy(run, tmp_path / "resumed", step=2)
  assert train_and_evaluate(config, str(resumed), progress=False)["start_step"] == 2
  assert read_losses(str(resumed))[3] == losses[3]  # exact on CPU
  # Head i is given teachers[i]: swapped, the step is handed them swapped (it pairs targets and heads in order).
  swapped, _ = read_feature_teacher(_fqgan_triple_tiny(teachers[::-1]))
  assert [t.path for t in swapped] == list(teachers[::-1])
  assert [t.config["teacher"] for t in swapped] == ["clip", "dinov2"]


def test_feature_teachers_bad_settings(tmp_path):
  clip = _clip_dir(tmp_path / "clip")
  with pytest.raises(ValueError, match=r"feature_teachers: 1 teacher\(s\) for 2 semantic head\(s\)"):
    _fqgan_triple_tiny((clip,))
  with pytest.raises(ValueError, match=r"feature_teachers\[1\]='nowhere': no such feature-teacher directory"):
    _fqgan_triple_tiny((clip, "nowhere"))
  narrow = _fqgan_triple_tiny((clip, clip), **{"model.feature_head_dims": (16, 8)})
  with pytest.raises(feature_teacher.FeatureTeacherError, match=r"feature_teachers\[1\]=.*feature_head_dims\[1\] is 8"):
    train_and_evaluate(narrow, str(tmp_path / "run"), progress=False)
  assert not (tmp_path / "run").exists()
