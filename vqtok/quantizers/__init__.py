"""Quantizers: VQ, IBQ, GSQ, FSQ, LFQ, BSQ, TokenFlow's dual codebook; residual, grouped, factorised, multi-scale."""

from vqtok.quantizers.base import Quantizer, QuantizerOutput, QuantizerStats, code_usage_metrics, straight_through
from vqtok.quantizers.binary import binary_entropy_terms
from vqtok.quantizers.bsq import BSQ
from vqtok.quantizers.dual import DualCodebook
from vqtok.quantizers.factorized import Factorized, disentanglement
from vqtok.quantizers.fsq import FSQ
from vqtok.quantizers.grouped import Grouped
from vqtok.quantizers.gsq import GSQ
from vqtok.quantizers.ibq import IBQ
from vqtok.quantizers.lfq import LFQ
from vqtok.quantizers.multiscale import MultiScaleResidual
from vqtok.quantizers.registry import QUANTIZER_TYPES, build_quantizer, quantizer_class
from vqtok.quantizers.residual import Residual
from vqtok.quantizers.vq import VectorQuantizer

__all__ = [
  "BSQ",
  "DualCodebook",
  "FSQ",
  "Factorized",
  "GSQ",
  "Grouped",
  "IBQ",
  "LFQ",
  "MultiScaleResidual",
  "QUANTIZER_TYPES",
  "Quantizer",
  "QuantizerOutput",
  "QuantizerStats",
  "Residual",
  "VectorQuantizer",
  "binary_entropy_terms",
  "build_quantizer",
  "code_usage_metrics",
  "disentanglement",
  "quantizer_class",
  "straight_through",
]
