"""vqtok.training."""
