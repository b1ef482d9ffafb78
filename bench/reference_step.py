#!/usr/bin/env python
"""taming's, Open-MAGVIT2's and TiTok's own training steps, timed for bench/train_vs_reference.py (torch side).

Usage (called by bench/train_vs_reference.py --reference_family=...; not a vqtok script):
  /tmp/torchenv/bin/python bench/reference_step.py taming /path/to/taming-transformers --batch b.npy --steps 5

Each family's trainer is built by its step-parity script (scripts/parity/gen_train_taming.py
``build``, gen_train_magvit2.py ``trainer``, gen_train_titok.py ``trainer``), on the
reference's own modules from the checkout, at the reduced sizes of the committed
goldens that tests/test_train_parity_*.py check (the converter goldens'
tokenizers, the PatchGAN at ndf 8, 32 px), and stepped by the same scripts'
stand-ins for the reference's loop (``train_batch``, ``train_step``):

* taming: pytorch-lightning 1.0's loop over ``VQModel.training_step``, both
  optimizers (L1 + LPIPS, the adaptive GAN weight, hinge losses, Adam); no EMA
  (taming keeps none). ``disc_start`` 0: the GAN is on from the first step.
* magvit2: lfqgan.py's manual-optimisation ``training_step`` (LFQ with its
  entropy terms, L1 + LPIPS, the non-saturating generator term, hinge + LeCam
  for the discriminator, Adam) and ``on_train_batch_end`` (LitEma). ``disc_start`` 0.
* titok: train_utils.py's stage-1 body (the frozen teacher's proxy codes, the
  cross-entropy and quantizer losses, clipping, AdamW, the scheduler, the EMA).
  Stage 1 has no GAN and no LPIPS.

``--batch`` is an NHWC float32 array in [-1, 1], the batch vqtok's side uses
(TiTok's reference takes it in [0, 1]). Prints one JSON line: the seconds of
each step after a first, warm-up one, with ``torch.set_num_threads``.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts", "parity"))
GOLDENS = os.path.join(ROOT, "tests", "goldens")
TOKENIZERS = {
  "taming": os.path.join(GOLDENS, "taming", "reduced.ckpt"),
  "magvit2": os.path.join(GOLDENS, "open-magvit2", "reduced.ckpt"),
  "titok": os.path.join(GOLDENS, "titok", "reduced.bin"),
}


def parse():
  p = argparse.ArgumentParser()
  p.add_argument("family", choices=tuple(TOKENIZERS))
  p.add_argument("ref", help="the reference checkout (scripts/parity/README.md names its commit)")
  p.add_argument("--batch", required=True, help="NHWC float32 .npy in [-1, 1]")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--threads", type=int, default=2)
  return p.parse_args()


def stepper(family, ref, x, out):
  """A function running one full training step of ``family``'s reference on the batch ``x`` (NHWC, [-1, 1])."""
  gen = importlib.import_module(f"gen_train_{family}")
  argv = [ref, "--out", out, "--tokenizer", TOKENIZERS[family]]
  if family == "taming":
    args = gen.parse([*argv, "--batch", str(len(x)), "--disc-start", "0"])
    model, optimizers, _, _, _ = gen.build(args)
    batch = {"image": torch.from_numpy(x)}  # get_input makes it NCHW
    return lambda s: gen.train_batch(model, optimizers, batch, s)
  if family == "magvit2":
    args = gen.parse([*argv, "--disc-start", "0"])
    model, progress, _, _ = gen.trainer(args)
    batch = {"image": torch.from_numpy(x)}  # get_input wants NHWC
    return lambda s: gen.train_batch(model, progress, batch, s)
  args = gen.parse([*argv, "--max-steps", "1000"])  # the cosine's length: past the warm-up for every step timed
  tr = gen.trainer(args)
  images = torch.from_numpy(np.ascontiguousarray((x.transpose(0, 3, 1, 2) + 1) / 2))  # TiTok's [0, 1]
  return lambda s: gen.train_step(tr, images)


def main():
  args = parse()
  torch.set_num_threads(args.threads)
  x = np.load(args.batch).astype(np.float32)
  with tempfile.TemporaryDirectory() as out:
    step = stepper(args.family, os.path.abspath(args.ref), x, out)
    times = []
    for s in range(args.steps + 1):  # the first step warms up (allocations, lazy init)
      t = time.perf_counter()
      step(s)
      times.append(time.perf_counter() - t)
  print(json.dumps({"seconds": times[1:], "threads": torch.get_num_threads()}))


if __name__ == "__main__":
  main()
