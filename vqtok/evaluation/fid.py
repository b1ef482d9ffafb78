"""Fréchet Inception Distance (Heusel et al., 2017, arXiv:1706.08500).

FID is the Fréchet (2-Wasserstein) distance between two Gaussians fitted to
Inception pool3 features:
``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
The numerics follow pytorch-fid (float64, ``scipy.linalg.sqrtm``, an
``eps * I`` offset when the product is singular); feature moments are
accumulated on the host so memory does not grow with the number of images.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import scipy.linalg
from jax.typing import ArrayLike


class FeatureStats:
  """Running mean and covariance of feature vectors, in float64 on the host.

  Keeps the count, the sum and the sum of outer products of the features
  (shifted by the first batch's mean, so the final subtraction does not lose
  precision), i.e. ``O(dim^2)`` memory for any number of images.
  """

  def __init__(self, dim: int | None = None):
    """Creates an empty accumulator.

    Args:
      dim: feature dimension; None takes it from the first ``update``.
    """
    if dim is not None and dim < 1:
      raise ValueError(f"dim must be >= 1, got {dim}")
    self.dim = dim
    self.count = 0
    self._shift: np.ndarray | None = None
    self._sum: np.ndarray | None = None
    self._outer: np.ndarray | None = None

  def update(self, features: ArrayLike) -> None:
    """Adds a batch of features of shape ``(N, dim)``."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or (self.dim is not None and f.shape[1] != self.dim):
      want = f"(N, {self.dim})" if self.dim is not None else "(N, dim)"
      raise ValueError(f"features must have shape {want}, got {f.shape}")
    if f.shape[0] == 0:
      return
    if self._shift is None:
      self.dim = f.shape[1]
      self._shift = f.mean(axis=0)
      self._sum = np.zeros((self.dim,), np.float64)
      self._outer = np.zeros((self.dim, self.dim), np.float64)
    c = f - self._shift
    self.count += f.shape[0]
    self._sum += c.sum(axis=0)
    self._outer += c.T @ c

  def mean(self) -> np.ndarray:
    """Mean feature vector ``(dim,)``."""
    if self.count == 0:
      raise ValueError("FeatureStats is empty")
    return self._shift + self._sum / self.count

  def covariance(self) -> np.ndarray:
    """Unbiased covariance ``(dim, dim)`` (``np.cov(..., rowvar=False)``)."""
    if self.count < 2:
      raise ValueError(f"covariance needs at least 2 features, got {self.count}")
    m = self._sum / self.count
    return (self._outer - self.count * np.outer(m, m)) / (self.count - 1)

  def to_array(self, dim: int) -> np.ndarray:
    """This set as one float64 vector: count, mean ``(dim,)``, scatter ``(dim * dim,)``.

    The scatter is the sum of outer products of the features centred on their
    own mean. ``merged`` combines such vectors (one per process, say) exactly
    as if all features had been added to one ``FeatureStats``. An empty set
    gives zeros.
    """
    out = np.zeros(1 + dim + dim * dim, np.float64)
    if self.count == 0:
      return out
    if self.dim != dim:
      raise ValueError(f"features have dimension {self.dim}, expected {dim}")
    m = self._sum / self.count
    out[0] = self.count
    out[1 : 1 + dim] = self._shift + m
    out[1 + dim :] = (self._outer - self.count * np.outer(m, m)).reshape(-1)
    return out

  @classmethod
  def merged(cls, packed: ArrayLike) -> FeatureStats:
    """One ``FeatureStats`` from rows of ``to_array`` vectors ``(P, 1 + dim + dim * dim)``."""
    packed = np.asarray(packed, np.float64)
    dim = int(round((-1 + np.sqrt(1 + 4 * (packed.shape[1] - 1))) / 2))
    counts, means = packed[:, 0], packed[:, 1 : 1 + dim]
    scatters = packed[:, 1 + dim :].reshape(-1, dim, dim)
    out = cls(dim)
    total = counts.sum()
    if total == 0:
      return out
    mean = (counts[:, None] * means).sum(axis=0) / total
    d = means - mean
    # Each set's scatter about its own mean, plus its mean's offset from the joint mean.
    scatter = scatters.sum(axis=0) + (counts[:, None, None] * d[:, :, None] * d[:, None, :]).sum(axis=0)
    out.count, out._shift = int(total), mean
    out._sum, out._outer = np.zeros(dim), scatter
    return out


