"""VidTok (microsoft/VidTok): the converter and parity with the reference's own causal FSQ tokenizer.

tests/goldens/vidtok/ was made by the reference's ``EncoderCausal3DPadding``,
``DecoderCausal3DPadding`` and ``FSQRegularizer`` (scripts/parity/gen_vidtok.py)
with configs/vidtok_fsq_causal_488_262144.yaml's parameters at ch 8 (4 levels,
2 res blocks, 4x8x8, 6 FSQ channels of 8 levels), in float64 with random weights
drawn from a seeded NumPy generator, which this test draws again and writes as a
Lightning ``.ckpt`` (with ``loss.*`` tensors, which the converter leaves out) and
the YAML beside it. Goldens: a 9-frame 16 px clip in [-1, 1] and its first
frame alone: the encoder's output, the FSQ ids, the clip decoded from them.
Tolerances: ids equal (the smallest distance of a bounded latent to a rounding
boundary is checked to be far above float32 noise), latents within 1e-5 relative,
decoded frames within 1e-4 relative. One compiled program per clip length (9, 1).

VidTok v1.1 (model_3dcausal_v1_1.py) alike: golden_v1_1.npz / keys_v1_1.json, made by
``gen_vidtok.py --v1_1`` with configs/vidtok_v1_1/vidtok_fsq_causal_488_32768_v1_1.yaml's
parameters at ch 8 (5 FSQ channels, trilinear time upsampling); same tolerances.
Its decoder keeps all frames (9 -> 12, 1 -> 4: the first 3 decode the padding
copies of frame 0); vqtok's drops those 3, as for v1.0, so frames in = frames out.

The non-causal model (model_3dnoncausal.py, ``model.causal=False``) alike: golden_noncausal.npz /
keys_noncausal.json, made by ``gen_vidtok.py --noncausal`` with
configs/vidtok_fsq_noncausal_488_262144.yaml's parameters at ch 8, on a 16-frame clip
(16 -> 4 latent frames -> 16); same tolerances, one compiled program.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torchfile
import yaml
from flax import nnx
from helpers import ROOT, preset

from vqtok import files, pretrained
from vqtok.config import validate_config
from vqtok.models import build_tokenizer, cnn
from vqtok.pretrained import reader, vidtok

FAST_COMPILE = True
GOLDENS = os.path.join(ROOT, "tests", "goldens", "vidtok")


def _keys(suffix=""):
  with open(os.path.join(GOLDENS, f"keys{suffix}.json")) as f:
    return json.load(f)


def _draw(rng, name, shape):
  # scripts/parity/gen_vidtok.py's draw().
  v = rng.standard_normal(shape) * (0.2 if len(shape) > 1 else 0.5)
  if "norm" in name and name.endswith(".weight"):
    v = v + 1.0
  if name.endswith("mix_factor"):
    v = v + 2.0
  return v


def _write_checkpoint(
  path, levels=(8,) * 6, yaml_target="vidtok.modules.model_3dcausal.EncoderCausal3DPadding", bare=False, suffix=""
):
  meta = _keys(suffix)
  rng = np.random.default_rng(meta["seed"])
  sd = {}
  for prefix in ("encoder", "decoder"):
    for name, shape in meta["keys"][prefix]:
      sd[f"{prefix}.{name}"] = _draw(rng, name, tuple(shape)).astype(np.float32)
  sd["loss.logvar"] = np.zeros((1,), np.float32)  # the training loss's, left out
  sd["loss.discriminator.main.0.weight"] = np.zeros((4, 3, 4, 4), np.float32)
  obj = sd if bare else {"state_dict": sd, "epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.4.0"}
  torchfile.save(obj, path)
  params = {"encoder_config": {"target": yaml_target, "params": meta["reduced"]}}
  params["regularizer_config"] = {
    "target": "vidtok.modules.regularizers.FSQRegularizer",
    "params": {"levels": list(levels)},
  }
  with open(os.path.splitext(path)[0] + ".yaml", "w") as f:
    yaml.safe_dump({"model": {"target": "vidtok.models.autoencoder.AutoencodingEngine", "params": params}}, f)
  return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  path = _write_checkpoint(str(tmp_path_factory.mktemp("vidtok") / "vidtok_fsq_causal_488_262144.ckpt"))
  tok, config, meta = pretrained.convert("vidtok", path)
  return tok, config, meta, dict(np.load(os.path.join(GOLDENS, "golden.npz")))


def _video(a):  # (B, C, T, H, W) -> (B, T, H, W, C)
  return np.transpose(a, (0, 2, 3, 4, 1))


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@nnx.jit
def _run(tok, x):
  """The encoder's output, the ids and the clip decoded from them: one program per clip length."""
  ids = tok.encode(x)
  return tok._latents(x), ids, tok.decode(ids)


