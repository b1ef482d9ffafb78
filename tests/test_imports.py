"""The import graph of ``vqtok/``: layers that only import downwards, no cycle, no hidden imports.

Read from the modules' source (``ast``), not by importing them: a module's
top-level imports (including those under a top-level ``if``/``try``) are its
edges. Importing ``pkg.sub`` runs ``pkg/__init__.py`` too, so that is an edge
to ``pkg`` unless the importer lies inside ``pkg`` (Python has begun the
package already).
"""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Lowest first. A module may import modules of its own layer or a lower one.
#: A new module belongs in one of these (the test says so if it is in none).
LAYERS = [
  # the floor: failures, named arrays and files, devices, images
  ["vqtok", "vqtok.faults", "vqtok.files", "vqtok.sharding", "vqtok.images", "vqtok.training.distributed",
   "vqtok.config_fields", "vqtok.progress"],
  # the numerics and the input pipeline, each usable on its own
  ["vqtok.quantizers", "vqtok.models", "vqtok.losses", "vqtok.data", "vqtok.evaluation.metrics",
   "vqtok.evaluation.fid", "vqtok.evaluation.inception"],
  # the config schema, assembled from what the registries of the layer below own
  ["vqtok.config"],
  # formats on disk and what reads or writes them without a trainer
  ["vqtok.tokenizer_dir", "vqtok.feature_teacher", "vqtok.tokens", "vqtok.token_exports", "vqtok.pretrained",
   "vqtok.training.state",
   "vqtok.training.checkpoint", "vqtok.training.workdir", "vqtok.evaluation.reconstruct",
   "vqtok.evaluation.semantic", "vqtok.evaluation.report", "vqtok.evaluation", "vqtok.training"],
  # a tokenizer from a directory or a workdir
  ["vqtok.load"],
  # the trainer
  ["vqtok.training.teacher", "vqtok.training.step", "vqtok.training.loop"],
  # the command lines
  ["vqtok.cli", "vqtok.tokenize", "vqtok.export", "vqtok.convert"],
]  # fmt: skip


def _modules() -> dict[str, str]:
  out = {}
  for folder, _, names in os.walk(os.path.join(ROOT, "vqtok")):
    for name in names:
      if name.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
        out[rel.removesuffix(".__init__")] = os.path.join(folder, name)
  return out


MODULES = _modules()


def _targets(node: ast.AST) -> list[str]:
  """The vqtok modules an import statement needs."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names if a.name in MODULES]
  if not isinstance(node, ast.ImportFrom) or not node.module:
    return []
  subs = [f"{node.module}.{a.name}" for a in node.names]
  found = [s for s in subs if s in MODULES]
  if len(found) < len(subs) and node.module in MODULES:  # a name defined in the package itself
    found.append(node.module)
  return found


def _ancestors(module: str) -> set[str]:
  parts = module.split(".")
  return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _imports(module: str) -> tuple[set[str], list[tuple[int, str, str]]]:
  """``(top-level edges, [(line, target, source line) of imports inside functions])``."""
  with open(MODULES[module]) as f:
    text = f.read()
  tree, lines = ast.parse(text), text.splitlines()
  top = set(tree.body)
  for node in tree.body:
    if isinstance(node, (ast.If, ast.Try)):
      top.update(node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", []))
  edges, local = set(), []
  for node in ast.walk(tree):
    for target in _targets(node):
      if node in top:
        edges |= _ancestors(target) - _ancestors(module)
      else:
        local.append((node.lineno, target, lines[node.lineno - 1]))
  return edges, local


def _layer(module: str) -> int | None:
  """The layer of the longest prefix of ``module`` listed in ``LAYERS``."""
  best, found = -1, None
  for i, layer in enumerate(LAYERS):
    for name in layer:
      # "vqtok" is the package's own __init__ only; other names cover their submodules.
      if (module == name or (name != "vqtok" and module.startswith(name + "."))) and len(name) > best:
        best, found = len(name), i
  return found


def test_every_module_has_a_layer_and_imports_only_downwards():
  unplaced = [m for m in MODULES if _layer(m) is None]
  assert not unplaced, f"put these in a layer of LAYERS: {unplaced}"
  upward = []
  for module in MODULES:
    for target in _imports(module)[0]:
      if _layer(target) > _layer(module):
        upward.append(f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})")
  assert not upward, "\n".join(upward)


def test_no_import_cycle():
  graph = {m: _imports(m)[0] for m in MODULES}
  state, cycles = {}, []

  def visit(node, path):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
      elif nxt not in state:
        visit(nxt, path + [nxt])
    state[node] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  assert not cycles, "\n".join(cycles)


def test_imports_inside_functions_say_why():
  """A vqtok import inside a function is kept only with its reason on the line (after ``# noqa: PLC0415``)."""
  silent = []
  for module in MODULES:
    for line, target, text in _imports(module)[1]:
      reason = text.split("# noqa: PLC0415", 1)[1].strip() if "# noqa: PLC0415" in text else ""
      above = ""
      if not reason:
        with open(MODULES[module]) as f:
          above = f.read().splitlines()[line - 2].strip()
      if not reason and not above.startswith("#"):
        silent.append(f"{MODULES[module]}:{line}: {target}")
  assert not silent, "give each a reason or make it a top-level import:\n" + "\n".join(silent)


def test_loading_a_tokenizer_does_not_import_the_trainer_or_the_data_pipeline():
  code = (
    "import sys, vqtok.load, vqtok.tokenizer_dir;"
    "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grain', 'tensorflow', 'tensorflow_datasets')"
    " or m.startswith(('vqtok.data.pipeline', 'vqtok.training.loop', 'vqtok.training.step', 'vqtok.evaluation'))))"
  )
  res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  assert res.stdout.strip() == "[]", res.stdout
