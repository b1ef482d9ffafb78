"""What a tokenizer's tokens carry beyond pixels: feature agreement with a teacher, and a k-NN probe.

Two measures for semantic tokenizers (issue 26: latents aligned with a frozen
vision foundation model):

* ``feature_cosine``: with a feature teacher (``config.feature_teacher``) and a
  tokenizer trained to predict its features (``model.feature_dim``,
  ``Tokenizer.project_features``), the mean cosine similarity between the
  tokenizer's projected quantised latents and the teacher's patch features,
  position by position, over the evaluated images. 1 is perfect agreement.
* ``knn_probe``: top-1 accuracy of a weighted k-NN classifier on the
  tokenizer's quantised latents, mean-pooled over positions and l2-normalised
  (the codes a generator reads), as DINO's ``eval_knn.py`` scores features
  (cosine similarity, the k nearest vote with weight ``exp(sim / T)``, k = 20,
  T = 0.07). Labels come from a folder of class subfolders
  (``root/<class>/<image>``) or a TFDS dataset's ``label`` feature. With one
  labelled set every image is classified by the others (leave-one-out); with
  two, the second's images are classified by the first's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vqtok import feature_teacher, files
from vqtok.data import pipeline
from vqtok.data import sources as sources_lib
from vqtok.losses import alignment

#: DINO's k-NN defaults (dino/eval_knn.py: nb_knn 20, temperature 0.07).
KNN_K = 20
KNN_TEMPERATURE = 0.07


def pooled_latents(tokenizer: nnx.Module, images: jax.Array) -> jax.Array:
  """(B, code_dim) float32: each image's quantised latents (``indices_to_codes(encode)``) averaged over positions."""
  z = tokenizer.quantizer.indices_to_codes(tokenizer.encode(images)).astype(jnp.float32)
  return z.reshape(z.shape[0], -1, z.shape[-1]).mean(axis=1)


def knn_predict(
  bank: np.ndarray,
  bank_labels: np.ndarray,
  queries: np.ndarray,
  *,
  k: int = KNN_K,
  temperature: float = KNN_TEMPERATURE,
  leave_one_out: bool = False,
) -> np.ndarray:
  """Weighted k-NN labels of ``queries`` (n, d) from ``bank`` (m, d) with ``bank_labels`` (m,), cosine similarity.

  ``leave_one_out``: the queries are the bank itself, and no image votes for
  itself. ``k`` is capped at the number of candidates.
  """
  unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  sim = unit(np.asarray(queries, np.float64)) @ unit(np.asarray(bank, np.float64)).T
  if leave_one_out:
    np.fill_diagonal(sim, -np.inf)
  k = min(k, bank.shape[0] - int(leave_one_out))
  if k < 1:
    raise ValueError("the k-NN probe needs at least 2 labelled images")
  top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
  weights = np.exp(np.take_along_axis(sim, top, axis=1) / temperature)
  classes = int(bank_labels.max()) + 1
  votes = np.zeros((len(queries), classes))
  np.add.at(votes, (np.arange(len(queries))[:, None], bank_labels[top]), weights)
  return votes.argmax(axis=1)


@dataclasses.dataclass
class Labelled:
  """Pooled latents of a labelled image set, in source order."""

  features: np.ndarray  # (n, code_dim)
  labels: np.ndarray  # (n,) int
  classes: list[str]
  skipped: int


def _labels(source: sources_lib.ImageSource) -> tuple[list[str], Any]:
  """``(class names, source indices -> labels)`` of a labelled source."""
  if isinstance(source, sources_lib.ImageFolderSource):
    classes, table = source.subfolder_labels()
    return classes, lambda idx: table[idx]
  if isinstance(source, sources_lib.TfdsSource):
    classes = source.label_classes("label")
    if classes is None:
      raise ValueError(f"TFDS dataset {source.name!r} has no 'label' feature for the k-NN probe")
    return list(classes), lambda idx: np.asarray([source.label(int(i), "label") for i in idx])
  raise ValueError("the k-NN probe needs labelled images: a folder of class subfolders or a TFDS dataset")


