"""End-to-end training: every quantizer family, resume after a kill, 1 vs 8
devices, two processes vs one, NaN detection, config validation."""

import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from vqtok import config as config_lib
from vqtok.training import Checkpointer, NonFiniteLossError, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(arg="runlocal", **overrides):
  spec = importlib.util.spec_from_file_location("tiny", os.path.join(ROOT, "configs", "tiny.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(arg)
  for dotted, value in overrides.items():
    node = c
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config_lib.validate_config(c)


def read_losses(workdir):
  """step -> loss, the last record of each step (a resumed run repeats some)."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if "loss" in rec:
        out[rec["step"]] = rec["loss"]
  return out


VARIANTS = {  # name: (quantizer spec, other config overrides)
    "fsq_bf16": ({"type": "fsq", "levels": (8, 5, 5, 5)}, {"model.dtype": "bfloat16"}),
    "vq_ema": ({"type": "vq", "codebook_size": 64, "ema_decay": 0.9, "restart_threshold": 0.01}, {}),
    "lfq": ({"type": "lfq", "bits": 4}, {}),
    "bsq": ({"type": "bsq", "bits": 4}, {}),
    "residual_vq": ({"type": "residual", "num_levels": 2, "quantizer": {"type": "vq", "codebook_size": 32}},
                    {"loss.gan_loss": "non_saturating", "loss.lecam_weight": 0.1, "loss.r1_weight": 1.0}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_few_steps_with_each_quantizer_family(tmp_path, name):
  spec, overrides = VARIANTS[name]
  c = load_config(**{"training.num_steps": 4, "loss.disc_start": 2, **overrides})
  c.quantizer = spec
  summary = train_and_evaluate(c, str(tmp_path), progress=False)
  losses = read_losses(str(tmp_path))
  assert sorted(losses) == [1, 2, 3, 4]
  assert all(math.isfinite(v) for v in losses.values())
  final = summary["final_metrics"]
  assert "d_loss" in final and "gan_weight" in final  # GAN steps ran
  assert final["codebook/usage"] > 0
  if "loss.lecam_weight" in overrides:
    assert "loss/lecam" in final and "loss/r1" in final


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
  overrides = {"training.num_steps": 16, "training.checkpoint_every": 2}
  full = str(tmp_path / "full")
  train_and_evaluate(load_config(**overrides), full, progress=False)
  want = read_losses(full)

  killed = str(tmp_path / "killed")
  cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config", os.path.join(ROOT, "configs/tiny.py:runlocal"),
         f"--workdir={killed}"] + [f"--config.{k}={v}" for k, v in overrides.items()]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(killed, "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)):
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  ckpt = Checkpointer(ckpt_dir)
  killed_at = ckpt.latest_step()
  ckpt.close()
  assert killed_at is not None and killed_at < 16, "the run was not interrupted mid-way"

  summary = train_and_evaluate(load_config(**overrides), killed, progress=False)
  assert summary["start_step"] == killed_at
  got = read_losses(killed)
  for step in range(killed_at + 1, 17):
    assert got[step] == want[step], (step, got[step], want[step])  # exact on CPU


@pytest.mark.parametrize("mesh", [(1, 1), (2, 4)])
def test_same_steps_on_one_device_and_on_eight(tmp_path, mesh):
  base = train_and_evaluate(load_config(**{"training.num_steps": 3}), str(tmp_path / "eight"), progress=False)
  other = train_and_evaluate(
      load_config(**{"training.num_steps": 3, "training.mesh": mesh}), str(tmp_path / "other"), progress=False)
  a, b = read_losses(str(tmp_path / "eight")), read_losses(str(tmp_path / "other"))
  for step in (1, 2, 3):
    np.testing.assert_allclose(b[step], a[step], rtol=2e-5)
  assert base["final_step"] == other["final_step"] == 3


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path):
  steps = {"training.num_steps": 4}
  train_and_evaluate(load_config(**steps), str(tmp_path / "one"), progress=False)
  want = read_losses(str(tmp_path / "one"))

  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  procs = []
  for pid in range(2):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config", os.path.join(ROOT, "configs/tiny.py:runlocal"),
           f"--workdir={tmp_path / 'two'}", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
           f"--process_id={pid}", "--config.training.num_steps=4"]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  outs = [p.communicate(timeout=300)[0].decode() for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  got = read_losses(str(tmp_path / "two"))
  for step in range(1, 5):
    np.testing.assert_allclose(got[step], want[step], rtol=1e-4)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path)
  train_and_evaluate(load_config(**{"training.num_steps": 4}), workdir, progress=False)
  bad = load_config(**{"training.num_steps": 8, "loss.l1_weight": float("nan")})
  with pytest.raises(NonFiniteLossError, match=r"step 5 .*reconstruction"):
    train_and_evaluate(bad, workdir, progress=False)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.latest_step() == 4
  ckpt.close()
  # The run resumes cleanly from the intact checkpoint once the value is fixed.
  summary = train_and_evaluate(load_config(**{"training.num_steps": 6}), workdir, progress=False)
  assert summary["start_step"] == 4 and summary["final_step"] == 6


def test_invalid_config_fails_before_training(tmp_path):
  with pytest.raises(ValueError, match="training.batch_size"):
    load_config(**{"training.batch_size": 0})
  with pytest.raises(ValueError, match="loss.gan_loss"):
    load_config(**{"loss.gan_loss": "wasserstein"})
  c = load_config()
  c.training.unknown_field = 1
  with pytest.raises(ValueError, match="unknown config field training.unknown_field"):
    config_lib.validate_config(c)
  res = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), "--config", os.path.join(ROOT, "configs/tiny.py:runlocal"),
       f"--workdir={tmp_path}", "--config.optimizer.lr=-1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert res.returncode != 0 and "optimizer.lr" in res.stderr
  assert not os.path.exists(tmp_path / "checkpoints")
