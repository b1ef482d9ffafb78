"""The random numbers both sides of the training-step parity draw: numpy only.

scripts/parity/gen_train_*.py (through train_common.py, in a torch
environment) and tests/step_parity.py (in vqtok's, without torch) import this
one file, so the random LPIPS weights, the random tokenizer weights and the
Gaussian sketches that reduce each tensor to 16 numbers are the same code on
both sides. ``np.random.RandomState``'s streams are frozen by numpy.
"""

import functools
import zlib

import numpy as np

SKETCH = 16  # rows of each tensor's Gaussian sketch
FULL = 1024  # tensors of at most this many numbers are stored whole after the last step
VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision vgg16 features indices
VGG_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def vgg_weights(seed):
  """torchvision vgg16 ``features.{i}.weight|bias`` (He-scaled normal, small biases), in order."""
  rs = np.random.RandomState(seed)
  out, cin = {}, 3
  for i, cout in zip(VGG_CONVS, VGG_WIDTHS):
    out[f"features.{i}.weight"] = (rs.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)
    out[f"features.{i}.bias"] = (0.05 * rs.standard_normal(cout)).astype(np.float32)
    cin = cout
  return out


def lin_weights(seed):
  """lpips heads ``lin{l}.model.1.weight`` (1, C, 1, 1), non-negative like the trained ones."""
  rs = np.random.RandomState(seed + 1)
  return {
    f"lin{l}.model.1.weight": (0.1 * np.abs(rs.standard_normal((1, c, 1, 1)))).astype(np.float32)
    for l, c in enumerate(LPIPS_CHANNELS)
  }


def random_weights(seed, shapes):
  """Random tensors for ``shapes`` (name -> shape, in order), scaled so activations stay O(1).

  Norm scales 1 + 0.1 N, biases 0.05 N, matrices and kernels N / sqrt(fan in), the rest 0.5 N.
  """
  rs = np.random.RandomState(seed)
  out = {}
  for name, shape in shapes.items():
    r = rs.standard_normal(tuple(shape))
    if "norm" in name and name.endswith(".weight"):
      r = 1 + 0.1 * r
    elif name.endswith(".bias"):
      r = 0.05 * r
    elif len(shape) >= 2:
      r = r / np.sqrt(np.prod(shape[1:]))
    else:
      r = 0.5 * r
    out[name] = r.astype(np.float32)
  return out


@functools.cache
def sketch_matrix(name, n):
  """The fixed (SKETCH, n) Gaussian sketch of tensor ``name``: ||R x|| ~ ||x|| for any x."""
  rs = np.random.RandomState(zlib.crc32(name.encode()))
  return rs.standard_normal((SKETCH, n)) / np.sqrt(SKETCH)
