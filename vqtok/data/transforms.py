"""Image transforms: evaluation resizes and training random-resized crop.

Evaluation follows the standard rFID protocol by default (``center_crop``):
resize the shorter side to the target size with antialiased bicubic
resampling (PIL), then center-crop. Imported tokenizers keep their authors'
own resize (``PREPROCESS``, chosen by ``config.data.preprocess``), so an image
file gets the token ids that the authors' code gives it:

  adm_center_crop      LlamaGen (dataset/augmentation.py center_crop_arr, from
                       ADM): halve with a box filter while the short side is at
                       least twice the target, bicubic to the target, crop.
  short_side_bilinear  taming-transformers (albumentations SmallestMaxSize +
                       CenterCrop): OpenCV bilinear without antialiasing; with
                       OpenCV installed it is used, otherwise a NumPy version
                       of its fixed-point arithmetic.
  squash_bicubic       MaskGIT (utils.py read_image_from_url): PIL bicubic
                       straight to size x size, no crop.
  lanczos_center_crop  VAR (utils/data.py, validation): torchvision Resize of
                       the short side to round(1.125 size) with PIL Lanczos,
                       then torchvision's CenterCrop.
  torchvision_center_crop
                       TiTok (data/webdataset_reader.py): torchvision Resize
                       of the short side with PIL bicubic, then CenterCrop.
  torchvision_bilinear_center_crop
                       SimVQ (taming/data/base.py): the same with PIL
                       bilinear, torchvision's default.
  torchvision_lanczos_center_crop
                       BSQ-ViT: the same with PIL Lanczos.
  bilinear_1125_center_crop
                       UniTok (inference.py): torchvision Resize of the short
                       side to int(1.125 size) with PIL bilinear, then
                       CenterCrop.

Training uses the Inception-style random-resized crop (Szegedy et al., 2015,
"Going deeper with convolutions", arXiv:1409.4842): a box covering a uniform
fraction ``scale`` of the area, with log-uniform aspect ratio in [3/4, 4/3],
resized to the target size, then a horizontal flip with probability 1/2.

All transforms take and return uint8 (H, W, 3) arrays; ``to_float`` maps uint8
to float32 in [-1, 1] (after batching, so the prefetch buffers hold bytes).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def _check_image(img: np.ndarray) -> None:
  if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[-1] != 3:
    raise ValueError(f"expected an image array (H, W, 3), got shape {getattr(img, 'shape', type(img))}")
  if img.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image, got {img.dtype}")


def _check_size(size: int) -> int:
  if int(size) != size or size <= 0:
    raise ValueError(f"size must be a positive integer, got {size!r}")
  return int(size)


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
  """Resizes with PIL's antialiased bicubic filter.

  Args:
    img: uint8 (H, W, 3).
    height: output height.
    width: output width.

  Returns:
    uint8 (height, width, 3).
  """
  _check_image(img)
  if img.shape[:2] == (height, width):
    return img
  out = Image.fromarray(img).resize((width, height), Image.Resampling.BICUBIC)
  return np.asarray(out)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
  """Resizes the shorter side to ``size`` and takes the central square.

  Args:
    img: uint8 (H, W, 3).
    size: output side.

  Returns:
    uint8 (size, size, 3).
  """
  _check_image(img)
  size = _check_size(size)
  h, w = img.shape[:2]
  # round() keeps the aspect ratio within half a pixel; max() keeps >= size.
  if h <= w:
    nh, nw = size, max(size, round(w * size / h))
  else:
    nh, nw = max(size, round(h * size / w)), size
  img = resize(img, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return img[top : top + size, left : left + size]


def _central(img: np.ndarray, size: int) -> np.ndarray:
  h, w = img.shape[:2]
  top, left = (h - size) // 2, (w - size) // 2
  return img[top : top + size, left : left + size]


def adm_center_crop(img: np.ndarray, size: int) -> np.ndarray:
  """LlamaGen's (ADM's) center crop: box-filter halvings, bicubic to the short side, crop."""
  _check_image(img)
  size = _check_size(size)
  pil = Image.fromarray(img)
  while min(pil.size) >= 2 * size:
    pil = pil.resize((pil.size[0] // 2, pil.size[1] // 2), resample=Image.Resampling.BOX)
  scale = size / min(pil.size)
  pil = pil.resize((round(pil.size[0] * scale), round(pil.size[1] * scale)), resample=Image.Resampling.BICUBIC)
  return _central(np.asarray(pil), size)


def squash_bicubic(img: np.ndarray, size: int) -> np.ndarray:
  """MaskGIT's resize: PIL bicubic straight to ``size x size`` (aspect ratio not kept)."""
  return resize(img, _check_size(size), _check_size(size))


