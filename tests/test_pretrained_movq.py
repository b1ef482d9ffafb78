"""MoVQ (Kandinsky 2.2's / 3's ``movq``, a diffusers VQModel with spatial norms): parity with diffusers' code.

tests/goldens/movq/ holds a reduced-width random-weight ``VQModel(norm_type=
"spatial")`` written by diffusers' ``save_pretrained`` (block_out_channels 32-64,
one res block per level, attention at the lowest level and in the middle, 4-dim
latents, 64 codes) and the outputs of diffusers' own code on three photos
(scripts/parity/gen_movq.py). Tolerances as for the other families: ids equal
(no near-ties in the fixture), latents within 1e-5 relative, decoded images
within 1e-4 (the random-weight outputs reach ~10).
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT
from PIL import Image
from safetensors.numpy import load_file, save_file

from vqtok import files, models, pretrained
from vqtok.data import transforms
from vqtok.pretrained import layout, movq, reader

GOLDENS = os.path.join(ROOT, "tests", "goldens", "movq")
REDUCED = os.path.join(GOLDENS, "reduced")
PHOTOS = os.path.join(os.path.dirname(__import__("skimage").__file__), "data")


def _nhwc(a):
  return np.transpose(a, (0, 2, 3, 1))


@pytest.fixture(scope="module")
def converted():
  tok, config, meta = pretrained.convert("movq", REDUCED)
  return tok, config, meta, np.load(os.path.join(GOLDENS, "golden.npz"))


@nnx.jit
def _run(tok, x, ids, h):
  """Everything the parity tests compare, in one program (two decoder passes) per input shape."""
  z_q = tok.quantizer.indices_to_codes(ids)
  rolled = tok.quantizer.indices_to_codes(jnp.roll(ids, 1, axis=-1))
  # Kandinsky's pipelines decode continuous latents with force_not_quantize=True: reconstruct(latents).
  decoded, other_ids, reconstructed = jnp.split(tok.reconstruct(jnp.concatenate([z_q, rolled, h])), 3)
  return {
    "latents": tok._latents(x),
    "ids": tok.encode(x),
    "decoded": decoded,
    "rolled": other_ids,
    "reconstructed": reconstructed,
    # The decoder's input with other codes in its norms: post_quant_conv's input conditions them.
    "other_codes": tok.decoder(tok._decoder_input(z_q), tok._decoder_input(z_q)),
  }


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("suffix", ["", "_nonsquare"])
def test_parity_with_diffusers(converted, suffix):
  tok, _, _, g = converted
  h = _nhwc(g["h_prequant" + suffix])
  ids = g["indices" + suffix]
  out = _run(tok, jnp.asarray(_nhwc(g["x" + suffix])), jnp.asarray(ids, jnp.int32), jnp.asarray(h))
  assert _rel(out["latents"], h) < 1e-5
  agree = (np.asarray(out["ids"]) == ids) | g["near_tie" + suffix]
  assert agree.all(), f"{int((~agree).sum())} of {ids.size} ids differ"
  gold = _nhwc(g["decoded" + suffix])
  assert np.abs(np.asarray(out["decoded"]) - gold).max() < 1e-4
  assert np.abs(np.asarray(out["reconstructed"]) - _nhwc(g["decoded_latents" + suffix])).max() < 1e-4
  # The tolerance can fail: other ids, or other codes in the spatial norms, give other images.
  assert np.abs(np.asarray(out["rolled"]) - gold).max() > 1e-2
  assert tok.decoder.reads_codes and np.abs(np.asarray(out["other_codes"]) - gold).max() > 1e-2


def test_config_and_preprocessing_are_kandinskys(converted):
  _, config, meta, g = converted
  assert config.model.cnn_family == "movq" and config.model.z_channels == 4 and config.model.attention
  assert tuple(config.model.input_range) == (-1.0, 1.0)
  assert meta["source"] == "movq" and meta["weights"] == "model" and len(meta["source_sha256"]) == 64
  fn = transforms.PREPROCESS[config.data.preprocess]
  for i, name in enumerate(g["names"]):
    img = np.asarray(Image.open(os.path.join(PHOTOS, f"{name}.png")).convert("RGB"))
    np.testing.assert_array_equal(fn(img, 32), g["images_uint8"][i])
    if img.shape[:2] != (32, 32):  # the box reduction is what tells it from MaskGIT's resize
      assert not np.array_equal(transforms.squash_bicubic(img, 32), g["images_uint8"][i])


def _copy(tmp_path, edit_config=None, edit_tensors=None):
  out = tmp_path / "movq"
  out.mkdir()
  with open(os.path.join(REDUCED, "config.json")) as f:
    cfg = json.load(f)
  if edit_config:
    edit_config(cfg)
  (out / "config.json").write_text(json.dumps(cfg))
  tensors = load_file(os.path.join(REDUCED, "diffusion_pytorch_model.safetensors"))
  if edit_tensors:
    tensors = edit_tensors(tensors)
  save_file(tensors, str(out / "diffusion_pytorch_model.safetensors"))
  return str(out)


def test_deprecated_attention_names_convert_alike(tmp_path, converted):
  # diffusers' loader renames query/key/value/proj_attn to to_q/to_k/to_v/to_out.0 (older files).
  old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

  def rename(t):
    out = {}
    for k, v in t.items():
      for new, was in old.items():
        k = k.replace(f".{new}.", f".{was}.")
      out[k] = v
    return out

  path = _copy(tmp_path, edit_tensors=rename)
  assert any(".proj_attn." in k for k in load_file(os.path.join(path, "diffusion_pytorch_model.safetensors")))
  tok, _, _ = pretrained.convert("movq", path)
  g = converted[3]
  out = _run(tok, jnp.asarray(_nhwc(g["x"])), jnp.asarray(g["indices"], jnp.int32), jnp.asarray(_nhwc(g["h_prequant"])))
  np.testing.assert_array_equal(np.asarray(out["ids"]), g["indices"])


@pytest.mark.parametrize(
  "edit,match",
  [
    (
      lambda c: c.update(_class_name="AutoencoderKL"),
      r"movq: a diffusers AutoencoderKL directory; movq converts a VQModel",
    ),
    (lambda c: c.update(norm_type="group"), r"movq: a VQModel with norm_type='group'; MoVQ has norm_type='spatial'"),
    (lambda c: c.pop("norm_type"), r"norm_type=None; MoVQ"),
    (lambda c: c.update(norm_num_groups=16), r"norm_num_groups=16"),
  ],
)
def test_other_diffusers_models_are_refused_in_one_line(tmp_path, edit, match):
  path = _copy(tmp_path, edit_config=edit)
  with pytest.raises(reader.CheckpointError, match=match) as e:
    pretrained.convert("movq", path)
  assert "\n" not in str(e.value)


def test_bad_paths_and_tensors(tmp_path):
  with pytest.raises(reader.CheckpointError, match="give the diffusers model directory"):
    pretrained.convert("movq", os.path.join(REDUCED, "config.json"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(reader.CheckpointError, match="empty: none of diffusion_pytorch_model.safetensors"):
    pretrained.convert("movq", str(empty))
  with pytest.raises(reader.CheckpointError, match="no spatial norms"):
    pretrained.convert(
      "movq", _copy(tmp_path, edit_tensors=lambda t: {k: v for k, v in t.items() if "conv_y" not in k})
    )
  shutil.rmtree(tmp_path / "movq")
  drop = lambda t: {k: v for k, v in t.items() if k != "decoder.up_blocks.1.resnets.0.norm2.conv_b.bias"}
  with pytest.raises(reader.CheckpointError, match=r"missing tensors for decoder\.res\.1\.0\.norm2\.beta\.bias"):
    pretrained.convert("movq", _copy(tmp_path, edit_tensors=drop))
  with pytest.raises(reader.CheckpointError, match="no EMA weights"):
    pretrained.convert("movq", REDUCED, ema=True)


def test_kandinsky22_movq_builds_at_full_size():
  # The tensors of a VQModel built from Kandinsky 2.2's published movq config (gen_movq.py): every
  # one maps onto vqtok's build of the config read off them, and the parameter counts agree.
  with open(os.path.join(GOLDENS, "kandinsky22_keys.json")) as f:
    shapes = {k: tuple(v) for k, v in json.load(f).items()}
  tensors = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}  # shapes only, no memory
  config = movq.config(tensors, "kandinsky22")
  abstract = nnx.eval_shape(lambda: models.build_tokenizer(config, rngs=nnx.Rngs(0)))
  count = sum(v.size for v in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  assert count == sum(int(np.prod(s)) for s in shapes.values()) == 67_832_495
  mapped = layout.apply_rules(tensors, movq.table(config), files.shapes(abstract), source="kandinsky22")
  assert len(mapped) == len(jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  assert tuple(config.model.channel_mult) == (1, 2, 2, 4) and config.quantizer.codebook_size == 16384
  assert abstract.token_shape == (32, 32)  # f8 at the config's 256 px
