"""Every optional extra missing is one line naming the extra to install, not a traceback: each command run in a
process where the extra's module cannot be imported (as in an environment installed without it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "results"
SHIPPED = next((Path(__file__).resolve().parents[1] / "src" / "mnistlab" / "models" / "shipped").glob("*.pt"))


def without(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``mnistlab ARGS`` in a process where ``module`` cannot be imported."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['mnistlab', *{list(args)!r}]; "
        "from mnistlab.cli import main; main()"
    )
    env = {**os.environ, "MNISTLAB_HOME": str(cwd / "home")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300, env=env)


CASES = {
    "search": ("optuna", ["search", "--name", "t", "--epochs", "1", "--limit", "100", "--trials", "1"]),
    "register": ("optuna", ["register", "--study", "t", "--trial", "0", "--name", "mine", "--results", "r"]),
    "report": ("optuna", ["report", "--results", "r", "--output", "R.md", "--readme", "README.md"]),
    "demo": ("gradio", ["demo", "--checkpoint", str(SHIPPED), "--port", "0"]),
    "onnx": ("onnx", ["export", "--checkpoint", str(SHIPPED), "--output", "m.onnx"]),
    "ray": (
        "ray",
        [
            "reproduce",
            "--ray",
            "--models",
            "model1",
            "--no-tuning",
            "--results",
            "fresh",
            "--epochs",
            "1",
            "--limit",
            "100",
        ],
    ),
    "tensorboard": ("tensorboard", ["train", "--model", "model1", "--dry-run", "--tensorboard", "tb"]),
}


@pytest.mark.parametrize("extra", sorted(CASES))
def test_a_missing_extra_is_one_line_naming_it(mnistlab, tmp_path, extra):
    module, args = CASES[extra]
    shutil.copytree(FIXTURE, tmp_path / "r")  # recorded runs, as the report needs
    (tmp_path / "r" / "search").mkdir(parents=True, exist_ok=True)
    (tmp_path / "r" / "search" / "t.db").write_bytes(b"")  # a results folder with a search: the report reads it
    (tmp_path / "README.md").write_text("# mine\n")
    done = without(module, *args, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr[-2000:]
    search = "search" if extra in ("search", "register", "report") else extra
    assert f"pip install 'mnistlab[{search}]'" in lines[0], lines[0]
