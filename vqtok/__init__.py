"""vqtok: discrete visual tokenizers in JAX and Flax NNX."""

__version__ = "0.1.0"


def __getattr__(name: str):
  # Lazy, so that importing a config does not pull in Flax.
  if name == "load_tokenizer":
    from vqtok.tokenizer_dir import load_tokenizer  # noqa: PLC0415

    return load_tokenizer
  raise AttributeError(f"module 'vqtok' has no attribute {name!r}")
