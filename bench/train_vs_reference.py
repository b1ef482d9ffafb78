"""vqtok's training step against the reference trainers' own, on the same CPU: step time, and a short run side by side.

The other families (issue 24, item 3), one full step each side, best of the
alternating rounds (taming, SEED-Voken and 1d-tokenizer checkouts at the commits
scripts/parity/README.md names; bench/reference_step.py runs their side):
  python bench/train_vs_reference.py --reference=/tmp/taming_ref --reference_family=taming \
      --torch_python=/tmp/torchenv/bin/python --json=out.json
Both sides at the step-parity goldens' reduced sizes (tests/test_train_parity_*.py's
configs; scripts/parity/gen_train_*.py's trainers), 32 px, batch ``--batch``.
The rest of this docstring is LlamaGen's (the default family).

Run (a LlamaGen checkout at ce98ec4, and a torch environment for its code):
  python bench/train_vs_reference.py --reference=/path/to/LlamaGen --torch_python=/tmp/torchenv/bin/python
  python bench/train_vs_reference.py ... --skip_time --steps=300 --plot=bench/train_vs_reference.png

The model is LlamaGen's VQ architecture at a reduced width (ch 32, ch_mult
1-2-2, one res block per level, z 32, 1024 x 8 l2-normalised codes: f4, 16x16
tokens at 64 px), initialised by torch's own initialisation in LlamaGen's
classes (bench/llamagen_reference.py ``init``) and converted for vqtok by its
llamagen converter, so both sides start from the same weights. vqtok's
hyperparameters are configs/llamagen_vq16.py's, i.e. vq_train.py's.

Time (issue 24, item 3): one full step each (generator update with MSE, LPIPS,
codebook and commitment terms and the hinge GAN term; discriminator update
with LlamaGen's PatchGAN at ndf 64; clipping; Adam), batch 8 at 64 px, the
same batch on both sides. vqtok's step is jitted (compilation excluded); torch
runs eagerly with ``torch.set_num_threads(2)``. Rounds alternate between the
two, and each side's best step over all rounds is kept. LPIPS's weights are
random on both sides (timing does not depend on them).

Run (item 4): ``--steps`` steps on the same batches (random 64 px crops of
the bundled training photos from vqtok's pipeline, written once and read by
both), MSE + codebook + commitment only: LPIPS's VGG16 weights and the GAN
are left out, as no real LPIPS weights are available offline and a GAN does
not start within a few hundred steps in either recipe. Every ``--eval_every``
steps both sides reconstruct the held-out photos (center crops), and vqtok's
metrics score both: PSNR and SSIM, and LPIPS when ``--lpips_weights`` names
real weights. The curves go to ``--plot``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

from common import describe_machine  # noqa: E402
from flax import nnx  # noqa: E402

from configs import llamagen_vq16  # noqa: E402
from vqtok import config as config_lib  # noqa: E402
from vqtok import files, models, pretrained  # noqa: E402
from vqtok.data import pipeline  # noqa: E402
from vqtok.evaluation import metrics  # noqa: E402
from vqtok.losses import perceptual  # noqa: E402
from vqtok.pretrained import reader  # noqa: E402
from vqtok.training import loop  # noqa: E402
from vqtok.training.state import TrainState, abstract_train_state  # noqa: E402
from vqtok.training.step import make_train_step  # noqa: E402

WORKER = os.path.join(ROOT, "bench", "llamagen_reference.py")
FAMILY_WORKER = os.path.join(ROOT, "bench", "reference_step.py")
FAMILIES = ("taming", "magvit2", "titok")
ARCH = ("--ch=32", "--ch_mult=1,2,2", "--num_res_blocks=1", "--z_channels=32", "--codebook_size=1024", "--code_dim=8")


def parse():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--reference", required=True, help="the family's checkout (LlamaGen ce98ec4; others: scripts/parity)")
  p.add_argument("--reference_family", default="llamagen", choices=("llamagen", *FAMILIES))
  p.add_argument("--torch_python", default="/tmp/torchenv/bin/python")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--image_size", type=int, default=64, help="LlamaGen's; the others run at their goldens' 32 px")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps_per_round", type=int, default=5)
  p.add_argument("--skip_time", action="store_true")
  p.add_argument("--steps", type=int, default=0, help="steps of the side-by-side run (0: no run)")
  p.add_argument("--eval_every", type=int, default=25)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--lpips_weights", default="", help="real LPIPS weights (.npz) for the run's held-out LPIPS")
  p.add_argument("--plot", default="")
  p.add_argument("--json", default="", help="write the figures here too")
  return p.parse_args()


def worker(args, mode, *extra):
  cmd = [args.torch_python, WORKER, mode, args.reference, *ARCH, f"--image_size={args.image_size}", *extra]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True)
  lines = [line for line in out.stdout.splitlines() if line.startswith("{")]  # LlamaGen's modules print too
  return json.loads(lines[-1]) if lines else None


def config_for(tok_config, args, *, gan: bool, lpips: str):
  """configs/llamagen_vq16.py's recipe (vq_train.py's) on the reduced model."""
  c = llamagen_vq16.get_config()
  c.model = tok_config.model
  c.quantizer = tok_config.quantizer
  c.image_size = args.image_size
  c.discriminator.channels = 64  # vq_loss.py's PatchGAN, ndf 64
  c.training.update(batch_size=args.batch, num_steps=max(args.steps, 1))
  if gan:  # vq_train.py's global_step counts from 1: disc_start 1 is vqtok's step 0
    c.loss.update(disc_start=0, lpips_weights=lpips)
  else:
    c.loss.update(perceptual_weight=0.0, gan_weight=0.0)
  return config_lib.validate_config(c)


def initial_state(config, tok):
  _, static = abstract_train_state(config)
  _, g_params, g_rest = nnx.split(tok, nnx.Param, ...)
  disc = models.build_discriminator(config.discriminator, image_size=config.image_size, rngs=nnx.Rngs(config.seed))
  _, d_params, d_rest = nnx.split(disc, nnx.Param, ...)
  g_params, d_params = g_params.to_pure_dict(), d_params.to_pure_dict()
  state = TrainState(
    step=jax.numpy.zeros((), jax.numpy.int32),
    g_params=g_params,
    g_rest=g_rest.to_pure_dict(),
    g_opt=static.g_tx.init(g_params),
    d_params=d_params,
    d_rest=d_rest.to_pure_dict(),
    d_opt=static.d_tx.init(d_params),
    ema=jax.tree.map(jax.numpy.copy, g_params) if config.training.ema_decay else {},
    lecam={"real": jax.numpy.zeros(()), "fake": jax.numpy.zeros(())},
  )
  return state, static


# ----------------------------------------------------------------------------- taming, Open-MAGVIT2, TiTok
def family_step(family: str, tmp: str):
  """vqtok's jitted step for ``family`` as tests/test_train_parity_<family>.py builds it: ``(step, state, extra)``.

  The configs are the step-parity tests' own (the presets' recipes on the converted
  reduced tokenizers), with ``disc_start`` 0 (the GAN on from the first step) and,
  for taming, no EMA (taming keeps none; the test checks one the golden script adds).
  ``step(state, batch)`` returns ``(state, metrics)``.
  """
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  import step_parity as P  # noqa: PLC0415  (tests/; it needs the tests' helpers)

  test = importlib.import_module(f"test_train_parity_{family}")
  gold = np.load(test.GOLD / "golden.npz")
  if family == "titok":
    tok, tok_config, _ = P.convert("titok", str(test.TOKENIZER))
    _, g_params, g_rest = files.pure(tok)
    teacher, t_arrays = test._teacher(gold, files.arrays(tok), tok_config)
    config = test._config(tok_config, gold)
    config.training.num_steps = 1000  # the cosine's length, as the reference side's
    abstract, static = abstract_train_state(config)
    zeros = jax.jit(lambda: jax.tree.map(lambda a: jax.numpy.zeros(a.shape, a.dtype), abstract))()
    state = zeros.replace(g_params=g_params, g_rest=g_rest, g_opt=jax.jit(static.g_tx.init)(g_params), ema=g_params)
    state = jax.tree.map(jax.numpy.array, state)  # its own buffers (donated below)
    fn = jax.jit(make_train_step(config, static, with_gan=False, teacher=teacher), donate_argnums=0)
    return lambda st, batch: fn(st, batch, None, t_arrays), state, config
  lpips = P.lpips_npz(tmp, gold["lpips_checksum"])
  if family == "taming":
    tok, tok_config, _ = pretrained.convert("taming", str(test.TOKENIZER))
    config = test._config(tok_config, gold, lpips)
    config.training.ema_decay = 0.0
  else:
    tok, tok_config, _ = pretrained.convert("open-magvit2", str(test.TOKENIZER), ema=False)
    config = test._config(tok_config, lpips, gold)
  config.loss.disc_start = 0
  config = config_lib.validate_config(config)
  d_torch = reader.read_checkpoint(str(test.GOLD / "d_init.pt"))["discriminator"]
  state, static = P.initial_state(config, tok, d_torch, "d_init.pt")
  if not config.training.ema_decay:
    state = state.replace(ema={})
  perceptual_fn, perceptual_params = loop._perceptual(config)
  assert loop.gan_phase(config, 0) == (True, True)
  fn = jax.jit(make_train_step(config, static, with_gan=True, perceptual=perceptual_fn), donate_argnums=0)
  return lambda st, batch: fn(st, batch, perceptual_params), state, config


def time_family(args, tmp):
  """One full step of vqtok and of ``args.reference_family``'s reference, alternating rounds, best of each."""
  step, state, config = family_step(args.reference_family, tmp)
  rs = np.random.RandomState(args.seed)
  size = int(config.image_size)
  x = rs.uniform(-1, 1, (args.batch, size, size, 3)).astype(np.float32)
  np.save(os.path.join(tmp, "batch.npy"), x)
  batch = {"image": jax.numpy.asarray(x)}
  t = time.perf_counter()
  state, m = step(state, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  cmd = [args.torch_python, FAMILY_WORKER, args.reference_family, args.reference]
  cmd += [f"--batch={os.path.join(tmp, 'batch.npy')}", f"--steps={args.steps_per_round}"]
  ours, theirs, load = [], [], [f"{v:.2f}" for v in os.getloadavg()]
  for _ in range(args.rounds):
    for _ in range(args.steps_per_round):
      t = time.perf_counter()
      state, m = step(state, batch)
      jax.block_until_ready(m)
      ours.append(time.perf_counter() - t)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    theirs += json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])["seconds"]
  out = {"vqtok_step_s": min(ours), "reference_step_s": min(theirs), "vqtok_compile_s": compile_s}
  out.update(image_size=size, batch=args.batch, loadavg=load, metrics=sorted(m))
  out["ratio_reference_over_vqtok"] = out["reference_step_s"] / out["vqtok_step_s"]
  return out


