"""vqtok: discrete visual tokenizers in JAX and Flax NNX."""

__version__ = "0.1.0"


def __getattr__(name: str):
  if name == "load_tokenizer":
    # On first use: configs import vqtok, and must not pull in JAX and Flax.
    from vqtok.load import load_tokenizer  # noqa: PLC0415

    return load_tokenizer
  raise AttributeError(f"module 'vqtok' has no attribute {name!r}")
