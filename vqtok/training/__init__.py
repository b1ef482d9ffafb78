"""Training: train state, the sharded step, the loop, checkpoints.

The device mesh and shardings live in ``vqtok.sharding`` (training, evaluation
and tokenization all use them).
"""

from vqtok.training.checkpoint import Checkpointer, load_tokenizer
from vqtok.training.loop import NonFiniteLossError, check_finite, train_and_evaluate
from vqtok.training.state import (
  Static,
  TrainState,
  abstract_train_state,
  init_train_state,
  make_optimizer,
  tokenizer_from_state,
)
from vqtok.training.step import make_train_step

__all__ = [
  "Checkpointer",
  "load_tokenizer",
  "NonFiniteLossError",
  "Static",
  "TrainState",
  "abstract_train_state",
  "check_finite",
  "init_train_state",
  "make_optimizer",
  "make_train_step",
  "tokenizer_from_state",
  "train_and_evaluate",
]
