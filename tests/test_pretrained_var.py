"""VAR's multi-scale tokenizer (vae_ch160v4096z32.pth): parity with VAR's own code, full size, bad files.

tests/goldens/var/ holds a reduced-width random-weight state dict in the
published layout (ch 32, ch_mult 1-2, one res block, 128 x 8 codes, VAR's
schedule 1..16 on a 16x16 latent at 32 px) and the outputs of VAR's code on
three photos (scripts/parity/gen_var.py). Tolerances as for the other
families: all 680 ids per image equal (no near-ties in the fixture: smallest
relative gap 3.9e-5), latents within 1e-5 relative, decoded images within 1e-4.
"""

import importlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torchfile
from flax import nnx
from helpers import ROOT
from PIL import Image

from vqtok import config as config_lib
from vqtok import files, models, pretrained
from vqtok.data import transforms
from vqtok.pretrained import reader

GOLDENS = os.path.join(ROOT, "tests", "goldens", "var")
REDUCED = os.path.join(GOLDENS, "reduced.pth")


@pytest.fixture(scope="module")
def converted():
  tok, config, meta = pretrained.convert("var", REDUCED)
  return tok, config, meta, np.load(os.path.join(GOLDENS, "golden.npz"))


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


_decode = nnx.jit(lambda t, i, k: t.decode(i, num_scales=k), static_argnums=2)


def test_parity_with_vars_code(converted):
  tok, config, _, g = converted
  assert tok.token_shape == (16, 16) and config.image_size == 32 and config.model.project_kernel == 3
  x = jnp.asarray(g["input"])
  assert _rel(nnx.jit(lambda t, x: t._latents(x))(tok, x), g["latent"]) < 1e-5
  ids = np.asarray(nnx.jit(lambda t, x: t.encode(x))(tok, x))
  assert ids.shape == (3, 680)
  agree = (ids == g["ids"]) | g["near_tie"]
  assert agree.all(), f"{int((~agree).sum())} of {ids.size} ids differ"
  np.testing.assert_allclose(np.asarray(tok.quantizer.indices_to_codes(jnp.asarray(g["ids"]))), g["f_hat"], atol=1e-5)
  out = np.asarray(_decode(tok, jnp.asarray(g["ids"]), None))
  assert np.abs(out - g["decoded"]).max() < 1e-4
  assert np.abs(np.clip(out, -1, 1) - g["decoded_from_ids"]).max() < 1e-4
  # Coarse preview from the first 4 scales (30 tokens), as VAR's idxBl_to_img gives it.
  preview = np.asarray(_decode(tok, jnp.asarray(g["ids"]), 4))
  assert np.abs(np.clip(preview, -1, 1) - g["preview_4"]).max() < 1e-4
  # The tolerance can fail: shuffled ids decode to something else.
  wrong = np.asarray(_decode(tok, jnp.asarray(np.roll(g["ids"], 1, axis=-1)), None))
  assert np.abs(wrong - g["decoded"]).max() > 1e-2


def test_converted_config(converted):
  _, config, meta, g = converted
  q = config.quantizer
  assert q.type == "multiscale" and tuple(q.scales) == tuple(g["scales"]) and q.phi_count == 4
  assert q.quantizer.codebook_size == 128 and config.model.code_dim == 8
  assert meta["source"] == "var" and len(meta["source_sha256"]) == 64
  assert config.data.preprocess == "lanczos_center_crop"


def _state_dict():
  return {k: np.asarray(v) for k, v in files.flatten(reader.read_checkpoint(REDUCED), arrays_only=True).items()}


@pytest.mark.parametrize(
  "edit,match",
  [
    (lambda sd: sd.pop("quantize.quant_resi.qresi_ls.1.weight"), "phis.1.kernel"),
    (lambda sd: sd.update({"quantize.extra.weight": np.zeros(3, np.float32)}), "quantize.extra.weight"),
    (lambda sd: sd.update({"quantize.ema_vocab_hit_SV": np.zeros((7, 128), np.float32)}), "7 scales"),
    (
      lambda sd: sd.update({"encoder.mid.attn_1.qkv.weight": np.zeros((31, 64, 1, 1), np.float32)}),
      "encoder.mid.attn_1.qkv.weight",
    ),
  ],
)
def test_converter_names_the_problem(tmp_path, edit, match):
  sd = _state_dict()
  edit(sd)
  path = str(tmp_path / "bad.pth")
  torchfile.save(sd, path)
  with pytest.raises(reader.CheckpointError, match=match):
    pretrained.convert("var", path)


