"""Tests for vqtok.data: sources, transforms and the grain pipeline."""

import io
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from vqtok import data
from vqtok.config import default_config
from vqtok.data import pipeline

SIZE = 16


def _config(**data_fields):
  c = default_config()
  c.image_size = SIZE
  for k, v in data_fields.items():
    setattr(c.data, k, v)
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


# ----------------------------- reference maths ------------------------------


def _cubic(x, a=-0.5):
  """Keys (1981) cubic convolution kernel, a = -0.5 (PIL's bicubic)."""
  x = np.abs(x)
  return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _resize_matrix(n_in, n_out):
  """Antialiased resampling weights: the kernel is widened by the downscale."""
  scale = n_in / n_out
  fs = max(scale, 1.0)
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    center = (i + 0.5) * scale
    x = np.arange(n_in)
    w = _cubic((x + 0.5 - center) / fs)
    m[i] = w / w.sum()
  return m


def _ref_resize(img, h, w):
  y = np.einsum("ij,jkc->ikc", _resize_matrix(img.shape[0], h), img.astype(np.float64))
  y = np.einsum("ij,kjc->kic", _resize_matrix(img.shape[1], w), y)
  return np.clip(np.round(y), 0, 255)


def _smooth_image(h, w, seed=0):
  # Smooth content: PIL rounds between its two passes, so sharp noise would
  # magnify that rounding; natural images are smooth at this scale.
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  chans = [127 + 100 * np.sin(xx / rng.uniform(3, 9) + yy / rng.uniform(3, 9) + rng.uniform(0, 6)) for _ in range(3)]
  return np.stack(chans, -1).round().astype(np.uint8)


# -------------------------------- transforms --------------------------------


@pytest.mark.parametrize("shape", [(40, 60), (60, 37), (16, 16), (10, 12)])
def test_center_crop_matches_reference(shape):
  img = _smooth_image(*shape)
  out = data.center_crop(img, SIZE)
  h, w = shape
  nh, nw = (SIZE, max(SIZE, round(w * SIZE / h))) if h <= w else (max(SIZE, round(h * SIZE / w)), SIZE)
  ref = _ref_resize(img, nh, nw)
  top, left = (nh - SIZE) // 2, (nw - SIZE) // 2
  ref = ref[top : top + SIZE, left : left + SIZE]
  assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
  diff = np.abs(out.astype(np.float64) - ref)
  assert diff.max() <= 2 and diff.mean() < 0.5


def test_sample_crop_box_respects_scale_and_ratio():
  rng = np.random.default_rng(0)
  areas, ratios = [], []
  for _ in range(300):
    top, left, bh, bw = data.sample_crop_box(120, 160, rng, scale=(0.3, 0.9))
    assert top >= 0 and top + bh <= 120 and left >= 0 and left + bw <= 160
    areas.append(bh * bw / (120 * 160))
    ratios.append(bw / bh)
  areas, ratios = np.array(areas), np.array(ratios)
  # Rounding the box to pixels moves area and ratio by a few percent.
  assert areas.min() > 0.27 and areas.max() < 0.93
  assert ratios.min() > 0.74 and ratios.max() < 1.35
  assert areas.std() > 0.1  # not a constant box


def test_random_resized_crop_is_crop_then_resize_then_flip():
  img = _smooth_image(30, 30, seed=1)
  # Full-image box: the output is the resized image, maybe mirrored.
  out = data.random_resized_crop(img, SIZE, np.random.default_rng(3), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True)
  ref = _ref_resize(img, SIZE, SIZE)
  d_plain = np.abs(out - ref).max()
  d_flip = np.abs(out - ref[:, ::-1]).max()
  assert min(d_plain, d_flip) <= 2
  flips = []
  for s in range(40):
    a = data.random_resized_crop(img, SIZE, np.random.default_rng(s), scale=(0.5, 1.0), flip=False)
    b = data.random_resized_crop(img, SIZE, np.random.default_rng(s), scale=(0.5, 1.0), flip=True)
    assert np.array_equal(b, a) or np.array_equal(b, a[:, ::-1])
    flips.append(not np.array_equal(b, a))
  assert 5 < sum(flips) < 35  # about half are flipped


def test_to_float_range():
  x = np.array([0, 51, 255], np.uint8)
  np.testing.assert_allclose(data.to_float(x), [-1.0, 51 / 127.5 - 1, 1.0], atol=1e-6)
  with pytest.raises(ValueError, match="uint8"):
    data.to_float(x.astype(np.float32))


