"""Name and layout mapping shared by every converter: a family is a table of rules.

A rule pairs a published tensor name (a regular expression), the vqtok
parameter path it fills, and the layout change. ``apply_rules`` checks the
whole mapping: every published tensor is matched by exactly one rule or
ignored on purpose, every vqtok parameter is written exactly once, and every
shape agrees after the layout change. Anything else is a ``CheckpointError``
naming the file and the key, so no parameter is ever left at its random
initialisation.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from vqtok.pretrained.reader import CheckpointError

Layout = Callable[[np.ndarray], np.ndarray]
Target = str | Callable[[re.Match], str]


# ---- layout changes -------------------------------------------------------------------------


def as_is(x: np.ndarray) -> np.ndarray:
  """No change (biases, norm scales, codebooks, Flax kernels)."""
  return x


def conv(x: np.ndarray) -> np.ndarray:
  """PyTorch conv weight (out, in, kh, kw) -> Flax kernel (kh, kw, in, out)."""
  if x.ndim != 4:
    raise ValueError(f"a conv weight has 4 axes (out, in, kh, kw); got shape {x.shape}")
  return np.transpose(x, (2, 3, 1, 0))


def conv3d(x: np.ndarray) -> np.ndarray:
  """PyTorch Conv3d weight (out, in, kt, kh, kw) -> Flax kernel (kt, kh, kw, in, out)."""
  if x.ndim != 5:
    raise ValueError(f"a 3-D conv weight has 5 axes (out, in, kt, kh, kw); got shape {x.shape}")
  return np.transpose(x, (2, 3, 4, 1, 0))


def linear(x: np.ndarray) -> np.ndarray:
  """PyTorch linear weight (out, in) -> Flax kernel (in, out)."""
  if x.ndim != 2:
    raise ValueError(f"a linear weight has 2 axes (out, in); got shape {x.shape}")
  return x.T


def conv1x1_as_linear(x: np.ndarray) -> np.ndarray:
  """PyTorch 1x1 conv weight (out, in, 1, 1) -> Flax Linear kernel (in, out)."""
  if x.ndim != 4 or x.shape[2:] != (1, 1):
    raise ValueError(f"expected a 1x1 conv weight (out, in, 1, 1); got shape {x.shape}")
  return x[:, :, 0, 0].T


def conv1x1_as_heads_in(x: np.ndarray) -> np.ndarray:
  """1x1 conv (out, in, 1, 1) -> single-head attention q/k/v kernel (in, 1, out)."""
  return conv1x1_as_linear(x)[:, None, :]


def conv1x1_as_heads_out(x: np.ndarray) -> np.ndarray:
  """1x1 conv (out, in, 1, 1) -> single-head attention output kernel (1, in, out)."""
  return conv1x1_as_linear(x)[None, :, :]


def bias_as_heads(x: np.ndarray) -> np.ndarray:
  """Bias (c,) of a q/k/v projection -> single-head attention bias (1, c)."""
  return x[None, :]


# ---- rules ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
  """One line of a converter's table.

  Attributes:
    pattern: regular expression over the whole published name.
    target: the vqtok parameter path (dot-separated), a ``str.format`` template
      over the match groups (``{1}``), or a function of the match.
    layout: the layout change applied to the tensor.
  """

  pattern: str
  target: Target
  layout: Layout = as_is

  def path(self, m: re.Match) -> str:
    if callable(self.target):
      return self.target(m)
    return self.target.format(m.group(0), *m.groups())


def rules(*rows: tuple) -> tuple[Rule, ...]:
  """A table from ``(pattern, target[, layout])`` rows."""
  return tuple(Rule(*row) for row in rows)


WEIGHT_NAMES = {"weight": "kernel", "bias": "bias"}
NORM_NAMES = {"weight": "scale", "bias": "bias"}


def apply_rules(
  tensors: Mapping[str, np.ndarray],
  table: Sequence[Rule],
  expected: Mapping[str, tuple[int, ...]],
  *,
  ignore: Sequence[str] = (),
  source: str = "checkpoint",
) -> dict[str, np.ndarray]:
  """Maps published tensors to vqtok parameter paths, checking everything.

  Args:
    tensors: published name -> array.
    table: the family's rules.
    expected: vqtok path -> shape, for every parameter the model needs.
    ignore: patterns of published names to drop on purpose (a discriminator,
      LPIPS, optimizer state).
    source: the file's name, for error messages.

  Returns:
    vqtok path -> float32/int array, with exactly the keys of ``expected``.

  Raises:
    CheckpointError: a tensor no rule (or several rules) matches, a target that
      is not a vqtok parameter, one written twice, a shape mismatch, or a
      vqtok parameter left unwritten.
  """
  compiled = [(re.compile(r.pattern), r) for r in table]
  skip = [re.compile(p) for p in ignore]
  out: dict[str, np.ndarray] = {}
  origin: dict[str, str] = {}
  for name, value in tensors.items():
    hits = [(m, r) for c, r in compiled if (m := c.fullmatch(name))]
    if not hits:
      if any(p.fullmatch(name) for p in skip):
        continue
      raise CheckpointError(f"{source}: unexpected tensor {name!r} {tuple(np.shape(value))}: no rule maps it")
    if len(hits) > 1:
      raise CheckpointError(f"{source}: tensor {name!r} matches {len(hits)} rules (a converter bug)")
    m, rule = hits[0]
    path = rule.path(m)
    if path not in expected:
      raise CheckpointError(
        f"{source}: tensor {name!r} maps to {path!r}, which the configured model does not have;"
        " is the checkpoint of another variant or family?"
      )
    if path in out:
      raise CheckpointError(f"{source}: tensors {origin[path]!r} and {name!r} both map to {path!r}")
    try:
      array = np.asarray(rule.layout(np.asarray(value)))
    except ValueError as e:
      raise CheckpointError(f"{source}: tensor {name!r}: {e}") from None
    if tuple(array.shape) != tuple(expected[path]):
      raise CheckpointError(
        f"{source}: tensor {name!r} has shape {tuple(np.shape(value))}; {path!r} needs"
        f" {tuple(expected[path])} after the layout change (got {tuple(array.shape)})"
      )
    out[path], origin[path] = array, name
  missing = sorted(set(expected) - set(out))
  if missing:
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    raise CheckpointError(
      f"{source}: missing tensors for {', '.join(missing[:3])}{more} (the checkpoint lacks them,"
      " or it is of another variant)"
    )
  return out


# ---- rule groups for the blocks every VQGAN-style checkpoint has ---------------------------
# ``prefix`` is a regular expression for the published module (it may hold groups);
# ``target`` the vqtok module path: a ``str.format`` template over those groups, or a
# function of them (for index changes such as taming's reversed decoder levels).

Prefix = str | Callable[..., str]


def under(prefix: str, target: Prefix, suffix: str, leaf: Callable[..., str], layout: Layout) -> Rule:
  """One rule for ``<prefix>.<suffix>``: the leaf name is ``leaf(*suffix groups)``."""
  n = re.compile(prefix).groups

  def path(m: re.Match) -> str:
    head = target(*m.groups()[:n]) if callable(target) else target.format(*m.groups()[:n])
    return f"{head}.{leaf(*m.groups()[n:])}"

  return Rule(rf"{prefix}\.{suffix}", path, layout)


def torch_conv(prefix: str, target: Prefix) -> tuple[Rule, ...]:
  """``<prefix>.weight`` (O, I, kh, kw) and ``.bias`` -> ``<target>.kernel`` / ``.bias``."""
  return (under(prefix, target, "weight", lambda: "kernel", conv), under(prefix, target, "bias", lambda: "bias", as_is))


def torch_conv3d(prefix: str, target: Prefix) -> tuple[Rule, ...]:
  """``<prefix>.weight`` (O, I, kt, kh, kw) and ``.bias`` -> ``<target>.kernel`` / ``.bias``."""
  return (
    under(prefix, target, "weight", lambda: "kernel", conv3d),
    under(prefix, target, "bias", lambda: "bias", as_is),
  )


def torch_linear(prefix: str, target: Prefix) -> tuple[Rule, ...]:
  """``<prefix>.weight`` (O, I) and ``.bias`` of a torch Linear -> ``<target>.kernel`` / ``.bias``."""
  return (
    under(prefix, target, "weight", lambda: "kernel", linear),
    under(prefix, target, "bias", lambda: "bias", as_is),
  )


def torch_conv1x1_linear(prefix: str, target: Prefix) -> tuple[Rule, ...]:
  """A 1x1 conv (quant_conv) -> a Linear ``<target>.kernel`` / ``.bias``."""
  return (
    under(prefix, target, "weight", lambda: "kernel", conv1x1_as_linear),
    under(prefix, target, "bias", lambda: "bias", as_is),
  )


def torch_norm(prefix: str, target: Prefix) -> tuple[Rule, ...]:
  """GroupNorm ``weight`` / ``bias`` -> ``scale`` / ``bias``."""
  return (under(prefix, target, "weight", lambda: "scale", as_is), under(prefix, target, "bias", lambda: "bias", as_is))


def torch_resnet(prefix: str, target: Prefix) -> tuple[Rule, ...]:
  """taming's ResnetBlock: norm1, conv1, norm2, conv2 and the 1x1 ``nin_shortcut``."""
  sub = extend(target)
  return (
    *torch_norm(rf"{prefix}\.norm1", sub("norm1")),
    *torch_conv(rf"{prefix}\.conv1", sub("conv1")),
    *torch_norm(rf"{prefix}\.norm2", sub("norm2")),
    *torch_conv(rf"{prefix}\.conv2", sub("conv2")),
    *torch_conv(rf"{prefix}\.nin_shortcut", sub("skip")),
  )


