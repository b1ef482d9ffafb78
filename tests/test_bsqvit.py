"""BSQ-ViT (zhaoyue-zephyrus/bsq-vit): the converter and parity with the reference code.

tests/goldens/bsq-vit/ was made by the reference's own ``VITBSQModel`` at
reduced width (scripts/parity/gen_bsqvit.py): ``reduced.pt`` in the layout of
the published ``checkpoint.pt`` (``state_dict`` with ``module.``, and other
values in ``ema_state_dict`` with ``module.module.``) and the outputs of the EMA
weights on three 32 x 32 photos in [-1, 1]: the latents before the l2 norm,
the ids (12 bits, msb first), the images decoded from the ids. ViT width 64
(one head), encoder depth 1, decoder depth 2, patch 4, a tanh pixel head of
80. ``full_keys.json`` lists the tensors of the published 18- and 36-bit
models. Tolerances: ids equal except near-ties (a latent channel within 1e-6
of zero; none here, the smallest is 1.5e-4); latents within 1e-5 relative;
decoded images within 1e-4.
"""

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

import vqtok
from vqtok import config as config_lib
from vqtok import files, models, pretrained
from vqtok.data import transforms
from vqtok.pretrained import bsqvit, layout, reader
from vqtok.quantizers import BSQ

GOLDENS = os.path.join(ROOT, "tests", "goldens", "bsq-vit")
REDUCED = os.path.join(GOLDENS, "reduced.pt")


@pytest.fixture(scope="module")
def golden():
  return dict(np.load(os.path.join(GOLDENS, "golden.npz")))


@pytest.fixture(scope="module")
def converted():
  return pretrained.convert("bsq-vit", REDUCED)


def _x(golden):  # the reference's input is already [-1, 1] (data.zero_mean)
  return jnp.asarray(golden["images"] * 2 - 1, jnp.float32)


def test_parity_with_the_reference(converted, golden):
  tok, config, meta = converted
  assert meta["weights"] == "ema" and tok.token_shape == (8, 8) and config.image_size == 32
  latents = np.asarray(tok._latents(_x(golden))).reshape(golden["latents"].shape)
  assert np.linalg.norm(latents - golden["latents"]) / np.linalg.norm(golden["latents"]) < 1e-5
  ids = np.asarray(tok.encode(_x(golden))).reshape(3, -1)
  agree = (ids == golden["ids"]) | golden["near_tie"]
  assert agree.all(), f"{int((~agree).sum())} of {ids.size} ids differ"
  decoded = np.asarray(tok.decode(jnp.asarray(golden["ids"].reshape(3, 8, 8), jnp.int32)))
  assert np.abs(decoded - golden["decoded"]).max() < 1e-4
  wrong = np.asarray(tok.decode(jnp.asarray(np.roll(golden["ids"], 1, axis=-1).reshape(3, 8, 8), jnp.int32)))
  assert np.abs(wrong - golden["decoded"]).max() > 1e-2


def test_more_than_30_bits_split_into_index_groups(converted, golden):
  # 36-bit ids do not fit an int32: index_groups=2 gives (hi, lo) halves, msb first, whose
  # combination is the reference's int64 id; codes and decoding are unchanged.
  tok, config, _ = converted
  split = BSQ(bits=12, bit_order="msb_first", index_groups=2, rngs=nnx.Rngs(0))
  assert split.index_depth == 2 and split.codebook_size == 64
  z_q, out = split(tok._latents(_x(golden)))
  ids = np.asarray(out.indices)
  assert ids.shape == (3, 8, 8, 2)
  np.testing.assert_array_equal((ids[..., 0].astype(np.int64) * 64 + ids[..., 1]).reshape(3, -1), golden["ids"])
  codes = split.indices_to_codes(jnp.asarray(ids))
  np.testing.assert_array_equal(np.asarray(codes), np.asarray(z_q))
  whole = nnx.clone(tok)  # the tokenizer's own encode / decode with the split ids
  whole.quantizer = split
  np.testing.assert_array_equal(np.asarray(whole.encode(_x(golden))), ids)
  assert np.abs(np.asarray(whole.decode(jnp.asarray(ids))) - golden["decoded"]).max() < 1e-4
  with pytest.raises(ValueError, match=r"decode expects indices of shape \(B, 8, 8, 2\)"):
    whole.decode(jnp.asarray(ids[..., 0]))


