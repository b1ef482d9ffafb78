"""Training: train state, the sharded step, the loop, checkpoints."""

from vqtok.training.checkpoint import Checkpointer, load_tokenizer
from vqtok.training.loop import NonFiniteLossError, check_finite, train_and_evaluate
from vqtok.training.sharding import batch_sharding, global_batch, make_mesh, state_shardings
from vqtok.training.state import Static, TrainState, abstract_train_state, init_train_state, make_optimizer, tokenizer_from_state
from vqtok.training.step import make_train_step

__all__ = [
    "Checkpointer",
    "load_tokenizer",
    "NonFiniteLossError",
    "Static",
    "TrainState",
    "abstract_train_state",
    "batch_sharding",
    "check_finite",
    "global_batch",
    "init_train_state",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "state_shardings",
    "tokenizer_from_state",
    "train_and_evaluate",
]
