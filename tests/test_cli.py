"""The command line end to end, on the real cached MNIST (fetched on first use) with tiny limits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from mnistlab.data.mnist import load_mnist

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def dry_run(mnistlab, tmp_path_factory):
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


def test_evaluate_prints_accuracy_and_writes_figures(mnistlab, dry_run, tmp_path):
    out, _ = dry_run
    result = mnistlab("evaluate", "--checkpoint", str(out / "last.pt"), "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "per class:" in result.stdout and "true\\pred" in result.stdout
    for name in ("confusion.png", "misclassified.png", "curves.png", "evaluation.json"):
        assert (tmp_path / name).is_file()
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["checkpoint"] == str(out / "last.pt") and len(evaluation["checkpoint_sha256"]) == 64
    confusion = np.array(evaluation["confusion"])
    assert confusion.sum() == 10_000  # the whole official test set
    assert evaluation["accuracy"] == pytest.approx(100 * np.trace(confusion) / 10_000)
    assert evaluation["errors"] == 10_000 - np.trace(confusion)


def test_predict_reads_pictures_of_any_size_and_polarity(mnistlab, dry_run, tmp_path):
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


def test_summary_formats(mnistlab):
    result = mnistlab("summary", "model8", "--format", "json")
    assert json.loads(result.stdout)["params"] == 7500
    assert "| Layer | Type | Kernel Size" in mnistlab("summary", "model2", "--format", "markdown").stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "model99"], "unknown model 'model99'"),
        (["train", "--epochs", "0"], "epochs must be positive"),
        (["train", "--lr", "-0.1"], "learning rate must be in"),
        (["train", "--rotation", "500"], "rotation=500.0 is out of range"),
        (["evaluate", "--checkpoint", "nowhere.pt"], "does not exist"),
        (["summary", "resnet"], "unknown model"),
        (["train", "--resume", "nowhere"], "no run had started there"),
        (["reproduce", "--study", "nope"], "unknown study 'nope'"),
        (["reproduce", "--workers", "0"], "--workers must be at least 1"),
        # a path that names a file where a folder must be: nothing is created, the file is left as it was
        (["train", "--output-dir", "afile", "--limit", "300"], "the run folder afile is a file"),
        (["train", "--output-dir", "afile", "--seeds", "1,2", "--limit", "300"], "is inside afile, which is a file"),
        (["train", "--data-dir", "afile", "--limit", "300"], "the MNIST folder (--data-dir or $MNISTLAB_DATA) afile"),
        (["reproduce", "--models", "model8", "--no-tuning", "--results", "afile", "--limit", "300"], "inside afile"),
        (["search", "--max-params", "3500", "--results", "afile", "--limit", "300"], "the study's folder afile/search"),
    ],
)
def test_user_errors_are_one_line(mnistlab, args, message, tmp_path):
    (tmp_path / "afile").write_text("the user's\n")
    result = mnistlab(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing created...
    assert (tmp_path / "afile").read_text() == "the user's\n"  # ...and nothing lost


def test_export_onnx_is_usable_by_a_stranger_on_the_real_test_set(mnistlab, tmp_path):
    """The shipped Model 8 exported, then fed as a stranger would feed it (pixels / 255, no normalisation):
    its accuracy and every prediction equal the torch model's; no warning or progress line is printed."""
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    from mnistlab.core.fileio import sha256_file
    from mnistlab.data.loader import normalize
    from mnistlab.data.mnist import load_mnist
    from mnistlab.models import load_checkpoint

    checkpoint = ROOT / "results" / "model8" / "seed1" / "last.pt"
    result = mnistlab("export", "--checkpoint", checkpoint, "--output", tmp_path / "m.onnx")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith(f"wrote {tmp_path / 'm.onnx'}")
    meta = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert meta["model"] == "model8" and meta["parameters"] == "7500" and meta["classes"] == "0,1,2,3,4,5,6,7,8,9"
    assert meta["checkpoint_sha256"] == sha256_file(checkpoint) and "[0, 1]" in meta["input"]
    images, labels = load_mnist("test")
    pixels = (images.astype(np.float32) / 255.0)[:, None]
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    onnx_digits = np.concatenate(
        [session.run(None, {name: pixels[i : i + 2000]})[0].argmax(1) for i in range(0, 10_000, 2000)]
    )
    with torch.inference_mode():
        torch_digits = load_checkpoint(checkpoint)(normalize(torch.from_numpy(pixels))).argmax(1).numpy()
    assert (onnx_digits == torch_digits).mean() >= 0.9999  # the same digit for (all but at most one of) 10,000
    accuracy = 100 * (onnx_digits == labels).mean()
    assert accuracy == pytest.approx(100 * (torch_digits == labels).mean(), abs=0.01) and accuracy > 99.3


