"""Tokenizer directories record the LFQ/BSQ bit order and refuse to guess it."""

import json
import os

import ml_collections
import pytest
from flax import nnx
from helpers import load_config

from vqtok import tokenizer_dir
from vqtok.models import build_tokenizer

LFQ = {"type": "lfq", "bits": 4}
RESIDUAL_BSQ = {"type": "residual", "num_levels": 2, "quantizer": {"type": "bsq", "bits": 4}}


def _save(tmp_path, spec, name, metadata=None):
  config = load_config(quantizer=ml_collections.ConfigDict(spec))
  tok = build_tokenizer(config, rngs=nnx.Rngs(0))
  return tokenizer_dir.save_tokenizer(tok, config, str(tmp_path / name), metadata=metadata)


def _binary_spec(quantizer):
  return quantizer if quantizer["type"] in ("lfq", "bsq") else quantizer["quantizer"]


def _forget_bit_order(path):
  """Rewrites config.json as a tokenizer directory from before the option, or a hand-made one, has it."""
  with open(os.path.join(path, "config.json")) as f:
    saved = json.load(f)
  del _binary_spec(saved["quantizer"])["bit_order"]
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(saved, f)


@pytest.mark.parametrize("spec", [LFQ, RESIDUAL_BSQ], ids=["lfq", "residual_bsq"])
def test_saved_config_records_the_bit_order(tmp_path, spec):
  path = _save(tmp_path, spec, "default")
  with open(os.path.join(path, "config.json")) as f:
    assert _binary_spec(json.load(f)["quantizer"])["bit_order"] == "msb_first"
  lsb = json.loads(json.dumps(spec))
  _binary_spec(lsb)["bit_order"] = "lsb_first"
  path = _save(tmp_path, lsb, "lsb")
  tok, config, _ = tokenizer_dir.read(path)
  assert _binary_spec(config.quantizer)["bit_order"] == "lsb_first"
  inner = tok.quantizer if spec is LFQ else tok.quantizer.quantizers[0]
  assert inner.bit_order == "lsb_first"


@pytest.mark.parametrize("spec", [LFQ, RESIDUAL_BSQ], ids=["lfq", "residual_bsq"])
def test_unrecorded_bit_order_is_refused(tmp_path, spec):
  path = _save(tmp_path, spec, "tok", metadata={"source": "someone"})
  _forget_bit_order(path)
  with pytest.raises(ValueError, match=r"config.json: the (lfq|bsq) quantizer does not record its bit_order") as e:
    tokenizer_dir.read(path)
  assert "\n" not in str(e.value)


def test_a_vqtok_export_without_bit_order_is_refused_too(tmp_path):
  # Exports written before vqtok recorded the order are not guessed at either (README, Changelog).
  path = _save(tmp_path, LFQ, "tok", metadata={"source": "vqtok", "step": 3})
  _forget_bit_order(path)
  with pytest.raises(ValueError, match=r"config.json: the lfq quantizer does not record its bit_order"):
    tokenizer_dir.read(path)


def test_other_quantizers_need_no_bit_order(tmp_path):
  path = _save(tmp_path, {"type": "fsq", "levels": (8, 5, 5, 5)}, "fsq", metadata={"source": "someone"})
  with open(os.path.join(path, "config.json")) as f:
    assert "bit_order" not in json.load(f)["quantizer"]
  tokenizer_dir.read(path)
