"""TokenFlow (ByteFlow-AI/TokenFlow, tokenflow_clipb_32k_enhanced.pt): parity with the authors' own model.

tests/goldens/tokenflow/ holds ``reduced.pt`` ({"model": state_dict}, the layout of
tokenflow_clipb_32k_enhanced.pt) from the reference's ``TokenFlowFunc(teacher="clipb_224",
enhanced_decoder=True, infer_interpolate=True)`` with its hard-coded widths made small (CNN ch 8,
enhanced decoder ch 16 with 1 block per level, 8 GroupNorm groups, semantic ViTs of width 192 with
one block, 64-wide CLIP features, z 16, 64 codes of 32 + 8), every tensor random, and the
reference's outputs on two 256 x 256 images (scripts/parity/gen_tokenflow_model.py): the shared
ids of the 9 scales (817 per image), the quantizer inputs, the images and the semantic features
``decode_code`` gives from those ids.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT
from PIL import Image

from vqtok import config as config_lib
from vqtok import convert, models, pretrained, tokenize, tokenizer_dir
from vqtok.pretrained import layout, tokenflow

FAST_COMPILE = True
GOLDENS = os.path.join(ROOT, "tests", "goldens", "tokenflow")
REDUCED = os.path.join(GOLDENS, "reduced.pt")
# sum(numel) of the reference's tokenflow_clipb_32k_enhanced model's parameters (gen_tokenflow_model.py).
FULL_CLIPB = 376_569_643


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def converted():
  tok, config, meta = pretrained.convert("tokenflow", REDUCED)
  return tok, config, meta, dict(np.load(os.path.join(GOLDENS, "golden.npz")))


@nnx.jit
def _run(tok, x, ids):
  _, out = tok.quantize(x)
  return {
    "latents": tok._latents(x),
    "ids": out.indices,
    "decoded": tok.decode(ids),
    "features": tok.decoder.predict_features(tok.quantizer.indices_to_codes(ids)),
  }


@nnx.jit
def _ids(quantizer, latents):
  return quantizer(latents)[1].indices


def test_parity_with_the_reference(converted):
  tok, config, _, g = converted
  x = jnp.asarray(g["images"].astype(np.float32) / 127.5 - 1.0)
  out = _run(tok, x, jnp.asarray(g["ids"], jnp.int32))
  features = np.asarray(out["features"]).reshape(g["features"].shape)
  decoded = np.asarray(out["decoded"])
  errors = {
    "latents": _rel(out["latents"], g["latents"]),
    "features": _rel(features, g["features"]),
    "decoded_max_abs": float(np.abs(decoded[:, ::4, ::4] - g["decoded_sub"]).max()),
  }
  print({k: f"{v:.1e}" for k, v in errors.items()})
  np.testing.assert_array_equal(np.asarray(out["ids"]), g["ids"])
  assert errors["latents"] < 1e-5 and errors["features"] < 1e-5 and errors["decoded_max_abs"] < 1e-4
  assert abs(decoded.astype(np.float64).mean() - g["decoded_mean"]) < 1e-5
  assert abs(np.abs(decoded.astype(np.float64)).mean() - g["decoded_abs_mean"]) < 1e-5
  m = config.model
  assert (m.semantic_encoder, m.channels, m.decoder_channels, m.num_res_blocks, m.decoder_num_res_blocks) == (
    "clip",
    8,
    16,
    2,
    1,
  )
  assert config.quantizer.type == "multiscale" and config.quantizer.quantizer.type == "dual"
  assert tok.quantizer.num_tokens == 817 and config.image_size == 256 and tok.quantizer.index_depth is None


@pytest.fixture(scope="module")
def converted_xl():
  tok, config, _ = pretrained.convert("tokenflow", os.path.join(GOLDENS, "reduced_xl.pt"))
  return tok, config, dict(np.load(os.path.join(GOLDENS, "golden_xl.npz")))


def test_tokenflow_xl_parity_with_the_reference(converted_xl):
  """TokenFlow-XL's layout (SigLIP read at its next-to-last block, the CNN at 432 px, 384 px out), reduced."""
  tok, config, g = converted_xl
  x = jnp.asarray(g["images"].astype(np.float32) / 127.5 - 1.0)
  out = _run(tok, x, jnp.asarray(g["ids"], jnp.int32))
  features = np.asarray(out["features"]).reshape(g["features"].shape)
  decoded = np.asarray(out["decoded"])
  lat, ref = np.asarray(out["latents"]), g["latents"]
  errors = {
    "semantic_latents": _rel(lat[..., :32], ref[..., :32]),
    "pixel_latents": _rel(lat[..., 32:], ref[..., 32:]),
    "features": _rel(features, g["features"]),
    "decoded_max_abs": float(np.abs(decoded[:, ::4, ::4] - g["decoded_sub"]).max()),
  }
  ids = np.asarray(out["ids"])
  print({k: f"{v:.1e}" for k, v in errors.items()}, "ids equal", int((ids == g["ids"]).sum()), ids.size)
  # The quantizer on the reference's own latents gives its ids, all 2 x 2227.
  np.testing.assert_array_equal(np.asarray(_ids(tok.quantizer, jnp.asarray(g["latents"]))), g["ids"])
  # End to end: the 432 px random-weight CNN's float32 noise (1e-4 of its latents, as between torch's own
  # decode and decode_code: 2.4e-5) flips one near-tie at the 14 x 14 scale, and the residual carries it on.
  first = sum(s * s for s in config.quantizer.scales[:11])
  np.testing.assert_array_equal(ids[:, :first], g["ids"][:, :first])
  assert (ids == g["ids"]).mean() > 0.97
  assert errors["semantic_latents"] < 1e-5 and errors["pixel_latents"] < 3e-4 and errors["features"] < 1e-5
  assert errors["decoded_max_abs"] < 2e-3 and abs(decoded.astype(np.float64).mean() - g["decoded_mean"]) < 1e-5
  assert decoded.shape == (2, 384, 384, 3) and tok.quantizer.num_tokens == 2227 and tok.token_shape == (27, 27)
  m = config.model
  assert (m.semantic_encoder, m.semantic_layer, m.semantic_depth, m.semantic_num_heads) == ("siglip", 1, 2, 16)


