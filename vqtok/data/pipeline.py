"""The grain input pipeline: sharded, shuffled, checkpointable image batches.

Built on grain's ``MapDataset`` (random access by index), so the position of the
iterator is an integer and save/restore is exact (grain's ``DatasetIterator``
``get_state``/``set_state``, and grain's Orbax handler through
``checkpoint_args``).

Training stream: the source's indices are shuffled globally (a new permutation
every epoch, deterministic given the seed), epochs are concatenated, and process
``p`` of ``P`` takes stream positions ``p, p+P, p+2P, ...``; so global batch
``k`` is stream positions ``[kB, (k+1)B)`` and every example appears exactly
once per epoch across processes. An image that fails to decode is replaced by
the next readable one in source order (static batch shapes, no filtering, and
the same batches for any number of worker processes).

Evaluation: one pass in source order, padded to a whole number of global
batches; the rows of global batch ``k`` held by process ``p`` are positions
``kB + p*B/P + j``. Padding rows (index -1) and images that fail to decode
(their own index) have ``valid=False`` and zero pixels.

Reference: grain dataset API (https://google-grain.readthedocs.io).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import grain
import numpy as np

from vqtok.data import sources as sources_lib
from vqtok.data import transforms
from vqtok.data import video as video_lib

DTYPES = ("float32", "uint8")
_MAX_SUBSTITUTES = 16


class _TrainElement(grain.transforms.RandomMap):
  """Index -> random crop of that image (or of a readable substitute)."""

  def __init__(self, source, size: int, scale: tuple[float, float], flip: bool):
    self.source, self.size, self.scale, self.flip = source, size, scale, flip

  def random_map(self, index, rng: np.random.Generator):
    n = len(self.source)
    # An image that fails to decode is replaced by the next readable one, so
    # batches keep their static size and are the same for any num_workers.
    for k in range(min(n, _MAX_SUBSTITUTES)):
      i = (int(index) + k) % n
      try:
        img = self.source[i]
        break
      except ValueError as e:
        self.source.record_failure(i, str(e))
    else:
      raise ValueError(
        f"{_MAX_SUBSTITUTES} consecutive images starting at {index} cannot be decoded; see source.skipped"
      )
    if img.ndim == 4:  # a video clip: one crop box and flip for all its frames
      img = video_lib.random_resized_crop_clip(img, self.size, rng, scale=self.scale, flip=self.flip)
    else:
      img = transforms.random_resized_crop(img, self.size, rng, scale=self.scale, flip=self.flip)
    return {"image": img, "index": np.int64(i), "valid": np.True_}


class _EvalElement(grain.transforms.Map):
  """Index (-1: padding) -> resized image (``config.data.preprocess``); zeros with valid=False on failure."""

  def __init__(self, source, size: int, preprocess: str = "center_crop", frames: int = 0):
    if preprocess not in transforms.PREPROCESS:
      raise ValueError(f"data.preprocess={preprocess!r} is not one of {tuple(transforms.PREPROCESS)}")
    self.source, self.size, self.preprocess = source, size, preprocess
    self.frames = frames  # > 0: a video source, whose clips come resized already

  def map(self, index):
    blank = np.zeros(((self.frames,) if self.frames else ()) + (self.size, self.size, 3), np.uint8)
    if index < 0:
      return {"image": blank, "index": np.int64(-1), "valid": np.False_}
    try:
      img = self.source[index]
      img = img if self.frames else transforms.PREPROCESS[self.preprocess](img, self.size)
      valid = np.True_
    except ValueError as e:
      self.source.record_failure(index, str(e))
      img, valid = blank, np.False_
    return {"image": img, "index": np.int64(index), "valid": valid}


class _EvalPosition(grain.transforms.Map):
  """Local row number -> global source index of this process's eval row."""

  def __init__(self, num: int, global_batch: int, local_batch: int, process_index: int):
    self.num, self.gb, self.lb, self.p = num, global_batch, local_batch, process_index

  def map(self, k):
    pos = _eval_position(k, self.gb, self.lb, self.p)
    return pos if pos < self.num else -1