def random_lpips_file(directory) -> str:
  """Random LPIPS weights in vqtok's .npz layout (timing only)."""
  path = os.path.join(directory, "lpips_random.npz")
  files.write_npz(path, files.arrays(perceptual.LPIPS(rngs=nnx.Rngs(0))))
  return path


def time_steps(args, init_pt, tmp):
  tok, tok_config, _ = pretrained.convert("llamagen", init_pt)
  config = config_for(tok_config, args, gan=True, lpips=random_lpips_file(tmp))
  state, static = initial_state(config, tok)
  perceptual_fn, perceptual_params = loop._perceptual(config)
  fn = jax.jit(make_train_step(config, static, with_gan=True, perceptual=perceptual_fn), donate_argnums=0)
  rs = np.random.RandomState(args.seed)
  x = rs.uniform(-1, 1, (args.batch, args.image_size, args.image_size, 3)).astype(np.float32)
  np.save(os.path.join(tmp, "batch.npy"), x)
  batch = {"image": jax.numpy.asarray(x)}
  t = time.perf_counter()
  state, m = fn(state, batch, perceptual_params)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  ours, theirs = [], []
  for _ in range(args.rounds):
    for _ in range(args.steps_per_round):
      t = time.perf_counter()
      state, m = fn(state, batch, perceptual_params)
      jax.block_until_ready(m)
      ours.append(time.perf_counter() - t)
    r = worker(args, "time", f"--init={init_pt}", f"--batch={os.path.join(tmp, 'batch.npy')}")
    theirs += r["seconds"]
  out = {"vqtok_step_s": min(ours), "llamagen_step_s": min(theirs), "vqtok_compile_s": compile_s}
  out["ratio_llamagen_over_vqtok"] = out["llamagen_step_s"] / out["vqtok_step_s"]
  return out


