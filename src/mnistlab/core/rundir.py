"""A run directory: the files one training run writes, and where it stands (todo, partial, done).

Imports nothing heavy, so the CLI, the runner and the report can ask about runs without loading torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnistlab.core.errors import MnistlabError

CONFIG = "config.json"
HISTORY = "history.jsonl"  # one line per finished epoch
SUMMARY = "summary.json"  # written last: its presence means the run is done
LAST = "last.pt"  # everything needed to resume, after each epoch
BEST = "best.pt"  # the weights of the best epoch by validation accuracy
LOG = "train.log"  # epoch lines of a run trained in a worker process
SOURCE_COPY = "model_source.py"  # a model from outside the package: a copy of the file it was built from
SPEC_COPY = "model_spec.json"  # ... or of its layer spec
RUN_FILES = (CONFIG, HISTORY, SUMMARY, LAST, BEST, LOG, SOURCE_COPY, SPEC_COPY)

LAST_K = 3  # "the last epochs": the window in which a run must hold the target, and over which it is reported
TARGET = 99.4  # the course's goal: test accuracy (%) in each of the last LAST_K epochs
# a summary's keys for the test accuracy of the last LAST_K epochs: the values, their mean and their minimum
LAST_TESTS = f"test_acc_last{LAST_K}"
LAST_MEAN = f"{LAST_TESTS}_mean"
LAST_MIN = f"{LAST_TESTS}_min"

RUNS = "runs"  # where a run trained by hand goes: runs/<model>
RESULTS = "results"  # the recorded runs: results/<model>/seed<k>, results/tuning/..., results/search/...


def default_run_dir(model: str) -> str:
    return f"{RUNS}/{model}"


def check_folder(folder: str | Path, what: str) -> None:
    """Refuse a folder that cannot be made: it, or a folder above it, is a file."""
    path = Path(folder)
    for place in (path, *path.parents):
        if place.exists() and not place.is_dir():
            where = "is a file" if place == path else f"is inside {place}, which is a file"
            raise MnistlabError(f"{what} {path} {where}; name a folder instead (nothing was written)")


def check_run_dir(run_dir: str | Path) -> None:
    check_folder(run_dir, "the run folder")


def checkpoints_in(path: str | Path) -> list[Path]:
    """The checkpoints a path names: a .pt file; a run folder's last.pt; or each seed's last.pt of a folder of
    runs (``results/model8`` means seeds 1, 2 and 3). Empty when it names none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / LAST).is_file():
        return [path / LAST]
    return sorted(p for p in path.glob(f"*/{LAST}") if p.is_file()) if path.is_dir() else []


def run_status(run_dir: str | Path) -> str:
    """``done`` (a summary), ``partial`` (an epoch's checkpoint, no summary) or ``todo``."""
    out = Path(run_dir)
    if (out / SUMMARY).exists():
        return "done"
    if (out / LAST).exists():
        return "partial"
    return "todo"


def remove_run_files(run_dir: str | Path) -> list[Path]:
    """Delete the files a run wrote in ``run_dir`` (and nothing else the folder holds); return them."""
    removed = []
    for name in RUN_FILES:
        path = Path(run_dir) / name
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def refuse_existing_run(run_dir: str | Path, hint: str = "") -> None:
    """The one refusal to start a run where one is (finished or interrupted); ``hint`` adds another way out."""
    if run_status(run_dir) != "todo":
        raise MnistlabError(
            f"{run_dir} already holds a run; "
            + (f"{hint}, " if hint else "")
            + f"pass --resume {run_dir} to continue it, or choose another --output-dir"
        )


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY).read_text())


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run directory, as ``fit`` wrote them to ``history.jsonl``."""
    text = (Path(run_dir) / HISTORY).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