def squash_bicubic_reducing(img: np.ndarray, size: int) -> np.ndarray:
  """Kandinsky's resize: PIL bicubic to ``size x size`` with ``reducing_gap=1`` (a box reduction first).

  diffusers' ``VaeImageProcessor(resample="bicubic", reducing_gap=1)`` of the
  Kandinsky 2.2 and 3 pipelines; the reduction changes pixels by up to ~40/255
  against ``squash_bicubic`` when shrinking a lot.
  """
  _check_image(img)
  size = _check_size(size)
  if img.shape[:2] == (size, size):
    return img
  return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=1))


def lanczos_center_crop(img: np.ndarray, size: int) -> np.ndarray:
  """VAR's eval resize: short side to ``round(1.125 * size)`` by PIL Lanczos, then the central square.

  torchvision's rules on a PIL image: the long side becomes
  ``int(short_new * long / short)`` (truncated), an image already of that size is
  not resampled, and the crop offsets are ``round((n - size) / 2)`` (half to even).
  """
  _check_image(img)
  size = _check_size(size)
  h, w = img.shape[:2]
  mid = round(1.125 * size)
  if w <= h:
    nw, nh = mid, int(mid * h / w)
  else:
    nh, nw = mid, int(mid * w / h)
  if (nh, nw) != (h, w):
    img = np.asarray(Image.fromarray(img).resize((nw, nh), resample=Image.Resampling.LANCZOS))
  top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
  return img[top : top + size, left : left + size]


# OpenCV's fixed-point bilinear resize of uint8 images (imgproc/resize.cpp):
# 11-bit coefficients, a horizontal pass in int32, a vertical pass that drops
# 4 bits of each row before the multiply (its vectorised path).
_COEF_SCALE = 2048


def _cv2_linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  scale = n_in / n_out
  f = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
  f = f.astype(np.float32)
  i0 = np.floor(f).astype(np.int64)
  frac = (f - i0).astype(np.float32)
  frac = np.where(i0 < 0, 0, frac)
  i0 = np.where(i0 < 0, 0, i0)
  frac = np.where(i0 >= n_in - 1, 0, frac)
  i0 = np.where(i0 >= n_in - 1, n_in - 1, i0)
  c0 = np.rint((1.0 - frac) * _COEF_SCALE).astype(np.int64)
  return i0, np.stack([c0, _COEF_SCALE - c0], axis=-1)


def _bilinear_uint8(img: np.ndarray, height: int, width: int) -> np.ndarray:
  try:
    import cv2  # noqa: PLC0415  (optional: the reference's own library, exact by construction)

    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
  except ImportError:
    pass
  h, w = img.shape[:2]
  xi, xc = _cv2_linear_taps(w, width)
  yi, yc = _cv2_linear_taps(h, height)
  src = img.astype(np.int64)
  x1 = np.minimum(xi + 1, w - 1)
  rows = src[:, xi] * xc[None, :, 0, None] + src[:, x1] * xc[None, :, 1, None]  # (h, width, 3)
  y1 = np.minimum(yi + 1, h - 1)
  b0, b1 = yc[:, 0][:, None, None], yc[:, 1][:, None, None]
  out = (((b0 * (rows[yi] >> 4)) >> 16) + ((b1 * (rows[y1] >> 4)) >> 16) + 2) >> 2
  return np.clip(out, 0, 255).astype(np.uint8)


def short_side_bilinear(img: np.ndarray, size: int) -> np.ndarray:
  """taming's eval resize: shorter side to ``size`` by OpenCV-style bilinear, then the central square."""
  _check_image(img)
  size = _check_size(size)
  h, w = img.shape[:2]
  scale = size / min(h, w)
  # Python's round() is round-half-to-even, like albumentations' py3round.
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  if (nh, nw) != (h, w):
    img = _bilinear_uint8(img, nh, nw)
  return _central(img, size)


