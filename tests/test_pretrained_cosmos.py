"""Cosmos DV import (vqtok/pretrained/cosmos.py) against the reference's own outputs.

The goldens (scripts/parity/gen_cosmos.py for Cosmos-Tokenizer 0.1, gen_cosmos1.py for Cosmos 1.0's
DV4x8x8-LowRes) are reduced-width random-weight Cosmos DV models traced and saved as NVIDIA publishes them
(encoder.jit, decoder.jit, autoencoder.jit), with the reference's float64 latents, ids and decoded frames for
a 9-frame clip and a 1-frame clip in [-1, 1].
"""

import importlib
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vqtok import config as config_lib
from vqtok.models import build_tokenizer, cnn
from vqtok.pretrained import CheckpointError, convert, cosmos

FAST_COMPILE = True  # tolerances below are far above the last bits XLA's optimisations change

GOLDENS = os.path.join(os.path.dirname(__file__), "goldens", "cosmos")
#: directory -> the encoder's (space, time) strides per level as the archive's traced code shows them, the
#: Haar patch, the CNN family (1.0's resamplings hold only the convs they use) and the (reduced) z_channels
VARIANTS = {
  "Cosmos-0.1-Tokenizer-DV4x8x8": ((2, 1), (1, 1), 4, "cosmos", 8),
  "Cosmos-0.1-Tokenizer-DV8x8x8": ((2, 1), (2, 1), 4, "cosmos", 8),
  "Cosmos-0.1-Tokenizer-DV8x16x16": ((2, 2), (2, 1), 4, "cosmos", 8),
  "Cosmos-1.0-Tokenizer-DV4x8x8-LowRes": ((2, 2), (2, 1), 2, "cosmos1", 32),
}


def _channels_last(a: np.ndarray) -> np.ndarray:
  return np.moveaxis(a, 1, -1)  # (B, C, T, H, W) -> (B, T, H, W, C)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def converted(request):
  tok, config, meta = convert("cosmos", os.path.join(GOLDENS, request.param))
  return request.param, tok, config, meta, np.load(os.path.join(GOLDENS, request.param, "golden.npz"))


def test_config_read_off_the_archives(converted):
  name, tok, c, meta, _ = converted
  space, time, patch, family, z = VARIANTS[name]
  assert (tuple(c.model.spatial_downsample), tuple(c.model.temporal_downsample)) == (space, time)
  assert c.model.wavelet_patch == patch and c.model.cnn_family == family and c.model.time_padding == "replicate"
  assert c.model.z_channels == z
  assert list(c.quantizer.levels) == [8, 8, 8, 5, 5, 5] and tok.quantizer.codebook_size == 64000
  assert meta["source_file"] == name
  # The frame rule: 1 + k*s_T frames (s_T = 4 or 8 as the name says), [-1, 1].
  s_t = int(name.split("DV")[1].split("x")[0])
  assert tok.temporal_factor == s_t and tok.latent_frames(1 + 2 * s_t) == 3
  assert tok.input_range == (-1.0, 1.0)
  with pytest.raises(ValueError, match=f"1 \\+ k\\*{s_t}"):
    tok.latent_frames(s_t)


# Compiled whole: a third of the time of running the CNN op by op.
_latents = nnx.jit(lambda tok, x: tok._latents(x))
_decode = nnx.jit(lambda tok, ids: tok.decode(ids))


def test_parity_with_the_reference(converted):
  _, tok, _, _, g = converted
  latents = {}
  with jax.default_matmul_precision("highest"):
    for suffix in ("", "1"):  # 9 frames, then one frame (an image)
      x = jnp.asarray(_channels_last(g["x" + suffix]))
      z_ref = _channels_last(g["z" + suffix])
      z = latents[suffix] = _latents(tok, x)  # what encode quantizes
      np.testing.assert_allclose(np.asarray(z), z_ref, rtol=0, atol=1e-5 * np.abs(z_ref).max())
      ids = np.asarray(tok.quantizer(z)[1].indices)
      near_tie = (g["margin"] < 1e-3) if suffix == "" else np.zeros(ids.shape, bool)
      assert ids.shape == g["ids" + suffix].shape
      np.testing.assert_array_equal(ids[~near_tie], g["ids" + suffix][~near_tie])
      y_ref = _channels_last(g["y" + suffix])
      y = np.asarray(_decode(tok, jnp.asarray(g["ids" + suffix])))  # from the reference's ids
      np.testing.assert_allclose(y, y_ref, rtol=0, atol=2e-5 * np.abs(y_ref).max())
  # Causal, as the reference is (its goldens: equal to the last bit): frame 0 alone makes latent frame 0
  # (here up to float32 rounding: the convs run on clips of other lengths).
  z1, z9 = np.asarray(latents["1"]), np.asarray(latents[""][:, :1])
  np.testing.assert_allclose(z1, z9, rtol=0, atol=2e-6 * np.abs(z9).max())


