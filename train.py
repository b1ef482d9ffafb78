"""Trains an image tokenizer.

  python train.py --config=configs/tiny.py --workdir=runs/tiny
  python train.py --config=configs/vqgan_f16.py --workdir=runs/x \\
      --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz

Any config field can be overridden on the command line
(``--config.quantizer.levels='(8,5,5,5)'``). Rerunning with the same workdir
resumes from its newest checkpoint. Multi-host: pass --multihost (TPU pods,
SLURM: auto-detected) or the explicit --coordinator_address/--num_processes/
--process_id flags.
"""

from absl import flags
from ml_collections import config_flags

from vqtok import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (python, get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and images.")
cli.define_distributed_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from vqtok import config as config_lib  # noqa: PLC0415
  from vqtok.training.loop import train_and_evaluate  # noqa: PLC0415

  config = config_lib.validate_config(cli.config_value(_CONFIG))
  cli.start_distributed()
  summary = train_and_evaluate(config, _WORKDIR.value)
  evals = summary["evals"]
  if evals:
    print(
      f"eval PSNR: first {evals[0]['psnr']:.2f} dB (step {evals[0]['step']}), "
      f"last {evals[-1]['psnr']:.2f} dB (step {evals[-1]['step']})"
    )
  if summary.get("last_image"):
    print(f"reconstructions: {summary['last_image']}")


if __name__ == "__main__":
  cli.run(main)
