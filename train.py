"""Trains an image tokenizer.

  python train.py --config=configs/tiny.py --workdir=runs/tiny
  python train.py --config=configs/vqgan_f16.py --workdir=runs/x \\
      --config.data.source=tfds --config.data.name=imagenet2012

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
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (auto-detect).")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (explicit multi-process).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes (explicit multi-process).")
_PID = flags.DEFINE_integer("process_id", None, "This process's index (explicit multi-process).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from vqtok import config as config_lib  # noqa: PLC0415
  from vqtok.training import distributed, train_and_evaluate  # noqa: PLC0415

  config = config_lib.validate_config(cli.config_value(_CONFIG))
  distributed.initialize(
    multihost=_MULTIHOST.value, coordinator_address=_COORD.value, num_processes=_NPROC.value, process_id=_PID.value
  )
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
