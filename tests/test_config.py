"""The configuration types: a leaf of the package, checked when made."""

from __future__ import annotations

import subprocess
import sys


def test_config_is_a_leaf_that_imports_neither_torch_nor_the_models():
    code = "import sys, mnistlab.core.config; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('mnistlab.models')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
