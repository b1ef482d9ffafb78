"""Random-access image sources for grain: bundled sample photos, folders, TFDS.

Every source has ``len(source)``, ``source[i] -> uint8 (H, W, 3) RGB`` and
``source.describe(i) -> str`` (a stable name for outputs such as token files),
so ``grain.MapDataset`` can read any element by index, in any order, from any
process. Sources decode lazily; only file names or record offsets are held.

Colour handling is shared (``decode_image``): grayscale, palette, CMYK and
16-bit images become 8-bit RGB; images with an alpha channel are composited on
white (transparent pixels become white, not the arbitrary colour stored under
them); the EXIF orientation of photos is applied.

Corrupt files in a folder: ``ImageFolderSource`` verifies every file cheaply at
index time (``PIL.Image.verify``, which checks headers and PNG checksums without
decoding) and leaves out those that fail. Some damage (a truncated JPEG) only
shows when pixels are decoded; then ``source[i]`` raises ``ValueError`` and the
pipeline (``vqtok.data.pipeline``) replaces it by the next readable image in
training and marks its row ``valid=False`` in evaluation. Both kinds are listed
in ``source.skipped`` as ``(path, reason)`` and logged once each. (Failures met
inside grain worker processes are logged there but cannot reach the parent's
``skipped``.)

Reference for the TFDS random-access format: TFDS "array_record" data sources
(https://www.tensorflow.org/datasets/api_docs/python/tfds/data_source).
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from vqtok.config_fields import ConfigFields
from vqtok.data import transforms

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# Real photographs shipped inside scikit-image (skimage/data); synthetic images
# (chessboards, colour wheel, phantom, logo, silhouettes) are left out.
SAMPLE_PHOTOS = (
  "astronaut.png",
  "brick.png",
  "camera.png",
  "cell.png",
  "chelsea.png",
  "clock_motion.png",
  "coffee.png",
  "coins.png",
  "grass.png",
  "gravel.png",
  "hubble_deep_field.jpg",
  "ihc.png",
  "moon.png",
  "motorcycle_left.png",
  "motorcycle_right.png",
  "page.png",
  "retina.jpg",
  "rocket.jpg",
  "text.png",
)
# Held out for evaluation: two colour photos, one texture-rich, one grayscale.
HELD_OUT_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "coins.png")


def to_rgb(img: Image.Image) -> np.ndarray:
  """Converts a PIL image of any mode to an 8-bit RGB array.

  Args:
    img: a PIL image (L, LA, P, PA, RGBA, CMYK, I;16, I, F, 1 ...).

  Returns:
    uint8 array of shape (H, W, 3); alpha is composited on white.
  """
  img = ImageOps.exif_transpose(img)
  if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
    # 16-bit data: PIL's convert("L") clips at 255, so rescale explicitly.
    a = np.asarray(img, dtype=np.float64)
    a = np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=-1)
  if img.mode == "F":
    a = np.clip(np.round(np.asarray(img, dtype=np.float64)), 0, 255)
    return np.repeat(a.astype(np.uint8)[..., None], 3, axis=-1)
  has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
  if has_alpha:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
  return np.asarray(img.convert("RGB"))


def decode_image(data: bytes | str | os.PathLike) -> np.ndarray:
  """Decodes an encoded image (bytes or a file path) to uint8 RGB.

  Args:
    data: encoded bytes (PNG, JPEG, ...) or a path to an image file.

  Returns:
    uint8 array (H, W, 3).

  Raises:
    ValueError: the data cannot be decoded (corrupt, truncated, not an image).
  """
  f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
  try:
    with Image.open(f) as img:
      img.load()
      return to_rgb(img)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f"cannot decode image: {type(e).__name__}: {e}") from e


class ImageSource(Sequence):
  """Base class: a random-access sequence of uint8 RGB images."""

  #: (path or name, reason) of every element that could not be read.
  skipped: list[tuple[str, str]]

  def __init__(self):
    self.skipped = []
    self._lock = threading.Lock()

  def describe(self, index: int) -> str:
    """A stable human-readable name of element ``index`` (for output files)."""
    raise NotImplementedError

  def __iter__(self):
    # Sequence's default __iter__ stops on IndexError; ours raise ValueError.
    return (self[i] for i in range(len(self)))

  def _check_index(self, index: int) -> int:
    index = int(index)
    if not 0 <= index < len(self):
      raise ValueError(f"index {index} out of range for a source of {len(self)} images")
    return index

  def record_failure(self, index: int, reason: str) -> None:
    """Adds element ``index`` to ``skipped`` and logs it (once per element)."""
    name = self.describe(index)
    with self._lock:
      if any(n == name for n, _ in self.skipped):
        return
      self.skipped.append((name, reason))
    log.warning("vqtok.data: skipping unreadable image %s (%s)", name, reason)

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state.pop("_lock", None)
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()


def _verify(path: str) -> str | None:
  """Cheap index-time check; returns the failure reason or None."""
  try:
    with Image.open(path) as img:
      img.verify()
    return None
  except Exception as e:  # noqa: BLE001
    # PIL raises many types here (OSError, SyntaxError, struct.error ...).
    return f"{type(e).__name__}: {e}"


class ImageFolderSource(ImageSource):
  """All images under a directory tree, sorted by relative path.

  Files whose extension is not one of ``IMAGE_EXTENSIONS`` (any case) are
  ignored; image files that fail ``PIL.Image.verify`` are left out and listed in
  ``skipped``.
  """

  def __init__(self, root: str | os.PathLike, *, verify: bool = True):
    """Indexes ``root``.

    Args:
      root: directory to scan recursively.
      verify: check every file with ``PIL.Image.verify`` while indexing.

    Raises:
      ValueError: ``root`` is missing, not a directory, or holds no readable
        image.
    """
    super().__init__()
    self.root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(self.root):
      raise ValueError(f"image folder {self.root!r} does not exist or is not a directory")
    rel_paths = []
    for dirpath, dirnames, filenames in os.walk(self.root):
      dirnames.sort()
      for name in filenames:
        if name.lower().endswith(IMAGE_EXTENSIONS):
          rel_paths.append(os.path.relpath(os.path.join(dirpath, name), self.root))
    rel_paths.sort()
    self.paths = []
    for rel in rel_paths:
      reason = _verify(os.path.join(self.root, rel)) if verify else None
      if reason is None:
        self.paths.append(rel)
      else:
        self.skipped.append((rel, reason))
        log.warning("vqtok.data: skipping unreadable image %s (%s)", rel, reason)
    if not self.paths:
      raise ValueError(
        f"image folder {self.root!r} has no readable image files "
        f"(extensions {', '.join(IMAGE_EXTENSIONS)}; "
        f"{len(self.skipped)} unreadable)"
      )

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> np.ndarray:
    index = self._check_index(index)
    return decode_image(os.path.join(self.root, self.paths[index]))

  def describe(self, index: int) -> str:
    return self.paths[self._check_index(index)]

  def subfolder_labels(self) -> tuple[list[str], np.ndarray]:
    """Class labels from the first directory of each path (torchvision's ``ImageFolder`` convention).

    Returns:
      ``(classes, labels)``: the sorted class (subfolder) names, and each
      image's index into them (int32).

    Raises:
      ValueError: the folder has no class subfolders, or some images lie
        outside them (their label would be a guess); the first few are named.
    """
    return subfolder_classes(self.root, self.paths)


def subfolder_classes(root: str, paths: Sequence[str], what: str = "image") -> tuple[list[str], np.ndarray]:
  """``(sorted class names, int32 label of each path)``: a path's class is its first directory under ``root``.

  ValueError (naming a few) when no path or only some lie in a class subfolder.
  """
  parts = [p.replace(os.sep, "/").split("/") for p in paths]
  loose = [p for p, part in zip(paths, parts) if len(part) < 2]
  if len(loose) == len(paths):
    raise ValueError(f"{root} has no class subfolders (labels from subfolders: root/<class>/<{what}>)")
  if loose:
    raise ValueError(
      f"{len(loose)} {what}(s) in {root} lie outside a class subfolder, so they have no label:"
      f" {', '.join(loose[:5])}{', ...' if len(loose) > 5 else ''}"
    )
  classes = sorted({part[0] for part in parts})
  lookup = {c: i for i, c in enumerate(classes)}
  return classes, np.asarray([lookup[part[0]] for part in parts], np.int32)


def sample_photo_dir() -> str:
  """The directory of scikit-image's bundled photographs."""
  import skimage  # noqa: PLC0415  (only the bundled sample photos need it)

  return os.path.join(os.path.dirname(skimage.__file__), "data")


class SampleSource(ImageSource):
  """The real photographs bundled with scikit-image (offline, no download).

  ``split="train"``: the 15 photos not held out, whole (random crops are the
  pipeline's job). ``split="eval"``: each held-out photo as 5 fixed square
  crops (4 quadrants of the centred square plus the centred square itself),
  20 images in all.
  """

  def __init__(self, split: str = "train"):
    """Lists the photos of ``split`` ("train" or "eval")."""
    super().__init__()
    if split not in ("train", "eval"):
      raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    self.split = split
    self.dir = sample_photo_dir()
    names = HELD_OUT_PHOTOS if split == "eval" else tuple(n for n in SAMPLE_PHOTOS if n not in HELD_OUT_PHOTOS)
    missing = [n for n in names if not os.path.isfile(os.path.join(self.dir, n))]
    if missing:
      raise ValueError(f"scikit-image sample photos missing from {self.dir}: {missing}")
    self.photos = names
    self.items: list[tuple[str, str | None]] = (
      [(n, t) for n in names for t in self.TILES] if split == "eval" else [(n, None) for n in names]
    )
    self._cache: dict[str, np.ndarray] = {}

  TILES = ("top_left", "top_right", "bottom_left", "bottom_right", "center")

  def __len__(self) -> int:
    return len(self.items)

  def _photo(self, name: str) -> np.ndarray:
    # 19 small photos: caching the decoded arrays avoids re-decoding PNGs.
    if name not in self._cache:
      self._cache[name] = decode_image(os.path.join(self.dir, name))
    return self._cache[name]

  def __getitem__(self, index: int) -> np.ndarray:
    name, tile = self.items[self._check_index(index)]
    img = self._photo(name)
    if tile is None:
      return img
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    half = s // 2
    offsets = {"top_left": (0, 0), "top_right": (0, half), "bottom_left": (half, 0), "bottom_right": (half, half)}
    if tile == "center":
      return img[top : top + s, left : left + s]
    dy, dx = offsets[tile]
    return img[top + dy : top + dy + half, left + dx : left + dx + half]

  def describe(self, index: int) -> str:
    name, tile = self.items[self._check_index(index)]
    stem = os.path.splitext(name)[0]
    return stem if tile is None else f"{stem}_{tile}"

  def __getstate__(self) -> dict[str, Any]:
    state = super().__getstate__()
    state["_cache"] = {}
    return state


def tfds_prepare_command(name: str, data_dir: str | None) -> str:
  """The one-off command that prepares a TFDS dataset as array_record."""
  dd = f", data_dir={data_dir!r}" if data_dir else ""
  return (
    f'python -c "import tensorflow_datasets as tfds; tfds.builder('
    f"{name!r}{dd}, file_format='array_record').download_and_prepare()\""
    f"   (or, with apache_beam installed: tfds build {name} "
    f"--file_format=array_record"
    f"{' --data_dir=' + data_dir if data_dir else ''})"
  )


class TfdsSource(ImageSource):
  """One split of a TFDS image dataset prepared in the array_record format.

  Read with ``tfds.data_source`` (no TensorFlow needed); the image feature is
  left encoded by TFDS and decoded here with PIL, like folder images.
  """

  def __init__(self, name: str, *, split: str = "train", data_dir: str | None = None, image_key: str = "image"):
    """Opens ``name``/``split`` from ``data_dir``.

    Args:
      name: TFDS dataset name, optionally with config/version ("mnist:3.0.1").
      split: split name or TFDS split expression ("train[:10%]").
      data_dir: where the dataset was prepared (TFDS default if None).
      image_key: feature key of the image.

    Raises:
      ValueError: unknown dataset, not prepared, not array_record, bad split
        or no such image feature; the message gives the preparation command.
    """
    super().__init__()
    if not name:
      raise ValueError("config.data.name must name a TFDS dataset")
    import tensorflow_datasets as tfds  # noqa: PLC0415  (heavy: TensorFlow, only for a TFDS source)

    self.name, self.split, self.image_key = name, split, image_key
    self.data_dir = os.fspath(data_dir) if data_dir else None
    cmd = tfds_prepare_command(name, self.data_dir)
    try:
      builder = tfds.builder(name, data_dir=self.data_dir)
    except Exception as e:
      raise ValueError(f"TFDS dataset {name!r} not found ({type(e).__name__}: {str(e)[:200]})") from e
    if not builder.is_prepared():
      raise ValueError(
        f"TFDS dataset {name!r} is not prepared in "
        f"{self.data_dir or 'the default TFDS data_dir'}; prepare it once "
        f"with:\n  {cmd}"
      )
    fmt = getattr(builder.info.file_format, "value", builder.info.file_format)
    if fmt != "array_record":
      raise ValueError(
        f"TFDS dataset {name!r} is prepared as {fmt!r}, but random access "
        f"needs 'array_record'; prepare it again with:\n  {cmd}"
      )
    features = builder.info.features
    if image_key not in features:
      raise ValueError(f"TFDS dataset {name!r} has no feature {image_key!r} (features: {list(features.keys())})")
    try:
      self._length = builder.info.splits[split].num_examples
    except (KeyError, ValueError) as e:
      raise ValueError(
        f"TFDS dataset {name!r} has no split {split!r} (splits: {list(builder.info.splits.keys())})"
      ) from e
    self._ds = None

  def _data_source(self):
    # Opened lazily so the source pickles cheaply into grain worker processes.
    if self._ds is None:
      import tensorflow_datasets as tfds  # noqa: PLC0415

      self._ds = tfds.data_source(
        self.name,
        split=self.split,
        data_dir=self.data_dir,
        download=False,
        decoders={self.image_key: tfds.decode.SkipDecoding()},
      )
    return self._ds

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> np.ndarray:
    index = self._check_index(index)
    return decode_image(self._data_source()[index][self.image_key])

  def _features(self):
    """The dataset's feature specs (read from its prepared ``dataset_info``)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    return tfds.builder(self.name, data_dir=self.data_dir).info.features

  def label_classes(self, key: str) -> list[str] | None:
    """The class names of the integer feature ``key`` (None: the dataset has no such feature)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    features = self._features()
    if key not in features:
      return None
    feature = features[key]
    if isinstance(feature, tfds.features.ClassLabel):
      return list(feature.names)
    if not np.issubdtype(np.dtype(feature.dtype), np.integer):
      raise ValueError(f"TFDS dataset {self.name!r}: feature {key!r} is {feature.dtype}, not an integer class label")
    return []

  def label(self, index: int, key: str) -> int:
    """The integer feature ``key`` of element ``index``."""
    return int(self._data_source()[self._check_index(index)][key])

  def has_text(self, key: str) -> bool:
    """Whether the dataset has a text feature ``key``."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    features = self._features()
    return key in features and isinstance(features[key], tfds.features.Text)

  def text(self, index: int, key: str) -> str:
    """The text feature ``key`` of element ``index``."""
    value = self._data_source()[self._check_index(index)][key]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)

  def describe(self, index: int) -> str:
    index = self._check_index(index)
    split = self.split.replace("/", "_").replace(":", "_")
    return f"{self.name.replace('/', '_')}/{split}/{index:08d}"

  def __getstate__(self) -> dict[str, Any]:
    state = super().__getstate__()
    state["_ds"] = None
    return state


def tfds_spec(spec: str | None, default_split: str) -> tuple[str, str] | None:
  """``(name, split)`` of a ``tfds:NAME[:SPLIT]`` command-line value; None when ``spec`` names no TFDS dataset."""
  if not (spec or "").startswith("tfds:"):
    return None
  name, _, split = spec[len("tfds:") :].partition(":")
  return name, split or default_split


#: Where images come from (``config.data.source``).
SOURCES = ("samples", "folder", "tfds")


def make_source(config: Any, split: str) -> ImageSource:
  """Builds the source named by ``config.data.source`` for ``split``.

  Args:
    config: the vqtok config (reads ``config.data``).
    split: "train" or "eval"; mapped to ``config.data.train_split`` /
      ``eval_split`` for TFDS and for folders with such subdirectories.

  Returns:
    An ``ImageSource``.
  """
  if split not in ("train", "eval"):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  if config.data.source not in SOURCES:
    raise ValueError(f"config.data.source must be one of {SOURCES}; got {config.data.source!r}")
  d = config.data
  split_name = d.train_split if split == "train" else d.eval_split
  if d.source == "samples":
    return SampleSource(split)
  if d.source == "folder":
    if not d.path:
      raise ValueError("config.data.path must name an image folder")
    # A folder with train/ and test/ (the split names) subdirectories uses
    # them; otherwise both splits read the whole folder.
    sub = os.path.join(d.path, split_name) if split_name else ""
    return ImageFolderSource(sub if sub and os.path.isdir(sub) else d.path, verify=bool(d.get("verify", True)))
  return TfdsSource(d.name, split=split_name, data_dir=d.path or None, image_key=d.get("image_key", "image"))


def _check_config(config: Any, check_paths: bool) -> None:
  data = config.data
  if not 0 < data.min_scale <= 1:
    raise ValueError(f"config field data.min_scale={data.min_scale!r} must be in (0, 1]")
  if data.source == "folder" and not data.path:
    raise ValueError("data.source='folder' needs data.path (the image directory)")
  if data.source == "tfds" and not data.name:
    raise ValueError("data.source='tfds' needs data.name (a TFDS dataset name, e.g. 'cifar10')")
  if check_paths and data.source == "folder" and not os.path.isdir(data.path):
    raise ValueError(f"config field data.path={data.path!r}: no such image folder")


#: ``config.data``: where images come from (``sources.SOURCES``) and how they are cropped and resized.
CONFIG = ConfigFields(
  "data",
  {
    "source": "samples",  # samples | folder | tfds
    "name": "",  # tfds dataset name, e.g. "cifar10"
    "path": "",  # image folder, or tfds data_dir
    "train_split": "train",
    "eval_split": "test",  # samples: held-out photos; tfds: a split name
    "num_workers": 0,  # 0: decode in the main thread
    "image_key": "image",  # tfds: the image feature's key
    "verify": True,  # folder: PIL verify() every file at index time (False for huge folders)
    "min_scale": 0.35,  # random-resized-crop scale range (training)
    # eval / tokenize resize: center_crop | adm_center_crop (LlamaGen) |
    # short_side_bilinear (taming) | squash_bicubic (MaskGIT) | lanczos_center_crop (VAR)
    # | torchvision_center_crop (TiTok) | torchvision_bilinear_center_crop (SimVQ)
    "preprocess": "center_crop",
    "flip": True,
  },
  choices={"source": SOURCES, "preprocess": tuple(transforms.PREPROCESS)},
  non_negative=("num_workers",),
  check=_check_config,
)
