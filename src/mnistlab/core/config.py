"""Configuration: augmentation ranges, a model's training recipe, and the full configuration of one run.

All frozen, all checked when made, and a leaf: nothing here imports torch or the models, so the CLI can
build its options and parse a config without loading either. A model's own recipe is looked up with
``mnistlab.models.config_for(name, **overrides)``.

Each field of a run's config has its roles written on it, once (``dataclasses.field`` metadata): whether it
only says how and where the run executes (it may change on resume), whether it may differ between the runs
of one stacked group, and whether ``mnistlab train`` offers it as an option of its own.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistlab.core.errors import MnistlabError
from mnistlab.core.rundir import CONFIG, RESULTS, default_run_dir, read_config

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "onecycle", "plateau")
TEACHER_VIEWS = ("augmented", "clean")
PRECISIONS = ("fp32", "bf16")  # a config's; "auto" is resolved when a config is made (models.config_for)
DEVICES = ("auto", "cpu", "cuda", "mps")
# the values a field takes, where it is one of a list: options offer them as choices (a precision's ``auto`` is
# resolved for the machine when a config is made)
CHOICES = {
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "teacher_view": TEACHER_VIEWS,
    "device": DEVICES,
    "precision": ("auto", *PRECISIONS),
}
# a field's roles (metadata keys; absent means no): how and where a run executes, not what it computes;
# may differ between the runs of one stacked group; not an option of `mnistlab train` (set another way)
EXECUTION, PER_RUN, NO_OPTION = "execution", "per_run", "no_option"


def _role(default: Any, *roles: str) -> Any:
    return field(default=default, metadata=dict.fromkeys(roles, True))


@dataclass(frozen=True)
class Augment:
    """Random affine augmentation; every range is symmetric around the identity. All zero: off."""

    # each range's help is its option's (train --rotation, ...)
    rotation: float = field(default=0.0, metadata={"help": "max rotation in degrees"})  # angle ~ U(-r, r)
    translate: float = field(default=0.0, metadata={"help": "max shift, fraction of the size"})  # x and y apart
    scale: float = field(default=0.0, metadata={"help": "max zoom change, e.g. 0.1"})  # factor ~ U(1 - s, 1 + s)
    shear: float = field(default=0.0, metadata={"help": "max shear in degrees"})  # along x

    def __post_init__(self) -> None:
        for name, low, high in (
            ("rotation", 0, 180),
            ("translate", 0, 0.5),
            ("scale", 0, 0.9),
            ("shear", 0, 60),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                raise MnistlabError(f"augmentation {name}={value} is out of range [{low}, {high}]")

    @property
    def active(self) -> bool:
        return any((self.rotation, self.translate, self.scale, self.shear))


@dataclass(frozen=True)
class Recipe:
    """How a model is trained. Each model in the zoo carries one; any field can be overridden per run."""

    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.01  # the starting rate (for onecycle: the peak, max_lr)
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 0.0
    scheduler: str = "none"  # none | step | onecycle | plateau
    step_size: int = 6  # step: epochs between decays
    gamma: float = 0.1  # step and plateau: the decay factor
    pct_start: float = 0.3  # onecycle: fraction of the steps spent warming up
    div_factor: float = 10.0  # onecycle: initial lr = lr / div_factor
    final_div_factor: float = 100.0  # onecycle: final lr = initial lr / final_div_factor
    patience: int = 1  # plateau: epochs without improvement before decaying
    augment: Augment = _role(Augment(), NO_OPTION)  # train has an option per range instead (--rotation, ...)
    dropout: float = 0.0  # passed to the model's builder
    label_smoothing: float = 0.0
    ema: float = 0.0  # decay of an exponential moving average of the weights, per step (0: off); it is evaluated
    # learning from bigger models (knowledge distillation): frozen teachers' checkpoints (train --teacher PATH; a
    # run folder means each of its seeds' last.pt); the student learns from the mean of their probabilities at
    # temperature T as well as from the labels: loss = (1 - alpha) CE + alpha T^2 KL(teachers || student)
    teachers: tuple[str, ...] = _role((), NO_OPTION)
    distill_alpha: float = 0.5  # the teachers' share of the loss (with teachers only)
    distill_temperature: float = 4.0  # softens both distributions in the teachers' term
    # what the teachers are shown: "augmented", the student's own warped batch (each epoch's, computed then or read
    # from the teacher cache); "clean", each training image as it is, computed once for the split and gathered
    # into every batch (the student still sees its warp: the teachers' cost no longer grows with seeds or epochs)
    teacher_view: str = "augmented"

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):  # from JSON or a run's overrides: the one place dicts become Augment
            object.__setattr__(self, "augment", Augment(**self.augment))
        object.__setattr__(self, "teachers", tuple(self.teachers))  # from JSON: a list
        _check(self._checks())

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.epochs > 0, f"epochs must be positive, got {self.epochs}"),
            (self.batch_size > 0, f"batch size must be positive, got {self.batch_size}"),
            (0 < self.lr <= MAX_LR, f"learning rate must be in (0, {MAX_LR}], got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (0 <= self.weight_decay < 1, f"weight decay must be in [0, 1), got {self.weight_decay}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (0 <= self.ema < 1, f"ema decay must be in [0, 1), got {self.ema}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.distill_alpha <= 1, f"distill alpha must be in [0, 1], got {self.distill_alpha}"),
            (
                0 < self.distill_temperature <= 100,
                f"distill temperature must be in (0, 100], got {self.distill_temperature}",
            ),
            (
                self.teacher_view in TEACHER_VIEWS,
                f"unknown teacher view {self.teacher_view!r}; choose {', '.join(TEACHER_VIEWS)}",
            ),
            (
                self.optimizer in OPTIMIZERS,
                f"unknown optimizer {self.optimizer!r}; choose {', '.join(OPTIMIZERS)}",
            ),
            (
                self.scheduler in SCHEDULERS,
                f"unknown scheduler {self.scheduler!r}; choose {', '.join(SCHEDULERS)}",
            ),
            (self.step_size > 0, f"step size must be positive, got {self.step_size}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (0 < self.pct_start < 1, f"pct_start must be in (0, 1), got {self.pct_start}"),
        ]


MAX_LR = 10.0  # far above any rate that trains these networks: a larger one is a typo, and only diverges


def check_seeds(seeds: Sequence[Any], shown: str) -> tuple[int, ...]:
    """A group's seeds: distinct integers of 0 or more, or one line saying so (``shown``: the seeds as given)."""
    values = tuple(seeds)
    if not values or len(set(values)) < len(values) or not all(isinstance(s, int) and s >= 0 for s in values):
        raise MnistlabError(f"seeds must be distinct integers of 0 or more, got {shown}")
    return values


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise MnistlabError(message)


