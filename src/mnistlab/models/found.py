"""The models found by ``mnistlab search`` and registered with ``mnistlab register``: each one's layers and
recipe are data in ``found.json`` beside this file (the search's ``searched`` family), so a found model
trains, reloads and reports like the zoo's, and the file says which study and trial it came from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from mnistlab.core.config import Recipe
from mnistlab.models.compact import searched
from mnistlab.models.registry import ModelCard, register_model

# MNISTLAB_FOUND names another file: a try-out (the GPU session script's --tiny) registers there, not here
FOUND = Path(os.environ.get("MNISTLAB_FOUND") or Path(__file__).with_name("found.json"))


def _register(entry: dict[str, Any]) -> None:
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
    register_model(card)(build)


def entries(path: Path = FOUND) -> list[dict[str, Any]]:
    """The found models as ``mnistlab register`` wrote them (none when the file is absent)."""
    return json.loads(path.read_text()) if path.is_file() else []


def load(path: Path = FOUND) -> list[dict[str, Any]]:
    """Register every entry of ``path``; return them."""
    found = entries(path)
    for entry in found:
        _register(entry)
    return found


load()
