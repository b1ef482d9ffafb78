"""Feature-alignment losses: a tokenizer's latents pulled towards a frozen vision foundation model's features.

VA-VAE's vision-foundation (VF) loss (Yao, Yang and Wang, 2025, "Reconstruction
vs. Generation: Taming Optimization Dilemma in Latent Diffusion Models",
arXiv:2501.01423), as hustvl/LightningDiT writes it
(vavae/ldm/modules/losses/contperceptual.py ``LPIPSWithDiscriminator.forward``):
the latents ``z`` (projected to the teacher's width by a bias-free 1x1 conv,
``Tokenizer.project_features``) and the teacher's patch features ``f`` of the
same image, on the same grid, give

* the marginal distance-matrix similarity: ``mean(relu(|cos(z_i, z_j) -
  cos(f_i, f_j)| - distmat_margin))`` over every pair of positions of an image;
* the marginal cosine similarity: ``mean(relu(1 - cos_margin - cos(z_i, f_i)))``;

``vf = distmat_weight * distmat + cos_weight * cos``. Its weight is adaptive:
``vf_weight * ||grad rec|| / (||grad vf|| + 1e-4)`` at the encoder's last
layer, clipped to [0, 1e8] (``calculate_adaptive_weight_vf``), so the VF
gradient is a fixed fraction of the reconstruction's. The released config
(vavae/configs/f16d32_vfdinov2.yaml) sets vf_weight 0.1, margins 0.25 and 0.5.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from vqtok.config_fields import ConfigFields

#: torch.nn.functional.normalize's and cosine_similarity's epsilons.
NORMALIZE_EPS = 1e-12
COSINE_EPS = 1e-8
#: calculate_adaptive_weight_vf's upper clip.
MAX_VF_WEIGHT = 1e8


def _rows(x: ArrayLike) -> jax.Array:
  """(B, ..., c) -> (B, n, c) float32: the positions of each image as rows."""
  x = jnp.asarray(x, jnp.float32)
  return x.reshape(x.shape[0], -1, x.shape[-1])


def _unit(x: jax.Array, eps: float) -> jax.Array:
  """``x / max(||x||, eps)`` over the last axis, with PyTorch's gradient at ``x = 0`` (``I / eps``, not NaN)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def cosines(a: ArrayLike, b: ArrayLike, eps: float) -> jax.Array:
  """(B, n) cosine similarity of each position's channel vectors in ``a`` and ``b`` (norms clamped at ``eps``)."""
  return jnp.sum(_unit(_rows(a), eps) * _unit(_rows(b), eps), axis=-1)


def distmat_loss(z: ArrayLike, features: ArrayLike, margin: float) -> jax.Array:
  """Marginal distance-matrix similarity: mean over images and position pairs of ``relu(|S_z - S_f| - margin)``.

  ``S`` is the matrix of cosine similarities between every two positions of
  an image (``F.normalize`` over channels, then ``einsum('bci,bcj->bij')``).
  """
  zn, fn = _unit(_rows(z), NORMALIZE_EPS), _unit(_rows(features), NORMALIZE_EPS)
  hi = jax.lax.Precision.HIGHEST
  sz = jnp.einsum("bic,bjc->bij", zn, zn, precision=hi)
  sf = jnp.einsum("bic,bjc->bij", fn, fn, precision=hi)
  return jnp.mean(jax.nn.relu(jnp.abs(sz - sf) - margin))


def cosine_loss(z: ArrayLike, features: ArrayLike, margin: float) -> jax.Array:
  """Marginal cosine similarity: mean over positions of ``relu(1 - margin - cos(z, f))`` (channels last)."""
  cos = cosines(z, features, COSINE_EPS)  # F.cosine_similarity
  return jnp.mean(jax.nn.relu(1.0 - margin - cos))


