"""The train state: every array needed to continue a run exactly.

Modules are split with ``nnx.split`` into a static graph definition and pure
dicts of arrays (parameters; everything else, such as quantizer statistics and
RNG streams). The state below is a plain pytree, so one ``jit`` transforms it,
shardings apply leaf by leaf, and Orbax saves it as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from vqtok import config as config_lib
from vqtok import files, models


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of updates applied
  g_params: Any  # tokenizer nnx.Param values (pure dict)
  g_rest: Any  # tokenizer non-Param variables: quantizer stats, RNG streams
  g_opt: Any  # optax state of the tokenizer optimizer
  d_params: Any
  d_rest: Any
  d_opt: Any
  ema: Any  # EMA of g_params ({} when training.ema_decay == 0)
  lecam: Any  # running means of real / fake discriminator logits


@dataclasses.dataclass(frozen=True)
class Static:
  """What the step function needs besides arrays (hashable, not saved)."""

  g_def: nnx.GraphDef
  d_def: nnx.GraphDef
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  g_schedule: Callable[[Any], jax.Array]
  last_layer: tuple[str, ...]  # path of the decoder's last kernel in g_params
  frozen: tuple[str, ...] = ()  # training.freeze: dotted path prefixes that get no updates
  enc_last_layer: tuple[str, ...] = ()  # path of the encoder's last kernel (VA-VAE's adaptive VF weight)


def is_frozen(name: str, frozen: tuple[str, ...]) -> bool:
  """Whether the dotted parameter ``name`` lies under one of the ``frozen`` prefixes."""
  return any(name == p or name.startswith(p + ".") for p in frozen)


def frozen_mask(tree: Any, frozen: tuple[str, ...]) -> Any:
  """A pytree of bools like ``tree``: True where the leaf belongs to a frozen submodule."""
  return jax.tree_util.tree_map_with_path(lambda path, _: is_frozen(files.name(path), frozen), tree)


def check_freeze(frozen: tuple[str, ...], params: Any) -> None:
  """ValueError naming the first ``training.freeze`` entry that matches no tokenizer parameter."""
  names = [files.name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for prefix in frozen:
    if not any(is_frozen(n, (prefix,)) for n in names):
      tops = sorted({n.split(".")[0] for n in names})
      raise ValueError(
        f"config field training.freeze: {prefix!r} names no parameter of the tokenizer (its modules: {', '.join(tops)})"
      )


def decay_mask(params: Any, no_decay: tuple[str, ...] = ()) -> Any:
  """True where weight decay applies: not on vectors (biases, norm scales), nor where the name holds a ``no_decay``."""
  return jax.tree_util.tree_map_with_path(
    lambda path, p: p.ndim > 1 and not any(s in files.name(path) for s in no_decay), params
  )


def make_optimizer(
  config: ml_collections.ConfigDict, lr: float, *, frozen: tuple[str, ...] = ()
) -> tuple[optax.GradientTransformation, Callable[[Any], jax.Array]]:
  """AdamW with linear warm-up then cosine decay, after global-norm clipping.

  Parameters under a ``frozen`` prefix get zero updates and no optimizer
  state (no moments, no weight decay); the clipping norm counts the others.
  """
  oc = config.optimizer
  total = max(int(config.training.num_steps), oc.warmup_steps + 1)
  schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0, peak_value=lr, warmup_steps=oc.warmup_steps, decay_steps=total, end_value=lr * oc.min_lr_ratio
  )
  parts = []
  if oc.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(oc.grad_clip))
  no_decay = tuple(oc.get("no_decay", ()))
  mask = lambda params: decay_mask(params, no_decay)
  parts.append(optax.adamw(schedule, b1=oc.b1, b2=oc.b2, weight_decay=oc.weight_decay, mask=mask))
  tx = optax.chain(*parts)
  if frozen:
    labels = lambda params: jax.tree.map(lambda f: "frozen" if f else "train", frozen_mask(params, frozen))
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule


def build_modules(config: ml_collections.ConfigDict) -> tuple[nnx.Module, nnx.Module]:
  """Tokenizer and discriminator, freshly initialised from ``config.seed``."""
  rngs = nnx.Rngs(config.seed)
  tokenizer = models.build_tokenizer(config, rngs=rngs)
  disc = models.build_discriminator(config.discriminator, image_size=config.image_size, rngs=nnx.Rngs(config.seed + 1))
  return tokenizer, disc


def _initializer(config: ml_collections.ConfigDict):
  """The init function, plus a dict it fills with the static parts."""
  frozen = config_lib.freeze_prefixes(config)
  g_tx, g_schedule = make_optimizer(config, config.optimizer.lr, frozen=frozen)
  d_tx, _ = make_optimizer(config, config.optimizer.disc_lr)
  defs = {"g_tx": g_tx, "d_tx": d_tx, "g_schedule": g_schedule, "frozen": frozen}

  def init() -> TrainState:
    tokenizer, disc = build_modules(config)
    defs["g_def"], g_params, g_rest = files.pure(tokenizer)
    defs["d_def"], d_params, d_rest = files.pure(disc)
    defs["last_layer"] = tuple(models.last_layer_path(tokenizer))
    defs["enc_last_layer"] = tuple(models.encoder_last_layer_path(tokenizer))
    check_freeze(frozen, g_params)
    ema = g_params if config.training.ema_decay > 0 else {}
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params,
      g_rest=g_rest,
      g_opt=g_tx.init(g_params),
      d_params=d_params,
      d_rest=d_rest,
      d_opt=d_tx.init(d_params),
      ema=jax.tree.map(jnp.copy, ema),
      lecam={"real": jnp.zeros((), jnp.float32), "fake": jnp.zeros((), jnp.float32)},
    )

  return init, defs


def abstract_train_state(config: ml_collections.ConfigDict) -> tuple[TrainState, Static]:
  """Shapes and dtypes of the train state (no allocation), and its statics."""
  init, defs = _initializer(config)
  abstract = jax.eval_shape(init)
  return abstract, Static(**defs)


def init_train_state(
  config: ml_collections.ConfigDict, shardings_fn: Callable[[Any], Any] | None = None
) -> tuple[TrainState, Static]:
  """Builds the train state, placed by ``shardings_fn(abstract_state)``.

  Initialisation runs under ``jit`` with the target output shardings, so with
  FSDP no device ever holds the full state.
  """
  init, defs = _initializer(config)
  abstract = jax.eval_shape(init)
  out_shardings = None if shardings_fn is None else shardings_fn(abstract)
  state = jax.jit(init, out_shardings=out_shardings)()
  return state, Static(**defs)


def tokenizer_from_state(static: Static, state: TrainState, *, use_ema: bool) -> nnx.Module:
  """Rebuilds the tokenizer module (EMA or raw weights) from a train state."""
  params = state.ema if (use_ema and state.ema) else state.g_params
  return nnx.merge(static.g_def, params, state.g_rest)
