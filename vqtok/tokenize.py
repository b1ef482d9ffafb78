"""Encode images to token files, and decode token files back to images.

  python -m vqtok.tokenize encode --tokenizer=runs/tiny --output=tokens/ \\
      [--folder=DIR | --tfds=NAME --split=validation | (held-out sample photos)]
  python -m vqtok.tokenize decode --tokenizer=runs/tiny --tokens=tokens/ --output=decoded/ \\
      [--noreencode] [--overwrite] [--num_scales=K | --num_tokens=K]
  python -m vqtok.tokenize export --tokens=tokens/ --format=llamagen|titok-jsonl --output=OUT \\
      [--dataset=imagenet]

Video (a video tokenizer, ``model.temporal_downsample``):

  python -m vqtok.tokenize encode --tokenizer=runs/video_tiny --output=vtokens/ \\
      [--videos=DIR [--labels=subfolder] | --videos=tfds:ucf101[:test] [--data_dir=D] [--label_key=label]
       | (the held-out sample clip)] \\
      [--num_frames=9 --stride=2 --fps=0 --clips_per_video=1] [--chunk=n]
  python -m vqtok.tokenize decode --tokenizer=runs/video_tiny --tokens=vtokens/ --output=decoded/ \\
      [--format=mp4|png] [--fps=F] [--chunk=n]

Each clip is a row of ``(T', h, w)`` ids (``tokens.py``); the frame rule and
how clips were cut go into ``metadata.json``'s ``video`` block. A frame count
the tokenizer's rule rejects (1 + k*s_T, or k*s_T for a non-causal tokenizer),
an image tokenizer, or videos too short for one clip
are refused before anything is written; unreadable videos (and single videos
too short for a clip) are counted skips. Decoding writes one mp4 per clip
(``sub__a.mp4@0.mp4``: the clip's name flattened) or a folder of PNG frames
(``sub__a.mp4@0/00000.png``), the mp4s at ``--fps`` (default: the encode's
``fps``, or else the videos' own rate when they share one, over ``stride``;
otherwise 25).

Token files are plain NumPy ``.npz`` shards that a downstream trainer reads
without vqtok: ``indices`` (int32, ``(n, *token_shape)``, plus a trailing axis
for residual/grouped quantizers; ``(n, num_tokens)`` in scale order for
multi-scale ones, with ``scales`` in ``metadata.json``), ``names`` (the
image's path or id) and ``source_index``; ``metadata.json`` holds the codebook size, token shape, the
tokenizer's config and its checkpoint step, and which tokenizer wrote them
(``tokenizer``: ``tokenizer_fingerprint`` plus its path). Each shard is written
to a temporary name and renamed, so an interrupted run leaves only whole
shards, and rerunning the same command continues with the next shard; another
tokenizer's token directory is refused.

Multi-host (``--multihost``, or ``--coordinator_address``/``--num_processes``/
``--process_id``): every process encodes its own share of the images on its
own devices and writes its own shards, ``tokens-XXXXX-pNNN.npz`` for process
NNN; a rerun continues each process where it stopped. The directory must be
resumed with the same number of processes. Rows carry ``names`` and
``source_index``, so sorting by either gives the one-process order.

``export`` writes token files with class labels in the layouts PyTorch
generator trainers read as they are (``vqtok/token_exports.py``): LlamaGen's
code directory or 1d-tokenizer's ``pretokenized.jsonl``. It needs no
tokenizer.

Decoding checks everything before it writes a pixel: the recorded tokenizer
against the decoding one, the token grid, the index range, the output folder
(one that holds files is used only with ``--overwrite``) and the PNG names
(``sub/a.jpg`` becomes ``sub__a.jpg.png``, ``a.png`` stays ``a.png``; two
names that meet are refused).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from flax import nnx

from vqtok import cli, files, sharding, token_exports
from vqtok import config as config_lib
from vqtok import data as data_lib
from vqtok import images as images_lib
from vqtok import load as load_lib
from vqtok import progress as progress_lib
from vqtok import tokens as tokens_lib
from vqtok.data import pipeline
from vqtok.data import video as video_lib

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


def _jit_tokenizer(tokenizer: nnx.Module, method: str, mesh: jax.sharding.Mesh | None = None, **kwargs):
  """``tokenizer.<method>`` compiled once, with the weights as an argument (``kwargs`` fixed).

  With ``mesh``, the weights are copied onto its devices, replicated (a mesh
  of this process's devices runs without the other processes).
  """
  gdef, state = nnx.split(tokenizer)
  if mesh is not None:
    local = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    local_copy = lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a
    # RNG keys (a token drop's, quantizer dropout's) have no NumPy form: they move as they are.
    host = lambda a: local_copy(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else np.asarray(local_copy(a))
    state = jax.tree.map(lambda a: jax.device_put(host(a), local), state)
  fn = jax.jit(lambda st, x: getattr(nnx.merge(gdef, st), method)(x, **kwargs))
  return lambda x: fn(state, x)


def _metadata(
  config: ml_collections.ConfigDict,
  tokenizer,
  step: int,
  source,
  shard_batches: int,
  batch_size: int,
  identity: dict,
  processes: int,
) -> dict:
  q = tokenizer.quantizer
  return {
    "format": tokens_lib.FORMAT,
    "tokenizer": identity,
    "codebook_size": int(q.codebook_size),
    "index_depth": q.index_depth,
    "token_shape": list(tokenizer.token_shape),
    # Multi-scale tokenizers: indices are (n, num_tokens) in scale order, coarse first.
    **({"scales": list(q.scale_schedule), "num_tokens": q.num_tokens} if q.scale_schedule else {}),
    "image_size": int(config.image_size),
    "checkpoint_step": int(step),
    "num_images": len(source),
    "images_per_shard": shard_batches * batch_size,
    "num_processes": processes,
    "source": {k: config.data[k] for k in ("source", "name", "path", "eval_split")},
    "config": json.loads(config.to_json_best_effort()),
  }


def _labeller(source: data_lib.ImageSource, labels: str):
  """``(metadata.json's labels block, source indices -> int32 labels)`` for ``labels`` (``(None, None)`` for none)."""
  if not labels:
    return None, None
  if labels == "subfolder":
    if not isinstance(source, (data_lib.ImageFolderSource, video_lib.VideoFolderSource)):
      raise ValueError(
        "labels from subfolders need --folder or --videos, a folder of class subfolders (root/<class>/<file>)"
      )
    classes, table = source.subfolder_labels()
    return {"from": "subfolder", "classes": classes}, lambda idx: table[idx]
  if labels.startswith("feature:"):
    key = labels.split(":", 1)[1]
    if not isinstance(source, (data_lib.TfdsSource, video_lib.TfdsVideoSource)):
      raise ValueError(f"labels from the feature {key!r} need --tfds or --videos=tfds:NAME, a TFDS dataset")
    classes = source.label_classes(key)
    if classes is None:
      raise ValueError(f"TFDS dataset {source.name!r} has no feature {key!r} to take labels from (--label_key)")
    return {"from": f"feature:{key}", "classes": classes}, lambda idx: np.asarray(
      [source.label(int(i), key) for i in idx], np.int32
    )
  raise ValueError(f"labels={labels!r}: expected 'subfolder', 'feature:KEY' or '' (none)")


def _checked_labels(labels: np.ndarray, block: Mapping, names: list[str]) -> np.ndarray:
  """``labels``, or ValueError naming the first rows whose label is not a known class."""
  bound = len(block["classes"]) or np.iinfo(np.int32).max  # a plain integer feature names no classes
  bad = [n for n, v in zip(names, labels) if not 0 <= v < bound]
  if bad:
    raise ValueError(f"{len(bad)} image(s) have no known label ({block['from']}): {', '.join(bad[:5])}")
  return labels


def _captioner(source: data_lib.ImageSource, captions: str):
  """``(metadata.json's captions block, source indices -> captions)`` for ``captions`` (``(None, None)``: none).

  A captions file must name every image of the source and nothing else:
  checked here, before anything is written.
  """
  if not captions:
    return None, None
  if captions.startswith("feature:"):
    key = captions.split(":", 1)[1]
    if not isinstance(source, data_lib.TfdsSource):
      raise ValueError(f"captions from the feature {key!r} need --tfds, a TFDS dataset")
    if not source.has_text(key):
      raise ValueError(f"TFDS dataset {source.name!r} has no text feature {key!r} to take captions from")
    return {"from": f"feature:{key}"}, lambda idx: [source.text(int(i), key) for i in idx]
  table = tokens_lib.read_captions(captions)
  names = [source.describe(i) for i in range(len(source))]
  missing = [n for n in names if n not in table]
  extra = sorted(set(table) - set(names))
  if missing or extra:
    parts = []
    if missing:
      parts.append(f"{len(missing)} image(s) have no caption: {', '.join(missing[:5])}{', ...' * (len(missing) > 5)}")
    if extra:
      parts.append(f"{len(extra)} caption(s) name no image: {', '.join(extra[:5])}{', ...' * (len(extra) > 5)}")
    raise ValueError(f"{captions} does not match the images ({'; '.join(parts)})")
  digest = hashlib.sha256(json.dumps([table[n] for n in names]).encode()).hexdigest()
  block = {"from": "file", "path": os.path.abspath(captions), "sha256": digest}
  return block, lambda idx: [table[names[int(i)]] for i in idx]


def _caption_identity(block: Mapping | None) -> tuple | None:
  """What must match to resume: the captions' origin and, for a file, its captions (wherever it now lies)."""
  return None if not block else (block["from"], block.get("sha256"))


def _captions_text(block: Mapping | None) -> str:
  if not block:
    return "without captions"
  return f"with the captions of {block['path']}" if block["from"] == "file" else f"with captions from {block['from']}"


def _labels_text(block: Mapping | None) -> str:
  return "without labels" if not block else f"with labels from {block['from']} ({len(block['classes'])} classes)"


def encode_to_files(
  config: ml_collections.ConfigDict,
  tokenizer: nnx.Module,
  step: int,
  output: str,
  *,
  batch_size: int = 16,
  shard_batches: int = 16,
  progress: bool = True,
  tokenizer_metadata: Mapping | None = None,
  tokenizer_path: str | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  labels: str = "",
  views: str = "",
  crop_range: float = 1.1,
  captions: str = "",
  chunk: int | None = None,
) -> dict[str, Any]:
  """Encodes the eval split of ``config.data`` into ``.npz`` token shards.

  With ``config.video.source`` set, the clips it names (``config.video``:
  ``num_frames``, ``stride``, ``fps``, ``clips_per_video``) are encoded by a
  causal video tokenizer instead, one row of ``(T', h, w)`` ids per clip.

  With several processes each encodes its share (the rows the data pipeline
  gives it) on its local devices, independently of the others, into its own
  shards (``shard_name``).

  Args:
    config: the tokenizer's config, with ``config.data`` naming what to encode.
    tokenizer: a trained ``Tokenizer`` (e.g. from ``training.load_tokenizer``).
    step: its checkpoint step, recorded in the metadata.
    output: directory for ``metadata.json`` and ``tokens-XXXXX.npz``.
    batch_size: images per forward pass over all processes (each process
      takes ``batch_size / processes``, a multiple of its device count).
    shard_batches: batches per shard file.
    progress: show a progress bar.
    tokenizer_metadata: the tokenizer directory's metadata (its
      ``source_sha256`` is recorded; see ``tokenizer_fingerprint``).
    tokenizer_path: where the tokenizer was loaded from (recorded for messages).
    process_index: this process (default ``jax.process_index()``).
    process_count: the number of processes (default ``jax.process_count()``).
    labels: store each row's class label: ``"subfolder"`` (a folder of class
      subfolders) or ``"feature:KEY"`` (a TFDS integer feature); ``""`` for none.
    views: ``""`` (one view), ``"flip"`` or ``"ten_crop"`` (``tokens.VIEWS``):
      indices get a views axis after the rows, named in ``metadata.json``.
    crop_range: ``ten_crop``: the images are resized and center-cropped to
      ``int(image_size * crop_range)`` before the crops are taken.
    captions: store each row's caption: a JSON-lines file of ``{"name",
      "caption"}`` matched by the rows' names (``tokens.read_captions``), or
      ``"feature:KEY"`` (a TFDS text feature); ``""`` for none.
    chunk: video: encode ``chunk`` latent frames at a time (``Tokenizer.encode``);
      the ids are those of the whole encode.

  Returns:
    This process's summary: images encoded now, shards skipped because they
    existed, images skipped as unreadable (with their names).

  Raises:
    ValueError: ``output`` holds tokens of another tokenizer, run or source,
      or shards without ``metadata.json``; video: an image tokenizer, a frame
      count the tokenizer's rule rejects, no video long enough for one clip;
      images: a non-causal video tokenizer.
  """
  p = jax.process_index() if process_index is None else int(process_index)
  n = jax.process_count() if process_count is None else int(process_count)
  mesh = sharding.make_mesh((-1, 1), devices=jax.local_devices())
  if batch_size % n or (batch_size // n) % mesh.size:
    raise ValueError(f"batch_size={batch_size} must be divisible by {n} process(es) times {mesh.size} local devices")
  video = bool(config.get("video", {}).get("source", ""))
  if video:
    v = config.video
    if views:
      raise ValueError(f"views={views!r} are for images; video clips are encoded as they are")
    video_meta = tokens_lib.video_block(
      tokenizer, num_frames=v.num_frames, stride=v.stride, fps=v.fps or None, clips_per_video=v.clips_per_video
    )
    if chunk is not None:
      _check_chunk(tokenizer, video_meta["num_frames"], chunk)
    source = video_lib.make_video_source(config, "eval")
    source.check_long_enough()
    rates = set(source.rates.values())
    # The videos' own frame rate, when they share one: decode writes mp4s at it (over the stride).
    video_meta["source_fps"] = rates.pop() if len(rates) == 1 else None
  else:
    if chunk is not None:
      raise ValueError(f"chunk={chunk} is for video clips (config.video.source, --videos); these are images")
    if tokenizer.is_video and not tokenizer.causal:
      raise ValueError(
        f"a non-causal video tokenizer (model.causal=False) encodes clips of k*{tokenizer.temporal_factor} frames,"
        " not images: give it videos (--videos)"
      )
    source = data_lib.make_source(config, "eval")
  label_block, label_of = _labeller(source, labels)
  caption_block, caption_of = _captioner(source, captions)
  identity = {**tokens_lib.tokenizer_fingerprint(config, tokenizer_metadata), "path": tokenizer_path}
  meta = _metadata(config, tokenizer, step, source, shard_batches, batch_size, identity, n)
  meta["labels"] = label_block
  meta["captions"] = caption_block
  meta["views"] = tokens_lib.view_names(views)
  if video:
    meta["token_shape"] = [video_meta["latent_frames"], *meta["token_shape"]]
    meta["video"] = {**video_meta, "chunk": chunk}
    meta["source"] = {"source": config.video.source, "path": config.video.path, "eval_split": config.data.eval_split}
  size = int(config.image_size)
  data_config = config
  if views == "ten_crop":
    data_config = config.copy_and_resolve_references()
    data_config.image_size = tokens_lib.crop_size(size, views, crop_range)
    meta["crop_range"] = float(crop_range)
  meta_path = os.path.join(output, "metadata.json")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      old = json.load(f)
    recorded = old.get("tokenizer")
    if recorded is None:
      raise ValueError(
        f"{meta_path} does not record which tokenizer encoded the tokens there (no 'tokenizer' block);"
        " use a new output directory"
      )
    differs = tokens_lib.identity_mismatch(recorded, old.get("config"), identity, config)
    if differs:
      raise ValueError(
        f"{output} holds tokens of another tokenizer ({tokens_lib.path_of(recorded)}; encoding with "
        f"{tokens_lib.path_of(identity)}): {differs}; use a new output directory"
      )
    if old.get("num_processes", 1) != n:
      raise ValueError(
        f"{output} was encoded by {old.get('num_processes', 1)} process(es), this run has {n}; resume it with"
        f" {old.get('num_processes', 1)}, or use a new output directory"
      )
    if (old.get("views"), old.get("crop_range")) != (meta["views"], meta.get("crop_range")):
      raise ValueError(
        f"{output} was encoded with views {old.get('views') or ['image']}; this run asks for"
        f" {meta['views'] or ['image']}: resume it with the same --views, or use a new output directory"
      )
    if _caption_identity(old.get("captions")) != _caption_identity(caption_block):
      raise ValueError(
        f"{output} was encoded {_captions_text(old.get('captions'))}; this run asks for"
        f" {_captions_text(caption_block)}: resume it with the same captions, or use a new output directory"
      )
    if old.get("labels") != label_block:
      raise ValueError(
        f"{output} was encoded {_labels_text(old.get('labels'))}; this run asks for"
        f" {_labels_text(label_block)}: resume it with the same labels, or use a new output directory"
      )
    keys = ("checkpoint_step", "num_images", "images_per_shard", "codebook_size", "token_shape", "source")
    changed = [k for k in keys if old.get(k) != meta[k]]
    if _cutting(old.get("video")) != _cutting(meta.get("video")):  # chunking gives the same ids: resumable
      changed.append("video")
    if changed:
      raise ValueError(
        f"{output} holds tokens from a different run or source ({', '.join(changed)} differ); "
        "use a new output directory"
      )
  elif tokens_lib.shard_files(output):
    raise ValueError(f"{output} holds tokens-*.npz shards but no metadata.json; use a new output directory")
  else:
    # Every process writes it (the same bytes), so a folder that is not shared
    # between hosts gets one too.
    os.makedirs(output, exist_ok=True)
    with files.atomic_path(meta_path, f".tmp{p}") as tmp, open(tmp, "w") as f:
      json.dump(meta, f, indent=2)

  per_shard = shard_batches * batch_size
  num_shards = -(-len(source) // per_shard)
  names = [tokens_lib.shard_name(k, p, n) for k in range(num_shards)]
  # Shards are written in order, so this process's first missing one is where it resumes.
  first = next((k for k in range(num_shards) if not os.path.exists(os.path.join(output, names[k]))), num_shards)
  encode = _jit_tokenizer(tokenizer, "encode", mesh, **({"chunk": chunk} if chunk is not None else {}))
  share = pipeline.eval_share(len(source), batch_size, p, n)
  done_share = pipeline.eval_share(min(first * per_shard, len(source)), batch_size, p, n)
  bar = progress_lib.bar(
    share,
    "encode" if n == 1 else f"encode (process 0 of {n})",
    show=progress and p == 0,
    initial=done_share,
    unit="clip" if video else "img",
  )
  encoded = 0
  t0 = time.perf_counter()
  if first < num_shards:
    view = _Offset(source, first * per_shard)
    batches = pipeline.make_dataset(
      data_config, split="eval", batch_size=batch_size, source=view, process_index=p, process_count=n
    )
    empty = lambda: {"indices": [], "names": [], "source_index": [], "labels": [], "captions": []}
    shard, rows = first, empty()
    codebook_size = meta["codebook_size"]

    def dispatched():
      """(batch, its indices still on the devices): each batch is sent before the previous one is read back."""
      pending = None
      for batch in batches:
        images = tokens_lib.make_views(np.asarray(batch["image"]), views, size)  # (V, B, S, S, 3)
        x = jax.device_put(images.reshape(-1, *images.shape[2:]), sharding.batch_sharding(mesh))
        current = (batch, images.shape[0], encode(x))
        if pending is not None:
          yield pending
        pending = current
      if pending is not None:
        yield pending

    for b, (batch, n_views, ids) in enumerate(dispatched()):
      idx = np.asarray(ids)
      idx = idx.reshape(n_views, -1, *idx.shape[1:]).swapaxes(0, 1) if views else idx  # (B, V, ...)
      valid = np.asarray(batch["valid"]).astype(bool)
      local = np.asarray(batch["index"])[valid]
      rows["indices"].append(idx[valid])
      batch_names = [view.describe(int(i)) for i in local]
      rows["names"].extend(batch_names)
      rows["source_index"].append(local + view.start)
      if caption_of is not None:
        rows["captions"].extend(caption_of(local + view.start))
      if label_of is not None:
        rows["labels"].append(_checked_labels(label_of(local + view.start), label_block, batch_names))
      encoded += int(valid.sum())
      bar.update(int(np.sum(np.asarray(batch["index"]) >= 0)))  # padding rows have index -1
      if (b + 1) % shard_batches == 0:
        tokens_lib.write_shard(os.path.join(output, names[shard]), rows, codebook_size)
        shard, rows = shard + 1, empty()
    if rows["indices"]:
      tokens_lib.write_shard(os.path.join(output, names[shard]), rows, codebook_size)
  bar.close()
  return {
    "process": p,
    "num_processes": n,
    "encoded": encoded,
    "shards_already_done": first,
    "num_shards": num_shards,
    "seconds": time.perf_counter() - t0,
    "skipped": list(source.skipped),
  }


def _cutting(block: Mapping | None) -> dict | None:
  """A ``video`` block less what does not change the ids (``chunk``), for resuming (blocks written before the
  ``causal`` field are causal)."""
  return None if not block else {"causal": True, **{k: v for k, v in block.items() if k != "chunk"}}


def _check_chunk(tokenizer: nnx.Module, num_frames: int, chunk: int) -> None:
  """The tokenizer's own one-line refusal of ``chunk`` for clips of ``num_frames``, before anything runs."""
  tokenizer._chunks(np.empty((0, int(num_frames), 0, 0, 3), np.uint8), chunk)


def clip_name(name: str, fmt: str) -> str:
  """Where a video row decodes to: ``sub/a.mp4@0`` -> ``sub__a.mp4@0.mp4`` (mp4) or folder ``sub__a.mp4@0`` (png)."""
  flat = name.replace("\\", "__").replace("/", "__").replace(":", "_")
  return flat + ".mp4" if fmt == "mp4" else flat


def png_name(name: str) -> str:
  """The PNG file a token row decodes to: its whole name, path separators flattened.

  ``sub/a.jpg`` -> ``sub__a.jpg.png`` and ``a.png`` -> ``a.png``, so ``a.jpg``
  and ``a.png`` of one folder stay apart.
  """
  flat = name.replace("\\", "__").replace("/", "__").replace(":", "_")
  return flat if flat.endswith(".png") else flat + ".png"


def _check_output(output: str, pngs: list[str], names: np.ndarray, overwrite: bool) -> int:
  """Refuses an output folder that holds files (without ``overwrite``) or PNG names that meet.

  Returns:
    How many of ``pngs`` exist already (to be replaced).
  """
  first: dict[str, str] = {}
  for png, name in zip(pngs, names):
    if png in first:
      raise ValueError(
        f"token names {first[png]!r} and {str(name)!r} both decode to {png}; rename one of the images and encode again"
      )
    first[png] = str(name)
  if os.path.exists(output) and not os.path.isdir(output):
    raise NotADirectoryError(f"--output {output} exists and is not a folder")
  held = sorted(os.listdir(output)) if os.path.isdir(output) else []
  if held and not overwrite:
    shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
    entries = f"{len(held)} {'entry' if len(held) == 1 else 'entries'}"
    raise FileExistsError(
      f"{output} already holds {entries} ({shown}); decode into a new folder, or pass --overwrite"
      " to write there (same-named PNGs are replaced, other files kept)"
    )
  return len(set(held) & set(pngs))


def decode_to_images(
  tokenizer: nnx.Module,
  tokens: str,
  output: str,
  *,
  config: ml_collections.ConfigDict | None = None,
  tokenizer_metadata: Mapping | None = None,
  tokenizer_path: str | None = None,
  overwrite: bool = False,
  batch_size: int = 16,
  reencode: bool = True,
  progress: bool = True,
  num_scales: int | None = None,
  num_tokens: int | None = None,
  fmt: str | None = None,
  fps: float | None = None,
  chunk: int | None = None,
) -> dict[str, Any]:
  """Decodes token shards to PNG files (video token files: mp4s or PNG frames); optionally re-encodes them.

  Nothing is written until every check has passed: the tokenizer that
  encoded the files (with ``config``), the token grid, the index range, the
  output folder and the PNG names.

  Args:
    tokenizer: the tokenizer that made the tokens.
    tokens: a directory written by ``encode_to_files``.
    output: where the PNG files go (``png_name`` of each token name).
    config: the tokenizer's config; with it, the files' recorded tokenizer
      must be this one (files from before that record warn on stderr).
      Without it that check is skipped.
    tokenizer_metadata: the tokenizer directory's metadata (``source_sha256``).
    tokenizer_path: where the tokenizer was loaded from (for messages).
    overwrite: write into a folder that holds files, replacing same-named PNGs.
    batch_size: indices per decode call.
    reencode: encode the decoded images again and report the fraction of
      tokens that come back unchanged (a stability figure).
    progress: show a progress bar.
    num_scales: multi-scale tokenizers: decode from the first ``num_scales``
      scales only (coarse previews); None: all.
    num_tokens: 1-D tokenizers: decode from the first ``num_tokens`` tokens
      (``Tokenizer.decode``); the re-encoded agreement counts those tokens.
    fmt: video token files: ``"mp4"`` (default; one H.264 file a clip,
      ``clip_name``) or ``"png"`` (a folder of frames ``00000.png`` ... a clip);
      image token files: ``"png"`` only.
    fps: video as mp4: the frame rate written (default: the encode's ``fps``,
      or else the videos' shared own rate ``source_fps``, over ``stride``;
      otherwise 25).
    chunk: video: decode ``chunk`` latent frames at a time (``Tokenizer.decode``).
      Re-encoding a video re-encodes its 8-bit frames (before mp4 compression).

  Returns:
    A summary with ``decoded``, ``images``, ``replaced`` (PNGs that existed)
    and, with ``reencode``, ``token_agreement``.

  Raises:
    ValueError: another tokenizer, a grid or index out of place, or two
      names for one PNG; video token files with an image tokenizer or one of
      another frame rule or codebook.
    FileExistsError: ``output`` holds files and ``overwrite`` is False.
  """
  meta, shards = tokens_lib.read_shards(tokens)
  video = meta.get("video") or None
  fmt = fmt or ("mp4" if video else "png")
  if fmt not in ("mp4", "png"):
    raise ValueError(f"format={fmt!r}: decode writes 'png' (images or video frames) or 'mp4' (video)")
  if not video and (fmt != "png" or chunk is not None):
    asked = f"format={fmt!r}" if fmt != "png" else f"chunk={chunk}"
    raise ValueError(f"{asked} is for video token files; {tokens} holds image tokens (decoded to PNGs)")
  tokens_lib.check_video(tokenizer, meta, tokens)
  if video and chunk is not None:
    _check_chunk(tokenizer, video["num_frames"], chunk)
  if video and fmt == "mp4":
    rate = fps or (video.get("fps") or video.get("source_fps") or 25.0 * video["stride"]) / video["stride"]
    if not rate > 0:
      raise ValueError(f"fps={fps}: the mp4 frame rate must be positive")
  if meta.get("views"):  # the first view: the image itself, or (ten_crop) its top-left crop
    shards = [(name, idx[:, 0], names) for name, idx, names in shards]
  if config is not None:
    current_path = tokenizer_path or "(path not given)"
    recorded = meta.get("tokenizer")
    if recorded is None:
      raise ValueError(
        f"{tokens}/metadata.json does not record which tokenizer encoded the tokens (no 'tokenizer' block);"
        " encode them again"
      )
    else:
      config = config.copy_and_resolve_references()
      if tokenizer.any_grid and "image_size" in meta:
        config.image_size = int(meta["image_size"])  # a CNN decodes the grid it was given, at any size
      current = tokens_lib.tokenizer_fingerprint(config, tokenizer_metadata)
      differs = tokens_lib.identity_mismatch(recorded, meta.get("config"), current, config)
      if differs:
        raise ValueError(
          f"{tokens} was encoded by tokenizer {tokens_lib.path_of(recorded)}, not by {current_path}: {differs};"
          " decode with the tokenizer that encoded it"
        )
  q = tokenizer.quantizer
  if meta.get("codebook_size", q.codebook_size) != q.codebook_size:
    raise ValueError(
      f"tokens in {tokens} use a codebook of {meta['codebook_size']} codes, the tokenizer has {q.codebook_size}"
    )
  tokens_lib.check_grid(tokenizer, meta, shards, tokens)
  if num_scales is not None and not 1 <= num_scales <= len(q.scale_schedule or ()):
    raise ValueError(f"num_scales={num_scales}: the tokenizer's scale schedule is {list(q.scale_schedule or [])}")
  if num_tokens is not None and not (tokenizer.one_d and 1 <= num_tokens <= tokenizer.num_tokens):
    has = f"{tokenizer.num_tokens} 1-D tokens" if tokenizer.one_d else f"a {tokenizer.token_shape} token grid, not 1-D"
    raise ValueError(f"num_tokens={num_tokens}: the tokenizer has {has} per image")
  indices, names = np.concatenate([s[1] for s in shards]), np.concatenate([s[2] for s in shards])
  q.check_indices(indices)  # a clear error for out-of-range indices
  pngs = [clip_name(str(n), fmt) if video else png_name(str(n)) for n in names]
  replaced = _check_output(output, pngs, names, overwrite)
  os.makedirs(output, exist_ok=True)
  fixed = {"num_scales": num_scales} if num_scales else {"num_tokens": num_tokens} if num_tokens else {}
  chunked = {"chunk": chunk} if chunk is not None else {}
  decode = _jit_tokenizer(tokenizer, "decode", **fixed, **chunked)
  encode = _jit_tokenizer(tokenizer, "encode", **chunked)
  agree = total = decoded = 0
  bar = progress_lib.bar(len(indices), "decode", show=progress, unit="clip" if video else "img")
  for start in range(0, len(indices), batch_size):
    rows = indices[start : start + batch_size]
    n = len(rows)
    images = decode(jnp.asarray(_pad(rows, batch_size)))
    pixels = images_lib.to_uint8(np.clip(np.asarray(images, np.float32), -1, 1))[:n]
    for png, im in zip(pngs[start : start + n], pixels):
      path = os.path.join(output, png)
      if not video:
        images_lib.save_png(im, path)
      elif fmt == "mp4":
        images_lib.save_mp4(im, path, fps=rate)
      else:
        for k, frame in enumerate(im):
          images_lib.save_png(frame, os.path.join(path, f"{k:05d}.png"))
      decoded += 1
    if reencode:
      # Re-encode the 8-bit images actually written, as a user would.
      again = np.asarray(encode(jnp.asarray(data_lib.to_float(_pad(pixels, batch_size)))))[:n]
      kept = rows[:, :num_tokens] if num_tokens else rows
      agree += int(np.sum(again[:, : kept.shape[1]] == kept))
      total += kept.size
    bar.update(n)
  bar.close()
  out = {"decoded": decoded, ("clips" if video else "images"): len(indices), "replaced": replaced}
  if video:
    out["format"] = fmt
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
  flags.DEFINE_integer("image_size", None, "encode: resize to this size (CNN tokenizers; default: the config's).")
  flags.DEFINE_string("output", None, "encode: token directory; decode: image directory.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  flags.DEFINE_bool("raw", False, "Use the raw weights, not the EMA weights.")
  flags.DEFINE_integer("batch_size", 16, "Images per forward pass.")
  flags.DEFINE_string("folder", None, "encode: every image under this folder.")
  flags.DEFINE_string(
    "videos", None, "encode: clips of every video under this folder, or of tfds:NAME[:SPLIT] (a video tokenizer)."
  )
  flags.DEFINE_integer(
    "num_frames", None, "encode video: frames per clip, 1 + k*s_T (non-causal: k*s_T; default: the config's)."
  )
  flags.DEFINE_integer("stride", None, "encode video: step between clip frames (default: the config's).")
  flags.DEFINE_float("fps", None, "encode video: resample to this rate first (0: own frames); decode: the mp4 rate.")
  flags.DEFINE_integer("clips_per_video", None, "encode video: non-overlapping clips from each video.")
  flags.DEFINE_integer("chunk", None, "encode/decode video: latent frames at a time (the same ids, less memory).")
  flags.DEFINE_string("tfds", None, "encode: a TFDS dataset by name.")
  flags.DEFINE_string("split", "validation", "encode: TFDS split (with --tfds).")
  flags.DEFINE_string("data_dir", "", "encode: TFDS data_dir (with --tfds or --videos=tfds:NAME).")
  flags.DEFINE_integer("shard_batches", 16, "encode: batches per token file.")
  flags.DEFINE_enum(
    "labels", "", ["", "subfolder"], "encode --folder/--videos: subfolder = class labels from class subfolders."
  )
  flags.DEFINE_enum("views", "", ["", "flip", "ten_crop"], "encode: store these views of each image too.")
  flags.DEFINE_float("crop_range", 1.1, "encode --views=ten_crop: resize to this times the size, then crop.")
  flags.DEFINE_string("captions", None, 'encode: a JSON-lines file of {"name": ..., "caption": ...} per image.')
  flags.DEFINE_string("caption_key", None, "encode --tfds: a text feature stored as each row's caption.")
  flags.DEFINE_string(
    "label_key", "label", "encode --tfds or --videos=tfds:NAME: the class-label feature to store ('' for none)."
  )
  flags.DEFINE_string("tokens", None, "decode, export: a directory written by encode.")
  flags.DEFINE_enum(
    "format",
    None,
    [*token_exports.FORMATS, *_DECODE_FORMATS],
    "export: the layout to write; decode: png (images, video frames) or mp4 (video; the default for it).",
  )
  flags.DEFINE_string("dataset", "imagenet", "export --format=llamagen: the name in OUT/<dataset><size>_codes.")
  flags.DEFINE_bool("reencode", True, "decode: re-encode the PNGs and report token agreement.")
  flags.DEFINE_integer("num_scales", None, "decode: multi-scale tokenizers: use only the first k scales.")
  flags.DEFINE_integer("num_tokens", None, "decode: 1-D tokenizers (TiTok): decode from the first k tokens.")
  flags.DEFINE_bool("overwrite", False, "decode: write into a folder that holds files, replacing same-named PNGs.")
  cli.define_distributed_flags()


_COMMANDS = ("encode", "decode", "export")
_DECODE_FORMATS = ("png", "mp4")
_VIDEO_FLAGS = ("num_frames", "stride", "fps", "clips_per_video")


def _captions_flag() -> str:
  """``encode_to_files``'s ``captions`` from ``--captions`` and ``--caption_key``."""
  if FLAGS.captions and FLAGS.caption_key:
    raise cli.UsageError("give --captions or --caption_key, not both")
  if FLAGS.caption_key:
    if not FLAGS.tfds:
      raise cli.UsageError("--caption_key names a text feature of a TFDS dataset: it needs --tfds")
    return f"feature:{FLAGS.caption_key}"
  if FLAGS.captions and not os.path.isfile(FLAGS.captions):
    raise FileNotFoundError(f"--captions={FLAGS.captions}: no such file")
  return FLAGS.captions or ""


def _tfds_videos() -> tuple[str, str] | None:
  """``(name, split)`` of ``--videos=tfds:NAME[:SPLIT]`` (split ``test`` by default); None for a folder or no videos."""
  return data_lib.tfds_spec(FLAGS.videos, "test")


def _labels_flag() -> str:
  """``encode_to_files``'s ``labels`` from ``--labels`` and ``--label_key``."""
  if FLAGS.labels == "subfolder":
    if not (FLAGS.folder or FLAGS.videos):
      raise cli.UsageError(
        "--labels=subfolder needs --folder or --videos, a folder of class subfolders (root/<class>/<file>)"
      )
    return "subfolder"
  videos = _tfds_videos()
  if not (FLAGS.tfds or videos) or not FLAGS.label_key:
    if FLAGS["label_key"].present and FLAGS.label_key:
      raise cli.UsageError("--label_key names a feature of a TFDS dataset: it needs --tfds or --videos=tfds:NAME")
    return ""
  if FLAGS["label_key"].present:
    return f"feature:{FLAGS.label_key}"
  # The default key: stored when the dataset has it.
  name, split, key = (*videos, "video") if videos else (FLAGS.tfds, FLAGS.split, "image")
  source = data_lib.TfdsSource(name, split=split, data_dir=FLAGS.data_dir or None, image_key=key)
  return f"feature:{FLAGS.label_key}" if source.label_classes(FLAGS.label_key) is not None else ""


def _select_videos(config: ml_collections.ConfigDict, tokenizer: nnx.Module) -> None:
  """Points ``config.video`` at ``--videos`` and the clip flags; ``--folder``/``--tfds`` mean images.

  A video tokenizer's config names its clips already (``video.source``): with
  no data flag those are encoded (the held-out sample clip for the presets).
  The frame rule is checked here, so that a bad ``--num_frames`` is refused
  in the tokenizer's words before the config is validated.
  """
  if FLAGS.videos and (FLAGS.folder or FLAGS.tfds):
    raise cli.UsageError("give --videos (video clips) or --folder/--tfds (images), not both")
  if FLAGS.folder or FLAGS.tfds:
    config.video.source = ""
  if tfds_videos := _tfds_videos():
    name, split = tfds_videos
    config.video.update(source="tfds", name=name, path=FLAGS.data_dir or "", fps=0.0)
    config.data.eval_split = split
  elif FLAGS.videos:
    if not os.path.isdir(FLAGS.videos):
      raise cli.UsageError(f"--videos={FLAGS.videos}: no such folder")
    config.video.update(source="folder", path=FLAGS.videos)
    config.data.eval_split = ""
  given = [n for n in _VIDEO_FLAGS if FLAGS[n].value is not None]
  if not config.video.source:
    if given or FLAGS.chunk is not None:
      name = given[0] if given else "chunk"
      raise cli.UsageError(f"--{name} is for video clips (--videos, with a video tokenizer)")
    return
  for name in given:
    config.video[name] = FLAGS[name].value
  v = config.video
  tokens_lib.video_block(tokenizer, num_frames=v.num_frames, stride=v.stride, fps=v.fps, clips_per_video=1)


def main(argv: list[str]) -> int:
  """Command line: ``encode``, ``decode`` and ``export`` (see the module docstring)."""
  if len(argv) != 2 or argv[1] not in _COMMANDS:
    raise cli.UsageError(f"give one command, encode, decode or export; got {argv[1:]}")
  command = argv[1]
  if command == "export" and FLAGS.format in _DECODE_FORMATS:
    raise cli.UsageError(f"export --format is one of {', '.join(token_exports.FORMATS)}; {FLAGS.format} is for decode")
  if command == "decode" and FLAGS.format not in (None, *_DECODE_FORMATS):
    raise cli.UsageError(f"decode --format is png or mp4; {FLAGS.format} is for export")
  if command == "export":
    missing = [f"--{n}" for n in ("tokens", "format", "output") if FLAGS[n].value is None]
    if missing:
      raise cli.UsageError(f"export needs {', '.join(missing)}")
    if FLAGS.multihost or FLAGS.coordinator_address:
      raise cli.UsageError("export runs in one process; drop the multi-process flags")
    summary = token_exports.export(FLAGS.tokens, FLAGS.output, FLAGS.format, dataset=FLAGS.dataset)
    print(json.dumps(summary, indent=2))
    return 0
  source = FLAGS.tokenizer
  required = ["output"] + (["tokens"] if command == "decode" else [])
  missing = ([] if source else ["--tokenizer"]) + [f"--{n}" for n in required if FLAGS[n].value is None]
  if missing:
    raise cli.UsageError(f"{command} needs {', '.join(missing)}")
  if command == "encode":
    cli.start_distributed()
  elif FLAGS.multihost or FLAGS.coordinator_address:
    raise cli.UsageError("decode runs in one process; drop the multi-process flags")
  tokenizer, config, info = load_lib.load(source, use_ema=not FLAGS.raw, step=FLAGS.step)
  step = info["step"]
  identity = {"tokenizer_metadata": info["metadata"], "tokenizer_path": os.path.abspath(source)}
  if FLAGS.image_size:
    if not tokenizer.any_grid:
      raise cli.UsageError(
        "--image_size applies to CNN tokenizers only (a ViT's size, or FQGAN's adapter grid, is fixed by its"
        f" weights: {tokenizer.image_size} px)"
      )
    config.image_size = tokenizer.image_size = int(FLAGS.image_size)
  if command == "encode":
    _select_videos(config, tokenizer)
    cli.select_data(config, folder=FLAGS.folder, tfds=FLAGS.tfds, split=FLAGS.split, data_dir=FLAGS.data_dir)
    config_lib.validate_config(config, check_paths=False)  # the folder is checked by its source
    summary = encode_to_files(
      config,
      tokenizer,
      step,
      FLAGS.output,
      batch_size=FLAGS.batch_size,
      shard_batches=FLAGS.shard_batches,
      labels=_labels_flag(),
      views=FLAGS.views,
      crop_range=FLAGS.crop_range,
      captions=_captions_flag(),
      chunk=FLAGS.chunk,
      **identity,
    )
  else:
    summary = decode_to_images(
      tokenizer,
      FLAGS.tokens,
      FLAGS.output,
      config=config,
      overwrite=FLAGS.overwrite,
      batch_size=FLAGS.batch_size,
      reencode=FLAGS.reencode,
      num_scales=FLAGS.num_scales,
      num_tokens=FLAGS.num_tokens,
      fmt=FLAGS.format,
      fps=FLAGS.fps,
      chunk=FLAGS.chunk,
      **identity,
    )
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
