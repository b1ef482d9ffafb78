"""Finite scalar quantization (Mentzer et al., 2023, arXiv:2309.15505).

Each channel is bounded and rounded to one of ``levels[i]`` values; the codebook
is the implicit product of those grids (``prod(levels)`` codes), so it cannot
collapse and needs no auxiliary loss. Indices are the mixed-radix numbers whose
digits are the per-channel levels (first channel least significant, as in the
paper's reference code).

Optional, off by default: the auxiliary losses VidTok adds to its FSQ
(microsoft/VidTok ``vidtok/modules/regularizers.py`` ``FSQRegularizer``, weights in
``configs/vidtok_fsq_*.yaml``, added to the total with weight 1 by
``vidtok/modules/losses.py``): an entropy loss over the implicit codebook with
p(c|z) = softmax_c(2 τ z·c), z the projected latent before the bound and c the
normalised grid codes, per-sample entropy minus γ times the entropy of the batch
mean, both with log(max(p, 1e-5)), its weight annealed linearly from
``factor * weight`` to ``weight`` over the first training steps; and a commitment
loss mean((z - sg(ẑ))²), again with the unbounded z.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vqtok.quantizers.base import (
  Quantizer,
  QuantizerOutput,
  ScheduleStep,
  check_index_dtype,
  check_last_dim,
  code_usage_metrics,
  last_axis,
  straight_through,
)

# Keeps tanh strictly inside the outermost rounding interval (paper, App. A.1).
_EPS = 1e-3
# VidTok's log clamp in its entropies (regularizers.py ``log``).
_LOG_EPS = 1e-5
# Elements (tokens x codes) one block of the entropy's soft assignment may hold: a few
# tens of MiB on the CPU, 1 GiB of float32 on accelerators (as binary.py's blocks).
_BLOCK_ELEMENTS = {"cpu": 2**23}
_ACCELERATOR_BLOCK_ELEMENTS = 2**28
#: How far ``bound`` reaches: the paper's (L - 1)(1 - eps)/2 (App. A.1), or (L - 1)(1 + eps)/2, as
#: lucidrains' vector-quantize-pytorch and the models built on it bound (NVIDIA Cosmos's FSQuantizer,
#: cosmos_tokenizer/modules/quantizers.py ``bound``): the same grid, rounding boundaries a little apart.
BOUNDS = {"paper": 1 - _EPS, "wide": 1 + _EPS}


class FSQ(Quantizer):
  """Finite scalar quantizer with an implicit codebook of ``prod(levels)`` codes.

  Args:
    levels: number of quantization levels per channel, each >= 2.
    code_dim: input/output dimension; when it differs from ``len(levels)``,
      Linear projections (``project_in`` / ``project_out``) map into and out
      of the ``len(levels)`` quantised channels.
    bound: "paper" or "wide" (``BOUNDS``): the tanh bound's half width.
    entropy_weight: VidTok's ``entropy_loss_weight`` (0: no entropy loss, the default).
    commitment_weight: VidTok's ``commitment_loss_weight``, of mean((z - sg(ẑ))²) (0: none).
    codebook_entropy_weight: γ, VidTok's ``diversity_gamma``: weight of the
      subtracted codebook entropy inside the entropy loss.
    inv_temperature: τ in p(c|z) = softmax_c(2 τ z·c) (VidTok's ``forward`` default, 100).
    entropy_anneal_steps: VidTok's ``entropy_loss_annealing_steps``: over the first
      this many training calls the entropy weight falls linearly from
      ``entropy_anneal_factor * entropy_weight`` to ``entropy_weight`` (0: constant).
      A step counter (``ScheduleStep``) counts the calls with ``train=True``.
    entropy_anneal_factor: VidTok's ``entropy_loss_annealing_factor``.
    chunk_size: codes per block of the entropy's sum over all ``prod(levels)``
      codes (default per backend, bounded memory).
    rngs: initialises the projections (unused without them).
  """

  def __init__(
    self,
    levels: Sequence[int],
    *,
    code_dim: int | None = None,
    bound: str = "paper",
    entropy_weight: float = 0.0,
    commitment_weight: float = 0.0,
    codebook_entropy_weight: float = 1.0,
    inv_temperature: float = 100.0,
    entropy_anneal_steps: int = 0,
    entropy_anneal_factor: float = 1.0,
    chunk_size: int | None = None,
    rngs: nnx.Rngs,
  ):
    levels = tuple(int(l) for l in levels)
    if bound not in BOUNDS:
      raise ValueError(f"FSQ bound={bound!r} is not one of {tuple(BOUNDS)}")
    for field, value in (
      ("entropy_weight", entropy_weight),
      ("commitment_weight", commitment_weight),
      ("codebook_entropy_weight", codebook_entropy_weight),
      ("entropy_anneal_factor", entropy_anneal_factor),
    ):
      if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"FSQ {field} must be a finite number >= 0; got {value!r}")
    if not (isinstance(inv_temperature, (int, float)) and math.isfinite(inv_temperature) and inv_temperature > 0):
      raise ValueError(f"FSQ inv_temperature must be a finite number > 0; got {inv_temperature!r}")
    if not (isinstance(entropy_anneal_steps, int) and entropy_anneal_steps >= 0):
      raise ValueError(f"FSQ entropy_anneal_steps must be an int >= 0; got {entropy_anneal_steps!r}")
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
      raise ValueError(f"FSQ chunk_size must be an int >= 1; got {chunk_size!r}")
    self.entropy_weight = float(entropy_weight)
    self.commitment_weight = float(commitment_weight)
    self.codebook_entropy_weight = float(codebook_entropy_weight)
    self.inv_temperature = float(inv_temperature)
    self.entropy_anneal_steps = int(entropy_anneal_steps)
    self.entropy_anneal_factor = float(entropy_anneal_factor)
    self.chunk_size = chunk_size
    if self.entropy_weight > 0 and self.entropy_anneal_steps > 0:
      # VidTok's n_steps (global_step // 2: its generator and discriminator steps each count).
      self.step = ScheduleStep(jnp.zeros((), jnp.int32))
    else:
      self.step = nnx.data(None)
    self.bound_scale = BOUNDS[bound]
    if not levels:
      raise ValueError("FSQ levels must be a non-empty sequence")
    if min(levels) < 2:
      raise ValueError(f"FSQ levels must all be >= 2; got {levels}")
    n = len(levels)
    code_dim = n if code_dim is None else int(code_dim)
    if code_dim < 1:
      raise ValueError(f"FSQ code_dim must be >= 1; got {code_dim}")
    self.levels = levels
    self.code_dim = code_dim
    self.codebook_size = int(np.prod(levels))
    if self.codebook_size >= 2**31:
      raise ValueError(f"FSQ codebook of prod(levels) = {self.codebook_size} codes does not fit int32 indices")
    if code_dim != n:
      self.project_in = nnx.Linear(code_dim, n, rngs=rngs)
      self.project_out = nnx.Linear(n, code_dim, rngs=rngs)
    else:
      self.project_in = nnx.data(None)
      self.project_out = nnx.data(None)

  def _consts(self):
    """Per-channel constants (half_l, offset, shift, half_width, basis).

    Rebuilt from the static ``levels`` tuple on each trace, so they are
    compile-time constants rather than state.
    """
    lv = np.asarray(self.levels, np.float64)
    half_l = (lv - 1) * self.bound_scale / 2
    # Even level counts have no zero on a symmetric grid: shift by half a step
    # so the grid is {-L/2, ..., L/2 - 1}. The paper's listing writes tan();
    # arctanh is the exact inverse, so bound(0) lands on the grid point 0.
    # L = 2 has no such shift (0.5 / half_l > 1): keep the rounding boundary
    # at z = 0 instead, i.e. a sign quantizer like LFQ.
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    ratio = offset / half_l
    shift = np.arctanh(np.where(ratio < 1, ratio, 0.0))
    half_width = np.asarray([l // 2 for l in self.levels], np.float64)
    basis = np.cumprod((1,) + self.levels[:-1]).astype(np.int64)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return f32(half_l), f32(offset), f32(shift), f32(half_width), basis

  def bound(self, z: jax.Array) -> jax.Array:
    """Squashes ``z`` (..., len(levels)) into the open range of each grid."""
    half_l, offset, shift, _, _ = self._consts()
    half_l, offset, shift = (last_axis(v, z.ndim) for v in (half_l, offset, shift))
    return jnp.tanh(z + shift) * half_l - offset

  def quantize(self, z: jax.Array) -> jax.Array:
    """Bounds, rounds (straight-through) and rescales to codes in [-1, 1]."""
    _, _, _, half_width, _ = self._consts()
    b = self.bound(z)
    return straight_through(b, jnp.round(b)) / last_axis(half_width, z.ndim)

  def codes_to_indices(self, codes: jax.Array) -> jax.Array:
    """Mixed-radix index of normalised codes (..., len(levels)) -> int32 (...)."""
    _, _, _, half_width, basis = self._consts()
    half_width = last_axis(half_width, codes.ndim)
    basis = last_axis(jnp.asarray(basis, jnp.int32), codes.ndim)
    digits = jnp.round(codes * half_width + half_width).astype(jnp.int32)
    return jnp.sum(digits * basis, axis=-1).astype(jnp.int32)

  def indices_to_grid(self, indices: jax.Array) -> jax.Array:
    """Normalised grid codes (..., len(levels)) of int indices (...)."""
    _, _, _, half_width, basis = self._consts()
    idx = jnp.asarray(indices).astype(jnp.int32)[..., None]
    basis = last_axis(jnp.asarray(basis, jnp.int32), idx.ndim)
    levels = last_axis(jnp.asarray(self.levels, jnp.int32), idx.ndim)
    half_width = last_axis(half_width, idx.ndim)
    digits = (idx // basis) % levels
    return (digits.astype(jnp.float32) - half_width) / half_width

  def indices_to_codes(self, indices: jax.Array) -> jax.Array:
    """Codes ``z_q`` (..., code_dim), float32, that eval-mode ``__call__`` returns.

    Args:
      indices: int indices in ``[0, codebook_size)``, any shape.

    Returns:
      float32 array of shape ``indices.shape + (code_dim,)``.
    """
    check_index_dtype(indices, "FSQ")
    self.check_indices(indices)
    codes = self.indices_to_grid(indices)
    if self.project_out is not None:
      codes = self.project_out(codes)
    return codes

  def _entropy_weight(self, train: bool) -> jax.Array:
    """VidTok's ``calculate_entropy_loss_weight(n_steps)``; advances the step counter when training."""
    w = jnp.float32(self.entropy_weight)
    if self.step is None:
      return w
    n = self.step[...]
    if train:
      self.step[...] = n + 1
    start = jnp.float32(self.entropy_anneal_factor * self.entropy_weight)
    frac = n.astype(jnp.float32) / jnp.float32(self.entropy_anneal_steps)
    return jnp.where(n >= self.entropy_anneal_steps, w, start - frac * (start - w))

  def entropy_terms(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """VidTok's per-sample and codebook entropies of ``h`` (N, len(levels)), float32, in nats.

    p(c|h_n) = softmax_c(2 τ h_n·c) over all ``prod(levels)`` grid codes c
    (regularizers.py: ``-distance * inv_temperature`` with ``distance = -2 h·c``);
    returns (mean_n Σ_c -p log(max(p, 1e-5)), Σ_c -p̄ log(max(p̄, 1e-5))) with p̄ = mean_n p.
    The codes are taken in blocks (two scans: the softmax's denominator, then the
    entropies), each block rematerialised in the backward pass. As torch's softmax,
    p = exp(x - m) / Σ exp(x - m) with m the largest logit, here found per channel
    (max over the grid of 2 τ h_i c_i), not exp(x - logsumexp): at τ = 100 the
    logits reach ~1e3, where the rounding of a logsumexp costs 1e-5 of every p.
    """
    n = h.shape[0]
    k = self.codebook_size
    if self.chunk_size is not None:
      chunk = min(self.chunk_size, k)
    else:
      budget = _BLOCK_ELEMENTS.get(jax.default_backend(), _ACCELERATOR_BLOCK_ELEMENTS)
      chunk = max(1, min(k, budget // max(n, 1)))
    starts = jnp.arange(0, k, chunk, dtype=jnp.int32)
    scale = jnp.float32(2.0 * self.inv_temperature)
    _, _, _, half_width, _ = self._consts()
    top = (jnp.asarray(self.levels, jnp.float32) - 1 - half_width) / half_width  # grid ends: -1 and top
    m = jax.lax.stop_gradient(scale * jnp.sum(jnp.maximum(-h, h * last_axis(top, 2)), axis=-1, keepdims=True))

    def shifted(start):
      """x - m for a block of codes; -inf past the last code."""
      idx = start + jnp.arange(chunk, dtype=jnp.int32)
      codes = self.indices_to_grid(idx)
      x = scale * jnp.dot(h, codes.T, precision=jax.lax.Precision.HIGHEST)
      return jnp.where(idx[None, :] < k, x - m, -jnp.inf)

    @jax.checkpoint
    def sum_body(acc, start):
      return acc + jnp.sum(jnp.exp(shifted(start)), axis=-1), None

    denom, _ = jax.lax.scan(sum_body, jnp.zeros((n,), jnp.float32), starts)

    def neg_plogp(p):
      return -p * jnp.log(jnp.maximum(p, _LOG_EPS))

    @jax.checkpoint
    def body(acc, start):
      p = jnp.exp(shifted(start)) / denom[:, None]
      return (acc[0] + jnp.sum(neg_plogp(p)), acc[1] + jnp.sum(neg_plogp(jnp.mean(p, axis=0)))), None

    zero = jnp.zeros((), jnp.float32)
    (per_sample, codebook), _ = jax.lax.scan(body, (zero, zero), starts)
    return per_sample / n, codebook

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes ``z`` (..., code_dim).

    Args:
      z: input, any float dtype; computed in float32.
      train: with ``entropy_weight``: add the entropy loss (O(N * prod(levels))
        flops) and advance the annealing step counter. Otherwise unused.

    Returns:
      ``z_q`` with the shape and dtype of ``z``, and a ``QuantizerOutput``
      with int32 indices ``z.shape[:-1]`` and a loss: zero by default;
      commitment_weight * commitment + w(step) * (per_sample - γ codebook)
      with VidTok's losses (VidTok's ``aux_loss``).
    """
    check_last_dim(z, self.code_dim, "FSQ")
    h = z.astype(jnp.float32)
    if self.project_in is not None:
      h = self.project_in(h)
    codes = self.quantize(h)
    indices = self.codes_to_indices(jax.lax.stop_gradient(codes))
    loss = jnp.zeros((), jnp.float32)
    terms = {}
    if self.commitment_weight > 0:
      # VidTok's commitment: the unbounded latent against the normalised codes.
      terms["commitment"] = jnp.mean(jnp.square(h - jax.lax.stop_gradient(codes)))
      loss = loss + self.commitment_weight * terms["commitment"]
    metrics = code_usage_metrics(indices, self.codebook_size)
    if self.entropy_weight > 0:
      weight = self._entropy_weight(train)
      metrics["entropy_weight"] = weight
      if train:
        per_sample, codebook = self.entropy_terms(h.reshape(-1, len(self.levels)))
        entropy = per_sample - self.codebook_entropy_weight * codebook
        terms.update(entropy=entropy, per_sample_entropy=per_sample, codebook_entropy=codebook)
        loss = loss + weight * entropy
    if self.project_out is not None:
      codes = self.project_out(codes)
    out = QuantizerOutput(indices=indices, loss=loss, terms=terms, metrics=metrics)
    return codes.astype(z.dtype), out