@pytest.mark.slow
def test_full_size_random_weights_convert(tmp_path):
  with open(os.path.join(GOLDENS, "var_vae_ch160v4096z32_keys.json")) as f:
    table = json.load(f)
  rng = np.random.default_rng(0)
  path = str(tmp_path / "vae_ch160v4096z32.pth")
  torchfile.save({k: rng.standard_normal(s, np.float32) * 0.02 for k, s in table.items()}, path)
  count = sum(int(np.prod(s)) for k, s in table.items() if k != "quantize.ema_vocab_hit_SV")
  assert count == 108_948_355  # VQVAE(vocab_size=4096, z_channels=32, ch=160) parameters
  tok, config, _ = pretrained.convert("var", path)
  assert sum(v.size for v in files.arrays(tok).values()) == count
  assert tok.token_shape == (16, 16) and tok.quantizer.num_tokens == 680 and config.image_size == 256
  c = importlib.import_module("configs.var_vq16").get_config()
  abstract = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  assert sum(v.size for v in jax.tree.leaves(nnx.state(abstract, nnx.Param))) == count
  assert config_lib.architecture_diff(config, c) == []


def _run(*args):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_convert_encode_decode_commands(tmp_path):
  out = tmp_path / "tok"
  res = _run("-m", "vqtok.convert", "var", REDUCED, str(out))
  assert res.returncode == 0, res.stderr
  summary = json.loads(res.stdout)
  assert summary["format"] == "var" and summary["token_shape_at_image_size"] == [16, 16]
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
  images = tmp_path / "images"
  images.mkdir()
  for i, arr in enumerate(np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)):
    Image.fromarray(arr).save(images / f"{i}.png")
  tokens = tmp_path / "tokens"
  res = _run("-m", "vqtok.tokenize", "encode", f"--tokenizer={out}", f"--folder={images}", f"--output={tokens}")
  assert res.returncode == 0, res.stderr
  assert np.load(tokens / "tokens-00000.npz")["indices"].shape == (2, 680)
  with open(tokens / "metadata.json") as f:
    assert json.load(f)["scales"] == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]
  decoded = tmp_path / "decoded"
  res = _run(
    "-m", "vqtok.tokenize", "decode", f"--tokenizer={out}", f"--tokens={tokens}", f"--output={decoded}",
    "--num_scales=3", "--noreencode",
  )  # fmt: skip
  assert res.returncode == 0, res.stderr
  assert sorted(os.listdir(decoded)) == ["0.png", "1.png"]
  res = _run(
    "-m", "vqtok.tokenize", "decode", f"--tokenizer={out}", f"--tokens={tokens}", f"--output={tmp_path / 'x'}",
    "--num_scales=11",
  )  # fmt: skip
  assert res.returncode != 0 and res.stderr.strip().count("\n") == 0 and "num_scales=11" in res.stderr
  assert not (tmp_path / "x").exists()


def test_vars_preprocessing_follows_torchvision_rules():
  # A 40 x 61 image at 24 px: short side to round(1.125 * 24) = 27, long side int(27 * 61 / 40) = 41,
  # crop offsets round(3 / 2) = 2 and round(17 / 2) = 8 (half to even; a floor would give 1).
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (40, 61, 3), dtype=np.uint8)
  want = np.asarray(Image.fromarray(img).resize((41, 27), resample=Image.Resampling.LANCZOS))[2:26, 8:32]
  np.testing.assert_array_equal(transforms.lanczos_center_crop(img, 24), want)
  # Portrait: the width is the short side; an image already at the intermediate size is only cropped.
  tall = rng.integers(0, 256, (61, 27, 3), dtype=np.uint8)
  np.testing.assert_array_equal(transforms.lanczos_center_crop(tall, 24), tall[18:42, 2:26])
  assert transforms.PREPROCESS["lanczos_center_crop"] is transforms.lanczos_center_crop