def test_full_size_parameter_count_equals_the_reference():
  """The published layout at full size (shapes only, no weights): every tensor maps, the counts agree."""
  with open(os.path.join(GOLDENS, "tokenflow_clipb_32k_enhanced_keys.json")) as f:
    shapes = json.load(f)
  assert sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith("codebook_used")) == FULL_CLIPB
  tensors = {k: np.broadcast_to(np.zeros((), np.float32), s) for k, s in shapes.items()}
  tensors = tokenflow.state_dict({"model": tensors}, ema=False, source="tokenflow_clipb_32k_enhanced.pt")
  c = tokenflow.config(tensors, "tokenflow_clipb_32k_enhanced.pt")
  config_lib.validate_config(c, check_paths=False)
  abstract = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
  expected = {".".join(map(str, p)): v.shape for p, v in flat}
  mapped = layout.apply_rules(tensors, tokenflow.table(c), expected, ignore=tokenflow.IGNORE, source="full")
  # vqtok's BEiT attention has a key bias (zero in the file: the reference adds zeros), 768 per block.
  key_biases = 3 * 768
  assert len(mapped) == len(expected) and sum(int(np.prod(s)) for s in expected.values()) == FULL_CLIPB + key_biases
  m = c.model
  assert (m.channels, m.decoder_channels, m.num_res_blocks, m.decoder_num_res_blocks, m.z_channels) == (
    128,
    256,
    2,
    4,
    256,
  )
  assert (m.semantic_width, m.semantic_depth, m.semantic_num_heads, m.semantic_decoder_depth) == (768, 12, 12, 3)
  assert (m.semantic_feature_dim, m.code_dim, c.quantizer.quantizer.codebook_size) == (512, 40, 32768)
  assert abstract.token_shape == (16, 16) and abstract.quantizer.num_tokens == 817


def test_tokenflow_xl_full_size_maps_and_counts_as_the_reference():
  """tokenflow_siglip_32k.pt's names and shapes (published_keys.json, from gen_tokenflow.py --keys)."""
  with open(os.path.join(GOLDENS, "published_keys.json")) as f:
    ref = json.load(f)["tokenflow_siglip_32k"]
  tensors = {k: np.broadcast_to(np.zeros((), np.float32), s) for k, s in ref["shapes"].items()}
  for name in ("scaling_layer.shift", "scaling_layer.scale"):  # the buffers' values, not in the key file
    tensors[name] = np.full((1, 3, 1, 1), 0.5, np.float32)
  tensors = tokenflow.state_dict({"model": tensors}, ema=False, source="tokenflow_siglip_32k.pt")
  c = tokenflow.config(tensors, "tokenflow_siglip_32k.pt")
  config_lib.validate_config(c, check_paths=False)
  abstract = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
  expected = {".".join(map(str, p)): v.shape for p, v in flat}
  mapped = layout.apply_rules(tensors, tokenflow.table(c), expected, ignore=tokenflow.IGNORE, source="full")
  # The reference's count, plus the BEiT decoder's zero key biases (3 blocks x 1152).
  assert len(mapped) == len(expected) and sum(int(np.prod(s)) for s in expected.values()) == ref["count"] + 3 * 1152
  assert ref["count"] == 554_009_963
  m = c.model
  assert (m.semantic_width, m.semantic_depth, m.semantic_layer, m.semantic_num_heads) == (1152, 27, 26, 16)
  assert (m.channels, m.decoder_channels, m.decoder_num_res_blocks, m.semantic_feature_dim) == (128, 128, 2, 1152)
  assert c.image_size == 384 and abstract.token_shape == (27, 27) and abstract.quantizer.num_tokens == 2227


