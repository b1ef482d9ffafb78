"""TiTok (bytedance/1d-tokenizer): the exact architecture, the converter, parity with the reference code.

tests/goldens/titok/ was made by the reference's own modules at reduced width
(scripts/parity/gen_titok.py): ``reduced.bin`` in the published
``tokenizer_titok_*.bin`` layout and the reference's outputs on three photos
(32x32, [0, 1]): the encoder latents, the token ids, the proxy-code logits and
the images decoded from the ids; ``vq8k_*`` the same for the one-stage VQ-8k
layout (TiTok-BL-64, BL-128, SL-256). ``full_keys.json`` lists the tensors of
the published TiTok-L-32, B-64, S-128 and the three VQ-8k tokenizers. Tolerances: ids exactly equal except on
near-ties (none here; smallest relative distance gap 2.4e-4); latents within
1e-5 relative; logits and decoded images within 1e-4 (float32).
"""

import dataclasses
import importlib
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage
import torchfile
from flax import nnx
from helpers import ROOT
from PIL import Image
from safetensors.numpy import save_file

import vqtok
from vqtok import config as config_lib
from vqtok import files, models, pretrained, tokenizer_dir
from vqtok import tokens as tokens_lib
from vqtok.data import transforms
from vqtok.pretrained import layout, reader, titok

GOLDENS = os.path.join(ROOT, "tests", "goldens", "titok")
REDUCED = os.path.join(GOLDENS, "reduced.bin")
PHOTOS = os.path.join(os.path.dirname(skimage.__file__), "data")
PRESETS = {"titok_l32": (32,), "titok_b64": (64,), "titok_s128": (128,)}


@pytest.fixture(scope="module")
def golden():
  return dict(np.load(os.path.join(GOLDENS, "golden.npz")))


@pytest.fixture(scope="module")
def converted():
  return pretrained.convert("titok", REDUCED)


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def _x(golden):  # the reference's [0, 1] images as vqtok's [-1, 1] batch
  return jnp.asarray(golden["images"] * 2 - 1, jnp.float32)


def test_parity_with_the_reference(converted, golden):
  tok, config, _ = converted
  assert tok.token_shape == (8,) and config.image_size == 32
  assert _rel(tok._latents(_x(golden)), golden["latents"]) < 1e-5
  ids = np.asarray(tok.encode(_x(golden)))
  assert ids.shape == golden["ids"].shape == (3, 8)
  agree = (ids == golden["ids"]) | golden["near_tie"]
  assert agree.all(), f"{int((~agree).sum())} of {ids.size} ids differ"
  codes = tok.quantizer.indices_to_codes(jnp.asarray(golden["ids"]))
  assert np.abs(np.asarray(tok.decoder.logits(codes)) - golden["logits"]).max() < 1e-4
  decoded = (np.asarray(tok.decode(jnp.asarray(golden["ids"]))) + 1) / 2  # back to the reference's [0, 1]
  assert np.abs(decoded - golden["decoded"]).max() < 1e-4


@pytest.mark.parametrize("size", [32, 67])
def test_preprocessing_matches_the_reference(golden, size):
  # TiTok's eval transform: torchvision Resize(size, bicubic) + CenterCrop(size).
  key = "images_uint8" if size == 32 else f"images_uint8_{size}"
  fn = transforms.PREPROCESS[pretrained.convert("titok", REDUCED)[1].data.preprocess]
  for i, name in enumerate(golden["names"]):
    img = np.asarray(Image.open(os.path.join(PHOTOS, f"{name}.png")).convert("RGB"))
    np.testing.assert_array_equal(fn(img, size), golden[key][i])
  np.testing.assert_array_equal(golden["images_uint8"] / np.float32(255), golden["images"])


@pytest.fixture(scope="module")
def vq8k():
  return pretrained.convert("titok", os.path.join(GOLDENS, "vq8k_reduced.bin")), dict(
    np.load(os.path.join(GOLDENS, "vq8k_golden.npz"))
  )


