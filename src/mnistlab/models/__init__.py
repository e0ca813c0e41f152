"""Models: the registry (``registry``), the reference's eight models (``zoo``), the families a student starts from
(``families``: the search's), the models a user's searches found (``found``), models from outside the package
(``external``: files, specs, installed packages' entry points; the repository's lab registers its models there) and
checkpoints (``checkpoint``)."""

from typing import Any

from torch import nn

from mnistlab.core.config import Recipe, TrainConfig
from mnistlab.models import families as _families  # noqa: F401  I001  (registers the search's family)
from mnistlab.models import found as _found  # noqa: F401  (registers the user's found models)
from mnistlab.models import registry as _registry
from mnistlab.models import zoo as _zoo  # noqa: F401  (registers the reference's eight)
from mnistlab.models.checkpoint import load_checkpoint, save_checkpoint
from mnistlab.models.external import load_entry_points, model_card, resolve
from mnistlab.models.registry import ModelCard, Reference, get_card, list_models, register_model, register_variant


def config_for(model: Any, *, base: Recipe | None = None, **overrides: Any) -> TrainConfig:
    """A run's config for ``model``: a registered name, a ``FILE.py:BUILDER`` or layer-spec path, a card, or a
    ``nn.Module`` class or builder function defined in a notebook (``external.model_card``); the model's recipe
    with ``overrides`` on top (``registry.card_config``)."""
    return _registry.card_config(model_card(model), base=base, **overrides)


def create_model(model: Any, **kwargs: Any) -> nn.Module:
    """Build ``model`` (whatever ``config_for`` takes); keyword arguments go to its builder (e.g. ``dropout``)."""
    return model_card(model).build(**kwargs)


__all__ = [
    "ModelCard",
    "Reference",
    "config_for",
    "create_model",
    "get_card",
    "list_models",
    "load_checkpoint",
    "model_card",
    "register_model",
    "register_variant",
    "resolve",
    "save_checkpoint",
]

load_entry_points()  # the models installed packages offer (group mnistlab.models): the repository's lab among them