def test_transform_bad_input():
  with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
    data.center_crop(np.zeros((8, 8), np.uint8), 4)
  with pytest.raises(ValueError, match="size"):
    data.center_crop(np.zeros((8, 8, 3), np.uint8), 0)
  with pytest.raises(ValueError, match="scale"):
    data.sample_crop_box(8, 8, np.random.default_rng(0), scale=(0.0, 1.0))


# ------------------------------ sample photos -------------------------------


def test_samples_train_batches():
  c = _config()
  for dtype in ("float32", "uint8"):
    it = pipeline.make_dataset(c, split="train", batch_size=4, dtype=dtype, process_index=0, process_count=1)
    b = next(it)
    assert b["image"].shape == (4, SIZE, SIZE, 3)
    assert b["image"].dtype == np.dtype(dtype)
    assert b["index"].dtype == np.int64 and b["valid"].dtype == np.bool_
    assert b["valid"].all()
    assert ((b["index"] >= 0) & (b["index"] < len(it.source))).all()
    if dtype == "float32":
      assert b["image"].min() >= -1 and b["image"].max() <= 1
      assert b["image"].max() - b["image"].min() > 0.5  # real content
  assert it.source.describe(0) == "astronaut"
  assert len(it.source) == len(data.sources.SAMPLE_PHOTOS) - 4


def test_samples_eval_is_fixed_crops_of_held_out_photos():
  c = _config()
  it = pipeline.make_dataset(c, split="eval", batch_size=8, dtype="uint8", process_index=0, process_count=1)
  batches = list(it)
  src = it.source
  assert len(src) >= 16 and len(batches) == -(-len(src) // 8)
  index = np.concatenate([b["index"] for b in batches])
  valid = np.concatenate([b["valid"] for b in batches])
  np.testing.assert_array_equal(index[valid], np.arange(len(src)))
  assert (index[~valid] == -1).all() and (~valid).sum() == 8 * len(batches) - 20
  names = {src.describe(i).split("_")[0] for i in range(len(src))}
  assert names == {"chelsea", "coffee", "rocket", "coins"}
  train_names = set(data.SampleSource("train").photos)
  assert not train_names & set(src.photos)
  # The centre tile of chelsea (451x300): the central 300x300 square.
  photo = np.asarray(Image.open(os.path.join(data.sources.sample_photo_dir(), "chelsea.png")).convert("RGB"))
  i = [src.describe(k) for k in range(len(src))].index("chelsea_center")
  img = np.concatenate([b["image"] for b in batches])[i]
  ref = _ref_resize(photo[:, 75:375], SIZE, SIZE)
  assert np.abs(img - ref).max() <= 2


def test_determinism_and_seed():
  c = _config()

  def run(seed):
    it = pipeline.make_dataset(c, split="train", batch_size=4, seed=seed, process_index=0, process_count=1)
    return np.stack([b["image"] for b in _take(it, 3)])

  a, b, other = run(1), run(1), run(2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, other)


def test_epochs_cover_source_and_reshuffle():
  c = _config()
  it = pipeline.make_dataset(c, split="train", batch_size=5, process_index=0, process_count=1)
  n = len(it.source)  # 15: three batches per epoch
  idx = np.concatenate([b["index"] for b in _take(it, 6)])
  np.testing.assert_array_equal(np.sort(idx[:n]), np.arange(n))
  np.testing.assert_array_equal(np.sort(idx[n:]), np.arange(n))
  assert not np.array_equal(idx[:n], idx[n:])
  assert not np.array_equal(idx[:n], np.arange(n))


def test_finite_epochs_stop():
  c = _config()
  it = pipeline.make_dataset(c, split="train", batch_size=5, num_epochs=2, process_index=0, process_count=1)
  assert len(list(it)) == 6


def test_train_shards_are_disjoint_and_cover():
  c = _config()
  whole = pipeline.make_dataset(c, split="train", batch_size=3, process_index=0, process_count=1)
  shards = [pipeline.make_dataset(c, split="train", batch_size=6, process_index=p, process_count=2) for p in range(2)]
  n = len(whole.source)
  rows = [[], []]
  for p in range(2):
    for b in _take(shards[p], 5):  # 5 global batches of 6 = 2 epochs of 15
      assert b["image"].shape[0] == 3
      rows[p].extend(zip(b["index"], b["image"]))
  # Process p holds global stream positions p, p+2, ...: interleave them back.
  stream = [r for pair in zip(rows[0], rows[1]) for r in pair]
  idx = np.array([i for i, _ in stream])
  for e in range(2):
    np.testing.assert_array_equal(np.sort(idx[e * n : (e + 1) * n]), np.arange(n))
  # Same stream (indices and random crops) as a single process reading it all.
  ref = [r for b in _take(whole, 10) for r in zip(b["index"], b["image"])]
  np.testing.assert_array_equal(idx, [i for i, _ in ref])
  np.testing.assert_array_equal(np.stack([x for _, x in stream]), np.stack([x for _, x in ref]))


def test_eval_num_images():
  it = pipeline.make_dataset(_config(), split="eval", batch_size=4, num_images=6, process_index=0, process_count=1)
  batches = list(it)
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]), [0, 1, 2, 3, 4, 5, -1, -1])


