"""VA-VAE's vision-foundation loss: the maths against a NumPy transcription of the reference, and a tiny run.

The NumPy reference follows hustvl/LightningDiT
vavae/ldm/modules/losses/contperceptual.py line by line, in its (B, C, H, W)
layout: ``F.normalize`` over channels, ``einsum('bci,bcj->bij')``,
``F.cosine_similarity(aux_feature, z)`` over channels (each vector divided by
its norm clamped at 1e-8).
"""

import json
import math
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT, load_config, read_losses, resume_copy
from PIL import Image

from vqtok import config as config_lib
from vqtok import feature_teacher, load, models
from vqtok.data import pipeline, transforms
from vqtok.evaluation import semantic
from vqtok.evaluation.report import evaluate
from vqtok.losses import alignment
from vqtok.models import dinov2, vit
from vqtok.training import step as step_lib
from vqtok.training.loop import train_and_evaluate

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)


def _reference(z, aux, distmat_margin, cos_margin, distmat_weight=1.0, cos_weight=1.0):
  """contperceptual.py's vf_loss on NCHW float64 arrays."""
  b, c = z.shape[:2]
  z_flat, aux_flat = z.reshape(b, c, -1), aux.reshape(b, c, -1)
  norm = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  z_norm, aux_norm = norm(z_flat), norm(aux_flat)
  z_cos_sim = np.einsum("bci,bcj->bij", z_norm, z_norm)
  aux_cos_sim = np.einsum("bci,bcj->bij", aux_norm, aux_norm)
  diff = np.abs(z_cos_sim - aux_cos_sim)
  vf_loss_1 = np.maximum(diff - distmat_margin, 0).mean()
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
  cos = (unit(aux) * unit(z)).sum(axis=1)
  vf_loss_2 = np.maximum(1 - cos_margin - cos, 0).mean()
  return vf_loss_1 * distmat_weight + vf_loss_2 * cos_weight, vf_loss_1, vf_loss_2


@pytest.mark.parametrize("margins", [(0.25, 0.5), (0.0, 0.0), (0.1, 0.3)])
def test_vf_loss_matches_the_reference(margins):
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(2, 4, 5, 12))
  # Latents partly aligned with the features, so both hinges are active on some positions only.
  z = 0.7 * feats + rng.normal(size=feats.shape)
  nchw = lambda a: np.transpose(a, (0, 3, 1, 2))
  want, d, c = _reference(nchw(z), nchw(feats), *margins, distmat_weight=2.0, cos_weight=0.5)
  got, parts = alignment.vf_loss(
    jnp.asarray(z, jnp.float32),
    jnp.asarray(feats, jnp.float32),
    distmat_margin=margins[0],
    cos_margin=margins[1],
    distmat_weight=2.0,
    cos_weight=0.5,
  )
  assert d > 0 and c > 0
  np.testing.assert_allclose(float(parts["vf_distmat"]), d, rtol=1e-5)
  np.testing.assert_allclose(float(parts["vf_cos"]), c, rtol=1e-5)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  # Identical directions: both parts vanish (a positive scale changes no cosine).
  zero, _ = alignment.vf_loss(3.0 * feats, feats, distmat_margin=0.0, cos_margin=0.0)
  assert abs(float(zero)) < 1e-6
  with pytest.raises(ValueError, match="differ in shape"):
    alignment.vf_loss(z[:, :2], feats, distmat_margin=0.0, cos_margin=0.0)


def _teacher_dir(path, width=16):
  """A random tiny DINOv2 (patch 4, 8 x 8 grid at 32 px) as a feature-teacher directory."""
  module = dinov2.DINOv2(width=width, depth=1, mlp_dim=32, num_heads=2, patch_size=4, pos_grid=8, rngs=nnx.Rngs(1))
  config = {
    "teacher": "dinov2",
    "width": width,
    "depth": 1,
    "mlp_dim": 32,
    "num_heads": 2,
    "patch_size": 4,
    "pos_grid": 8,
    "num_register_tokens": 0,
    "interpolate_offset": 0.1,
    "resize_size": 32,
    "resolution": 32,
    "mean": list(dinov2.IMAGENET_MEAN),
    "std": list(dinov2.IMAGENET_STD),
  }
  return feature_teacher.save(module, ml_collections.ConfigDict(config), str(path), metadata={}, overwrite=False)