@dataclass(frozen=True)
class TrainConfig(Recipe):
    """One run: a model, its recipe (possibly overridden) and where and how to run it.

    Build one with ``mnistlab.models.config_for(name, **overrides)``, which starts from the model's recipe:
    the recipe fields' defaults here are generic, not any model's.
    """

    model: str = _role("", NO_OPTION)  # a registered model name (required)
    # layers as data, for a model built from them: its builder's arguments
    arch: dict[str, Any] | None = _role(None, NO_OPTION)
    seed: int = _role(1, PER_RUN)  # weights, batch order and augmentation all follow it
    val_size: int = 5000  # images held out of training for model selection (0: none)
    limit: int | None = None  # keep only the first N images of each split (tiny runs, tests)
    device: str = _role("auto", EXECUTION)  # auto | cpu | cuda | mps
    threads: int = _role(0, EXECUTION)  # torch CPU threads (0: leave torch's default)
    compile: bool = _role(False, EXECUTION)  # torch.compile the model
    # on CUDA, replay each full batch's training step as one captured graph (SGD)
    cuda_graph: bool = _role(True, EXECUTION)
    # the forward pass's arithmetic: "fp32", or "bf16" (bfloat16 autocast; the weights, the loss and the
    # evaluation stay float32). A new run's "auto" becomes bf16 on a CPU that computes it natively (core.perf),
    # fp32 elsewhere, when its config is made: what decided the numbers is what config.json records
    precision: str = _role("fp32", NO_OPTION)
    # with teachers, keep their outputs for each epoch's batches under the data folder (teacher-outputs/) and read
    # them back when another run sees the same images with the same teachers: the same numbers, bit for bit
    teacher_cache: bool = _role(True, EXECUTION)
    output_dir: str = _role("", EXECUTION, PER_RUN, NO_OPTION)  # the run directory ("": runs/<model>)
    data_dir: str | None = _role(None, EXECUTION, NO_OPTION)  # the MNIST cache (train has its own --data-dir)
    # record test accuracy per epoch (reported, never used for selection)
    test_every_epoch: bool = _role(True, NO_OPTION)
    # a model from outside the package: as the user named it (FILE.py:BUILDER, MODULE:BUILDER or SPEC.json), and
    # the sha256 of what it was built from (its run folder keeps a copy: models.external)
    source: str | None = _role(None, NO_OPTION)
    source_sha256: str | None = _role(None, NO_OPTION)
    # each teacher checkpoint's sha256, in the order of ``teachers``: a run refuses a teacher that changed
    teacher_sha256: tuple[str, ...] = _role((), NO_OPTION)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "teacher_sha256", tuple(self.teacher_sha256))
        _check(
            [
                (bool(self.model), "a run needs a model: build its config with mnistlab.models.config_for(name)"),
                (self.seed >= 0, f"seed must be 0 or more, got {self.seed}"),
                (0 <= self.val_size < 60_000, f"validation size must be in [0, 60000), got {self.val_size}"),
                (self.limit is None or self.limit > 0, f"limit must be positive, got {self.limit}"),
                (self.device in DEVICES, f"unknown device {self.device!r}; choose {', '.join(DEVICES)}"),
                (self.threads >= 0, f"threads must be >= 0, got {self.threads}"),
                (self.precision in PRECISIONS, f"unknown precision {self.precision!r}; choose {', '.join(PRECISIONS)}"),
            ]
        )
        if not self.output_dir:
            object.__setattr__(self, "output_dir", default_run_dir(self.model))

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | Path | None = None) -> TrainConfig:
        """A config from its JSON form; fields it does not know (from older or newer versions) are dropped. Each
        field's type is checked, then its range; with ``where`` (the file it was read from) a wrong one is one line
        naming the file and the field."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        try:
            for name, value in kept.items():
                _check_type(known[name], value)
            return cls(**kept)
        except MnistlabError as exc:
            if where is None:
                raise
            raise MnistlabError(f"{where}: {exc}; correct it (or restore the file)") from None

    @classmethod
    def read(cls, run_dir: str | Path) -> TrainConfig:
        """A run folder's ``config.json``, checked where it is read, its ``output_dir`` the folder as it is now (a
        run lives where it is, wherever it was made)."""
        path = Path(run_dir) / CONFIG
        values = read_config(run_dir)
        return dataclasses.replace(cls.from_dict(values, where=path), output_dir=str(run_dir))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """What decides the numbers: every field but those saying how and where the run executes."""
        return {k: v for k, v in self.to_dict().items() if k not in fields_with(EXECUTION)}

    def shared(self) -> dict[str, Any]:
        """What every run of one stacked group has in common: every field but the per-run ones."""
        return {k: v for k, v in self.to_dict().items() if k not in fields_with(PER_RUN)}


def _check_type(f: dataclasses.Field[Any], value: Any) -> None:
    """A config field's value as its JSON form must hold it, by the field's default and annotation."""
    declared = str(f.type)  # the annotation as written ("int | None"): its first type is the field's
    if value is None:
        if "None" in declared:
            return
        raise MnistlabError(f"field {f.name!r} must not be null")
    base = declared.split("|")[0].strip()
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if base == "bool":
        ok, kind = isinstance(value, bool), "true or false"
    elif base == "float":
        ok, kind = number and math.isfinite(value), "a number"
    elif base == "int":
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif base == "str":
        ok, kind = isinstance(value, str), "a string"
    elif base.startswith("tuple"):
        ok, kind = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value), "a list of strings"
    elif base == "Augment":
        names = {a.name for a in dataclasses.fields(Augment)}
        ok = isinstance(value, (dict, Augment))
        if isinstance(value, dict):
            ok = set(value) <= names and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
            )
        kind = f"an object of {', '.join(sorted(names))} (numbers)"
    else:  # arch: a builder's arguments
        ok, kind = isinstance(value, dict), "an object"
    if not ok:
        raise MnistlabError(f"field {f.name!r} must be {kind}, got {json.dumps(value)[:60]}")


def fields_with(role: str) -> tuple[str, ...]:
    """The names of a run's config fields that have ``role`` (``EXECUTION``, ``PER_RUN``, ``NO_OPTION``)."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get(role))