def squash_bilinear_tf(img: np.ndarray, size: int) -> np.ndarray:
  """The whole image to ``size x size`` as big_vision's ``resize(size)`` does it (SigLIP's eval).

  ``tf.image.resize(method="bilinear", antialias=False)`` on the uint8 image
  (TF2: half-pixel centers, sample positions ``(i + 0.5) * in / out - 0.5``
  in float32, neighbours clamped to the border), its lerps in TF's order
  (``top + (bottom - top) * dy`` of ``left + (right - left) * dx``), then
  clipped and cast back to uint8, which truncates (big_vision/pp/ops_image.py
  ``get_resize``). No antialiasing: a large image is sampled, not averaged.
  """
  _check_image(img)
  size = _check_size(size)

  def taps(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = np.float32(n_in) / np.float32(size)
    src = (np.arange(size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    low = np.floor(src)
    return np.maximum(low.astype(np.int64), 0), np.minimum(np.ceil(src).astype(np.int64), n_in - 1), src - low

  (y0, y1, dy), (x0, x1, dx) = taps(img.shape[0]), taps(img.shape[1])
  x, dx = img.astype(np.float32), dx[None, :, None]
  top = x[y0][:, x0] + (x[y0][:, x1] - x[y0][:, x0]) * dx
  bottom = x[y1][:, x0] + (x[y1][:, x1] - x[y1][:, x0]) * dx
  out = top + (bottom - top) * dy[:, None, None]
  return np.clip(out, 0, 255).astype(np.uint8)


def torchvision_resize_crop(img: np.ndarray, size: int, crop: int, resample: Image.Resampling) -> np.ndarray:
  """torchvision's ``Resize(size, resample)`` of the short side, then ``CenterCrop(crop)``, on a PIL image."""
  _check_image(img)
  size, crop = _check_size(size), _check_size(crop)
  h, w = img.shape[:2]
  if min(h, w) != size:
    if h <= w:
      h, w = size, int(size * w / h)
    else:
      h, w = int(size * h / w), size
    img = np.asarray(Image.fromarray(img).resize((w, h), resample))
  if crop > min(h, w):
    raise ValueError(f"center crop {crop} is larger than the resized image {h}x{w}")
  top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
  return img[top : top + crop, left : left + crop]


def _torchvision_center_crop(img: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
  return torchvision_resize_crop(img, size, size, resample)


def torchvision_center_crop(img: np.ndarray, size: int) -> np.ndarray:
  """torchvision's ``Resize(size, bicubic)`` then ``CenterCrop(size)`` on a PIL image (TiTok's eval).

  torchvision truncates the long side (``int(size * long / short)``), resizes
  with PIL's bicubic filter, and rounds the crop offset half-to-even
  (``int(round((h - size) / 2))``); bytedance/1d-tokenizer
  data/webdataset_reader.py ``eval_transform``.
  """
  return _torchvision_center_crop(img, size, Image.Resampling.BICUBIC)


def torchvision_bilinear_center_crop(img: np.ndarray, size: int) -> np.ndarray:
  """torchvision's ``Resize(size)`` (bilinear, its default) then ``CenterCrop(size)`` on a PIL image (SimVQ's).

  As ``torchvision_center_crop`` with PIL's antialiased bilinear filter;
  youngsheen/SimVQ taming/data/base.py ``ImagePaths``.
  """
  return _torchvision_center_crop(img, size, Image.Resampling.BILINEAR)


def torchvision_lanczos_center_crop(img: np.ndarray, size: int) -> np.ndarray:
  """torchvision's ``Resize(size, lanczos)`` then ``CenterCrop(size)`` (BSQ-ViT's eval).

  As ``torchvision_center_crop`` with PIL's Lanczos filter: zhaoyue-zephyrus/bsq-vit
  scripts/main_image_tokenizer.py ``valTs`` with the configs' ``evaluation.interpolation: lanczos``.
  """
  return _torchvision_center_crop(img, size, Image.Resampling.LANCZOS)


def timm_bilinear_center_crop(img: np.ndarray, size: int) -> np.ndarray:
  """timm's eval transform: short side to ``floor(size / 0.875)`` (PIL bilinear), then the central ``size`` square.

  ``timm.data.create_transform(input_size=size, is_training=False)`` with its
  defaults (``crop_pct`` 0.875, bilinear), as torchvision's ``Resize`` and
  ``CenterCrop``; GSQ's evaluation (HelmholtzAI-FZJ/flex_gen, datasets/transforms.py).
  """
  size = _check_size(size)
  return torchvision_resize_crop(img, math.floor(size / 0.875), size, Image.Resampling.BILINEAR)


def bilinear_1125_center_crop(img: np.ndarray, size: int) -> np.ndarray:
  """UniTok's eval: ``Resize(int(size * 1.125))`` (PIL bilinear, torchvision's default) then ``CenterCrop(size)``.

  FoundationVision/UniTok inference.py, with utils/config.py's ``resize_ratio`` 1.125.
  """
  size = _check_size(size)
  return torchvision_resize_crop(img, int(size * 1.125), size, Image.Resampling.BILINEAR)


#: Evaluation / tokenization resizes, by ``config.data.preprocess``.
PREPROCESS = {
  "center_crop": center_crop,
  "adm_center_crop": adm_center_crop,
  "short_side_bilinear": short_side_bilinear,
  "squash_bicubic": squash_bicubic,
  "squash_bicubic_reducing": squash_bicubic_reducing,
  "lanczos_center_crop": lanczos_center_crop,
  "torchvision_center_crop": torchvision_center_crop,
  "torchvision_bilinear_center_crop": torchvision_bilinear_center_crop,
  "torchvision_lanczos_center_crop": torchvision_lanczos_center_crop,
  "timm_bilinear_center_crop": timm_bilinear_center_crop,
  "bilinear_1125_center_crop": bilinear_1125_center_crop,
}


def sample_crop_box(
  height: int,
  width: int,
  rng: np.random.Generator,
  *,
  scale: tuple[float, float] = (0.35, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
  """Draws an Inception-style random crop box.

  Args:
    height: image height.
    width: image width.
    rng: numpy random generator.
    scale: range of the box area as a fraction of the image area.
    ratio: range of the box aspect ratio width / height (log-uniform).

  Returns:
    (top, left, box_height, box_width), inside the image.
  """
  lo, hi = scale
  if not 0 < lo <= hi <= 1:
    raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
  if not 0 < ratio[0] <= ratio[1]:
    raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
  area = height * width
  log_r = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(lo, hi)
    r = math.exp(rng.uniform(*log_r))
    bw = int(round(math.sqrt(target * r)))
    bh = int(round(math.sqrt(target / r)))
    if 0 < bw <= width and 0 < bh <= height:
      top = int(rng.integers(0, height - bh + 1))
      left = int(rng.integers(0, width - bw + 1))
      return top, left, bh, bw
  # Fallback (extreme aspect ratios): the largest central box within `ratio`.
  r = width / height
  if r < ratio[0]:
    bw, bh = width, int(round(width / ratio[0]))
  elif r > ratio[1]:
    bh, bw = height, int(round(height * ratio[1]))
  else:
    bh, bw = height, width
  return (height - bh) // 2, (width - bw) // 2, bh, bw


def random_resized_crop(
  img: np.ndarray,
  size: int,
  rng: np.random.Generator,
  *,
  scale: tuple[float, float] = (0.35, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
  flip: bool = True,
) -> np.ndarray:
  """Random-resized crop to ``size`` x ``size`` and random horizontal flip.

  Args:
    img: uint8 (H, W, 3).
    size: output side.
    rng: numpy random generator (grain's per-element generator).
    scale: area fraction range of the crop box.
    ratio: aspect ratio range of the crop box.
    flip: flip left-right with probability 1/2.

  Returns:
    uint8 (size, size, 3).
  """
  _check_image(img)
  size = _check_size(size)
  top, left, bh, bw = sample_crop_box(img.shape[0], img.shape[1], rng, scale=scale, ratio=ratio)
  out = resize(img[top : top + bh, left : left + bw], size, size)
  # Always draw, so the stream of random numbers does not depend on `flip`.
  if rng.random() < 0.5 and flip:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def to_float(images: np.ndarray) -> np.ndarray:
  """Maps uint8 images to float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
  if images.dtype != np.uint8:
    raise ValueError(f"expected uint8 images, got {images.dtype}")
  return images.astype(np.float32) * np.float32(2 / 255) - np.float32(1)
