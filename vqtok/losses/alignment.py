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

Beside it, VQ-KD's feature reconstruction (``feature_rec_loss``: ``1 - cos``
per position against the teacher's patch features) and FQGAN's semantic
feature prediction (``semantic_loss``: InfoNCE of predicted against teacher
class tokens), both plain weighted terms.
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


def semantic_loss(pred: ArrayLike, target: ArrayLike, group: int = 0) -> jax.Array:
  """FQGAN's semantic feature-prediction loss: InfoNCE between predicted and teacher class features.

  showlab/FQGAN tokenizer/models/clip_encoder.py (and dino_encoder.py)
  ``forward``: both (B, c) divided by their norms over channels, ``S =
  exp(pred @ target.T)`` (temperature 1, the target detached), ``-log(S_ii /
  sum_j S_ij)`` averaged over the images: each image's predicted class token
  must pick its own teacher class token among the batch's. Despite the
  paper's "cosine" the reference's objective is this contrastive one; the
  negatives are the images of the same group.

  Args:
    pred: (B, c) the feature head's class token (``FeatPredHead``'s output ``[:, 0]``).
    target: (B, c) the teacher's class features of the same images.
    group: > 0: the batch is split into consecutive groups of this size, each its own
      set of negatives (the reference under DDP: each GPU's batch, 32 in train_fqgan_dual.sh);
      0: the whole batch.

  Returns:
    The scalar loss, averaged over the images (and groups).

  References:
    Bai et al., 2024, arXiv:2411.16681, Sec. 3.2.
  """
  p, t = jnp.asarray(pred, jnp.float32), jax.lax.stop_gradient(jnp.asarray(target, jnp.float32))
  if p.ndim != 2 or p.shape != t.shape:
    raise ValueError(f"semantic_loss: predicted {p.shape} and teacher {t.shape} class features must be equal (B, c)")
  b = p.shape[0]
  g = group or b
  if b % g:
    raise ValueError(f"semantic_loss: loss.semantic_group={group} must divide the batch of {b}")
  p, t = _unit(p, NORMALIZE_EPS).reshape(b // g, g, -1), _unit(t, NORMALIZE_EPS).reshape(b // g, g, -1)
  logits = jnp.einsum("gic,gjc->gij", p, t, precision=jax.lax.Precision.HIGHEST)
  # -log(exp(s_ii) / sum_j exp(s_ij)), with the log-sum-exp of a softmax cross-entropy.
  diag = jnp.diagonal(logits, axis1=1, axis2=2)
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - diag)


def _check_config(config, check_paths: bool) -> None:
  lc, teacher = config.loss, config.get("feature_teacher", "")
  if not isinstance(teacher, str):
    raise ValueError(f"config field feature_teacher={teacher!r} must be a path (a feature-teacher directory)")
  if lc.feature_rec_weight > 0 and not teacher:
    raise ValueError("config field loss.feature_rec_weight > 0 needs feature_teacher (a feature-teacher directory)")
  if lc.feature_rec_weight > 0 and not (config.model.get("feature_dim", 0) or config.model.get("semantic_encoder", "")):
    raise ValueError(
      "config field loss.feature_rec_weight > 0 needs model.feature_dim (the teacher's width) or TokenFlow's"
      " semantic decoder (model.semantic_encoder)"
    )
  if lc.vf_weight > 0 and not teacher:
    raise ValueError(
      "config field loss.vf_weight > 0 needs feature_teacher (a directory from python -m vqtok.convert dinov2)"
    )
  if lc.vf_weight > 0 and not config.model.get("feature_dim", 0):
    raise ValueError("config field loss.vf_weight > 0 needs model.feature_dim (the teacher's width, e.g. 1024)")
  if lc.vf_weight > 0 and lc.vf_adaptive and config.model.get("factorized_heads", 0) > 1:
    raise ValueError(
      "config field loss.vf_adaptive: VA-VAE's adaptive VF weight is taken at the encoder's one output layer; a"
      f" factorised encoder (model.factorized_heads={config.model.factorized_heads}) has one per head: set"
      " loss.vf_adaptive=False (a fixed loss.vf_weight)"
    )
  teachers = config.get("feature_teachers", ())
  if isinstance(teachers, str) or not all(isinstance(t, str) and t for t in teachers):
    raise ValueError(f"config field feature_teachers={teachers!r} must be a list of feature-teacher directories")
  if lc.semantic_weight > 0 and not (teacher or teachers):
    raise ValueError(
      "config field loss.semantic_weight > 0 needs feature_teacher (a directory from python -m vqtok.convert clip)"
      " or feature_teachers (one per semantic head)"
    )
  heads = tuple(config.model.get("feature_head_dims", ()))
  if lc.semantic_weight > 0 and not heads:
    raise ValueError(
      "config field loss.semantic_weight > 0 needs model.feature_head_dims (FQGAN's feature heads on the"
      " semantic sub-codes of a factorised encoder, model.factorized_heads)"
    )
  if teachers and len(teachers) != len(heads):
    raise ValueError(
      f"config field feature_teachers: {len(teachers)} teacher(s) for {len(heads)} semantic head(s)"
      f" (model.feature_head_dims={heads}); give one per head, in the heads' order"
    )
  if teachers and lc.semantic_weight <= 0:
    raise ValueError("config field feature_teachers is read by loss.semantic_weight > 0 only; it is 0")
  if teachers and max(lc.vf_weight, lc.feature_rec_weight) > 0:
    raise ValueError(
      "config field feature_teachers (per-head semantic teachers) cannot be combined with loss.vf_weight or"
      " loss.feature_rec_weight (one feature_teacher's patch features) in one run"
    )
  named = [("feature_teacher", teacher)] + [(f"feature_teachers[{i}]", t) for i, t in enumerate(teachers)]
  for field, path in named if check_paths else ():
    if path and not os.path.isdir(path):
      raise ValueError(f"config field {field}={path!r}: no such feature-teacher directory")


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
    # How the batch is resized to the teacher's resolution inside the step, for every feature loss
    # (one teacher pass): VA-VAE: bilinear to 224; FQGAN: nearest (F.interpolate's default) to 224.
    "vf_resize": "bilinear",
    # VQ-KD's feature reconstruction (BEiT v2): 1 - cosine between the feature head's output
    # (model.feature_dim, model.feature_head_hidden) and the teacher's patch features, a plain
    # weighted term (VQ-KD: 1); its batch is resized as vf_resize says.
    "feature_rec_weight": 0.0,
    # Its target: the teacher's final-norm patch features (VQ-KD), or CLIP's patch features through
    # its projection (TokenFlow's get_regress_target: ln_post(patch tokens) @ proj).
    "feature_rec_target": "patches",
    # FQGAN's semantic feature prediction: InfoNCE between each feature head's class token
    # (model.feature_head_dims, on the factorised encoder's semantic sub-codes) and the teacher's,
    # one weighted term per head (train_fqgan_dual.sh --semantic-weight 0.5), beside the quantizer's.
    "semantic_weight": 0.0,
    # Its negatives: consecutive groups of this many images (FQGAN under DDP: each GPU's 32); 0: the batch.
    "semantic_group": 0,
  },
  choices={
    "vf_resize": ("area", "bicubic", "bilinear", "nearest"),
    "feature_rec_target": ("patches", "patch_embedding"),
  },
  non_negative=(
    "semantic_weight",
    "semantic_group",
    "feature_rec_weight",
    "vf_weight",
    "vf_distmat_margin",
    "vf_cos_margin",
    "vf_distmat_weight",
    "vf_cos_weight",
  ),
  check=_check_config,
)
