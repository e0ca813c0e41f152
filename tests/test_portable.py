"""Nothing POSIX-only on an import path: with ``fcntl`` unavailable (as on Windows) and ``/proc/cpuinfo``
unreadable (as on macOS) the package imports, trains, resumes, evaluates and predicts; the lock then falls back
to a file created exclusively."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from mnistlab.core import fileio
from mnistlab.core.errors import MnistlabError

# run first in the subprocess: fcntl cannot be imported, /proc/cpuinfo cannot be read
WITHOUT_POSIX = textwrap.dedent(
    """
    import builtins, pathlib, sys
    sys.modules["fcntl"] = None  # import fcntl: ModuleNotFoundError, as on Windows
    _open, _read_text = builtins.open, pathlib.Path.read_text

    def _refuse(path):
        if str(path) == "/proc/cpuinfo":
            raise PermissionError(13, "Permission denied", "/proc/cpuinfo")

    def _guarded_open(file, *args, **kwargs):
        _refuse(file)
        return _open(file, *args, **kwargs)

    def _guarded_read_text(self, *args, **kwargs):
        _refuse(self)
        return _read_text(self, *args, **kwargs)

    builtins.open, pathlib.Path.read_text = _guarded_open, _guarded_read_text
    """
)

WORK = textwrap.dedent(
    """
    import numpy as np
    from PIL import Image
    import mnistlab
    from mnistlab.core import fileio, perf
    from mnistlab.data import load_mnist

    assert fileio.fcntl is None and fileio.msvcrt is None, "the test must run without system locks"
    assert perf.native_bf16() is False and perf.resolve_precision("auto", "cpu") == "fp32"
    config = mnistlab.config_for("model1", epochs=2, limit=1000, val_size=200, output_dir="runs/cut")
    mnistlab.fit(config, stop_after=1, log=lambda m: None)  # as if killed after its first epoch
    run = mnistlab.fit(resume="runs/cut", log=lambda m: None)
    assert len(run.history) == 2, run.history
    result = mnistlab.evaluate("runs/cut")
    images, labels = load_mnist("test")
    Image.fromarray(255 - images[0]).save("digit.png")  # dark on light, as a photo of paper
    (found,) = mnistlab.predict(run, ["digit.png"])
    print("ok", run.summary["params"], round(result.accuracy, 2), found.digit, run.summary["provenance"]["machine"])
    """
)


@pytest.mark.real_data
def test_train_resume_evaluate_and_predict_without_fcntl_or_proc_cpuinfo(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_POSIX + WORK],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MNISTLAB_HOME": str(tmp_path / "home")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok "), done.stdout
    assert not list(tmp_path.rglob("train.lock")), "the lock file is removed on release"


def test_the_exclusive_file_lock_refuses_a_living_holder_and_takes_over_a_dead_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "fcntl", None)
    monkeypatch.setattr(fileio, "msvcrt", None)
    lock = tmp_path / "train.lock"

    def busy(owner):
        return MnistlabError(f"held by {owner}")

    with fileio.exclusive(lock, busy=busy):
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(MnistlabError, match=f"held by {os.getpid()}"):
            with fileio.exclusive(lock, busy=busy, wait=0.2):
                pass
    assert not lock.exists()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(ended.stdout.strip())  # left by a process that was killed
    with fileio.exclusive(lock, busy=busy):
        assert lock.read_text() == str(os.getpid())
    lock.write_text("garbage")  # a holder that cannot be told: refused, not taken over
    with pytest.raises(MnistlabError, match="held by None"):
        with fileio.exclusive(lock, busy=busy):
            pass


def test_nothing_on_an_import_path_imports_a_posix_only_module_at_the_top():
    """fcntl, pwd, grp, termios, resource: only behind a guard (try/except ImportError)."""
    import ast
    from pathlib import Path

    posix_only = {"fcntl", "pwd", "grp", "termios", "resource", "posix"}
    package = Path(fileio.__file__).resolve().parents[1]
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # top level only: an import inside try/except is guarded
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not posix_only & {n.split(".")[0] for n in names}, f"{path}: {names}"
