"""Memory-bounded nearest-code search and sharding-safe row gathers.

The VQ assignment step (van den Oord et al., 2017, arXiv:1711.00937, eq. 1)
is ``argmin_k ||z - c_k||²``. Written naively it materialises an ``N × K``
distance matrix, which for LlamaGen/ViT-VQGAN-sized codebooks (2^14..2^18
codes) and a few thousand tokens is many GiB. Here the codebook is scanned in
chunks with a running ``argmin`` so only one ``tokens × chunk`` block exists at
a time, and the tokens are chunked too when even that block would be too big.

Distances use ``||z||² - 2 z·c + ||c||²`` so the work is one matmul per block
(the accelerator's fastest op); ``||z||²`` is constant per row and is only
added back at the end.

``take_rows`` and ``segment_sum`` gather and scatter codebook rows by index
(the lookup and the per-code sums of EMA and k-means updates); they also work
under explicit mesh axes, where the output sharding must be spelled out
(``explicit`` tells whether it must, ``sharding`` spells it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

#: Default upper bound on the bytes of one f32 distance block on accelerators.
DEFAULT_BLOCK_BYTES = 256 * 2**20
#: On CPU, blocks that stay in the last-level cache measured faster
#: (bench/quantizers.py --sweep_chunks on a 2-core EPYC).
DEFAULT_CPU_BLOCK_BYTES = 4 * 2**20


def default_block_bytes() -> int:
  """The distance-block budget for the default backend."""
  if jax.default_backend() == "cpu":
    return DEFAULT_CPU_BLOCK_BYTES
  return DEFAULT_BLOCK_BYTES


# Below this many codes per block a matmul no longer amortises its overhead,
# so the token axis is chunked instead of shrinking the code chunk further.
_MIN_CODE_CHUNK = 512
# Local indices inside a block are found with a float32 iota (exact < 2^24).
_MAX_CODE_CHUNK = 2**24


def _floor_to(x: int, multiple: int) -> int:
  return max(multiple, (x // multiple) * multiple)


def choose_chunks(
  num_tokens: int,
  codebook_size: int,
  *,
  chunk_size: int | None = None,
  token_chunk_size: int | None = None,
  max_block_bytes: int | None = None,
) -> tuple[int, int]:
  """Picks ``(code_chunk, token_chunk)`` so one f32 block fits the budget.

  Args:
    num_tokens: number of query vectors ``N``.
    codebook_size: number of codes ``K``.
    chunk_size: codes per block; chosen from the budget when None.
    token_chunk_size: tokens per block; chosen from the budget when None.
    max_block_bytes: upper bound on ``4 * token_chunk * code_chunk``
      (None: ``default_block_bytes()``).

  Returns:
    ``(code_chunk, token_chunk)``, each at least 1 and at most ``K`` / ``N``.
  """
  if max_block_bytes is None:
    max_block_bytes = default_block_bytes()
  if max_block_bytes < 4:
    raise ValueError(f"max_block_bytes must be >= 4, got {max_block_bytes}")
  max_elems = max_block_bytes // 4
  n, k = max(num_tokens, 1), codebook_size
  if chunk_size is None:
    if token_chunk_size is not None:
      chunk_size = max(1, max_elems // token_chunk_size)
    elif n * k <= max_elems:
      chunk_size = k
    else:
      # Multiples of 128 keep matmul tiles full on every backend.
      chunk_size = _floor_to(max(_MIN_CODE_CHUNK, max_elems // n), 128)
  chunk_size = min(chunk_size, k, _MAX_CODE_CHUNK)
  if token_chunk_size is None:
    token_chunk_size = max(1, max_elems // chunk_size)
    if token_chunk_size >= 8:
      token_chunk_size = _floor_to(token_chunk_size, 8)
  token_chunk_size = min(token_chunk_size, n)
  return int(chunk_size), int(token_chunk_size)


def _num_token_chunks(n: int, token_chunk: int, multiple: int = 1) -> int:
  """Fewest token chunks of about ``token_chunk`` tokens that divide ``n``.

  A divisor avoids padding, which explicitly sharded inputs cannot take; the
  chunk must also hold a multiple of the shard count. Falls back to padding
  rather than accept chunks under half the requested size.
  """
  lo = -(-n // max(token_chunk, multiple))
  for m in range(lo, min(2 * lo, n) + 1):
    if n % m == 0 and (n // m) % multiple == 0:
      return m
  return lo


def _search_codes(
  z2: jax.Array, codes: jax.Array, code_sq: jax.Array, chunk: int, precision
) -> tuple[jax.Array, jax.Array]:
  """Running argmin of ``||c||² + z2·c`` over code chunks; ``z2 = -2 z``."""
  k = codes.shape[0]

  def block(c, c_sq):
    s = jax.lax.dot_general(z2, c, (((1,), (1,)), ((), ())), precision=precision, preferred_element_type=jnp.float32)
    d = s + c_sq[None, :]
    best = jnp.min(d, axis=1)
    # First index attaining the minimum (numpy's tie rule) as a min-reduce over
    # a float iota: XLA:CPU vectorises plain min-reduces but not the
    # variadic (value, index) reduce behind jnp.argmin, which measured ~10x
    # slower than the min. Float iota is exact for chunks below 2^24.
    iota = jax.lax.broadcasted_iota(jnp.float32, d.shape, 1)
    first = jnp.min(jnp.where(d == best[:, None], iota, float(d.shape[1])), axis=1)
    # NaN rows match nothing; keep their index in range.
    return jnp.minimum(first.astype(jnp.int32), d.shape[1] - 1), best

  if chunk >= k:
    return block(codes, code_sq)

  num_chunks = -(-k // chunk)
  pad = num_chunks * chunk - k
  if pad:
    # Padded codes get +inf norm so they can never win the argmin.
    codes = jnp.pad(codes, ((0, pad), (0, 0)))
    code_sq = jnp.pad(code_sq, (0, pad), constant_values=jnp.inf)
  codes = codes.reshape(num_chunks, chunk, codes.shape[-1])
  code_sq = code_sq.reshape(num_chunks, chunk)

  def step(carry, xs):
    best_i, best_d = carry
    c, c_sq, offset = xs
    i, d = block(c, c_sq)
    # Strict < keeps the earlier chunk on ties: the lowest index wins overall.
    better = d < best_d
    return (jnp.where(better, i + offset, best_i), jnp.where(better, d, best_d)), None

  # *_like keeps z's sharding, so the carry type is stable under explicit axes.
  init = (jnp.zeros_like(z2[:, 0], jnp.int32), jnp.full_like(z2[:, 0], jnp.inf))
  offsets = jnp.arange(num_chunks, dtype=jnp.int32) * chunk
  (best_i, best_d), _ = jax.lax.scan(step, init, (codes, code_sq, offsets))
  return best_i, best_d


def nearest_code(
  z: jax.Array,
  codebook: jax.Array,
  *,
  chunk_size: int | None = None,
  token_chunk_size: int | None = None,
  max_block_bytes: int | None = None,
  precision: jax.lax.PrecisionLike = None,
) -> tuple[jax.Array, jax.Array]:
  """Index of and squared distance to the nearest codebook row, per token.

  Never builds the full ``N × K`` distance matrix when it exceeds
  ``max_block_bytes``: the codebook is scanned in chunks of ``chunk_size``
  codes and the tokens in chunks of ``token_chunk_size``. No gradient flows
  through the search.

  Args:
    z: ``(N, d)`` query vectors (any float dtype; distances are f32).
    codebook: ``(K, d)`` codes.
    chunk_size: codes per block; chosen from ``max_block_bytes`` when None.
    token_chunk_size: tokens per block; chosen from the budget when None.
    max_block_bytes: upper bound on the bytes of one f32 distance block
      (None: 256 MiB on accelerators, 4 MiB on CPU, see
      ``default_block_bytes``).
    precision: matmul precision (``None``: the backend default, e.g. TF32 on
      recent GPUs; pass ``"highest"`` for exact f32 on such hardware).

  Returns:
    ``indices`` int32 ``(N,)`` (ties go to the lowest index, like
    ``numpy.argmin``) and ``sq_distances`` f32 ``(N,)``, clipped at 0.
  """
  if z.ndim != 2 or codebook.ndim != 2:
    raise ValueError(f"nearest_code expects z (N, d) and codebook (K, d); got shapes {z.shape} and {codebook.shape}")
  if z.shape[1] != codebook.shape[1]:
    raise ValueError(f"z has dimension {z.shape[1]} but the codebook has {codebook.shape[1]}")
  if codebook.shape[0] < 1:
    raise ValueError("the codebook is empty")
  for name, v in (("chunk_size", chunk_size), ("token_chunk_size", token_chunk_size)):
    if v is not None and v < 1:
      raise ValueError(f"{name} must be >= 1, got {v}")
  n = z.shape[0]
  chunk, token_chunk = choose_chunks(
    n, codebook.shape[0], chunk_size=chunk_size, token_chunk_size=token_chunk_size, max_block_bytes=max_block_bytes
  )

  z = jax.lax.stop_gradient(z).astype(jnp.float32)
  codebook = jax.lax.stop_gradient(codebook).astype(jnp.float32)
  code_sq = jnp.sum(jnp.square(codebook), axis=-1)
  z_sq = jnp.sum(jnp.square(z), axis=-1)
  # Scaling by -2 is exact in floating point, so it can be folded into z.
  z2 = -2.0 * z
  if n == 0:
    return jnp.zeros((0,), jnp.int32), jnp.zeros((0,), jnp.float32)

  if token_chunk >= n:
    idx, best = _search_codes(z2, codebook, code_sq, chunk, precision)
  else:
    z_sharding = jax.typeof(z2).sharding
    axis = z_sharding.spec[0] if z_sharding.spec else None
    shards = 1
    for name in (axis,) if isinstance(axis, str) else (axis or ()):
      shards *= z_sharding.mesh.shape[name]
    num_tok = _num_token_chunks(n, token_chunk, shards)
    rows = -(-n // num_tok)
    # Token t goes to row t // num_tok, step t % num_tok: each step takes
    # tokens from every row, so a batch-sharded z stays sharded the same way
    # (contiguous per-device blocks map to contiguous rows).
    padded = jnp.pad(z2, ((0, rows * num_tok - n), (0, 0)))
    out_sharding = None
    if axis is not None:
      out_sharding = jax.sharding.NamedSharding(z_sharding.mesh, P(axis, None, None))
    grid = jax.lax.reshape(padded, (rows, num_tok, z.shape[1]), out_sharding=out_sharding)
    idx, best = jax.lax.map(lambda zz: _search_codes(zz, codebook, code_sq, chunk, precision), jnp.swapaxes(grid, 0, 1))
    idx = jnp.swapaxes(idx, 0, 1).reshape(-1)[:n]
    best = jnp.swapaxes(best, 0, 1).reshape(-1)[:n]
  # Cancellation in the expanded form can give tiny negatives.
  return idx, jnp.maximum(best + z_sq, 0.0)


def search_flops(num_tokens: int, codebook_size: int, dim: int) -> float:
  """Floating-point operations of one search (the matmul dominates)."""
  return 2.0 * num_tokens * codebook_size * dim


def explicit(*arrays: jax.Array) -> bool:
  """Whether any of ``arrays`` is sharded over explicit mesh axes."""
  return any(s is not None for a in arrays for s in jax.typeof(a).sharding.spec)


def sharding(arrays, *spec) -> jax.sharding.NamedSharding:
  """``spec`` on the mesh of the first explicitly sharded of ``arrays``."""
  mesh = next(jax.typeof(a).sharding.mesh for a in arrays if explicit(a))
  return jax.sharding.NamedSharding(mesh, P(*spec))


def take_rows(table: jax.Array, idx: jax.Array) -> jax.Array:
  """``table[idx]``, laid out like ``idx``; also valid under explicit sharding.

  With explicit mesh axes (``jax.make_mesh`` default) a gather of a replicated
  table by batch-sharded indices (or the reverse) is ambiguous, so the output
  sharding is spelled out; otherwise this is a plain ``jnp.take``.
  """
  if not explicit(table, idx):
    return jnp.take(table, idx, axis=0)
  spec = jax.typeof(idx).sharding.spec
  return table.at[idx].get(out_sharding=sharding((idx, table), *spec, None))


def segment_sum(data: jax.Array, idx: jax.Array, num: int) -> jax.Array:
  """Per-code sums of ``data`` rows; replicated, explicit-sharding safe."""
  if not explicit(data, idx):
    return jax.ops.segment_sum(data, idx, num_segments=num)
  out = jnp.zeros((num,) + data.shape[1:], data.dtype)
  replicated = sharding((idx, data), *([None] * out.ndim))
  return out.at[idx].add(data, out_sharding=replicated)