def test_vq8k_parity_with_the_reference(vq8k):
  # TiTok-BL/SL VQ-8k layout (is_legacy False): latents in order, a wider decoder of its
  # own depth predicting pixels, a 3x3 conv_out, codes not l2-normalised.
  (tok, config, _), golden = vq8k
  assert config.model.vit_family == "titok_pixels" and not config.quantizer.l2_normalize
  assert (config.model.width, config.model.num_heads, config.model.depth) == (64, 1, 1)
  assert (config.model.decoder_width, config.model.decoder_num_heads, config.model.decoder_depth) == (128, 2, 2)
  assert _rel(tok._latents(_x(golden)), golden["latents"]) < 1e-5
  ids = np.asarray(tok.encode(_x(golden)))
  assert ((ids == golden["ids"]) | golden["near_tie"]).all()
  decoded = (np.asarray(tok.decode(jnp.asarray(golden["ids"]))) + 1) / 2
  assert np.abs(decoded - golden["decoded"]).max() < 1e-4
  wrong = (np.asarray(tok.decode(jnp.asarray(np.roll(golden["ids"], 1, axis=-1)))) + 1) / 2
  assert np.abs(wrong - golden["decoded"]).max() > 1e-2


@pytest.mark.parametrize(
  "name,count,tokens",
  [
    ("titok_bl64_vq8k", 390_016_148, 64),
    ("titok_bl128_vq8k", 390_179_988, 128),
    ("titok_sl256_vq8k", 330_260_884, 256),
  ],
)
def test_full_size_vq8k_configs_count_as_the_reference(name, count, tokens):
  tensors = _full_tensors(name)
  assert sum(v.size for v in tensors.values()) == count
  c = titok.config(tensors, name)
  tok = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  assert sum(v.size for v in jax.tree.leaves(nnx.state(tok, nnx.Param))) == count
  assert tok.token_shape == (tokens,) and c.quantizer.codebook_size == 8192 and c.model.code_dim == 64


def test_decoding_other_ids_is_not_trivially_equal(converted, golden):
  tok = converted[0]
  wrong = (np.asarray(tok.decode(jnp.asarray(np.roll(golden["ids"], 1, axis=-1)))) + 1) / 2
  assert np.abs(wrong - golden["decoded"]).max() > 1e-2


def test_legacy_latent_layout_is_what_makes_the_ids(converted, golden):
  # The published encoder reads its latent outputs transposed (vit.Family.legacy_latents);
  # without that quirk the same weights give other latents.
  tok = converted[0]
  enc = tok.encoder
  published = enc.family
  try:
    enc.family = dataclasses.replace(published, legacy_latents=False)
    assert _rel(tok._latents(_x(golden)), golden["latents"]) > 0.1
  finally:
    enc.family = published


def test_hub_safetensors_layout_converts_alike(tmp_path, converted, golden):
  # The hub's model.safetensors (PyTorchModelHubMixin) holds the same flat names.
  tensors = reader.read_checkpoint(REDUCED)
  path = str(tmp_path / "model.safetensors")
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path)
  tok, config, meta = pretrained.convert("titok", path)
  np.testing.assert_array_equal(np.asarray(tok.encode(_x(golden))), golden["ids"])
  assert config_lib.architecture_diff(config, converted[1]) == []
  assert meta["source"] == "titok" and meta["weights"] == "model"


def test_converted_config(converted):
  _, config, _ = converted
  assert config.model.vit_family == "titok" and config.model.num_heads == 2
  assert tuple(config.model.input_range) == (0.0, 1.0)
  assert config.quantizer.l2_normalize and config.quantizer.codebook_size == 64
  assert config.model.proxy_codebook_size == 48 and tuple(config.model.proxy_decoder.channel_mult) == (1, 2, 2)
  config_lib.validate_config(config)


# ---- bad input: one clear error naming the file and the key ----


def _write(tmp_path, edit, name="bad.bin"):
  sd = dict(reader.read_checkpoint(REDUCED))
  edit(sd)
  path = str(tmp_path / name)
  torchfile.save(sd, path)
  return path


