"""TiTok's two-stage training on CPU: a tiny TiTok learns a tiny random MaskGIT VQGAN's codes
(stage 1), then fine-tunes its decoder with encoder and quantizer frozen (stage 2); both resume exactly."""

import json
import math
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT, load_config, preset, read_losses

from vqtok import config as config_lib
from vqtok import files, models, pretrained, tokenizer_dir
from vqtok.data import pipeline
from vqtok.load import load_tokenizer
from vqtok.training import teacher as teacher_lib
from vqtok.training import workdir as workdir_lib
from vqtok.training.checkpoint import Checkpointer
from vqtok.training.loop import train_and_evaluate
from vqtok.training.state import abstract_train_state, init_train_state

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)

STEPS = 4  # checkpoints at 2 and 4; the resume starts from 2

# A tiny MaskGIT-family VQGAN (f4, 16 codes) and a tiny TiTok over it (patch 4 = the VQGAN's factor).
TEACHER = {
  "image_size": 32,
  "model.channels": 8,
  "model.channel_mult": (1, 2),
  "model.num_res_blocks": 1,
  "model.norm_groups": 4,
  "model.code_dim": 8,
  "loss.perceptual_weight": 0.0,  # the preset's recipe has LPIPS; a teacher is never trained
}
MODEL = {
  "image_size": 32,
  "model.width": 32,
  "model.depth": 1,
  "model.mlp_dim": 64,
  "model.num_heads": 2,
  "model.patch_size": 2,
  "model.num_latent_tokens": 4,
  "model.code_dim": 4,
  "model.proxy_codebook_size": 16,
  "model.proxy_code_dim": 8,
  "model.proxy_decoder": ml_collections.ConfigDict(
    {"channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "norm_groups": 4}
  ),
  "discriminator.channels": 8,
  "discriminator.num_layers": 2,
  "training.batch_size": 8,
  "training.mesh": (1, 1),  # one device: half the time of eight (sharding is tested elsewhere)
  "training.num_steps": STEPS,
  "training.log_every": 1,
  "training.eval_every": 0,
  "training.image_every": 0,
  "training.checkpoint_every": 2,
  "training.ema_decay": 0.9,
  "optimizer.warmup_steps": 1,
  "optimizer.lr": 3e-3,
  "optimizer.disc_lr": 1e-3,
  "eval.batch_size": 8,
}


def _stage(stage, **overrides):
  c = preset("titok_s128", stage, **MODEL, **overrides)
  c.quantizer.codebook_size = 16
  return config_lib.validate_config(c)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
  c = preset("maskgit_vqgan", None, **TEACHER)
  c.quantizer.codebook_size = 16
  tok = models.build_tokenizer(config_lib.validate_config(c), rngs=nnx.Rngs(3))
  return tokenizer_dir.save_tokenizer(tok, c, str(tmp_path_factory.mktemp("t") / "teacher"))


_STATES = {}


def _state(config, workdir):
  """The newest checkpoint's whole train state (each restored once, one abstract state per config)."""
  if workdir not in _STATES:
    if id(config) not in _STATES:
      _STATES[id(config)] = abstract_train_state(config)[0]
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    _STATES[workdir] = ckpt.restore(_STATES[id(config)])
    ckpt.close()
  return _STATES[workdir]


def _arrays(config, workdir, *, ema):
  """The newest checkpoint's tokenizer parameters (EMA or raw) by dotted name."""
  state = _state(config, workdir)
  return {
    files.name(p): np.asarray(v)
    for p, v in jax.tree_util.tree_flatten_with_path(state.ema if ema else state.g_params)[0]
  }


def _resume_from_2(config, full, tmp):
  """A copy of the finished run ``full`` cut back to its step-2 checkpoint, then resumed."""
  cut = str(tmp)
  shutil.copytree(full, cut)
  shutil.rmtree(os.path.join(cut, "checkpoints", str(STEPS)))
  summary = train_and_evaluate(config, cut, progress=False)
  assert summary["start_step"] == 2 and summary["final_step"] == STEPS
  return cut


def _assert_same_run(full, cut, config):
  want, got = read_losses(full), read_losses(cut)
  assert [got[s] for s in (3, 4)] == [want[s] for s in (3, 4)]  # exact on CPU
  # The whole state: both models, EMA, optimizer moments (frozen parts have none), LeCam means, step.
  a, b = jax.tree_util.tree_flatten_with_path(_state(config, full))[0], jax.tree.leaves(_state(config, cut))
  assert len(a) == len(b)
  for (path, x), y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=files.name(path))


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, teacher_dir):
  config = _stage("stage1", teacher=teacher_dir)
  workdir = str(tmp_path_factory.mktemp("s1") / "run")
  summary = train_and_evaluate(config, workdir, progress=False)
  return config, workdir, summary


