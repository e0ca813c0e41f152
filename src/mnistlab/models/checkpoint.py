"""Checkpoints: the weights with the config and model name that made them, written atomically."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistlab.core.errors import MnistlabError, first_line
from mnistlab.core.fileio import atomic_write
from mnistlab.core.rundir import CONFIG, read_config
from mnistlab.models.external import ensure_registered
from mnistlab.models.registry import build_model, get_card

FORMAT = "mnistlab-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, model: nn.Module, config: dict[str, Any], **state: Any) -> Path:
    """Save ``model``'s weights, its name and config, and any extra training ``state`` (epoch, optimizer…)."""
    return atomic_write(path, checkpoint_writer(model, config, **state))


def checkpoint_writer(model: nn.Module, config: dict[str, Any], **state: Any) -> Callable[[Any], None]:
    """What writes the checkpoint of ``model`` to an open file (``save_checkpoint``, or several files as one)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": config["model"],
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **state,
    }
    return lambda f: torch.save(payload, f)


# the model a fresh install predicts with and shows in the demo: Model 8, seed 1's last epoch (99.54% on the test
# set), a slim copy of results/model8/seed1/last.pt (weights, config and epoch; no optimizer state)
SHIPPED = Path(__file__).with_name("shipped") / "model8-seed1.pt"


def slim_copy(source: str | Path, target: str | Path) -> Path:
    """``source``'s model, config and epoch only, written to ``target`` (how ``SHIPPED`` was made)."""
    payload = read_checkpoint(source)
    return save_checkpoint(target, model_from(payload, source), payload["config"], epoch=payload.get("epoch"))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, checked to be one of ours."""
    path = Path(path)
    if not path.is_file():
        raise MnistlabError(f"checkpoint {path} does not exist; train one with `mnistlab train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  a damaged or foreign file fails inside unpickling in many ways
        first = first_line(exc)  # its whole first line
        first = first if isinstance(exc, (RuntimeError, OSError)) else f"{type(exc).__name__}: {first}".rstrip(": ")
        raise MnistlabError(
            f"{path} is not a readable checkpoint: it is damaged, or not a .pt file written by `mnistlab train` "
            f"({first})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MnistlabError(f"{path} is not an mnistlab checkpoint")
    if payload.get("version") != VERSION:
        raise MnistlabError(
            f"{path} is checkpoint format version {payload.get('version')}, this mnistlab reads {VERSION}; "
            "re-train or use the matching mnistlab"
        )
    return payload


def load_checkpoint(path: str | Path, model: str | None = None) -> nn.Module:
    """The checkpoint's model in eval mode: [N, 1, 28, 28] normalised images in, log-probabilities out.

    With ``model``, refuse a checkpoint of any other model.
    """
    payload = read_checkpoint(path)
    if model is not None and payload["model"] != model:
        raise MnistlabError(f"{path} holds a {payload['model']} checkpoint, not {model}")
    return model_from(payload, path)


def check_belongs(payload: dict[str, Any], path: str | Path) -> None:
    """Refuse, in one line naming it, a checkpoint lying in a run folder that is not that run's model: another
    architecture (its name, the source it was built from, its layers as data). The same three build the same
    layers, so the weights' shapes are then checked where they are loaded (``model_from``). A checkpoint outside a
    run folder is its own."""
    path = Path(path)
    folder = path.parent
    if not (folder / CONFIG).is_file():
        return
    run = read_config(folder)
    mine = payload.get("config", {})
    differs = [k for k in ("model", "source_sha256", "arch") if mine.get(k) != run.get(k)]
    if differs:
        raise MnistlabError(
            f"{path} is not a checkpoint of the run in {folder} ({', '.join(differs)} differ from its config.json: "
            f"a {payload.get('model')} checkpoint beside a {run.get('model')} run); move it into its own run's "
            "folder, or to a folder of its own, and evaluate it there"
        )


def model_from(payload: dict[str, Any], path: str | Path) -> nn.Module:
    """The model of a checkpoint already read (``read_checkpoint``), in eval mode."""
    name = payload["model"]
    check_belongs(payload, path)  # a checkpoint in a run folder is that run's model, or it is refused here
    # a model from outside the package is rebuilt from the copy its run folder keeps
    ensure_registered(payload["config"], Path(path).parent, log=lambda line: print(line, file=sys.stderr))
    network = build_model(get_card(name), payload["config"])
    try:
        network.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise MnistlabError(
            f"{path}: weights do not fit {name} as this version defines it ({str(exc).splitlines()[0]})"
        ) from None
    return network.eval()
