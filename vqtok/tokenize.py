"""Encode images to token files, and decode token files back to images.

  python -m vqtok.tokenize encode --tokenizer=runs/tiny --output=tokens/ \\
      [--folder=DIR | --tfds=NAME --split=validation | (held-out sample photos)]
  python -m vqtok.tokenize decode --tokenizer=runs/tiny --tokens=tokens/ --output=decoded/ \\
      [--noreencode]

Token files are plain NumPy ``.npz`` shards that a downstream trainer reads
without vqtok: ``indices`` (int32, ``(n, *token_shape)``, plus a trailing axis
for residual/grouped quantizers), ``names`` (the image's path or id) and
``source_index``; ``metadata.json`` holds the codebook size, token shape, the
tokenizer's config and its checkpoint step. Each shard is written to a
temporary name and renamed, so an interrupted run leaves only whole shards,
and rerunning the same command continues with the next shard.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from flax import nnx

from vqtok import cli, sharding
from vqtok import data as data_lib
from vqtok import images as images_lib

FORMAT = "vqtok-tokens-v1"
FLAGS = flags.FLAGS


class _Offset(data_lib.ImageSource):
  """The elements of ``base`` from ``start`` on (to resume at a shard boundary)."""

  def __init__(self, base: data_lib.ImageSource, start: int):
    super().__init__()
    self.base, self.start = base, start
    self.skipped = base.skipped

  def __len__(self) -> int:
    return max(len(self.base) - self.start, 0)

  def __getitem__(self, index: int) -> np.ndarray:
    return self.base[self._check_index(index) + self.start]

  def describe(self, index: int) -> str:
    return self.base.describe(int(index) + self.start)

  def record_failure(self, index: int, reason: str) -> None:
    self.base.record_failure(int(index) + self.start, reason)


def _jit_tokenizer(tokenizer: nnx.Module, method: str):
  """``tokenizer.<method>`` compiled once, with the weights as an argument."""
  gdef, state = nnx.split(tokenizer)
  fn = jax.jit(lambda st, x: getattr(nnx.merge(gdef, st), method)(x))
  return lambda x: fn(state, x)


def _write_npz(path: str, **arrays: np.ndarray) -> None:
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _metadata(
  config: ml_collections.ConfigDict, tokenizer, step: int, source, shard_batches: int, batch_size: int
) -> dict:
  q = tokenizer.quantizer
  return {
    "format": FORMAT,
    "codebook_size": int(q.codebook_size),
    "index_depth": q.index_depth,
    "token_shape": list(tokenizer.token_shape),
    "image_size": int(config.image_size),
    "checkpoint_step": int(step),
    "num_images": len(source),
    "images_per_shard": shard_batches * batch_size,
    "source": {k: config.data[k] for k in ("source", "name", "path", "eval_split")},
    "config": json.loads(config.to_json_best_effort()),
  }


def encode_to_files(
  config: ml_collections.ConfigDict,
  tokenizer: nnx.Module,
  step: int,
  output: str,
  *,
  batch_size: int = 16,
  shard_batches: int = 16,
  progress: bool = True,
) -> dict[str, Any]:
  """Encodes the eval split of ``config.data`` into ``.npz`` token shards.

  Args:
    config: the tokenizer's config, with ``config.data`` naming what to encode.
    tokenizer: a trained ``Tokenizer`` (e.g. from ``training.load_tokenizer``).
    step: its checkpoint step, recorded in the metadata.
    output: directory for ``metadata.json`` and ``tokens-XXXXX.npz``.
    batch_size: images per forward pass (a multiple of the device count).
    shard_batches: batches per shard file.
    progress: show a progress bar.

  Returns:
    A summary: images encoded now, shards skipped because they existed,
    images skipped as unreadable (with their names).
  """
  from tqdm.auto import tqdm  # noqa: PLC0415

  mesh = sharding.make_mesh((-1, 1))
  if batch_size % mesh.size:
    raise ValueError(f"batch_size={batch_size} must be divisible by {mesh.size} devices")
  os.makedirs(output, exist_ok=True)
  source = data_lib.make_source(config, "eval")
  meta = _metadata(config, tokenizer, step, source, shard_batches, batch_size)
  meta_path = os.path.join(output, "metadata.json")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      old = json.load(f)
    keys = ("checkpoint_step", "num_images", "images_per_shard", "codebook_size", "token_shape", "source")
    changed = [k for k in keys if old.get(k) != meta[k]]
    if changed:
      raise ValueError(
        f"{output} holds tokens from a different run or source ({', '.join(changed)} differ); "
        "use a new output directory"
      )
  else:
    tmp = meta_path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(meta, f, indent=2)
    os.replace(tmp, meta_path)

  per_shard = shard_batches * batch_size
  num_shards = -(-len(source) // per_shard)
  done = [k for k in range(num_shards) if os.path.exists(os.path.join(output, f"tokens-{k:05d}.npz"))]
  # Shards are written in order, so the first missing one is where to resume.
  first = next((k for k in range(num_shards) if k not in done), num_shards)
  encode = _jit_tokenizer(tokenizer, "encode")
  bar = tqdm(
    total=len(source),
    initial=min(first * per_shard, len(source)),
    disable=not progress,
    desc="encode",
    unit="img",
    dynamic_ncols=True,
    file=sys.stdout,
  )
  encoded = 0
  t0 = time.perf_counter()
  if first < num_shards:
    view = _Offset(source, first * per_shard)
    batches = data_lib.make_dataset(
      config, split="eval", batch_size=batch_size, source=view, process_index=0, process_count=1
    )
    shard, rows = first, {"indices": [], "names": [], "source_index": []}
    for b, batch in enumerate(batches):
      x = sharding.global_batch({"image": batch["image"]}, mesh)["image"]
      idx = np.asarray(encode(x))
      valid = np.asarray(batch["valid"]).astype(bool)
      local = np.asarray(batch["index"])[valid]
      rows["indices"].append(idx[valid].astype(np.int32))
      rows["names"].extend(view.describe(int(i)) for i in local)
      rows["source_index"].append(local + view.start)
      encoded += int(valid.sum())
      bar.update(int(np.sum(np.asarray(batch["index"]) >= 0)))  # padding rows have index -1
      if (b + 1) % shard_batches == 0:
        _flush(output, shard, rows)
        shard, rows = shard + 1, {"indices": [], "names": [], "source_index": []}
    if rows["indices"]:
      _flush(output, shard, rows)
  bar.close()
  return {
    "encoded": encoded,
    "shards_already_done": first,
    "num_shards": num_shards,
    "seconds": time.perf_counter() - t0,
    "skipped": list(source.skipped),
  }


def _flush(output: str, shard: int, rows: dict) -> None:
  _write_npz(
    os.path.join(output, f"tokens-{shard:05d}.npz"),
    indices=np.concatenate(rows["indices"]),
    names=np.asarray(rows["names"], dtype=str),
    source_index=np.concatenate(rows["source_index"]).astype(np.int64),
  )


def read_tokens(directory: str) -> tuple[dict, np.ndarray, np.ndarray]:
  """Reads a token directory: (metadata, indices, names), shards concatenated."""
  with open(os.path.join(directory, "metadata.json")) as f:
    meta = json.load(f)
  files = sorted(f for f in os.listdir(directory) if f.startswith("tokens-") and f.endswith(".npz"))
  if not files:
    raise FileNotFoundError(f"no tokens-*.npz shards in {directory}")
  idx, names = [], []
  for name in files:
    with np.load(os.path.join(directory, name)) as z:
      idx.append(z["indices"])
      names.extend(z["names"].tolist())
  return meta, np.concatenate(idx), np.asarray(names)


def _png_name(name: str) -> str:
  stem = os.path.splitext(name.replace(os.sep, "__").replace(":", "_").replace("/", "__"))[0]
  return stem + ".png"


def decode_to_images(
  tokenizer: nnx.Module, tokens: str, output: str, *, batch_size: int = 16, reencode: bool = True, progress: bool = True
) -> dict[str, Any]:
  """Decodes token shards to PNG files; optionally re-encodes them.

  Args:
    tokenizer: the tokenizer that made the tokens (codebook must match).
    tokens: a directory written by ``encode_to_files``.
    output: where ``<name>.png`` files go (existing ones are kept: resumable).
    batch_size: indices per decode call.
    reencode: encode the decoded images again and report the fraction of
      tokens that come back unchanged (a stability figure).
    progress: show a progress bar.

  Returns:
    A summary with ``decoded`` and, with ``reencode``, ``token_agreement``.
  """
  from tqdm.auto import tqdm  # noqa: PLC0415

  meta, indices, names = read_tokens(tokens)
  q = tokenizer.quantizer
  if meta["codebook_size"] != q.codebook_size:
    raise ValueError(
      f"tokens in {tokens} use a codebook of {meta['codebook_size']} codes, the tokenizer has {q.codebook_size}"
    )
  q.check_indices(indices)  # a clear error for out-of-range indices
  os.makedirs(output, exist_ok=True)
  decode = _jit_tokenizer(tokenizer, "decode")
  encode = _jit_tokenizer(tokenizer, "encode")
  agree = total = decoded = 0
  bar = tqdm(total=len(indices), disable=not progress, desc="decode", unit="img", dynamic_ncols=True, file=sys.stdout)
  for start in range(0, len(indices), batch_size):
    chunk = indices[start : start + batch_size]
    n = len(chunk)
    images = decode(jnp.asarray(_pad(chunk, batch_size)))
    pixels = images_lib.to_uint8(np.clip(np.asarray(images, np.float32), -1, 1))[:n]
    for name, im in zip(names[start : start + n], pixels):
      path = os.path.join(output, _png_name(str(name)))
      if not os.path.exists(path):
        images_lib.save_png(im, path)
        decoded += 1
    if reencode:
      # Re-encode the 8-bit images actually written, as a user would.
      again = np.asarray(encode(jnp.asarray(data_lib.to_float(_pad(pixels, batch_size)))))[:n]
      agree += int(np.sum(again == chunk))
      total += chunk.size
    bar.update(n)
  bar.close()
  out = {"decoded": decoded, "images": len(indices)}
  if reencode:
    out["token_agreement"] = agree / max(total, 1)
  return out


def _pad(rows: np.ndarray, batch_size: int) -> np.ndarray:
  """Pads a short last batch with zero rows so shapes stay static."""
  n = len(rows)
  if n == batch_size:
    return rows
  return np.concatenate([rows, np.zeros((batch_size - n, *rows.shape[1:]), rows.dtype)])


def _define_flags() -> None:
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string("tokenizer", None, "A tokenizer directory (convert, export) or a training workdir.")
  flags.DEFINE_string("workdir", None, "A training run directory (the same as --tokenizer).")
  flags.DEFINE_integer("image_size", None, "encode: resize to this size (CNN tokenizers; default: the config's).")
  flags.DEFINE_string("output", None, "encode: token directory; decode: image directory.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  flags.DEFINE_bool("raw", False, "Use the raw weights, not the EMA weights.")
  flags.DEFINE_integer("batch_size", 16, "Images per forward pass.")
  flags.DEFINE_string("folder", None, "encode: every image under this folder.")
  flags.DEFINE_string("tfds", None, "encode: a TFDS dataset by name.")
  flags.DEFINE_string("split", "validation", "encode: TFDS split (with --tfds).")
  flags.DEFINE_string("data_dir", "", "encode: TFDS data_dir (with --tfds).")
  flags.DEFINE_integer("shard_batches", 16, "encode: batches per token file.")
  flags.DEFINE_string("tokens", None, "decode: a directory written by encode.")
  flags.DEFINE_bool("reencode", True, "decode: re-encode the PNGs and report token agreement.")


_COMMANDS = ("encode", "decode")


def main(argv: list[str]) -> int:
  """Command line: ``encode`` and ``decode`` (see the module docstring)."""
  from vqtok import config as config_lib  # noqa: PLC0415
  from vqtok import tokenizer_dir  # noqa: PLC0415
  from vqtok.models import cnn  # noqa: PLC0415

  if len(argv) != 2 or argv[1] not in _COMMANDS:
    raise cli.UsageError(f"give one command, encode or decode; got {argv[1:]}")
  command = argv[1]
  if FLAGS.tokenizer and FLAGS.workdir and FLAGS.tokenizer != FLAGS.workdir:
    raise cli.UsageError("give --tokenizer or --workdir, not both")
  source = FLAGS.tokenizer or FLAGS.workdir
  required = ["output"] + (["tokens"] if command == "decode" else [])
  missing = ([] if source else ["--tokenizer"]) + [f"--{n}" for n in required if FLAGS[n].value is None]
  if missing:
    raise cli.UsageError(f"{command} needs {', '.join(missing)}")
  tokenizer, config, info = tokenizer_dir.load(source, use_ema=not FLAGS.raw, step=FLAGS.step)
  step = info["step"]
  if FLAGS.image_size:
    if not isinstance(tokenizer.encoder, cnn.Encoder):
      raise cli.UsageError("--image_size applies to CNN tokenizers only (a ViT's size is fixed by its weights)")
    config.image_size = tokenizer.image_size = int(FLAGS.image_size)
  if command == "encode":
    if FLAGS.folder and FLAGS.tfds:
      raise cli.UsageError("give --folder or --tfds, not both")
    if FLAGS.folder:
      config.data.update(source="folder", path=FLAGS.folder, eval_split="")
    elif FLAGS.tfds:
      config.data.update(source="tfds", name=FLAGS.tfds, path=FLAGS.data_dir, eval_split=FLAGS.split)
    config_lib.validate_config(config)
    summary = encode_to_files(
      config, tokenizer, step, FLAGS.output, batch_size=FLAGS.batch_size, shard_batches=FLAGS.shard_batches
    )
  else:
    summary = decode_to_images(
      tokenizer, FLAGS.tokens, FLAGS.output, batch_size=FLAGS.batch_size, reencode=FLAGS.reencode
    )
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