def run_side_by_side(args, init_pt, tmp):
  tok, tok_config, _ = pretrained.convert("llamagen", init_pt)
  config = config_for(tok_config, args, gan=False, lpips="")
  data = pipeline.make_dataset(config, split="train", batch_size=args.batch, seed=args.seed)
  batches = np.stack([np.asarray(next(data)["image"]) for _ in range(args.steps)])
  held_out = np.concatenate([np.asarray(b["image"]) for b in pipeline.make_dataset(config, split="eval", batch_size=4)])
  np.save(os.path.join(tmp, "batches.npy"), batches)
  np.save(os.path.join(tmp, "eval.npy"), held_out)
  t = time.perf_counter()
  worker(args, "run", f"--init={init_pt}", f"--batches={tmp}/batches.npy", f"--eval={tmp}/eval.npy",
         f"--eval_every={args.eval_every}", f"--out={tmp}/ref.npz")  # fmt: skip
  ref_s = time.perf_counter() - t
  ref = np.load(os.path.join(tmp, "ref.npz"))

  state, static = initial_state(config, tok)
  fn = jax.jit(make_train_step(config, static, with_gan=False, perceptual=None), donate_argnums=0)
  graphdef = nnx.graphdef(tok)

  @jax.jit
  def reconstruct(g_params, g_rest, x):
    model = nnx.merge(graphdef, g_params, g_rest)
    return model(x)[0]

  ours, losses = {}, []
  t = time.perf_counter()
  for s in range(args.steps + 1):
    if s % args.eval_every == 0 or s == args.steps:
      ours[s] = np.asarray(reconstruct(state.g_params, state.g_rest, held_out))
    if s < args.steps:
      state, m = fn(state, {"image": jax.numpy.asarray(batches[s])}, {})
      losses.append(float(m["loss"]))
  our_s = time.perf_counter() - t
  score = scorer(args)
  curve = {"step": sorted(ours), "vqtok": [score(held_out, ours[s]) for s in sorted(ours)]}
  curve["llamagen"] = [score(held_out, ref[f"step{s}"]) for s in curve["step"]]
  curve["loss"] = {"vqtok": losses, "llamagen": ref["losses"].tolist()}
  curve["seconds"] = {"vqtok": our_s, "llamagen": ref_s}
  return curve


