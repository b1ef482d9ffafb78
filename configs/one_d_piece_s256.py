"""One-D-Piece-S-256: TiTok-S with 256 tokens, trained with tail token drop; any prefix decodes.

Import the authors' weights (model.safetensors of turing-motors/One-D-Piece-S-256):
  python -m vqtok.convert one-d-piece model.safetensors tok/
  python -m vqtok.tokenize decode --tokenizer=tok/ --tokens=tokens/ --output=out/ --num_tokens=64

Reference: Miwa et al., "One-D-Piece: Image Tokenizer Meets Quality-Controllable
Compression" (arXiv:2501.10064); turingmotors/One-D-Piece configs/one-d-piece_s256.yaml
and modeling/one_d_piece.py: TiTok-S (bytedance/1d-tokenizer's legacy two-stage
architecture, configs/titok_s128.py) with 256 latent tokens, whose decoder is
trained on the first k ~ U{1..256} tokens of each batch (``model.token_drop="tail"``).
rFID 1.48 at 256 tokens (authors). Parameters: 83,871,247, equal to the
reference's tensors (tests/test_one_d_piece.py).

``:stage1`` / ``:stage2``: TiTok's two-stage recipe (``two_stage`` in
configs/titok_l32.py, the same learning rates, schedules, losses and steps as
configs/training/stage{1,2}/one-d-piece_s256.yaml) with tail drop in both
stages and One-D-Piece's global batches: 8 GPUs x 128 in stage 1, x 64 in stage 2
(train_tokenizer.sh asks for 8 GPUs).
"""

from configs.titok_l32 import titok_config, two_stage


def one_d_piece(width: int, depth: int, stage: str):
  """A One-D-Piece preset: TiTok's at 256 tokens, with tail drop and the authors' batch sizes."""
  c = two_stage(titok_config(width=width, depth=depth, num_latent_tokens=256), stage)
  c.model.token_drop = "tail"
  if stage:
    c.training.batch_size = {"stage1": 1024, "stage2": 512}[stage]
  return c


def get_config(arg: str | None = None):
  return one_d_piece(512, 8, arg or "")
