"""``mnistlab search``: Optuna over a declared space of small CNNs, under a hard parameter budget.

Each trial draws a shape of the zoo's family (``models.families.searched``: stem widths, body width and depth,
separable or full 3x3 blocks, how many keep their size) and a recipe (one-cycle peak, augmentation ranges,
moving average), counts its parameters and, if it is over the budget, is pruned without training. Otherwise
its seeds train as one stacked network on the 55,000 training images, and it is scored on the 5,000
validation images only: the worst seed's mean validation accuracy over the last epochs, so that a candidate
must hold on every seed. After each epoch the worst seed's validation accuracy goes to Optuna's median pruner.
The test set is never evaluated. The study lives in Optuna's RDB storage (SQLite under results/search/ by
default; any SQLAlchemy URL), so a search resumes where it stopped and several processes can share one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from mnistlab.core.config import Augment, SearchSettings, TrainConfig, recipe_values
from mnistlab.core.errors import MnistlabError, first_line, optional
from mnistlab.core.fileio import atomic_write_json, exclusive, process_alive
from mnistlab.core.rundir import LAST_K, check_folder, read_history
from mnistlab.jobs.distributed import run_tasks
from mnistlab.jobs.workers import in_processes
from mnistlab.models import config_for, create_model, get_card, list_models
from mnistlab.models.families import SEARCHED
from mnistlab.models.found import entries
from mnistlab.training.engine import fit_group

MODEL = SEARCHED  # the family every trial draws a shape of
Settings = SearchSettings  # one search's settings: a leaf of core.config, so that the command line builds its options
SQLITE = "sqlite:///"  # the start of an SQLite storage URL; the file's path follows


def batch_size_of(drawn: dict[str, Any]) -> int:
    """A search trial's batch size: drawn, or the family's for a trial of a study from before it was drawn."""
    return int(drawn.get("batch_size", get_card(MODEL).recipe.batch_size))


@dataclass(frozen=True)
class Space:
    """The ranges a trial draws from (inclusive). A JSON file of some of these fields overrides them."""

    stem1: tuple[int, int] = (4, 12)  # channels of the first 3x3 convolution
    stem2: tuple[int, int] = (8, 16)  # channels of the second
    width: tuple[int, int] = (12, 32)  # channels of every body block, after the pool
    depth: tuple[int, int] = (2, 5)  # body blocks
    factored: tuple[bool, ...] = (True, False)  # separable (depthwise + pointwise) or full 3x3 blocks
    # passes of a tied block after the body (the same weights each pass, a residual add): more computation per
    # parameter. Drawn only when the range reaches above 0 (e.g. [0, 4]), so the recorded searches draw as they did
    tied: tuple[int, int] = (0, 0)
    lr: tuple[float, float] = (0.03, 0.15)  # one-cycle peak (drawn on a log scale)
    rotation: tuple[float, float] = (0.0, 10.0)
    translate: tuple[float, float] = (0.0, 0.12)
    scale: tuple[float, float] = (0.0, 0.12)
    ema: tuple[float, ...] = (0.0, 0.999)  # decay of the moving average evaluated (0: none)
    batch_size: tuple[int, ...] = (64,)  # choices: a small model may gain from more, smaller steps
    # with the study's teachers (search --teacher): whether a trial learns from them, and with what share and
    # temperature (not drawn at all in a study without teachers)
    distill: tuple[bool, ...] = (True, False)
    distill_alpha: tuple[float, float] = (0.2, 0.9)
    distill_temperature: tuple[float, float] = (1.0, 8.0)

    @classmethod
    def from_file(cls, path: str | Path) -> Space:
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MnistlabError(f"cannot read the search space {path}: {exc}") from None
        if not isinstance(values, dict):
            raise MnistlabError(f'search space {path} is not a JSON object of fields, e.g. {{"width": [16, 28]}}')
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MnistlabError(
                f"search space {path} names unknown field {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        for name, value in values.items():
            problem = _field_problem(name, value)
            if problem:
                raise MnistlabError(f"search space {path}: {name!r} {problem}, got {json.dumps(value)}")
            if name in ("rotation", "translate", "scale"):
                try:  # the augmentation's own limits, before a trial draws past them
                    Augment(**{name: value[1]})
                except MnistlabError as exc:
                    raise MnistlabError(f"search space {path}: {exc}") from None
        return cls(**{k: tuple(v) for k, v in values.items()})


# each field of the space: a range [low, high] or a list of choices, of what type, and the lowest value allowed
_RANGES = {
    "stem1": (int, 1),
    "stem2": (int, 1),
    "width": (int, 1),
    "depth": (int, 1),
    "tied": (int, 0),
    "lr": (float, 0.0),
    "rotation": (float, 0.0),
    "translate": (float, 0.0),
    "scale": (float, 0.0),
    "distill_alpha": (float, 0.0),
    "distill_temperature": (float, 0.0),
}
_CHOICES = {"factored": (bool, False), "ema": (float, 0.0), "batch_size": (int, 1), "distill": (bool, False)}


def _field_problem(name: str, value: Any) -> str | None:
    """What is wrong with one field of a space file (None if nothing)."""
    kind, lowest = _RANGES.get(name) or _CHOICES[name]
    noun = "integers" if kind is int else "numbers" if kind is float else "true/false values"

    def fits(v: Any) -> bool:
        if kind is bool:
            return isinstance(v, bool)
        return not isinstance(v, bool) and isinstance(v, int if kind is int else (int, float)) and v >= lowest

    if name in _RANGES:
        if not (isinstance(value, list) and len(value) == 2 and all(fits(v) for v in value)):
            return f"is a range [low, high] of {noun} of at least {lowest}"
        if value[0] > value[1]:
            return "is a range [low, high] with low <= high"
        if name == "lr" and value[0] <= 0:
            return "is a range of one-cycle peaks above 0 (drawn on a log scale)"
        return None
    if not (isinstance(value, list) and value and all(fits(v) for v in value)):
        return f"is a list of choices, {noun}" + ("" if kind is bool else f" of at least {lowest}")
    if name == "ema" and max(value) >= 1:
        return "is a list of decays below 1 (0: no moving average)"
    return None


def sample(trial: Any, space: Space, teachers: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's shape (``arch``) and its drawn recipe values (``recipe_of`` makes them a recipe); in a study with
    teachers, whether it learns from them and how."""
    depth = trial.suggest_int("depth", *space.depth)
    arch = {
        "stem": [trial.suggest_int("stem1", *space.stem1), trial.suggest_int("stem2", *space.stem2)],
        "body": [trial.suggest_int("width", *space.width)] * depth,
        "padded": trial.suggest_int("padded", 0, depth),
        "factored": trial.suggest_categorical("factored", list(space.factored)),
    }
    drawn = {
        "rotation": trial.suggest_float("rotation", *space.rotation),
        "translate": trial.suggest_float("translate", *space.translate),
        "scale": trial.suggest_float("scale", *space.scale),
        "lr": trial.suggest_float("lr", *space.lr, log=True),
        "ema": trial.suggest_categorical("ema", list(space.ema)),
        "batch_size": trial.suggest_categorical("batch_size", list(space.batch_size)),
    }
    if teachers and trial.suggest_categorical("distill", list(space.distill)):
        drawn["distill"] = True
        drawn["distill_alpha"] = trial.suggest_float("distill_alpha", *space.distill_alpha)
        drawn["distill_temperature"] = trial.suggest_float("distill_temperature", *space.distill_temperature)
    if space.tied[1] > 0:  # drawn last, so that a space without it draws every other value as before
        arch["tied"] = trial.suggest_int("tied", *space.tied)
    return arch, drawn