V1_1 = "vidtok.modules.model_3dcausal_v1_1.EncoderCausal3DPadding"
NONCAUSAL = "vidtok.modules.model_3dnoncausal.Encoder3D"


@pytest.fixture(scope="module")
def converted_v1_1(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("vidtok") / "vidtok_fsq_causal_488_32768_v1_1.ckpt")
  _write_checkpoint(path, levels=(8,) * 5, yaml_target=V1_1, suffix="_v1_1")
  tok, config, meta = pretrained.convert("vidtok", path)
  return tok, config, meta, dict(np.load(os.path.join(GOLDENS, "golden_v1_1.npz")))


@pytest.fixture(scope="module")
def runs(converted):
  tok, _, _, g = converted
  x = jnp.asarray(_video(g["x"]))
  return {"": _run(tok, x), "1": _run(tok, x[:, :1]), "later": _run(tok, x.at[:, 5:].multiply(-1.0))}


@pytest.mark.parametrize("tag", ["", "1"], ids=["9_frames", "1_frame"])
def test_parity_with_the_reference(converted, runs, tag):
  tok, _, _, g = converted
  z, ids, y = (np.asarray(a) for a in runs[tag])
  assert z.shape == _video(g[f"z{tag}"]).shape and y.shape == _video(g[f"y{tag}"]).shape
  assert _rel(z, _video(g[f"z{tag}"])) < 1e-5
  # No near-ties: every bounded latent is far from a rounding boundary (x.5), so float32 gives the same ids.
  bounded = np.asarray(tok.quantizer.bound(jnp.asarray(_video(g[f"z{tag}"]), jnp.float32)))
  assert np.abs(np.abs(bounded - np.floor(bounded)) - 0.5).min() > 1e-4
  np.testing.assert_array_equal(ids, g[f"ids{tag}"])
  assert _rel(y, _video(g[f"y{tag}"])) < 1e-4


@pytest.mark.parametrize("tag", ["", "1"], ids=["9_frames", "1_frame"])
def test_v1_1_parity_with_the_reference(converted_v1_1, tag):
  tok, _, _, g = converted_v1_1
  x = jnp.asarray(_video(g["x"]))
  z, ids, y = (np.asarray(a) for a in _run(tok, x if tag == "" else x[:, :1]))
  # v1.1's decoder keeps all 4 * (latent frames) frames; its first 3 decode the encoder's padding copies.
  gz, gy = _video(g[f"z{tag}"]), _video(g[f"y{tag}"])
  assert gy.shape[1] == 4 * gz.shape[1] and y.shape == gy[:, 3:].shape
  assert _rel(z, gz) < 1e-5
  bounded = np.asarray(tok.quantizer.bound(jnp.asarray(gz, jnp.float32)))
  assert np.abs(np.abs(bounded - np.floor(bounded)) - 0.5).min() > 1e-4
  np.testing.assert_array_equal(ids, g[f"ids{tag}"])
  assert _rel(y, gy[:, 3:]) < 1e-4


