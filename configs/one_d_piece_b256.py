"""One-D-Piece-B-256: TiTok-B with 256 tokens, trained with tail token drop; any prefix decodes.

Import the authors' weights (model.safetensors of turing-motors/One-D-Piece-B-256):
  python -m vqtok.convert one-d-piece model.safetensors tok/

turingmotors/One-D-Piece configs/one-d-piece_b256.yaml: width 768, 12 blocks,
256 latent tokens; rFID 1.11 (authors). Parameters: 205,256,463 (the reference's,
counted from its tensors). Recipe and differences: configs/one_d_piece_s256.py.
"""

from configs.one_d_piece_s256 import one_d_piece


def get_config(arg: str | None = None):
  return one_d_piece(768, 12, arg or "")
