"""The README's Python snippets run as written (in order, one namespace)."""

import os
import re

FAST_COMPILE = True  # XLA optimisations off for this module (conftest.py): users' code run as written, no numerics
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_python_snippets_run():
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  assert len(blocks) >= 2, "the README should hold the quantizer and tokenizer quick-starts"
  namespace: dict = {}
  for block in blocks:
    exec(compile(block, "README.md", "exec"), namespace)