def recipe_of(drawn: dict[str, Any], epochs: int | None = None, teachers: tuple[str, ...] = ()) -> dict[str, Any]:
    """A trial's whole recipe, as ``recipe_values`` gives one: its drawn values (``sample``, or a finished
    trial's ``params``) on the searched family's recipe; a trial that learns from teachers, the study's."""
    values = recipe_values(get_card(MODEL).recipe)
    augment = dataclasses.replace(
        values["augment"], rotation=drawn["rotation"], translate=drawn["translate"], scale=drawn["scale"]
    )
    return {
        **values,
        "lr": drawn["lr"],
        "ema": drawn["ema"],
        "augment": augment,
        "batch_size": batch_size_of(drawn),
        "epochs": values["epochs"] if epochs is None else epochs,
        **(
            {
                "teachers": tuple(teachers),
                "distill_alpha": drawn["distill_alpha"],
                "distill_temperature": drawn["distill_temperature"],
            }
            if drawn.get("distill")
            else {}
        ),
    }


def count_params(arch: dict[str, Any]) -> int:
    return sum(p.numel() for p in create_model(MODEL, **arch).parameters())


def smallest_params(space: Space) -> int:
    """The fewest parameters any shape of the space has (the cheapest of each choice)."""
    low = space.depth[0]
    return min(
        count_params(
            {"stem": [space.stem1[0], space.stem2[0]], "body": [space.width[0]] * low, "padded": 0, "factored": f}
        )
        for f in space.factored
    )


