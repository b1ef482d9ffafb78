"""``python -m vqtok.convert open-magvit2-video``: parity with Open-MAGVIT2's own video tokenizer.

Goldens from scripts/parity/gen_open_magvit2_video.py: the reference's Encoder, Decoder and LFQ at a reduced
width (ch 32, ch_mult 1-2-2, one res block, 6 bits) under its EMA weights. The checkpoint is written here,
in the published layout (a Lightning ``state_dict`` with the model, ``loss.*`` and ``LitEma``'s
``model_ema.*``; keys.json lists its names in order), from the same numpy draws as the generator's. Ids
equal, latents within 1e-5 relative, decoded clips within 1e-5 of their scale.
"""

import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torchfile
from flax import nnx
from helpers import ROOT

from vqtok import config as config_lib
from vqtok import files, models, pretrained
from vqtok.load import load
from vqtok.pretrained import layout, open_magvit2_video, reader

FAST_COMPILE = True
GOLDENS = os.path.join(ROOT, "tests", "goldens", "open-magvit2-video")
FULL_PARAMS = 370_547_349  # encoder 144,865,298 + decoder 225,682,051 (the reference's, keys.json)


def _meta():
  with open(os.path.join(GOLDENS, "keys.json")) as f:
    return json.load(f)


def _draw(rng, name, shape):  # as gen_open_magvit2_video.py draws them
  v = rng.standard_normal(shape) * (0.2 if len(shape) > 1 else 0.5)
  return v + 1.0 if "norm" in name and name.endswith("weight") else v


def _write(path, keep=lambda name: True):
  """The reduced checkpoint in video_128_262144.ckpt's layout, from the generator's draws."""
  meta = _meta()
  rng = np.random.default_rng(meta["seed"])
  sd = {}
  for name, shape in meta["keys"]:
    if shape:
      sd[name] = _draw(rng, name, tuple(shape)).astype(np.float32)
    else:  # LitEma's decay and num_updates
      sd[name] = np.asarray(meta["scalars"][name], np.float32 if name.endswith("decay") else np.int32)
  sd = {k: v for k, v in sd.items() if keep(k)}
  torchfile.save({"epoch": 3, "global_step": 1234, "state_dict": sd, "hyper_parameters": {}}, path)
  return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  return _write(str(tmp_path_factory.mktemp("om2v") / "video_reduced.ckpt"))


@pytest.fixture(scope="module")
def converted(ckpt):
  return pretrained.convert("open-magvit2-video", ckpt)


