"""OpenAI CLIP feature teachers: the TorchScript reader, parity with openai/CLIP, full sizes, the command.

The goldens in tests/goldens/clip/ were made by openai/CLIP's own code
(scripts/parity/gen_clip.py): two reduced-width random-weight models built by
``clip.model.build_model`` (float16 weights as ``convert_weights`` leaves
them), traced and saved as TorchScript archives as OpenAI's ``.pt`` files are,
patch 16 (a 14 x 14 grid, two blocks) and patch 14 (16 x 16, one block), both
at 224 px; features of ``clip.load(..., jit=False)`` on images prepared by the
preprocess it returns. Tolerance: 1e-5 relative (norm of the difference over
the norm).
"""

import json
import os
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT

from vqtok import feature_teacher, files, pretrained
from vqtok.models import dinov2
from vqtok.pretrained import CheckpointError, layout, read_checkpoint
from vqtok.pretrained import clip as clip_family

FAST_COMPILE = True

GOLDENS = os.path.join(ROOT, "tests", "goldens", "clip")
VARIANTS = ("ViT-T-16", "ViT-T-14")


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module", params=VARIANTS)
def fixture(request):
  name = request.param
  module, config, _ = pretrained.convert_teacher("clip", os.path.join(GOLDENS, f"{name}.pt"))
  golden = np.load(os.path.join(GOLDENS, f"{name}_golden.npz"))
  pixels = np.stack([feature_teacher.preprocess(golden[f"image{i}"], config) for i in range(2)])
  return name, module, config, golden, pixels


def test_torchscript_archive_reads_as_torchs_state_dict():
  """Names, order, shapes and dtypes as ``torch.jit.load(path).state_dict()`` gives them."""
  for name in VARIANTS:
    tensors = read_checkpoint(os.path.join(GOLDENS, f"{name}.pt"))
    with open(os.path.join(GOLDENS, f"{name}_keys.json")) as f:
      want = json.load(f)
    assert list(tensors) == list(want)
    for k, (shape, dtype) in want.items():
      assert list(tensors[k].shape) == shape and "torch." + str(tensors[k].dtype) == dtype, k
    assert int(tensors["input_resolution"]) == 224


def test_torchscript_archive_without_class_sources_reads_the_same(tmp_path):
  """Classes whose source is not in ``code/`` give every tensor attribute: for a traced module, the same dict."""
  src, dst = os.path.join(GOLDENS, "ViT-T-14.pt"), str(tmp_path / "nocode.pt")
  with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
    for item in zin.infolist():
      if "/code/" not in item.filename:
        zout.writestr(item, zin.read(item.filename))
  want, got = read_checkpoint(src), read_checkpoint(dst)
  assert list(got) == list(want)
  for k, v in want.items():
    np.testing.assert_array_equal(got[k], v)


def test_preprocessing_is_the_reference_transform(fixture):
  _, _, config, golden, pixels = fixture
  assert pixels.shape == (2, 224, 224, 3) and config["resolution"] == config["resize_size"] == 224
  np.testing.assert_allclose(pixels[:, ::7, ::7], golden["pixels_sub"], rtol=0, atol=1e-6)


def test_features_match_the_reference(fixture):
  name, module, config, golden, pixels = fixture
  out = jax.jit(lambda m, x: m(x))(module, jnp.asarray(pixels))
  g = 224 // config["patch_size"]
  assert out["patches"].shape == (2, g, g, 128) and out["embedding"].shape == (2, 32)
  assert _rel(out["cls"], golden["cls"]) < 1e-5
  assert _rel(out["patches"].reshape(2, g * g, 128), golden["patches"]) < 1e-5
  assert _rel(out["embedding"], golden["embedding"]) < 1e-5
  # features() of a [-1, 1] batch at the resolution equals the module on the normalised pixels.
  x = jnp.asarray(golden["pixels_sub"][:1].repeat(7, 1).repeat(7, 2) * np.float32(config["std"]) + config["mean"])
  got = feature_teacher.features(module, config, x * 2 - 1, (-1.0, 1.0), "bilinear")
  want = module(dinov2.normalize(x, config["mean"], config["std"]))["patches"]
  assert _rel(got, want) < 1e-5


def _full_tensors(sizes):
  """A published-shaped visual state dict of zero-strided arrays (no memory) from the reference's key list."""
  out = {}
  for k, shape in sizes["keys"].items():
    for i in range(sizes["blocks"]) if ".resblocks.0." in k else (0,):
      out[k.replace(".resblocks.0.", f".resblocks.{i}.")] = np.broadcast_to(np.float16(0), shape)
  return out


def test_full_size_conversion_and_parameter_counts_equal_the_reference():
  """ViT-B/16 and ViT-L/14: every published visual tensor maps, and the counts are the reference's."""
  with open(os.path.join(GOLDENS, "full_sizes.json")) as f:
    published = json.load(f)
  for arch, patch, width in (("ViT-B/16", 16, 768), ("ViT-L/14", 14, 1024)):
    sizes = published[arch]
    tensors = clip_family.state_dict(_full_tensors(sizes), ema=False, source=arch)
    c = clip_family.config(tensors, arch)
    assert (c.patch_size, c.width, c.depth, c.resolution) == (patch, width, sizes["blocks"], 224)
    model = nnx.eval_shape(lambda c=c: feature_teacher.build(c))
    expected = files.shapes(model)
    mapped = layout.apply_rules(tensors, clip_family.table(c), expected, source=arch)
    assert set(mapped) == set(expected)
    assert sum(int(np.prod(s)) for s in expected.values()) == sizes["visual_parameters"]


def test_directory_command_and_bad_input(tmp_path):
  src = os.path.join(GOLDENS, "ViT-T-14.pt")
  out = tmp_path / "teacher"
  res = subprocess.run(
    [sys.executable, "-m", "vqtok.convert", "clip", src, str(out)], cwd=ROOT, capture_output=True, text=True
  )
  assert res.returncode == 0, res.stderr
  summary = json.loads(res.stdout)
  assert summary["feature_teacher"]["patch_size"] == 14 and summary["feature_teacher"]["proj_dim"] == 32
  module, config = feature_teacher.read(str(out))
  want, _, _ = pretrained.convert_teacher("clip", src)
  for k, v in files.arrays(want).items():
    np.testing.assert_array_equal(files.arrays(module)[k], v)
  assert config["teacher"] == "clip" and not list(tmp_path.glob("*.tmp"))
  # Another model's .pt (a DINOv2 backbone, a tokenizer), a ResNet CLIP: one line each.
  for other in (("dinov2", "vitt14_pretrain.pth"), ("llamagen", "reduced.pt")):
    with pytest.raises(CheckpointError, match="not a clip checkpoint"):
      pretrained.convert_teacher("clip", os.path.join(ROOT, "tests", "goldens", *other))
  with pytest.raises(CheckpointError, match="a ResNet CLIP"):
    clip_family.state_dict({"visual.layer1.0.conv1.weight": np.zeros((1, 1, 1, 1))}, ema=False, source="RN50.pt")
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "vqtok.convert",
      "clip",
      os.path.join(ROOT, "tests", "goldens", "llamagen", "reduced.pt"),
      str(tmp_path / "x"),
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert res.returncode != 0 and "not a clip checkpoint" in res.stderr
  assert len(res.stderr.strip().splitlines()) == 1, res.stderr