def _optuna() -> Any:
    """Optuna, an optional extra: one line naming it where it is missing."""
    return optional("optuna", "search", "a search")


def open_study(settings: Settings) -> Any:
    """The study, created where it does not exist yet (an SQLite file's folder too)."""
    optuna = _optuna()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if settings.storage.startswith(SQLITE) and settings.storage != SQLITE + ":memory:":
        folder = Path(settings.storage[len(SQLITE) :]).parent
        check_folder(folder, "the study's folder")
        folder.mkdir(parents=True, exist_ok=True)
    try:
        # a trial whose worker died (killed, or its machine lost) stops beating and is marked failed by the
        # next worker to start a trial, instead of staying "running" for ever
        with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna 4: a warning per worker
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                settings.storage,
                heartbeat_interval=60,
                grace_period=180,
                engine_kwargs=_engine_kwargs(settings.storage),
            )
        study = optuna.create_study(
            study_name=settings.name,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=settings.sampler_seed),
            # not before two thirds of the epochs: under one-cycle a high peak or strong augmentation looks
            # worst while the rate is high (the record search's first 30 trials pruned 14 of 18 at epochs 5-7)
            pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=max(1, 2 * settings.epochs // 3)),
        )
    except Exception as exc:  # SQLAlchemy's errors for a URL it cannot open are many kinds
        raise _storage_error(settings.storage, exc) from None
    fail_orphans(study)
    # how its trials train, for the report and for registering a trial (the first settings stay)
    if "settings" not in study.user_attrs:
        study.set_user_attr(
            "settings",
            {
                "max_params": settings.max_params,
                "seeds": list(settings.seeds),
                "epochs": settings.epochs,
                "limit": settings.limit,
                "teachers": list(settings.teachers),
            },
        )
    elif study.user_attrs["settings"].get("teachers", []) != list(settings.teachers):
        raise MnistlabError(
            f"study {settings.name} learns from {study.user_attrs['settings'].get('teachers') or 'no teachers'}; "
            "a study's teachers are fixed: give the same --teacher paths, or start another study (--name)"
        )
    return study


def fail_orphans(study: Any) -> list[int]:
    """Mark failed the trials still "running" whose worker, on this machine, is gone (a search killed with -9 or
    its terminal closed): at once, not after the heartbeat's grace period. Return their numbers."""
    optuna = _optuna()

    orphans = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get("worker")
        if owner and owner.get("host") == socket.gethostname() and not process_alive(int(owner.get("pid", 0))):
            study._storage.set_trial_user_attr(trial._trial_id, "stopped", "its worker was gone")
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            orphans.append(trial.number)
    return orphans


