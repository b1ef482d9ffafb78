"""GSQ (HF HelmholtzAI-FZJ/GSQ-* checkpoint.pt, flex_gen's flexTokenizer): parity with flex_gen's code.

tests/goldens/gsq/ holds a reduced-width random-weight flexTokenizer written by
flex_gen's ``save`` from the trainer's OmegaConf arguments (hidden 8,
multipliers 1-2-2, one res block a level and in the middle, adaptive norms,
depth-to-space, a ``gvq`` quantizer with ``use_l2_norm``: 8 channels as 2
groups of 4, 64 codes off the unit sphere) and the outputs of flex_gen's own
code on three photos (scripts/parity/gen_gsq.py). Tolerances as for the other
families: ids equal (no near-ties in the fixture), latents within 1e-5
relative, decoded images within 1e-4 (the random-weight outputs reach ~3.5).
"""

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT
from PIL import Image

from vqtok import files, models, pretrained
from vqtok.data import transforms
from vqtok.pretrained import gsq, layout, reader
from vqtok.quantizers import GSQ

GOLDENS = os.path.join(ROOT, "tests", "goldens", "gsq")
REDUCED = os.path.join(GOLDENS, "reduced.pt")
PHOTOS = os.path.join(os.path.dirname(__import__("skimage").__file__), "data")


def _nhwc(a):
  return np.transpose(a, (0, 2, 3, 1))


@pytest.fixture(scope="module")
def converted():
  tok, config, meta = pretrained.convert("gsq", REDUCED)
  return tok, config, meta, np.load(os.path.join(GOLDENS, "golden.npz"))


@nnx.jit
def _run(tok, x, ids):
  """Everything the parity tests compare, in one program per input shape."""
  decoded, rolled = jnp.split(tok.decode(jnp.concatenate([ids, jnp.roll(ids, 1, axis=-1)])), 2)
  return {"latents": tok._latents(x), "ids": tok.encode(x), "decoded": decoded, "rolled": rolled}


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("suffix", ["", "_nonsquare"])
def test_parity_with_flex_gen(converted, suffix):
  tok, _, _, g = converted
  ids = g["indices" + suffix]
  out = _run(tok, jnp.asarray(_nhwc(g["x" + suffix])), jnp.asarray(ids, jnp.int32))
  assert _rel(out["latents"], _nhwc(g["h" + suffix])) < 1e-5
  assert out["ids"].shape == ids.shape == ids.shape[:3] + (2,)  # (B, h, w, G)
  agree = (np.asarray(out["ids"]) == ids) | g["near_tie" + suffix]
  assert agree.all(), f"{int((~agree).sum())} of {ids.size} ids differ"
  gold = _nhwc(g["decoded" + suffix])
  assert np.abs(np.asarray(out["decoded"]) - gold).max() < 1e-4
  assert np.abs(np.asarray(out["rolled"]) - gold).max() > 1e-2  # the tolerance can fail: other ids


def test_config_and_preprocessing_are_flex_gens(converted):
  _, config, meta, g = converted
  m = config.model
  assert m.cnn_family == "flex" and m.channels == 8 and tuple(m.channel_mult) == (1, 2, 2) and m.num_res_blocks == 1
  assert not m.attention and m.z_channels == 0 and m.code_dim == 8 and tuple(m.input_range) == (-1.0, 1.0)
  q = {"type": "gsq", "codebook_size": 64, "num_groups": 2, "commitment_weight": 0.25, "normalize": "l2"}
  assert dict(config.quantizer) == q
  assert meta["source"] == "gsq" and meta["weights"] == "model" and len(meta["source_sha256"]) == 64
  fn = transforms.PREPROCESS[config.data.preprocess]  # timm's eval transform at 32 px: 36 px, then the centre
  for i, name in enumerate(g["names"]):
    img = np.asarray(Image.open(os.path.join(PHOTOS, f"{name}.png")).convert("RGB"))
    np.testing.assert_allclose(fn(img, 32) / 127.5 - 1.0, _nhwc(g["x"])[i], atol=1e-6)


def test_the_pickled_arguments_read_without_omegaconf():
  obj = reader.read_checkpoint(REDUCED)
  raw = reader.unpickle(obj["config"])
  assert isinstance(raw["quantizer_config"], reader.Opaque)  # an OmegaConf DictConfig, as the trainer passes it
  args = gsq.arguments(obj, "reduced.pt")
  assert args["channel_multipliers"] == [1, 2, 2] and args["quantizer_config"]["quantize_type"] == "gvq"
  # A file saved from plain arguments (FlexTokenizer(**dict)) reads alike.
  obj["config"] = pickle.dumps(args, protocol=2)
  assert gsq.arguments(obj, "plain") == args


def _with_args(edit):
  obj = reader.read_checkpoint(REDUCED)
  args = gsq.arguments(obj, "reduced.pt")
  edit(args)
  obj["config"] = pickle.dumps(args)
  return obj


