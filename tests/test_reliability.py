"""Reliability: a user's mistake or a machine fault ends in one clear line, and nothing is lost.

Each test reproduces the mistake or the fault and checks the exit status or
exception, the message, and what is on disk afterwards.
"""

import errno
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import ROOT, load_config, read_losses, snapshot

from vqtok import faults, files
from vqtok.training import loop
from vqtok.training import workdir as workdir_lib
from vqtok.training.checkpoint import Checkpointer, CheckpointSaveError, load_tokenizer
from vqtok.training.loop import NonFiniteLossError, train_and_evaluate

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py)

TRAIN = [sys.executable, os.path.join(ROOT, "train.py"), "--config", os.path.join(ROOT, "configs/tiny.py:runlocal")]


def _run(args, **kw):
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def _one_error_line(res):
  lines = [line for line in res.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error: ")]
  assert res.returncode == 2, res.stderr
  assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
  return errors[0]


# ---- one owner per workdir ----


def test_second_trainer_refuses_at_once_naming_the_holder(tmp_path):
  workdir = str(tmp_path)
  with workdir_lib.lock(workdir):
    with pytest.raises(workdir_lib.WorkdirBusyError, match=rf"in use by another training run .*\"pid\": {os.getpid()}"):
      train_and_evaluate(load_config(), workdir, progress=False)
    t = time.time()
    res = _run([*TRAIN, f"--workdir={workdir}"])
    line = _one_error_line(res)
    assert f'"pid": {os.getpid()}' in line and time.time() - t < 60
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  workdir = str(tmp_path)
  code = f"from vqtok.training import workdir as w\nwith w.lock({workdir!r}):\n  print('held', flush=True)\n"
  code += "  import time; time.sleep(60)"
  holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(workdir_lib.WorkdirBusyError), workdir_lib.lock(workdir):
    pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with workdir_lib.lock(workdir):  # taken over: the kernel released it with the process
    pass


# ---- the run's identity is checked before anything is written ----


@pytest.fixture(scope="module")
def trained(tmp_path_factory, reference_run):
  workdir = str(tmp_path_factory.mktemp("run") / "run")
  shutil.copytree(reference_run, workdir)
  return workdir


def test_another_architecture_on_an_existing_run_changes_nothing(trained):
  before = snapshot(trained)
  with pytest.raises(ValueError, match=r"another tokenizer \(quantizer\.levels differs\).*--config\.init_from"):
    train_and_evaluate(load_config(**{"quantizer.levels": (5, 5, 5, 8)}), trained, progress=False)
  res = _run([*TRAIN, f"--workdir={trained}", "--config.model.channels=16"])
  assert "model.channels differs" in _one_error_line(res)
  assert snapshot(trained) == before


def test_eval_and_tokenize_read_the_runs_config_and_refuse_a_contradiction(trained, tmp_path):
  before = snapshot(trained)
  res = _run([sys.executable, "eval.py", "--config", "configs/tiny.py:runlocal", f"--tokenizer={trained}",
              "--config.quantizer.levels=(5,5,5,8)"])  # fmt: skip
  assert "quantizer.levels differs" in _one_error_line(res)
  assert snapshot(trained) == before
  res = _run([sys.executable, "eval.py", f"--tokenizer={trained}", f"--output={tmp_path}", "--num_images=8"])
  assert res.returncode == 0, res.stderr  # no --config needed
  assert os.path.exists(tmp_path / "eval_6.json")


# ---- faults: a full disk, weights that blew up, a diverged run ----


def _train_without_space_check(workdir, *flags):
  """train.py with the free-space check off, so that Orbax's own writers meet the full disk."""
  code = (
    "import runpy, sys; from vqtok.training import checkpoint; checkpoint.SPACE_MARGIN = 0; "
    f"sys.argv = {['train.py', f'--workdir={workdir}', *TRAIN[2:], *flags]!r}; "
    "runpy.run_path('train.py', run_name='__main__')"
  )
  return _run([sys.executable, "-c", code])


def test_a_real_full_disk_ends_in_one_line_and_the_run_resumes_elsewhere(small_disk, tmp_path, reference_run):
  # A 4 MiB filesystem holds one or two checkpoints (1.5-1.8 MiB each as OCDBT
  # packs them, and a save briefly needs more): Orbax's writers fail in their
  # background threads at one of the saves, which one depends on that.
  workdir = os.path.join(small_disk(4 << 20), "run")
  res = _train_without_space_check(workdir, "--config.training.checkpoint_every=2")
  line = _one_error_line(res)
  assert [x for x in res.stderr.splitlines() if x.strip()] == [line]  # no writer noise at all
  m = re.fullmatch(
    rf"error: saving the checkpoint of step (\d) to {workdir}/checkpoints failed: No space left on device"
    r" \(\S+ \w?i?B free there\); the run stopped; (?:newest complete checkpoint: step (\d)|no complete checkpoint"
    r" yet)  \(--debug for the traceback\)",
    line,
  )
  assert m, line
  failed, newest = int(m[1]), int(m[2] or 0)
  assert newest == failed - 2, line
  steps = [str(s) for s in range(2, failed, 2)]
  listing = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  assert listing == [*steps, "good.json"] if steps else listing in ([], ["good.json"]), listing  # nothing partial
  assert max(read_losses(workdir)) == failed  # stopped at the failed save
  roomy = str(tmp_path / "roomy")
  shutil.copytree(workdir, roomy)
  summary = train_and_evaluate(load_config(), roomy, progress=False)
  assert summary["start_step"] == newest and summary["final_step"] == 6
  want, got = read_losses(reference_run), read_losses(roomy)
  np.testing.assert_allclose([got[6]], [want[6]], rtol=1e-6)


def test_a_save_that_cannot_fit_is_refused_before_writing(small_disk):
  directory = os.path.join(small_disk(3 << 20), "checkpoints")
  state = {"w": jax.random.normal(jax.random.key(0), (1 << 18,))}  # 1 MiB that does not compress
  ckpt = Checkpointer(directory)
  ckpt.save(1, state)
  ckpt.save(2, state)  # fits: about 2 MiB are free
  message = r"step 3 to .*: it needs about 1\.\d MiB and \d+\.\d [KM]iB is free there; .* complete checkpoint: step 2"
  with pytest.raises(CheckpointSaveError, match=message):
    ckpt.save(3, state)
  ckpt.close()
  assert sorted(os.listdir(directory)) == ["1", "2"]


def test_a_failed_write_is_found_in_any_form():
  tensorstore = ValueError(
    'RESOURCE_EXHAUSTED: Error writing "d_opt.1.0.count/0" in OCDBT database at local file "/x/": Failed to'
    " write 69198 bytes to file 19: No space left on device [os_error_code='28']"
  )
  assert faults.write_errno(tensorstore) == errno.ENOSPC
  wrapped = RuntimeError("save failed")
  wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
  assert faults.write_errno(wrapped) == errno.EDQUOT
  assert faults.write_errno(FileNotFoundError(errno.ENOENT, "No such file")) is None
  assert faults.write_errno(ValueError("bad shape [Errno 28] in a name")) == errno.ENOSPC  # the text decides
  assert faults.describe(OSError(errno.ENOSPC, "x"), "/no/such/dir/f").startswith(
    "writing /no/such/dir/f failed: No space left on device ("
  )


def test_only_the_writers_echoes_of_a_failure_are_kept_off_the_terminal():
  noise = faults._WriterNoise()

  def record(name, path, message, error=None):
    exc_info = (type(error), error, None) if error else None
    return logging.LogRecord(name, logging.ERROR, path, 1, message, None, exc_info)

  gone = ValueError('NOT_FOUND: Error writing "g_opt.nu/0" in OCDBT database at "/r/4.orbax-checkpoint-tmp/"')
  echo = record("asyncio", "/usr/lib/asyncio/base_events.py", "_GatheringFuture exception was never retrieved", gone)
  mine = record("absl", "/x/vqtok/data/sources.py", "skipping unreadable image a.png ([Errno 13] Permission denied)")
  try:
    assert noise.filter(echo) and noise.filter(mine)  # before a failure, everything is shown
    full = ValueError("RESOURCE_EXHAUSTED: Error writing x in OCDBT database: No space left [os_error_code=28]")
    assert not noise.filter(record("absl", "/x/orbax/checkpoint/future.py", "thread raised", full))
    assert not noise.filter(echo)  # after it, its echoes are dropped
    assert noise.filter(mine)  # and other warnings are not
  finally:
    faults._failed.clear()


def test_full_disk_stops_the_run_at_once_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  real_save = ocp.CheckpointManager.save

  def save(self, step, *a, **kw):
    if step == 4:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(self, step, *a, **kw)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  with pytest.raises(CheckpointSaveError, match=r"step 4 to .*checkpoints failed: No space left on device \(.* free"):
    train_and_evaluate(load_config(), workdir, progress=False)
  monkeypatch.undo()
  assert max(read_losses(workdir)) == 4  # stopped at once: no step after the failed save
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.latest_step() == 2
  ckpt.close()
  summary = train_and_evaluate(load_config(), workdir, progress=False)  # the previous checkpoint resumes
  assert summary["start_step"] == 2 and summary["final_step"] == 6


def test_weights_problem_sees_nan_and_divergence():
  c = load_config()
  state, _ = loop.init_train_state(c)
  assert loop.weights_problem(state) == ""
  bad = jax.tree.map(lambda x: x, state)
  leaf = jax.tree.leaves(bad.g_params)[0]
  g = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(1e28) if x is leaf else x, bad.g_params)
  assert "diverged (max |w| = 1e+28" in loop.weights_problem(bad.replace(g_params=g))
  e = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), bad.ema)
  assert loop.weights_problem(bad.replace(ema=e)) == "are not finite"


