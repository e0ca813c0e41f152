"""The model registry: architectures registered by name, each with its card (Target, recipe, the reference's numbers),
and their trained variants: an architecture with another recipe or teachers, named ``architecture.tag`` (as timm
names ``resnet50.a1_in1k``). A variant has no builder of its own; it builds its architecture. The name a variant was
registered under before tags (``sepnet3k_kd98``) stays registered: the lab's recorded runs and checkpoints carry it,
and ``architecture.tag`` is an alias of it, so either name reaches the same card."""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mnistlab.core.config import Recipe, TrainConfig, recipe_values
from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import sha256_file
from mnistlab.core.perf import resolve_precision
from mnistlab.core.rundir import LAST, checkpoints_in, read_config


@dataclass(frozen=True)
class Reference:
    """What the reference project (the ERA V2 student project this lab re-implements) reported for this model.

    Its numbers cannot be re-run; ours can. Its test figure is its best epoch, chosen on test."""

    params: int
    best_test_acc: float


@dataclass(frozen=True)
class ModelCard:
    """A model: its builder, what it is for, its design, the recipe it trains with by default, and its documented
    parameter count; for the reference's models, what the reference reported. What a model became in this lab's
    studies (final, a losing candidate, aiming at the target...) is the lab's business (``lab.studies.ROLES``)."""

    title: str  # "Model 4"
    target: tuple[str, ...]  # the Target bullets (the reference's words where it has them)
    design: str  # the architecture and the choices that were ours, in a sentence or three
    recipe: Recipe
    params: int  # the documented parameter count; a test checks the built model against it
    reference: Reference | None = None
    reference_rf: tuple[int, ...] = ()  # the reference's hand-made receptive-field column, one per conv/pool
    name: str = ""  # the registered name: the builder's, unless given
    builder: Callable[..., nn.Module] | None = None
    # a model from outside the package: where it came from, as the user named it (FILE.py:BUILDER, MODULE:BUILDER
    # or SPEC.json; None for an entry point's), and the sha256 of what it was built from
    outside: bool = False
    source: str | None = None
    source_sha256: str | None = None
    # a trained variant: the architecture it builds and its tag (``tagged``); empty for an architecture
    architecture: str = ""
    tag: str = ""
    # where `mnistlab models` and the demo list it: unlisted ones (the search's family, a lab's teacher or losing
    # candidate) only with --all; ``note`` says what it is there
    listed: bool = True
    note: str = ""

    @property
    def tagged(self) -> str:
        """The name a user lists and asks for: ``architecture.tag`` for a variant, the name for an architecture."""
        return f"{self.architecture}.{self.tag}" if self.architecture else self.name

    def build(self, **kwargs: Any) -> nn.Module:
        assert self.builder is not None, "a registered card has its builder"
        return self.builder(**kwargs)


_REGISTRY: dict[str, ModelCard] = {}
_ALIASES: dict[str, str] = {}  # a variant's architecture.tag -> its registered name


def register(card: ModelCard, *, replace: bool = False) -> ModelCard:
    """Register ``card`` under its name (``replace``: a model from outside the package, registered again from its
    run's copy)."""
    if not card.name or card.builder is None:
        raise ValueError("a card is registered with its name and builder")
    if card.name in _REGISTRY and not replace:
        raise ValueError(f"model {card.name!r} is registered twice")
    _REGISTRY[card.name] = card
    return card


def annotate(name: str, *, listed: bool, note: str) -> None:
    """Set where ``name`` is listed and what its line says (a lab decides it from its studies once it has
    registered its models)."""
    _REGISTRY[name] = dataclasses.replace(_REGISTRY[name], listed=listed, note=note)