@pytest.mark.parametrize(
  "edit,match",
  [
    (lambda sd: sd.pop("pixel_decoder.conv_out.bias"), r"missing tensors for decoder\.pixel\.conv_out\.bias"),
    (lambda sd: sd.pop("decoder.mask_token"), r"missing tensors for decoder\.vit\.mask_token"),
    (lambda sd: sd.update({"encoder.extra": np.zeros(3, np.float32)}), r"unexpected tensor 'encoder\.extra'"),
    (
      lambda sd: sd.update({"encoder.ln_pre.bias": np.zeros(7, np.float32)}),
      r"'encoder\.ln_pre\.bias' has shape \(7,\); 'encoder\.transformer\.ln_pre\.bias' needs \(128,\)",
    ),
    (
      lambda sd: sd.update({"encoder.transformer.1.attn.in_proj_bias": np.zeros(10, np.float32)}),
      r"'encoder\.transformer\.1\.attn\.in_proj_bias' has shape \(10,\); expected 3 x width",
    ),
    (
      lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("pixel_")],
      r"has neither a pixel decoder \(pixel_decoder\.\*\) nor a pixel head",
    ),
    (lambda sd: sd.pop("latent_tokens"), r"not a titok checkpoint: tensor 'latent_tokens' is missing"),
    (lambda sd: sd.pop("quantize.embedding.weight"), r"'quantize\.embedding\.weight' is missing \(TiTok's VAE"),
  ],
)
def test_converter_names_the_bad_tensor(tmp_path, edit, match):
  path = _write(tmp_path, edit)
  with pytest.raises(reader.CheckpointError, match=match) as e:
    pretrained.convert("titok", path)
  assert "bad.bin" in str(e.value) and "\n" not in str(e.value)


def test_checkpoint_of_another_family_is_refused(tmp_path):
  taming = os.path.join(ROOT, "tests", "goldens", "taming", "reduced.ckpt")
  with pytest.raises(reader.CheckpointError, match="not a titok checkpoint"):
    pretrained.convert("titok", taming)
  with pytest.raises(reader.CheckpointError, match="not a llamagen checkpoint|no encoder levels"):
    pretrained.convert("llamagen", REDUCED)
  with pytest.raises(reader.CheckpointError, match="no EMA weights"):
    pretrained.convert("titok", REDUCED, ema=True)
  cut = tmp_path / "cut.bin"
  with open(REDUCED, "rb") as f:
    cut.write_bytes(f.read()[:5000])
  with pytest.raises(reader.CheckpointError, match="cut.bin"):
    pretrained.convert("titok", str(cut))


# ---- full sizes: the published tensor lists against the presets ----


def _full_tensors(name):
  with open(os.path.join(GOLDENS, "full_keys.json")) as f:
    shapes = json.load(f)[name]
  # Zero-stride arrays: the real shapes without the memory.
  zero = np.zeros((), np.float32)
  return titok.state_dict({k: np.broadcast_to(zero, s) for k, s in shapes.items()}, ema=False, source=name)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_the_published_architectures(name):
  tensors = _full_tensors(name)
  reference_count = sum(v.size for v in tensors.values())
  c = importlib.import_module(f"configs.{name}").get_config()
  tok = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  count = sum(v.size for v in jax.tree.leaves(nnx.state(tok, nnx.Param)))
  want = {"titok_l32": 641_054_735, "titok_b64": 204_814_095, "titok_s128": 83_674_639}[name]
  assert reference_count == count == want
  assert tok.token_shape == PRESETS[name]
  inferred = titok.config(tensors, name)
  assert config_lib.architecture_diff(inferred, c) == []
  config_lib.validate_config(c)


def test_full_size_s128_tensors_map_onto_the_preset():
  tensors = _full_tensors("titok_s128")
  c = importlib.import_module("configs.titok_s128").get_config()
  tok = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  expected = files.shapes(tok)
  mapped = layout.apply_rules(tensors, titok.table(c), expected, source="titok_s128")
  assert set(mapped) == set(expected)


# ---- the command line ----