LOCK_WAIT = 60.0  # seconds a search waits for an SQLite storage another process holds locked, then says so


def _engine_kwargs(storage: str) -> dict[str, Any]:
    """An SQLite storage waits ``LOCK_WAIT`` seconds for another process's lock (Python's default: 5)."""
    return {"connect_args": {"timeout": LOCK_WAIT}} if storage.startswith(SQLITE) else {}


def _storage_error(storage: str, exc: Exception) -> MnistlabError:
    first = first_line(exc, type(exc).__name__)
    if "database is locked" in first:
        return MnistlabError(
            f"the study storage {storage} is locked by another process (waited {LOCK_WAIT:.0f} s); let it finish, "
            "then run the same command again (a trial cut short here is marked failed by the next search)"
        )
    return MnistlabError(f"cannot open the study storage {storage!r}: {first}")


@contextmanager
def storage_errors(storage: str) -> Iterator[None]:
    """A storage's faults while a search or a registration uses it (a lock held too long) as one line."""
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as exc:
        raise _storage_error(storage, exc) from None


def open_existing(name: str, storage: str) -> Any:
    """The study ``name`` that must exist already in ``storage`` (registering a trial): one line if it does not."""
    optuna = _optuna()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage.startswith(SQLITE) and not Path(storage[len(SQLITE) :]).is_file():
        raise MnistlabError(f"no study storage at {storage}; run `mnistlab search` first")
    try:
        return optuna.load_study(
            study_name=name, storage=optuna.storages.RDBStorage(storage, engine_kwargs=_engine_kwargs(storage))
        )
    except KeyError:
        raise MnistlabError(f"no study {name!r} in {storage}") from None
    except Exception as exc:  # SQLAlchemy's errors for a URL it cannot open are many kinds
        raise _storage_error(storage, exc) from None


