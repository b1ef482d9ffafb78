"""A tiny TiTok trained with One-D-Piece's tail drop decodes better held-out photos from longer prefixes.

The issue's check: PSNR on the held-out photos rises with k, the number of
leading tokens decoded. Sizes are what two CPU cores train in about a minute
(16 px, 8 tokens of 512 codes, ``RUN``); at this length the model is far from
converged (near each image's mean-colour PSNR), so the rise is small but
stated with a margin the untrained order cannot reach: each k decodes at
least as well as the one before (within ``SLACK``), and all eight tokens beat
the first alone by ``RISE``. The same sizes drive ``bench/token_drop.py``'s
longer runs and plot.
"""

import math

import numpy as np
import pytest
from helpers import preset, read_losses

from vqtok import config as config_lib
from vqtok import load
from vqtok.evaluation.report import evaluate
from vqtok.training.loop import train_and_evaluate

K = 8
STEPS = 800
RUN = {
  "image_size": 16,
  "model.encoder": "vit1d",
  "model.width": 64,
  "model.depth": 2,
  "model.mlp_dim": 128,
  "model.num_heads": 2,
  "model.patch_size": 4,
  "model.posemb": "sincos2d",  # learned grid positions set apart far later at this length
  "model.num_latent_tokens": K,
  "model.token_drop": "tail",
  "model.code_dim": 3,
  "quantizer.levels": (8, 8, 8),
  "loss.l1_weight": 0.0,  # L2 alone: what PSNR measures
  "optimizer.lr": 1.5e-3,
  "optimizer.weight_decay": 0.0,
  "training.num_steps": STEPS,
  "training.checkpoint_every": STEPS,
  "training.eval_every": 0,
  "training.image_every": 0,
  "training.log_every": 100,
  "training.mesh": (1, 1),
  "eval.batch_size": 8,  # divides the 8 devices the tests fake
}
RISE = 0.15  # dB, k = K against k = 1
SLACK = 0.05  # dB a longer prefix may lose to the one before it


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  config = config_lib.validate_config(preset("tiny", None, **RUN))
  workdir = str(tmp_path_factory.mktemp("tail_drop"))
  train_and_evaluate(config, workdir, progress=False)
  return workdir


def test_held_out_psnr_rises_with_the_tokens_decoded(trained):
  losses = read_losses(trained)
  assert max(losses) == STEPS and all(math.isfinite(v) for v in losses.values())
  tok, saved, _ = load.load(trained)
  lengths = [2**i for i in range(int(math.log2(K)) + 1)]
  psnr = []
  for k in lengths:
    report, _ = evaluate(saved, tok, batch_size=8, num_tokens=k, progress=False)
    assert report["num_images"] == 20  # the held-out crops: 4 photos x 5
    psnr.append(report["psnr"])
  steps = np.diff(psnr)
  assert (steps > -SLACK).all(), dict(zip(lengths, psnr))
  assert psnr[-1] - psnr[0] > RISE, dict(zip(lengths, psnr))
