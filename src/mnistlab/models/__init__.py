"""Models: the registry (``registry``), the reference's eight models (``zoo``), the models beyond them
(``compact``, ``found``), models from outside the package (``external``) and checkpoints (``checkpoint``)."""

from typing import Any

from torch import nn

from mnistlab.core.config import Recipe, TrainConfig
from mnistlab.models import compact as _compact  # noqa: F401  (registers the models beyond the eight)
from mnistlab.models import found as _found  # noqa: F401  (registers the models found by search)
from mnistlab.models import registry as _registry
from mnistlab.models import zoo as _zoo  # noqa: F401  (registers the models)
from mnistlab.models.checkpoint import load_checkpoint, save_checkpoint
from mnistlab.models.external import load_entry_points, model_card, resolve
from mnistlab.models.registry import ModelCard, Reference, get_card, list_models, register_model, register_variant


def config_for(model: Any, *, base: Recipe | None = None, **overrides: Any) -> TrainConfig:
    """A run's config for ``model``: a registered name, a ``FILE.py:BUILDER`` or layer-spec path, a card, or a
    ``nn.Module`` class or builder function defined in a notebook (``external.model_card``); the model's recipe
    with ``overrides`` on top (``registry.config_for``)."""
    return _registry.config_for(model_card(model), base=base, **overrides)


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

load_entry_points()  # the models installed packages offer (group mnistlab.models)
