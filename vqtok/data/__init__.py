"""vqtok.data."""