def test_noema_takes_the_raw_weights(converted):
  tok, _, meta = pretrained.convert("bsq-vit", REDUCED, ema=False)
  assert meta["weights"] == "model"
  obj = reader.read_checkpoint(REDUCED)
  raw = obj["state_dict"]["module.quant_embed.weight"]
  np.testing.assert_array_equal(np.asarray(tok.encoder.head.kernel[...]), raw.T)
  ema = obj["ema_state_dict"]["module.module.quant_embed.weight"]
  np.testing.assert_array_equal(np.asarray(converted[0].encoder.head.kernel[...]), ema.T)
  assert not np.allclose(raw, ema)


def test_converted_config(converted):
  _, config, _ = converted
  m = config.model
  assert (m.encoder, m.vit_family, m.width, m.num_heads, m.depth, m.patch_size) == ("vit", "bsqvit", 64, 1, 1, 4)
  assert (m.decoder_depth, m.pixel_head_hidden, m.code_dim) == (2, 80, 12)
  assert config.quantizer.to_dict() == {"type": "bsq", "bits": 12, "bit_order": "msb_first"}
  assert tuple(m.input_range) == (-1.0, 1.0) and config.data.preprocess == "torchvision_lanczos_center_crop"
  config_lib.validate_config(config)


def test_lanczos_preprocessing_follows_torchvision():
  # torchvision Resize(size, LANCZOS) on a PIL image: short side to size, long side truncated, then
  # CenterCrop with half-to-even offsets (as torchvision_center_crop, checked against torchvision).
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (50, 75, 3), dtype=np.uint8)
  out = transforms.PREPROCESS["torchvision_lanczos_center_crop"](img, 33)
  want = np.asarray(Image.fromarray(img).resize((49, 33), Image.Resampling.LANCZOS))[:, 8:41]
  np.testing.assert_array_equal(out, want)


# ---- bad input: one clear error naming the file and the key ----


def _write(tmp_path, edit, name="bad.pt"):
  obj = reader.read_checkpoint(REDUCED)
  obj = {"state_dict": dict(obj["state_dict"]), "ema_state_dict": dict(obj["ema_state_dict"]), "iter": 1000}
  edit(obj)
  path = str(tmp_path / name)
  torchfile.save(obj, path)
  return path


E = "ema_state_dict"
P = "module.module."


@pytest.mark.parametrize(
  "edit,match",
  [
    (lambda o: o[E].pop(P + "decoder.ffn.0.bias"), r"missing tensors for decoder\.head_hidden\.bias"),
    (lambda o: o[E].update({P + "encoder.extra": np.zeros(3, np.float32)}), r"unexpected tensor 'encoder\.extra'"),
    (lambda o: o[E].update({P + "encoder.conv1.bias": np.zeros(64, np.float32)}), r"encoder\.conv1 has a bias"),
    (
      lambda o: o[E].update({P + "decoder.ln_post.bias": np.zeros(7, np.float32)}),
      r"'decoder\.ln_post\.bias' has shape \(7,\); 'decoder\.transformer\.norm\.bias' needs \(64,\)",
    ),
    (
      lambda o: o[E].update({P + "quantize.basis": 2 ** np.arange(12, dtype=np.int64)}),
      r"quantize\.basis is not 2 \*\* \(11 \.\.\. 0\)",
    ),
    (lambda o: o[E].pop(P + "encoder.ln_pre.weight"), r"encoder\.ln_pre is missing"),
    (lambda o: o.update({E: None}), r"holds no EMA weights \(ema_state_dict\); pass --noema"),
    (lambda o: o.pop("state_dict") and o.pop(E), r"not a bsq-vit checkpoint: none of \['ema_state_dict'\]"),
  ],
)
def test_converter_names_the_bad_tensor(tmp_path, edit, match):
  path = _write(tmp_path, edit)
  with pytest.raises(reader.CheckpointError, match=match) as e:
    pretrained.convert("bsq-vit", path, ema=True)
  assert "bad.pt" in str(e.value) and "\n" not in str(e.value)


