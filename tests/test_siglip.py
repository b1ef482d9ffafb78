"""SigLIP feature teachers: parity with big_vision's code, full sizes, the directory and the command.

The goldens in tests/goldens/siglip/ were made by big_vision's own two-tower
model (scripts/parity/gen_siglip.py) on two reduced-width random-weight
models saved as the published ``.npz`` files are: ``b16`` (patch 16 at
224 px, blocks one by one, no image head: the published SigLIP layout) and
``p14_scan`` (patch 14 at 56 px, blocks stacked by ``scan``, an image head),
loaded back with ``two_towers.load`` and run on images prepared by the colab's
``resize(RES)|value_range(-1, 1)``. Tolerance: 1e-5 relative (norm of the
difference over the norm).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT

from vqtok import feature_teacher, files, pretrained
from vqtok.data import transforms
from vqtok.models import siglip
from vqtok.pretrained import CheckpointError, layout
from vqtok.pretrained import siglip as siglip_file

GOLDENS = os.path.join(ROOT, "tests", "goldens", "siglip")
VARIANTS = ("b16", "p14_scan")


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module", params=VARIANTS)
def fixture(request):
  name = request.param
  module, config, _ = pretrained.convert_teacher("siglip", os.path.join(GOLDENS, f"{name}.npz"))
  golden = np.load(os.path.join(GOLDENS, f"{name}_golden.npz"))
  pixels = np.stack([feature_teacher.preprocess(golden[f"image{i}"], config) for i in range(2)])
  out = jax.jit(lambda m, x: m(x))(module, jnp.asarray(pixels))
  return name, module, config, golden, pixels, out


def test_preprocessing_is_the_colab_pipeline(fixture):
  """TF's bilinear resize back to uint8, bit for bit, then value_range(-1, 1)."""
  _, _, config, golden, pixels, _ = fixture
  r = config["resolution"]
  assert pixels.shape == (2, r, r, 3) and config["preprocess"] == "squash_bilinear"
  resized = np.stack([transforms.squash_bilinear_tf(golden[f"image{i}"], r) for i in range(2)])
  want = golden["resized"]
  np.testing.assert_array_equal(resized if want.shape == resized.shape else resized[:, ::7, ::7], want)
  np.testing.assert_allclose(pixels[:, ::7, ::7], golden["pixels_sub"], rtol=0, atol=1e-6)


def test_features_match_the_reference(fixture):
  name, module, config, golden, pixels, out = fixture
  g, width = config["pos_grid"], config["width"]
  assert out["patches"].shape == (2, g, g, width) and out["pooled"].shape == (2, width)
  assert _rel(out["patches"].reshape(2, g * g, width), golden["encoded"]) < 1e-5
  assert _rel(out["pooled"], golden["pre_logits"]) < 1e-5
  assert _rel(out["embedding"], golden["embedding"]) < 1e-5
  assert (config["embed_dim"] > 0) == (name == "p14_scan")
  with pytest.raises(ValueError, match="position grid is for"):
    module(jnp.zeros((1, config["resolution"] + config["patch_size"], config["resolution"], 3)))
  if name == "p14_scan":  # the training step's way in: a batch in [-1, 1], already at the resolution
    run = jax.jit(lambda m, x: feature_teacher.features(m, config, x, (-1.0, 1.0), "bilinear"))
    feats = run(module, jnp.asarray(pixels))
    assert _rel(feats, out["patches"]) < 1e-6


def test_full_size_key_layouts_and_parameter_counts():
  """The table maps every image-tower array of B/16 and So400m/14 (big_vision's shapes) exactly once."""
  with open(os.path.join(GOLDENS, "full_sizes.json")) as f:
    published = json.load(f)
  want = {
    "webli_en_b16_224": dict(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=16, pos_grid=14),
    "webli_en_so400m_224": dict(width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=14, pos_grid=16),
  }
  block = "params/img/Transformer/encoderblock_0/"
  for name, ref in published.items():
    shapes = {}
    for k, shape in ref["img_keys"].items():
      for i in range(ref["blocks"]) if k.startswith(block) else (0,):
        shapes[k.replace("encoderblock_0/", f"encoderblock_{i}/")] = shape
    shapes.update({k: [1] for k in ref["other_keys"]})
    stand_in = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}  # no memory
    tensors = siglip_file.state_dict(stand_in, ema=False, source=name)
    config = siglip_file.config(tensors, name)
    assert {k: config[k] for k in want[name]} == want[name] and config["embed_dim"] == 0
    model = nnx.eval_shape(lambda c=config: feature_teacher.build(c))
    expected = files.shapes(model)
    mapped = layout.apply_rules(tensors, siglip_file.table(config), expected, ignore=siglip_file.IGNORE, source=name)
    assert set(mapped) == set(expected)
    assert sum(int(np.prod(s)) for s in expected.values()) == ref["image_tower_parameters"]


def test_directory_command_and_bad_input(tmp_path):
  src = os.path.join(GOLDENS, "b16.npz")
  out = tmp_path / "teacher"
  res = subprocess.run(
    [sys.executable, "-m", "vqtok.convert", "siglip", src, str(out)], cwd=ROOT, capture_output=True, text=True
  )
  assert res.returncode == 0, res.stderr
  summary = json.loads(res.stdout)
  assert summary["feature_teacher"]["resolution"] == 224 and summary["feature_teacher"]["teacher"] == "siglip"
  module, config = feature_teacher.read(str(out))
  assert isinstance(module, siglip.SigLIP) and config["preprocess"] == "squash_bilinear"
  want, _, _ = pretrained.convert_teacher("siglip", src)
  for k, v in files.arrays(want).items():
    np.testing.assert_array_equal(files.arrays(module)[k], v)
  # The image tower saved alone (big_vision's ``file.npz:img`` sub-tree) converts the same.
  arrays = dict(np.load(src))
  np.savez(tmp_path / "img.npz", **{k[11:]: v for k, v in arrays.items() if k.startswith("params/img/")})
  alone, _, _ = pretrained.convert_teacher("siglip", str(tmp_path / "img.npz"))
  for k, v in files.arrays(want).items():
    np.testing.assert_array_equal(files.arrays(alone)[k], v)
  # A text tower alone, a DINOv2 file, a big_vision ViT without a MAP head: one clear line each.
  np.savez(tmp_path / "txt.npz", **{k: v for k, v in arrays.items() if not k.startswith("params/img/")})
  with pytest.raises(CheckpointError, match="no image tower .*a text tower only"):
    pretrained.convert_teacher("siglip", str(tmp_path / "txt.npz"))
  with pytest.raises(CheckpointError, match="not a SigLIP checkpoint"):
    pretrained.convert_teacher("siglip", os.path.join(ROOT, "tests", "goldens", "dinov2", "vitt14_pretrain.pth"))
  np.savez(tmp_path / "gap.npz", **{k: v for k, v in arrays.items() if "MAPHead" not in k})
  with pytest.raises(CheckpointError, match="no MAP head"):
    pretrained.convert_teacher("siglip", str(tmp_path / "gap.npz"))
  # bfloat16, which np.savez stores as 2-byte void (big_vision utils.recover_dtype), is widened exactly.
  bits = (np.array([1.5, -2.25], np.float32).view(np.uint32) >> 16).astype(np.uint16)
  np.savez(tmp_path / "bf16.npz", x=bits.view("V2"))
  np.testing.assert_array_equal(pretrained.read_checkpoint(str(tmp_path / "bf16.npz"))["x"], [1.5, -2.25])
