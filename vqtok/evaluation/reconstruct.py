"""Eval-mode reconstruction of an image split: the one loop that training and eval.py share.

The tokenizer runs as a split module (graph definition + parameter and
non-parameter dicts), so the trainer passes its EMA or raw weights without
rebuilding a module, and ``eval.py`` passes a loaded tokenizer's. Batches are
globally sharded over the mesh; each process gets back its own rows, so sums
over ``Reconstruction`` batches are per-process and ``sharding.process_sum``
makes them global.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vqtok import images as images_lib
from vqtok import sharding
from vqtok.evaluation import metrics as metrics_lib

ReconstructFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, jax.Array]]


def make_reconstruct_fn(
  graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, *, num_tokens: int | None = None
) -> ReconstructFn:
  """Eval-mode reconstruction, jitted over ``mesh``: ``(params, rest, x) -> (x_hat, indices)``.

  ``x_hat`` is float32 clipped to [-1, 1]; both outputs are batch-sharded.
  ``num_tokens``: 1-D tokenizers only, ``x_hat`` decoded from the first
  ``num_tokens`` of each image's tokens (``Tokenizer.decode(num_tokens=...)``).
  """

  def reconstruct(params, rest, x):
    model = nnx.merge(graphdef, params, rest)
    x_hat, q = model(x, train=False)
    if num_tokens is not None:
      x_hat = model.decode(q.indices, num_tokens=num_tokens)
    return jnp.clip(x_hat.astype(jnp.float32), -1.0, 1.0), q.indices

  return jax.jit(reconstruct, out_shardings=sharding.batch_sharding(mesh))


@dataclasses.dataclass
class Reconstruction:
  """This process's valid rows of one batch: originals, reconstructions, codes."""

  real: np.ndarray  # float32 (n, H, W, 3) in [-1, 1]
  fake: np.ndarray  # float32 (n, H, W, 3) in [-1, 1]
  indices: np.ndarray  # int32 (n, *token_shape)

  @property
  def real_uint8(self) -> np.ndarray:
    return images_lib.to_uint8(self.real)

  @property
  def fake_uint8(self) -> np.ndarray:
    return images_lib.to_uint8(self.fake)

  def __len__(self) -> int:
    return len(self.real)


def reconstructions(
  fn: ReconstructFn, params: Any, rest: Any, mesh: jax.sharding.Mesh, batches: Iterable[dict]
) -> Iterator[Reconstruction]:
  """Reconstructs each batch (``image``, ``valid`` rows of this process); skips empty ones.

  Each batch is sent to the devices before the previous one's results are
  read back, so the devices reconstruct batch k + 1 while the caller scores
  batch k on the host (the data pipeline's threads decode further ahead).
  """
  pending = None
  for batch in batches:
    x = sharding.global_batch({"image": batch["image"]}, mesh)["image"]
    # Every process must run the global computation, even with no valid rows.
    current = (batch, fn(params, rest, x))
    if pending is not None:
      yield from _read_back(*pending)
    pending = current
  if pending is not None:
    yield from _read_back(*pending)


def _read_back(batch: dict, out: tuple[jax.Array, jax.Array]) -> Iterator[Reconstruction]:
  valid = np.asarray(batch["valid"]).astype(bool)
  if valid.any():
    x_hat, indices = out
    yield Reconstruction(
      real=np.asarray(batch["image"], np.float32)[valid],
      fake=sharding.local_rows(x_hat)[valid],
      indices=sharding.local_rows(indices)[valid],
    )


def mean_psnr(fn: ReconstructFn, params: Any, rest: Any, mesh: jax.sharding.Mesh, batches: Iterable[dict]) -> float:
  """Mean per-image PSNR (on [0, 255]) over all processes' images (video: per frame, over all frames)."""
  total = np.zeros(2)  # sum of per-image PSNR, number of images
  for r in reconstructions(fn, params, rest, mesh, batches):
    frames = lambda a: a.reshape((-1,) + a.shape[-3:])
    p = np.asarray(metrics_lib.psnr(frames(r.real_uint8), frames(r.fake_uint8)))
    total += [float(np.sum(p, dtype=np.float64)), p.size]
  total = sharding.process_sum(total)
  return float(total[0] / max(total[1], 1))


def reconstruction_grid(
  fn: ReconstructFn, params: Any, rest: Any, mesh: jax.sharding.Mesh, batch: dict, *, max_images: int = 8
) -> np.ndarray | None:
  """Originals (top row) over eval-mode reconstructions (bottom row), uint8.

  Every process must call it (the computation is global); a process whose
  rows of ``batch`` are all padding gets None.
  """
  rows = list(reconstructions(fn, params, rest, mesh, [batch]))
  if not rows:
    return None
  r = rows[0]
  if r.real.ndim == 5:  # video: the first clip's frames
    return images_lib.grid([list(r.real_uint8[0][:max_images]), list(r.fake_uint8[0][:max_images])])
  return images_lib.grid([list(r.real_uint8[:max_images]), list(r.fake_uint8[:max_images])])
