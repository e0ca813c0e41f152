"""The models found by ``mnistlab search`` and registered with ``mnistlab register``: each one's layers and
recipe are data (the search's ``searched`` family), so a found model trains, reloads and reports like the zoo's,
and its entry says which study and trial it came from.

The user's list is ``found.json`` in the user's own folder (``$MNISTLAB_FOUND``, else
``$MNISTLAB_HOME/found.json``, else the platform's user data folder), which ``mnistlab register`` writes and every
command reads; the repository's lab registers its own list (``register_entries``) through its entry point."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import platformdirs
from torch import nn

from mnistlab.core.config import Recipe
from mnistlab.core.errors import MnistlabError
from mnistlab.models.families import searched
from mnistlab.models.registry import ModelCard, register


def user_home() -> Path:
    """The user's mnistlab folder: ``$MNISTLAB_HOME``, else the platform's user data folder."""
    if os.environ.get("MNISTLAB_HOME"):
        return Path(os.environ["MNISTLAB_HOME"]).expanduser()
    return Path(platformdirs.user_data_dir("mnistlab", appauthor=False, roaming=True))


def user_found() -> Path:
    """Where ``mnistlab register`` writes: ``$MNISTLAB_FOUND`` (a try-out's file), else the user's folder."""
    return Path(os.environ.get("MNISTLAB_FOUND") or user_home() / "found.json")


def _register(entry: dict[str, Any], outside: bool, replace: bool) -> None:
    arch = entry["arch"]
    shape = (
        f"stem {'-'.join(map(str, arch['stem']))} | pool | {len(arch['body'])} "
        f"{'separable' if arch['factored'] else 'full'} 3x3 blocks of {arch['body'][0]}, the last "
        f"{arch['padded']} padded | GAP | 1x1 to the classes"
    )

    def build(dropout: float = 0.0) -> nn.Module:
        return searched(**arch, dropout=dropout)

    build.__name__ = entry["name"]
    card = ModelCard(
        title=entry.get("title") or f"Found {entry['params']:,}",
        target=(
            f"The smallest model that holds 99.4%: trial {entry['trial']} of the search "
            f"`{entry['study']}`, worst-seed validation mean {entry['score']:.2f}.",
        ),
        design=f"{shape} ({entry['params']:,} parameters); its recipe drawn by the search.",
        recipe=Recipe(**{k: v for k, v in entry["recipe"].items()}),
        params=entry["params"],
    )
    register(dataclasses.replace(card, name=entry["name"], builder=build, outside=outside), replace=replace)


def entries(path: Path) -> list[dict[str, Any]]:
    """The found models of ``path`` as ``mnistlab register`` wrote them (none when the file is absent; a damaged
    file is one line naming it)."""
    if not path.is_file():
        return []
    try:
        found = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise MnistlabError(f"{path} is not a readable list of found models ({exc}); restore or remove it") from None
    if not isinstance(found, list) or not all(isinstance(e, dict) and "name" in e for e in found):
        raise MnistlabError(f"{path} is not a list of found models; restore or remove it")
    return found


def register_entries(path: Path, *, outside: bool = True, replace: bool = False) -> list[dict[str, Any]]:
    """Register the found models of ``path`` (``outside``: the user's, which ``list_models(outside=False)`` leaves
    out; the lab registers its own list as not outside, ``replace``-ing them when the user's file is the lab's);
    return them."""
    found = entries(path)
    for entry in found:
        _register(entry, outside=outside, replace=replace)
    return found


register_entries(user_found())