def vf_loss(
  z: ArrayLike,
  features: ArrayLike,
  *,
  distmat_margin: float,
  cos_margin: float,
  distmat_weight: float = 1.0,
  cos_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """VA-VAE's vision-foundation loss of projected latents against teacher features.

  Args:
    z: (B, h, w, c) latents projected to the teacher's width ``c``.
    features: (B, h, w, c) the teacher's patch features of the same images.
    distmat_margin, cos_margin: the margins (VA-VAE: 0.25, 0.5).
    distmat_weight, cos_weight: the weights of the two parts (VA-VAE: 1, 1).

  Returns:
    ``(loss, {"vf_distmat": ..., "vf_cos": ...})``, scalars.

  References:
    hustvl/LightningDiT vavae/ldm/modules/losses/contperceptual.py.
  """
  if jnp.shape(z) != jnp.shape(features):
    raise ValueError(f"vf_loss: latents {jnp.shape(z)} and teacher features {jnp.shape(features)} differ in shape")
  d = distmat_loss(z, features, distmat_margin)
  c = cosine_loss(z, features, cos_margin)
  return distmat_weight * d + cos_weight * c, {"vf_distmat": d, "vf_cos": c}


def feature_rec_loss(rec: ArrayLike, target: ArrayLike) -> jax.Array:
  """VQ-KD's feature reconstruction loss: ``mean(1 - cos(rec_i, target_i))`` over images and positions.

  BEiT v2 (microsoft/unilm beit2/modeling_vqkd.py ``calculate_rec_loss``,
  ``rec_loss_type="cosine"``): both divided by their norms over channels,
  ``(1 - (target * rec).sum(-1)).mean()``. Norms are clamped at 1e-12, so a
  zero vector counts as cosine 0 (the reference divides by zero).
  """
  r, t = _rows(rec), _rows(target)
  if r.shape != t.shape:
    raise ValueError(f"feature_rec_loss: predicted features {r.shape} and the teacher's {t.shape} differ in shape")
  return jnp.mean(1.0 - cosines(r, t, NORMALIZE_EPS))


def _check_config(config, check_paths: bool) -> None:
  lc, teacher = config.loss, config.get("feature_teacher", "")
  if not isinstance(teacher, str):
    raise ValueError(f"config field feature_teacher={teacher!r} must be a path (a feature-teacher directory)")
  if lc.feature_rec_weight > 0 and not teacher:
    raise ValueError("config field loss.feature_rec_weight > 0 needs feature_teacher (a feature-teacher directory)")
  if lc.feature_rec_weight > 0 and not config.model.get("feature_dim", 0):
    raise ValueError("config field loss.feature_rec_weight > 0 needs model.feature_dim (the teacher's width)")
  if lc.vf_weight > 0 and not teacher:
    raise ValueError(
      "config field loss.vf_weight > 0 needs feature_teacher (a directory from python -m vqtok.convert dinov2)"
    )
  if lc.vf_weight > 0 and not config.model.get("feature_dim", 0):
    raise ValueError("config field loss.vf_weight > 0 needs model.feature_dim (the teacher's width, e.g. 1024)")
  if check_paths and teacher and not os.path.isdir(teacher):
    raise ValueError(f"config field feature_teacher={teacher!r}: no such feature-teacher directory")


#: ``config.loss`` fields of the VF loss (VA-VAE's names without the ``vf_`` where they had none).
CONFIG = ConfigFields(
  "loss",
  {
    "vf_weight": 0.0,  # > 0 needs feature_teacher and model.feature_dim; VA-VAE: 0.1
    "vf_adaptive": True,  # VA-VAE's adaptive_vf: scale by ||grad rec|| / ||grad vf|| at the encoder's last layer
    "vf_distmat_margin": 0.25,
    "vf_cos_margin": 0.5,
    "vf_distmat_weight": 1.0,
    "vf_cos_weight": 1.0,
    # How the batch is resized to the teacher's resolution inside the step (VA-VAE: bilinear, 224).
    "vf_resize": "bilinear",
    # VQ-KD's feature reconstruction (BEiT v2): 1 - cosine between the feature head's output
    # (model.feature_dim, model.feature_head_hidden) and the teacher's patch features, a plain
    # weighted term (VQ-KD: 1); its batch is resized as vf_resize says.
    "feature_rec_weight": 0.0,
  },
  choices={"vf_resize": ("area", "bicubic", "bilinear")},
  non_negative=(
    "feature_rec_weight",
    "vf_weight",
    "vf_distmat_margin",
    "vf_cos_margin",
    "vf_distmat_weight",
    "vf_cos_weight",
  ),
  check=_check_config,
)