def test_chunks_give_the_whole_clips_ids_and_frames():
  # One latent frame at a time, the causal convs, pooling pairs and time attention carrying their state.
  name = "Cosmos-0.1-Tokenizer-DV8x16x16"  # halves time in the encoder and doubles it in the decoder
  tok, _, _ = convert("cosmos", os.path.join(GOLDENS, name))
  g = np.load(os.path.join(GOLDENS, name, "golden.npz"))
  with jax.default_matmul_precision("highest"):
    ids = np.asarray(tok.encode(jnp.asarray(_channels_last(g["x"])), chunk=1))
    np.testing.assert_array_equal(ids, g["ids"])
    y_ref = _channels_last(g["y"])
    y = np.asarray(tok.decode(jnp.asarray(g["ids"]), chunk=1))
  np.testing.assert_allclose(y, y_ref, rtol=0, atol=2e-5 * np.abs(y_ref).max())


def test_autoencoder_archive_reads_the_same(tmp_path):
  name = "Cosmos-0.1-Tokenizer-DV4x8x8"
  shutil.copy(os.path.join(GOLDENS, name, "autoencoder.jit"), tmp_path / "autoencoder.jit")
  _, c_whole, _ = convert("cosmos", str(tmp_path / "autoencoder.jit"))
  tok, c, _ = convert("cosmos", os.path.join(GOLDENS, name, "encoder.jit"))  # decoder.jit beside it
  assert c_whole.to_dict() == c.to_dict()
  # encoder.jit alone: one line naming what is missing.
  os.remove(tmp_path / "autoencoder.jit")
  shutil.copy(os.path.join(GOLDENS, name, "encoder.jit"), tmp_path / "encoder.jit")
  with pytest.raises(CheckpointError, match="encoder.jit and decoder.jit side by side"):
    convert("cosmos", str(tmp_path))


def test_full_size_parameter_counts_equal_the_reference():
  # configs/cosmos_dv488.py: the reference's discrete_video config, DV4x8x8.
  with open(os.path.join(GOLDENS, "params.json")) as f:
    ref = json.load(f)["full_params"]
  c = importlib.import_module("configs.cosmos_dv488").get_config()
  config_lib.validate_config(c, check_paths=False)
  tok = nnx.eval_shape(lambda: build_tokenizer(c, rngs=nnx.Rngs(0)))
  count = lambda m: sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert count(tok.encoder) + count(tok.project_in) == ref["DV4x8x8"]["encoder"]
  assert count(tok.decoder) + count(tok.project_out) == ref["DV4x8x8"]["decoder"]
  assert count(tok) == ref["DV4x8x8"]["total"] == ref["DV8x8x8"]["total"] == ref["DV8x16x16"]["total"]


def test_full_size_cosmos1_parameter_counts_equal_the_reference():
  # configs/cosmos_dv488.py:lowres: the reference's discrete_video_4x8x8_lowres (cosmos1/.../networks/configs.py),
  # and with 0.1's patch and z, 1.0's DV8x16x16 (its resamplings without 0.1's unused convs: fewer parameters).
  with open(os.path.join(GOLDENS, "Cosmos-1.0-Tokenizer-DV4x8x8-LowRes", "params.json")) as f:
    ref = json.load(f)["full_params"]
  c = importlib.import_module("configs.cosmos_dv488").get_config("lowres")
  config_lib.validate_config(c, check_paths=False)
  count = lambda m: sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(m, nnx.Param)))
  tok = nnx.eval_shape(lambda: build_tokenizer(c, rngs=nnx.Rngs(0)))
  assert count(tok.encoder) + count(tok.project_in) == ref["DV4x8x8_LowRes"]["encoder"] == 46_647_302
  assert count(tok.decoder) + count(tok.project_out) == ref["DV4x8x8_LowRes"]["decoder"] == 65_972_464
  assert count(tok) == ref["DV4x8x8_LowRes"]["total"] == 112_619_766
  c.model.update(wavelet_patch=4, z_channels=16)
  tok = nnx.eval_shape(lambda: build_tokenizer(c, rngs=nnx.Rngs(0)))
  assert count(tok) == ref["DV8x16x16"]["total"] == 110_898_294


