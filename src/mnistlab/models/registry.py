"""The model registry: builders registered by name, each with its card (Target, recipe, the reference's numbers)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from mnistlab.core.config import Recipe, TrainConfig, recipe_values
from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import sha256_file
from mnistlab.core.rundir import checkpoints_in


@dataclass(frozen=True)
class Reference:
    """What the reference project (the ERA V2 student project this lab re-implements) reported for this model.

    Its numbers cannot be re-run; ours can. Its test figure is its best epoch, chosen on test."""

    params: int
    best_test_acc: float


@dataclass(frozen=True)
class ModelCard:
    name: str
    title: str  # "Model 4"
    builder: Callable[..., nn.Module]
    target: tuple[str, ...]  # the Target bullets (the reference's words where it has them)
    design: str  # the architecture and the choices that were ours, in a sentence or three
    recipe: Recipe
    params: int  # the documented parameter count; a test checks the built model against it
    reference: Reference | None = None
    reference_rf: tuple[int, ...] = ()  # the reference's hand-made receptive-field column, one per conv/pool
    # its role in the lab, read by the runner, the CLI and the report (one place, here):
    lost: bool = False  # a study's candidate that was not chosen: reported in its study only
    aims: bool = False  # aims at the course's target: the report says, seed by seed, whether it held
    record: bool = False  # an attempt at the record (the fewest parameters that hold): in the record section
    refit: bool = False  # chosen on the validation split: its final runs train on all 60,000 training images
    compared_with: str = ""  # a first design or a redesign: the model the report's analysis sets it against
    final_seeds: int = 3  # its final runs' seeds, 1..n (a record is judged on 6)


_REGISTRY: dict[str, ModelCard] = {}


def register_model(
    *,
    title: str,
    target: tuple[str, ...],
    design: str,
    recipe: Recipe,
    params: int,
    reference: Reference | None = None,
    reference_rf: tuple[int, ...] = (),
    lost: bool = False,
    aims: bool = False,
    record: bool = False,
    refit: bool = False,
    compared_with: str = "",
    final_seeds: int = 3,
    replace: bool = False,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name, with the card that describes it (``replace``: a model from
    outside the package, registered again from its run's copy)."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY and not replace:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelCard(
            name,
            title,
            builder,
            target,
            design,
            recipe,
            params,
            reference,
            reference_rf,
            lost,
            aims,
            record,
            refit,
            compared_with,
            final_seeds,
        )
        return builder

    return decorate


def list_models(pattern: str = "*", *, lost: bool = True, outside: bool = True) -> list[str]:
    """Registered names matching ``pattern``; ``lost=False`` leaves out the models that lost a study,
    ``outside=False`` the models from outside the package (a user's file or module, an installed package's)."""
    names = (
        n
        for n, card in _REGISTRY.items()
        if (lost or not card.lost) and (outside or not getattr(card.builder, "outside", False))
    )
    return sorted((n for n in names if fnmatch.fnmatch(n, pattern)), key=_natural)


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def get_card(name: str) -> ModelCard:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MnistlabError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def config_for(name: str, **overrides: Any) -> TrainConfig:
    """A run of model ``name`` with its recipe, ``overrides`` (None values ignored) applied on top."""
    card = get_card(name)
    values = recipe_values(card.recipe)
    # a model from outside the package records where it came from (models.external)
    values.update(source=getattr(card.builder, "source", None), source_sha256=getattr(card.builder, "sha256", None))
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("teachers") and not values.get("teacher_sha256"):  # each teacher named by its checkpoints
        values["teachers"], values["teacher_sha256"] = teacher_files(values["teachers"])
    return TrainConfig(model=name, **values)


def teacher_files(paths: tuple[str, ...] | list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The teachers' checkpoints (a run folder means each of its seeds) and each one's sha256."""
    files = []
    for path in paths:
        found = checkpoints_in(path)
        if not found:
            raise MnistlabError(f"teacher {path}: no checkpoint there (a .pt file, a run folder, or a folder of runs)")
        files += [str(f) for f in found]
    return tuple(files), tuple(sha256_file(f) for f in files)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model. Keyword arguments go to its builder (e.g. ``dropout``)."""
    return get_card(name).builder(**kwargs)


def _natural(name: str) -> tuple[int, str, int]:
    """The zoo's models by number first, then the others in the order they were registered (the record
    study's models before those found by a search)."""
    if not name.startswith("model"):
        return 1, "", list(_REGISTRY).index(name) if name in _REGISTRY else len(_REGISTRY)
    stem = name.rstrip("0123456789")
    digits = name[len(stem) :]
    return 0, stem, int(digits) if digits else -1
