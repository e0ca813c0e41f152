"""A run directory: the files one training run writes, and where it stands (todo, partial, done).

Imports nothing heavy, so the CLI, the runner and the report can ask about runs without loading torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict, cast

from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import exclusive, finish_commit

CONFIG = "config.json"
HISTORY = "history.jsonl"  # one line per finished epoch
SUMMARY = "summary.json"  # written last: its presence means the run is done
LAST = "last.pt"  # everything needed to resume, after each epoch
BEST = "best.pt"  # the weights of the best epoch by validation accuracy
LOG = "train.log"  # epoch lines of a run trained in a worker process
SOURCE_COPY = "model_source.py"  # a model from outside the package: a copy of the file it was built from
SPEC_COPY = "model_spec.json"  # ... or of its layer spec
LOCK = "train.lock"  # held while a process trains into the folder: the pid of its one writer
RUN_FILES = (CONFIG, HISTORY, SUMMARY, LAST, BEST, LOG, SOURCE_COPY, SPEC_COPY)

LAST_K = 3  # "the last epochs": the window in which a run must hold the target, and over which it is reported
TARGET = 99.4  # the course's goal: test accuracy (%) in each of the last LAST_K epochs
# a summary's keys for the test accuracy of the last LAST_K epochs: the values, their mean and their minimum
LAST_TESTS = f"test_acc_last{LAST_K}"
LAST_MEAN = f"{LAST_TESTS}_mean"
LAST_MIN = f"{LAST_TESTS}_min"


# ------------------------------------------------------------------------------------- what a run writes
# One definition of each record a run writes, for its writer (``training.engine``) and every reader (the CLI, the
# runner, ``tools.runs``, the plots, the lab's report). TypedDicts, not classes: the files stay the JSON they are.


class HistoryRow(TypedDict):
    """One line of ``history.jsonl``: an epoch's losses and accuracies (%), None where a split was not evaluated."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    test_loss: float | None
    test_acc: float | None
    lr: float  # the rate at the epoch's end
    seconds: float  # the epoch's wall time, evaluation included


class DataSizes(TypedDict):
    """The images each split had (``--limit`` and ``val_size`` change them; val 0: trained on all 60,000)."""

    train: int
    val: int
    test: int


class Provenance(TypedDict, total=False):
    """Where and how a run was made (keys added over the lab's history: older runs lack the later ones)."""

    git_commit: str | None
    git_dirty: bool | None
    mnistlab: str
    torch: str
    python: str
    machine: str
    device: str
    gpu: str | None
    threads: int
    stacked: int
    cuda_graph: bool
    precision: str
    native_bf16: bool
    teacher_cache: dict[str, int]
    attention_maps: dict[str, int]  # the clean view's attention tables: read (hits) or made (misses)


class Summary(TypedDict):
    """``summary.json``, written last: the run's headline numbers (``training.engine.summarize_history``), its data
    and its provenance. The keys of the last LAST_K epochs are LAST_TESTS, LAST_MEAN and LAST_MIN (tested)."""

    model: str
    params: int
    seed: int
    epochs: int
    best_train_acc: float
    best_val_acc: float | None
    best_epoch: int
    selected_by: str  # "val_acc", or "train_acc" for a run without a validation split
    test_acc_at_best: float | None
    last_test_acc: float | None
    last_val_acc: float | None
    test_acc_last3: list[float]
    test_acc_last3_mean: float | None
    test_acc_last3_min: float | None
    train_seconds: float
    wall_seconds: float
    data: DataSizes
    provenance: Provenance


HISTORY_KEYS = tuple(HistoryRow.__annotations__)
SUMMARY_KEYS = tuple(Summary.__annotations__)


# where the demo's picker looks for final runs (it writes nothing there): a clone of the repository keeps the lab's
# there; elsewhere there are none, and the package's own Model 8 is shown
FINALS = "results"
RUNS = "runs"  # where a user's runs and searches go: runs/<model>, runs/search/<name>.db (results/ is the lab's)


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


def read_json(path: str | Path, what: str = "") -> dict[str, Any]:
    """A JSON object the lab wrote (a run's config or summary), checked where it is read: a damaged, foreign or
    missing file is one line naming it and what to do."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise MnistlabError(f"{path} is missing; {what or 'the run is incomplete'}") from None
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        reason = exc.strerror if isinstance(exc, OSError) else "not valid JSON"
        raise MnistlabError(f"{path} is damaged ({reason}); {_mend(path)}") from None
    if not isinstance(value, dict):
        raise MnistlabError(f"{path} is damaged (a JSON {type(value).__name__}, not an object); {_mend(path)}")
    return value


def _mend(path: Path) -> str:
    if path.name == SUMMARY:
        return f"delete it and run `mnistlab train --resume {path.parent}` to write it again from last.pt"
    return "restore it, or re-train the run into a new folder"


def read_config(run_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / CONFIG, f"{run_dir} holds no run to read (no config.json)")


def read_summary(run_dir: str | Path) -> Summary:
    return cast(Summary, read_json(Path(run_dir) / SUMMARY, "the run has not finished"))


def read_history(run_dir: str | Path) -> list[HistoryRow]:
    """The per-epoch records of a run directory, as ``fit`` wrote them to ``history.jsonl``, each line checked."""
    path = Path(run_dir) / HISTORY
    try:
        rows = [json.loads(line) for line in path.read_bytes().decode().splitlines() if line.strip()]
    except FileNotFoundError:
        raise MnistlabError(f"{path} is missing; the run is incomplete") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not JSON lines"
        raise MnistlabError(f"{path} is damaged ({reason}); restore it, or re-train the run") from None
    if not all(isinstance(row, dict) and "epoch" in row for row in rows):
        raise MnistlabError(f"{path} is damaged (a line is not an epoch's record); restore it, or re-train the run")
    return cast(list[HistoryRow], rows)


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """The one writer of a run folder: a second process that tries to train into it while this one does is
    refused at once, in one line. The lock dies with its holder (``fileio.exclusive``). Taking it completes a save
    that a killed process left half renamed (``fileio.finish_commit``), so the folder is whole for its writer."""
    check_run_dir(run_dir)
    path = Path(run_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)

    def busy(owner: int | None) -> MnistlabError:
        who = f"process {owner}" if owner is not None else "another process"
        return MnistlabError(
            f"{run_dir} is being trained by {who}; wait for it to end, or stop it "
            "(two runs into one folder would leave one of them)"
        )

    with exclusive(path, busy=busy):
        finish_commit(run_dir, RUN_FILES)
        yield