def test_cosmos1_archives_hold_only_the_convs_they_call():
  name = "Cosmos-1.0-Tokenizer-DV4x8x8-LowRes"
  obj = cosmos.read(os.path.join(GOLDENS, name))
  t = obj["tensors"]
  # Level 1 halves space only (no conv2, an nn.Identity); the first upsampling doubles space only (no conv1).
  assert (
    "encoder.down.1.downsample.conv2.conv3d.weight" not in t and "decoder.up.2.upsample.conv1.conv3d.weight" not in t
  )
  assert cosmos.options(obj, name) == {"spatial": (2, 2), "temporal": (2, 1), "family": "cosmos1"}
  # 1.0's strides are in the tensors (the traced code only agrees); 0.1's are in the traced code alone.
  assert cosmos.options(dict(obj, calls={}), name) == cosmos.options(obj, name)
  with pytest.raises(CheckpointError, match="no traced code for encoder.down.0.downsample"):
    cosmos.options(dict(cosmos.read(os.path.join(GOLDENS, "Cosmos-0.1-Tokenizer-DV4x8x8")), calls={}), "0.1")
  tok = nnx.eval_shape(lambda: build_tokenizer(cosmos.config(t, name, **cosmos.options(obj, name)), rngs=nnx.Rngs(0)))
  assert tok.encoder.down[1].conv2 is None and tok.decoder.up[0].conv1 is None
  assert tok.encoder.down[0].conv2 is not None and tok.decoder.up[1].conv1 is not None
  # A conv the code calls but the archive lacks (or the reverse) is neither 0.1's layout nor 1.0's.
  del t["encoder.down.0.downsample.conv2.conv3d.weight"]
  with pytest.raises(CheckpointError, match=r"encoder.down.0.downsample holds \['conv1', 'conv3'\]"):
    cosmos.options(obj, name)
  # 0.1's archives: every resampling holds its three convs, whatever it calls.
  obj = cosmos.read(os.path.join(GOLDENS, "Cosmos-0.1-Tokenizer-DV4x8x8"))
  assert cosmos.options(obj, "0.1")["family"] == "cosmos"
  # The Haar filters (bfloat16-rounded in the archives) tell Haar patching from plain rearranging.
  t = dict(obj["tensors"], **{"encoder.patcher3d.wavelets": np.ones(2, np.float32)})
  with pytest.raises(CheckpointError, match="not the Haar filter"):
    cosmos.config(t, "0.1", **cosmos.options(obj, "0.1"))
  t = dict(obj["tensors"], **{"encoder.patcher3d.patch_size_buffer": np.array([2], np.int32)})
  with pytest.raises(CheckpointError, match="patch_size_buffer says 2, conv_in 4"):
    cosmos.config(t, "0.1", **cosmos.options(obj, "0.1"))


def test_cosmos_options_are_checked():
  kw = dict(channels=4, channel_mult=(2, 4, 4), num_res_blocks=1, norm_groups=1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="spatial_downsample is for the CNN families"):
    cnn.Encoder(8, family="magvit2", temporal_downsample=(1, 2), spatial_downsample=(2, 1), **kw)
  with pytest.raises(ValueError, match="2s then 1s"):
    cnn.Encoder(8, family="cosmos", temporal_downsample=(1, 2), spatial_downsample=(2, 1), **kw)
  with pytest.raises(ValueError, match="wavelet_patch"):
    cnn.Encoder(8, family="cosmos", temporal_downsample=(1, 1), wavelet_patch=3, **kw)


def test_haar_patching_is_inverted_exactly():
  x = np.random.default_rng(0).standard_normal((2, 9, 8, 8, 3)).astype(np.float32)
  p = cnn.haar_patch(jnp.asarray(x), 4)
  assert p.shape == (2, 3, 2, 2, 192)
  np.testing.assert_allclose(np.asarray(cnn.haar_unpatch(p, 4)), x, atol=1e-5)