def torch_attention(prefix: str, target: Prefix) -> tuple[Rule, ...]:
  """taming's AttnBlock (norm, 1x1 q/k/v, proj_out) -> vqtok's single-head ``AttnBlock``."""
  sub = extend(target)
  qkv = {"q": "query", "k": "key", "v": "value"}
  return (
    *torch_norm(rf"{prefix}\.norm", sub("norm")),
    under(prefix, target, r"(q|k|v)\.weight", lambda p: f"attn.{qkv[p]}.kernel", conv1x1_as_heads_in),
    under(prefix, target, r"(q|k|v)\.bias", lambda p: f"attn.{qkv[p]}.bias", bias_as_heads),
    under(prefix, target, r"proj_out\.weight", lambda: "attn.out.kernel", conv1x1_as_heads_out),
    under(prefix, target, r"proj_out\.bias", lambda: "attn.out.bias", as_is),
  )


def extend(target: Prefix) -> Callable[[str], Prefix]:
  """A function that extends ``target`` by one more path component."""

  def extend(name: str) -> Prefix:
    if callable(target):
      return lambda *g: f"{target(*g)}.{name}"
    return f"{target}.{name}"

  return extend


def torch_vqgan_ends(side: str) -> tuple[Rule, ...]:
  """``<side>.conv_in``, ``.norm_out`` and ``.conv_out``: named alike by taming and LlamaGen."""
  return (
    *torch_conv(rf"{side}\.conv_in", f"{side}.conv_in"),
    *torch_norm(rf"{side}\.norm_out", f"{side}.norm_out"),
    *torch_conv(rf"{side}\.conv_out", f"{side}.conv_out"),
  )


