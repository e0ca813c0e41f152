"""The lab's recorded results, read back (a run folder itself is read by ``tools.runs``): a run (its summary, history and config), a model's seeds, a study's
candidates, and the trials of the searches stored under ``results/search/``. Data only; ``report`` renders them
and ``chosen`` applies a study's rule to pick its winner.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from mnistlab.core.errors import MnistlabError, first_line, optional
from mnistlab.core.rundir import LAST_K, TARGET
from mnistlab.jobs.search import trial_rows
from mnistlab.models.registry import ModelCard
from mnistlab.tools.runs import RecordedRun, Seeds, read_run
from mnistlab_lab.studies import Run, Study, candidate_name


def model_runs(results: Path, name: str) -> list[RecordedRun]:
    folder = results / name
    runs = [read_run(p) for p in sorted(folder.glob("seed*"))] if folder.is_dir() else []
    return [r for r in runs if r is not None]


@dataclass(frozen=True)
class ModelResult(Seeds):
    """A model's headline numbers over its seeds."""

    card: ModelCard
    runs: list[RecordedRun]

    @property
    def seeds(self) -> list[int]:
        return [r.summary["seed"] for r in self.runs]

    @property
    def held(self) -> bool:
        """The target held in every one of the last 3 epochs, on every seed."""
        return bool(self.runs) and self.held_count == len(self.runs)

    def stat(self, key: str, how: Any = mean) -> float:
        return how([r.summary[key] for r in self.runs])


@dataclass(frozen=True)
class Candidate:
    """One candidate of a study: its recorded runs (one per seed) and its validation score."""

    name: str
    declared: Run  # the first seed's declared run: the model, what changed and against which candidate
    runs: list[RecordedRun]

    @property
    def per_seed(self) -> list[float]:
        """Each seed's mean validation accuracy over its last 3 epochs."""
        return [mean(h["val_acc"] for h in run.history[-LAST_K:]) for run in self.runs]

    @property
    def score(self) -> float:
        """What decides: the mean over seeds of the last-3 validation mean."""
        return mean(self.per_seed)

    @property
    def lowest_epoch(self) -> float:
        return min(h["val_acc"] for run in self.runs for h in run.history[-LAST_K:])


def waiting(study: Study, candidates: list[Candidate]) -> list[str]:
    """The declared candidates of ``study`` not recorded on every seed yet: until there are none, it chooses none."""
    runs = {c.name: len(c.runs) for c in candidates}
    declared = sorted({candidate_name(run) for run in study.runs})
    return [n for n in declared if runs.get(n, 0) < sum(candidate_name(r) == n for r in study.runs)]


def chosen(study: Study, candidates: list[Candidate]) -> Candidate | None:
    """The candidate ``study``'s rule picks from its recorded ``candidates``: the highest validation mean, or (rule
    "smallest") the smallest model that held the target on validation in each of the last epochs of every seed
    declared for it, and whose validation mean reaches the study's ``mean_at_least`` (None if none did)."""
    if not candidates:
        return None
    if study.rule == "smallest":
        declared = {c.name: sum(candidate_name(run) == c.name for run in study.runs) for c in candidates}
        held = [
            c
            for c in candidates
            if len(c.runs) == declared[c.name] and c.lowest_epoch >= TARGET and c.score >= study.mean_at_least
        ]
        return min(held, key=lambda c: c.runs[0].summary["params"]) if held else None
    return max(candidates, key=lambda c: c.score)


def recorded_runs(runs: Iterable[Run], results: Path) -> list[tuple[Run, RecordedRun]]:
    """The ledger's ``runs`` that are recorded (finished) under ``results``, each with its record, in order."""
    pairs = ((run, read_run(run.path(results))) for run in runs)
    return [(run, recorded) for run, recorded in pairs if recorded is not None]


def tuning_scores(results: Path, study: Study) -> list[Candidate]:
    """Each candidate of ``study`` with at least one finished run, in the order declared."""
    grouped: dict[str, Candidate] = {}
    for run, recorded in recorded_runs(study.runs, results):
        name = candidate_name(run)
        grouped.setdefault(name, Candidate(name, run, [])).runs.append(recorded)
    return list(grouped.values())


# ------------------------------------------------------------------------------------------------- searches


Searches = list[tuple[Path, Any, list[dict[str, Any]]]]  # (its SQLite file, the study, its trials as rows)


def load_searches(results: Path) -> Searches:
    """Every study stored under ``results/search/``, with its trials as data (``trial_rows``)."""
    stores = sorted((results / "search").glob("*.db"))
    if not stores:
        return []
    optuna = optional("optuna", "search", "the report of a results folder with searches")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = []
    for store in stores:
        storage = f"sqlite:///{store}"
        try:
            for summary in optuna.get_all_study_summaries(storage):
                study = optuna.load_study(study_name=summary.study_name, storage=storage)
                studies.append((store, study, trial_rows(study)))
        except Exception as exc:  # noqa: BLE001  SQLAlchemy's errors for a damaged database are many kinds
            first = first_line(exc, type(exc).__name__)
            raise MnistlabError(
                f"{store} is not a readable study database ({first}); restore it, or move it out of {store.parent}"
            ) from None
    return studies
