"""Multi-scale residual quantization (VAR: Tian et al., 2024, arXiv:2404.02905).

A latent ``f`` of ``S x S`` cells is quantized at a ladder of resolutions
``s_1 < s_2 < ... < s_K = S`` (VAR's default for a 16x16 latent: 1, 2, 3, 4,
5, 6, 8, 10, 13, 16; 680 tokens). Scale k quantizes the residual that the
coarser scales left, shrunk to ``s_k x s_k``:

  r_1 = f;  idx_k = Q(area(r_k, s_k));  h_k = phi_k(bicubic(codes(idx_k), S))
  f_hat_k = f_hat_{k-1} + h_k;  r_{k+1} = r_k - h_k

``area`` and ``bicubic`` are PyTorch's ``F.interpolate`` modes
(``vqtok.quantizers.interpolate``); ``phi_k`` is a 3x3 convolution blended with
its input, ``(1 - ratio) h + ratio conv(h)``, and the K scales share a few of
them (VAR's "partially shared" phi: scale k, at position k / (K - 1) in
[0, 1], uses the convolution whose tick is nearest). The residual search runs
on detached values, the output is the straight-through estimator on the sum,
and the loss is VAR's: the mean over scales of
``beta ||sg(f_hat_k) - f||^2 + ||f_hat_k - sg(f)||^2``, which trains the
codebook and the phi convolutions through the running sum.

The wrapped quantizer (one codebook shared by every scale, as in VAR) can be
any single-index vqtok quantizer: VQ, or BSQ/LFQ for bitwise multi-scale
tokenizers in the style of Infinity. Indices are one flat sequence per image
in scale order (coarse first, row-major inside a scale).

The wrapped quantizer runs once per scale, so its training-time state (EMA
codebook, usage counts and dead-code restarts, k-means initialisation) is
updated once per scale, coarse scales first: a k-means initialisation sees
only the 1x1 residuals of the first batch, so prefer a random initialisation
(VAR's) or restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vqtok.quantizers.base import (
  Quantizer,
  QuantizerOutput,
  check_index_dtype,
  check_last_dim,
  collect_quantizers,
  merge_outputs,
  straight_through,
)
from vqtok.quantizers.interpolate import resize

#: VAR's schedule for a 16x16 latent (256 px at f16): 680 tokens.
VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def phi_ticks(count: int) -> np.ndarray:
  """Positions in [0, 1] of ``count`` shared phi convolutions (VAR's rule).

  Evenly spaced with a margin of 1/(2K), except 1/(3K) when K = 4 (the
  published share count), as VAR's models/quant.py places them.
  """
  margin = 1 / 3 / count if count == 4 else 1 / 2 / count
  return np.linspace(margin, 1 - margin, count)


def phi_assignment(num_scales: int, count: int) -> tuple[int, ...]:
  """Which of ``count`` phi convolutions each of ``num_scales`` scales uses."""
  ticks = phi_ticks(count)
  at = [k / (num_scales - 1) if num_scales > 1 else 0.0 for k in range(num_scales)]
  return tuple(int(np.argmin(np.abs(ticks - a))) for a in at)


class MultiScaleResidual(Quantizer):
  """Residual quantization over a ladder of spatial scales (VAR).

  Args:
    quantizer: the quantizer of every scale (one shared codebook); single
      index per vector, ``code_dim`` equal to this wrapper's.
    scales: increasing side lengths of the square token maps; the last one is
      the latent's side.
    phi_ratio: blend of the phi convolution, ``(1 - r) h + r conv(h)``; VAR
      uses 0.5; 0 disables phi (no convolution parameters).
    phi_count: number of phi convolutions shared across the scales (VAR: 4);
      0 gives every scale its own, 1 shares one.
    beta: weight of the commitment term ``||sg(f_hat) - f||^2`` (VAR: 0.25).
    inner_loss_weight: weight of the wrapped quantizer's own loss (mean over
      scales); VAR trains the codebook by the multi-scale loss only (0).
    form: ``"var"`` (VAR's loss and straight-through on the sum) or
      ``"tokenflow"`` (TokenFlow's: the wrapped quantizer's loss, weight 1,
      and its straight-through at each scale; beta and inner_loss_weight are
      unused; needs ``phi_ratio=0``).
    code_dim: expected ``code_dim`` (checked when given).
    rngs: initialisation of the phi convolutions.
  """

  def __init__(
    self,
    quantizer: Quantizer,
    *,
    scales: Sequence[int] = VAR_SCALES,
    phi_ratio: float = 0.5,
    phi_count: int = 4,
    beta: float = 0.25,
    inner_loss_weight: float = 0.0,
    form: str = "var",
    code_dim: int | None = None,
    rngs: nnx.Rngs,
  ):
    (quantizer,) = collect_quantizers([quantizer], None, 1, "MultiScaleResidual")
    if code_dim is not None and quantizer.code_dim != code_dim:
      raise ValueError(f"MultiScaleResidual: the wrapped quantizer has code_dim {quantizer.code_dim}, not {code_dim}")
    scales = tuple(scales)
    if (
      not scales
      or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in scales)
      or any(b <= a for a, b in zip(scales, scales[1:], strict=False))
    ):
      raise ValueError(f"MultiScaleResidual scales must be increasing positive ints; got {list(scales)}")
    if not 0.0 <= phi_ratio <= 1.0:
      raise ValueError(f"MultiScaleResidual phi_ratio must be in [0, 1]; got {phi_ratio}")
    if not isinstance(phi_count, int) or phi_count < 0:
      raise ValueError(f"MultiScaleResidual phi_count must be an int >= 0; got {phi_count!r}")
    if beta < 0 or inner_loss_weight < 0:
      raise ValueError("MultiScaleResidual beta and inner_loss_weight must be >= 0")
    if form not in ("var", "tokenflow"):
      raise ValueError(f"MultiScaleResidual form={form!r}; expected 'var' or 'tokenflow'")
    if form == "tokenflow" and phi_ratio != 0:
      raise ValueError(
        f"MultiScaleResidual form='tokenflow' has no phi convolutions; set phi_ratio=0 (got {phi_ratio})"
      )
    self.form = form
    self.quantizer = quantizer
    self.scales = tuple(int(s) for s in scales)
    self.codebook_size = quantizer.codebook_size
    self.code_dim = d = quantizer.code_dim
    self.phi_ratio = float(phi_ratio)
    self.beta = float(beta)
    self.inner_loss_weight = float(inner_loss_weight)
    count = phi_count or len(self.scales)
    self.phi_of_scale = phi_assignment(len(self.scales), count)
    if self.phi_ratio > 0:
      self.phis = nnx.List([nnx.Conv(d, d, kernel_size=(3, 3), padding="SAME", rngs=rngs) for _ in range(count)])
    else:
      self.phis = nnx.data(None)

  # ---- token layout ----

  @property
  def scale_schedule(self) -> tuple[int, ...]:
    return self.scales

  @property
  def num_tokens(self) -> int:
    """Tokens per image over all scales (680 for VAR's schedule)."""
    return sum(s * s for s in self.scales)

  def tokens_up_to(self, k: int) -> int:
    """Tokens of the first ``k`` scales."""
    return sum(s * s for s in self.scales[:k])

  def index_shape(self, z_shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(z_shape[:-3]) + (self.num_tokens,)

  def split_indices(self, indices: jax.Array) -> list[jax.Array]:
    """Flat ``(..., n)`` indices of the first scales -> ``[(..., s, s), ...]``."""
    n = indices.shape[-1]
    out, start = [], 0
    for s in self.scales:
      if start + s * s > n:
        break
      out.append(indices[..., start : start + s * s].reshape(indices.shape[:-1] + (s, s)))
      start += s * s
    return out

  def merge_indices(self, per_scale: Sequence[jax.Array]) -> jax.Array:
    """``[(..., s, s), ...]`` -> flat ``(..., n)`` in scale order."""
    return jnp.concatenate([i.reshape(i.shape[:-2] + (-1,)) for i in per_scale], axis=-1)

  # ---- the maths ----

  def _phi(self, k: int, h: jax.Array) -> jax.Array:
    if self.phis is None:
      return h
    conv = self.phis[self.phi_of_scale[k]]
    refined = conv(h.reshape((-1,) + h.shape[-3:])).reshape(h.shape)
    r = jnp.float32(self.phi_ratio)
    return h * (1 - r) + refined * r

  def _contribution(self, k: int, idx: jax.Array) -> jax.Array:
    """``h_k``: scale ``k``'s codes at the full size, refined by phi (float32)."""
    side = self.scales[-1]
    codes = self.quantizer.indices_to_codes(idx).astype(jnp.float32)
    return self._phi(k, resize(codes, (side, side), "bicubic"))

  def check_indices(self, indices: Any) -> None:
    if isinstance(indices, jax.core.Tracer) or np.size(indices) == 0:
      return
    lo, hi = int(jnp.min(indices)), int(jnp.max(indices))
    if lo < 0 or hi >= self.codebook_size:
      raise ValueError(
        f"indices out of range for a multi-scale codebook of {self.codebook_size} codes: got values in [{lo}, {hi}]"
      )

  def indices_to_codes(self, indices: jax.Array, *, num_scales: int | None = None) -> jax.Array:
    """The latent rebuilt from all scales, or from the first ``num_scales``.

    Args:
      indices: int ``(..., n)`` in scale order; ``n`` is the total token count
        or that of the first k scales (a coarse prefix).
      num_scales: use only the first ``num_scales`` scales (default: all that
        ``indices`` holds).

    Returns:
      float32 ``(..., S, S, code_dim)``; with every scale, equal to eval-mode
      ``z_q``.
    """
    indices = jnp.asarray(indices)
    check_index_dtype(indices, "MultiScaleResidual")
    self.check_indices(indices)
    prefixes = [self.tokens_up_to(k) for k in range(1, len(self.scales) + 1)]
    if indices.ndim < 1 or indices.shape[-1] not in prefixes:
      raise ValueError(
        f"MultiScaleResidual indices must have shape (..., n) with n the tokens of the first k scales of"
        f" {list(self.scales)} ({', '.join(map(str, prefixes))}); got {tuple(indices.shape)}"
      )
    per_scale = self.split_indices(indices)
    if num_scales is not None:
      if not 1 <= num_scales <= len(per_scale):
        raise ValueError(f"num_scales must be in [1, {len(per_scale)}] for these indices; got {num_scales}")
      per_scale = per_scale[:num_scales]
    total = None
    for k, idx in enumerate(per_scale):
      h = self._contribution(k, idx)
      total = h if total is None else total + h
    return total

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes a latent ``z`` of shape ``(..., S, S, code_dim)``.

    Returns:
      ``z_q`` (shape/dtype of ``z``) and a ``QuantizerOutput`` with int32
      indices ``(..., num_tokens)`` in scale order, VAR's loss (terms
      ``commitment``, ``codebook`` and the wrapped quantizer's terms as
      ``inner_*``) and metrics ``scale_{k}/usage``, ``scale_{k}/perplexity``
      (and the wrapped quantizer's other metrics) plus their means.
    """
    check_last_dim(z, self.code_dim, "MultiScaleResidual")
    side = self.scales[-1]
    if z.ndim < 3 or z.shape[-3:-1] != (side, side):
      raise ValueError(
        f"MultiScaleResidual: the latent is {tuple(z.shape[-3:-1]) if z.ndim >= 3 else tuple(z.shape)} cells"
        f" but the scale schedule {list(self.scales)} ends at {side}x{side}"
      )
    f = z.astype(jnp.float32)
    f_ng = jax.lax.stop_gradient(f)
    tokenflow = self.form == "tokenflow"
    rest, f_hat = (f if tokenflow else f_ng), jnp.zeros_like(f_ng)
    commitment = codebook = jnp.zeros((), jnp.float32)
    indices, outs = [], []
    for k, s in enumerate(self.scales):
      q_k, out = self.quantizer(resize(rest, (s, s), "area"), train=train)
      idx = out.indices.astype(jnp.int32)
      if tokenflow:  # the value is the codes' (as _contribution's), the gradient the wrapped quantizer's
        h = resize(q_k.astype(jnp.float32), (side, side), "bicubic")
      else:
        h = self._contribution(k, idx)
      f_hat = f_hat + h
      rest = rest - jax.lax.stop_gradient(h)
      commitment = commitment + jnp.mean(jnp.square(jax.lax.stop_gradient(f_hat) - f))
      codebook = codebook + jnp.mean(jnp.square(f_hat - f_ng))
      indices.append(idx)
      outs.append(out)
    n = len(self.scales)
    inner_loss, inner_terms, metrics = merge_outputs(outs, [jnp.float32(1.0 / n)] * n, "scale")
    if tokenflow:
      terms = {f"inner_{k}": v for k, v in inner_terms.items()}
      out = QuantizerOutput(indices=self.merge_indices(indices), loss=inner_loss, terms=terms, metrics=metrics)
      return f_hat.astype(z.dtype), out
    terms = {"commitment": commitment / n, "codebook": codebook / n}
    terms.update({f"inner_{k}": v for k, v in inner_terms.items()})
    loss = self.beta * terms["commitment"] + terms["codebook"] + self.inner_loss_weight * inner_loss
    z_q = straight_through(f, f_hat).astype(z.dtype)
    out = QuantizerOutput(indices=self.merge_indices(indices), loss=loss, terms=terms, metrics=metrics)
    return z_q, out
