"""End-to-end training: every quantizer family, resume after a kill, 1 vs 8
devices, two processes vs one, NaN detection, config validation."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ROOT, load_config, read_losses

from vqtok import config as config_lib
from vqtok.data import pipeline
from vqtok.training import loop
from vqtok.training.checkpoint import Checkpointer
from vqtok.training.loop import NonFiniteLossError, train_and_evaluate

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)

# Most runs use the runlocal config unchanged (6 steps, checkpoints every 2,
# GAN from step 3), so the persistent compilation cache set in conftest.py
# serves every run after the first one.


VARIANTS = {  # name: (quantizer spec, other config overrides)
  # FSQ in a bfloat16 model, with VidTok's FSQ losses annealed over the first 2 steps (one run, one compile, for both).
  "fsq_bf16_vidtok_losses": (
    {"type": "fsq", "levels": (8, 5, 5, 5), "bound": "wide", "entropy_weight": 0.1, "commitment_weight": 0.25}
    | {"entropy_anneal_steps": 2, "entropy_anneal_factor": 3.0},
    {"model.dtype": "bfloat16"},
  ),
  "vq_ema": ({"type": "vq", "codebook_size": 64, "ema_decay": 0.9, "restart_threshold": 0.01}, {}),
  "lfq": ({"type": "lfq", "bits": 4}, {}),
  "bsq": ({"type": "bsq", "bits": 4}, {}),
  "ibq": ({"type": "ibq", "codebook_size": 64, "entropy_weight": 0.05}, {}),
  "residual_vq": (
    {"type": "residual", "num_levels": 2, "quantizer": {"type": "vq", "codebook_size": 32}},
    {"loss.gan_loss": "non_saturating", "loss.lecam_weight": 0.1, "loss.r1_weight": 1.0},
  ),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_few_steps_with_each_quantizer_family(tmp_path, name):
  spec, overrides = VARIANTS[name]
  # GAN from step 0: one compiled step per variant (the no-GAN step is
  # covered by every other test here).
  # One checkpoint, at the end: saving is not what these runs test.
  c = load_config(**{"training.num_steps": 3, "loss.disc_start": 0, "training.checkpoint_every": 1000, **overrides})
  c.quantizer = spec
  summary = train_and_evaluate(c, str(tmp_path), progress=False)
  losses = read_losses(str(tmp_path))
  assert sorted(losses) == [1, 2, 3]
  assert all(math.isfinite(v) for v in losses.values())
  final = summary["final_metrics"]
  assert "d_loss" in final and "gan_weight" in final  # GAN steps ran
  assert final["codebook/usage"] > 0
  if spec.get("entropy_anneal_steps"):  # the third step's weight: the schedule counted the steps
    assert final["codebook/entropy_weight"] == pytest.approx(0.1) and "quantizer/entropy" in final
  if "loss.lecam_weight" in overrides:
    assert "loss/lecam" in final and "loss/r1" in final


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, reference_run):
  want = read_losses(reference_run)
  assert sorted(want) == [1, 2, 3, 4, 5, 6]

  killed = str(tmp_path / "killed")
  cmd = [
    sys.executable,
    os.path.join(ROOT, "train.py"),
    "--config",
    os.path.join(ROOT, "configs/tiny.py:runlocal"),
    f"--workdir={killed}",
  ]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(killed, "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)):
      break
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  ckpt = Checkpointer(ckpt_dir)
  killed_at = ckpt.latest_step()
  ckpt.close()
  assert killed_at is not None and killed_at < 6, "the run was not interrupted mid-way"

  summary = train_and_evaluate(load_config(), killed, progress=False)
  assert summary["start_step"] == killed_at
  got = read_losses(killed)
  for step in range(killed_at + 1, 7):
    assert got[step] == want[step], (step, got[step], want[step])  # exact on CPU


def test_same_steps_on_one_device_and_on_eight(tmp_path, reference_run):
  runs = {(-1, 1): read_losses(reference_run)}  # 8 devices
  for mesh in [(1, 1), (2, 4)]:  # 1 device; 8 with FSDP over 4
    workdir = str(tmp_path / "x".join(map(str, mesh)))
    config = load_config(**{"training.mesh": mesh, "training.checkpoint_every": 1000})  # one save, at the end
    summary = train_and_evaluate(config, workdir, progress=False)
    assert summary["final_step"] == 6
    runs[mesh] = read_losses(workdir)
  for mesh in [(1, 1), (2, 4)]:
    for step in range(1, 7):
      np.testing.assert_allclose(runs[mesh][step], runs[(-1, 1)][step], rtol=2e-5, err_msg=f"{mesh} {step}")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path, reference_run):
  want = read_losses(reference_run)

  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  procs = []
  for pid in range(2):
    cmd = [
      sys.executable,
      os.path.join(ROOT, "train.py"),
      "--config",
      os.path.join(ROOT, "configs/tiny.py:runlocal"),
      f"--workdir={tmp_path / 'two'}",
      f"--coordinator_address=127.0.0.1:{port}",
      "--num_processes=2",
      f"--process_id={pid}",
      "--config.training.checkpoint_every=1000",  # one save, at the end
    ]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  outs = [p.communicate(timeout=300)[0].decode() for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  got = read_losses(str(tmp_path / "two"))
  assert sorted(got) == [1, 2, 3, 4, 5, 6]
  for step in range(1, 7):
    np.testing.assert_allclose(got[step], want[step], rtol=1e-4)


class _PoisonAfter:
  """A training iterator whose batches turn to NaN after ``n`` good ones."""

  def __init__(self, it, n):
    self.it, self.n = it, n

  def __iter__(self):
    return self

  def __next__(self):
    b = next(self.it)
    self.n -= 1
    return b if self.n >= 0 else {**b, "image": np.full_like(b["image"], np.nan)}

  # grain's Orbax handler stores non-DatasetIterator states as bytes.
  def get_state(self):
    return json.dumps(self.it.get_state()).encode()

  def set_state(self, state):
    self.it.set_state(json.loads(state))


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  make = pipeline.make_dataset
  monkeypatch.setattr(
    loop.pipeline,
    "make_dataset",
    lambda config, **kw: _PoisonAfter(make(config, **kw), 4) if kw["split"] == "train" else make(config, **kw),
  )
  # Step 5, the first after the checkpoint of step 4, is NaN: that
  # checkpoint is not known good, so it is set aside and step 2 named.
  message = r"step 5 in .*loss/l1=nan.*; the newest good checkpoint is step 2 in .* \(step 4, saved as the run diverged"
  with pytest.raises(NonFiniteLossError, match=message):
    train_and_evaluate(load_config(), workdir, progress=False)
  monkeypatch.undo()
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.latest_step() == 2 and ckpt.good_steps() == [2]
  ckpt.close()
  assert os.listdir(os.path.join(workdir, "checkpoints", "diverged", "2")) == ["4"]
  # The run resumes cleanly from the good checkpoint.
  summary = train_and_evaluate(load_config(), workdir, progress=False)
  assert summary["start_step"] == 2 and summary["final_step"] == 6
  losses = read_losses(workdir)
  assert sorted(losses) == [1, 2, 3, 4, 5, 6] and all(math.isfinite(v) for v in losses.values())


def test_every_is_due_at_multiples_and_the_last_step_and_never_for_n_up_to_0():
  assert [s for s in range(11) if loop.every(s, 4)] == [0, 4, 8]
  assert [s for s in range(1, 11) if loop.every(s, 4, last=10)] == [4, 8, 10]
  assert [s for s in range(1, 4) if loop.every(s, 1, last=3)] == [1, 2, 3]
  assert not any(loop.every(s, n, last=10) for s in range(11) for n in (0, -1))


def test_invalid_config_fails_before_training(tmp_path):
  with pytest.raises(ValueError, match="training.batch_size"):
    load_config(**{"training.batch_size": 0})
  with pytest.raises(ValueError, match="loss.gan_loss"):
    load_config(**{"loss.gan_loss": "wasserstein"})
  with pytest.raises(ValueError, match="quantizer: FSQ levels must all be >= 2"):
    load_config(**{"quantizer.levels": (1, 5)})
  c = load_config()
  c.training.unknown_field = 1
  with pytest.raises(ValueError, match="unknown config field training.unknown_field"):
    config_lib.validate_config(c)
  res = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "train.py"),
      "--config",
      os.path.join(ROOT, "configs/tiny.py:runlocal"),
      f"--workdir={tmp_path}",
      "--config.optimizer.lr=-1",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert res.returncode != 0 and "optimizer.lr" in res.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_perceptual_loss_from_a_weights_file(tmp_path):
  from flax import nnx

  from vqtok.losses import LPIPS

  # Random weights in the converted-file layout (real ones cannot ship).
  abstract = nnx.eval_shape(lambda: LPIPS(rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  arrays = {
    "/".join(map(str, path)): (0.05 * rng.standard_normal(v.shape)).astype(np.float32)
    for path, v in nnx.to_flat_state(nnx.state(abstract))
  }
  for key in arrays:  # LPIPS's linear heads are non-negative
    if key.startswith("lin"):
      arrays[key] = np.abs(arrays[key])
  np.savez(tmp_path / "lpips.npz", **arrays)
  c = load_config(
    **{"training.num_steps": 2, "loss.perceptual_weight": 0.5, "loss.lpips_weights": str(tmp_path / "lpips.npz")}
  )
  summary = train_and_evaluate(c, str(tmp_path / "run"), progress=False)
  final = summary["final_metrics"]
  assert final["loss/perceptual"] > 0 and math.isfinite(final["loss/perceptual"])
  np.testing.assert_allclose(final["reconstruction"], final["loss/l1"] + 0.5 * final["loss/perceptual"], rtol=1e-5)
  with pytest.raises(ValueError, match="lpips_weights"):
    load_config(**{"loss.perceptual_weight": 0.5})
