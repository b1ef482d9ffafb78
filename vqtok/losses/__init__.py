"""Losses: reconstruction, adversarial (GAN) and perceptual (LPIPS)."""

from vqtok.losses.adversarial import (
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    lecam_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
    r1_penalty,
)
from vqtok.losses.reconstruction import l1_loss, l2_loss

__all__ = [
    "adaptive_weight",
    "hinge_d_loss",
    "hinge_g_loss",
    "l1_loss",
    "l2_loss",
    "lecam_loss",
    "non_saturating_d_loss",
    "non_saturating_g_loss",
    "r1_penalty",
]
