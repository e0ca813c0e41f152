"""The lab's ledger, loaded from data: every run that makes the report, the studies that chose each recipe on the
validation split (with the rule that picks their winner), each model's part in them (``ROLES``), and the final runs.
The library knows nothing of it: its cards are architectures and recipes only.

The data lives beside this module, in ``ledger/``: ``ledger.json`` holds the named frozen recipes runs are declared
against, each model's role, the earlier attempts and the teacher set; ``studies/NN-<key>.json`` one study each (its
candidates, rule, margin and winner), in the order the lab ran them. Why each study was declared and what it found
is the lab's journal (docs/JOURNAL.md). Every run lives in ``results/<group>/<name>/``; ``runner`` trains what is
missing. Nothing here trains or reads a result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistlab.core.config import Recipe, TrainConfig
from mnistlab.core.errors import MnistlabError
from mnistlab.models import config_for, get_card, list_models
from mnistlab.models.found import entries as found_entries
from mnistlab_lab import RESULTS_DIR
from mnistlab_lab.models import FOUND
from mnistlab_lab.models import LEDGER as LAB_LEDGER

RESULTS = Path(RESULTS_DIR)
UNTESTED = {"test_every_epoch": False}  # a candidate on several validation seeds never evaluates the test set


@dataclass(frozen=True)
class Role:
    """A lab model's part in our studies (read by ``reproduce``, the report and the demo's picker)."""

    lost: bool = False  # a study's candidate that was not chosen: reported in its study only, no final runs
    aims: bool = False  # aims at the course's target: the report says, seed by seed, whether it held
    record: bool = False  # an attempt at the record (the fewest parameters that hold): in the record section
    refit: bool = False  # chosen on the validation split: its final runs train on all 60,000 training images
    compared_with: str = ""  # a first design or a redesign: the model the report's analysis sets it against
    final_seeds: int = 3  # its final runs' seeds, 1..n (a record learning from teachers is judged on 6)


@dataclass(frozen=True)
class Run:
    model: str
    seed: int
    folder: str  # folder under results/: the model's name, or "tuning"
    name: str  # folder under the group
    overrides: dict[str, Any] = field(default_factory=dict)
    why: str = ""  # what the run is for, shown in the report
    against: str = ""  # the run it changes one thing of (tuning): the report shows the difference
    base: Recipe | None = None  # a named, frozen recipe the overrides apply to (None: the model's card's)

    def path(self, results: Path) -> Path:
        """The run's folder under ``results``."""
        return results / self.folder / self.name

    def config(self, results: Path) -> TrainConfig:
        return config_for(
            self.model, base=self.base, seed=self.seed, output_dir=str(self.path(results)), **self.overrides
        )


@dataclass(frozen=True)
class Study:
    """Candidates compared on the validation split (never on test); ``rule`` says which wins."""

    key: str
    title: str
    runs: tuple[Run, ...]
    outcome: str  # what the winner became, in words
    winner: str  # the registered model it became: its recipe and layers are the best candidate's
    where: str = ""  # how the recorded runs were made, when not on the project's CPU
    superseded: str = ""  # the study that started from this one's winner and changed it
    rule: str = "mean"  # mean: the highest validation mean wins; smallest: the smallest that held on validation
    mean_at_least: float = 0.0  # rule "smallest": the validation mean over seeds it must reach as well (a margin)
    prediction: str = ""  # what the study was expected to show, written in the ledger before its runs
    predicted: tuple[tuple[str, str], ...] = ()  # (candidate, its prediction), written before its runs


def candidate_name(run: Run) -> str:
    """A seeded candidate's runs are ``<candidate>/s<seed>``; a single-seed candidate is its run's name."""
    return run.name.split("/")[0]


# ------------------------------------------------------------------------------------------------ loading


LEDGER = LAB_LEDGER  # the ledger as data: ledger.json and a file per study
STUDY_FIELDS = {"key", "title", "winner", "outcome", "rule", "candidates"}  # and mean_at_least, where, superseded
CANDIDATE_FIELDS = {"name", "model", "seeds"}  # and overrides, why, against, base