# ---- CLIP-style transformer blocks (TiTok, BSQ-ViT): torch ``nn.MultiheadAttention`` -----------

_QKV = ("query", "key", "value")


def split_in_proj(
  tensors: Mapping[str, np.ndarray],
  source: str,
  names: tuple[str, ...] = (".attn.in_proj_weight", ".attn.in_proj_bias"),
) -> dict[str, np.ndarray]:
  """Stacked query, key and value projections (``attn.in_proj_weight`` / ``in_proj_bias``, or the
  tensors whose names end with ``names``) split into ``<name>.query``, ``.key`` and ``.value``."""
  out: dict[str, np.ndarray] = {}
  for name, value in tensors.items():
    if name.endswith(names):
      if np.shape(value)[0] % 3:
        raise CheckpointError(f"{source}: tensor {name!r} has shape {np.shape(value)}; expected 3 x width rows")
      for part, third in zip(_QKV, np.split(np.asarray(value), 3, axis=0)):
        out[f"{name}.{part}"] = third
    else:
      out[name] = value
  return out


def heads_in(heads: int) -> Layout:
  """torch q/k/v weight (out, in) -> Flax ``MultiHeadAttention`` kernel (in, heads, head_dim)."""
  return lambda x: linear(x).reshape(x.shape[1], heads, -1)


def heads_out(heads: int) -> Layout:
  """torch ``out_proj`` weight (out, heads * head_dim) -> Flax kernel (heads, head_dim, out)."""
  return lambda x: linear(x).reshape(heads, -1, x.shape[0])


