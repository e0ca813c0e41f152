"""The recorded results, read back: a run (its summary, history and config), a model's seeds, a study's
candidates. Data only; ``report`` renders them and ``studies.Study.choose`` picks a study's winner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from mnistlab.models.registry import ModelCard
from mnistlab.rundir import CONFIG, LAST_K, SUMMARY, TARGET, read_history
from mnistlab.studies import Run, Study, candidate_name


@dataclass(frozen=True)
class RunRecord:
    path: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    config: dict[str, Any]

    @property
    def last3(self) -> list[float]:
        return self.summary[f"test_acc_last{LAST_K}"]

    @property
    def held(self) -> bool:
        """The target held in each of the last 3 epochs of this run."""
        return len(self.last3) == LAST_K and min(self.last3) >= TARGET


def load_run(path: Path) -> RunRecord | None:
    if not (path / SUMMARY).is_file():
        return None
    history = read_history(path)
    return RunRecord(path, json.loads((path / SUMMARY).read_text()), history,
                     json.loads((path / CONFIG).read_text()))  # fmt: skip


def model_runs(results: Path, name: str) -> list[RunRecord]:
    folder = results / name
    runs = [load_run(p) for p in sorted(folder.glob("seed*"))] if folder.is_dir() else []
    return [r for r in runs if r is not None]


@dataclass(frozen=True)
class ModelResult:
    """A model's headline numbers over its seeds."""

    card: ModelCard
    runs: list[RunRecord]

    @property
    def seeds(self) -> list[int]:
        return [r.summary["seed"] for r in self.runs]

    @property
    def last3_all(self) -> list[float]:
        return [a for r in self.runs for a in r.last3]

    @property
    def held(self) -> bool:
        """The target held in every one of the last 3 epochs, on every seed."""
        return bool(self.runs) and all(r.held for r in self.runs)

    def stat(self, key: str, how: Any = mean) -> float:
        return how([r.summary[key] for r in self.runs])


@dataclass(frozen=True)
class Candidate:
    """One candidate of a study: its runs (one per seed) and its validation score."""

    name: str
    run: Run  # the first seed's run: the model, what changed and against which candidate
    records: list[RunRecord]

    @property
    def per_seed(self) -> list[float]:
        """Each seed's mean validation accuracy over its last 3 epochs."""
        return [mean(h["val_acc"] for h in record.history[-LAST_K:]) for record in self.records]

    @property
    def score(self) -> float:
        """What decides: the mean over seeds of the last-3 validation mean."""
        return mean(self.per_seed)

    @property
    def lowest_epoch(self) -> float:
        return min(h["val_acc"] for record in self.records for h in record.history[-LAST_K:])


def tuning_scores(results: Path, study: Study) -> list[Candidate]:
    """Each candidate of ``study`` with at least one finished run, in the order declared."""
    grouped: dict[str, Candidate] = {}
    for run in study.runs:
        record = load_run(results / run.group / run.name)
        if record is None:
            continue
        name = candidate_name(run)
        grouped.setdefault(name, Candidate(name, run, [])).records.append(record)
    return list(grouped.values())