def _read(file: Any) -> Any:
    """A ledger file's JSON; a damaged one is one line naming it (the ledger is data a person edits)."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MnistlabError(f"the lab's ledger {file} cannot be read ({exc}); restore it from the repository") from None


def _frozen(values: dict[str, Any]) -> dict[str, Any]:
    """A run's overrides as the ledger declared them: lists (JSON's) back to tuples, as a config holds them."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _run(values: dict[str, Any], recipes: dict[str, Recipe]) -> Run:
    base = values.get("base")
    return Run(
        values["model"],
        values["seed"],
        values["folder"],
        values["name"],
        _frozen(values.get("overrides", {})),
        values.get("why", ""),
        values.get("against", ""),
        recipes[base] if base else None,
    )


def _candidate_runs(candidate: dict[str, Any], recipes: dict[str, Recipe]) -> list[Run]:
    """A candidate's runs: one run ``tuning/<name>`` on seed 1 (``seeds`` null), or ``tuning/<name>/s<seed>`` on
    each of its seeds, which never evaluate the test set."""
    common = {k: candidate[k] for k in ("model", "why", "against", "base") if k in candidate}
    overrides = candidate.get("overrides", {})
    if candidate["seeds"] is None:
        return [
            _run({**common, "seed": 1, "folder": "tuning", "name": candidate["name"], "overrides": overrides}, recipes)
        ]
    return [
        _run(
            {
                **common,
                "seed": s,
                "folder": "tuning",
                "name": f"{candidate['name']}/s{s}",
                "overrides": {**overrides, **UNTESTED},
            },
            recipes,
        )
        for s in candidate["seeds"]
    ]


def _studies(recipes: dict[str, Recipe], folder: Any) -> tuple[Study, ...]:
    """Every study of ``folder``, in the order of its file's number. A candidate ``{"from": KEY, "name": NAME}`` is
    another study's, recorded once; a study's seeded runs come seed by seed (every candidate's first seeds before any
    one's last), its one-seed runs in the order declared. A file that is not a study says so in one line."""
    studies: list[Study] = []
    defined: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in sorted(folder.iterdir(), key=lambda f: f.name):
        if not entry.name.endswith(".json"):
            continue
        data = _read(entry)
        candidates = []
        for candidate in _checked_study(data, entry, recipes, {key for key, _ in defined}):
            if "from" in candidate:
                candidate = defined[(candidate["from"], candidate["name"])]
            defined[(data["key"], candidate["name"])] = candidate
            candidates.append(candidate)
        runs = [_candidate_runs(c, recipes) for c in candidates]
        single = [run for group in runs for run in group if "/" not in run.name]
        seeded = [run for group in runs for run in group if "/" in run.name]
        fields = ("where", "superseded", "rule", "mean_at_least", "prediction")
        predicted = tuple((c["name"], c["prediction"]) for c in data["candidates"] if "prediction" in c)
        studies.append(
            Study(
                data["key"],
                data["title"],
                tuple(single + sorted(seeded, key=lambda run: run.seed)),  # stable: candidates in order per seed
                data["outcome"],
                data["winner"],
                **{k: data[k] for k in fields if k in data},
                predicted=predicted,
            )
        )
    return tuple(studies)


def _checked_study(data: Any, file: Any, recipes: dict[str, Recipe], earlier: set[str]) -> list[dict[str, Any]]:
    """A study file's candidates, once its fields are there and of their kinds."""

    def wrong(what: str) -> MnistlabError:
        return MnistlabError(f"the lab's ledger {file}: {what}; restore it from the repository")

    if not isinstance(data, dict) or not STUDY_FIELDS <= set(data):
        raise wrong(f"a study needs the fields {', '.join(sorted(STUDY_FIELDS))}")
    if data["rule"] not in ("mean", "smallest") or not isinstance(data["candidates"], list):
        raise wrong("its rule is mean or smallest, its candidates a list")
    for candidate in data["candidates"]:
        if not isinstance(candidate, dict):
            raise wrong("a candidate is an object")
        if "from" in candidate:
            if candidate["from"] not in earlier:
                raise wrong(
                    f"candidate {candidate.get('name')!r} is taken from {candidate['from']!r}, no earlier study"
                )
            continue
        missing = sorted(CANDIDATE_FIELDS - set(candidate))
        if missing:
            raise wrong(f"candidate {candidate.get('name')!r} lacks {', '.join(missing)}")
        seeds = candidate["seeds"]
        if seeds is not None and not (isinstance(seeds, list) and all(isinstance(x, int) and x > 0 for x in seeds)):
            raise wrong(f"candidate {candidate['name']!r}: seeds is null (one run) or a list of positive seeds")
        if candidate.get("base") is not None and candidate["base"] not in recipes:
            raise wrong(f"candidate {candidate['name']!r}: no recipe {candidate['base']!r} in ledger.json")
    return data["candidates"]