def test_export_of_a_tied_block_keeps_its_weights_once_and_its_predictions(mnistlab, tmp_path):
    """TiedNet applies one block 4 times with the same weights: the export unrolls the passes, the metadata
    counts the weights once (3,420, as the zoo does), and onnxruntime gives the digits PyTorch gives."""
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    from mnistlab.data.loader import normalize
    from mnistlab.data.mnist import load_mnist
    from mnistlab.models import load_checkpoint

    checkpoint = ROOT / "results" / "tuning" / "tied3k4-kd98" / "s1" / "last.pt"
    result = mnistlab("export", "--checkpoint", checkpoint, "--output", tmp_path / "t.onnx")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    meta = {p.key: p.value for p in onnx.load(tmp_path / "t.onnx").metadata_props}
    assert meta["model"] == "tied3k4" and meta["parameters"] == "3420"
    images, _ = load_mnist("test")
    pixels = (images[:1000].astype(np.float32) / 255.0)[:, None]
    session = onnxruntime.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    onnx_digits = session.run(None, {session.get_inputs()[0].name: pixels})[0].argmax(1)
    with torch.inference_mode():
        torch_digits = load_checkpoint(checkpoint)(normalize(torch.from_numpy(pixels))).argmax(1).numpy()
    assert (onnx_digits == torch_digits).all()


TINY_RUN = ("--epochs", "1", "--limit", "300", "--val-size", "100", "--quiet")  # a real-data run of seconds


def finished_run(mnistlab, root):
    """A small finished run made through the CLI (real data, a few hundred images)."""
    out = root / "run"
    result = mnistlab("train", "--model", "model8", *TINY_RUN, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_a_dry_run_never_touches_an_existing_run(mnistlab, tmp_path):
    out = finished_run(mnistlab, tmp_path)
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = mnistlab("train", "--dry-run", "--quiet", "--output-dir", str(out))
    assert result.returncode == 2 and "already holds a run" in result.stderr and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overwrite_removes_only_the_runs_own_files(mnistlab, tmp_path):
    out = finished_run(mnistlab, tmp_path)
    (out / "notes.txt").write_text("mine")
    (out / "figures").mkdir()
    (out / "figures" / "plot.png").write_bytes(b"png")
    refused = mnistlab("train", "--model", "model8", "--epochs", "1", "--limit", "300", "--output-dir", str(out))
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    result = mnistlab(
        "train",
        "--model",
        "model8",
        "--epochs",
        "1",
        "--limit",
        "200",
        "--val-size",
        "100",
        "--quiet",
        "--overwrite",
        "--output-dir",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert (out / "notes.txt").read_text() == "mine" and (out / "figures" / "plot.png").read_bytes() == b"png"
    assert json.loads((out / "summary.json").read_text())["data"]["train"] == 200  # the new run


def test_a_moved_run_resumes_where_it_is_now(mnistlab, tmp_path):
    from mnistlab.models import config_for
    from mnistlab.training.engine import fit

    config = config_for(
        "model8", epochs=2, limit=300, val_size=100, test_every_epoch=False, output_dir=str(tmp_path / "made-here")
    )
    fit(config, stop_after=1, progress=False, log=lambda m: None)
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    (tmp_path / "made-here").rename(moved)
    result = mnistlab("train", "--resume", str(moved), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "(test not evaluated)" in result.stdout  # a run without test scores is reported by validation
    assert (moved / "summary.json").is_file() and not (tmp_path / "made-here").exists()
    assert json.loads((moved / "config.json").read_text())["output_dir"] == str(moved)
    summary = (moved / "summary.json").read_bytes()
    again = mnistlab("train", "--resume", str(moved), "--quiet")  # finished: nothing to do, nothing rewritten
    assert again.returncode == 0 and "finished" in again.stdout
    assert (moved / "summary.json").read_bytes() == summary


def test_logs_that_are_not_a_terminal_get_epoch_lines_not_progress_bars(mnistlab, tmp_path):
    result = mnistlab(
        "train",
        "--model",
        "model8",
        "--epochs",
        "2",
        "--limit",
        "300",
        "--val-size",
        "100",
        "--output-dir",
        str(tmp_path / "run"),
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr and result.stdout.count("epoch ") == 2


def test_train_seeds_trains_them_stacked(mnistlab, tmp_path):
    result = mnistlab(
        "train", "--model", "sepnet3k", "--seeds", "1,2", *TINY_RUN, "--output-dir", str(tmp_path / "runs")
    )
    assert result.returncode == 0, result.stderr
    for seed in (1, 2):
        summary = json.loads((tmp_path / "runs" / f"seed{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed and summary["provenance"]["stacked"] == 2
    bad = mnistlab("train", "--seeds", "1,x", cwd=tmp_path)
    assert bad.returncode == 2 and "comma-separated integers" in bad.stderr
