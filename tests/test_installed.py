"""The package as a user gets it: the wheel built from this checkout, installed into a fresh virtual environment
(no editable install, no checkout on the path), every command run from an empty folder on a model file the lab
has never seen. The lab's results/ is not there: the package must carry what its commands need."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

pytestmark = pytest.mark.cli

# a student's model: two branches joined by torch.cat, one convolution used twice, a residual add, a Linear head
STUDENT = textwrap.dedent(
    '''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Branchy(nn.Module):
        """Two branches joined, a convolution applied twice, a residual add and a Linear head."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 8, 3)
            self.left = nn.Conv2d(8, 8, 3, padding=1)
            self.right = nn.Conv2d(8, 8, 1)
            self.again = nn.Conv2d(16, 16, 3, padding=1)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.stem(x)), 2)
            x = torch.cat([F.relu(self.left(x)), F.relu(self.right(x))], dim=1)
            x = x + F.relu(self.again(x))
            x = x + F.relu(self.again(x))
            return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))
    '''
)
SPACE = {"width": [12, 12], "stem1": [4, 4], "stem2": [8, 8], "depth": [2, 2], "factored": [True]}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``mnistlab`` and ``python`` of a fresh virtual environment that holds only the wheel and its extras."""
    root = tmp_path_factory.mktemp("installed")
    # from a copy of what the wheel is made of: a checkout's build/ (setuptools' cache of earlier builds) may
    # still hold files the package no longer has
    source = root / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", root],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = root.glob("mnistlab-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [
            venv / "bin" / "python",
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints.txt"),  # the repository's torch, as `make setup` installs it
            f"{wheel}[onnx,demo,search]",
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return venv / "bin"


def run(bin_dir: Path, *args, cwd: Path, env: dict[str, str], timeout: float = 600):
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(bin_dir / "mnistlab"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **env},
        timeout=timeout,
    )


def test_every_command_works_from_the_wheel_in_an_empty_folder(installed, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {"MNISTLAB_HOME": str(tmp_path / "home")}
    where = subprocess.run(
        [installed / "python", "-c", "import mnistlab; print(mnistlab.__file__)"],
        capture_output=True,
        text=True,
        cwd=work,
    )
    assert str(installed.parent) in where.stdout and str(ROOT) not in where.stdout  # the wheel's, not the checkout's
    (work / "branchy.py").write_text(STUDENT)
    model = "branchy.py:Branchy"

    def ok(*args, timeout: float = 600):
        result = run(installed, *args, cwd=work, env=env, timeout=timeout)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stdout, result.stderr)
        return result.stdout

    listed = ok("models")
    assert [line.split()[0] for line in listed.splitlines() if line.startswith("model")] == [
        f"model{k}" for k in range(1, 9)
    ]
    # the reference's eight and the search's family: no study history, no teacher, no path into the lab's results/
    every = ok("models", "--all", "--variants")
    assert [line.split()[0] for line in every.splitlines()] == [f"model{k}" for k in range(1, 9)] + ["searched"]
    cards = subprocess.run(
        [
            installed / "python",
            "-c",
            "from mnistlab.models import get_card, list_models; print([repr(get_card(n)) for n in list_models()])",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, **env},
    )
    assert cards.returncode == 0 and "results/" not in cards.stdout, cards.stderr
    table = ok("summary", model)
    assert "Total:" in table and "(reused)" in table  # the convolution used twice counts its weights once
    trained = ok(
        "train",
        "--model",
        model,
        "--seeds",
        "1,2",
        "--epochs",
        "1",
        "--limit",
        "600",
        "--val-size",
        "100",
        "--threads",
        "1",
        "--quiet",
        "--output-dir",
        "runs/branchy",
    )
    assert "seed 2:" in trained and "on 600 of 10,000 test images" in trained
    checkpoint = work / "runs" / "branchy" / "seed1" / "last.pt"
    assert "test accuracy" in ok("evaluate", "--checkpoint", checkpoint)
    ink = np.full((120, 120), 255, dtype=np.uint8)
    ink[20:100, 55:65] = 0
    Image.fromarray(ink).save(work / "one.png")
    assert ok("predict", "one.png").startswith("one.png: 1 ")  # the package's own Model 8
    assert ok("export", "--checkpoint", checkpoint, "--output", "branchy.onnx").startswith("wrote branchy.onnx")
    check = subprocess.run(
        [
            installed / "python",
            "-c",
            textwrap.dedent(
                """
            import numpy as np, onnxruntime, torch
            from mnistlab.data.loader import normalize
            from mnistlab.models import load_checkpoint
            x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
            got = onnxruntime.InferenceSession("branchy.onnx").run(None, {"pixels": x})[0]
            want = load_checkpoint("runs/branchy/seed1/last.pt")(normalize(torch.from_numpy(x))).detach().numpy()
            print(float(np.abs(got - want).max()))
            """
            ),
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, **env},
    )
    assert check.returncode == 0 and float(check.stdout) < 1e-4, check.stderr
    compared = ok("compare", "runs/branchy")
    assert "| `Branchy` | `runs/branchy` | 3,226 |" in compared and "| 2 | 1 |" in compared  # both seeds, one epoch
    (work / "space.json").write_text(json.dumps(SPACE))
    ok(
        "search",
        "--max-params",
        "4000",
        "--trials",
        "1",
        "--epochs",
        "1",
        "--limit",
        "300",
        "--seeds",
        "1",
        "--name",
        "tiny",
        "--space",
        "space.json",
        "--threads",
        "1",
        "--results",
        "res",
    )
    ok("register", "--study", "tiny", "--trial", "0", "--name", "mine", "--results", "res")
    assert [e["name"] for e in json.loads((tmp_path / "home" / "found.json").read_text())] == ["mine"]
    assert "mine" in ok("models")
    for lab_command in ("report", "reproduce"):  # the repository's lab's, not the wheel's: one line says where
        refused = run(installed, lab_command, cwd=work, env=env)
        assert refused.returncode == 2 and "the lab's command" in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1
    assert sorted(p.name for p in work.iterdir()) == [
        "branchy.onnx",
        "branchy.py",
        "one.png",
        "res",
        "runs",
        "space.json",
    ]


def test_the_demo_serves_the_packages_model_from_an_empty_folder(installed, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    demo = subprocess.Popen(
        [installed / "mnistlab", "demo", "--port", str(port)],
        cwd=tmp_path,
        env={**clean, "MNISTLAB_HOME": str(tmp_path / "home")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, output = time.monotonic() + 120, ""
        while "serving on" not in output and demo.poll() is None and time.monotonic() < deadline:
            output += demo.stdout.readline()
        assert "serving on" in output, output
        page = ""
        while time.monotonic() < deadline and "What the model sees" not in page:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
            except OSError:
                time.sleep(0.5)
        assert "What the model sees" in page or "mnistlab" in page
    finally:
        demo.terminate()
        demo.wait(30)


def test_the_wheel_holds_the_library_not_the_lab(installed):
    """The lab (its studies, ledger, report, reproduce and models) is the repository's: the wheel ships the library,
    the reference's models and the shipped Model 8, and no file of the lab."""
    import zipfile

    (wheel,) = installed.parent.parent.glob("mnistlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mnistlab/models/shipped/model8-seed1.pt" in names and "mnistlab/api.py" in names
    lab = [n for n in names if n.startswith(("mnistlab_lab", "mnistlab/lab/")) or "ledger" in n or n.endswith(".json")]
    assert lab == [] and "mnistlab/models/compact.py" not in names, lab


def test_the_wheel_declares_its_dependencies_as_ranges_and_the_repository_pins_torch(installed):
    """A library asks for a range (a user's torch stays); the repository's own environment is pinned apart."""
    import zipfile

    (wheel,) = installed.parent.parent.glob("mnistlab-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    torch_line = next(r for r in requires if r.startswith("torch"))
    assert torch_line.replace(" ", "") == "torch>=2.11"
    assert not [r for r in requires if "==" in r.split(";")[0]], requires  # `extra == "onnx"` is a marker
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert pins == ["torch==2.13.0"]
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


from strangers import STRANGERS  # noqa: E402  (the student models, shared with test_predict)


@pytest.mark.parametrize(
    "builder, params",
    [
        ("OwnWeight", 72 + 1168 + 170),
        ("Grouped", 80 + 16 + 1168 + 32 + 170),
        ("Mlp", 25120 + 330),
        ("SqueezeExcite", 80 + 36 + 40 + 90),
        ("Decoder", 160 + 520 + 90),
        ("Branchy", 2 * 7850),
    ],
)
def test_a_strangers_models_from_the_wheel(installed, tmp_path, builder, params):
    """Models a student writes that the lab's own never are: each summarised (rows adding up), trained on two
    seeds, evaluated, exported and used to predict, from the wheel in an empty folder."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "strangers.py").write_text(STRANGERS)
    env = {"MNISTLAB_HOME": str(tmp_path / "home")}
    model = f"strangers.py:{builder}"

    def ok(*args):
        result = run(installed, *args, cwd=work, env=env)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stdout, result.stderr)
        return result.stdout

    summary = json.loads(ok("summary", model, "--format", "json"))
    assert summary["params"] == params
    if "rows" in summary:
        assert sum(row["params"] for row in summary["rows"]) == params
    if builder == "Grouped":
        assert summary["receptive_field"] >= 28  # GroupNorm: statistics of the whole image
    args = ["--seeds", "1,2", "--epochs", "1", "--limit", "600", "--val-size", "100", "--threads", "1", "--quiet"]
    assert "seed 2:" in ok("train", "--model", model, *args, "--output-dir", "runs/s")
    checkpoint = work / "runs" / "s" / "seed1" / "last.pt"
    assert "test accuracy" in ok("evaluate", "--checkpoint", checkpoint)
    if builder == "Branchy":  # an `if` on the image's values: no graph holds it, said in one line naming the line
        refused = run(installed, "export", "--checkpoint", checkpoint, "--output", "s.onnx", cwd=work, env=env)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "branches on a tensor's value" in refused.stderr and "strangers.py:" in refused.stderr
    else:
        assert ok("export", "--checkpoint", checkpoint, "--output", "s.onnx").startswith("wrote s.onnx")
    ink = np.full((56, 56), 255, dtype=np.uint8)
    ink[10:46, 26:30] = 0
    Image.fromarray(ink).save(work / "one.png")
    assert ok("predict", "one.png", "--checkpoint", checkpoint, "--top", "3").count("(p=") == 3
