"""vqtok.models."""
