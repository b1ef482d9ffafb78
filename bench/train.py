"""Training-step throughput: images/s and model FLOPs utilisation (MFU).

Run:
  python bench/train.py                          # tiny @64px, titok_s128_pixel @256px
  python bench/train.py --preset vqgan_f16 --batch 4
  python bench/train.py --overhead               # host overhead of the training loop, tiny
  python bench/train.py --preset=llamagen_vq16 --preset=bsq_vit --batch=176,96 --dtype=bfloat16 \
      --gan_only --lpips --parallel_compile=/tmp/xla_cache --breakdown   # the README's GPU table

Times the real jitted training step of ``vqtok.training`` (tokenizer update,
and with the GAN on, the discriminator update with the adaptive weight), over a
mesh of all local devices, on synthetic batches so the data pipeline is not
measured (bench/data.py measures that). FLOPs per step come from XLA's cost
analysis; MFU divides achieved FLOP/s by a measured f32 matmul throughput.

``--overhead`` measures what the loop adds per step: the time per step of
``train_and_evaluate`` (data pipeline, prefetch, metric checks, logging;
eval, images and checkpoints off) against the bare compiled step on the same
batches held in memory. Loop time per step is the difference of two runs of
different length, so start-up and compilation cancel.

``--parallel_compile=DIR`` compiles the presets' steps at once, one process
each, into JAX's persistent compilation cache in DIR, then times them one after
the other from that cache: at 256 px on a GPU each compilation (autotuning
included) takes minutes, mostly on the host. A child whose compiled step needs
more than 90% of the device's memory by XLA's buffer assignment lowers its
batch (a multiple of 8 per device) in proportion and compiles again.
``--breakdown`` profiles one step and sums the device's kernel time by kind
(matmul and convolution kernels, other kernels, copies) and names the
costliest XLA ops.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

from common import bandwidth, datasheet_bf16_peak, machine_header, matmul_flops_per_s, random_lpips, xla_cost  # noqa: E402

from vqtok import sharding  # noqa: E402
from vqtok.training.state import init_train_state  # noqa: E402
from vqtok.training.step import make_train_step  # noqa: E402


def _config(name: str, batch: int, dtype: str | None, lpips: bool):
  config = importlib.import_module(f"configs.{name}").get_config()
  config.training.batch_size = batch
  if dtype:
    config.model.dtype = dtype
  if not lpips:
    config.loss.perceptual_weight = 0.0
  return config


def _perceptual(config, lpips: bool):
  """Random-weight LPIPS (the same cost as the real weights), or None."""
  if not lpips or config.loss.perceptual_weight <= 0:
    return None, None
  return random_lpips()


def _memory(compiled) -> float:
  """Peak bytes of one step by XLA's buffer assignment (per device)."""
  m = compiled.memory_analysis()
  if m is None:
    return float("nan")
  return float(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def _compile(name, batch, dtype, with_gan, lpips, fast=False):
  """(compiled step, state, batch, lpips params, compile seconds) on all local devices."""
  config = _config(name, batch, dtype, lpips)
  mesh = sharding.make_mesh((-1, 1))
  state, static = init_train_state(config, lambda a: sharding.state_shardings(a, mesh))
  s = config.image_size
  x = np.random.default_rng(0).uniform(-1, 1, (batch, s, s, 3)).astype(np.float32)
  b = sharding.global_batch({"image": x}, mesh)
  fn, pparams = _perceptual(config, lpips)
  step = jax.jit(make_train_step(config, static, with_gan=with_gan, perceptual=fn), donate_argnums=0)
  options = {"xla_gpu_autotune_level": 0} if fast and jax.default_backend() == "gpu" else None
  t0 = time.perf_counter()
  lowered = step.lower(state, b, pparams)
  try:
    compiled = lowered.compile(compiler_options=options)
  except Exception:  # noqa: BLE001  (an XLA without the option: compile as usual)
    compiled = lowered.compile()
  return compiled, state, b, pparams, time.perf_counter() - t0, s, lowered


def _enable_cache(folder: str) -> None:
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def compile_child(name: str, batch: int, dtype, with_gan: bool, lpips: bool, batch_file: str) -> None:
  """Compiles one step into the persistent cache; writes the batch that fits to ``batch_file``."""
  n = jax.local_device_count()
  limit = _device_memory().get("bytes_limit")
  while True:
    t0 = time.perf_counter()
    compiled = _compile(name, batch, dtype, with_gan, lpips)[0]
    need = _memory(compiled)
    print(f"{name}: batch {batch} compiled in {time.perf_counter() - t0:.0f} s, {need / 2**30:.1f} GiB", flush=True)
    if not limit or need <= 0.9 * limit or batch <= 8 * n:
      break
    batch = max(8, int(batch * 0.9 * limit / need) // (8 * n) * 8) * n
  with open(batch_file, "w") as f:
    f.write(str(batch))


def parallel_compile(args, folder: str) -> list[int]:
  """Runs ``compile_child`` for every preset at once; returns the batches they settled on."""
  import subprocess  # noqa: PLC0415

  os.makedirs(folder, exist_ok=True)
  env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  procs, files = [], []
  for name, batch in zip(args.preset, args.batches, strict=True):
    files.append(os.path.join(folder, f"{name}.batch"))
    cmd = [sys.executable, os.path.abspath(__file__), "--preset", name, "--batch", str(batch), "--compile_only"]
    cmd += ["--batch_file", files[-1], "--parallel_compile", folder] + (["--lpips"] if args.lpips else [])
    cmd += (["--dtype", args.dtype] if args.dtype else []) + (["--gan_only"] if args.gan_only else [])
    procs.append(subprocess.Popen(cmd, env=env))
  t0 = time.perf_counter()
  if any(p.wait() for p in procs):
    raise SystemExit("a compiling process failed (its output is above)")
  print(f"compiled {len(procs)} presets in parallel in {time.perf_counter() - t0:.0f} s\n", flush=True)
  return [int(open(f).read()) for f in files]


def kernel_breakdown(trace_dir: str, top: int = 6) -> str:
  """Device kernel time of a profiled step by kind, and the costliest ops, from its Perfetto trace."""
  import glob  # noqa: PLC0415
  import gzip  # noqa: PLC0415
  import json  # noqa: PLC0415
  from collections import Counter  # noqa: PLC0415

  paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
  if not paths:
    return "no trace written"
  with gzip.open(sorted(paths)[-1]) as f:
    events = json.load(f)["traceEvents"]
  devices = {e["pid"] for e in events if e.get("name") == "process_name" and "GPU" in e["args"]["name"]}
  streams = {
    (e["pid"], e["tid"])
    for e in events
    if e.get("name") == "thread_name" and e["pid"] in devices and "stream" in e["args"]["name"].lower()
  }
  kinds, ops = Counter(), Counter()
  for e in events:
    if e.get("ph") != "X" or (e["pid"], e.get("tid")) not in streams:
      continue
    name, dur = e["name"], float(e.get("dur", 0))
    low = name.lower()
    if "memcpy" in low or "memset" in low:
      kinds["copies"] += dur
    elif any(k in low for k in ("gemm", "xmma", "conv", "cutlass", "nvjet", "wgmma", "cudnn", "dot")):
      kinds["matmul/conv kernels"] += dur
    else:
      kinds["other kernels (fusions, reductions)"] += dur
    ops[e.get("args", {}).get("hlo_op", name)] += dur
  total = sum(kinds.values())
  if not total:
    return "no device kernels in the trace"
  parts = ", ".join(f"{k} {v / total:.0%}" for k, v in kinds.most_common())
  heavy = "; ".join(f"{k[:48]} {v / total:.1%}" for k, v in ops.most_common(top))
  return f"kernel time {total / 1e3:.1f} ms: {parts}. Costliest ops: {heavy}"


def _device_memory() -> dict:
  return jax.local_devices()[0].memory_stats() or {}


def largest_batch(name: str, dtype: str | None, with_gan: bool, lpips: bool, budget: float = 0.85) -> int:
  """The largest batch (a multiple of 8 per device) whose step fits in ``budget`` of device memory.

  Two probe compilations (batch 8 and 32 per device) give XLA's peak memory as
  a line in the batch size; the batch is read off that line.
  """
  limit = _device_memory().get("bytes_limit")
  if not limit:
    raise SystemExit("--batch=max needs a device that reports its memory (a GPU or TPU)")
  n = jax.local_device_count()
  m0, m1 = (_memory(_compile(name, b * n, dtype, with_gan, lpips, fast=True)[0]) for b in (8, 32))
  per_image = (m1 - m0) / 24
  fixed = m0 - 8 * per_image
  per_device = int((budget * limit - fixed) / per_image) // 8 * 8
  print(
    f"{name}: {fixed / 2**30:.2f} GiB fixed + {per_image / 2**20:.1f} MiB per image per device of"
    f" {limit / 2**30:.1f} GiB: batch {per_device} per device",
    flush=True,
  )
  return max(per_device, 8) * n


def bench(name: str, batch: int, steps: int, with_gan: bool, dtype=None, lpips=False, trace=None) -> dict:
  compiled, state, b, pparams, compile_s, s, lowered = _compile(name, batch, dtype, with_gan, lpips)
  state, m = compiled(state, b, pparams)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = compiled(state, b, pparams)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  breakdown = None
  if trace:
    try:
      with jax.profiler.trace(trace, create_perfetto_trace=True):
        state, m = compiled(state, b, pparams)
        jax.block_until_ready(m)
      breakdown = kernel_breakdown(trace)
    except Exception as e:  # noqa: BLE001  (no profiler on this machine: the timings stand)
      breakdown = f"no profile: {str(e).splitlines()[0][:120]}"
  return dict(
    flops=xla_cost(lowered),
    bytes=xla_cost(compiled, "bytes accessed"),
    xla_memory=_memory(compiled),
    sec=min(times),
    compile_s=compile_s,
    image=s,
    breakdown=breakdown,
  )


def overhead(name: str, steps: int) -> dict:
  import tempfile  # noqa: PLC0415

  from vqtok.data import pipeline  # noqa: PLC0415
  from vqtok.training.loop import train_and_evaluate  # noqa: PLC0415

  config = importlib.import_module(f"configs.{name}").get_config()
  tc = config.training
  tc.eval_every = tc.image_every = 0
  tc.log_every = tc.checkpoint_every = 10**9  # one log and one checkpoint, at the end
  config.loss.disc_start = 10**9  # one compiled step (G only) in both measurements
  config.loss.perceptual_weight = 0.0  # no LPIPS weights here (the recipes of the big presets have LPIPS)

  def loop_seconds(n: int) -> float:
    config.training.num_steps = n
    with tempfile.TemporaryDirectory() as workdir:
      t0 = time.perf_counter()
      train_and_evaluate(config, workdir, progress=False)
      return time.perf_counter() - t0

  loop_seconds(2)  # warm the data pipeline's imports and caches
  short, long = loop_seconds(5), loop_seconds(5 + steps)
  per_step_loop = (long - short) / steps
  mesh = sharding.make_mesh(tc.mesh)
  state, static = init_train_state(config, lambda a: sharding.state_shardings(a, mesh))
  it = pipeline.make_dataset(config, split="train", batch_size=tc.batch_size, seed=config.seed)
  batches = [sharding.global_batch({"image": next(it)["image"]}, mesh) for _ in range(steps)]
  step = jax.jit(make_train_step(config, static, with_gan=False), donate_argnums=0)
  state, m = step(state, batches[0], None)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for b in batches:
    state, m = step(state, b, None)
  jax.block_until_ready(m)
  per_step_bare = (time.perf_counter() - t0) / steps
  return dict(loop=per_step_loop, bare=per_step_bare, batch=tc.batch_size, image=config.image_size)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", action="append", help="configs/<name>.py (repeatable)")
  ap.add_argument(
    "--batch", default="0", help="0: 16 for tiny, 2 otherwise; max: the largest that fits; or one per preset, a,b,c"
  )
  ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="model.dtype (default: the preset's)")
  ap.add_argument("--lpips", action="store_true", help="include the perceptual loss (random LPIPS weights)")
  ap.add_argument("--gan_only", action="store_true", help="time only the G+D step")
  ap.add_argument("--trace", help="write a profile of one step per row under this folder")
  ap.add_argument("--breakdown", action="store_true", help="profile one step and print where its device time goes")
  ap.add_argument("--parallel_compile", metavar="DIR", help="compile all presets at once into a compilation cache")
  ap.add_argument("--compile_only", action="store_true", help=argparse.SUPPRESS)
  ap.add_argument("--batch_file", help=argparse.SUPPRESS)
  ap.add_argument("--steps", type=int, default=3, help="timed steps; the fastest is reported")
  ap.add_argument("--overhead", action="store_true", help="host overhead of the loop per step (tiny by default)")
  args = ap.parse_args(argv)
  args.batch_max = args.batch == "max"
  args.batches = [] if args.batch_max else [int(b) for b in args.batch.split(",")]
  args.batch = args.batches[0] if len(args.batches) == 1 else 0
  if args.parallel_compile:
    _enable_cache(args.parallel_compile)
  if args.compile_only:
    compile_child(args.preset[0], args.batch, args.dtype, True, args.lpips, args.batch_file)
    return
  if args.overhead:
    machine_header()
    print("| preset | image | batch | loop s/step | bare step s/step | host overhead s/step | overhead |")
    print("|---|---|---|---|---|---|---|")
    for name in args.preset or ["tiny"]:
      r = overhead(name, max(args.steps, 40))
      extra = r["loop"] - r["bare"]
      print(
        f"| {name} | {r['image']} | {r['batch']} | {r['loop']:.4f} | {r['bare']:.4f} | {extra:.4f} |"
        f" {extra / r['bare']:.1%} |",
        flush=True,
      )
    return
  presets = args.preset = args.preset or ["tiny", "titok_s128_pixel"]
  if len(args.batches) > 1 and len(args.batches) != len(presets):
    raise SystemExit(f"--batch={args.batch}: {len(args.batches)} batches for {len(presets)} presets")
  if args.parallel_compile:
    if len(args.batches) != len(presets) or not all(args.batches) or not args.gan_only:
      raise SystemExit("--parallel_compile needs --gan_only and a fixed batch per preset (--batch=a,b,c)")
    args.batches = parallel_compile(args, args.parallel_compile)
  peak = machine_header()
  sheet = datasheet_bf16_peak() if jax.default_backend() != "cpu" else None
  measured = peak
  if sheet:
    measured = matmul_flops_per_s(8192, dtype="bfloat16")
    print(f"bf16 matmul (8192^3, best of 5): {measured / 1e12:.0f} TFLOP/s; datasheet dense bf16 {sheet / 1e12:.0f}\n")
  print(
    "| preset | image | dtype | batch | step | GFLOP/step | compile s | s/step | img/s | memory GiB | MFU |"
    " compute floor s | memory floor s |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  steps = ["G+D"] if args.gan_only else ["G", "G+D"]
  notes = []
  for i, name in enumerate(presets):
    for kind in steps:
      with_gan = kind == "G+D"
      if args.batch_max:
        batch = largest_batch(name, args.dtype, with_gan, args.lpips)
      else:
        batch = (args.batches[i] if len(args.batches) == len(presets) else args.batch) or (16 if name == "tiny" else 2)
      trace = args.trace or (tempfile.mkdtemp() if args.breakdown else None)
      trace = os.path.join(trace, f"{name}_{kind.replace('+', '')}") if trace else None
      try:
        r = bench(name, batch, args.steps, with_gan, args.dtype, args.lpips, trace)
      except Exception as e:  # noqa: BLE001  (out of memory, say: report it and go on to the next row)
        print(f"| {name} | | {args.dtype or 'float32'} | {batch} | {kind} | failed: {str(e).splitlines()[0][:120]} |")
        continue
      if r["breakdown"]:
        notes.append(f"{name} {kind}: {r['breakdown']}")
      if not sheet:
        measured = peak = max(peak, matmul_flops_per_s())
      mem = r["xla_memory"]
      print(
        f"| {name} | {r['image']} | {args.dtype or 'float32'} | {batch} | {kind} | {r['flops'] / 1e9:.1f} |"
        f" {r['compile_s']:.1f} | {r['sec']:.3f} | {batch / r['sec']:.1f} | {mem / 2**30:.1f} |"
        f" {r['flops'] / r['sec'] / (sheet or peak):.1%} | {r['flops'] / measured:.3f} |"
        f" {r['bytes'] / bandwidth():.3f} |",
        flush=True,
      )
  for line in notes:
    print(f"\n{line}")
  basis = f"the datasheet's dense bf16 peak, {sheet / 1e12:.0f} TFLOP/s" if sheet else ""
  basis = basis or f"the best f32 matmul seen, {peak / 1e9:.1f} GFLOP/s"
  print(f"\nMFU is relative to {basis}. Compute floor: FLOPs at the measured matmul rate;")
  print("memory floor: XLA's bytes accessed at the measured device copy rate. Memory: XLA's buffer assignment")
  print("for the step (the device's own peak counter spans the whole process, every row before this one too).")


if __name__ == "__main__":
  main()