def test_v1_1_config_and_frames(converted_v1_1):
  tok, c, _, _ = converted_v1_1
  assert c.model.time_padding == "replicate" and c.model.time_upsample == "linear"
  assert tuple(c.quantizer.levels) == (8,) * 5 and tok.quantizer.codebook_size == 2**15 and tok.temporal_factor == 4
  keys = _keys("_v1_1")["keys"]
  assert sum(v.size for v in files.arrays(tok).values()) == sum(
    int(np.prod(s)) for p in ("encoder", "decoder") for _, s in keys[p]
  )
  # vqtok keeps the 1 + 4k rule (v1.1's own code also takes 4k frames) and decodes whole videos only.
  with pytest.raises(ValueError, match="nearest valid counts are 13 and 17"):
    tok.encode(jnp.zeros((1, 16, 16, 16, 3)))
  with pytest.raises(ValueError, match="linear time upsampling .* chunked decoding is not supported"):
    nnx.jit(lambda t, ids: t.decode(ids, chunk=1))(tok, jnp.zeros((1, 3, 2, 2), jnp.int32))  # refused when traced


@pytest.mark.parametrize(
  "name, ch_mult, down, levels",
  [
    ("vidtok_fsq_causal_488_32768_v1_1", (1, 2, 4, 4), (), (8,) * 5),
    ("vidtok_fsq_causal_888_32768_v1_1", (1, 2, 4, 4), (2, 2, 2), (8,) * 5),
  ],
)
def test_v1_1_full_size_parameter_counts(name, ch_mult, down, levels):
  # Published v1.1 FSQ models as their YAMLs build them (gen_vidtok.py --v1_1 counts them; the 4x16x16
  # vidtok_fsq_causal_41616_262144_v1_1, ch_mult (1, 2, 4, 4, 4) and 6 channels, checked once by hand).
  c = vidtok.preset(ch_mult, levels=levels, temporal_downsample=down, temporal_upsample=down, v1_1=True)
  tok = nnx.eval_shape(lambda: build_tokenizer(c, rngs=nnx.Rngs(0)))
  n = {k: sum(int(np.prod(s)) for p, s in files.shapes(tok).items() if p.startswith(k)) for k in ("encoder", "decoder")}
  assert n == _keys("_v1_1")["full_params"][name]


def test_prefix_causal_as_the_reference(converted, runs):
  # VidTok's causal model is causal as configured: latent frame j sees frames <= 4j. The reference's own
  # goldens show it for frame 0 (a one-frame clip gives the 9-frame clip's first latent frame); vqtok's
  # ids of the first 2 latent frames do not move when frames 5.. change.
  _, _, _, g = converted
  np.testing.assert_array_equal(g["ids1"], g["ids"][:, :1])
  np.testing.assert_allclose(g["z1"], g["z"][:, :, :1], rtol=1e-9, atol=1e-9)
  np.testing.assert_array_equal(np.asarray(runs["later"][1])[:, :2], np.asarray(runs[""][1])[:, :2])
  assert not np.array_equal(np.asarray(runs["later"][1])[:, 2], np.asarray(runs[""][1])[:, 2])


@nnx.jit
def _chunked(tok, x, ids):
  return tok.encode(x, chunk=2), tok.decode(ids, chunk=2)


def test_chunked_equals_whole(converted, runs):
  # 2 latent frames, then 1: the first chunk pads and drops the padding frames, the second carries.
  tok, _, _, g = converted
  ids, decoded = _chunked(tok, jnp.asarray(_video(g["x"])), runs[""][1])
  np.testing.assert_array_equal(np.asarray(ids), np.asarray(runs[""][1]))
  np.testing.assert_allclose(np.asarray(decoded), np.asarray(runs[""][2]), atol=1e-5)


