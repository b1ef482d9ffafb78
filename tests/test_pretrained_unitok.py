"""UniTok (FoundationVision/UniTok, unitok_tokenizer.pth): parity with the authors' own model.

tests/goldens/unitok/ holds ``unitok_tiny.pth`` ({'args', 'trainer': {'unitok': state_dict}}, the
published layout) from the reference's ``UniTok`` class with a reduced ViTamin (MBConv widths 8, 16 of
1 and 2 blocks, a 32-wide ViT of 2 blocks and 2 heads, a decoder with UniTok's (4, 2) MBConv blocks of
16 and 8), ``AttnProjection``s 32 <-> 16, 4 codebooks of 32 codes, random weights, and its outputs on
two 32 x 32 images (scripts/parity/gen_unitok.py): the quantizer inputs (after ``quant_proj``), the ids
of ``img_to_idx``, and ``idx_to_img``'s images before and after its clamp. ``published_keys.json`` holds
the names and shapes of the published configuration's state dict (vitamin_large at 256 px) and the
reference's parameter counts.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT, preset
from PIL import Image

from vqtok import config as config_lib
from vqtok import convert, models, pretrained, tokenizer_dir
from vqtok.data import transforms
from vqtok.models import tokenizer as tokenizer_lib
from vqtok.pretrained import layout, unitok
from vqtok.pretrained.reader import read_checkpoint

FAST_COMPILE = True
GOLDENS = os.path.join(ROOT, "tests", "goldens", "unitok")
TINY = os.path.join(GOLDENS, "unitok_tiny.pth")


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def converted():
  tok, config, meta = pretrained.convert("unitok", TINY)
  return tok, config, meta, dict(np.load(os.path.join(GOLDENS, "tokenizer.npz")))


@nnx.jit
def _run(tok, x, ids):
  _, out = tok.quantize(x)
  return {"latents": tok._latents(x), "ids": out.indices, "decoded": tok.decode(ids)}


def test_parity_with_the_reference(converted):
  tok, config, meta, g = converted
  x = jnp.asarray(g["images"].transpose(0, 2, 3, 1))
  b, groups, n = g["ids"].shape
  ref_ids = g["ids"].transpose(0, 2, 1).reshape(b, 2, 2, groups)  # (B, G, L) -> (B, h, w, G)
  out = _run(tok, x, jnp.asarray(ref_ids, jnp.int32))
  decoded = np.asarray(out["decoded"]).transpose(0, 3, 1, 2)
  errors = {
    "features": _rel(np.asarray(out["latents"]).reshape(g["features"].shape), g["features"]),
    "decoded_raw": _rel(decoded, g["decoded_raw"]),
    "decoded_max_abs": float(np.abs(np.clip(decoded, -1, 1) - g["decoded"]).max()),
  }
  print({k: f"{v:.1e}" for k, v in errors.items()})
  np.testing.assert_array_equal(np.asarray(out["ids"]), ref_ids)
  assert errors["features"] < 1e-5 and errors["decoded_raw"] < 1e-5 and errors["decoded_max_abs"] < 1e-4
  m = config.model
  sizes = (m.vit_family, m.vit_projection, m.width, m.depth, m.num_heads, m.patch_size)
  assert sizes == ("vitamin", "attn", 32, 2, 2, 16)
  assert (tuple(m.conv_widths), tuple(m.conv_depths)) == ((8, 16), (1, 2))
  assert (tuple(m.decoder_conv_widths), tuple(m.decoder_conv_depths)) == ((16, 8), (4, 2))
  assert config.quantizer.num_groups == 4 and config.quantizer.quantizer.codebook_size == 32
  assert tok.token_shape == (2, 2) and meta["weights"] == "model"


def test_full_size_parameter_count_equals_the_reference():
  """The published layout at full size (shapes only): every tensor maps; the reference's count, the preset's."""
  with open(os.path.join(GOLDENS, "published_keys.json")) as f:
    ref = json.load(f)
  tensors = {k: np.broadcast_to(np.zeros((), np.float32), s) for k, s in ref["shapes"].items()}
  obj = {"args": ref["args"], "trainer": {"unitok": tensors}}
  tensors = unitok.state_dict(obj, ema=False, source="unitok_tokenizer.pth")
  c = unitok.config(tensors, "unitok_tokenizer.pth", **unitok.options(obj, "unitok_tokenizer.pth"))
  config_lib.validate_config(c, check_paths=False)
  abstract = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
  expected = {".".join(map(str, p)): v.shape for p, v in flat}
  mapped = layout.apply_rules(tensors, unitok.table(c), expected, ignore=unitok.IGNORE, source="full")
  count = sum(int(np.prod(s)) for s in expected.values())
  # The reference's image tokenizer (encoder, quant_proj, quantizer, post_quant_proj, decoder) less the
  # frozen zero encoder.pos_embed (1 x 1 x 1024), which vqtok does not hold.
  assert ref["image_tokenizer_parameters"] == 695_859_139 and ref["frozen"] == 1024
  assert len(mapped) == len(expected) and count == 695_858_115
  full = preset("unitok", arg=None)
  assert config_lib.architecture_diff(c, full) == []
  assert abstract.token_shape == (16, 16) and abstract.quantizer.codebook_size == 4096


def test_convert_lists_unitok():
  assert "unitok" in pretrained.FORMATS and "unitok_tokenizer.pth" in convert.__doc__


def test_registers_and_ema_are_refused():
  with pytest.raises(pretrained.CheckpointError, match="EMA"):
    unitok.state_dict({}, ema=True, source="x.pth")
  shapes = {"encoder.reg_token": np.zeros((1, 4, 32), np.float32)}
  with pytest.raises(pretrained.CheckpointError, match="register tokens"):
    unitok.config(shapes, "x.pth", args={"model": "vitamin_large", "num_query": 4})


def test_tokenizer_directory_round_trip(tmp_path, converted):
  """What ``python -m vqtok.convert unitok`` writes reads back to the same ids."""
  tok, config, meta, g = converted
  tokenizer_dir.save_tokenizer(tok, config, str(tmp_path / "tok"), metadata=meta)
  back, back_config, back_meta = tokenizer_dir.read(str(tmp_path / "tok"))
  ids = back.encode(jnp.asarray(g["images"].transpose(0, 2, 3, 1)))
  np.testing.assert_array_equal(np.asarray(ids), g["ids"].transpose(0, 2, 1).reshape(ids.shape))
  assert back_meta["metadata"]["source"] == "unitok" and tuple(back_config.model.conv_widths) == (8, 16)


def test_linear_projections_map():
  """``quant_proj='linear'`` files (two Linears around the quantizer) map onto ``model.vit_projection='linear'``."""
  obj = read_checkpoint(TINY)
  state = {k: v for k, v in obj["trainer"]["unitok"].items() if "quant_proj." not in k}
  rng = np.random.default_rng(0)
  for name, shape in (("quant_proj", (16, 32)), ("post_quant_proj", (32, 16))):
    state[f"{name}.weight"] = rng.standard_normal(shape).astype(np.float32)
    state[f"{name}.bias"] = rng.standard_normal(shape[:1]).astype(np.float32)
  obj = {"args": {**obj["args"], "quant_proj": "linear"}, "trainer": {"unitok": state}}
  tensors = unitok.state_dict(obj, ema=False, source="linear.pth")
  c = unitok.config(tensors, "linear.pth", **unitok.options(obj, "linear.pth"))
  abstract = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  expected = {".".join(map(str, p)): v.shape for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
  mapped = layout.apply_rules(tensors, unitok.table(c), expected, ignore=unitok.IGNORE, source="linear.pth")
  assert c.model.vit_projection == "linear" and len(mapped) == len(expected)
  np.testing.assert_array_equal(mapped["encoder.head.kernel"], state["quant_proj.weight"].T)


def test_unitok_eval_resize():
  """inference.py's ``Resize(int(256 * 1.125))`` (bilinear) then ``CenterCrop(256)``."""
  img = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
  out = transforms.PREPROCESS["bilinear_1125_center_crop"](img, 256)
  ref = transforms.torchvision_resize_crop(img, 288, 256, Image.Resampling.BILINEAR)
  assert out.shape == (256, 256, 3) and np.array_equal(out, ref)
  assert preset("unitok", arg=None).data.preprocess == "bilinear_1125_center_crop"


