"""One-D-Piece (Miwa et al., 2025, arXiv:2501.10064): TiTok trained with tail token drop.

Published by turingmotors/One-D-Piece (README "Model Zoo") as the hub
repositories ``turing-motors/One-D-Piece-{S,B,L}-256`` (``model.safetensors``
of a PyTorchModelHubMixin). ``OneDPiece`` (modeling/one_d_piece.py) is
bytedance/1d-tokenizer's legacy two-stage ``TiTok`` (modeling/titok.py,
modeling/modules/blocks.py) with 256 latent tokens and no tensor of its own,
so the file has TiTok's names and layout and converts by ``titok``'s table.
What differs is how it was trained and is decoded: in training its decoder
saw only the first k ~ U{1..256} tokens (``apply_tail_token_drop``), and
``decode(z, length=k)`` reconstructs from the first k; the tokenizer
directory records that as ``model.token_drop="tail"``, so ``decode`` from a
prefix does not warn.

Its checkpoints from the first training stage (``finetune_decoder: False``)
hold no pixel decoder; the authors' scripts/inference_tokenizer.py adds
MaskGIT's VQGAN (``pixel_*``) before loading, and so must a user here.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from vqtok.pretrained import titok
from vqtok.pretrained.reader import CheckpointError

NAME = "one-d-piece"
FILES = "model.safetensors of turing-motors/One-D-Piece-{S,B,L}-256 (or a training run's pytorch_model.bin)"
IGNORE = titok.IGNORE
state_dict = titok.state_dict
table = titok.table


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """TiTok's config read off the tensors, with the tail token drop it was trained with."""
  if not any(k.startswith("pixel_decoder.") for k in tensors):
    raise CheckpointError(
      f"{source}: no pixel decoder (pixel_decoder.*): a One-D-Piece checkpoint from the first training stage;"
      " add MaskGIT's VQGAN weights as pixel_quantize.* / pixel_decoder.* (the authors' inference_tokenizer.py)"
    )
  c = titok.config(tensors, source)
  c.model.token_drop = "tail"
  return c
