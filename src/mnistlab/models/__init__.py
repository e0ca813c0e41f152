"""Models: the registry (``registry``), the reference's eight models (``zoo``), the models beyond them
(``compact``, ``found``), models from outside the package (``external``) and checkpoints (``checkpoint``)."""

from mnistlab.models import compact as _compact  # noqa: F401  (registers the models beyond the eight)
from mnistlab.models import found as _found  # noqa: F401  (registers the models found by search)
from mnistlab.models import zoo as _zoo  # noqa: F401  (registers the models)
from mnistlab.models.checkpoint import load_checkpoint, save_checkpoint
from mnistlab.models.external import load_entry_points, resolve
from mnistlab.models.registry import (
    ModelCard,
    Reference,
    config_for,
    create_model,
    get_card,
    list_models,
    register_model,
)

__all__ = [
    "ModelCard",
    "Reference",
    "config_for",
    "create_model",
    "get_card",
    "list_models",
    "load_checkpoint",
    "register_model",
    "resolve",
    "save_checkpoint",
]

load_entry_points()  # the models installed packages offer (group mnistlab.models)
