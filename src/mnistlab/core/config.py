"""Configuration: augmentation ranges, a model's training recipe, and the full configuration of one run.

All frozen, all checked when made, and a leaf: nothing here imports torch or the models, so the CLI can
build its options and parse a config without loading either. A model's own recipe is looked up with
``mnistlab.models.config_for(name, **overrides)``.

Each field is declared once, and everything about it is written there: its type (a ``Literal`` for a field that takes
one of a list: its choices), its range (``within="(0, 10]"``) and its name in messages, read back by the checks of a
config made in code or read from JSON and by the CLI's options (``field_specs``); and its roles (``dataclasses.field``
metadata): whether it only says how and where the run executes (it may change on resume), whether it may differ
between the runs of one stacked group, and whether ``mnistlab train`` offers it as an option of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mnistlab.core.errors import MnistlabError
from mnistlab.core.rundir import CONFIG, RUNS, default_run_dir, read_config

Device = Literal["auto", "cpu", "cuda", "mps"]
# a field's roles (metadata keys; absent means no): how and where a run executes, not what it computes;
# may differ between the runs of one stacked group; not an option of `mnistlab train` (set another way)
EXECUTION, PER_RUN, NO_OPTION = "execution", "per_run", "no_option"


def _field(
    default: Any, *roles: str, within: str | None = None, what: str | None = None, also: tuple[str, ...] = ()
) -> Any:
    """A config field with its roles, its range ``within`` (an interval, "(0, 10]", "[0, inf)"), its name in
    messages ``what`` (the field's name with spaces by default) and ``also``: values an option takes beyond the
    field's choices (precision's "auto", resolved when a config is made)."""
    meta: dict[str, Any] = dict.fromkeys(roles, True)
    meta.update({k: v for k, v in (("within", within), ("what", what), ("also", also)) if v})
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldSpec:
    """What a field's declaration says of its values: its type, choices (a ``Literal``'s), whether None is allowed,
    its range, and its name in messages."""

    name: str
    kind: Any  # bool, int, float, str, tuple, dict, Augment
    choices: tuple[str, ...]
    optional: bool
    within: str | None
    what: str
    also: tuple[str, ...]

    def check(self, value: Any) -> None:
        """One line if ``value`` is out of the field's choices or range (None passes where it is allowed)."""
        if value is None and self.optional:
            return
        if self.choices and value not in self.choices:
            raise MnistlabError(f"unknown {self.what} {value!r}; choose {', '.join(self.choices)}")
        if self.within and not _inside(value, self.within):
            if self.within == "(0, inf)":
                rule = "must be positive"
            elif self.within == "[0, inf)":
                rule = "must be 0 or more"
            else:
                rule = f"must be in {self.within}"
            raise MnistlabError(f"{self.what} {rule}, got {value}")


def _inside(value: float, interval: str) -> bool:
    low_side, high_side = (part.strip() for part in interval.split(","))
    low, high = float(low_side[1:]), float(high_side[:-1])
    above = value > low if low_side[0] == "(" else value >= low
    below = value < high if high_side[-1] == ")" else value <= high
    return above and below


@functools.cache
def field_specs(owner: type) -> dict[str, FieldSpec]:
    """Each field of the dataclass ``owner`` as its declaration says (``FieldSpec``), from its annotation, read
    back with ``typing.get_type_hints``, and its metadata."""
    hints = typing.get_type_hints(owner)
    specs = {}
    for f in dataclasses.fields(owner):
        hint, optional = hints[f.name], False
        args = typing.get_args(hint)
        if type(None) in args:  # X | None
            optional, hint = True, next(a for a in args if a is not type(None))
        choices: tuple[str, ...] = ()
        if typing.get_origin(hint) is Literal:
            choices, hint = typing.get_args(hint), str
        kind = typing.get_origin(hint) or hint
        what = f.metadata.get("what", f.name.replace("_", " "))
        specs[f.name] = FieldSpec(
            f.name, kind, choices, optional, f.metadata.get("within"), what, f.metadata.get("also", ())
        )
    return specs


