"""A tokenizer from the path a user names: a tokenizer directory or a training workdir.

Every command that reads a tokenizer (``eval.py``, ``tokenize``, ``export``,
``--config.init_from``, a teacher) goes through ``load``. A workdir's
tokenizer is restored from its checkpoint alone: no optimizer, discriminator
or data pipeline is built.
"""

from __future__ import annotations

import os

import ml_collections
from flax import nnx

from vqtok import config as config_lib
from vqtok import tokenizer_dir
from vqtok.training import checkpoint


def is_workdir(path: str) -> bool:
  """A training run's directory: its ``config.json`` and ``checkpoints/``."""
  return os.path.isfile(os.path.join(path, tokenizer_dir.CONFIG)) and os.path.isdir(os.path.join(path, "checkpoints"))


def load(
  path: str, *, use_ema: bool = True, step: int | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict, dict]:
  """``(tokenizer, config, info)`` from a tokenizer directory or a training workdir.

  Args:
    path: a tokenizer directory (``config.json`` + ``model.safetensors``) or a
      training workdir (``config.json`` + ``checkpoints/``).
    use_ema: a workdir: the EMA weights when the run kept them.
    step: a workdir: which checkpoint (default: the newest).

  Returns:
    ``info`` has ``step`` (the checkpoint step, or the one recorded at
    export) and ``metadata`` (a tokenizer directory's; ``{}`` for a workdir).
  """
  if tokenizer_dir.is_tokenizer_dir(path):
    return tokenizer_dir.read(path)
  if is_workdir(path):
    config = config_lib.load_run_config(path)
    tokenizer, restored_step = checkpoint.load_tokenizer(config, path, use_ema=use_ema, step=step)
    return tokenizer, config, {"step": restored_step, "metadata": {}}
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such tokenizer directory or training workdir")
  raise FileNotFoundError(
    f"{path} is neither a tokenizer directory ({tokenizer_dir.CONFIG} + {tokenizer_dir.WEIGHTS}) nor a training"
    " workdir (config.json + checkpoints/)"
  )


def load_tokenizer(path: str, *, use_ema: bool = True, step: int | None = None) -> nnx.Module:
  """The ``Tokenizer`` saved at ``path``: a tokenizer directory or a training workdir."""
  return load(path, use_ema=use_ema, step=step)[0]