def test_config_is_the_references(converted):
  tok, c, meta, _ = converted
  assert c.model.cnn_family == "vidtok" and tuple(c.model.channel_mult) == (1, 2, 4, 4)
  assert tuple(c.model.temporal_downsample) == (1, 2, 2) and tuple(c.model.temporal_upsample) == (2, 2, 1)
  assert c.quantizer.type == "fsq" and tuple(c.quantizer.levels) == (8,) * 6 and c.quantizer.bound == "wide"
  assert tok.quantizer.codebook_size == 2**18 and tok.temporal_factor == 4
  assert meta["source"] == "vidtok" and meta["weights"] == "model"
  keys = _keys()["keys"]
  assert sum(v.size for v in files.arrays(tok).values()) == sum(
    int(np.prod(s)) for p in ("encoder", "decoder") for _, s in keys[p]
  )


def test_preset_has_the_references_parameter_count(tmp_path):
  # configs/vidtok_fsq_488.py against the published 4x8x8 model as its YAML builds it (gen_vidtok.py counts it).
  c = preset("vidtok_fsq_488", None)
  c.loss.lpips_weights = str(tmp_path / "lpips.npz")  # the preset trains with LPIPS, whose weights cannot ship
  (tmp_path / "lpips.npz").write_bytes(b"")
  validate_config(c)
  tok = nnx.eval_shape(lambda: build_tokenizer(c, rngs=nnx.Rngs(0)))
  n = {k: sum(int(np.prod(s)) for p, s in files.shapes(tok).items() if p.startswith(k)) for k in ("encoder", "decoder")}
  reference = _keys()["full_params"]["vidtok_fsq_causal_488_262144"]
  assert n == reference and n["encoder"] + n["decoder"] == 157_451_661
  assert tok.temporal_factor == 4 and tok.quantizer.codebook_size == 2**18


@pytest.mark.parametrize(
  "name, kw, match",
  [
    ("x.ckpt", {"yaml_target": "vidtok.modules.model_3dcausal.Encoder3D"}, r"converts model_3dcausal\(_v1_1\)"),
    ("x.ckpt", {"levels": (8,) * 5}, r"5 FSQ levels \[8, 8, 8, 8, 8\] for an encoder of 6 channels"),
    (
      "x.ckpt",
      {"yaml_target": NONCAUSAL},
      r"its YAML builds a non-causal \(model_3dnoncausal.py\) model, but its tensors are a causal",
    ),
    (
      "x.ckpt",
      {"suffix": "_noncausal"},
      r"its YAML builds a causal \(model_3dcausal.py\) model, but its tensors are a non-causal",
    ),
  ],
)
def test_other_files_are_refused_in_one_line(tmp_path, name, kw, match):
  path = _write_checkpoint(str(tmp_path / name), **kw)
  with pytest.raises(reader.CheckpointError, match=match):
    pretrained.convert("vidtok", path)


def test_version_from_the_name_or_yaml():
  # Without a YAML the file name tells v1.1 (trilinear, as every published v1.1 YAML); a v1.1 YAML's
  # interpolation_mode is read (the code's default: nearest).
  opts = lambda name, y=None: vidtok.options({"name": name, "yaml": y, "checkpoint": None}, name)
  assert opts("vidtok_fsq_causal_488_32768_v1_1.ckpt") == {"v1_1": True, "time_upsample": "linear"}
  assert opts("vidtok_fsq_causal_488_32768.ckpt") == {}
  y = {"model": {"params": {"encoder_config": {"target": V1_1, "params": {"interpolation_mode": "nearest"}}}}}
  assert opts("x.ckpt", y) == {"v1_1": True, "time_upsample": "repeat", "causal": True}
  y["model"]["params"]["encoder_config"]["params"]["interpolation_mode"] = "bicubic"
  with pytest.raises(reader.CheckpointError, match="interpolation_mode 'bicubic'"):
    opts("x.ckpt", y)


