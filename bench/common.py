"""What every benchmark prints first: the machine, and its measured matmul rate.

Figures are only comparable with the machine they ran on, so each bench script
starts with ``machine_header()`` (or ``describe_machine()`` when it measures no
FLOPs).
"""

from __future__ import annotations

import os
import platform
import time


def cpu_model() -> str:
  """The CPU's model name (from /proc/cpuinfo where there is one)."""
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def describe_machine() -> str:
  """One line: CPU, cores, Python, and the JAX device(s) when JAX is installed."""
  text = f"{cpu_model()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
  try:
    import jax  # noqa: PLC0415
  except ImportError:
    return text
  dev = jax.devices()[0]
  return f"{text}; jax {jax.__version__} on {dev.platform} ({dev.device_kind}), {jax.device_count()} device(s)"


# Dense (no sparsity) bf16 peaks from the vendors' datasheets, in FLOP/s, by
# the start of ``jax.Device.device_kind``. MFU on an accelerator is measured
# against these, the usual convention; benches also print a measured matmul rate.
BF16_PEAK = {
  "NVIDIA H200": 989e12,
  "NVIDIA H100": 989e12,  # SXM; the PCIe part is lower
  "NVIDIA A100": 312e12,
  "NVIDIA L4": 121e12,
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,
  "TPU v5p": 459e12,
  "TPU v6 lite": 918e12,
}


def datasheet_bf16_peak() -> float | None:
  """The device's dense bf16 peak in FLOP/s from ``BF16_PEAK``, or None."""
  import jax  # noqa: PLC0415

  kind = jax.devices()[0].device_kind
  return next((v for k, v in BF16_PEAK.items() if kind.startswith(k)), None)


def matmul_flops_per_s(n: int = 2048, trials: int = 5, dtype: str = "float32") -> float:
  """Best-of-``trials`` (n x n) @ (n x n) throughput in FLOP/s, in ``dtype``.

  Best-of, like the timings of the benches, so that load from other processes
  on a shared machine biases both the same way (towards the unloaded speed).
  """
  import jax  # noqa: PLC0415

  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  return 2 * n**3 / _best_seconds(jax.jit(lambda a: a @ a), a, trials)


def _best_seconds(f, a, trials: int) -> float:
  """The fastest of ``trials`` timed calls of the compiled ``f(a)``, after a warm-up call."""
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(trials):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return best


def xla_cost(program, key: str = "flops") -> float:
  """One figure of XLA's cost analysis ("flops", "bytes accessed") of a lowered or compiled program, NaN if absent.

  Count FLOPs on the lowered program: in a compiled GPU program the
  convolutions and matmuls are cuDNN/cuBLAS calls, which XLA's count leaves
  out (on an H200 it saw 1% of LlamaGen VQ-16's training-step FLOPs). Bytes
  are the compiled program's, after fusion.
  """
  cost = program.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per device program
    cost = cost[0]
  return float(cost.get(key, float("nan")))


def machine_header() -> float:
  """Prints the machine and its measured f32 matmul rate; returns the rate."""
  print(f"machine: {describe_machine()}")
  peak = matmul_flops_per_s()
  print(f"measured f32 matmul throughput (best of 5, 2048^3): {peak / 1e9:.1f} GFLOP/s\n")
  return peak


def bandwidth(mib: int = 1024, trials: int = 5) -> float:
  """Best-of-``trials`` device copy rate in bytes/s (bytes read plus written)."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  if not hasattr(bandwidth, "cache"):
    n = mib * 2**20 // 4
    if jax.default_backend() == "cpu":
      n //= 16
    a = jnp.ones((n,), jnp.float32)
    bandwidth.cache = 2 * 4 * n / _best_seconds(jax.jit(lambda a: a * 2), a, trials)
  return bandwidth.cache


def random_lpips():
  """``(f(params, x, y) -> (B,) distances, params)``: LPIPS with random weights, the real one's cost."""
  from flax import nnx  # noqa: PLC0415

  from vqtok.losses import perceptual  # noqa: PLC0415

  return perceptual.pure_lpips(perceptual.LPIPS(rngs=nnx.Rngs(0)))