def scorer(args):
  lpips_fn = None
  if args.lpips_weights:
    net = perceptual.load_lpips(args.lpips_weights)
    lpips_fn = jax.jit(lambda a, b: net(a, b))

  def score(x, y):
    a = np.clip((x + 1) * 127.5, 0, 255)
    b = np.clip((np.asarray(y) + 1) * 127.5, 0, 255)
    out = {"psnr": float(np.mean(metrics.psnr(a, b))), "ssim": float(np.mean(metrics.ssim(a, b)))}
    if lpips_fn is not None:
      out["lpips"] = float(np.mean(lpips_fn(x, np.clip(y, -1, 1))))
    return out

  return score


def plot(curve, path):
  import matplotlib  # noqa: PLC0415  (only the plot needs it)

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  keys = [k for k in ("psnr", "ssim", "lpips") if k in curve["vqtok"][0]]
  fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4.2 * (len(keys) + 1), 3.4))
  for ax, key in zip(axes, keys):
    for side, style in (("vqtok", "-o"), ("llamagen", "--s")):
      ax.plot(curve["step"], [v[key] for v in curve[side]], style, ms=3, label=side)
    ax.set_xlabel("step")
    ax.set_title(f"held-out {key.upper()}")
    ax.legend()
  ax = axes[-1]
  for side, style in (("vqtok", "-"), ("llamagen", "--")):
    ax.plot(curve["loss"][side], style, lw=1, label=side)
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_title("training loss")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main():
  args = parse()
  print(describe_machine())
  figures = {}
  if args.reference_family != "llamagen":
    with tempfile.TemporaryDirectory() as tmp:
      figures["time"] = t = time_family(args, tmp)
    print(
      f"{args.reference_family}: one full step, batch {args.batch} at {t['image_size']} px:"
      f" vqtok {t['vqtok_step_s']:.3f} s (compiled in {t['vqtok_compile_s']:.0f} s),"
      f" reference {t['reference_step_s']:.3f} s: reference / vqtok = {t['ratio_reference_over_vqtok']:.2f}"
      f" (load average {' '.join(t['loadavg'])})"
    )
    if args.json:
      with open(args.json, "w") as f:
        json.dump(figures, f, indent=1)
    return
  with tempfile.TemporaryDirectory() as tmp:
    init_pt = os.path.join(tmp, "init.pt")
    figures["params"] = worker(args, "init", f"--out={init_pt}", f"--seed={args.seed}")["params"]
    if not args.skip_time:
      figures["time"] = time_steps(args, init_pt, tmp)
      t = figures["time"]
      print(
        f"one full step, batch {args.batch} at {args.image_size} px (G + D, LPIPS, GAN):"
        f" vqtok {t['vqtok_step_s']:.3f} s"
        f" (compiled in {t['vqtok_compile_s']:.0f} s), LlamaGen {t['llamagen_step_s']:.3f} s:"
        f" LlamaGen / vqtok = {t['ratio_llamagen_over_vqtok']:.2f}"
      )
    if args.steps:
      curve = run_side_by_side(args, init_pt, tmp)
      figures["run"] = curve
      for i, s in enumerate(curve["step"]):
        print(f"step {s:4d}: " + "  ".join(f"{side} {curve[side][i]}" for side in ("vqtok", "llamagen")))
      if args.plot:
        plot(curve, args.plot)
        print(f"wrote {args.plot}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  main()
