"""The configuration types: a leaf of the package, checked when made."""

from __future__ import annotations

import subprocess
import sys


def test_config_is_a_leaf_that_imports_neither_torch_nor_the_models():
    code = "import sys, mnistlab.core.config; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('mnistlab.models')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_lab_models_teachers_missing_outside_the_repository_say_where_they_live(tmp_path, monkeypatch):
    """Installed, in an empty folder: a lab model that learns from the lab's runs says so in one line; teachers the
    user named and got wrong are only the plain error."""
    import pytest

    from mnistlab.core.errors import MnistlabError
    from mnistlab.models import config_for

    monkeypatch.chdir(tmp_path)
    with pytest.raises(MnistlabError, match="lab's runs under its repository's results/.*--teacher"):
        config_for("sepnet3k_kd98")
    with pytest.raises(MnistlabError) as raised:
        config_for("sepnet3k", teachers=("mine/seed1",))
    assert str(raised.value).startswith("teacher mine/seed1: no checkpoint there") and "lab's" not in str(raised.value)
