"""Video token files: ``tokenize encode`` on a folder of videos and ``decode`` back to mp4 or PNG frames.

A tiny random causal video tokenizer (16 px, s_T = 2, FSQ 625 codes) on two
synthetic mp4s: the files' rows equal ``tokenizer.encode(clip)``, decoding them
equals ``tokenizer.decode``, chunked encoding writes the same rows, and each
mistake (a frame count the causal rule rejects, an image tokenizer, another
frame rule or codebook, videos too short) is one line with nothing written. A
non-causal tokenizer (k*s_T frames -> k) refuses the causal files and its own
frame counts by its rule, and its files are refused by causal tokenizers.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import ROOT, load_config, snapshot
from PIL import Image

av = pytest.importorskip("av")

from vqtok import data as data_lib  # noqa: E402
from vqtok import token_exports, tokenize, tokenizer_dir  # noqa: E402
from vqtok import tokens as tokens_lib  # noqa: E402
from vqtok.config import default_config, validate_config  # noqa: E402
from vqtok.data import video as video_lib  # noqa: E402
from vqtok.images import to_uint8  # noqa: E402
from vqtok.models import build_tokenizer  # noqa: E402

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)
FRAMES = 5  # 1 + 2*2: three latent frames at s_T = 2


def video_config(strides=(1, 2), levels=(5, 5, 5, 5), **model):
  c = default_config()
  c.image_size = 16
  c.model.update(
    channels=8,
    channel_mult=(1, 1, 2),  # f4: 4x4 tokens a frame at 16 px
    num_res_blocks=1,
    norm_groups=4,
    code_dim=len(levels),
    cnn_family="magvit2",
    temporal_downsample=strides,
  )
  c.model.update(model)
  c.quantizer = {"type": "fsq", "levels": list(levels)}
  return validate_config(c)


@pytest.fixture(scope="module")
def tokdirs(tmp_path_factory):
  """ "v": a tokenizer directory (s_T = 2, 625 codes); "v4" (s_T = 4), "codes" (1000 codes), "image" (tiny preset),
  "nc" (non-causal, s_T = 2: VidTok's model_3dnoncausal.py form).

  Only "v" runs: the others are refused before any weight is read, so they are
  abstract (``nnx.eval_shape``: no initialisation to pay for).
  """
  c = video_config()
  tokenizer = nnx.jit(lambda: build_tokenizer(c, rngs=nnx.Rngs(0)))()  # one compile, not ~100 eager inits
  path = tokenizer_dir.save_tokenizer(tokenizer, c, str(tmp_path_factory.mktemp("tokenizers") / "v"))
  out = {"v": (path, *tokenizer_dir.read(path))}
  for key, c in (
    ("v4", video_config(strides=(2, 2))),
    ("codes", video_config(levels=(8, 5, 5, 5))),
    ("image", load_config()),
    ("nc", video_config(cnn_family="vidtok", causal=False, attention=True, z_channels=0)),
  ):
    abstract = nnx.eval_shape(lambda c=c: build_tokenizer(c, rngs=nnx.Rngs(0)))
    out[key] = (f"(abstract {key})", abstract, c, {"step": 0, "metadata": {}})
  return out


def _write(path, frames, fps=10):
  with av.open(str(path), "w") as c:
    s = c.add_stream("libx264", rate=fps, options={"crf": "0"})
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    for f in frames:
      c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
    c.mux(s.encode())


def _moving(n, seed):
  """Smooth noise that moves 2 px a frame: n frames of 24x24."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (24, 24 + 2 * n, 3)).astype(np.uint8)
  return np.stack([base[:, 2 * k : 2 * k + 24] for k in range(n)])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """``a.mp4`` (12 frames: two clips of 5), ``sub/b.mp4`` (7: one clip), ``short.mp4`` (3) and ``junk.mp4``."""
  root = tmp_path_factory.mktemp("videos")
  os.makedirs(root / "sub")
  _write(root / "a.mp4", _moving(12, 0))
  _write(root / "sub" / "b.mp4", _moving(7, 1))
  _write(root / "short.mp4", _moving(3, 2))
  (root / "junk.mp4").write_bytes(b"not a video" * 20)
  return str(root)


def _encode(tok, folder, out, *, num_frames=FRAMES, chunk=None, labels="", captions=""):
  path, tokenizer, config, info = tok
  config = config.copy_and_resolve_references()
  config.video.update(source="folder", path=folder, num_frames=num_frames, stride=1, fps=0.0, clips_per_video=2)
  config.data.eval_split = ""
  return tokenize.encode_to_files(
    config,
    tokenizer,
    info["step"],
    str(out),
    batch_size=8,
    progress=False,
    tokenizer_metadata=info["metadata"],
    tokenizer_path=path,
    chunk=chunk,
    labels=labels,
    captions=captions,
  )


def _decode(tok, tokens, out, **kwargs):
  path, tokenizer, config, info = tok
  return tokenize.decode_to_images(
    tokenizer,
    str(tokens),
    str(out),
    config=config,
    tokenizer_metadata=info["metadata"],
    tokenizer_path=path,
    batch_size=8,
    reencode=False,
    progress=False,
    **kwargs,
  )


@pytest.fixture(scope="module")
def encoded(tokdirs, folder, tmp_path_factory):
  out = tmp_path_factory.mktemp("tokens") / "v"
  return str(out), _encode(tokdirs["v"], folder, out)


@pytest.fixture(scope="module")
def reference(tokdirs, folder):
  """The clips as the source gives them, and the tokenizer's own ids and decoded frames of them."""
  source = video_lib.VideoFolderSource(folder, num_frames=FRAMES, clips_per_video=2, size=16)
  names = [source.describe(i) for i in range(len(source))]
  clips = {n: source[i] for i, n in enumerate(names) if not n.startswith("short")}
  tokenizer = tokdirs["v"][1]
  x = data_lib.to_float(np.stack(list(clips.values())))
  ids = np.asarray(jax.jit(tokenizer.encode)(x))
  # tokenizer.decode compiled as decode_to_images compiles it (a batch of 8): one compile for both.
  video = np.asarray(tokenize._jit_tokenizer(tokenizer, "decode")(np.concatenate([ids, np.zeros_like(ids)]))[:3])
  return list(clips), ids, to_uint8(np.clip(video, -1, 1))


def test_rows_metadata_and_counted_skips(encoded, reference):
  tokens, summary = encoded
  names, ids, _ = reference
  assert summary["encoded"] == 3
  skipped = dict(summary["skipped"])
  assert set(skipped) == {"junk.mp4", "short.mp4@0"} and "too short" in skipped["short.mp4@0"]
  meta, rows = tokens_lib.read_rows(tokens)
  assert list(rows["names"]) == names == ["a.mp4@0", "a.mp4@5", "sub/b.mp4@0"]
  assert rows["indices"].shape == (3, 3, 4, 4)
  np.testing.assert_array_equal(rows["indices"], ids)
  assert meta["token_shape"] == [3, 4, 4] and meta["codebook_size"] == 625
  video = meta["video"]
  assert video == {
    "num_frames": 5,
    "latent_frames": 3,
    "temporal_factor": 2,
    "causal": True,
    "frame_rule": "1 + k*2 frames -> 1 + k latent frames",
    "stride": 1,
    "fps": None,
    "clips_per_video": 2,
    "source_fps": 10.0,  # both videos' own rate
    "chunk": None,
  }
  assert meta["source"]["source"] == "folder" and meta["num_images"] == 4  # short.mp4's clip counted, then skipped


def test_token_source_reads_video_rows(encoded):
  tokens, _ = encoded
  source = tokens_lib.TokenSource(tokens)
  _, rows = tokens_lib.read_rows(tokens)
  assert len(source) == 3 and source.video["latent_frames"] == 3 and source.num_views is None
  for i in range(3):
    record = source[i]
    assert record["indices"].shape == (3, 4, 4) and record["indices"].dtype == np.int32
    np.testing.assert_array_equal(record["indices"], rows["indices"][i])
    assert record["name"] == rows["names"][i]


def test_rerun_resumes_and_other_clips_are_refused(tokdirs, folder, encoded):
  tokens, _ = encoded
  before = snapshot(tokens)
  again = _encode(tokdirs["v"], folder, tokens, chunk=1)  # chunking gives the same ids: the same run
  assert (again["encoded"], again["shards_already_done"]) == (0, 1)
  with pytest.raises(ValueError, match=r"from a different run or source \(.*token_shape, video differ\)") as e:
    _encode(tokdirs["v"], folder, tokens, num_frames=3)
  _one_line(e)
  assert snapshot(tokens) == before


def test_labels_and_captions(tokdirs, folder, tmp_path):
  """UCF-101's layout, root/<class>/<video>: each clip's row carries its video's class, and a caption by its name."""
  with pytest.raises(ValueError, match=r"3 video\(s\) in .* lie outside a class subfolder.*: a.mp4, junk.mp4, short"):
    _encode(tokdirs["v"], folder, tmp_path / "loose", labels="subfolder")
  assert not (tmp_path / "loose").exists()
  classes = tmp_path / "classes"
  for cls, name in (("walk", "a.mp4"), ("run", "sub/b.mp4")):
    os.makedirs(classes / cls)
    shutil.copy(os.path.join(folder, name), classes / cls / os.path.basename(name))
  names = ["run/b.mp4@0", "walk/a.mp4@0", "walk/a.mp4@5"]
  captions = tmp_path / "captions.jsonl"
  captions.write_text("".join(json.dumps({"name": n, "caption": f"clip {n}"}) + "\n" for n in names))
  _encode(tokdirs["v"], str(classes), tmp_path / "labelled", labels="subfolder", captions=str(captions))
  meta, rows = tokens_lib.read_rows(str(tmp_path / "labelled"))
  assert meta["labels"] == {"from": "subfolder", "classes": ["run", "walk"]}
  assert list(rows["names"]) == names
  np.testing.assert_array_equal(rows["labels"], [0, 1, 1])
  record = tokens_lib.TokenSource(str(tmp_path / "labelled"))[2]
  assert (record["label"], record["caption"], record["indices"].shape) == (1, "clip walk/a.mp4@5", (3, 4, 4))


def test_image_exports_refuse_video_rows(encoded, tmp_path):
  with pytest.raises(ValueError, match=r"holds video tokens \(rows of \(3, 4, 4\)\); llamagen is a layout for image"):
    token_exports.export(encoded[0], str(tmp_path / "codes"), "llamagen")
  assert not (tmp_path / "codes").exists()


def test_chunked_encode_writes_the_same_rows(tokdirs, folder, encoded, tmp_path):
  _encode(tokdirs["v"], folder, tmp_path / "chunked", chunk=1)
  meta, rows = tokens_lib.read_rows(str(tmp_path / "chunked"))
  _, whole = tokens_lib.read_rows(encoded[0])
  np.testing.assert_array_equal(rows["indices"], whole["indices"])
  assert meta["video"]["chunk"] == 1


def test_decode_png_frames_chunked_equal_the_tokenizers_decode(tokdirs, encoded, reference, tmp_path):
  names, _, frames = reference
  summary = _decode(tokdirs["v"], encoded[0], tmp_path / "png", fmt="png", chunk=2)
  assert (summary["decoded"], summary["clips"], summary["format"]) == (3, 3, "png")
  for name, want in zip(names, frames):
    folder = tmp_path / "png" / tokenize.clip_name(name, "png")
    got = np.stack([np.asarray(Image.open(folder / f"{k:05d}.png")) for k in range(FRAMES)])
    assert sorted(os.listdir(folder)) == [f"{k:05d}.png" for k in range(FRAMES)]
    # One compiled decode against another (batch 8 vs 3): equal up to a rounding step.
    assert np.abs(got.astype(int) - want).max() <= 1 and np.mean(got == want) > 0.99


def test_decode_mp4(tokdirs, encoded, reference, tmp_path):
  names, _, frames = reference
  summary = _decode(tokdirs["v"], encoded[0], tmp_path / "mp4")
  assert (summary["decoded"], summary["format"]) == (3, "mp4")
  assert sorted(os.listdir(tmp_path / "mp4")) == ["a.mp4@0.mp4", "a.mp4@5.mp4", "sub__b.mp4@0.mp4"]
  for name, want in zip(names, frames):
    path = tmp_path / "mp4" / tokenize.clip_name(name, "mp4")
    got = video_lib.read_clip(path, num_frames=FRAMES)
    assert got.shape == want.shape
    # H.264 in yuv420p halves the chroma resolution: on 16 px noise only the frames' mean colours survive exactly.
    np.testing.assert_allclose(got.mean(axis=(1, 2)), want.mean(axis=(1, 2)), atol=4)
    assert video_lib.probe(str(path))[1] == 10.0  # the videos' own rate (no fps at encode, stride 1)


def _one_line(excinfo) -> str:
  message = str(excinfo.value)
  assert "\n" not in message
  return message


def test_encode_refusals_write_nothing(tokdirs, folder, tmp_path):
  out = tmp_path / "out"
  with pytest.raises(ValueError) as e:
    _encode(tokdirs["v"], folder, out, num_frames=4)
  assert "num_frames=4: a causal video tokenizer with temporal downsampling 2 takes 1 + k*2 frames" in _one_line(e)
  assert "nearest valid counts are 3 and 5" in str(e.value)
  with pytest.raises(ValueError, match="need a video tokenizer .* an image tokenizer") as e:
    _encode(tokdirs["image"], folder, out)
  _one_line(e)
  with pytest.raises(ValueError, match="takes 1 \\+ k\\*4 frames .*; got 3 frames") as e:
    _encode(tokdirs["v4"], folder, out, num_frames=3)
  _one_line(e)
  with pytest.raises(ValueError, match="chunk must be a positive number of latent frames") as e:
    _encode(tokdirs["v"], folder, out, chunk=0)
  _one_line(e)
  # A non-causal tokenizer's own rule: k*2 frames; and no chunks (nothing carries over between them).
  with pytest.raises(ValueError, match="a non-causal video tokenizer .* takes k\\*2 frames .* counts are 4 and 6") as e:
    _encode(tokdirs["nc"], folder, out)
  _one_line(e)
  with pytest.raises(ValueError, match="chunk is for causal video tokenizers: a non-causal one") as e:
    _encode(tokdirs["nc"], folder, out, num_frames=4, chunk=1)
  _one_line(e)
  path, tokenizer, config, info = tokdirs["nc"]
  with pytest.raises(ValueError, match=r"encodes clips of k\*2 frames, not images: give it videos") as e:
    tokenize.encode_to_files(config, tokenizer, 0, str(out), batch_size=8, progress=False)
  _one_line(e)
  with pytest.raises(
    ValueError, match=r"no video in .* is long enough for a clip of 13 frames .* the longest, a.mp4, has 12"
  ):
    _encode(tokdirs["v"], folder, out, num_frames=13)
  assert not out.exists()


def test_decode_refusals_write_nothing(tokdirs, encoded, tmp_path):
  tokens, _ = encoded
  before = snapshot(tokens)
  out = tmp_path / "dec"
  cases = [
    ("image", {}, "holds video tokens \\(5-frame clips as rows of \\(3, 4, 4\\).*this is an image tokenizer"),
    ("v4", {}, "this tokenizer's frame rule is 1 \\+ k\\*4 frames -> 1 \\+ k latent frames"),
    (
      "nc",
      {},
      "1 \\+ k\\*2 frames -> 1 \\+ k latent frames\\); this tokenizer's frame rule is k\\*2 frames -> k latent",
    ),
    ("codes", {}, "from a codebook of 625 codes; this tokenizer has 1000"),
    ("v", {"chunk": 0}, "chunk must be a positive number"),
    ("v", {"fmt": "gif"}, "format='gif'"),
  ]
  for key, kwargs, pattern in cases:
    with pytest.raises(ValueError, match=pattern) as e:
      _decode(tokdirs[key], tokens, out, **kwargs)
    _one_line(e)
  assert not out.exists() and snapshot(tokens) == before


def test_noncausal_token_files_are_refused_by_causal_tokenizers(tokdirs):
  """A non-causal tokenizer's files (``causal`` false in the ``video`` block) and a causal one's, with the same
  s_T, differ in their frame rule: each tokenizer refuses the other's; files without the field are causal."""
  causal, noncausal = tokdirs["v"][1], tokdirs["nc"][1]
  block = tokens_lib.video_block(noncausal, num_frames=4, stride=1, fps=None, clips_per_video=1)
  assert (
    block["causal"] is False and block["latent_frames"] == 2 and block["frame_rule"] == "k*2 frames -> k latent frames"
  )
  meta = {"token_shape": [2, 4, 4], "codebook_size": 625, "video": block}
  tokens_lib.check_video(noncausal, meta, "nc_tokens")
  with pytest.raises(
    ValueError,
    match="holds video tokens \\(4-frame clips .* k\\*2 frames -> k latent frames\\);"
    " this tokenizer's frame rule is 1 \\+ k\\*2",
  ) as e:
    tokens_lib.check_video(causal, meta, "nc_tokens")
  _one_line(e)
  old = {k: v for k, v in tokens_lib.video_block(causal, num_frames=5, stride=1, fps=None, clips_per_video=1).items()}
  del old["causal"]  # written before the field
  tokens_lib.check_video(causal, {"token_shape": [3, 4, 4], "codebook_size": 625, "video": old}, "old")
  with pytest.raises(ValueError, match="this tokenizer's frame rule is k\\*2 frames -> k latent frames"):
    tokens_lib.check_video(noncausal, {"token_shape": [3, 4, 4], "codebook_size": 625, "video": old}, "old")
  # A run encoded before the field resumes: its block reads as causal.
  assert tokenize._cutting(old) == tokenize._cutting({**old, "causal": True, "chunk": 2}) != tokenize._cutting(block)
  # Images: it neither decodes image rows nor encodes images (one frame is no clip of k*2).
  with pytest.raises(ValueError, match="holds image tokens; a non-causal video tokenizer .* decodes clips only"):
    tokens_lib.check_video(noncausal, {"token_shape": [4, 4], "codebook_size": 625}, "itokens")


def test_image_token_files_refuse_video_options(tokdirs, tmp_path):
  """Image rows decode to PNGs only; asking for mp4 or chunks is refused before anything runs."""
  rng = np.random.default_rng(0)
  images = tmp_path / "images"
  os.makedirs(images)
  Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / "a.png")
  path, tokenizer, config, info = tokdirs["image"]
  meta = {"format": tokens_lib.FORMAT, "codebook_size": 1000, "token_shape": [4, 4]}
  tokens = tmp_path / "itokens"
  os.makedirs(tokens)
  (tokens / "metadata.json").write_text(json.dumps(meta))
  tokens_lib.write_shard(
    str(tokens / "tokens-00000.npz"),
    {"indices": [np.zeros((1, 4, 4), np.int32)], "names": ["a.png"], "source_index": [np.zeros(1)]},
    1000,
  )
  for kwargs, pattern in (({"fmt": "mp4"}, "format='mp4' is for video"), ({"chunk": 1}, "chunk=1 is for video")):
    with pytest.raises(ValueError, match=pattern):
      tokenize.decode_to_images(tokenizer, str(tokens), str(tmp_path / "dec"), progress=False, **kwargs)
  assert not (tmp_path / "dec").exists()
  _, rows = tokens_lib.read_rows(str(tokens))
  assert rows["indices"].shape == (1, 4, 4)


def test_command_line_refuses_a_bad_frame_count_in_one_line(tokdirs, folder, tmp_path):
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "vqtok.tokenize",
      "encode",
      f"--tokenizer={tokdirs['v'][0]}",
      f"--videos={folder}",
      "--num_frames=8",
      f"--output={tmp_path / 'out'}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert res.returncode == 2, res.stderr[-3000:]
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and "num_frames=8:" in lines[0] and "nearest valid counts are 7 and 9" in lines[0], lines
  assert not (tmp_path / "out").exists()