def frechet_distance(
  mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, *, eps: float = 1e-6
) -> float:
  """Fréchet distance between two Gaussians, in float64.

  Args:
    mu1: mean ``(d,)`` of the first set.
    sigma1: covariance ``(d, d)`` of the first set.
    mu2: mean ``(d,)`` of the second set.
    sigma2: covariance ``(d, d)`` of the second set.
    eps: diagonal offset used when ``sigma1 @ sigma2`` is too singular for
      ``sqrtm`` (pytorch-fid's value).

  Returns:
    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``.
  """
  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.shape != (d,) or mu2.shape != (d,):
    raise ValueError(f"means must both have shape ({d},), got {mu1.shape} and {mu2.shape}")
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"covariances must both have shape ({d}, {d}), got {sigma1.shape} and {sigma2.shape}")
  diff = mu1 - mu2
  covmean = _sqrtm(sigma1 @ sigma2)
  if not _usable(covmean):
    # A singular product has no well-defined square root; pytorch-fid nudges
    # both covariances off the singular set, which changes FID by O(eps).
    offset = np.eye(d) * eps
    covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if not np.isfinite(covmean).all():
    raise ValueError(
      "sqrtm(sigma1 @ sigma2) is not finite even with the eps offset;"
      " are the covariances finite and positive semi-definite?"
    )
  if not _usable(covmean):
    worst = np.max(np.abs(np.diagonal(covmean).imag))
    raise ValueError(f"sqrtm(sigma1 @ sigma2) has a large imaginary component {worst}")
  # The exact root of a product of PSD matrices has a real spectrum; what
  # imaginary part is left is round-off.
  covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _usable(covmean: np.ndarray) -> bool:
  """Finite, and real up to round-off on the diagonal (pytorch-fid's 1e-3)."""
  if not np.isfinite(covmean).all():
    return False
  return not np.iscomplexobj(covmean) or np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)


def _sqrtm(a: np.ndarray) -> np.ndarray:
  # Singular products are expected (rank-deficient feature sets); the caller
  # checks the result and falls back to the offset, so silence scipy's warning.
  with np.errstate(all="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    try:
      return scipy.linalg.sqrtm(a)
    except (np.linalg.LinAlgError, ValueError):
      return np.full_like(a, np.nan)


def fid_from_features(features1: ArrayLike, features2: ArrayLike) -> float:
  """FID between two sets of features ``(N1, d)`` and ``(N2, d)``.

  Args:
    features1: features of the first image set.
    features2: features of the second image set.

  Returns:
    The Fréchet distance of the two fitted Gaussians.
  """
  s1, s2 = FeatureStats(), FeatureStats()
  s1.update(features1)
  s2.update(features2)
  return fid_from_stats(s1, s2)


def fid_from_stats(stats1: FeatureStats, stats2: FeatureStats) -> float:
  """FID between two ``FeatureStats`` accumulators."""
  if stats1.count == 0 or stats2.count == 0:
    raise ValueError("FID needs features in both sets")
  if stats1.dim != stats2.dim:
    raise ValueError(f"feature dims differ: {stats1.dim} vs {stats2.dim}")
  return frechet_distance(stats1.mean(), stats1.covariance(), stats2.mean(), stats2.covariance())


def save_stats(path: str, stats: FeatureStats) -> None:
  """Saves ``mu`` and ``sigma`` to an .npz (the layout pytorch-fid reads)."""
  np.savez(path, mu=stats.mean(), sigma=stats.covariance())


def load_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Loads ``(mu, sigma)`` from an .npz with keys ``mu`` and ``sigma``."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"FID reference statistics not found: {path}")
  with np.load(path) as f:
    if "mu" not in f or "sigma" not in f:
      raise ValueError(f"{path} must hold arrays 'mu' and 'sigma', found {list(f.keys())}")
    return f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