def test_eval_shards_are_disjoint_and_cover():
  c = _config()
  parts = []
  for p in range(2):
    batches = list(pipeline.make_dataset(c, split="eval", batch_size=8, process_index=p, process_count=2))
    assert len(batches) == 3 and all(b["index"].shape == (4,) for b in batches)
    parts.append(np.concatenate([b["index"][b["valid"]] for b in batches]))
  assert not set(parts[0]) & set(parts[1])
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(20))


def test_iterator_state_restores_exactly():
  c = _config()
  it = pipeline.make_dataset(c, split="train", batch_size=4, process_index=0, process_count=1)
  _take(it, 5)  # crosses an epoch boundary (15 images)
  state = it.get_state()
  expected = _take(it, 3)
  fresh = pipeline.make_dataset(c, split="train", batch_size=4, process_index=0, process_count=1)
  fresh.set_state(state)
  for want, got in zip(expected, _take(fresh, 3)):
    np.testing.assert_array_equal(want["image"], got["image"])
    np.testing.assert_array_equal(want["index"], got["index"])


def test_iterator_checkpoint_with_orbax(tmp_path):
  c = _config()
  make = lambda: pipeline.make_dataset(c, split="train", batch_size=4, seed=5, process_index=0, process_count=1)
  it = make()
  _take(it, 2)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(2, args=ocp.args.Composite(step=ocp.args.JsonSave({"step": 2}), data=pipeline.checkpoint_args(it)))
    mngr.wait_until_finished()
  expected = next(it)
  restored = make()
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    out = mngr.restore(
      mngr.latest_step(),
      args=ocp.args.Composite(step=ocp.args.JsonRestore(), data=pipeline.checkpoint_args(restored, restore=True)),
    )
  assert out.step == {"step": 2}
  got = next(restored)
  np.testing.assert_array_equal(expected["index"], got["index"])
  np.testing.assert_array_equal(expected["image"], got["image"])
  with pytest.raises(ValueError, match="DatasetIterator"):
    pipeline.checkpoint_args([1, 2])


def test_bad_arguments():
  c = _config()
  kw = dict(process_index=0, process_count=1)
  with pytest.raises(ValueError, match="split"):
    pipeline.make_dataset(c, split="test", batch_size=4, **kw)
  with pytest.raises(ValueError, match="dtype"):
    pipeline.make_dataset(c, split="train", batch_size=4, dtype="int8", **kw)
  with pytest.raises(ValueError, match="multiple of process_count"):
    pipeline.make_dataset(c, split="train", batch_size=5, process_index=0, process_count=2)
  with pytest.raises(ValueError, match="process_index"):
    pipeline.make_dataset(c, split="train", batch_size=4, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="config.data.source"):
    pipeline.make_dataset(_config(source="webdataset"), split="train", batch_size=4, **kw)
  with pytest.raises(ValueError, match="min_scale"):
    pipeline.make_dataset(_config(min_scale=0.0), split="train", batch_size=4, **kw)
  with pytest.raises(ValueError, match="out of range"):
    data.SampleSource("train")[99]


# ------------------------------- image folder -------------------------------


