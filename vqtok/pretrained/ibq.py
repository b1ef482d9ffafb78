"""IBQ (Shi et al., 2024, arXiv:2412.02692): taming's f16 CNN with an index-backpropagation VQ, 1024 to 262144 codes.

Published by TencentARC/SEED-Voken as PyTorch-Lightning checkpoints with the
weights under ``"state_dict"``. The architecture is taming-transformers'
(src/IBQ/modules/diffusionmodules/model.py; ibqgan.py: 1x1 ``quant_conv`` /
``post_quant_conv`` around the ``IndexPropagationQuantize`` embedding), so
the names and layouts are taming's table; the codes are chosen by the largest
dot product ``z·e`` (vqtok's ``IBQ``), not the nearest code. Trained with
``use_ema``, the file also holds ``LitEma`` copies (``model_ema.*``), which the
reference's evaluation decodes with (``ema_scope``): they are the default,
``--noema`` takes the raw weights. A taming checkpoint has the same tensor
names; converted as IBQ it would pick codes by dot product, so name the
family right. Images are [-1, 1], resized as taming's.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from vqtok.pretrained import common, taming
from vqtok.pretrained import layout as L

NAME = "ibq"
FILES = "imagenet256_1024.ckpt, imagenet256_8192.ckpt, imagenet256_16384.ckpt, imagenet256_262144.ckpt"
IGNORE = (r"loss\..*", r"model_ema\..*")


default_ema = common.has_lit_ema


def state_dict(obj: Any, *, ema: bool, source: str) -> dict[str, np.ndarray]:
  return common.lightning_state_dict(obj, ema=ema, source=source, family=NAME)


def config(tensors: dict[str, np.ndarray], source: str) -> ml_collections.ConfigDict:
  """taming's config of the tensors, with IBQ's quantizer and the reference's loss weights."""
  common.require(tensors, "encoder.conv_in.weight", source, NAME, 4)
  c = taming.config(tensors, source)
  codes = c.quantizer.codebook_size
  # configs/IBQ/gpu/imagenet_ibqgan_*.yaml: beta 0.25, entropy 0.05 at temperature 0.01.
  c.quantizer = ml_collections.ConfigDict(
    {
      "type": "ibq",
      "codebook_size": codes,
      "commitment_weight": 1.0,
      "codebook_weight": 0.25,
      "entropy_weight": 0.05,
      "entropy_temperature": 0.01,
    }
  )
  return c


def table(c: ml_collections.ConfigDict) -> tuple[L.Rule, ...]:
  """taming's table: the same module names."""
  return taming.table(c)