@pytest.mark.parametrize(
  "kw, match",
  [
    ({}, "'vidtok' CNN family is a causal video CNN: set model.temporal_downsample"),
    ({"temporal_downsample": (4,)}, "downsamples time by 2 per level; got a time stride of 4"),
    ({"temporal_downsample": (2,), "temporal_upsample": (1,)}, r"temporal_upsample=\[1\] needs one time stride"),
  ],
)
def test_bad_vidtok_geometry_is_one_line(kw, match):
  with pytest.raises(ValueError, match=match):
    up = kw.pop("temporal_upsample", ())
    nnx.eval_shape(
      lambda: cnn.Decoder(
        4, channels=8, channel_mult=(1, 2), family="vidtok", temporal_upsample=up, rngs=nnx.Rngs(0), **kw
      )
    )
    nnx.eval_shape(lambda: cnn.Encoder(4, channels=8, channel_mult=(1, 2), family="vidtok", rngs=nnx.Rngs(0), **kw))


def test_frame_counts_outside_the_rule_are_refused(converted):
  # VidTok's own code takes 16 frames too (no padding, 13 decoded); vqtok keeps the 1 + 4k rule.
  tok, _, _, _ = converted
  with pytest.raises(ValueError, match="nearest valid counts are 13 and 17"):
    tok.encode(jnp.zeros((1, 16, 16, 16, 3)))


def test_bare_state_dict_and_no_yaml(tmp_path, converted):
  # The reference's init_from_ckpt also takes a bare state dict; without a YAML every channel has 8 levels.
  path = _write_checkpoint(str(tmp_path / "x.ckpt"), bare=True)
  os.remove(str(tmp_path / "x.yaml"))
  tok, c, _ = pretrained.convert("vidtok", path)
  assert c.to_dict() == converted[1].to_dict()
  a, b = files.arrays(tok), files.arrays(converted[0])
  assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in b)


# ---- the non-causal model (model_3dnoncausal.py: model.causal=False) ----


@pytest.fixture(scope="module")
def converted_noncausal(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("vidtok") / "vidtok_fsq_noncausal_488_262144.ckpt")
  _write_checkpoint(path, yaml_target=NONCAUSAL, suffix="_noncausal")
  tok, config, meta = pretrained.convert("vidtok", path)
  g = dict(np.load(os.path.join(GOLDENS, "golden_noncausal.npz")))
  x = jnp.asarray(_video(g["x"]))
  # The clip, and the clip with its last 4 frames changed (the same program).
  return tok, config, g, {"": _run(tok, x), "later": _run(tok, x.at[:, 12:].multiply(-1.0))}


def test_noncausal_parity_with_the_reference(converted_noncausal):
  tok, _, g, runs = converted_noncausal
  z, ids, y = (np.asarray(a) for a in runs[""])
  gz, gy = _video(g["z"]), _video(g["y"])
  assert z.shape == gz.shape == (1, 4, 2, 2, 6) and y.shape == gy.shape == (1, 16, 16, 16, 3)  # 16 -> 4 -> 16
  assert _rel(z, gz) < 1e-5
  bounded = np.asarray(tok.quantizer.bound(jnp.asarray(gz, jnp.float32)))
  assert np.abs(np.abs(bounded - np.floor(bounded)) - 0.5).min() > 1e-4
  np.testing.assert_array_equal(ids, g["ids"])
  assert _rel(y, gy) < 1e-4


def test_noncausal_sees_later_frames(converted_noncausal):
  # Frames 12..15 reach latent frame 2 through the time convs' right padding: not causal.
  _, _, _, runs = converted_noncausal
  z, z_later = np.asarray(runs[""][0]), np.asarray(runs["later"][0])
  assert not np.allclose(z[:, 2], z_later[:, 2])