def _check_fields(config: Any) -> None:
    for spec in field_specs(type(config)).values():
        spec.check(getattr(config, spec.name))


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

    epochs: int = _field(15, within="(0, inf)")
    batch_size: int = _field(128, within="(0, inf)")
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    # the starting rate (for onecycle: the peak, max_lr); above 10 is a typo, which would only diverge
    lr: float = _field(0.01, within="(0, 10]", what="learning rate")
    momentum: float = _field(0.9, within="[0, 1)")  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = _field(0.0, within="[0, 1)")
    scheduler: Literal["none", "step", "onecycle", "plateau"] = "none"
    step_size: int = _field(6, within="(0, inf)")  # step: epochs between decays
    gamma: float = _field(0.1, within="(0, 1]")  # step and plateau: the decay factor
    pct_start: float = _field(0.3, within="(0, 1)", what="pct_start")  # onecycle: the warm-up's share of the steps
    div_factor: float = 10.0  # onecycle: initial lr = lr / div_factor
    final_div_factor: float = 100.0  # onecycle: final lr = initial lr / final_div_factor
    patience: int = 1  # plateau: epochs without improvement before decaying
    augment: Augment = _field(Augment(), NO_OPTION)  # train has an option per range instead (--rotation, ...)
    dropout: float = _field(0.0, within="[0, 1)")  # passed to the model's builder
    label_smoothing: float = _field(0.0, within="[0, 1)")
    # decay of an exponential moving average of the weights, per step (0: off); it is evaluated
    ema: float = _field(0.0, within="[0, 1)", what="ema decay")
    # learning from bigger models (knowledge distillation): frozen teachers' checkpoints (train --teacher PATH; a
    # run folder means each of its seeds' last.pt); the student learns from the mean of their probabilities at
    # temperature T as well as from the labels: loss = (1 - alpha) CE + alpha T^2 KL(teachers || student)
    teachers: tuple[str, ...] = _field((), NO_OPTION)
    distill_alpha: float = _field(0.5, within="[0, 1]")  # the teachers' share of the loss (with teachers only)
    distill_temperature: float = _field(4.0, within="(0, 100]")  # softens both distributions in the teachers' term
    # what the teachers are shown: "augmented", the student's own warped batch (each epoch's, computed then or read
    # from the teacher cache); "clean", each training image as it is, computed once for the split and gathered
    # into every batch (the student still sees its warp: the teachers' cost no longer grows with seeds or epochs)
    teacher_view: Literal["augmented", "clean"] = "augmented"
    # attention transfer (with teachers): the student also matches the teachers' attention maps (each block's channel
    # energy as a unit vector) at the blocks whose maps have the same size, this weight times half their squared
    # distance (0: off; training.attention). The clean view warps the teachers' maps of the unwarped image instead
    attention: float = _field(0.0, within="[0, 100000]", what="attention weight")
    # pruning: start from a trained network of the same family cut to this model's widths, each layer keeping the
    # channels with the largest BatchNorm scales (models.prune): a checkpoint, or a folder of runs (each seed starts
    # from the run of its own seed; config_for names the file and its sha256)
    init: str | None = _field(None, PER_RUN)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):  # from JSON or a run's overrides: the one place dicts become Augment
            object.__setattr__(self, "augment", Augment(**self.augment))
        object.__setattr__(self, "teachers", tuple(self.teachers))  # from JSON: a list
        _check_fields(self)
        if self.attention and not self.teachers:
            raise MnistlabError("attention transfer needs teachers: name them (--teacher PATH) or set attention to 0")


def check_seeds(seeds: Sequence[Any], shown: str) -> tuple[int, ...]:
    """A group's seeds: distinct integers of 0 or more, or one line saying so (``shown``: the seeds as given)."""
    values = tuple(seeds)
    if not values or len(set(values)) < len(values) or not all(isinstance(s, int) and s >= 0 for s in values):
        raise MnistlabError(f"seeds must be distinct integers of 0 or more, got {shown}")
    return values


