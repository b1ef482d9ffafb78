"""Tiny preset: a small CNN tokenizer with FSQ that trains on CPU in minutes.

Run (the README's first command):
  python train.py --config=configs/tiny.py --workdir=runs/tiny

Trains on the bundled sample photos at 64px; 8x8 = 64 tokens per image from an
FSQ codebook of 8*5*5*5 = 1000 codes.
"""

from vqtok.config import default_config


def get_config():
  c = default_config()  # the defaults are the tiny preset
  return c
