"""The command line end to end, on the real cached MNIST (fetched on first use) with tiny limits."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnistlab.data.mnist import load_mnist

pytestmark = pytest.mark.real_data


def mnistlab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mnistlab", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = mnistlab("train", "--model", "model8", "--dry-run", "--quiet", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_train_dry_run_writes_a_run(dry_run):
    out, result = dry_run
    assert "epoch  1/1" in result.stdout and "done in" in result.stdout
    for name in ("config.json", "history.jsonl", "summary.json", "last.pt", "best.pt"):
        assert (out / name).is_file()
    assert json.loads((out / "config.json").read_text())["model"] == "model8"


def test_evaluate_prints_accuracy_and_writes_figures(dry_run, tmp_path):
    out, _ = dry_run
    result = mnistlab("evaluate", "--checkpoint", str(out / "last.pt"), "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (
        "test accuracy" in result.stdout and "per class:" in result.stdout and "true\\pred" in result.stdout
    )
    for name in ("confusion.png", "misclassified.png", "curves.png", "evaluation.json"):
        assert (tmp_path / name).is_file()
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    confusion = np.array(evaluation["confusion"])
    assert confusion.sum() == 10_000  # the whole official test set
    assert evaluation["accuracy"] == pytest.approx(100 * np.trace(confusion) / 10_000)
    assert evaluation["errors"] == 10_000 - np.trace(confusion)


def test_predict_reads_pictures_of_any_size_and_polarity(dry_run, tmp_path):
    out, _ = dry_run
    images, labels = load_mnist("test")
    digit = images[0]
    Image.fromarray(digit).resize((140, 140)).save(tmp_path / "big.png")
    Image.fromarray(255 - digit).save(tmp_path / "inverted.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(np.full((30, 30), 200, np.uint8)).save(tmp_path / "blank.png")
    paths = [str(tmp_path / n) for n in ("big.png", "inverted.jpg", "notes.png", "blank.png")]
    result = mnistlab("predict", *paths, "--checkpoint", str(out / "last.pt"))
    assert result.returncode == 2
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all("(p=" in line for line in lines)
    assert "notes.png: not a readable image" in result.stderr and "blank.png: blank image" in result.stderr
    assert "Traceback" not in result.stderr


def test_summary_formats():
    result = mnistlab("summary", "model8", "--format", "json")
    assert json.loads(result.stdout)["params"] == 7500
    assert "| Layer | Type | Kernel Size" in mnistlab("summary", "model2", "--format", "markdown").stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "model99"], "unknown model 'model99'"),
        (["train", "--epochs", "0"], "epochs must be positive"),
        (["train", "--lr", "-0.1"], "learning rate must be positive"),
        (["train", "--rotation", "500"], "rotation=500.0 is out of range"),
        (["evaluate", "--checkpoint", "nowhere.pt"], "does not exist"),
        (["summary", "resnet"], "unknown model"),
        (["train", "--resume", "nowhere"], "nothing to resume"),
        (["reproduce", "--study", "nope"], "unknown study 'nope'"),
        (["reproduce", "--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_user_errors_are_one_line(args, message, tmp_path):
    result = mnistlab(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_export_onnx_matches_torch(dry_run, tmp_path):
    pytest.importorskip("onnxruntime")
    out, _ = dry_run
    result = mnistlab("export", "--checkpoint", str(out / "last.pt"), "--output", str(tmp_path / "m.onnx"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 1000
