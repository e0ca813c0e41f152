"""mnistlab: design, train and analyse tiny CNNs on MNIST.

The package is in wings, from the bottom: ``core`` (errors, files, run folders, configs), ``data``, ``models``
(the registry, the zoo, stacking, checkpoints, your own models), ``training`` (the loop), ``tools`` (what one
does with a model or checkpoint), ``jobs`` (many runs: processes, Ray, search), ``lab`` (this lab's notebook:
its studies, recorded results and report), and ``api`` and ``cli`` on top. The public API is here, loaded when
first used (the command line starts without torch):

- ``fit``: train a model (a name, a file, a class or builder; ``seeds=`` to stack; ``resume=`` a folder);
- ``load_run``, ``evaluate``, ``predict``, ``compare``, ``plot_curves``: a finished run read back and used;
- ``analyze``: a model's layers, receptive field, parameters and MACs, before any training;
- ``get_dataloaders``, ``create_model``, ``list_models``, ``get_card`` (a model's title, target, design and
  recipe), ``config_for``, ``load_checkpoint``; ``fit_group``,
  ``stack``, ``unstack`` for the engine itself.

Each has a docstring listing what it takes, with an example: ``help(mnistlab.fit)``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "get_dataloaders": "mnistlab.data",
    "create_model": "mnistlab.models",
    "list_models": "mnistlab.models",
    "config_for": "mnistlab.models",
    "get_card": "mnistlab.models",
    "load_checkpoint": "mnistlab.models",
    "fit": "mnistlab.api",
    "load_run": "mnistlab.api",
    "evaluate": "mnistlab.api",
    "predict": "mnistlab.api",
    "compare": "mnistlab.api",
    "plot_curves": "mnistlab.api",
    "analyze": "mnistlab.api",
    "stack": "mnistlab.models.stacking",
    "unstack": "mnistlab.models.stacking",
    "fit_group": "mnistlab.training.engine",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