def test_token_files_store_the_shared_index(tmp_path, converted):
  """The converted directory, as ``python -m vqtok.convert tokenflow`` writes it, encodes to (N, 817) token files.

  (In-process ``tokenize.encode_to_files``, what ``python -m vqtok.tokenize encode`` runs: the command
  itself is tested with the other converters.)
  """
  tok, config, meta, g = converted
  assert "tokenflow" in pretrained.FORMATS and "tokenflow_clipb_32k_enhanced.pt" in convert.__doc__
  tok_dir = tmp_path / "tok"
  tokenizer_dir.save_tokenizer(tok, config, str(tok_dir), metadata=meta)
  assert tokenizer_dir.read_metadata(str(tok_dir))["source"] == "tokenflow"
  images = tmp_path / "images"
  images.mkdir()
  for i, img in enumerate(g["images"]):
    Image.fromarray(img).save(images / f"{i}.png")
  config = config.copy_and_resolve_references()
  config.data.update(source="folder", path=str(images), eval_split="")
  tokens = tmp_path / "tokens"
  kw = dict(batch_size=8, progress=False, tokenizer_metadata=meta, tokenizer_path=str(tok_dir))
  assert tokenize.encode_to_files(config, tok, 0, str(tokens), **kw)["encoded"] == 2
  shard = np.load(tokens / "tokens-00000.npz")
  order = np.argsort([os.path.basename(str(n)) for n in shard["names"]])
  assert shard["indices"].shape == (2, 817)
  np.testing.assert_array_equal(shard["indices"][order], g["ids"])


def test_other_files_are_refused():
  vitamin = {"model": {"quantize.embedding_vqkd.weight": np.ones((4, 32)), "encoder_vqkd.stem.conv1.weight": 0}}
  with pytest.raises(pretrained.CheckpointError, match="neither CLIP's ViT nor SigLIP \\(ViTamin\\?\\)"):
    tokenflow.state_dict(vitamin, ema=False, source="tokenflow_vitamin.pt")
  xl = {"model": {"scaling_layer.shift": np.zeros((1, 3, 1, 1))}}
  with pytest.raises(pretrained.CheckpointError, match="TokenFlow's SigLIP scaling is 0.5"):
    tokenflow.state_dict(xl, ema=False, source="tokenflow_siglip_32k.pt")
  with pytest.raises(
    pretrained.CheckpointError, match="not a tokenflow checkpoint: tensor 'quantize.embedding_vqkd.weight' is missing"
  ):
    pretrained.convert("tokenflow", os.path.join(ROOT, "tests", "goldens", "llamagen", "reduced.pt"))


def _small(quantizer_scales=(1, 2, 4), **fields):
  quantizer = {"type": "multiscale", "scales": list(quantizer_scales), "phi_ratio": 0.0, "form": "tokenflow"}
  quantizer["quantizer"] = {"type": "dual", "codebook_size": 16, "semantic_dim": 4}
  model = dict(
    cnn_family="taming", channels=8, channel_mult=(1, 2), num_res_blocks=1, attention=False, norm_groups=4,
    z_channels=8, code_dim=6, semantic_encoder="clip", semantic_width=64, semantic_depth=1, semantic_mlp_dim=64,
    semantic_num_heads=2, semantic_patch_size=2, semantic_pos_grid=4, semantic_decoder_depth=1,
    semantic_decoder_mlp_dim=64, semantic_decoder_num_heads=2, semantic_feature_dim=16,
  )  # fmt: skip
  model.update(fields)
  return config_lib.cnn_config(quantizer=quantizer, discriminator={}, image_size=8, **model)


def test_a_dual_tokenizer_needs_one_grid_and_a_dual_codebook():
  build = lambda c: nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  tok = build(_small(decoder_channels=16))
  assert tok.token_shape == (4, 4) and tok.decoder.pixel.conv_out.kernel.shape == (3, 3, 16, 3)
  # The token grid is the semantic ViT's (the CNN reads the image resized to it: TokenFlow-XL).
  assert build(_small(semantic_patch_size=4, semantic_pos_grid=2, quantizer_scales=[1, 2])).token_shape == (2, 2)
  with pytest.raises(ValueError, match=r"must end at the latent size 2 \(image_size=8 over the semantic ViT's patch 4"):
    config_lib.validate_config(_small(semantic_patch_size=4, semantic_pos_grid=2), check_paths=False)
  c = _small()
  c.quantizer = {"type": "vq", "codebook_size": 16}
  with pytest.raises(ValueError, match="model.semantic_encoder needs quantizer.type='dual'"):
    build(c)
  with pytest.raises(ValueError, match="semantic_encoder"):
    config_lib.validate_config(_small(semantic_encoder="dino"), check_paths=False)
