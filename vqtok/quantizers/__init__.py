"""Quantizers: VQ, FSQ, LFQ, BSQ and their residual and grouped forms."""

from vqtok.quantizers.base import Quantizer, QuantizerOutput, QuantizerStats, code_usage_metrics, straight_through

__all__ = [
    "Quantizer",
    "QuantizerOutput",
    "QuantizerStats",
    "code_usage_metrics",
    "straight_through",
]