@pytest.mark.parametrize("mode", ["l2", "none", "clip"])
def test_quantizer_modes_match_flex_gens(mode):
  # flex_gen's gvq with use_l2_norm (GSQ), without (the -no_l2 ablations), and force_1d_clip (-CLIP).
  g = np.load(os.path.join(GOLDENS, "quantizer_modes.npz"))
  codebook, z = g[f"{mode}_codebook"], _nhwc(g[f"{mode}_z"])
  ids = g[f"{mode}_indices"]
  q = GSQ(len(codebook), z.shape[-1], num_groups=ids.shape[-1], normalize=mode, rngs=nnx.Rngs(0))
  q.codebook[...] = jnp.asarray(codebook)
  z_q, out = q(jnp.asarray(z))
  np.testing.assert_array_equal(np.asarray(out.indices), ids)
  np.testing.assert_allclose(np.asarray(z_q), _nhwc(g[f"{mode}_quantized"]), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(float(out.loss), float(g[f"{mode}_loss"]), rtol=1e-5)


@pytest.mark.parametrize(
  "edit,mode",
  [
    (lambda q: None, "l2"),
    (lambda q: q.update(use_l2_norm=False), "none"),
    (lambda q: q.update(use_l2_norm=False, force_1d_clip=True, use_uniform_init=True), "none"),  # 4-channel groups
    (lambda q: q.update(use_l2_norm=False, force_1d_clip=True, use_uniform_init=True, num_group=8), "clip"),
  ],
)
def test_the_quantizer_normalisation_comes_from_the_file(edit, mode):
  obj = _with_args(lambda a: edit(a["quantizer_config"]))
  assert gsq.options(obj, "x") == {"normalize": mode}
  tensors = gsq.state_dict(obj, ema=False, source="x")
  assert gsq.config(tensors, "x", **gsq.options(obj, "x")).quantizer.normalize == mode


@pytest.mark.parametrize(
  "edit,match",
  [
    (lambda a: a["quantizer_config"].update(use_l1_norm=True), r"x: a gvq quantizer with use_l1_norm"),
    (lambda a: a["quantizer_config"].update(quantize_type="fsq"), r"quantize_type 'fsq'; converts vq, gvq and gsq"),
    (lambda a: a.update(use_adaptive_norm=False), r"use_adaptive_norm=False; GSQ's have True"),
    (lambda a: a.pop("use_learnable_up_down_sample"), r"use_learnable_up_down_sample=False"),
    (lambda a: a.update(mid_block_attn=True), r"mid_block_attn=True"),
    (lambda a: a.update(attention_resolutions=[4]), r"attention at \[4\]"),
    (lambda a: a.update(encoder_layer_configs=[1, 2, 1, 1]), r"encoder_layer_configs=\[1, 2, 1, 1\]"),
  ],
)
def test_other_flex_tokenizers_are_refused_in_one_line(edit, match):
  with pytest.raises(reader.CheckpointError, match=match) as e:
    gsq.state_dict(_with_args(edit), ema=False, source="x")
  assert "\n" not in str(e.value)


def test_bad_files_and_tensors():
  obj = reader.read_checkpoint(REDUCED)
  with pytest.raises(reader.CheckpointError, match="no separate EMA weights"):
    gsq.state_dict(obj, ema=True, source="x")
  with pytest.raises(reader.CheckpointError, match="x: the model arguments under 'config': not a readable pickle"):
    gsq.state_dict(dict(obj, config=b"\x80\x02garbage"), ema=False, source="x")
  with pytest.raises(reader.CheckpointError, match="no pickled model arguments under 'config'"):
    gsq.state_dict({"model_state_dict": obj["model_state_dict"]}, ema=False, source="x")
  tensors = gsq.state_dict(obj, ema=False, source="x")
  attn = {k.replace("decoder.blocks.1.", "decoder.blocks.1.qkv_conv."): v for k, v in tensors.items()}
  with pytest.raises(reader.CheckpointError, match=r"decoder\.blocks\.1 is none of flexTokenizer's blocks"):
    gsq.config(attn, "x")
  with pytest.raises(reader.CheckpointError, match=r"decoder blocks are numbered \[0, 2, 3"):
    gsq.config({k: v for k, v in tensors.items() if not k.startswith("decoder.blocks.1.")}, "x")
  odd = dict(tensors, **{"quantizers.codebook.weight": np.zeros((64, 3), np.float32)})
  with pytest.raises(reader.CheckpointError, match="codes of 3 channels do not split a 8-channel latent"):
    gsq.config(odd, "x")


@pytest.mark.parametrize(
  "name,mult,groups,codes",
  [
    ("GSQ-F8-D64-G16-V8k", (1, 2, 2, 4), 16, 8192),
    ("GSQ-F8-D8-V64k", (1, 2, 2, 4), 1, 65536),
    ("GSQ-F16-D16-G16-V256k", (1, 1, 2, 2, 4), 16, 262144),
  ],
)
def test_published_sizes_build_at_full_size(name, mult, groups, codes):
  # The tensors of flexTokenizers built by gen_gsq.py from published config.yaml files: every one
  # maps onto vqtok's build of the config read off them, and the parameter counts agree.
  with open(os.path.join(GOLDENS, "published_keys.json")) as f:
    ref = json.load(f)[name]
  tensors = {k: np.broadcast_to(np.float32(0), s) for k, s in ref["shapes"].items()}  # shapes only
  config = gsq.config(tensors, name)
  abstract = nnx.eval_shape(lambda: models.build_tokenizer(config, rngs=nnx.Rngs(0)))
  params = jax.tree.leaves(nnx.state(abstract, nnx.Param))
  assert sum(v.size for v in params) == ref["count"] == sum(int(np.prod(s)) for s in ref["shapes"].values())
  mapped = layout.apply_rules(tensors, gsq.table(config), files.shapes(abstract), source=name)
  assert len(mapped) == len(params)
  assert tuple(config.model.channel_mult) == mult and config.model.num_res_blocks == 2
  assert config.quantizer.num_groups == groups and config.quantizer.codebook_size == codes
  assert abstract.token_shape == (256 // 2 ** (len(mult) - 1),) * 2
