"""vqtok.losses."""