@dataclass(frozen=True)
class TrainConfig(Recipe):
    """One run: a model, its recipe (possibly overridden) and where and how to run it.

    Build one with ``mnistlab.models.config_for(name, **overrides)``, which starts from the model's recipe:
    the recipe fields' defaults here are generic, not any model's.
    """

    model: str = _field("", NO_OPTION)  # a registered model name (required)
    # layers as data, for a model built from them: its builder's arguments
    arch: dict[str, Any] | None = _field(None, NO_OPTION)
    seed: int = _field(1, PER_RUN, within="[0, inf)")  # weights, batch order and augmentation all follow it
    # images held out of training for model selection (0: none)
    val_size: int = _field(5000, within="[0, 60000)", what="validation size")
    limit: int | None = _field(None, within="(0, inf)")  # keep only the first N images of each split (tiny runs, tests)
    device: Device = _field("auto", EXECUTION)
    threads: int = _field(0, EXECUTION, within="[0, inf)")  # torch CPU threads (0: leave torch's default)
    compile: bool = _field(False, EXECUTION)  # torch.compile the model
    # on CUDA, replay each full batch's training step as one captured graph (SGD)
    cuda_graph: bool = _field(True, EXECUTION)
    # the forward pass's arithmetic: "fp32", or "bf16" (bfloat16 autocast; the weights, the loss and the
    # evaluation stay float32). A new run's "auto" becomes bf16 on a CPU that computes it natively (core.perf),
    # fp32 elsewhere, when its config is made: what decided the numbers is what config.json records
    precision: Literal["fp32", "bf16"] = _field("fp32", NO_OPTION, also=("auto",))
    # with teachers, keep their outputs for each epoch's batches under the data folder (teacher-outputs/) and read
    # them back when another run sees the same images with the same teachers: the same numbers, bit for bit
    teacher_cache: bool = _field(True, EXECUTION)
    output_dir: str = _field("", EXECUTION, PER_RUN, NO_OPTION)  # the run directory ("": runs/<model>)
    data_dir: str | None = _field(None, EXECUTION, NO_OPTION)  # the MNIST cache (train has its own --data-dir)
    # record test accuracy per epoch (reported, never used for selection)
    test_every_epoch: bool = _field(True, NO_OPTION)
    # a model from outside the package: as the user named it (FILE.py:BUILDER, MODULE:BUILDER or SPEC.json), and
    # the sha256 of what it was built from (its run folder keeps a copy: models.external)
    source: str | None = _field(None, NO_OPTION)
    source_sha256: str | None = _field(None, NO_OPTION)
    # each teacher checkpoint's sha256, in the order of ``teachers``: a run refuses a teacher that changed
    teacher_sha256: tuple[str, ...] = _field((), NO_OPTION)
    init_sha256: str | None = _field(None, PER_RUN, NO_OPTION)  # the sha256 of ``init``: a run refuses one that changed

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "teacher_sha256", tuple(self.teacher_sha256))
        if not self.model:
            raise MnistlabError("a run needs a model: build its config with mnistlab.models.config_for(name)")
        if not self.output_dir:
            object.__setattr__(self, "output_dir", default_run_dir(self.model))

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | Path | None = None) -> TrainConfig:
        """A config from its JSON form; fields it does not know (from older or newer versions) are dropped. Each
        field's type is checked, then its range; with ``where`` (the file it was read from) a wrong one is one line
        naming the file and the field."""
        known = field_specs(cls)
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


def _check_type(spec: FieldSpec, value: Any) -> None:
    """A config field's value as its JSON form must hold it, by the field's declared type."""
    if value is None:
        if spec.optional:
            return
        raise MnistlabError(f"field {spec.name!r} must not be null")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec.kind is bool:
        ok, kind = isinstance(value, bool), "true or false"
    elif spec.kind is float:
        ok, kind = number and math.isfinite(value), "a number"
    elif spec.kind is int:
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif spec.kind is str:
        ok, kind = isinstance(value, str), "a string"
    elif spec.kind is tuple:
        ok, kind = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value), "a list of strings"
    elif spec.kind is Augment:
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
        raise MnistlabError(f"field {spec.name!r} must be {kind}, got {json.dumps(value)[:60]}")


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
    results: str = _help(RUNS, "where the study (search/<name>.db) and its scratch folders live")
    device: Device = _help("auto", "where each trial trains")
    threads: int = _help(0, "torch CPU threads (0: torch's default)")
    sampler_seed: int = 0  # the sampler's draws follow it: a study re-made from scratch draws the same trials
    command: str = ""  # the command line that ran it, kept in the study (every one, in order) for the report
    stop_at: float | None = None  # a wall-clock time (time.time()) after which a trial in flight is stopped
    cuda_graph: bool = True  # on CUDA, the captured-graph training step (TrainConfig's)
    teachers: tuple[str, ...] = ()  # the study's teachers' checkpoints (fixed for the study; search --teacher)