def test_blown_up_weights_are_never_saved(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  real = loop.weights_problem
  monkeypatch.setattr(loop, "weights_problem", lambda s: "have diverged (test)" if int(s.step) == 4 else real(s))
  message = r"step 4 have diverged .* not saved; the newest good checkpoint is step 2 in .*: rerun the same command"
  with pytest.raises(NonFiniteLossError, match=message + r" with a lower --config.optimizer.lr to resume from step 2$"):
    train_and_evaluate(load_config(), workdir, progress=False)
  monkeypatch.undo()
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.all_steps() == [2] and ckpt.good_steps() == [2]
  ckpt.close()


def test_a_diverged_run_resumes_from_its_last_good_checkpoint(tmp_path):
  # The user's case: a learning rate of 1e6 blows the weights up at step 2
  # (finite, but every later step is NaN); the checkpoint of step 2 must not
  # be the one the message sends the user back to.
  workdir = str(tmp_path)
  wild = {"optimizer.lr": 1e6, "optimizer.grad_clip": 0.0, "training.checkpoint_every": 1}
  ckpt_dir = os.path.join(workdir, "checkpoints")
  with pytest.raises(NonFiniteLossError) as e:
    train_and_evaluate(load_config(**wild), workdir, progress=False)
  assert re.search(
    rf"^non-finite value at step 3 in loss/l1.*; the newest good checkpoint is step 1 in {ckpt_dir} \(step 2, saved"
    rf" as the run diverged, moved to {ckpt_dir}/diverged/1\): rerun the same command with a lower"
    r" --config.optimizer.lr to resume from step 1$",
    str(e.value),
  ), str(e.value)
  assert sorted(os.listdir(ckpt_dir)) == ["1", "diverged", "good.json"]
  assert os.listdir(os.path.join(ckpt_dir, "diverged", "1")) == ["2"]
  summary = train_and_evaluate(load_config(**{**wild, "optimizer.lr": 2e-3}), workdir, progress=False)
  assert summary["start_step"] == 1 and summary["final_step"] == 6
  losses = read_losses(workdir)
  assert all(np.isfinite(losses[k]) for k in range(4, 7))
  ckpt = Checkpointer(ckpt_dir)
  assert ckpt.newest_good() == 6 and ckpt.latest_step() == 6
  ckpt.close()


def test_rotation_never_deletes_the_newest_good_checkpoint(tmp_path):
  ckpt = Checkpointer(str(tmp_path), keep=1)
  state = {"w": jnp.zeros(4)}
  ckpt.save(1, state)
  ckpt.mark_good(1)
  for step in (2, 3):  # not (yet) judged good
    ckpt.save(step, state)
  assert ckpt.all_steps() == [1, 3] and ckpt.newest_good() == 1
  ckpt.mark_good(3)
  assert ckpt.all_steps() == [3]
  ckpt.close()
  assert Checkpointer(str(tmp_path)).good_steps() == [3]  # good.json


# ---- validation up front, short errors ----


@pytest.mark.parametrize(
  "flag,message",
  [
    ("--config.optimizer.lr=nan", "optimizer.lr=nan must be a finite number"),
    ("--config.eval.batch_size=12", "eval.batch_size=12 must be a multiple of the 8 devices"),
    ("--config.data.source=folder", "data.source='folder' needs data.path"),
    ("--config.eval.inception_weights=/no/such.npz", "eval.inception_weights='/no/such.npz': no such file"),
    ("--config.init_from=/no/such/tok", "init_from='/no/such/tok': no such tokenizer"),
    ("--nope=1", "Unknown command line flag 'nope'"),
  ],
)
def test_bad_config_or_flag_is_one_line_before_any_work(tmp_path, flag, message):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  t = time.time()
  res = _run([*TRAIN, f"--workdir={tmp_path}", flag], env=env)
  assert message in _one_error_line(res)
  assert time.time() - t < 60 and not os.listdir(tmp_path)


def test_misspelt_preset_and_missing_folder_are_one_line(tmp_path):
  res = _run([sys.executable, "train.py", "--config=configs/tinyy.py", f"--workdir={tmp_path}"])
  assert "No such file or directory: 'configs/tinyy.py'" in _one_error_line(res)
  res = _run([sys.executable, "train.py", "--config=configs/tiny.py:runlocall", f"--workdir={tmp_path}"])
  assert "unknown variant 'runlocall'" in _one_error_line(res)
  res = _run([sys.executable, "-m", "vqtok.tokenize", "encode", f"--tokenizer={tmp_path}/none", "--output=x"])
  assert "no such tokenizer directory or training workdir" in _one_error_line(res)
  res = _run([sys.executable, "-m", "vqtok.convert", "llamagen", str(tmp_path / "none.pt"), str(tmp_path / "o")])
  assert "none.pt: no such file" in _one_error_line(res)
  assert not os.path.exists(tmp_path / "o")


# ---- soak: five kill -9 at random moments, some during a save ----


def test_five_kills_then_resume_give_the_uninterrupted_weights(tmp_path, reference_run):
  config = load_config()
  full = reference_run  # the same config, trained uninterrupted (read only here)
  killed = str(tmp_path / "killed")
  ckpt_dir = os.path.join(killed, "checkpoints")
  rng = random.Random(0)
  during_save = 0
  for attempt in range(5):
    proc = subprocess.Popen([*TRAIN, f"--workdir={killed}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    # Alternate: kill as soon as a save is in flight (a temporary directory
    # exists), or a random moment after the process started training.
    wait_for_save = attempt % 2 == 0
    delay = rng.uniform(0.0, 3.0)
    start = time.time()
    while proc.poll() is None and time.time() < deadline:
      listing = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
      saving = any("tmp" in d for d in listing)
      if (wait_for_save and saving) or (not wait_for_save and time.time() - start > 1.5 + delay):
        during_save += saving
        break
      time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert during_save >= 1, "no kill landed during a save"
  summary = train_and_evaluate(config, killed, progress=False)
  assert summary["final_step"] == 6
  for ema in (True, False):
    want = files.arrays(load_tokenizer(config, full, use_ema=ema)[0])
    got = files.arrays(load_tokenizer(config, killed, use_ema=ema)[0])
    assert want.keys() == got.keys()
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
