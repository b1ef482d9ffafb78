"""Losses: reconstruction, adversarial (GAN), perceptual (LPIPS) and feature alignment (VA-VAE's VF loss)."""

from vqtok.losses.adversarial import (
  adaptive_weight,
  hinge_d_loss,
  hinge_g_loss,
  lecam_loss,
  non_saturating_d_loss,
  non_saturating_g_loss,
  non_saturating_per_image_g_loss,
  r1_penalty,
)
from vqtok.losses.alignment import vf_loss
from vqtok.losses.perceptual import LPIPS, convert_lpips_state_dict, load_lpips, lpips_from_features
from vqtok.losses.reconstruction import l1_loss, l2_loss

__all__ = [
  "LPIPS",
  "convert_lpips_state_dict",
  "load_lpips",
  "lpips_from_features",
  "adaptive_weight",
  "hinge_d_loss",
  "hinge_g_loss",
  "l1_loss",
  "l2_loss",
  "lecam_loss",
  "non_saturating_d_loss",
  "non_saturating_g_loss",
  "non_saturating_per_image_g_loss",
  "r1_penalty",
  "vf_loss",
]
