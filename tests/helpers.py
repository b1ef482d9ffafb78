"""Shared by the end-to-end tests: the tiny preset's runlocal config, logs."""

import importlib.util
import json
import os
import shutil

import numpy as np

from vqtok import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def golden_cases(path, cases=None):
  """A parity script's ``<case>/<name>`` arrays as ``{case: {name: array}}`` (every case in the file if None)."""
  with np.load(path) as f:
    flat = dict(f)
  cases = sorted({k.split("/")[0] for k in flat if "/" in k}) if cases is None else cases
  return {c: {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(c + "/")} for c in cases}


def preset(name, arg="runlocal", **overrides):
  """configs/<name>.py:<arg> (``arg=None``: no argument) with dotted-name overrides (not validated)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config() if arg is None else mod.get_config(arg)
  for dotted, value in overrides.items():
    node = c
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def load_config(arg="runlocal", **overrides):
  """configs/tiny.py:<arg> with dotted-name overrides, validated."""
  return config_lib.validate_config(preset("tiny", arg, **overrides))


def read_losses(workdir):
  """step -> loss, the last record of each step (a resumed run repeats some)."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if "loss" in rec:
        out[rec["step"]] = rec["loss"]
  return out


def snapshot(directory):
  """Every file under ``directory`` with its bytes (to check that nothing changed)."""
  out = {}
  for dirpath, _, files in os.walk(directory):
    for f in files:
      path = os.path.join(dirpath, f)
      with open(path, "rb") as fh:
        out[os.path.relpath(path, directory)] = fh.read()
  return out


def fill(directory, free):
  """Fills the filesystem of ``directory`` with one file until ``free`` bytes are left."""
  import shutil

  path = os.path.join(directory, "filler")
  with open(path, "wb") as f:
    f.write(b"\0" * max(shutil.disk_usage(directory).free - free, 0))
  return path


def resume_copy(run, dest, *, step):
  """A copy of the training workdir ``run`` at ``dest`` as it was at checkpoint ``step`` (later checkpoints and
  metric records removed), to resume from and compare with the original run's later steps."""
  shutil.copytree(run, dest)
  for name in os.listdir(os.path.join(dest, "checkpoints")):
    if name.isdigit() and int(name) > step:
      shutil.rmtree(os.path.join(dest, "checkpoints", name))
  path = os.path.join(dest, "metrics.jsonl")
  with open(path) as f:
    kept = [line for line in f if json.loads(line).get("step", 0) <= step]
  with open(path, "w") as f:
    f.writelines(kept)
  return dest