def test_tiny_run_with_a_dinov2_teacher(tmp_path):
  teacher = _teacher_dir(tmp_path / "teacher")
  over = {
    "feature_teacher": teacher,
    "model.feature_dim": 16,
    "loss.vf_weight": 0.1,
    # VQ-KD's feature reconstruction beside it (on the same projection: VQ-KD's ViT decoder before the task
    # layer), so that one run (one compiled step) shows both, and that both resume exactly.
    "loss.feature_rec_weight": 1.0,
    "model.feature_head_hidden": 8,
    "model.feature_head_blocks": 1,
    "model.feature_head_num_heads": 2,
    "training.num_steps": 3,
    "loss.disc_start": 100,  # one compiled step, without the GAN
    "training.checkpoint_every": 2,
  }
  summary = train_and_evaluate(load_config(**over), str(tmp_path / "run"), progress=False)
  losses = read_losses(str(tmp_path / "run"))
  assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values())
  final = summary["final_metrics"]
  assert final["loss/vf"] > 0 and final["vf_weight"] > 0 and 0 < final["loss/feature_rec"] < 2
  assert math.isclose(final["loss/vf"], final["loss/vf_distmat"] + final["loss/vf_cos"], rel_tol=1e-5)
  # VQ-KD's term is added with its weight beside reconstruction and the quantizer's loss; VF's with its adaptive one.
  total = final["reconstruction"] + final["quantizer_loss"] + final["loss/feature_rec"]
  assert final["loss"] == pytest.approx(total + final["vf_weight"] * final["loss/vf"], rel=1e-5)
  with open(os.path.join(tmp_path, "run", "config.json")) as f:
    assert json.load(f)["feature_teacher"] == teacher
  # Resumed from the step-2 checkpoint of a copy (the teacher is not in the state): step 3 repeats exactly.
  resumed = resume_copy(tmp_path / "run", tmp_path / "resumed", step=2)
  assert train_and_evaluate(load_config(**over), str(resumed), progress=False)["start_step"] == 2
  assert read_losses(str(resumed))[3] == losses[3]  # exact on CPU
  # eval.py measures what the alignment bought: feature agreement and a k-NN probe on labelled folders.
  folders = [_colour_classes(tmp_path / name, seed) for name, seed in (("probe_train", 0), ("probe_test", 1))]
  out = tmp_path / "eval"
  res = subprocess.run(
    [sys.executable, "eval.py", f"--tokenizer={tmp_path / 'run'}", f"--feature_teacher={teacher}",
     f"--probe={','.join(folders)}", "--probe_k=3", f"--output={out}"],
    cwd=ROOT, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert res.returncode == 0, res.stderr
  report = json.loads((out / "eval_3.json").read_text())
  # feature_cosine against NumPy: the projected codes and the teacher's patches of the same eval images.
  tok, saved, _ = load.load(str(tmp_path / "run"))
  assert saved.feature_teacher == teacher
  decoder, *task = tok.feature_proj.layers  # VQ-KD's decoder, then its task layer
  assert isinstance(decoder, vit.FeatureDecoder) and len(decoder.transformer.blocks) == 1
  assert decoder.patch_embed.kernel[...].shape == (tok.quantizer.code_dim, 8) and decoder.pos[...].shape == (65, 8)
  assert [type(m).__name__ for m in task[::2]] == ["Linear", "Linear"] and task[0].kernel[...].shape == (8, 8)
  batch = next(iter(pipeline.make_dataset(saved, split="eval", batch_size=saved.eval.batch_size)))
  x = jnp.asarray(batch["image"])[np.asarray(batch["valid"]).astype(bool)]
  codes_of = nnx.jit(lambda t, x: t.quantizer.indices_to_codes(t.encode(x)))  # one program, not op by op
  pred = np.asarray(nnx.jit(lambda t, c: t.project_features(c))(tok, codes_of(tok, x)))
  assert pred.shape == (len(x), 8, 8, 16)  # the decoder's tokens back on the latent grid
  pred = pred.reshape(len(x), -1, 16)
  module, tconfig = feature_teacher.read(teacher)
  target = np.asarray(feature_teacher.features(module, tconfig, x, (-1.0, 1.0), "bilinear")).reshape(len(x), -1, 16)
  norms = np.linalg.norm(pred, axis=-1) * np.linalg.norm(target, axis=-1)
  cos = (pred * target).sum(-1) / np.maximum(norms, 1e-8)  # FSQ's all-zero code projects to 0: cosine 0
  assert report["num_images"] == 20 and len(x) == 8  # NumPy's batch: the first 8 of the 20
  first = json.loads(res.stdout[res.stdout.index("{") : res.stdout.index("}") + 1])
  assert first["feature_cosine"] == pytest.approx(report["feature_cosine"])
  assert -1 <= report["feature_cosine"] <= 1 and report["feature_teacher"] == teacher
  partial, _ = semantic_report(saved, tok, teacher, num_images=8)
  assert partial["feature_cosine"] == pytest.approx(float(cos.mean()), abs=1e-5)
  probe = report["knn_probe"]
  assert (probe["num_train"], probe["num_test"], probe["num_classes"], probe["k"]) == (12, 12, 2, 3)

  # The same probe by hand: the images read in a known order with known labels, then the pooled codes' k-NN.
  def pooled(folder):
    paths = [
      (c, os.path.join(folder, n, f))
      for c, n in enumerate(("blue", "red"))
      for f in sorted(os.listdir(os.path.join(folder, n)))
    ]
    imgs = [transforms.center_crop(np.asarray(Image.open(p).convert("RGB")), 32) for _, p in paths]
    x = jnp.asarray(np.stack(imgs).astype(np.float32) / 127.5 - 1.0)
    codes = np.asarray(codes_of(tok, x))  # each position's code, pooled in NumPy
    return codes.reshape(len(x), -1, codes.shape[-1]).mean(axis=1), np.asarray([c for c, _ in paths])

  (bank, bank_labels), (queries, labels) = pooled(folders[0]), pooled(folders[1])
  expected = float(np.mean(semantic.knn_predict(bank, bank_labels, queries, k=3) == labels))
  assert probe["accuracy"] == pytest.approx(expected) and probe["chance"] == 0.5
  assert expected > 0.5  # red and blue: the codes of a barely trained tokenizer still tell them apart, mostly
  # A tokenizer without a feature projection cannot be compared with a teacher.
  with pytest.raises(ValueError, match=r"needs a tokenizer with model.feature_dim > 0"):
    semantic.feature_cosine_fn(load_config(**{"feature_teacher": teacher}), _plain_tokenizer())


def semantic_report(config, tok, teacher, num_images=None):
  return evaluate(config, tok, batch_size=8, num_images=num_images, feature_teacher=teacher, progress=False)


def _plain_tokenizer():
  return models.build_tokenizer(load_config(), rngs=nnx.Rngs(0))


def _colour_classes(root, seed, per_class=6):
  """A folder of class subfolders: reddish and bluish noise images (40 x 40)."""
  rng = np.random.default_rng(seed)
  for name, channel in (("blue", 2), ("red", 0)):
    os.makedirs(root / name)
    for i in range(per_class):
      img = rng.integers(0, 20, (40, 40, 3))
      img[..., channel] += 220
      Image.fromarray(img.astype(np.uint8)).save(root / name / f"{i}.png")
  return str(root)


def test_knn_predict_matches_a_plain_transcription():
  rng = np.random.default_rng(0)
  bank, labels, queries = rng.normal(size=(30, 5)), rng.integers(0, 3, 30), rng.normal(size=(7, 5))

  def plain(q, exclude=None, k=4, t=0.07):
    sims = [(float(q @ b / np.linalg.norm(q) / np.linalg.norm(b)), j) for j, b in enumerate(bank) if j != exclude]
    votes = np.zeros(3)
    for s, j in sorted(sims, reverse=True)[:k]:
      votes[labels[j]] += math.exp(s / t)
    return int(votes.argmax())

  got = semantic.knn_predict(bank, labels, queries, k=4)
  np.testing.assert_array_equal(got, [plain(q) for q in queries])
  loo = semantic.knn_predict(bank, labels, bank, k=4, leave_one_out=True)
  np.testing.assert_array_equal(loo, [plain(b, exclude=j) for j, b in enumerate(bank)])
  assert (semantic.knn_predict(bank, labels, bank, k=1) == labels).all()  # each image is its own neighbour
  assert not (loo == labels).all()  # ...and random labels are not learnt without it: the test can fail
  with pytest.raises(ValueError, match="at least 2 labelled images"):
    semantic.knn_predict(bank[:1], labels[:1], bank[:1], leave_one_out=True)


def test_bad_feature_teacher_settings(tmp_path):
  with pytest.raises(ValueError, match="needs feature_teacher"):
    load_config(**{"loss.vf_weight": 0.1, "model.feature_dim": 16})
  teacher = _teacher_dir(tmp_path / "teacher")
  with pytest.raises(ValueError, match="needs model.feature_dim"):
    load_config(**{"loss.vf_weight": 0.1, "feature_teacher": teacher})
  wide = load_config(**{"loss.vf_weight": 0.1, "feature_teacher": teacher, "model.feature_dim": 8})
  with pytest.raises(feature_teacher.FeatureTeacherError, match="16 wide, model.feature_dim is 8"):
    train_and_evaluate(wide, str(tmp_path / "run"), progress=False)
  grid = load_config(**{"loss.vf_weight": 0.1, "feature_teacher": teacher, "model.feature_dim": 16})
  grid.model.channel_mult = (1, 2, 2, 2)  # f8: a 4 x 4 latent grid against the teacher's 8 x 8
  with pytest.raises(feature_teacher.FeatureTeacherError, match=r"patch grid at 32px is \(8, 8\)"):
    train_and_evaluate(config_lib.validate_config(grid), str(tmp_path / "run"), progress=False)
  assert not os.path.exists(tmp_path / "run")  # nothing written
  with pytest.raises(feature_teacher.FeatureTeacherError, match="not a feature-teacher directory"):
    feature_teacher.load_for(load_config(**{"feature_teacher": str(tmp_path)}), None)


@pytest.mark.parametrize("with_gan", [False, True])
def test_vf_and_gan_weights_are_gradient_ratios(with_gan):
  """VA-VAE's VF weight: vf_weight * ||grad rec|| / (||grad vf|| + 1e-4) at the encoder's last kernel, clipped
  to 1e8; the GAN weight as without it (at the decoder's last kernel, against rec + quantizer loss)."""
  rng = np.random.default_rng(0)
  params = {
    "encoder": {"conv_out": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}},
    "decoder": {"head": {"kernel": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)}},
  }

  def outs(p):  # (rec, quantizer, [gan,] vf), each reaching both kernels differently
    e, d = p["encoder"]["conv_out"]["kernel"], p["decoder"]["head"]["kernel"]
    h = jnp.tanh(e.sum(0)) @ d
    rec, quant, vf = jnp.sum(h**2), 0.3 * jnp.sum(e**2), jnp.sum(jnp.sin(e)) * 2.0
    return (rec, quant, jnp.sum(jnp.cos(h)), vf) if with_gan else (rec, quant, vf)

  out, vjp_fn = jax.vjp(outs, params)
  lc = ml_collections.ConfigDict(dict(vf_weight=0.1, vf_adaptive=True, gan_weight=0.5, adaptive_weight=True))
  static = types.SimpleNamespace(
    enc_last_layer=("encoder", "conv_out", "kernel"), last_layer=("decoder", "head", "kernel")
  )
  grads, gan_w, vf_w = step_lib._vf_grads(lc, static, vjp_fn, len(out), with_gan)

  part = lambda i: jax.grad(lambda p: outs(p)[i])(params)
  g_rec, g_q, g_vf = part(0), part(1), part(len(out) - 1)
  enc = lambda g: np.asarray(g["encoder"]["conv_out"]["kernel"])
  dec = lambda g: np.asarray(g["decoder"]["head"]["kernel"])
  want_vf = 0.1 * np.linalg.norm(enc(g_rec)) / (np.linalg.norm(enc(g_vf)) + 1e-4)
  np.testing.assert_allclose(float(vf_w), want_vf, rtol=1e-5)
  want_gan = 0.0
  if with_gan:
    g_gan, main = part(2), jax.tree.map(jnp.add, g_rec, g_q)
    want_gan = 0.5 * np.linalg.norm(dec(main)) / (np.linalg.norm(dec(g_gan)) + 1e-4)
  np.testing.assert_allclose(float(gan_w), want_gan, rtol=1e-5)
  for get in (enc, dec):
    want = get(g_rec) + get(g_q) + want_vf * get(g_vf) + (want_gan * get(part(2)) if with_gan else 0)
    np.testing.assert_allclose(get(grads), want, rtol=1e-5, atol=1e-6)