def read_recipe_changes(path: str | Path) -> dict[str, Any]:
    """The recipe fields a JSON file changes (``train --recipe FILE``), each checked as a recipe checks it."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MnistlabError(f"cannot read the recipe {path}: {exc}") from None
    known = {f.name for f in dataclasses.fields(Recipe)}
    if not isinstance(values, dict) or not set(values) <= known:
        unknown = sorted(set(values) - known) if isinstance(values, dict) else []
        raise MnistlabError(
            f"recipe {path} must be a JSON object of recipe fields"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + f" (known: {', '.join(sorted(known))})"
        )
    try:
        Recipe(**values)
    except TypeError as exc:
        raise MnistlabError(f"recipe {path}: {exc}") from None
    return values


def recipe_values(recipe: Recipe) -> dict[str, Any]:
    """The recipe's fields as keyword arguments (for a TrainConfig built on it)."""
    return {f.name: getattr(recipe, f.name) for f in dataclasses.fields(Recipe)}


def _help(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class SearchSettings:
    """One search (``mnistlab search``, ``jobs.search``): where its study is stored and how each trial trains. A
    field with help is an option of ``mnistlab search`` of the same name."""

    name: str
    storage: str
    max_params: int = field(metadata={"help": "hard budget: a candidate over it is never trained"})
    seeds: tuple[int, ...] = (1, 2, 3, 4)
    epochs: int = _help(15, "epochs of every trial")
    limit: int | None = _help(None, "keep only the first N images of each split (a first try)")
    results: str = _help(RESULTS, "where the study (search/<name>.db) and its scratch folders live")
    device: str = _help("auto", "where each trial trains")
    threads: int = _help(0, "torch CPU threads (0: torch's default)")
    sampler_seed: int = 0  # the sampler's draws follow it: a study re-made from scratch draws the same trials
    command: str = ""  # the command line that ran it, kept in the study (every one, in order) for the report
    stop_at: float | None = None  # a wall-clock time (time.time()) after which a trial in flight is stopped
    cuda_graph: bool = True  # on CUDA, the captured-graph training step (TrainConfig's)
    teachers: tuple[str, ...] = ()  # the study's teachers' checkpoints (fixed for the study; search --teacher)
