"""Test setup: 8 fake CPU devices so sharding is exercised everywhere."""

import logging
import os
import subprocess
import tempfile

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# A persistent compilation cache for this session: the end-to-end tests build
# the same train step many times (in this process and in subprocesses, which
# inherit the variables). A fresh directory per session, so nothing carries
# over between runs.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="vqtok-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax
import orbax.checkpoint as ocp

jax.config.update("jax_numpy_rank_promotion", "raise")

# Orbax saves each replicated array on CPU "replica-parallel": every replica
# writes its 1/8 slice, one sliced copy per array and device. On 8 simulated
# devices that is some 3,000 slices per train-state save, each a small program
# compiled per shape and device after every module's jax.clear_caches (below):
# about 8 s at a module's first save, 2.5 s at later ones. In this process the
# tests save single-replica (replica 0 writes whole shards: the same files,
# read back the same); modules that set ``ORBAX_REPLICA_PARALLEL = True`` and
# every subprocess (train.py, the command lines) keep Orbax's default.
_REPLICA_PARALLEL = ocp.type_handlers.get_type_handler(jax.Array)
_SINGLE_REPLICA = ocp.type_handlers.ArrayHandler(use_replica_parallel=False)


def _save_arrays_with(handler):
  absl_log = logging.getLogger("absl")
  level = absl_log.level
  absl_log.setLevel(logging.ERROR)  # not Orbax's warning that a handler is replaced, at every switch
  try:
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
  finally:
    absl_log.setLevel(level)


_save_arrays_with(_SINGLE_REPLICA)


# Shared by the token-file and multi-host tests.
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import load_config  # noqa: E402
from PIL import Image  # noqa: E402

