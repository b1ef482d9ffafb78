"""Training: train state (``state``), the sharded step (``step``), the loop
(``loop``), checkpoints (``checkpoint``), workdirs (``workdir``), teachers
(``teacher``) and multi-process start-up (``distributed``).

Import the submodule you need; this package imports none of them, so that
restoring a tokenizer from a checkpoint does not import the trainer. The
device mesh and shardings live in ``vqtok.sharding``.
"""