def torch_clip_block(prefix: str, target: Prefix, heads: int) -> tuple[Rule, ...]:
  """A CLIP-style ``ResidualAttentionBlock`` (ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj) -> ``vit.Block``."""
  sub = extend(target)
  return (
    *torch_norm(rf"{prefix}\.ln_1", sub("norm1")),
    *torch_norm(rf"{prefix}\.ln_2", sub("norm2")),
    under(prefix, target, r"attn\.in_proj_weight\.(query|key|value)", lambda p: f"attn.{p}.kernel", heads_in(heads)),
    under(
      prefix,
      target,
      r"attn\.in_proj_bias\.(query|key|value)",
      lambda p: f"attn.{p}.bias",
      lambda x: x.reshape(heads, -1),
    ),
    under(prefix, target, r"attn\.out_proj\.weight", lambda: "attn.out.kernel", heads_out(heads)),
    under(prefix, target, r"attn\.out_proj\.bias", lambda: "attn.out.bias", as_is),
    under(prefix, target, r"mlp\.c_fc\.weight", lambda: "mlp1.kernel", linear),
    under(prefix, target, r"mlp\.c_fc\.bias", lambda: "mlp1.bias", as_is),
    under(prefix, target, r"mlp\.c_proj\.weight", lambda: "mlp2.kernel", linear),
    under(prefix, target, r"mlp\.c_proj\.bias", lambda: "mlp2.bias", as_is),
  )


# ---- diffusers' VAE blocks (models/resnet.py, attention_processor.py, autoencoders/vae.py) -------


def diffusers_norm(prefix: str, target: Prefix) -> tuple[Rule, ...]:
  """A GroupNorm (``weight``/``bias``) or a ``SpatialNorm`` (``norm_layer``, 1x1 ``conv_y``/``conv_b``)."""
  sub = extend(target)
  return (
    *torch_norm(prefix, target),
    *torch_norm(rf"{prefix}\.norm_layer", sub("norm")),
    *torch_conv1x1_linear(rf"{prefix}\.conv_y", sub("gamma")),
    *torch_conv1x1_linear(rf"{prefix}\.conv_b", sub("beta")),
  )


def diffusers_resnet(prefix: str, target: Prefix) -> tuple[Rule, ...]:
  """``ResnetBlock2D`` / ``ResnetBlockCondNorm2D``: taming's wiring, the shortcut named ``conv_shortcut``."""
  sub = extend(target)
  return (
    *diffusers_norm(rf"{prefix}\.norm1", sub("norm1")),
    *torch_conv(rf"{prefix}\.conv1", sub("conv1")),
    *diffusers_norm(rf"{prefix}\.norm2", sub("norm2")),
    *torch_conv(rf"{prefix}\.conv2", sub("conv2")),
    *torch_conv(rf"{prefix}\.conv_shortcut", sub("skip")),
  )


# diffusers' current names, then those of its deprecated AttentionBlock, which its loader renames
# (modeling_utils.py, _convert_deprecated_attention_blocks: query -> to_q, ..., proj_attn -> to_out.0).
_DIFFUSERS_QKV = {"to_q": "query", "to_k": "key", "to_v": "value", "query": "query", "key": "key", "value": "value"}


def diffusers_attention(prefix: str, target: Prefix) -> tuple[Rule, ...]:
  """A single-head ``Attention`` (``group_norm`` or ``spatial_norm``, Linear q/k/v/out) -> vqtok's ``AttnBlock``."""
  sub = extend(target)
  qkv = "|".join(_DIFFUSERS_QKV)
  return (
    *torch_norm(rf"{prefix}\.group_norm", sub("norm")),
    *diffusers_norm(rf"{prefix}\.spatial_norm", sub("norm")),
    under(prefix, target, rf"({qkv})\.weight", lambda p: f"attn.{_DIFFUSERS_QKV[p]}.kernel", heads_in(1)),
    under(prefix, target, rf"({qkv})\.bias", lambda p: f"attn.{_DIFFUSERS_QKV[p]}.bias", bias_as_heads),
    under(prefix, target, r"(?:to_out\.0|proj_attn)\.weight", lambda: "attn.out.kernel", heads_out(1)),
    under(prefix, target, r"(?:to_out\.0|proj_attn)\.bias", lambda: "attn.out.bias", as_is),
  )
