"""Variable-length 1-D tokens: the token drop's draws, decoding from a prefix, and a tiny TiTok trained with it.

``model.token_drop`` (vit.TOKEN_DROPS): "tail" is One-D-Piece's (one k ~ U{1..K}
per batch, the tail left out of the decoder), "nested" FlexTok's (one k per
image from {1, 2, 4, ..., K}, the tail overwritten by a learned token).
"""

import json
import math
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import load_config, read_losses

from vqtok import config as config_lib
from vqtok import load, models, tokenize
from vqtok.evaluation.report import evaluate
from vqtok.models import tokenizer as tokenizer_lib
from vqtok.models import vit
from vqtok.training.loop import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)

K = 8
VIT1D = {
  "model.encoder": "vit1d",
  "model.width": 32,
  "model.depth": 1,
  "model.mlp_dim": 64,
  "model.num_heads": 2,
  "model.patch_size": 4,
  "model.num_latent_tokens": K,
  "loss.gan_weight": 0.0,
  "training.mesh": (1, 1),
  "training.num_steps": 4,
  "training.checkpoint_every": 4,
}


def _config(drop, **overrides):
  return load_config(**{**VIT1D, "model.token_drop": drop, **overrides})


@pytest.fixture(scope="module")
def toks():
  """A tiny 1-D tokenizer of each kind (same seed) and a batch's ids."""
  out = {d: models.build_tokenizer(_config(d), rngs=nnx.Rngs(0)) for d in ("", "tail", "nested")}
  x = jax.random.uniform(jax.random.key(1), (3, 32, 32, 3), minval=-1, maxval=1)
  return out, np.asarray(out["tail"].encode(x))


@pytest.mark.parametrize("name", ["tail", "nested"])
def test_draws_follow_the_reference_distribution(name):
  drop, n, batch = vit.TOKEN_DROPS[name], 4000, 4
  keys = jax.random.split(jax.random.key(0), n)
  keep = np.asarray(jax.vmap(lambda k: vit.sample_keep(drop, k, batch, K))(keys))  # (n, batch)
  support = np.arange(1, K + 1) if name == "tail" else 2 ** np.arange(int(math.log2(K)) + 1)
  assert set(np.unique(keep)) == set(support)
  if name == "tail":  # One-D-Piece: one k for the whole batch
    assert (keep == keep[:, :1]).all()
  else:  # FlexTok: one k per image
    assert (keep != keep[:, :1]).any(axis=1).mean() > 0.5
  draws = keep[:, 0]
  counts = np.array([(draws == s).sum() for s in support])
  expected = n / len(support)
  chi2 = float(((counts - expected) ** 2 / expected).sum())
  assert chi2 < 30, (counts, chi2)  # uniform on the support (p < 1e-4 for <= 7 degrees of freedom)


def test_tail_drop_masks_exactly_what_a_cut_sequence_decodes(toks):
  tokens, ids = toks
  tok = tokens["tail"]
  z = tok.quantizer.indices_to_codes(jnp.asarray(ids))
  keep = jnp.asarray([1, 3, K], jnp.int32)
  masked = np.asarray(tok.reconstruct(z, keep=keep))
  for i, k in enumerate((1, 3, K)):
    cut = np.asarray(tok.decode(jnp.asarray(ids), num_tokens=k))
    np.testing.assert_allclose(masked[i], cut[i], atol=1e-5)
  assert np.abs(masked[0] - masked[2]).max() > 1e-3  # the tail matters: the check can fail
  # A prefix passed as it is equals num_tokens on the whole sequence.
  np.testing.assert_array_equal(
    np.asarray(tok.decode(jnp.asarray(ids[:, :3]))), np.asarray(tok.decode(ids, num_tokens=3))
  )


def test_nested_drop_fills_the_tail_with_its_learned_token(toks):
  tokens, ids = toks
  tok = tokens["nested"]
  assert tok.decoder.drop_token[...].shape == (1, 1, tok.quantizer.code_dim)
  z = tok.quantizer.indices_to_codes(jnp.asarray(ids))
  filled = z.at[:, 2:].set(tok.decoder.drop_token[...][0, 0])  # the tail overwritten, the sequence full length
  want = np.asarray(tok.reconstruct(filled))
  np.testing.assert_allclose(np.asarray(tok.decode(ids, num_tokens=2)), want, atol=1e-5)
  np.testing.assert_allclose(np.asarray(tok.reconstruct(z, keep=jnp.full((3,), 2))), want, atol=1e-5)
  assert not np.allclose(want, np.asarray(tok.reconstruct(z)), atol=1e-3)


