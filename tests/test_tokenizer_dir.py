"""Tokenizer directories record the LFQ/BSQ bit order and refuse to guess it; scalar state round-trips, and
``config.init_from`` restarts loss schedules (FSQ's entropy annealing counter)."""

import json
import os
import types
from typing import Any

import flax.struct
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from helpers import load_config

from vqtok import files, tokenizer_dir
from vqtok.config import default_config
from vqtok.models import build_tokenizer
from vqtok.training import loop

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


@flax.struct.dataclass
class _State:
  """The fields of a TrainState that ``loop.init_from`` reads and replaces (no optimizer: fast)."""

  g_params: Any
  g_rest: Any
  ema: Any = None


@pytest.mark.parametrize("annealed_source", [False, True])
def test_init_from_restarts_the_schedule(tmp_path, annealed_source):
  # config.init_from across the option (e.g. converted VidTok weights, then configs/vidtok_fsq_488.py):
  # the weights load, the annealing counter is neither read nor needed, and starts at 0 as the step does.
  def config(annealed):
    c = default_config()
    if annealed:
      c.quantizer.update(entropy_weight=0.1, entropy_anneal_steps=10, entropy_anneal_factor=3.0)
    return c

  src = config(annealed_source)
  tok = build_tokenizer(src, rngs=nnx.Rngs(1))
  if annealed_source:
    tok.quantizer.step[...] = jnp.int32(7)
  tokenizer_dir.save_tokenizer(tok, src, str(tmp_path / "tok"))
  c = config(not annealed_source)
  c.init_from = str(tmp_path / "tok")
  graphdef, params, rest = files.pure(build_tokenizer(c, rngs=nnx.Rngs(2)))
  state = loop.init_from(c, _State(params, rest), types.SimpleNamespace(g_def=graphdef), None)
  got = nnx.merge(graphdef, state.g_params, state.g_rest)
  want, have = files.arrays(tok, nnx.Param), files.arrays(got, nnx.Param)
  assert set(want) == set(have)
  for k, v in want.items():
    np.testing.assert_array_equal(have[k], v, err_msg=k)
  if not annealed_source:
    assert int(got.quantizer.step[...]) == 0


def test_step_counter_round_trips_a_tokenizer_dir(tmp_path):
  # Scalars stay scalars in model.safetensors (files.write_safetensors), so the counter loads back.
  c = default_config()
  c.quantizer.update(entropy_weight=0.1, entropy_anneal_steps=10)
  tok = build_tokenizer(c, rngs=nnx.Rngs(1))
  tok.quantizer.step[...] = jnp.int32(7)
  tokenizer_dir.save_tokenizer(tok, c, str(tmp_path / "tok"))
  loaded, _, _ = tokenizer_dir.read(str(tmp_path / "tok"))
  assert int(loaded.quantizer.step[...]) == 7


def test_fast_tracing_skips_the_origin_walk_only_inside_its_block():
  """files.fast_tracing (which build_tokenizer uses) leaves tracers' origin out of messages, and only in its block."""
  from jax._src.interpreters import partial_eval

  walk = partial_eval.DynamicJaxprTracer._origin_msg
  seen = []

  def build():
    x = jnp.ones(()) + 1
    with files.fast_tracing():
      seen.append(partial_eval.DynamicJaxprTracer._origin_msg(x))
    seen.append(partial_eval.DynamicJaxprTracer._origin_msg is walk)
    return build_tokenizer(config, rngs=nnx.Rngs(0))

  config = load_config()
  abstract = nnx.eval_shape(build)
  assert seen == ["", True] and partial_eval.DynamicJaxprTracer._origin_msg is walk
  assert files.shapes(abstract) == files.shapes(build_tokenizer(config, rngs=nnx.Rngs(0)))
