"""Evaluates a trained tokenizer: PSNR, SSIM, LPIPS, rFID, codebook usage.

  python eval.py --config=configs/tiny.py --workdir=runs/tiny
  python eval.py --config=configs/vqgan_f16.py --workdir=runs/x \\
      --config.data.source=tfds --config.data.name=imagenet2012 \\
      --config.data.eval_split=validation --config.eval.inception_weights=inception.npz

Restores the newest checkpoint of the run (or --step), evaluates the EMA
weights (``--config.eval.use_ema=false`` for the raw ones) on the config's eval
split and writes eval_<step>.json and eval_<step>.png into the workdir. The
architecture fields of --config must be the run's; data and eval fields may
differ.
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from vqtok import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config file (python, get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  from vqtok import config as config_lib  # noqa: PLC0415
  from vqtok import images  # noqa: PLC0415
  from vqtok.evaluation.report import evaluate  # noqa: PLC0415
  from vqtok.training import load_tokenizer  # noqa: PLC0415

  del argv
  workdir = _WORKDIR.value
  config = config_lib.validate_config(_CONFIG.value)
  tokenizer, step = load_tokenizer(config, workdir, use_ema=config.eval.use_ema, step=_STEP.value)
  report, grid = evaluate(
    config,
    tokenizer,
    num_images=config.eval.num_images or None,
    lpips_weights=config.loss.lpips_weights,
    inception_weights=config.eval.inception_weights,
  )
  report.update(step=step, use_ema=bool(config.eval.use_ema))
  out = os.path.join(workdir, f"eval_{step}.json")
  with open(out + ".tmp", "w") as f:
    json.dump(report, f, indent=2)
  os.replace(out + ".tmp", out)
  png = images.save_png(grid, os.path.join(workdir, f"eval_{step}.png"))
  summary = {k: report[k] for k in ("num_images", "psnr", "ssim", "lpips", "rfid") if k in report}
  summary.update({f"codebook_{k}": v for k, v in report["codebook"].items() if not isinstance(v, list)})
  print(json.dumps(summary, indent=2))
  print(f"report: {out}\nimages: {png}")


if __name__ == "__main__":
  cli.run(main)