from vqtok import data as data_lib  # noqa: E402
from vqtok.training.checkpoint import Checkpointer  # noqa: E402
from vqtok.training.state import init_train_state, tokenizer_from_state  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A run directory with one checkpoint (random init, step 0) and config.json."""
  workdir = str(tmp_path_factory.mktemp("run"))
  config = load_config()
  state, static = init_train_state(config)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  ckpt.save(0, state)
  ckpt.wait()
  ckpt.close()
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort())
  return workdir, config, tokenizer_from_state(static, state, use_ema=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """Ten real photo crops as PNG files (names with a subdirectory)."""
  root = tmp_path_factory.mktemp("images")
  src = data_lib.SampleSource("eval")
  os.makedirs(root / "sub")
  for i in range(10):
    img = np.asarray(Image.fromarray(src[i]).resize((40, 40)))
    Image.fromarray(img).save(root / ("sub" if i % 2 else ".") / f"img{i:02d}.png")
  return str(root)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
  """configs/tiny.py:runlocal trained once, uninterrupted (6 steps); copy it before changing it."""
  from vqtok.training.loop import train_and_evaluate

  # Compiled as the modules that compare against it compile (FAST_COMPILE): a session fixture is
  # set up before their module-scoped _compile_settings, and programs compiled with and without
  # XLA's optimisations differ in the last bits.
  workdir = str(tmp_path_factory.mktemp("reference_run"))
  before = os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS")
  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    train_and_evaluate(load_config(), workdir, progress=False)
  finally:
    jax.config.update("jax_disable_most_optimizations", before not in (None, "", "0"))
    if before is None:
      os.environ.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
    else:
      os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = before
  return workdir


@pytest.fixture(autouse=True, scope="module")
def _compile_settings(request):
  """Per test module: XLA's optimisations off where the module sets ``FAST_COMPILE = True``.

  The end-to-end modules (training runs, command lines) spend most of their
  time compiling tiny programs; without XLA's optimisation passes that takes
  about half as long, and what they check (losses equal across meshes,
  processes and resumes, files and messages) compares runs made the same way.
  Parity, numerics and memory tests keep the optimised programs users run.
  Subprocesses started by such a module inherit the setting. Each module's
  compiled programs are dropped after it, so a worker's memory stays flat.
  Orbax saves single-replica unless the module sets ``ORBAX_REPLICA_PARALLEL = True``
  (above).
  """
  fast = bool(getattr(request.module, "FAST_COMPILE", False))
  replica_parallel = bool(getattr(request.module, "ORBAX_REPLICA_PARALLEL", False))
  if replica_parallel:
    _save_arrays_with(_REPLICA_PARALLEL)
  before = os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS")
  if fast:
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    jax.config.update("jax_disable_most_optimizations", True)
  yield
  if fast:
    jax.config.update("jax_disable_most_optimizations", False)
    if before is None:
      os.environ.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
    else:
      os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = before
  if replica_parallel:
    _save_arrays_with(_SINGLE_REPLICA)
  jax.clear_caches()


@pytest.fixture
def small_disk(tmp_path):
  """``mount(size)`` -> the path of a real filesystem of ``size`` bytes (tmpfs), unmounted after the test.

  The tests run as root in CI; where mounting is not permitted the test is
  skipped, saying why.
  """
  mounts = []

  def mount(size: int) -> str:
    path = tmp_path / f"disk{len(mounts)}"
    path.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
      pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip() or res.returncode}")
    mounts.append(path)
    return str(path)

  yield mount
  for path in mounts:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ---- scheduling under xdist (pyproject.toml: -n 2 --dist loadgroup) ----
#
# loadgroup hands each ungrouped test to whichever worker is free, so the tests
# of one module run on both workers and each worker builds the module's shared
# fixtures (and compiles their programs) again. Tests that share a module- or
# session-scoped fixture of this directory are grouped, so it is built once.
# The longest end-to-end modules (CI's durations) are handed out first, so the
# short tests fill both workers at the end instead of one long run leaving a
# core idle (xdist sends the groups with most tests first, then single tests in
# collection order).
RUN_FIRST = (
  "test_training",
  "test_alignment",
  "test_token_drop_training",
  "test_train_parity",
  "test_semantic_loss",
  "test_train_parity_taming",
  "test_multiscale_training",
  "test_video_training",
  "test_train_parity_magvit2",
  "test_readme",
)
_HERE = os.path.dirname(os.path.abspath(__file__))


def _shared_fixtures(item):
  """Names of the module- or session-scoped fixtures defined in tests/ that ``item`` uses."""
  names = set()
  for name, defs in item._fixtureinfo.name2fixturedefs.items():
    d = defs[-1]
    if d.scope in ("module", "session") and not name.startswith("_"):
      path = getattr(getattr(d.func, "__code__", None), "co_filename", "")
      if os.path.dirname(os.path.abspath(path)) == _HERE:
        names.add(name)
  return names


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
  if not getattr(config.option, "loadgroup", False):  # set in xdist's workers under --dist loadgroup
    return (yield)
  users = {}  # (module, fixture) -> tests
  for item in items:
    for name in _shared_fixtures(item) - {"reference_run"}:
      users.setdefault((item.module.__name__, name), []).append(item)
  shared = {m for (m, _), tests in users.items() if len(tests) > 1}
  for item in items:
    if item.get_closest_marker("xdist_group"):
      continue
    if "reference_run" in item.fixturenames:  # conftest's session run, read by two modules
      item.add_marker(pytest.mark.xdist_group("reference_run"))
    elif item.module.__name__ in shared:
      item.add_marker(pytest.mark.xdist_group(item.module.__name__))
  first = {m: i for i, m in enumerate(RUN_FIRST)}
  order = {id(item): i for i, item in enumerate(items)}
  items.sort(key=lambda item: (first.get(item.module.__name__, len(first)), order[id(item)]))
  result = yield  # xdist appends "@group" to the ids here
  # pytest 9.2 reads an item's id from ``_id``, and xdist 3.8 still writes ``_nodeid``: without
  # this the groups are silently ignored (every test scheduled alone).
  for item in items:
    names = sorted(
      {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    )
    if names and not item.nodeid.endswith("@" + "_".join(names)) and hasattr(item, "_id"):
      from _pytest.nodeid import coerce_node_id  # only pytest >= 9.2 has it (and ``_id``)

      item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(names)}")
  return result
