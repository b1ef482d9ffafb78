"""Evaluation: PSNR, SSIM, codebook usage, FID Inception features and FID."""

from vqtok.evaluation.fid import (
  FeatureStats,
  fid_from_features,
  fid_from_stats,
  frechet_distance,
  load_stats,
  save_stats,
)
from vqtok.evaluation.inception import (
  InceptionV3,
  convert_inception_state_dict,
  feature_fn,
  load_inception,
  resize_bilinear,
)
from vqtok.evaluation.metrics import CodebookUsage, psnr, ssim, to_uint8_range

__all__ = [
  "CodebookUsage",
  "FeatureStats",
  "InceptionV3",
  "convert_inception_state_dict",
  "feature_fn",
  "fid_from_features",
  "fid_from_stats",
  "frechet_distance",
  "load_inception",
  "load_stats",
  "psnr",
  "resize_bilinear",
  "save_stats",
  "ssim",
  "to_uint8_range",
]