def register_model(card: ModelCard) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """A decorator: register the builder it decorates with ``card``, under the builder's name."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        register(dataclasses.replace(card, name=card.name or builder.__name__, builder=builder))
        return builder

    return decorate


def register_variant(architecture: str, tag: str, card: ModelCard) -> ModelCard:
    """Register ``card`` (its name: the one the lab's runs record) as the variant ``architecture.tag``: it builds
    ``architecture``'s network, whose parameter count it shares; only its recipe and words are its own."""
    base = get_card(architecture)
    if base.architecture:
        raise ValueError(f"{architecture!r} is itself a variant; a variant's architecture is an architecture")
    if not tag or not tag.replace("_", "").isalnum():
        raise ValueError(f"a variant's tag is letters, digits and underscores, got {tag!r}")
    if card.params != base.params:
        raise ValueError(
            f"variant {architecture}.{tag} says {card.params:,} parameters; {architecture} has {base.params:,}"
        )
    variant = dataclasses.replace(card, builder=base.builder, architecture=architecture, tag=tag)
    if variant.tagged in _REGISTRY or variant.tagged in _ALIASES:  # before registering: a refusal leaves nothing
        raise ValueError(f"variant {variant.tagged!r} is registered twice")
    register(variant)
    _ALIASES[variant.tagged] = variant.name
    return variant


def list_models(pattern: str = "*", *, outside: bool = True, variants: bool = True) -> list[str]:
    """Registered names matching ``pattern`` (a variant's registered name or its ``architecture.tag``);
    ``outside=False`` leaves out the models from outside the package (a user's file or module, an installed
    package's), ``variants=False`` the trained variants (architectures only)."""
    cards = [
        card for card in _REGISTRY.values() if (outside or not card.outside) and (variants or not card.architecture)
    ]
    names = (c.name for c in cards if fnmatch.fnmatch(c.name, pattern) or fnmatch.fnmatch(c.tagged, pattern))
    return sorted(names, key=_natural)


def variants_of(architecture: str) -> list[str]:
    """The registered names of ``architecture``'s trained variants, in registration order."""
    return [card.name for card in _REGISTRY.values() if card.architecture == architecture]


def is_registered(name: str) -> bool:
    return name in _REGISTRY or name in _ALIASES


def get_card(name: str) -> ModelCard:
    """The card of a registered name or of a variant's ``architecture.tag``."""
    try:
        return _REGISTRY[_ALIASES.get(name, name)]
    except KeyError:
        architecture, _, tag = name.partition(".")
        if tag and architecture in _REGISTRY:
            tags = ", ".join(_REGISTRY[v].tagged for v in variants_of(architecture)) or "none"
            raise MnistlabError(f"{architecture} has no variant {tag!r}; its variants: {tags}") from None
        known = ", ".join(list_models(variants=False))
        raise MnistlabError(
            f"unknown model {name!r}; known architectures: {known} (`mnistlab models --variants` lists their "
            "trained variants)"
        ) from None


def card_of(model: str | ModelCard) -> ModelCard:
    """A model named or already resolved: the card, looked up once and passed down."""
    return model if isinstance(model, ModelCard) else get_card(model)


def card_config(model: str | ModelCard, *, base: Recipe | None = None, **overrides: Any) -> TrainConfig:
    """The one way a run's config is made (``models.config_for``: ``mnistlab train``, the lab's studies, a search's
    trials): the model's recipe, or the named frozen recipe ``base``, with ``overrides`` (None values ignored) on top. A model from
    outside the package records where it came from; each teacher is named by its checkpoints and their sha256."""
    card = card_of(model)
    values = {**recipe_values(base or card.recipe), "source": card.source, "source_sha256": card.source_sha256}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("precision") == "auto":  # decided now, for this machine, and recorded in config.json
        values["precision"] = resolve_precision("auto", values.get("device", "auto"))
    if values.get("teachers") and not values.get("teacher_sha256"):
        try:
            values["teachers"], values["teacher_sha256"] = teacher_files(values["teachers"])
        except MnistlabError as exc:
            if overrides.get("teachers") is not None:
                raise
            # the card's own teachers: lab runs that live in the repository's results/, not in an installed package
            raise MnistlabError(
                f"{exc}; {card.tagged}'s recipe learns from the lab's runs under its repository's results/: run it "
                "from a clone of the repository, or name your own teachers with --teacher"
            ) from None
    if values.get("init") and not values.get("init_sha256"):
        values["init"], values["init_sha256"] = init_file(values["init"], values.get("seed", 1))
    return TrainConfig(model=card.name, **values)


def teacher_files(paths: tuple[str, ...] | list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The teachers' checkpoints (a run folder means each of its seeds) and each one's sha256."""
    files = []
    for path in paths:
        found = checkpoints_in(path)
        if not found:
            raise MnistlabError(f"teacher {path}: no checkpoint there (a .pt file, a run folder, or a folder of runs)")
        files += [str(f) for f in found]
    return tuple(files), tuple(sha256_file(f) for f in files)


def init_file(path: str, seed: int) -> tuple[str, str]:
    """The checkpoint a run of ``seed`` starts from (``Recipe.init``): the one ``path`` names (a .pt file or a run
    folder), else the run of that seed in the folder of runs it names, however many it holds; and its sha256."""
    found = checkpoints_in(path)
    if not (Path(path).is_file() or Path(path, LAST).is_file()):  # a folder of runs: the run of this seed
        found = [f for f in found if read_config(f.parent).get("seed") == seed]
    if len(found) != 1:
        raise MnistlabError(
            f"init {path}: no checkpoint there for seed {seed} (a .pt file, a run folder, or a folder of runs)"
        )
    return str(found[0]), sha256_file(found[0])


# the run config's fields a builder is given, when it takes them; a config's ``arch`` (layers as data) is given whole
BUILDER_FIELDS = ("dropout",)


def build_model(card: ModelCard, config: dict[str, Any]) -> nn.Module:
    """The network a run's ``config`` (as a dict: a checkpoint's or config.json's) describes: the card's builder
    with the config's declared builder arguments only."""
    accepted = inspect.signature(card.builder).parameters  # type: ignore[arg-type]
    arch = config.get("arch") or {}
    unknown = sorted(set(arch) - set(accepted))
    if unknown:
        raise MnistlabError(f"{card.name}'s builder takes no {', '.join(unknown)} (the run's arch)")
    values = {key: config[key] for key in BUILDER_FIELDS if key in config and key in accepted}
    return card.build(**values, **arch)


def _natural(name: str) -> tuple[int, str, int]:
    """The zoo's models by number first, then the others in the order they were registered (the record
    study's models before those found by a search)."""
    if not name.startswith("model"):
        return 1, "", list(_REGISTRY).index(name) if name in _REGISTRY else len(_REGISTRY)
    stem = name.rstrip("0123456789")
    digits = name[len(stem) :]
    return 0, stem, int(digits) if digits else -1