def test_feature_rec_loss_matches_beit2_calculate_rec_loss():
  rng = np.random.default_rng(3)
  rec, target = rng.normal(size=(2, 4, 4, 6)), rng.normal(size=(2, 4, 4, 6))
  # modeling_vqkd.py calculate_rec_loss, rec_loss_type="cosine", on (B, N, C) tokens.
  r, t = rec.reshape(2, 16, 6), target.reshape(2, 16, 6)
  t = t / np.linalg.norm(t, axis=-1, keepdims=True)
  r = r / np.linalg.norm(r, axis=-1, keepdims=True)
  want = (1 - (t * r).sum(-1)).mean()
  np.testing.assert_allclose(float(alignment.feature_rec_loss(rec, target)), want, rtol=1e-6)
  assert abs(float(alignment.feature_rec_loss(2.0 * target, target))) < 1e-6  # scale-free
  zero = jnp.zeros((1, 2, 6)).at[0, 1].set(1.0)
  grad = jax.grad(lambda z: alignment.feature_rec_loss(z, jnp.ones((1, 2, 6))))(zero)
  assert np.isfinite(np.asarray(grad)).all()  # a zero vector: cosine 0, a finite gradient
  with pytest.raises(ValueError, match="differ in shape"):
    alignment.feature_rec_loss(rec[:, :2], target)


def test_vq_kd_feature_head_settings(tmp_path):
  # VQ-KD's training run (its decoder, its term in the total): test_tiny_run_with_a_dinov2_teacher.
  teacher = _teacher_dir(tmp_path / "teacher")
  for fields, match in (
    ({"loss.feature_rec_weight": 1.0, "model.feature_dim": 16}, "needs feature_teacher"),
    ({"loss.feature_rec_weight": 1.0, "feature_teacher": teacher}, "needs model.feature_dim"),
    ({"model.feature_head_hidden": 8}, "feature_head_hidden needs model.feature_dim"),
    ({"model.feature_dim": 16, "model.feature_head_blocks": 1}, "feature_head_blocks needs model.feature_head_hidden"),
  ):
    with pytest.raises(ValueError, match=match):
      load_config(**fields)
