"""vqtok.evaluation."""