def _save(img, path, **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  img.save(path, **kw)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  rgb = _smooth_image(24, 32, seed=2)
  _save(Image.fromarray(rgb), str(root / "a" / "rgb.png"))
  _save(Image.fromarray(rgb), str(root / "a" / "photo.JPG"), quality=95)
  gray = _smooth_image(20, 20, seed=3)[..., 0]
  _save(Image.fromarray(gray), str(root / "gray.png"))
  rgba = np.zeros((20, 20, 4), np.uint8)
  rgba[..., :3] = (10, 200, 30)
  rgba[:, :10, 3] = 0  # left half transparent
  rgba[:, 10:, 3] = 128
  _save(Image.fromarray(rgba, "RGBA"), str(root / "rgba.png"))
  pal = Image.fromarray(np.arange(400).reshape(20, 20).astype(np.uint8) % 4, "P")
  pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
  _save(pal, str(root / "b" / "palette.bmp"))
  deep = (np.arange(400).reshape(20, 20) * 160).astype(np.uint16)
  _save(Image.fromarray(deep), str(root / "deep16.png"))
  _save(Image.fromarray(rgb), str(root / "b" / "c.WebP"))
  (root / "corrupt.jpg").write_bytes(b"not an image at all" * 10)
  buf = io.BytesIO()
  Image.fromarray(_smooth_image(64, 64, seed=4)).save(buf, "JPEG")
  jpeg = buf.getvalue()
  # A truncated JPEG passes verify() and only fails when decoded.
  (root / "truncated.jpeg").write_bytes(jpeg[: len(jpeg) * 6 // 10])
  buf = io.BytesIO()
  Image.fromarray(_smooth_image(64, 64, seed=4)).save(buf, "PNG")
  (root / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
  (root / "notes.txt").write_text("not an image")
  (root / "labels.json").write_text("{}")
  return root, dict(rgb=rgb, gray=gray, deep=deep)


def test_folder_index_and_conversions(folder):
  root, ref = folder
  src = data.ImageFolderSource(root)
  names = [src.describe(i) for i in range(len(src))]
  assert names == sorted(names)
  assert "notes.txt" not in names and "labels.json" not in names
  # Caught by verify() at index time (PNG checksums, unknown format).
  assert [p for p, _ in src.skipped] == ["corrupt.jpg", "cut.png"]
  assert "truncated.jpeg" in names
  get = lambda n: src[names.index(n)]
  np.testing.assert_array_equal(get(os.path.join("a", "rgb.png")), ref["rgb"])
  np.testing.assert_array_equal(get(os.path.join("b", "c.WebP")).shape, ref["rgb"].shape)
  np.testing.assert_array_equal(get("gray.png"), np.repeat(ref["gray"][..., None], 3, -1))
  rgba = get("rgba.png").astype(np.int64)
  assert (rgba[:, :10] == 255).all()  # transparent -> white
  a = 128 / 255  # alpha compositing: c*a + white*(1-a)
  want = np.round(np.array([10, 200, 30]) * a + 255 * (1 - a))
  assert np.abs(rgba[:, 10:] - want).max() <= 1
  pal = get(os.path.join("b", "palette.bmp"))
  colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]])
  np.testing.assert_array_equal(pal.reshape(-1, 3), colors[np.arange(400) % 4])
  deep = get("deep16.png")
  np.testing.assert_array_equal(deep[..., 1], np.round(ref["deep"] / 257).astype(np.uint8))
  assert get(os.path.join("a", "photo.JPG")).shape == (24, 32, 3)


def test_folder_pipeline_handles_decode_failures(folder):
  root, _ = folder
  c = _config(source="folder", path=str(root))
  it = pipeline.make_dataset(c, split="eval", batch_size=4, process_index=0, process_count=1)
  batches = list(it)
  src = it.source
  t = [src.describe(i) for i in range(len(src))].index("truncated.jpeg")
  index = np.concatenate([b["index"] for b in batches])
  valid = np.concatenate([b["valid"] for b in batches])
  assert not valid[index == t].any()
  assert valid[(index >= 0) & (index != t)].all()
  assert sorted(p for p, _ in src.skipped) == ["corrupt.jpg", "cut.png", "truncated.jpeg"]
  # Training never crashes and never yields the broken image.
  it = pipeline.make_dataset(c, split="train", batch_size=4, process_index=0, process_count=1)
  idx = np.concatenate([b["index"] for b in _take(it, 6)])
  assert t not in idx and set(idx) == set(range(len(src))) - {t}
  assert any(p == "truncated.jpeg" for p, _ in it.source.skipped)


def test_folder_splits_use_subdirectories(tmp_path):
  for split, n in (("train", 3), ("test", 2)):
    for i in range(n):
      _save(Image.fromarray(_smooth_image(20, 20, seed=i)), str(tmp_path / split / f"{i}.png"))
  c = _config(source="folder", path=str(tmp_path))
  assert len(data.make_source(c, "train")) == 3
  assert len(data.make_source(c, "eval")) == 2


def test_folder_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    data.ImageFolderSource(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no readable image"):
    data.ImageFolderSource(tmp_path / "empty")
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "x.txt").write_text("x")
  (tmp_path / "junk" / "y.png").write_bytes(b"garbage")
  with pytest.raises(ValueError, match="1 unreadable"):
    data.ImageFolderSource(tmp_path / "junk")
  with pytest.raises(ValueError, match="config.data.path"):
    data.make_source(_config(source="folder"), "train")


# ----------------------------------- TFDS -----------------------------------


def _tfds_images(n, seed):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  tfds = pytest.importorskip("tensorflow_datasets")

  class VqtokTestImages(tfds.core.GeneratorBasedBuilder):
    """Tiny image dataset: 10 train and 5 test random PNG images."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["cat", "dog"]),
            "caption": tfds.features.Text(),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(10, 0), "test": self._generate_examples(5, 1)}

    def _generate_examples(self, n, seed):
      for i, img in enumerate(_tfds_images(n, seed)):
        yield i, {"image": img, "label": i % 2, "caption": f"image {i}"}

  root = tmp_path_factory.mktemp("tfds")
  tfds.builder("vqtok_test_images", data_dir=str(root), file_format="array_record").download_and_prepare()
  return str(root)


def test_tfds_end_to_end(tfds_dir):
  c = _config(source="tfds", name="vqtok_test_images", path=tfds_dir)
  it = pipeline.make_dataset(c, split="eval", batch_size=4, dtype="uint8", process_index=0, process_count=1)
  batches = list(it)
  images = np.concatenate([b["image"] for b in batches])
  valid = np.concatenate([b["valid"] for b in batches])
  assert valid.sum() == 5 and len(batches) == 2
  # PNG is lossless and the images are already SIZE x SIZE: exact round trip,
  # in TFDS's storage order (it shuffles examples by key when preparing).
  want = np.stack(_tfds_images(5, 1)).reshape(5, -1)
  got = images[valid].reshape(5, -1)
  match = (got[:, None] == want[None]).all(-1)
  np.testing.assert_array_equal(match.sum(0), 1)
  np.testing.assert_array_equal(match.sum(1), 1)
  assert it.source.describe(3) == "vqtok_test_images/test/00000003"
  train = pipeline.make_dataset(c, split="train", batch_size=5, process_index=0, process_count=1)
  idx = np.concatenate([b["index"] for b in _take(train, 2)])
  np.testing.assert_array_equal(np.sort(idx), np.arange(10))


def test_tfds_labels_for_token_files(tfds_dir):
  from vqtok import tokenize

  source = data.TfdsSource("vqtok_test_images", split="test", data_dir=tfds_dir)
  assert source.label_classes("label") == ["cat", "dog"] and source.label_classes("nope") is None
  block, label_of = tokenize._labeller(source, "feature:label")
  assert block == {"from": "feature:label", "classes": ["cat", "dog"]}
  # TFDS stores examples shuffled by key: each image's label is its generator index's parity.
  order = [next(i for i, img in enumerate(_tfds_images(5, 1)) if np.array_equal(img, source[k])) for k in range(5)]
  np.testing.assert_array_equal(label_of(np.arange(5)), [i % 2 for i in order])
  block, caption_of = tokenize._captioner(source, "feature:caption")
  assert block == {"from": "feature:caption"}
  assert caption_of(np.arange(5)) == [f"image {i}" for i in order]
  with pytest.raises(ValueError, match="no text feature 'label'"):
    tokenize._captioner(source, "feature:label")
  with pytest.raises(ValueError, match="has no feature 'nope' to take labels from"):
    tokenize._labeller(source, "feature:nope")
  with pytest.raises(ValueError, match="need --folder"):
    tokenize._labeller(source, "subfolder")


def test_tfds_unprepared_gives_command(tfds_dir, tmp_path):
  with pytest.raises(ValueError, match="download_and_prepare"):
    data.TfdsSource("vqtok_test_images", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="not found"):
    data.TfdsSource("no_such_dataset_xyz", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="no split"):
    data.TfdsSource("vqtok_test_images", split="validation", data_dir=tfds_dir)
  with pytest.raises(ValueError, match="no feature"):
    data.TfdsSource("vqtok_test_images", data_dir=tfds_dir, image_key="img")


def test_worker_processes_give_the_same_batches():
  c = _config()
  plain = pipeline.make_dataset(c, split="train", batch_size=4, process_index=0, process_count=1)
  c.data.num_workers = 2
  it = pipeline.make_dataset(c, split="train", batch_size=4, process_index=0, process_count=1)
  try:
    for want, got in zip(_take(plain, 3), _take(it, 3)):
      np.testing.assert_array_equal(want["index"], got["index"])
      np.testing.assert_array_equal(want["image"], got["image"])
    state = it.get_state()
    expected = next(it)
  finally:
    it.close()
  c.data.num_workers = 2
  resumed = pipeline.make_dataset(c, split="train", batch_size=4, process_index=0, process_count=1)
  try:
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["image"], expected["image"])
  finally:
    resumed.close()