def test_fine_tuning_gradients(converted):
  """The imported tokenizer trains: gradients reach every parameter; the GAN and VA-VAE layer paths resolve."""
  tok, _, _, g = converted
  x = jnp.asarray(g["images"].transpose(0, 2, 3, 1))

  def loss(m):
    z_q, out = m.quantize(x, train=True)
    return jnp.mean((m.reconstruct(z_q) - x) ** 2) + out.loss

  grads = nnx.state(nnx.jit(nnx.grad(loss))(tok), nnx.Param)
  flat = {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(grads)}
  assert all(np.isfinite(v).all() for v in flat.values())
  assert [k for k, v in flat.items() if not np.any(v)] == []
  state = nnx.state(tok, nnx.Param)
  for path in (tokenizer_lib.last_layer_path(tok), tokenizer_lib.encoder_last_layer_path(tok)):
    node = state
    for key in path:
      node = node[key]
    assert node[...].ndim >= 2


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"model.conv_widths": ()}, "one depth >= 1 per width"),
    ({"model.decoder_conv_depths": (4,)}, "one depth >= 1 per width"),
    ({"model.vit_family": "vqtok", "model.posemb": "learn"}, "need vit_family 'vitamin'"),
    ({"model.patch_size": 8}, "must be the MBConv stages' downsampling 16"),
  ],
)
def test_vitamin_config_errors(overrides, message):
  c = preset("unitok", arg=None, **{"model.depth": 1, "model.decoder_depth": 1, **overrides})
  with pytest.raises(ValueError, match=message):
    nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