_LEDGER = _read(LEDGER.joinpath("ledger.json"))
RECORD_BUDGET: int = _LEDGER["record_budget"]  # the record: the fewest parameters that hold, at most this many
# the smallest public model known to hold 99.4%: one run, its test set watched every epoch
PUBLIC_RECORD_PARAMS: int = _LEDGER["public_record_params"]
# the named, frozen recipes runs are declared against, every field written out: editing a model's card (or a
# default) later never changes what a recorded run meant
RECIPES: dict[str, Recipe] = {name: Recipe(**values) for name, values in _LEDGER["recipes"].items()}
ROLES: dict[str, Role] = {name: Role(**values) for name, values in _LEDGER["roles"].items()}
FINAL = Role()
FOUND_ROLE = Role(**_LEDGER["found_role"])  # a model registered from one of our searches: chosen on validation
TEACHER_MODELS: tuple[str, ...] = tuple(_LEDGER["teacher_models"])  # teachers, not students (TEACHER_SET's runs)
STUDIES = _studies(RECIPES, LEDGER.joinpath("studies"))
RECORD_STUDIES: tuple[str, ...] = tuple(_LEDGER["record_studies"])  # the record section sums them up
EARLIER = tuple(_run(r, RECIPES) for r in _LEDGER["earlier"])  # final runs of recipes later replaced, as evidence
TEACHER_SET = tuple(_run(r, RECIPES) for r in _LEDGER["teacher_set"])  # the teachers' own runs
# every validation run once (a later round lists the earlier winner it has to beat)
TUNING: tuple[Run, ...] = tuple({(r.folder, r.name): r for study in STUDIES for r in study.runs}.values())


# ------------------------------------------------------------------------------------------ roles and plans


def role(name: str) -> Role | None:
    """``name``'s part in our studies; None for a model that is not one of the lab's (a user's, the search's
    family, a teacher)."""
    if name in ROLES:
        return ROLES[name]
    return FOUND_ROLE if name in {entry["name"] for entry in found_entries(FOUND)} else None


def lab_models() -> list[str]:
    """The lab's models that did not lose a study, in the registry's order: the report's, the demo's."""
    return [name for name in list_models(outside=False) if (r := role(name)) is not None and not r.lost]


def final_runs(models: list[str], seeds: tuple[int, ...] | None = None) -> list[Run]:
    """Each model with its own recipe, on every seed (None: seeds 1 to its role's ``final_seeds``; 3 for a model
    that is not the lab's). A model whose recipe was chosen on the validation split (its role's ``refit``) trains
    on all 60,000 training images; the others keep the 5,000 validation images out (Model 7's plateau schedule
    steps on their loss). The test set is only ever reported."""
    runs = []
    for model in models:
        part = role(model) or FINAL
        for seed in seeds or range(1, part.final_seeds + 1):
            runs.append(Run(model, seed, model, f"seed{seed}", {"val_size": 0} if part.refit else {}))
    return runs


def final_models() -> list[str]:
    """The models whose final runs are recorded: the lab's that did not lose a study, cheapest first (Model 1, at
    13 CPU-minutes an epoch, last)."""
    return sorted(lab_models(), key=lambda name: get_card(name).params)


def planned_runs(
    models: list[str] | None, seeds: tuple[int, ...] | None, tuning: bool, studies: tuple[str, ...] = ()
) -> list[Run]:
    """What ``mnistlab reproduce`` makes: the named studies' validation runs; or the final runs of ``models``
    (None: ``final_models()``) on ``seeds`` (None: each model's own), after every study's validation runs and the
    earlier attempts with ``tuning``."""
    if studies:
        known = {study.key: study for study in STUDIES}
        unknown = [key for key in studies if key not in known]
        if unknown:
            raise MnistlabError(f"unknown study {unknown[0]!r}; choose from {', '.join(known)}")
        runs = [run for key in studies for run in known[key].runs]
        return sorted(runs, key=lambda run: run.seed)  # every candidate's first seeds before any one's last
    names = final_models() if models is None else models
    for name in names:
        get_card(name)  # an unknown name stops here, in one line
    return (list(TUNING) + list(EARLIER) if tuning else []) + final_runs(names, seeds)
