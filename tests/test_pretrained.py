"""Published tokenizers: parity with the authors' code, the converter's checks, full sizes, the command lines.

The goldens in tests/goldens/ were made by the reference repositories' own code
on reduced-width random-weight models saved in the published file layouts
(scripts/parity/README.md). Tolerances: token ids exactly equal except on
tokens the goldens mark as near-ties (best and second distances within 1e-5
relative, SimVQ's to its projected codebook; IBQ: best and second logits; Open-MAGVIT2: a latent channel within
1e-5 of zero, relative to the latent's scale; there are none in these fixtures); latents within 1e-5 relative
(norm of the difference over the norm); decoded images within 1e-4.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage
import torchfile
from flax import nnx, serialization
from helpers import ROOT
from PIL import Image

from vqtok import config as config_lib
from vqtok import files, models, pretrained, tokenizer_dir
from vqtok.data import transforms
from vqtok.pretrained import layout, reader

GOLDENS = os.path.join(ROOT, "tests", "goldens")
PHOTOS = os.path.join(os.path.dirname(skimage.__file__), "data")
# family -> (reduced checkpoint, image size of the goldens, preprocessing)
FIXTURES = {
  "llamagen": ("reduced.pt", 32, "adm_center_crop"),
  "taming": ("reduced.ckpt", 32, "short_side_bilinear"),
  "maskgit": ("reduced_checkpoint", 64, "squash_bicubic"),
  "open-magvit2": ("reduced.ckpt", 32, "short_side_bilinear"),
  "ibq": ("reduced.ckpt", 32, "short_side_bilinear"),
  "simvq": ("reduced.ckpt", 32, "torchvision_bilinear_center_crop"),
}
CNN_FAMILY = {"maskgit": "maskgit", "open-magvit2": "magvit2", "simvq": "magvit2_plain"}
LIT_EMA = ("open-magvit2", "ibq", "simvq")  # Lightning files with LitEma copies, evaluated with them


def _fixture(family):
  name, size, _ = FIXTURES[family]
  return os.path.join(GOLDENS, family, name), np.load(os.path.join(GOLDENS, family, "golden.npz")), size


def _golden_arrays(family, g, suffix=""):
  """(model input in [-1, 1] NHWC, latent NHWC, ids, decoded in [-1, 1] NHWC, near-tie mask)."""
  if family == "maskgit":  # [0, 1] NHWC in the reference
    return g["images"] * 2 - 1, g["latents"], g["ids"], g["decoded"] * 2 - 1, g["near_tie"]
  nhwc = lambda a: np.transpose(a, (0, 2, 3, 1))
  return (
    nhwc(g["x" + suffix]),
    nhwc(g["h_prequant" + suffix]),
    g["indices" + suffix],
    nhwc(g["decoded" + suffix]),
    g["near_tie" + suffix],
  )


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def converted(request):
  family = request.param
  path, g, size = _fixture(family)
  tok, config, meta = pretrained.convert(family, path)
  return family, tok, config, meta, g


def test_parity_with_the_reference(converted):
  family, tok, config, _, g = converted
  for suffix in ("", "_nonsquare") if family != "maskgit" else ("",):
    x, latent, ids, decoded, near_tie = _golden_arrays(family, g, suffix)
    z = np.asarray(tok._latents(jnp.asarray(x, jnp.float32)))
    assert _rel(z, latent) < 1e-5, family
    got = np.asarray(tok.encode(jnp.asarray(x, jnp.float32)))
    assert got.shape == ids.shape
    agree = (got == ids) | near_tie
    assert agree.all(), f"{family}{suffix}: {int((~agree).sum())} of {ids.size} ids differ"
    out = np.asarray(tok.decode(jnp.asarray(ids, jnp.int32)))
    assert np.abs(out - decoded).max() < 1e-4, family


def test_decoding_golden_ids_is_not_trivially_equal(converted):
  # The tolerance above must be able to fail: another family's weights decode differently.
  family, tok, _, _, g = converted
  _, _, ids, decoded, _ = _golden_arrays(family, g)
  wrong = np.asarray(tok.decode(jnp.asarray(np.roll(ids, 1, axis=-1), jnp.int32)))
  assert np.abs(wrong - decoded).max() > 1e-2


def test_converted_config_names_the_family(converted):
  family, _, config, meta, _ = converted
  assert config.data.preprocess == FIXTURES[family][2]
  assert config.model.cnn_family == CNN_FAMILY.get(family, "taming")
  assert tuple(config.model.input_range) == ((0.0, 1.0) if family == "maskgit" else (-1.0, 1.0))
  assert meta["source"] == family and len(meta["source_sha256"]) == 64
  assert meta["weights"] == ("ema" if family in LIT_EMA else "model")
  if family == "open-magvit2":  # the reference's ids: 2 ** arange(bits)
    assert config.quantizer.bit_order == "lsb_first"
  config_lib.validate_config(config)


@pytest.mark.parametrize("family", sorted(FIXTURES))
def test_preprocessing_matches_the_reference(family):
  _, g, size = _fixture(family)
  names = g["image_names"] if family == "maskgit" else g["names"]
  fn = transforms.PREPROCESS[FIXTURES[family][2]]
  for i, name in enumerate(names):
    img = np.asarray(Image.open(os.path.join(PHOTOS, f"{name}.png")).convert("RGB"))
    out = fn(img, size)
    if family == "maskgit":
      np.testing.assert_allclose(out / np.float32(255), g["images"][i], atol=1e-6)
    else:
      np.testing.assert_array_equal(out, g["images_uint8"][i])


def test_llamagen_ema_weights_are_picked_with_ema(tmp_path):
  # LlamaGen's training script saves "model" and "ema" (and an argparse.Namespace under "args").
  path, g, _ = _fixture("llamagen")
  weights = reader.read_checkpoint(path)["model"]
  rng = np.random.default_rng(0)
  noisy = {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in weights.items()}
  train_file = str(tmp_path / "vq_train.pt")
  torchfile.save({"model": noisy, "ema": dict(weights), "steps": 1000, "args": None}, train_file)
  x, _, ids, _, _ = _golden_arrays("llamagen", g)
  ema_tok, _, meta = pretrained.convert("llamagen", train_file, ema=True)
  assert meta["weights"] == "ema"
  np.testing.assert_array_equal(np.asarray(ema_tok.encode(jnp.asarray(x))), ids)
  raw_tok, _, _ = pretrained.convert("llamagen", train_file)
  assert not np.array_equal(np.asarray(raw_tok.encode(jnp.asarray(x))), ids)


@pytest.mark.parametrize("family", LIT_EMA)
def test_lit_ema_is_the_default_and_noema_takes_the_raw_weights(tmp_path, family):
  # The goldens are the EMA weights' outputs (the reference evaluates under ema_scope).
  path, g, _ = _fixture(family)
  x, _, ids, _, _ = _golden_arrays(family, g)
  raw, _, meta = pretrained.convert(family, path, ema=False)
  assert meta["weights"] == "model"
  assert not np.array_equal(np.asarray(raw.encode(jnp.asarray(x))), ids)
  ema, _, meta = pretrained.convert(family, path, ema=True)
  np.testing.assert_array_equal(np.asarray(ema.encode(jnp.asarray(x))), ids)
  # Without LitEma copies, the default is the raw weights and --ema is refused by name.
  obj = reader.read_checkpoint(path)
  sd = {k: v for k, v in obj["state_dict"].items() if not k.startswith("model_ema.")}
  plain = str(tmp_path / "plain.ckpt")
  torchfile.save({"state_dict": sd}, plain)
  assert pretrained.convert(family, plain)[2]["weights"] == "model"
  with pytest.raises(reader.CheckpointError, match=r"plain\.ckpt: this .* checkpoint holds no EMA weights"):
    pretrained.convert(family, plain, ema=True)
  del obj["state_dict"]["model_ema.decoderconv_outweight"]
  torchfile.save({"state_dict": obj["state_dict"]}, plain)
  with pytest.raises(reader.CheckpointError, match=r"EMA copy of 'decoder\.conv_out\.weight'"):
    pretrained.convert(family, plain)


def test_open_magvit2_refuses_a_taming_file():
  path, _, _ = _fixture("taming")
  with pytest.raises(reader.CheckpointError, match=r"not a open-magvit2 checkpoint.*adaptive"):
    pretrained.convert("open-magvit2", path)


def test_simvq_and_open_magvit2_files_are_told_apart():
  # The same CNN names; Open-MAGVIT2's decoder has adaptive norms, SimVQ's quantizer a projected codebook.
  with pytest.raises(reader.CheckpointError, match=r"not a simvq checkpoint.*embedding_proj"):
    pretrained.convert("simvq", _fixture("open-magvit2")[0])
  with pytest.raises(reader.CheckpointError, match=r"'quantize\.embedding\.weight'.*another family"):
    pretrained.convert("open-magvit2", _fixture("simvq")[0])  # its frozen codebook has no EMA copy
  with pytest.raises(reader.CheckpointError, match=r"not a open-magvit2 checkpoint.*adaptive"):
    pretrained.convert("open-magvit2", _fixture("simvq")[0], ema=False)


def test_simvq_frozen_codebook_is_the_models_own_and_its_map_has_a_bias():
  # LitEma copies only parameters that require grad: the frozen table has no model_ema copy.
  path, _, _ = _fixture("simvq")
  sd = reader.read_checkpoint(path)["state_dict"]
  assert "quantize.embedding.weight" in sd and "model_ema.quantizeembeddingweight" not in sd
  tok, config, _ = pretrained.convert("simvq", path)
  assert config.quantizer.simvq and config.quantizer.simvq_bias
  np.testing.assert_array_equal(np.asarray(tok.quantizer.codebook[...]), sd["quantize.embedding.weight"])
  np.testing.assert_array_equal(
    np.asarray(tok.quantizer.codebook_map.bias[...]), sd["model_ema.quantizeembedding_projbias"]
  )


# ---- bad input: one clear error naming the file and the key ----


def _torch_tensors(family):
  path, _, _ = _fixture(family)
  obj = reader.read_checkpoint(path)
  return obj, ("model" if family == "llamagen" else "state_dict")


@pytest.mark.parametrize(
  "edit,match",
  [
    (lambda sd: sd.pop("decoder.conv_out.bias"), r"missing tensors for decoder\.conv_out\.bias"),
    (lambda sd: sd.update({"encoder.extra.weight": np.zeros(3, np.float32)}), r"unexpected tensor 'encoder\.extra"),
    (lambda sd: sd.update({"quant_conv.weight": np.zeros((8, 48, 3, 3), np.float32)}), r"'quant_conv\.weight'.*1x1"),
    (
      lambda sd: sd.update({"encoder.conv_in.bias": np.zeros(7, np.float32)}),
      r"'encoder\.conv_in\.bias' has shape \(7,\); 'encoder\.conv_in\.bias' needs \(32,\)",
    ),
  ],
)
def test_converter_names_the_bad_tensor(tmp_path, edit, match):
  obj, key = _torch_tensors("llamagen")
  sd = dict(obj[key])
  edit(sd)
  path = str(tmp_path / "bad.pt")
  torchfile.save({key: sd}, path)
  with pytest.raises(reader.CheckpointError, match=match) as e:
    pretrained.convert("llamagen", path)
  assert "bad.pt" in str(e.value)


def test_checkpoint_of_another_family_is_refused():
  path, _, _ = _fixture("taming")
  with pytest.raises(reader.CheckpointError, match=r"reduced\.ckpt: no encoder levels found.*another family"):
    pretrained.convert("llamagen", path)
  with pytest.raises(reader.CheckpointError, match="not a maskgit checkpoint"):
    pretrained.convert("maskgit", path)
  mg, _, _ = _fixture("maskgit")
  with pytest.raises(reader.CheckpointError, match="not a taming checkpoint"):
    pretrained.convert("taming", mg)


@pytest.mark.parametrize("family", sorted(FIXTURES))
def test_truncated_and_garbage_files(tmp_path, family):
  path, _, _ = _fixture(family)
  with open(path, "rb") as f:
    data = f.read()
  cut = tmp_path / "cut"
  cut.write_bytes(data[: len(data) // 2])
  with pytest.raises(reader.CheckpointError, match="cut"):
    pretrained.convert(family, str(cut))
  junk = tmp_path / "junk.bin"
  junk.write_bytes(b"not a checkpoint at all")
  with pytest.raises(reader.CheckpointError, match="junk.bin: unknown checkpoint format"):
    pretrained.convert(family, str(junk))
  with pytest.raises(reader.CheckpointError, match="no such file"):
    pretrained.convert(family, str(tmp_path / "missing.pt"))


def test_reader_runs_no_pickled_code(tmp_path):
  # A pickle that would call os.system if unpickled normally comes back inert.
  import pickle

  class Evil:
    def __reduce__(self):
      return (os.system, ("touch " + str(tmp_path / "pwned"),))

  path = tmp_path / "evil.pt"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"model": Evil()}, protocol=2))
  obj = reader.read_checkpoint(str(path))
  assert isinstance(obj["model"], reader.Opaque)
  assert not (tmp_path / "pwned").exists()


def test_rules_table_is_checked_both_ways():
  expected = {"a.kernel": (1, 1, 2, 3), "a.bias": (3,)}
  table = layout.rules((r"conv\.weight", "a.kernel", layout.conv), (r"conv\.bias", "a.bias"))
  w = np.zeros((3, 2, 1, 1), np.float32)
  out = layout.apply_rules({"conv.weight": w, "conv.bias": np.zeros(3)}, table, expected)
  assert out["a.kernel"].shape == (1, 1, 2, 3)
  with pytest.raises(reader.CheckpointError, match="missing tensors for a.bias"):
    layout.apply_rules({"conv.weight": w}, table, expected)
  with pytest.raises(reader.CheckpointError, match="both map to"):
    dup = table + layout.rules((r"conv2\.bias", "a.bias"))
    layout.apply_rules({"conv.weight": w, "conv.bias": np.zeros(3), "conv2.bias": np.zeros(3)}, dup, expected)


# ---- full sizes: random weights in the published layout, counted against the reference ----

FULL = [
  ("llamagen", "llamagen_vq16", 71_883_403, (16, 16), "llamagen_vq16"),
  ("llamagen", "llamagen_vq8", 70_109_835, (32, 32), None),
  ("taming", "taming_f16-1024", 72_141_699, (16, 16), "vqgan_f16"),
  ("taming", "taming_f16-16384", 76_073_859, (16, 16), None),
  ("maskgit", "maskgit", 54_515_587, (16, 16), "maskgit_vqgan"),
  ("open-magvit2", "open-magvit2_256", 115_127_829, (16, 16), "magvit2_lfq"),
  ("open-magvit2", "open-magvit2_128", 112_021_653, (16, 16), "magvit2_lfq_128"),
  ("ibq", "ibq_1024", 107_049_859, (16, 16), None),
  ("simvq", "simvq_1024", 64_281_987, (16, 16), None),
  ("simvq", "simvq_8192", 65_199_491, (16, 16), None),
  ("simvq", "simvq_65536", 72_539_523, (16, 16), None),
  ("simvq", "simvq_262144", 97_705_347, (16, 16), None),
]


def _write_full(family, name, path):
  with open(os.path.join(GOLDENS, family, f"{name}_keys.json")) as f:
    table = json.load(f)
  rng = np.random.default_rng(0)
  if family == "maskgit":
    params = {}
    for dotted, shape in table["params"].items():
      node = params
      *parents, leaf = dotted.split("/")[1:] if dotted.startswith("params/") else dotted.split("/")
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = rng.standard_normal(shape, np.float32) * 0.02
    with open(path, "wb") as f:
      f.write(serialization.msgpack_serialize({"params": params}))
    return table["param_counts"]["total"]
  weights = {k: np.asarray(rng.standard_normal(s, np.float32) * 0.02) for k, s in table.items()}
  torchfile.save({"model": weights} if family == "llamagen" else {"state_dict": weights, "epoch": 3}, path)
  return sum(int(np.prod(s)) for k, s in table.items() if not (k.startswith("loss.") or k.endswith("codebook_used")))


@pytest.mark.slow
@pytest.mark.parametrize("family,name,count,grid,preset", FULL, ids=[f[1] for f in FULL])
def test_full_size_random_weights_convert(tmp_path, family, name, count, grid, preset):
  path = str(tmp_path / name)
  reference_count = _write_full(family, name, path)
  assert reference_count == count
  tok, config, _ = pretrained.convert(family, path)
  arrays = files.arrays(tok)
  assert sum(v.size for v in arrays.values()) == count
  assert tok.token_shape == grid
  if preset:  # the family's preset is the reference architecture
    import importlib

    c = importlib.import_module(f"configs.{preset}").get_config()
    abstract = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
    assert sum(v.size for v in jax.tree.leaves(nnx.state(abstract, nnx.Param))) == count
    assert config_lib.architecture_diff(config, c) == []


# ---- the command lines: convert, encode, decode ----


def _run(*args, cwd=ROOT):
  return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("family", sorted(FIXTURES))
def test_convert_encode_decode_commands(tmp_path, family):
  path, g, size = _fixture(family)
  tok_dir = tmp_path / "tok"
  res = _run("-m", "vqtok.convert", family, path, str(tok_dir))
  assert res.returncode == 0, res.stderr
  assert sorted(os.listdir(tok_dir)) == ["config.json", "model.safetensors"]
  assert json.loads(res.stdout)["format"] == family
  images = tmp_path / "images"
  images.mkdir()
  names = g["image_names"] if family == "maskgit" else g["names"]
  for name in names:
    shutil.copy(os.path.join(PHOTOS, f"{name}.png"), images / f"{name}.png")
  tokens = tmp_path / "tokens"
  res = _run(
    "-m", "vqtok.tokenize", "encode", f"--tokenizer={tok_dir}", f"--folder={images}", f"--output={tokens}",
    f"--image_size={size}", "--batch_size=8",
  )  # fmt: skip
  assert res.returncode == 0, res.stderr
  shard = np.load(tokens / "tokens-00000.npz")
  order = np.argsort([os.path.basename(str(n)) for n in shard["names"]])
  want = np.argsort([str(n) for n in names])
  ids = _golden_arrays(family, g)[2]
  np.testing.assert_array_equal(shard["indices"][order], ids[want])
  decoded = tmp_path / "decoded"
  res = _run(
    "-m", "vqtok.tokenize", "decode", f"--tokenizer={tok_dir}", f"--tokens={tokens}", f"--output={decoded}",
    "--batch_size=8", "--noreencode",
  )  # fmt: skip
  assert res.returncode == 0, res.stderr
  gold = _golden_arrays(family, g)[3]
  for i, name in enumerate(names):
    png = np.asarray(Image.open(decoded / f"{name}.png"), np.float32) / 127.5 - 1
    assert np.abs(png - np.clip(gold[i], -1, 1)).max() <= 1 / 127.5 + 1e-4


def test_convert_command_errors_are_one_line_and_write_nothing(tmp_path):
  out = tmp_path / "out"
  bad = tmp_path / "half.pt"
  path, _, _ = _fixture("llamagen")
  with open(path, "rb") as f:
    bad.write_bytes(f.read()[:1000])
  res = _run("-m", "vqtok.convert", "llamagen", str(bad), str(out))
  assert res.returncode != 0
  assert res.stderr.strip().count("\n") == 0 and "half.pt" in res.stderr
  assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".out")]
  res = _run("-m", "vqtok.convert", "nope", path, str(out))
  assert res.returncode != 0 and "unknown format 'nope'" in res.stderr
  res = _run("-m", "vqtok.convert", "--help")
  assert res.returncode == 0 and all(f in res.stdout for f in pretrained.FORMATS | pretrained.TEACHERS)
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  res = _run("-m", "vqtok.convert", "llamagen", path, str(out))
  assert res.returncode != 0 and "not empty" in res.stderr
  assert (out / "keep.txt").read_text() == "mine"


def test_tokenizer_dir_round_trip_and_load_tokenizer(tmp_path):
  import vqtok

  path, g, _ = _fixture("taming")
  tok, config, meta = pretrained.convert("taming", path)
  saved = tokenizer_dir.save_tokenizer(tok, config, str(tmp_path / "tok"), metadata=meta)
  again = vqtok.load_tokenizer(saved)
  x = jnp.asarray(_golden_arrays("taming", g)[0])
  np.testing.assert_array_equal(np.asarray(again.encode(x)), np.asarray(tok.encode(x)))
  assert tokenizer_dir.read_metadata(saved)["source_sha256"] == meta["source_sha256"]
  with pytest.raises(FileExistsError, match="not empty"):
    tokenizer_dir.save_tokenizer(tok, config, saved, metadata=meta)