def test_bad_prefixes_are_one_line_errors(toks, monkeypatch):
  tokens, ids = toks
  tok = tokens["tail"]
  for call in (lambda: tok.decode(ids, num_tokens=K + 1), lambda: tok.decode(np.zeros((1, K + 1), np.int32))):
    with pytest.raises(ValueError, match=f"this tokenizer has {K} tokens per image; cannot decode from {K + 1}"):
      call()
  with pytest.raises(ValueError, match="num_tokens is for 1-D tokenizers"):
    models.build_tokenizer(load_config(), rngs=nnx.Rngs(0)).decode(np.zeros((1, 8, 8), np.int32), num_tokens=2)
  for drop, fields, match in (
    ("tail", {"model.encoder": "cnn"}, "needs a 1-D tokenizer"),
    ("nested", {"model.num_latent_tokens": 6}, "must be one"),
  ):
    with pytest.raises(ValueError, match=match):
      config_lib.validate_config(_config(drop, **fields))
  # A tokenizer trained without a drop decodes a prefix, and says so once.
  monkeypatch.setattr(tokenizer_lib, "_warned_prefix", False)
  with pytest.warns(UserWarning, match="trained without model.token_drop") as record:
    tokens[""].decode(ids, num_tokens=2)
    tokens[""].decode(ids, num_tokens=3)
  assert len(record) == 1
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    tokens[""].decode(ids)  # all the tokens: no warning


def test_tiny_titok_trains_with_tail_drop_and_decodes_prefixes(tmp_path):
  config = config_lib.validate_config(_config("tail"))
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir, progress=False)
  losses = read_losses(workdir)
  assert sorted(losses) == [1, 2, 3, 4] and all(math.isfinite(v) for v in losses.values())
  tok, saved, _ = load.load(workdir)
  assert saved.model.token_drop == "tail"  # recorded with the tokenizer: prefixes decode without a warning
  tokens = str(tmp_path / "tokens")
  tokenize.encode_to_files(saved, tok, 4, tokens, batch_size=8, progress=False)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    out = tokenize.decode_to_images(tok, tokens, str(tmp_path / "k2"), config=saved, num_tokens=2, progress=False)
  assert out["decoded"] == out["images"] > 0 and 0 <= out["token_agreement"] <= 1
  with pytest.raises(ValueError, match=f"num_tokens={K + 1}: the tokenizer has {K} 1-D tokens per image"):
    tokenize.decode_to_images(tok, tokens, str(tmp_path / "k9"), config=saved, num_tokens=K + 1, progress=False)
  # eval.py against k: one report per prefix length and the table of them.
  out = tmp_path / "eval"
  res = subprocess.run(
    [sys.executable, "eval.py", f"--tokenizer={workdir}", "--num_tokens=2,8", "--num_images=8", "--batch_size=8",
     f"--output={out}"],
    cwd=ROOT, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert res.returncode == 0, res.stderr
  assert sorted(os.listdir(out)) == sorted(
    ["eval_4_by_tokens.json"] + [f"eval_4_k{k}.{e}" for k in (2, 8) for e in ("json", "png")]
  )
  by_tokens = json.loads((out / "eval_4_by_tokens.json").read_text())
  assert by_tokens["num_tokens"] == [2, 8] and by_tokens["step"] == 4
  whole, _ = evaluate(saved, tok, batch_size=8, num_images=8, progress=False)  # all the tokens, as without the flag
  assert by_tokens["psnr"][1] == pytest.approx(whole["psnr"], abs=1e-4)
  assert by_tokens["psnr"][0] != pytest.approx(whole["psnr"], abs=1e-4)  # the prefix decodes differently
  assert json.loads((out / "eval_4_k2.json").read_text())["num_tokens"] == 2
  for k, match in ((K + 1, f"num_tokens={K + 1}: the tokenizer has {K} tokens per image"), (0, "num_tokens=0")):
    with pytest.raises(ValueError, match=match):
      evaluate(saved, tok, batch_size=8, num_images=8, num_tokens=k, progress=False)
