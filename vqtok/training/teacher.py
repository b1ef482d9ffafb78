"""A frozen teacher tokenizer whose code ids are a training target (TiTok's first stage).

TiTok (Yu et al., 2024, arXiv:2406.07550) first trains its 1-D tokenizer to
predict, at every 16x16 patch, the code that a frozen MaskGIT VQGAN assigns
there: bytedance/1d-tokenizer utils/train_utils.py ``train_one_epoch`` encodes
each training batch with the pretrained tokenizer (``proxy_codes =
pretrained_tokenizer.encode(images)``) and modeling/modules/losses.py
``ReconstructionLoss_Stage1`` takes the cross-entropy of the decoder's logits
against those ids. Here the teacher is any tokenizer directory (``config.teacher``);
its codes are computed inside the jitted step from the same batch, so they
cost no state and a resumed run sees exactly the targets an uninterrupted one
does. Its weights are an argument of the step, like the LPIPS weights, never
part of the train state.

At a fresh start the teacher's codebook and decoder also fill the student's
``decoder.codebook`` and ``decoder.pixel`` (the reference loads them as
``pixel_quantize`` / ``pixel_decoder`` from the same VQGAN file, train_utils.py
``create_model_and_loss_module``), so a first-stage result already decodes to
pixels and the second stage fine-tunes it from there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vqtok import files
from vqtok import load as load_lib


class TeacherError(ValueError):
  """A teacher tokenizer that cannot supply this model's proxy codes."""


@dataclasses.dataclass(frozen=True)
class Teacher:
  """The teacher's graph definition (static); its arrays travel separately."""

  graphdef: nnx.GraphDef
  path: str


def _fail(path: str, why: str) -> TeacherError:
  return TeacherError(f"config field teacher={path!r}: {why}")


def load(config: ml_collections.ConfigDict, student: nnx.Module) -> tuple[Teacher, Any, nnx.Module]:
  """``(teacher, arrays, module)`` for ``config.teacher``, checked against the student tokenizer.

  Raises:
    TeacherError: the teacher's codebook size is not ``model.proxy_codebook_size``,
      its code grid at ``image_size`` is not the decoder's logit grid, or its
      input range differs from ``model.input_range``.
    FileNotFoundError, ValueError: no such directory, or an unreadable one.
  """
  path = config.teacher
  tokenizer, tconfig, _ = load_lib.load(path)
  m = config.model
  size = int(config.image_size)
  if tokenizer.quantizer.index_depth is not None or tokenizer.quantizer.scale_schedule is not None:
    raise _fail(path, "its quantizer gives several ids per position; a teacher needs one code id per position")
  want = int(m.proxy_codebook_size)
  if tokenizer.quantizer.codebook_size != want:
    raise _fail(
      path, f"it has {tokenizer.quantizer.codebook_size} codes, model.proxy_codebook_size is {want}: they must agree"
    )
  try:
    grid = tuple(tokenizer.encoder.latent_shape(size, size))
  except ValueError as e:
    raise _fail(path, f"it cannot encode image_size={size} images ({e})") from None
  if not student.has_proxy_codes:
    raise _fail(path, "the model's decoder predicts no proxy codes (model.proxy_codebook_size = 0)")
  want_grid = (student.decoder.vit.grid,) * 2
  if grid != want_grid:
    raise _fail(path, f"its code grid at {size}px is {grid}, the decoder predicts {want_grid}")
  if tuple(tconfig.model.input_range) != tuple(m.input_range):
    raise _fail(
      path,
      f"its input_range {tuple(tconfig.model.input_range)} differs from model.input_range {tuple(m.input_range)}"
      " (its decoder becomes the student's pixel decoder)",
    )
  graphdef, state = nnx.split(tokenizer)
  return Teacher(graphdef, path), state.to_pure_dict(), tokenizer


def codes(teacher: Teacher, arrays: Any, images: jax.Array) -> jax.Array:
  """The teacher's code ids of ``images`` ([-1, 1]), int32 (B, h, w); no gradient."""
  model = nnx.merge(teacher.graphdef, arrays)
  return jax.lax.stop_gradient(model.encode(jax.lax.stop_gradient(images)))


def fill_proxy_decoder(student: nnx.Module, teacher: nnx.Module, path: str) -> None:
  """Copies the teacher's code vectors and decoder into the student's ``decoder.codebook`` and ``decoder.pixel``."""
  ids = jnp.arange(teacher.quantizer.codebook_size, dtype=jnp.int32)
  vectors = teacher.quantizer.indices_to_codes(ids).astype(jnp.float32)
  if teacher.project_out is not None:  # the teacher's decoder reads projected codes
    vectors = teacher.project_out(vectors)
  dec = student.decoder
  if tuple(vectors.shape) != tuple(dec.codebook.shape):
    raise _fail(path, f"its code vectors are {tuple(vectors.shape)}, decoder.codebook is {tuple(dec.codebook.shape)}")
  src, dst = files.shapes(teacher.decoder, nnx.Param), files.shapes(dec.pixel, nnx.Param)
  if src.keys() != dst.keys():
    missing = sorted(dst.keys() - src.keys()) or sorted(src.keys() - dst.keys())
    raise _fail(path, f"its decoder does not match model.proxy_decoder (first differing parameter: {missing[0]})")
  for k in src:
    if src[k] != dst[k]:
      raise _fail(path, f"its decoder's {k} is {src[k]}, model.proxy_decoder's is {dst[k]}")
  dec.codebook[...] = vectors
  nnx.update(dec.pixel, nnx.state(teacher.decoder, nnx.Param))


def proxy_code_loss(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean cross-entropy of ``logits`` (..., n) against int ids (...), and the top-1 accuracy."""
  logits = logits.astype(jnp.float32)
  ce = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None].astype(jnp.int32), axis=-1)
  acc = jnp.mean((jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32))
  return jnp.mean(ce), acc