def test_noncausal_config_and_frame_rule(converted_noncausal, tmp_path):
  tok, c, _, _ = converted_noncausal
  assert c.model.causal is False and c.model.time_padding == "zeros" and c.model.time_upsample == "repeat"
  assert c.video.num_frames == 16 and tok.temporal_factor == 4 and tok.is_video and not tok.causal
  assert tok.latent_frames(16) == 4 and tok.quantizer.codebook_size == 2**18
  keys = _keys("_noncausal")["keys"]
  assert sum(v.size for v in files.arrays(tok).values()) == sum(
    int(np.prod(s)) for p in ("encoder", "decoder") for _, s in keys[p]
  )
  # k*4 frames only, whole clips only, no images.
  with pytest.raises(ValueError, match=r"takes k\*4 frames \(4, 8, 12, ...\); got 17 frames: .* 16 and 20"):
    tok.encode(jnp.zeros((1, 17, 16, 16, 3)))
  with pytest.raises(ValueError, match="got 2 frames: the nearest valid count is 4"):
    tok.latent_frames(2)
  with pytest.raises(ValueError, match="an image .* is one frame: give it clips"):
    tok.encode(jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(ValueError, match="chunk is for causal video tokenizers: a non-causal one"):
    tok.encode(jnp.zeros((1, 16, 16, 16, 3)), chunk=2)
  with pytest.raises(ValueError, match="chunk is for causal video tokenizers: a non-causal one"):
    tok.decode(jnp.zeros((1, 4, 2, 2), jnp.int32), chunk=2)
  with pytest.raises(ValueError, match=r"decode expects indices of shape \(B, T', 32, 32\)"):
    tok.decode(jnp.zeros((1, 2, 2), jnp.int32))
  # A config's clips: video.num_frames by the same rule.
  bad = c.copy_and_resolve_references()
  bad.video.update(source="samples", num_frames=17)
  with pytest.raises(ValueError, match=r"video.num_frames=17: a non-causal video tokenizer .* 16 and 20"):
    validate_config(bad, check_paths=False)
  bad.video.update(num_frames=16, image_every=2)  # images as one-frame clips: not for this rule
  with pytest.raises(ValueError, match=r"video.image_every .* takes clips of k\*s_T frames only"):
    validate_config(bad, check_paths=False)


def test_noncausal_preset_has_the_references_parameter_count(tmp_path):
  # configs/vidtok_fsq_488.py:noncausal against vidtok_fsq_noncausal_488_262144 as its YAML builds it
  # (gen_vidtok.py --noncausal counts it; the 4x16x16 vidtok_fsq_noncausal_41616_262144, ch_mult (1, 2, 4, 4, 4),
  # checked once by hand).
  c = preset("vidtok_fsq_488", "noncausal")
  c.loss.lpips_weights = str(tmp_path / "lpips.npz")
  (tmp_path / "lpips.npz").write_bytes(b"")
  validate_config(c)
  assert c.model.causal is False and c.video.num_frames == 16
  tok = nnx.eval_shape(lambda: build_tokenizer(c, rngs=nnx.Rngs(0)))
  n = {k: sum(int(np.prod(s)) for p, s in files.shapes(tok).items() if p.startswith(k)) for k in ("encoder", "decoder")}
  assert n == _keys("_noncausal")["full_params"]["vidtok_fsq_noncausal_488_262144"]
  assert n["encoder"] + n["decoder"] == 157_451_661  # as the causal model: only the time padding differs


@pytest.mark.parametrize(
  "model, match",
  [
    ({"causal": False}, r"model.causal=False \(a non-causal video CNN\) needs model.temporal_downsample"),
    (
      {"causal": False, "temporal_downsample": (1, 2), "cnn_family": "taming"},
      r"non-causal video CNN is built for the CNN families \('vidtok',\)",
    ),
    (
      {"causal": False, "temporal_downsample": (1, 2), "cnn_family": "vidtok", "time_upsample": "linear"},
      r"time_upsample='linear' is the causal 'vidtok' CNN family's",
    ),
  ],
)
def test_bad_noncausal_configs_are_one_line(model, match):
  c = vidtok.preset((1, 2, 4), channels=8, levels=(8,) * 4)
  c.model.update(temporal_downsample=(), temporal_upsample=(), cnn_family="taming")
  c.model.update(model)
  with pytest.raises(ValueError, match=match):
    validate_config(c, check_paths=False)
    nnx.eval_shape(lambda: build_tokenizer(c, rngs=nnx.Rngs(0)))
