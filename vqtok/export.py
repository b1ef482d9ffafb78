"""Exports a training run's tokenizer as a tokenizer directory (config.json + model.safetensors).

  python -m vqtok.export --tokenizer=runs/x --output=tok/ [--raw] [--step=N]

EMA weights by default (--raw for the raw ones), newest checkpoint unless
--step. The directory is what tokenize, eval.py and --config.init_from read.
"""

from __future__ import annotations

import json

from absl import flags

from vqtok import cli, tokenizer_dir
from vqtok import load as load_lib

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("tokenizer", None, "The training run to export (its workdir).")
  flags.DEFINE_string("output", None, "The tokenizer directory to write.")
  flags.DEFINE_bool("raw", False, "Export the raw weights, not the EMA weights.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  flags.DEFINE_bool("overwrite", False, "Replace OUTPUT if it exists and is not empty.")


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}")
  if not FLAGS.tokenizer or not FLAGS.output:
    raise cli.UsageError("give --tokenizer (a training run) and --output (the directory to write)")
  if not load_lib.is_workdir(FLAGS.tokenizer):
    raise FileNotFoundError(f"--tokenizer={FLAGS.tokenizer} is not a training workdir (config.json + checkpoints/)")
  tokenizer, config, info = load_lib.load(FLAGS.tokenizer, use_ema=not FLAGS.raw, step=FLAGS.step)
  meta = {"source": "vqtok", "workdir": FLAGS.tokenizer, "step": info["step"], "weights": "raw" if FLAGS.raw else "ema"}
  path = tokenizer_dir.save_tokenizer(tokenizer, config, FLAGS.output, metadata=meta, overwrite=FLAGS.overwrite)
  print(json.dumps({"output": path, "step": info["step"], "weights": meta["weights"]}, indent=2))
  return 0


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