def run_trial(trial: Any, settings: Settings, space: Space, log: Callable[[str], None]) -> float:
    """Train one candidate on every seed (stacked); its score is the worst seed's last-epochs validation mean."""
    optuna = _optuna()

    arch, recipe = sample(trial, space, bool(settings.teachers))
    params = count_params(arch)
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})  # see fail_orphans
    trial.set_user_attr("params", params)
    trial.set_user_attr("arch", arch)
    if params > settings.max_params:
        log(f"trial {trial.number}: {params:,} parameters, over the budget: not trained")
        trial.set_user_attr("over_budget", True)
        raise optuna.TrialPruned(f"{params:,} parameters, over the budget of {settings.max_params:,}")
    recipe_fields = recipe_of(recipe, settings.epochs, settings.teachers)
    root = Path(settings.results) / "search" / settings.name / f"trial{trial.number}"
    configs = [
        config_for(  # the teachers named by their checkpoints and sha256, checked when the trial starts
            MODEL,
            arch=arch,
            seed=seed,
            limit=settings.limit,
            device=settings.device,
            threads=settings.threads,
            cuda_graph=settings.cuda_graph,
            test_every_epoch=False,
            output_dir=str(root / f"s{seed}"),
            **recipe_fields,
        )
        for seed in settings.seeds
    ]

    def report(epoch: int, histories: list[list[dict[str, Any]]]) -> None:
        # a trial past its last epoch has nothing left to stop: it finishes
        if settings.stop_at is not None and epoch < settings.epochs and time.time() > settings.stop_at:
            trial.set_user_attr("stopped", f"at the deadline, after epoch {epoch}")
            raise Deadline(f"trial {trial.number} stopped at the deadline after epoch {epoch}")
        trial.report(min(h[-1]["val_acc"] for h in histories), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    log(f"trial {trial.number}: {params:,} parameters, {arch}, lr {recipe['lr']:.3g}, ema {recipe['ema']}")
    fit_group(configs, progress=False, log=lambda line: None, after_epoch=report)
    per_seed = [mean(h["val_acc"] for h in _history(c)[-LAST_K:]) for c in configs]
    trial.set_user_attr("val_per_seed", per_seed)
    return min(per_seed)


class Deadline(Exception):
    """A trial stopped by ``Settings.stop_at`` (a lent machine's end): Optuna records it as failed, and its
    worker goes on to the next trial, which its timeout stops from starting."""


def _history(config: TrainConfig) -> list[dict[str, Any]]:
    return read_history(config.output_dir)


def search(
    settings: Settings,
    space: Space,
    trials: int,
    log: Callable[[str], None] = print,
    workers: int = 1,
    cluster: Any = None,
    timeout: float | None = None,
) -> Any:
    """Run ``trials`` more trials of the study (created, or continued where it stopped), in this process or
    split over ``workers`` local processes, or over Ray tasks with ``cluster`` (``distributed.Cluster``).
    Every worker opens the same study in the storage, with its own sampler seed. With ``timeout`` (seconds) a
    worker starts no trial after that long (the one it is training finishes)."""
    smallest = smallest_params(space)
    if settings.max_params < smallest:
        raise MnistlabError(
            f"no candidate of the search space fits {settings.max_params:,} parameters (the smallest has "
            f"{smallest:,}); raise --max-params or narrow the space"
        )
    if settings.stop_at is not None:  # no trial starts that the deadline would stop
        timeout = min(timeout if timeout is not None else math.inf, max(0.0, settings.stop_at - time.time()))
    with storage_errors(settings.storage):
        return _search(settings, space, trials, log, workers, cluster, timeout)


def _search(
    settings: Settings,
    space: Space,
    trials: int,
    log: Callable[[str], None],
    workers: int,
    cluster: Any,
    timeout: float | None,
) -> Any:
    study = open_study(settings)
    if settings.command:
        study.set_user_attr("commands", [*study.user_attrs.get("commands", []), settings.command])
    before = len(study.trials)
    # every worker its share of the trials and its own sampler seed, offset by the trials already there (a
    # resumed study's random start-up draws anew); on Ray a path every node can resolve
    shared = dataclasses.replace(settings, storage=_absolute(settings.storage)) if cluster else settings
    calls = [
        (dataclasses.replace(shared, sampler_seed=settings.sampler_seed + before + i), space, share, timeout)
        for i in range(workers)
        if (share := trials // workers + (i < trials % workers))
    ]
    if cluster is not None:
        log(f"{len(calls)} search workers on Ray, sharing {shared.storage}")
        run_tasks(_scratch_worker, calls, cluster, {"num_cpus": float(max(1, settings.threads))})
    elif workers > 1:
        log(f"{workers} search workers, sharing {settings.storage}")
        for _ in in_processes(_worker, calls, workers):
            pass
    else:  # the one worker draws with its offset sampler seed too: a resumed study draws new trials
        mine = calls[0][0]
        open_study(mine).optimize(
            lambda trial: run_trial(trial, mine, space, log), n_trials=trials, timeout=timeout, catch=(Deadline,)
        )
    study = open_study(settings)
    log(f"study {settings.name}: {len(study.trials)} trials ({len(study.trials) - before} new) in {settings.storage}")
    return study


def _worker(settings: Settings, space: Space, trials: int, timeout: float | None = None) -> None:
    """One search worker: ``trials`` trials of the shared study, its log lines prefixed by its sampler seed."""
    log = lambda line: print(f"[{settings.name} worker {settings.sampler_seed}] {line}", flush=True)  # noqa: E731
    with storage_errors(settings.storage):
        study = open_study(settings)
        study.optimize(
            lambda trial: run_trial(trial, settings, space, log), n_trials=trials, timeout=timeout, catch=(Deadline,)
        )


def _scratch_worker(settings: Settings, space: Space, trials: int, timeout: float | None = None) -> None:
    """A worker on a Ray node: its trials' run folders are scratch there (the study's storage keeps the
    scores), so nothing is written outside a temporary folder."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mnistlab-search-") as scratch:
        _worker(dataclasses.replace(settings, results=scratch), space, trials, timeout)


def _absolute(storage: str) -> str:
    """A SQLite URL with a relative path, made absolute (a Ray worker runs in another folder)."""
    if storage.startswith(SQLITE) and not storage.startswith(SQLITE + "/") and storage != SQLITE + ":memory:":
        return SQLITE + str(Path(storage[len(SQLITE) :]).resolve())
    return storage


def register_trial(study: Any, number: int, name: str, path: str | Path) -> dict[str, Any]:
    """Add a finished trial to the found models (``path``, a JSON list) as model ``name``: its layers and
    recipe as data. Registered models are trained, reported and loaded like the zoo's."""
    if not name.isidentifier() or name != name.lower():
        raise MnistlabError(f"a model's name is lower-case letters, digits and underscores, got {name!r}")
    if name in list_models():
        raise MnistlabError(f"model {name!r} exists already; pick another name")
    trials = {t.number: t for t in study.trials}
    trial = trials.get(number)
    if trial is None or trial.state.name != "COMPLETE":
        done = sorted(n for n, t in trials.items() if t.state.name == "COMPLETE")
        raise MnistlabError(f"trial {number} of study {study.study_name} did not finish; finished: {done}")
    settings = study.user_attrs.get("settings") or {}
    recipe = recipe_of(trial.params, settings.get("epochs"), tuple(settings.get("teachers") or ()))
    recipe["augment"] = dataclasses.asdict(recipe["augment"])  # as JSON
    entry = {
        "name": name,
        "study": study.study_name,
        "trial": number,
        "params": trial.user_attrs["params"],
        "score": trial.value,
        "val_per_seed": trial.user_attrs.get("val_per_seed"),
        "arch": trial.user_attrs["arch"],
        "recipe": recipe,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def busy(owner: int | None) -> MnistlabError:
        return MnistlabError(
            f"{path} is being written by {f'process {owner}' if owner else 'another process'} for over "
            f"{REGISTRY_WAIT:.0f} s; run the same command again when it is done"
        )

    # one writer at a time: read, add, write under the file's lock, or two registrations at once lose one
    with exclusive(path.with_name(path.name + ".lock"), busy=busy, wait=REGISTRY_WAIT):
        present = entries(path)
        if any(e["name"] == name for e in present):
            raise MnistlabError(f"model {name!r} exists already in {path}; pick another name")
        atomic_write_json(path, [*present, entry])
    return entry


REGISTRY_WAIT = 60.0  # seconds a registration waits for another process writing the user's found models


# ------------------------------------------------------------------------------------------- trials as data


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """Every trial of an Optuna study as data: its number, state, parameters, score (worst seed's validation
    mean), shape."""
    rows = []
    for t in study.trials:
        score = t.value if t.value is not None and not math.isnan(t.value) else None
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "params": t.user_attrs.get("params"),
                "over_budget": t.user_attrs.get("over_budget", False),
                "score": score,
                "arch": t.user_attrs.get("arch"),
                "params_drawn": t.params,
                "val_per_seed": t.user_attrs.get("val_per_seed"),
                "stopped": t.user_attrs.get("stopped"),
            }
        )
    return rows


def finished(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials of ``trial_rows`` with a score (a pruned one's last reported value is not one)."""
    return [r for r in rows if r["state"] == "COMPLETE" and r["score"] is not None]


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial to take to final runs: the best worst-seed score; of equal scores (to 1e-6), the fewest
    parameters, since the record is about size; then the earliest."""
    done = finished(rows)
    return min(done, key=lambda r: (-round(r["score"], 6), r["params"], r["trial"])) if done else None
