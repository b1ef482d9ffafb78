"""DINOv2 feature teachers: parity with the authors' code, full sizes, the directory and the command.

The goldens in tests/goldens/dinov2/ were made by facebookresearch/dinov2's own
``DinoVisionTransformer`` (scripts/parity/gen_dinov2.py) on two reduced-width
random-weight models saved as the published ``.pth`` state dicts: without
registers from a 7 x 7 position grid, with 4 registers from the published
37 x 37 grid (518 px), both run at 224 px on images prepared by the
reference's eval transform, at a non-square 70 x 98 crop, and at the training
grid itself. Tolerance: 1e-5 relative (norm of the difference over the norm).
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
from vqtok.models import dinov2, vit
from vqtok.pretrained import CheckpointError

GOLDENS = os.path.join(ROOT, "tests", "goldens", "dinov2")
VARIANTS = ("vitt14", "vitt14_reg4")


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module", params=VARIANTS)
def fixture(request):
  name = request.param
  module, config, meta = pretrained.convert_teacher("dinov2", os.path.join(GOLDENS, f"{name}_pretrain.pth"))
  golden = np.load(os.path.join(GOLDENS, f"{name}_golden.npz"))
  pixels = np.stack([feature_teacher.preprocess(golden[f"image{i}"], config) for i in range(2)])
  return name, module, config, golden, pixels


def test_preprocessing_is_the_reference_eval_transform(fixture):
  _, _, config, golden, pixels = fixture
  assert pixels.shape == (2, 224, 224, 3) and config["resolution"] == 224
  np.testing.assert_allclose(pixels[:, ::7, ::7], golden["pixels_sub"], rtol=0, atol=1e-6)


def test_features_match_the_reference(fixture):
  name, module, config, golden, pixels = fixture
  run = jax.jit(lambda m, x: m(x))
  out = run(module, jnp.asarray(pixels))
  assert out["patches"].shape == (2, 16, 16, 128)
  assert out["registers"].shape == (2, config["num_register_tokens"], 128)
  assert _rel(out["cls"], golden["cls"]) < 1e-5
  assert _rel(out["patches"].reshape(2, 256, 128), golden["patches"]) < 1e-5
  if config["num_register_tokens"]:
    assert _rel(out["registers"], golden["registers"]) < 1e-5
  # A non-square grid (5 x 7) resizes the position grid along each axis with its own scale.
  small = run(module, jnp.asarray(pixels[:, :70, :98]))["patches"]
  assert _rel(small.reshape(2, 35, 128), golden["small_patches"]) < 1e-5
  if name == "vitt14":  # at the training grid (7 x 7) nothing is resized
    side = module.pos_grid * module.patch_size
    native = run(module, jnp.asarray(np.tile(pixels, (1, 3, 3, 1))[:, :side, :side]))["cls"]
    assert _rel(native, golden["native_cls"]) < 1e-5


def test_full_size_parameter_counts_equal_the_published():
  """The published counts (state dicts of the reference's hub models) less ``mask_token`` (unused for features)."""
  with open(os.path.join(GOLDENS, "full_sizes.json")) as f:
    published = json.load(f)

  def count(depth, regs, size):
    sizes = {**vit.decode_variant(size), "depth": depth}
    model = nnx.eval_shape(lambda: dinov2.DINOv2(**sizes, num_register_tokens=regs, rngs=nnx.Rngs(0)))
    return sum(int(np.prod(s)) for s in files.shapes(model).values())

  for size, arch in zip(dinov2.SIZES, ("vits14", "vitb14", "vitl14")):
    # The blocks are alike: one model of one block, one of two, give the count at full depth
    # without tracing 24 blocks.
    depth = vit.decode_variant(size)["depth"]
    for regs, suffix in ((0, ""), (4, "_reg4")):
      one, two = count(1, regs, size), count(2, regs, size)
      full = one + (depth - 1) * (two - one)
      assert full == published[f"dinov2_{arch}{suffix}"]["parameters_without_mask_token"]
      assert published[f"dinov2_{arch}{suffix}"]["blocks"] == depth


def test_directory_command_and_bad_input(tmp_path):
  src = os.path.join(GOLDENS, "vitt14_reg4_pretrain.pth")
  out = tmp_path / "teacher"
  res = subprocess.run(
    [sys.executable, "-m", "vqtok.convert", "dinov2", src, str(out)], cwd=ROOT, capture_output=True, text=True
  )
  assert res.returncode == 0, res.stderr
  assert json.loads(res.stdout)["feature_teacher"]["num_register_tokens"] == 4
  module, config = feature_teacher.read(str(out))
  want, _, _ = pretrained.convert_teacher("dinov2", src)
  for k, v in files.arrays(want).items():
    np.testing.assert_array_equal(files.arrays(module)[k], v)
  assert config["interpolate_offset"] == 0.1 and not list(tmp_path.glob("*.tmp"))
  # A tokenizer checkpoint is not a DINOv2 file; a tokenizer directory is not a teacher directory.
  with pytest.raises(CheckpointError, match="not a dinov2 checkpoint"):
    pretrained.convert_teacher("dinov2", os.path.join(ROOT, "tests", "goldens", "llamagen", "reduced.pt"))
  (tmp_path / "tok").mkdir()
  with pytest.raises(feature_teacher.FeatureTeacherError, match="not a feature-teacher directory"):
    feature_teacher.read(str(tmp_path / "tok"))