def test_another_freeze_list_on_a_run_is_refused(stage1):
  config, workdir, _ = stage1
  workdir_lib.check_identity(config, workdir)  # the same config resumes
  other = _stage("stage1", teacher=config.teacher, **{"training.freeze": ("decoder.pixel",)})
  with pytest.raises(ValueError, match=r"training.freeze=\('decoder.pixel', 'decoder.codebook'\), this config has"):
    workdir_lib.check_identity(other, workdir)


@pytest.fixture(scope="module")
def stage2(tmp_path_factory, stage1):
  _, s1, _ = stage1
  # Perceptual term off (LPIPS weights are tested elsewhere); the GAN from step 0.
  config = _stage("stage2", init_from=s1, **{"loss.perceptual_weight": 0.0, "loss.disc_start": 0})
  workdir = str(tmp_path_factory.mktemp("s2") / "run")
  summary = train_and_evaluate(config, workdir, progress=False)
  return config, workdir, summary


def _by_prefix(arrays, *prefixes):
  return {k: v for k, v in arrays.items() if k.startswith(prefixes)}


def test_stage1_learns_the_teachers_codes(stage1, teacher_dir):
  config, workdir, summary = stage1
  teacher = load_tokenizer(teacher_dir)
  t_def, t_state = nnx.split(teacher)
  batch = next(iter(pipeline.make_dataset(config, split="train", batch_size=8, seed=config.seed)))["image"]

  @jax.jit  # one program: eager, the tiny models cost seconds of op-by-op dispatch
  def first_step(t_state, x):
    """The initial student (built as init_train_state builds it) and its CE against the teacher's encode()."""
    teacher = nnx.merge(t_def, t_state)
    student = models.build_tokenizer(config, rngs=nnx.Rngs(config.seed))
    teacher_lib.fill_proxy_decoder(student, teacher, teacher_dir)
    z_q, _ = student.quantize(x, train=True)
    ce, _ = teacher_lib.proxy_code_loss(student.proxy_logits(z_q), teacher.encode(x))
    return ce, nnx.state(student, nnx.Param).to_pure_dict()

  want, initial = first_step(t_state, batch)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [r for r in map(json.loads, f) if "loss/proxy_code" in r]
  ce = {r["step"]: r["loss/proxy_code"] for r in records}
  np.testing.assert_allclose(ce[1], float(want), rtol=1e-4)
  assert ce[STEPS] < ce[1] - 0.1, ce  # it learns
  final = summary["final_metrics"]
  assert "loss/l1" not in final and 0 <= final["proxy_code_accuracy"] <= 1  # no pixel decoder in the step
  # The teacher's codebook and decoder were copied in and stayed bit-identical (weights and EMA).
  t = files.arrays(teacher)
  codes = np.asarray(teacher.quantizer.indices_to_codes(jax.numpy.arange(16)))
  initial = {files.name(p): v for p, v in jax.tree_util.tree_flatten_with_path(initial)[0]}
  for ema in (True, False):
    got = _arrays(config, workdir, ema=ema)
    np.testing.assert_array_equal(got["decoder.codebook"], codes)
    pixel = _by_prefix(got, "decoder.pixel.")
    assert pixel and all(np.array_equal(v, t["decoder." + k[len("decoder.pixel.") :]]) for k, v in pixel.items())
    trained = _by_prefix(got, "encoder.", "quantizer.", "decoder.vit.")
    assert all(not np.array_equal(v, initial[k]) for k, v in trained.items() if k.endswith("kernel"))


def test_stage1_resumes_exactly(stage1, tmp_path):
  config, full, _ = stage1
  _assert_same_run(full, _resume_from_2(config, full, tmp_path / "cut"), config)


