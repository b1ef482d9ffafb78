"""Dual codebook with one shared index (TokenFlow: Qu et al., 2024, arXiv:2412.03069).

TokenFlow quantizes two latents of the same grid together: a *semantic* one
(a frozen-teacher ViT's patch features through a small MLP) and a *pixel* one
(a VQGAN CNN's latent). Each has its own codebook, ``K x d_s`` and
``K x d_p``, but every position gets ONE index, the code pair that minimises
the weighted sum of the two squared distances

  i* = argmin_i  w_s ||x_s - e_s[i]||^2 + w_p ||x_p - e_p[i]||^2

so the semantic code and the pixel code of a token move together. As the
authors' quantizer computes it (ByteFlow-AI/TokenFlow
tokenflow/tokenizer/vq_model.py ``VectorQuantizer``, ``codebook_l2_norm``
on, as every published tokenizer is trained): both halves of ``z`` and both
codebooks are l2-normalised separately; the weights are 1 and 1 there
(``d = d_vqkd + 1.0 * d_vqgan``); the output is the straight-through
estimator on the normalised ``z``; the loss is the codebook term
``mean((q - sg(x))^2)`` plus ``beta mean((sg(q) - x)^2)`` with both means over
the concatenated channels (one MSE, not one per branch), plus an optional
entropy term (``entropy_loss_ratio``, 0 in the published training).

The search runs on ``[sqrt(w_s) x_s, sqrt(w_p) x_p]`` against
``[sqrt(w_s) e_s, sqrt(w_p) e_p]``: its squared distance is exactly the
weighted sum above, so vqtok's memory-bounded ``nearest_code`` serves it.

The contract's ``z`` is the concatenation ``[semantic, pixel]`` on the last
axis, as TokenFlow's encoder concatenates them before its quantizer;
``quantize_pair`` takes the two latents separately. TokenFlow wraps this
quantizer in a VAR-style multi-scale residual (``MultiScaleResidual`` with
``phi_ratio=0`` gives its indices and forward values; see the README).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vqtok.quantizers.base import (
  Quantizer,
  QuantizerOutput,
  check_index_dtype,
  check_last_dim,
  code_usage_metrics,
  straight_through,
)
from vqtok.quantizers.search import nearest_code, take_rows
from vqtok.quantizers.vq import unit_norm


def codebook_entropy(
  affinity: jax.Array, temperature: float, eps: float = 1e-5
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """LlamaGen's / TokenFlow's ``compute_entropy_loss``: per-token minus codebook entropy of softmax(affinity / t).

  Args:
    affinity: ``(N, K)`` scores (TokenFlow passes minus the distances).
    temperature: softmax temperature (the reference's 0.01).
    eps: the reference's ``+ 1e-5`` inside both logarithms.

  Returns:
    ``(loss, sample_entropy, codebook_entropy)``, loss = sample - codebook.
  """
  a = affinity.astype(jnp.float32) / temperature
  probs = jax.nn.softmax(a, axis=-1)
  log_probs = jax.nn.log_softmax(a + eps, axis=-1)
  avg = jnp.mean(probs, axis=0)
  avg_entropy = -jnp.sum(avg * jnp.log(avg + eps))
  sample_entropy = -jnp.mean(jnp.sum(probs * log_probs, axis=-1))
  return sample_entropy - avg_entropy, sample_entropy, avg_entropy


class DualCodebook(Quantizer):
  """Two codebooks (semantic, pixel) searched together for one shared index (TokenFlow).

  Args:
    codebook_size: number of code pairs ``K`` (>= 2).
    code_dim: ``d_s + d_p``, the width of the concatenated ``z``.
    semantic_dim: ``d_s``, the leading channels of ``z`` (TokenFlow: 32; the
      pixel part is the remaining ``code_dim - d_s``, TokenFlow's 8).
    semantic_weight: ``w_s`` of the semantic distance (TokenFlow: 1.0).
    pixel_weight: ``w_p`` of the pixel distance (TokenFlow: 1.0).
    l2_normalize: normalise each half of ``z`` and each codebook (TokenFlow's
      ``codebook_l2_norm``, on by default and in every published model; its
      code path without it refers to a missing ``self.embedding`` and fails,
      so False here is plain squared distances to the stored codes).
    commitment_weight: ``beta`` of ``mean((sg(q) - x)^2)`` (TokenFlow's
      ``--commit-loss-beta`` default 0.25; its ``ModelArgs`` default 1.0).
    codebook_weight: weight of ``mean((q - sg(x))^2)`` (TokenFlow: 1).
    entropy_weight: weight of ``codebook_entropy(-d)`` (TokenFlow's
      ``entropy_loss_ratio``, 0 by default); > 0 builds the full ``(N, K)``
      distance matrix.
    entropy_temperature: its softmax temperature (0.01).
    search_chunk: codes per block of the nearest-code search (None: auto).
    rngs: codebook initialisation.
  """

  def __init__(
    self,
    codebook_size: int,
    code_dim: int,
    *,
    semantic_dim: int,
    semantic_weight: float = 1.0,
    pixel_weight: float = 1.0,
    l2_normalize: bool = True,
    commitment_weight: float = 0.25,
    codebook_weight: float = 1.0,
    entropy_weight: float = 0.0,
    entropy_temperature: float = 0.01,
    search_chunk: int | None = None,
    rngs: nnx.Rngs,
  ):
    if codebook_size < 2:
      raise ValueError(f"DualCodebook codebook_size must be >= 2, got {codebook_size}")
    if not isinstance(semantic_dim, int) or not 1 <= semantic_dim < code_dim:
      raise ValueError(
        f"DualCodebook semantic_dim={semantic_dim!r} must be an int in [1, code_dim={code_dim})"
        " (the rest is the pixel part)"
      )
    if semantic_weight < 0 or pixel_weight < 0 or semantic_weight + pixel_weight == 0:
      raise ValueError(
        f"DualCodebook semantic_weight and pixel_weight must be >= 0, not both 0; got {semantic_weight}, {pixel_weight}"
      )
    if commitment_weight < 0 or codebook_weight < 0 or entropy_weight < 0:
      raise ValueError("DualCodebook commitment_weight, codebook_weight and entropy_weight must be >= 0")
    if entropy_temperature <= 0:
      raise ValueError(f"DualCodebook entropy_temperature must be > 0, got {entropy_temperature}")
    if search_chunk is not None and search_chunk < 1:
      raise ValueError(f"DualCodebook search_chunk must be >= 1, got {search_chunk}")
    self.codebook_size = codebook_size
    self.code_dim = code_dim
    self.semantic_dim = semantic_dim
    self.pixel_dim = code_dim - semantic_dim
    self.semantic_weight = float(semantic_weight)
    self.pixel_weight = float(pixel_weight)
    self.l2_normalize = l2_normalize
    self.commitment_weight = commitment_weight
    self.codebook_weight = codebook_weight
    self.entropy_weight = entropy_weight
    self.entropy_temperature = entropy_temperature
    self.search_chunk = search_chunk
    # TokenFlow's init: uniform(-1/K, 1/K) rows (normalised when l2_normalize).
    bound = 1.0 / codebook_size

    def init(dim):
      e = jax.random.uniform(rngs.params(), (codebook_size, dim), jnp.float32, -bound, bound)
      return unit_norm(e) if l2_normalize else e

    self.semantic_codebook = nnx.Param(init(self.semantic_dim))
    self.pixel_codebook = nnx.Param(init(self.pixel_dim))

  # ---- helpers ----

  def _norm(self, x: jax.Array) -> jax.Array:
    return unit_norm(x) if self.l2_normalize else x

  def get_codebooks(self) -> tuple[jax.Array, jax.Array]:
    """The ``(K, d_s)`` and ``(K, d_p)`` tables the search runs against (normalised when l2)."""
    return self._norm(self.semantic_codebook[...]), self._norm(self.pixel_codebook[...])

  def split(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(..., d_s + d_p)`` -> the semantic and the pixel halves."""
    return z[..., : self.semantic_dim], z[..., self.semantic_dim :]

  def _scaled(self, s: jax.Array, p: jax.Array) -> jax.Array:
    # sqrt weights: the squared distance of the concatenation is the weighted sum.
    ws, wp = self.semantic_weight**0.5, self.pixel_weight**0.5
    return jnp.concatenate([s * ws if ws != 1 else s, p * wp if wp != 1 else p], axis=-1)

  # ---- the quantizer contract ----

  def __call__(self, z: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
    """Quantizes ``z = [semantic, pixel]`` of shape ``(..., d_s + d_p)``.

    Args:
      z: the concatenated latents; any float dtype (the search runs in f32).
      train: unused (the codebooks learn by the loss).

    Returns:
      ``z_q`` (shape and dtype of ``z``: the pair of codes, concatenated) and
      a ``QuantizerOutput`` with int32 ``indices`` ``z.shape[:-1]`` (the
      shared index), ``loss``, ``terms`` (``commitment``, ``codebook``, each
      over both halves as TokenFlow computes them, ``entropy`` when weighted)
      and ``metrics`` (``usage``, ``perplexity``, and per branch
      ``semantic_mse`` / ``pixel_mse``: ``mean((q - x)^2)`` over that half).
    """
    del train
    check_last_dim(z, self.code_dim, "DualCodebook")
    if not jnp.issubdtype(z.dtype, jnp.floating):
      raise ValueError(f"DualCodebook: z must be floating point, got {z.dtype}")
    lead = z.shape[:-1]
    s, p = self.split(z.reshape(-1, self.code_dim).astype(jnp.float32))
    s, p = self._norm(s), self._norm(p)
    es, ep = self.get_codebooks()
    idx, _ = nearest_code(jax.lax.stop_gradient(self._scaled(s, p)), self._scaled(es, ep), chunk_size=self.search_chunk)
    x = jnp.concatenate([s, p], axis=-1)
    q = take_rows(jnp.concatenate([es, ep], axis=-1), idx)

    terms = {
      "commitment": jnp.mean(jnp.square(jax.lax.stop_gradient(q) - x)),
      "codebook": jnp.mean(jnp.square(q - jax.lax.stop_gradient(x))),
    }
    loss = self.commitment_weight * terms["commitment"] + self.codebook_weight * terms["codebook"]
    if self.entropy_weight > 0:
      hi = jax.lax.Precision.HIGHEST

      def sq_dist(a, e):
        return jnp.sum(a * a, -1, keepdims=True) + jnp.sum(e * e, -1)[None] - 2 * jnp.matmul(a, e.T, precision=hi)

      d = self.semantic_weight * sq_dist(s, es) + self.pixel_weight * sq_dist(p, ep)
      terms["entropy"] = codebook_entropy(-d, self.entropy_temperature)[0]
      loss = loss + self.entropy_weight * terms["entropy"]

    sg_q = jax.lax.stop_gradient(q)
    metrics = code_usage_metrics(idx, self.codebook_size)
    metrics["semantic_mse"] = jnp.mean(jnp.square(sg_q[:, : self.semantic_dim] - jax.lax.stop_gradient(s)))
    metrics["pixel_mse"] = jnp.mean(jnp.square(sg_q[:, self.semantic_dim :] - jax.lax.stop_gradient(p)))
    z_q = straight_through(x, q).reshape(lead + (self.code_dim,)).astype(z.dtype)
    return z_q, QuantizerOutput(indices=idx.reshape(lead), loss=loss, terms=terms, metrics=metrics)

  def quantize_pair(
    self, semantic: jax.Array, pixel: jax.Array, *, train: bool = False
  ) -> tuple[jax.Array, jax.Array, QuantizerOutput]:
    """``__call__`` on two latents of one grid: ``(..., d_s)`` and ``(..., d_p)``.

    Returns:
      The semantic and pixel ``z_q`` (each straight-through to its input) and
      the ``QuantizerOutput`` of the shared index.
    """
    check_last_dim(semantic, self.semantic_dim, "DualCodebook semantic latent")
    check_last_dim(pixel, self.pixel_dim, "DualCodebook pixel latent")
    if semantic.shape[:-1] != pixel.shape[:-1]:
      raise ValueError(
        f"DualCodebook: the semantic and pixel latents must share one grid; got {tuple(semantic.shape)} and"
        f" {tuple(pixel.shape)}"
      )
    dtype = jnp.promote_types(semantic.dtype, pixel.dtype)
    z_q, out = self(jnp.concatenate([semantic.astype(dtype), pixel.astype(dtype)], axis=-1), train=train)
    q_s, q_p = self.split(z_q)
    return q_s, q_p, out

  def indices_to_codes(self, indices: jax.Array, *, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """The eval-mode ``z_q`` for ``indices``: ``[e_s[i], e_p[i]]`` (TokenFlow's ``get_codebook_entry``).

    Args:
      indices: integer indices of any shape, in ``[0, codebook_size)``.
      dtype: dtype of the result.

    Returns:
      ``indices.shape + (d_s + d_p,)``.
    """
    indices = jnp.asarray(indices)
    check_index_dtype(indices, "DualCodebook")
    self.check_indices(indices)
    table = jnp.concatenate(self.get_codebooks(), axis=-1)
    return take_rows(table, indices.reshape(-1)).reshape(indices.shape + (self.code_dim,)).astype(dtype)