def test_ema_without_ddp_and_raw_without_prefix_convert_alike(tmp_path, converted, golden):
  # Trained on one GPU: ModelEmaV2 adds a single ``module.``, the state_dict none.
  obj = reader.read_checkpoint(REDUCED)
  ema = {k[len("module.") :]: v for k, v in obj["ema_state_dict"].items()}
  path = str(tmp_path / "one_gpu.pt")
  torchfile.save({"state_dict": {k[len("module.") :]: v for k, v in obj["state_dict"].items()}, E: ema}, path)
  tok, _, meta = pretrained.convert("bsq-vit", path)
  assert meta["weights"] == "ema"
  np.testing.assert_array_equal(
    np.asarray(tok.encoder.head.kernel[...]), np.asarray(converted[0].encoder.head.kernel[...])
  )
  raw = pretrained.convert("bsq-vit", path, ema=False)[0]
  np.testing.assert_array_equal(
    np.asarray(raw.encoder.head.kernel[...]), obj["state_dict"]["module.quant_embed.weight"].T
  )


def test_checkpoint_of_another_family_is_refused():
  titok = os.path.join(ROOT, "tests", "goldens", "titok", "reduced.bin")
  with pytest.raises(reader.CheckpointError, match="not a bsq-vit checkpoint"):
    pretrained.convert("bsq-vit", titok)
  with pytest.raises(reader.CheckpointError, match="not a titok checkpoint|expected a dict"):
    pretrained.convert("titok", REDUCED)


# ---- full sizes: the published tensor lists ----


@pytest.mark.parametrize("bits,count", [(18, 174_816_210), (36, 174_843_876)])
def test_full_size_tensors_convert_and_count_as_the_reference(bits, count):
  with open(os.path.join(GOLDENS, "full_keys.json")) as f:
    keys = json.load(f)[f"bsqvit_b{bits}"]
  zero = np.zeros((), np.float32)  # zero-stride arrays: the real shapes without the memory
  sd = {P + k: np.broadcast_to(zero, s) for k, s in {**keys["parameters"], **keys["buffers"]}.items()}
  sd[P + "quantize.basis"] = 2 ** np.arange(bits - 1, -1, -1, dtype=np.int64)
  tensors = bsqvit.state_dict({"ema_state_dict": sd}, ema=True, source="checkpoint.pt")
  c = bsqvit.config(tensors, "checkpoint.pt")
  tok = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  assert sum(int(np.prod(s)) for s in keys["parameters"].values()) == count
  assert sum(v.size for v in jax.tree.leaves(nnx.state(tok, nnx.Param))) == count
  mapped = layout.apply_rules(tensors, bsqvit.table(c), files.shapes(tok), ignore=bsqvit.IGNORE, source="x")
  assert set(mapped) == set(files.shapes(tok))
  assert c.image_size == 256 and tok.token_shape == (32, 32) and c.model.pixel_head_hidden == 3072
  assert (c.model.width, c.model.depth, c.model.num_heads, c.model.patch_size) == (768, 12, 12, 8)
  assert tok.quantizer.index_depth == (2 if bits == 36 else None) and tok.quantizer.codebook_size == 2**18
  config_lib.validate_config(c)


def test_index_groups_arguments_and_training_mode():
  with pytest.raises(ValueError, match=r"bits must be in \[1, 30\] \(int32 indices\); got 36"):
    BSQ(bits=36, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="index_groups must be a positive int dividing bits=36"):
    BSQ(bits=36, index_groups=5, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="entropy_mode='exact'"):
    BSQ(bits=36, index_groups=2, entropy_mode="exact", rngs=nnx.Rngs(0))
  q = BSQ(bits=36, index_groups=2, rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.key(0), (2, 5, 36))
  z_q, out = q(z, train=True)
  assert out.indices.shape == (2, 5, 2) and out.indices.dtype == jnp.int32 and np.isfinite(float(out.loss))
  np.testing.assert_array_equal(np.asarray(q.indices_to_codes(out.indices)), np.asarray(z_q))
  with pytest.raises(ValueError, match=r"indices must have shape \(\.\.\., 2\)"):
    q.indices_to_codes(jnp.zeros((2, 5), jnp.int32))


def test_convert_command(tmp_path, golden):
  out = tmp_path / "tok"
  res = subprocess.run(
    [sys.executable, "-m", "vqtok.convert", "bsq-vit", REDUCED, str(out)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert res.returncode == 0, res.stderr
  summary = json.loads(res.stdout)
  assert summary["token_shape_at_image_size"] == [8, 8] and summary["codebook_size"] == 4096
  again = vqtok.load_tokenizer(str(out))
  np.testing.assert_array_equal(np.asarray(again.encode(_x(golden))).reshape(3, -1), golden["ids"])