def labelled_latents(
  config: ml_collections.ConfigDict, tokenizer: nnx.Module, spec: str, *, batch_size: int, num_images: int | None
) -> Labelled:
  """Pooled latents and labels of ``spec``: a folder of class subfolders, or ``tfds:NAME[:SPLIT]``.

  Unreadable images are counted and left out, as in the rest of the evaluation.
  """
  c = ml_collections.ConfigDict(config.to_dict())
  named = sources_lib.tfds_spec(spec, "validation")
  if named:
    c.data.update(source="tfds", name=named[0], eval_split=named[1])
  else:
    c.data.update(source="folder", path=spec, eval_split="")
  batches = pipeline.make_dataset(c, split="eval", batch_size=batch_size, num_images=num_images)
  classes, label_of = _labels(batches.source)
  gdef, params, rest = files.pure(tokenizer)
  pool = jax.jit(lambda p, r, x: pooled_latents(nnx.merge(gdef, p, r), x))
  feats, labels = [], []
  for batch in batches:
    valid = np.asarray(batch["valid"]).astype(bool)
    if not valid.any():
      continue
    out = np.asarray(pool(params, rest, jnp.asarray(batch["image"])))
    feats.append(out[valid])
    labels.append(np.asarray(label_of(np.asarray(batch["index"])[valid]), np.int64))
  if not feats:
    raise ValueError(f"the k-NN probe set {spec!r} yielded no readable images")
  return Labelled(np.concatenate(feats), np.concatenate(labels), classes, len(batches.source.skipped))


def knn_probe(
  config: ml_collections.ConfigDict,
  tokenizer: nnx.Module,
  train: str,
  test: str = "",
  *,
  batch_size: int,
  num_images: int | None = None,
  k: int = KNN_K,
) -> dict[str, Any]:
  """The k-NN probe's report: top-1 accuracy on ``test`` from ``train`` (or leave-one-out on ``train`` alone)."""
  bank = labelled_latents(config, tokenizer, train, batch_size=batch_size, num_images=num_images)
  if test:
    queries = labelled_latents(config, tokenizer, test, batch_size=batch_size, num_images=num_images)
    if queries.classes != bank.classes:
      raise ValueError(f"the k-NN probe's sets name different classes: {train!r} and {test!r}")
    predicted = knn_predict(bank.features, bank.labels, queries.features, k=k)
  else:
    queries = bank
    predicted = knn_predict(bank.features, bank.labels, bank.features, k=k, leave_one_out=True)
  return {
    "accuracy": float(np.mean(predicted == queries.labels)),
    "chance": float(np.max(np.bincount(queries.labels)) / len(queries.labels)),  # always the largest class
    "k": min(k, len(bank.labels) - int(not test)),
    "temperature": KNN_TEMPERATURE,
    "features": "quantised latents, mean-pooled, l2-normalised",
    "train": train,
    "test": test or "leave-one-out",
    "num_train": len(bank.labels),
    "num_test": len(queries.labels),
    "num_classes": len(bank.classes),
    "skipped_images": bank.skipped + (queries.skipped if test else 0),
  }


def feature_cosine_fn(config: ml_collections.ConfigDict, tokenizer: nnx.Module):
  """``(params, rest, x) -> (B,)`` per-image mean cosine between projected latents and the teacher's patches.

  Raises:
    ValueError: no ``model.feature_dim`` projection; the teacher does not fit
      the tokenizer (``feature_teacher.load_for``'s checks).
  """
  if getattr(tokenizer, "feature_proj", None) is None:
    raise ValueError("feature agreement needs a tokenizer with model.feature_dim > 0 (trained with a feature loss)")
  teacher, arrays = feature_teacher.load_for(config, tokenizer)
  gdef = files.pure(tokenizer)[0]
  resize = config.loss.get("vf_resize", "bilinear")

  def cosine(params, rest, x):
    model = nnx.merge(gdef, params, rest)
    z = model.quantizer.indices_to_codes(model.encode(x))
    target = feature_teacher.batch_features(teacher, arrays, x, resize)
    return jnp.mean(alignment.cosines(model.project_features(z), target, alignment.COSINE_EPS), axis=1)

  return jax.jit(cosine)
