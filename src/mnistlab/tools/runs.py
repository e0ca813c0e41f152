"""Run folders read back: a finished run (its config, history and summary, and its model), and the runs under
folders grouped by the folder that holds each model's seeds. What ``mnistlab.load_run`` and ``mnistlab compare``
read, and the lab's report too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mnistlab.core.config import TrainConfig
from mnistlab.core.errors import MnistlabError
from mnistlab.core.rundir import (
    BEST,
    CONFIG,
    LAST,
    LAST_K,
    LAST_TESTS,
    SUMMARY,
    TARGET,
    HistoryRow,
    Summary,
    read_config,
    read_history,
    read_summary,
    run_status,
)
from mnistlab.models.checkpoint import load_checkpoint
from mnistlab.models.external import ensure_registered


@dataclass(frozen=True)
class RecordedRun:
    path: Path
    summary: Summary
    history: list[HistoryRow]
    config: dict[str, Any]

    @property
    def last3(self) -> list[float]:
        return self.summary[LAST_TESTS]

    @property
    def held(self) -> bool:
        """The target held in each of the last 3 epochs of this run."""
        return len(self.last3) == LAST_K and min(self.last3) >= TARGET

    @property
    def train_config(self) -> TrainConfig:
        """config.json as the frozen config it was made from (checked field by field)."""
        return TrainConfig.read(self.path)

    def model(self, checkpoint: str = "last") -> nn.Module:
        """The run's network from ``last.pt`` (or ``"best"``: ``best.pt``), in eval mode: [N, 1, 28, 28]
        normalised images in, log-probabilities out. A model from outside the package is rebuilt from the copy
        its run keeps."""
        files = {"last": LAST, "best": BEST, LAST: LAST, BEST: BEST}
        if checkpoint not in files:
            raise MnistlabError(f"a run's checkpoint is 'last' or 'best', not {checkpoint!r}")
        ensure_registered(self.config, self.path)
        return load_checkpoint(self.path / files[checkpoint])


def read_run(path: Path) -> RecordedRun | None:
    """The finished run in ``path``, or None when it has no summary yet."""
    if not (path / SUMMARY).is_file():
        return None
    return RecordedRun(path, read_summary(path), read_history(path), read_config(path))


def load_run(folder: str | Path) -> RecordedRun:
    """The finished run in ``folder`` (what ``mnistlab.fit`` wrote): ``.config`` (config.json's fields),
    ``.history`` (a dict per epoch: losses, accuracies, rate), ``.summary`` (params, the last epochs' test
    accuracy, times, provenance), ``.model()`` (its network from ``last.pt``, in eval mode). An unfinished run
    or a folder that holds none is one line saying what to do.

    >>> run = load_run("runs/model8")            # doctest: +SKIP
    >>> run.last3, run.held, run.model()          # doctest: +SKIP
    """
    path = Path(folder)
    status = run_status(path) if path.is_dir() else "todo"
    if status == "todo" and not (path / SUMMARY).is_file():
        raise MnistlabError(f"{path} holds no run (no {CONFIG}); train one with mnistlab.fit or `mnistlab train`")
    run = read_run(path)
    if run is None:
        raise MnistlabError(
            f"{path} is not finished (no {SUMMARY}); continue it with mnistlab.fit(resume=...) or "
            f"`mnistlab train --resume {path}`"
        )
    return run


class Seeds:
    """What every view of one recipe's seeds (``runs``) counts: their last epochs, and on how many it held."""

    runs: list[RecordedRun]

    @property
    def last3_all(self) -> list[float]:
        return [a for r in self.runs for a in r.last3]

    @property
    def held_count(self) -> int:
        """On how many seeds the target held in each of the last epochs."""
        return sum(r.held for r in self.runs)

    @property
    def lowest(self) -> RecordedRun:
        """The seed with the lowest of the last epochs."""
        return min(self.runs, key=lambda r: min(r.last3, default=0.0))


# ----------------------------------------------------------------------------------------- any runs, grouped


@dataclass(frozen=True)
class RunGroup(Seeds):
    """Runs of one model under one folder (``runs/my_net/seed1``, ``seed2``, ...): its seeds, compared as one."""

    label: str  # the folder that holds the seeds (or the run folder itself, for a lone run)
    model: str
    runs: list[RecordedRun]

    @property
    def params(self) -> int:
        return self.runs[0].summary["params"]


def find_runs(paths: list[Path], skipped: Callable[[str], None] | None = None) -> list[RunGroup]:
    """The finished runs in ``paths`` (run folders, or folders holding them at any depth), grouped by the folder
    that holds each model's seeds, in the order given. A damaged run stops it in one line, or with ``skipped`` is
    left out, and ``skipped`` hears why."""
    groups: dict[tuple[str, str], list[RecordedRun]] = {}
    for path in paths:
        if not path.exists():
            raise MnistlabError(f"{path} does not exist")
        folders = [path] if (path / SUMMARY).is_file() else sorted(p.parent for p in path.rglob(SUMMARY))
        for folder in folders:
            try:
                run = load_run(folder)
            except MnistlabError as exc:
                if skipped is None:
                    raise
                skipped(f"skipped {folder}: {exc}")
                continue
            if run is None or not (folder / CONFIG).is_file():
                continue
            holder = folder.parent if folder.name.startswith("seed") else folder
            groups.setdefault((str(holder), run.config["model"]), []).append(run)
    if not groups:
        raise MnistlabError(
            f"no finished runs (a folder with {SUMMARY}) in {', '.join(map(str, paths))}; train one with `mnistlab train`"
        )
    return [
        RunGroup(label, model, sorted(runs, key=lambda r: r.summary["seed"])) for (label, model), runs in groups.items()
    ]