def test_stage2_trains_the_decoder_only(stage1, stage2):
  c1, s1, _ = stage1
  config, workdir, summary = stage2
  final = summary["final_metrics"]
  assert "d_loss" in final and "loss/l2" in final and "loss/proxy_code" not in final
  assert all(math.isfinite(v) for v in read_losses(workdir).values())
  start = _arrays(c1, s1, ema=True)  # init_from takes a run's EMA weights
  for ema in (True, False):
    got = _arrays(config, workdir, ema=ema)
    frozen = _by_prefix(got, "encoder.", "quantizer.")
    assert frozen and all(np.array_equal(v, start[k]) for k, v in frozen.items())
    for prefix in ("decoder.vit.", "decoder.pixel.", "decoder.codebook"):
      assert any(not np.array_equal(v, start[k]) for k, v in _by_prefix(got, prefix).items()), prefix


def test_stage2_resumes_exactly(stage2, tmp_path):
  config, full, _ = stage2
  _assert_same_run(full, _resume_from_2(config, full, tmp_path / "cut"), config)


def test_bad_teacher_is_one_clear_error(tmp_path, teacher_dir):
  wrong = preset("maskgit_vqgan", None, **TEACHER)
  wrong.quantizer.codebook_size = 8
  tok = models.build_tokenizer(config_lib.validate_config(wrong), rngs=nnx.Rngs(0))
  wrong_dir = tokenizer_dir.save_tokenizer(tok, wrong, str(tmp_path / "wrong"))
  config = _stage("stage1", teacher=wrong_dir)
  student = nnx.eval_shape(lambda: models.build_tokenizer(config, rngs=nnx.Rngs(0)))
  with pytest.raises(teacher_lib.TeacherError, match="8 codes, model.proxy_codebook_size is 16"):
    teacher_lib.load(config, student)
  with pytest.raises(teacher_lib.TeacherError, match="8 codes"):
    train_and_evaluate(config, str(tmp_path / "run"), progress=False)
  assert not os.path.exists(tmp_path / "run")  # refused before anything was written
  corrupt = str(tmp_path / "corrupt")
  shutil.copytree(teacher_dir, corrupt)
  with open(os.path.join(corrupt, tokenizer_dir.WEIGHTS), "wb") as f:
    f.write(b"not safetensors")
  with pytest.raises(ValueError, match="model.safetensors: unreadable"):
    teacher_lib.load(_stage("stage1", teacher=corrupt), student)
  with pytest.raises(ValueError, match="loss.proxy_code_weight > 0 needs teacher"):
    _stage("stage1")
  with pytest.raises(ValueError, match=r"config field teacher='/no/such': no such tokenizer directory"):
    _stage("stage1", teacher="/no/such")
  with pytest.raises(ValueError, match="training.freeze: 'decoder.nope' names no parameter"):
    init_train_state(_stage("stage2", **{"training.freeze": ("decoder.nope",), "loss.perceptual_weight": 0.0}))
  with pytest.raises(ValueError, match="freezes the encoder but init_from is empty"):
    _stage("stage2", **{"loss.perceptual_weight": 0.0})  # stage 2 without the stage-1 weights


@pytest.mark.slow
def test_converted_titok_fine_tunes(tmp_path):
  # The imported tokenizer (test_titok.py's reduced file) is trainable: init_from its directory, GAN
  # from step 0 (the adaptive weight reads the pixel decoder's last layer), finite losses.
  tok, config, meta = pretrained.convert("titok", os.path.join(ROOT, "tests", "goldens", "titok", "reduced.bin"))
  tok_dir = tokenizer_dir.save_tokenizer(tok, config, str(tmp_path / "tok"), metadata=meta)
  c = load_config(**{"training.num_steps": 2, "loss.disc_start": 0})
  c.model, c.quantizer, c.image_size = config.model, config.quantizer, config.image_size
  c.init_from = tok_dir
  summary = train_and_evaluate(config_lib.validate_config(c), str(tmp_path / "run"), progress=False)
  losses = read_losses(str(tmp_path / "run"))
  assert sorted(losses) == [1, 2] and all(math.isfinite(v) for v in losses.values())
  assert "gan_weight" in summary["final_metrics"]