def test_convert_command(tmp_path):
  out = tmp_path / "tok"
  res = subprocess.run(
    [sys.executable, "-m", "vqtok.convert", "titok", REDUCED, str(out)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert res.returncode == 0, res.stderr
  summary = json.loads(res.stdout)
  assert summary["token_shape_at_image_size"] == [8] and summary["codebook_size"] == 64
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
  again = vqtok.load_tokenizer(str(out))
  g = np.load(os.path.join(GOLDENS, "golden.npz"))
  np.testing.assert_array_equal(np.asarray(again.encode(_x(g))), g["ids"])


def test_one_d_token_files_encode_decode_and_eval(tmp_path):
  # 1-D tokens: indices of shape (N, K) through tokenize encode / decode and eval.py.
  run = lambda *a: subprocess.run([sys.executable, *a], cwd=ROOT, capture_output=True, text=True, timeout=600)
  tok_dir = str(tmp_path / "tok")
  tok, config, meta = pretrained.convert("titok", REDUCED)
  tokenizer_dir.save_tokenizer(tok, config, tok_dir, metadata=meta)
  images = tmp_path / "images"
  images.mkdir()
  g = np.load(os.path.join(GOLDENS, "golden.npz"))
  names = [str(n) for n in g["names"]]
  for name in names:
    shutil.copy(os.path.join(PHOTOS, f"{name}.png"), images / f"{name}.png")
  tokens = tmp_path / "tokens"
  res = run("-m", "vqtok.tokenize", "encode", f"--tokenizer={tok_dir}", f"--folder={images}", f"--output={tokens}")
  assert res.returncode == 0, res.stderr
  meta_t, idx, files = tokens_lib.read_tokens(str(tokens))
  assert idx.shape == (3, 8) and idx.dtype == np.int32 and tuple(meta_t["token_shape"]) == (8,)
  for i, file in enumerate(files):  # the reference's ids, preprocessing included
    np.testing.assert_array_equal(idx[i], g["ids"][names.index(os.path.basename(str(file))[:-4])])
  decoded = tmp_path / "decoded"
  res = run(
    "-m", "vqtok.tokenize", "decode", f"--tokenizer={tok_dir}", f"--tokens={tokens}", f"--output={decoded}",
    "--noreencode",
  )  # fmt: skip
  assert res.returncode == 0, res.stderr
  want = np.asarray(vqtok.load_tokenizer(tok_dir).decode(jnp.asarray(idx)))
  assert sorted(p.name for p in decoded.glob("*.png")) == sorted(f"{n}.png" for n in names)
  for i, file in enumerate(files):
    png = np.asarray(Image.open(decoded / os.path.basename(str(file))), np.float32) / 127.5 - 1
    assert np.abs(png - np.clip(want[i], -1, 1)).max() <= 1 / 127.5 + 1e-4
  # Token files of another length are refused by name.
  bad = tmp_path / "bad_tokens"
  shutil.copytree(tokens, bad)
  shard = dict(np.load(bad / "tokens-00000.npz"))
  shard["indices"] = np.zeros((3, 9), np.int32)
  np.savez(bad / "tokens-00000.npz", **shard)
  res = run("-m", "vqtok.tokenize", "decode", f"--tokenizer={tok_dir}", f"--tokens={bad}", f"--output={tmp_path / 'x'}")
  assert res.returncode != 0 and "tokens-00000.npz: indices of shape (3, 9) do not fit (n, 8)" in res.stderr
  res = run("eval.py", f"--tokenizer={tok_dir}", f"--folder={images}", f"--output={tmp_path / 'report'}")
  assert res.returncode == 0, res.stderr
  assert os.listdir(tmp_path / "report")


def test_bfloat16_compute_and_bad_family(converted, golden):
  _, config, _ = converted
  c = config.copy_and_resolve_references()
  c.model.dtype = "bfloat16"
  tok = models.build_tokenizer(c, rngs=nnx.Rngs(0))
  out, q = tok(_x(golden))
  assert out.dtype == jnp.float32 and out.shape == (3, 32, 32, 3) and np.isfinite(np.asarray(out)).all()
  assert q.indices.shape == (3, 8)
  c.model.vit_family = "titok2"
  with pytest.raises(ValueError, match=r"unknown ViT family 'titok2'; expected one of \('vqtok', 'titok'"):
    models.build_tokenizer(c, rngs=nnx.Rngs(0))
