"""One-D-Piece (turingmotors/One-D-Piece): the converter, and decoding from prefixes at parity with its code.

tests/goldens/one_d_piece/ was made by the reference's own ``OneDPiece`` at
reduced width (scripts/parity/gen_one_d_piece.py): ``reduced.bin`` in the
published layout (TiTok's, with 16 latent tokens) and the reference's outputs
on three 32x32 photos in [0, 1]: the token ids, the images its
``decode_tokens(tokens, length=k)`` decodes from the first k ids for k in
``lengths``, and the proxy-code logits from the first 5 codes.
``full_keys.json`` lists the tensors of the published S-256, B-256 and L-256.
Tolerances: ids exactly equal except on near-ties (none here; smallest
relative distance gap 7.0e-3); decoded images and logits within 1e-4 (float32).
"""

import importlib
import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT

from vqtok import config as config_lib
from vqtok import models, pretrained
from vqtok.pretrained import one_d_piece, reader

GOLDENS = os.path.join(ROOT, "tests", "goldens", "one_d_piece")
REDUCED = os.path.join(GOLDENS, "reduced.bin")


@pytest.fixture(scope="module")
def golden():
  return dict(np.load(os.path.join(GOLDENS, "golden.npz")))


@pytest.fixture(scope="module")
def converted():
  return pretrained.convert("one-d-piece", REDUCED)


def test_converted_tokenizer_records_its_tail_drop(converted):
  tok, config, meta = converted
  assert config.model.token_drop == "tail" and tok.token_drop == "tail"
  assert config.model.vit_family == "titok" and tok.token_shape == (16,) and meta["source"] == "one-d-piece"


def test_prefix_decodes_match_the_reference(converted, golden):
  tok = converted[0]
  x = jnp.asarray(golden["images"] * 2 - 1, jnp.float32)
  ids = np.asarray(tok.encode(x))
  assert ((ids == golden["ids"]) | golden["near_tie"]).all()
  # Every length at once, as training draws them (the prefix masked in; one compile) ...
  lengths, n = golden["lengths"], len(golden["ids"])
  codes = tok.quantizer.indices_to_codes(jnp.asarray(np.tile(golden["ids"], (len(lengths), 1))))
  keep = jnp.asarray(np.repeat(lengths, n), jnp.int32)
  got = (np.asarray(nnx.jit(lambda t, z, k: t.reconstruct(z, keep=k))(tok, codes, keep)) + 1) / 2
  want = golden["decoded"].reshape(got.shape)
  assert np.abs(got - want).max() < 1e-4
  # ... and decode from the first 5 ids (the sequence cut), without a warning: it was trained for it.
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    got = (np.asarray(tok.decode(jnp.asarray(golden["ids"]), num_tokens=int(lengths[2]))) + 1) / 2
  assert np.abs(got - golden["decoded"][2]).max() < 1e-4
  # The prefixes decode to different images: the checks above can fail.
  assert np.abs(golden["decoded"][0] - golden["decoded"][-1]).max() > 1e-2
  codes = tok.quantizer.indices_to_codes(jnp.asarray(golden["ids"][:, :5]))
  assert np.abs(np.asarray(tok.decoder.logits(codes)) - golden["logits_5"]).max() < 1e-4


# B-256 (205,256,463) and L-256 (641,742,863) also count equal; S alone keeps the test short.
@pytest.mark.parametrize("name,count", [("one-d-piece_s256", 83_871_247)])
def test_full_size_configs_count_as_the_reference(name, count):
  with open(os.path.join(GOLDENS, "full_keys.json")) as f:
    shapes = json.load(f)[name]
  zero = np.zeros((), np.float32)  # zero-stride arrays: the real shapes without the memory
  tensors = one_d_piece.state_dict({k: np.broadcast_to(zero, s) for k, s in shapes.items()}, ema=False, source=name)
  assert sum(v.size for v in tensors.values()) == count
  c = one_d_piece.config(tensors, name)
  tok = nnx.eval_shape(lambda: models.build_tokenizer(c, rngs=nnx.Rngs(0)))
  assert sum(v.size for v in jax.tree.leaves(nnx.state(tok, nnx.Param))) == count
  assert tok.token_shape == (256,) and c.model.token_drop == "tail"
  preset = importlib.import_module(f"configs.{name.replace('-', '_')}").get_config()
  assert config_lib.architecture_diff(preset, c) == []  # the preset is the published architecture


def test_a_first_stage_checkpoint_is_refused_in_one_line(tmp_path):
  tensors = {k: v for k, v in reader.read_checkpoint(REDUCED).items() if not k.startswith("pixel_")}
  with pytest.raises(reader.CheckpointError, match="first training stage") as e:
    one_d_piece.config(one_d_piece.state_dict(tensors, ema=False, source="s1.bin"), "s1.bin")
  assert "\n" not in str(e.value)