def _eval_position(k, global_batch: int, local_batch: int, process_index: int):
  """The source index of a process's eval row ``k`` (an int or an array of them), before padding."""
  return (k // local_batch) * global_batch + process_index * local_batch + k % local_batch


def eval_share(num: int, batch_size: int, process_index: int, process_count: int) -> int:
  """How many of ``num`` eval images ``make_dataset`` gives to process ``process_index`` (its valid rows)."""
  local = batch_size // process_count
  rows = np.arange(-(-num // batch_size) * local)  # this process's rows, padding included
  return int(np.sum(_eval_position(rows, batch_size, local, process_index) < num))


class _Interleaved(grain.transforms.Map):
  """Batch number -> a batch of clips, or every ``every``-th one (the last of each ``every``) a batch of images.

  Joint image and video training (``config.video.image_every``): images are
  one-frame clips, ``(B, 1, S, S, 3)``, which a causal tokenizer's frame rule
  takes (1 = 1 + 0 * s_T). Both streams are random-access, so the position is
  still one batch count and resumes exactly.
  """

  def __init__(self, clips: grain.MapDataset, images: grain.MapDataset, every: int):
    self.clips, self.images, self.every = clips, images, every

  def map(self, k):
    k = int(k)
    if (k + 1) % self.every == 0:
      batch = self.images[(k + 1) // self.every - 1]
      return {**batch, "image": batch["image"][:, None]}
    return self.clips[k - (k + 1) // self.every]


class _ToFloat(grain.transforms.Map):
  def map(self, batch):
    return {**batch, "image": transforms.to_float(batch["image"])}


def _ensure_absl_flags() -> None:
  # Grain's worker processes read absl flags; outside an absl.app (tests,
  # notebooks) they were never parsed, so accept the defaults.
  from absl import flags  # noqa: PLC0415

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _host_cores() -> int:
  """Cores this process may run on."""
  affinity = getattr(os, "sched_getaffinity", None)
  return len(affinity(0)) if affinity else os.cpu_count() or 1


def _process_info(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # noqa: PLC0415

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"need 0 <= process_index < process_count, got {process_index} and {process_count}")
  return int(process_index), int(process_count)


def make_dataset(
  config: Any,
  *,
  split: str,
  batch_size: int,
  seed: int | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  num_epochs: int | None = None,
  dtype: str = "float32",
  source: sources_lib.ImageSource | None = None,
  num_images: int | None = None,
) -> grain.DatasetIterator:
  """Builds this process's iterator of batches for ``split``.

  Args:
    config: vqtok config; reads ``config.data``, ``image_size`` and ``seed``.
    split: "train" (infinite or ``num_epochs`` shuffled epochs, random crops)
      or "eval" (one pass in order, center crops, padded last batch).
    batch_size: the GLOBAL batch size; this process yields
      ``batch_size // process_count`` rows.
    seed: shuffle/augmentation seed; ``config.seed`` if None.
    process_index: this process (``jax.process_index()`` if None).
    process_count: number of processes (``jax.process_count()`` if None).
    num_epochs: training epochs; None repeats forever. Ignored for eval.
    dtype: "float32" (images in [-1, 1]) or "uint8" (0..255).
    source: an already built source (``make_source(config, split)`` if None;
      with ``config.video.source`` set, its clips: ``image`` is then
      (B_local, T, S, S, 3)).
    num_images: eval only: the first ``num_images`` images (None or 0: all).

  Returns:
    A grain ``DatasetIterator`` of dicts ``image`` (B_local, S, S, 3),
    ``index`` int64 (B_local,) (position in the source, -1 for padding),
    ``valid`` bool (B_local,). It has ``get_state``/``set_state`` and an
    attribute ``source`` (``source.describe(i)``, ``source.skipped``).
  """
  if split not in ("train", "eval"):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  if dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
  p, num_p = _process_info(process_index, process_count)
  if batch_size <= 0 or batch_size % num_p:
    raise ValueError(f"batch_size {batch_size} must be a positive multiple of process_count {num_p}")
  if num_epochs is not None and num_epochs <= 0:
    raise ValueError(f"num_epochs must be positive or None, got {num_epochs}")
  size = int(config.image_size)
  if size <= 0:
    raise ValueError(f"config.image_size must be positive, got {size}")
  seed = int(config.seed if seed is None else seed)
  local = batch_size // num_p
  video = bool(config.get("video", {}).get("source", ""))
  if source is not None:
    src = source
  elif video:  # training crops the clips itself; eval clips come resized the tokenizer's way
    src = video_lib.make_video_source(config, split, resize=split != "train")
  else:
    src = sources_lib.make_source(config, split)
  frames = int(config.video.num_frames) if video else 0
  n = len(src)
  if num_images:
    if split != "eval" or num_images < 0:
      raise ValueError(f"num_images applies to split='eval' and must be >= 0; got {num_images} for split {split!r}")
    n = min(n, int(num_images))
  workers = int(config.data.get("num_workers", 0))
  if workers < 0:
    raise ValueError(f"config.data.num_workers must be >= 0, got {workers}")
  # Elements are whole batches, each built by one thread; grain's default
  # buffer (500) would hold GBs. Decoding and resizing release the GIL, so
  # without worker processes a host with more cores builds more batches at
  # once (one per core, 4 to 16): what an accelerator's encode rate needs.
  threads = 2 if workers else min(16, max(4, _host_cores()))
  read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(4, threads))

  if split == "train":
    min_scale = float(config.data.min_scale)
    if not 0 < min_scale <= 1:
      raise ValueError(f"config.data.min_scale must be in (0, 1], got {min_scale}")
    crop = ((min_scale, 1.0), bool(config.data.flip))
    ds = grain.MapDataset.range(n).seed(seed).shuffle()
    ds = ds.repeat(num_epochs)  # reseeds the shuffle every epoch
    ds = ds.random_map(_TrainElement(src, size, *crop))
    ds = ds[p::num_p].batch(local, drop_remainder=True)
    every = int(config.video.get("image_every", 0)) if video else 0
    if every:
      if num_epochs is not None:
        raise ValueError("video.image_every (joint image and video batches) needs num_epochs=None")
      images = sources_lib.make_source(config, split)
      di = grain.MapDataset.range(len(images)).seed(seed + 1).shuffle().repeat(None)
      di = di.random_map(_TrainElement(images, size, *crop))[p::num_p].batch(local, drop_remainder=True)
      ds = grain.MapDataset.range(len(ds)).map(_Interleaved(ds, di, every))
  else:
    steps = -(-n // batch_size)
    ds = grain.MapDataset.range(steps * local)
    ds = ds.map(_EvalPosition(n, batch_size, local, p))
    ds = ds.map(_EvalElement(src, size, config.data.get("preprocess", "center_crop"), frames)).batch(local)
  if dtype == "float32" and not workers:
    ds = ds.map(_ToFloat())  # in grain's prefetch threads
  # Batches are built by MapDataset (one per index), so the iterator state is a
  # batch count and worker processes produce exactly the same batches.
  it_ds = ds.to_iter_dataset(read)
  if workers > 0:
    _ensure_absl_flags()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2))
    if dtype == "float32":
      # After the workers: uint8 crosses process boundaries, 4x fewer bytes.
      it_ds = it_ds.map(_ToFloat())
  it = iter(it_ds)
  it.source = src
  return it


class _Position:
  """A saved iterator position, for saving one that the live iterator has already moved past."""

  def __init__(self, state: Any):
    self._state = state

  def get_state(self) -> bytes:  # grain's handler writes non-iterator items' bytes as text
    if isinstance(self._state, bytes):  # an iterator that already serialises its own state
      return self._state
    return json.dumps(self._state, indent=4).encode()


def position(iterator: grain.DatasetIterator) -> Any:
  """The iterator's current position (what ``checkpoint_args(..., position=...)`` saves)."""
  return copy.deepcopy(iterator.get_state())


def checkpoint_args(iterator: grain.DatasetIterator, *, restore: bool = False, position: Any = None):
  """Orbax ``args`` that save (or restore into) ``iterator``.

  Use as one item of a composite checkpoint, e.g.
  ``mngr.save(step, args=ocp.args.Composite(state=...,
  data=checkpoint_args(it)))`` and ``mngr.restore(step,
  args=ocp.args.Composite(state=..., data=checkpoint_args(it, restore=True)))``.
  Each process writes its own ``process_<i>-of-<n>.json`` (grain's handler).

  Args:
    iterator: the iterator returned by ``make_dataset``.
    restore: build restore args (the iterator's position is set in place).
    position: save this earlier position (from ``position(iterator)``) instead
      of the iterator's current one; the loop reads ahead of the step it saves.

  Returns:
    ``grain.checkpoint.CheckpointSave`` or ``CheckpointRestore``.
  """
  if not hasattr(iterator, "get_state"):
    raise ValueError(f"expected a grain DatasetIterator, got {type(iterator)}")
  if restore:
    return grain.checkpoint.CheckpointRestore(iterator)
  if position is not None:
    return grain.checkpoint.CheckpointSave(_Position(position))
  return grain.checkpoint.CheckpointSave(iterator)