def _cl(a):  # (B, C, T, H, W) -> (B, T, H, W, C)
  return np.transpose(a, (0, 2, 3, 4, 1))


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("suffix,frames", [("", 5), ("_1", 1)], ids=["5_frames", "1_frame"])
def test_parity_with_the_reference(converted, suffix, frames):
  tok, _, meta = converted
  assert meta["weights"] == "ema"
  g = np.load(os.path.join(GOLDENS, "golden.npz"))
  x = jnp.asarray(_cl(g["x"][:, :, :frames]))
  with jax.default_matmul_precision("highest"):
    z = np.asarray(tok._latents(x))
    ids = np.asarray(tok.encode(x))
    decoded = np.asarray(tok.decode(jnp.asarray(g["ids" + suffix])))
  assert _rel(z, _cl(g["latent" + suffix])) < 1e-5
  assert ids.shape == g["ids" + suffix].shape == (2, 1 + (frames - 1) // 2, 4, 4)
  agree = (ids == g["ids" + suffix]) | g["near_tie" + suffix]
  assert agree.all(), f"{int((~agree).sum())} of {ids.size} ids differ"
  want = _cl(g["decoded" + suffix])
  assert np.abs(decoded - want).max() < 1e-5 * np.abs(want).max()
  # The tolerance can fail: other ids decode otherwise.
  wrong = np.asarray(tok.decode(jnp.asarray(np.roll(g["ids" + suffix], 1, axis=-1))))
  assert np.abs(wrong - want).max() > 1e-2 * np.abs(want).max()


def test_config(converted):
  _, c, _ = converted
  assert c.model.cnn_family == "magvit2" and tuple(c.model.temporal_downsample) == (1, 2)
  assert c.model.video_norm == "clip" and c.model.time_padding == "zeros"
  assert c.quantizer.type == "lfq" and c.quantizer.bits == 6 and c.quantizer.bit_order == "lsb_first"
  assert c.video.num_frames == 17 and c.image_size == 64 and c.data.preprocess == "short_side_bilinear"
  config_lib.validate_config(c)


def test_noema_takes_the_raw_weights(ckpt):
  g = np.load(os.path.join(GOLDENS, "golden.npz"))
  raw, _, meta = pretrained.convert("open-magvit2-video", ckpt, ema=False)
  assert meta["weights"] == "model"
  assert not np.array_equal(np.asarray(raw.encode(jnp.asarray(_cl(g["x"][:, :, :1])))), g["ids_1"])


def test_other_checkpoints_are_refused(tmp_path):
  image = os.path.join(ROOT, "tests", "goldens", "open-magvit2", "reduced.ckpt")
  with pytest.raises(
    reader.CheckpointError,
    match=r"reduced\.ckpt: not a open-magvit2-video checkpoint: an image"
    r" tokenizer's \(2-D encoder\.conv_in\.weight\); convert it with open-magvit2$",
  ):
    pretrained.convert("open-magvit2-video", image)
  taming = os.path.join(ROOT, "tests", "goldens", "taming", "reduced.ckpt")
  with pytest.raises(reader.CheckpointError, match=r"an image tokenizer's \(2-D encoder\.conv_in\.weight\)$"):
    pretrained.convert("open-magvit2-video", taming)
  # The image converter on a video file: one line naming the missing image tensor.
  plain = _write(str(tmp_path / "video_plain.ckpt"), keep=lambda k: not k.startswith("model_ema."))
  with pytest.raises(reader.CheckpointError, match=r"not a open-magvit2 checkpoint: tensor 'encoder\.conv_in\.weight'"):
    pretrained.convert("open-magvit2", plain)
  # Without LitEma copies the raw weights are the default; a missing tensor is named.
  assert pretrained.convert("open-magvit2-video", plain)[2]["weights"] == "model"
  broken = _write(str(tmp_path / "video_broken.ckpt"), keep=lambda k: k != "decoder.conv_out.conv_1.bias")
  with pytest.raises(reader.CheckpointError, match=r"video_broken\.ckpt: missing tensors for decoder\.conv_out\.bias"):
    pretrained.convert("open-magvit2-video", broken, ema=False)
  with pytest.raises(reader.CheckpointError, match=r"EMA copy of 'decoder\.conv_out\.conv_1\.bias'"):
    pretrained.convert("open-magvit2-video", _write(str(tmp_path / "ema_gap.ckpt"),
                       keep=lambda k: k != "model_ema.decoderconv_outconv_1bias"))  # fmt: skip


def test_full_size_parameter_counts():
  # The published video_128_262144.ckpt's names and shapes (the reference's own modules at its config):
  # every tensor maps, every vqtok parameter is written, and the counts are equal.
  meta = _meta()
  shapes = {k: tuple(s) for k, s in meta["full_keys"].items()}
  assert sum(math.prod(s) for s in shapes.values()) == sum(meta["full_params"].values()) == FULL_PARAMS
  tensors = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}  # no memory
  c = open_magvit2_video.config(tensors, "video_128_262144.ckpt")
  assert c.image_size == 128 and tuple(c.model.temporal_downsample) == (1, 2, 2) and c.quantizer.bits == 18
  tok = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  expected = files.shapes(tok)
  assert sum(math.prod(s) for s in expected.values()) == FULL_PARAMS
  mapped = layout.apply_rules(tensors, open_magvit2_video.table(c), expected, source="full")
  assert set(mapped) == set(expected)
  assert tok.token_shape == (16, 16) and tok.temporal_factor == 4
  assert re.search(r"17 frames -> 5 x 16 x 16", open_magvit2_video.FILES)


def test_convert_command_writes_a_tokenizer_dir(ckpt, tmp_path):
  out = tmp_path / "tok"
  res = subprocess.run(
    [sys.executable, "-m", "vqtok.convert", "open-magvit2-video", ckpt, str(out)],
    cwd=ROOT, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert res.returncode == 0, res.stderr
  summary = json.loads(res.stdout)
  assert summary["format"] == "open-magvit2-video" and summary["codebook_size"] == 64
  assert summary["frames_per_clip"] == 17 and summary["token_shape_per_clip"] == [9, 16, 16]  # 64 px, s_T 2
  tok, config, _ = load(str(out))
  assert config.video.num_frames == 17 and config.model.video_norm == "clip"
  g = np.load(os.path.join(GOLDENS, "golden.npz"))
  np.testing.assert_array_equal(np.asarray(tok.encode(jnp.asarray(_cl(g["x"])))), g["ids"])
