"""End-to-end: the var_vq16 preset's tiny multi-scale variant trains, resumes
exactly from a checkpoint, reports per-scale usage, and encodes/decodes in
scale order; a schedule that does not end at the latent size is refused."""

import json
import math
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import preset, read_losses

from vqtok import config as config_lib
from vqtok.models.tokenizer import build_tokenizer
from vqtok.training.loop import train_and_evaluate

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)


def var_config(arg="runlocal", **overrides):
  return preset("var_vq16", arg, **overrides)


def test_var_preset_sizes():
  c = config_lib.validate_config(var_config(""))
  assert c.quantizer.scales[-1] == 256 // 16 and sum(s * s for s in c.quantizer.scales) == 680
  assert c.model.channels == 160 and c.model.code_dim == 32 and c.quantizer.quantizer.codebook_size == 4096


def test_tiny_multiscale_trains_and_resumes_exactly(tmp_path):
  # GAN from step 0: one compiled train step (the persistent cache serves the resumed run).
  config = lambda: config_lib.validate_config(var_config(**{"loss.disc_start": 0}))
  full = str(tmp_path / "full")
  summary = train_and_evaluate(config(), full, progress=False)
  want = read_losses(full)
  assert sorted(want) == [1, 2, 3, 4, 5, 6] and all(math.isfinite(v) for v in want.values())
  final = summary["final_metrics"]
  for k in range(6):  # per-scale usage and perplexity reach the logs
    assert final[f"codebook/scale_{k}/usage"] > 0 and final[f"codebook/scale_{k}/perplexity"] >= 1
  assert "d_loss" in final  # the GAN ran

  # Resume from the step-4 checkpoint of a copy: steps 5 and 6 must repeat exactly.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(full, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
  with open(os.path.join(resumed, "metrics.jsonl")) as f:
    kept = [line for line in f if json.loads(line).get("step", 0) <= 4]
  with open(os.path.join(resumed, "metrics.jsonl"), "w") as f:
    f.writelines(kept)
  summary = train_and_evaluate(config(), resumed, progress=False)
  assert summary["start_step"] == 4
  got = read_losses(resumed)
  for step in (5, 6):
    assert got[step] == want[step], (step, got[step], want[step])  # exact on CPU


def test_tokenizer_encodes_in_scale_order_and_decodes_prefixes():
  c = config_lib.validate_config(var_config())
  tok = build_tokenizer(c, rngs=nnx.Rngs(0))
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  idx = nnx.jit(lambda t, x: t.encode(x))(tok, images)
  assert idx.shape == (2, 130) and idx.dtype == jnp.int32
  decode = nnx.jit(lambda t, i, k: t.decode(i, num_scales=k), static_argnums=2)
  full = decode(tok, idx, None)
  recon, _ = nnx.jit(lambda t, x: t(x))(tok, images)
  np.testing.assert_allclose(np.asarray(full), np.asarray(recon), atol=1e-5)
  coarse = decode(tok, idx, 2)
  assert coarse.shape == full.shape and float(jnp.max(jnp.abs(coarse - full))) > 0
  with pytest.raises(ValueError, match=r"decode expects indices of shape \(B, 130\); got \(2, 8, 8\)"):
    tok.decode(jnp.zeros((2, 8, 8), jnp.int32))


def test_schedule_must_end_at_the_latent_size():
  c = var_config(**{"quantizer.scales": (1, 2, 4)})
  with pytest.raises(ValueError, match=r"quantizer.scales=\[1, 2, 4\] must end at the latent size 8"):
    config_lib.validate_config(c)
  c = var_config(**{"quantizer.scales": (1, 2, 4)})
  with pytest.raises(ValueError, match=r"schedule \[1, 2, 4\] ends at 4x4, but the encoder's latent"):
    build_tokenizer(c, rngs=nnx.Rngs(0))


def test_token_files_eval_report_and_bad_token_length(tmp_path):
  from vqtok import tokenize
  from vqtok.evaluation.report import evaluate

  c = config_lib.validate_config(var_config())
  tok = build_tokenizer(c, rngs=nnx.Rngs(0))
  report, _ = evaluate(c, tok, batch_size=8, num_images=8, progress=False)
  per = report["codebook"]["per_scale"]
  assert [p["scale"] for p in per] == [1, 2, 3, 4, 6, 8]
  assert 0 < per[0]["usage"] <= 8 / 64 and per[-1]["usage"] > per[0]["usage"]  # scale 1: one token per image

  tokens = str(tmp_path / "tokens")
  tokenize.encode_to_files(c, tok, 0, tokens, batch_size=8, progress=False)
  with open(os.path.join(tokens, "metadata.json")) as f:
    meta = json.load(f)
  assert meta["scales"] == [1, 2, 3, 4, 6, 8] and meta["num_tokens"] == 130
  shard = dict(np.load(os.path.join(tokens, "tokens-00000.npz")))
  assert shard["indices"].shape[1:] == (130,)
  out = tokenize.decode_to_images(tok, tokens, str(tmp_path / "coarse"), num_scales=2, reencode=False, progress=False)
  assert out["decoded"] == len(shard["indices"])

  # A token file of another length: one error naming both, no image written.
  np.savez(os.path.join(tokens, "tokens-00000.npz"), **{**shard, "indices": shard["indices"][:, :129]})
  with pytest.raises(ValueError, match=r"shape \(\d+, 129\) do not fit \(n, 130\): the tokenizer's scale schedule"):
    tokenize.decode_to_images(tok, tokens, str(tmp_path / "bad"), reencode=False, progress=False)
  assert not os.path.exists(tmp_path / "bad")


def test_residual_per_level_scales_are_not_a_scale_schedule(tmp_path):
  # Residual's `scales` (per-level factors) must not be taken for a multi-scale schedule.
  from vqtok import tokenize
  from vqtok.evaluation.report import evaluate

  c = config_lib.validate_config(var_config())
  c.quantizer = {
    "type": "residual",
    "num_levels": 2,
    "scales": (1.0, 0.5),
    "quantizer": {"type": "fsq", "levels": (5,) * 4},
  }
  tok = build_tokenizer(c, rngs=nnx.Rngs(0))
  assert tok.quantizer.scale_schedule is None
  report, _ = evaluate(c, tok, batch_size=8, num_images=8, progress=False)
  assert "per_scale" not in report["codebook"] and len(report["codebook"]["usage_per_level"]) == 2
  tokens = str(tmp_path / "tokens")
  tokenize.encode_to_files(c, tok, 0, tokens, batch_size=8, progress=False)
  with open(os.path.join(tokens, "metadata.json")) as f:
    assert "scales" not in json.load(f)
  out = tokenize.decode_to_images(tok, tokens, str(tmp_path / "decoded"), reencode=False, progress=False)
  assert out["decoded"] == out["images"] > 0
  with pytest.raises(ValueError, match="num_scales is for multi-scale quantizers; this one is Residual"):
    tok.decode(jnp.zeros((1, 8, 8, 2), jnp.int32), num_scales=1)
