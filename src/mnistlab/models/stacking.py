"""Stacking: K models of one architecture as one network, so that K seeds train in one pass.

Every layer holds the K models' layers side by side along the channel axis, model-major: a convolution
with ``groups`` g becomes one with K*g groups (model k's channels only see model k's), BatchNorm runs over
K*C channels (each model keeps its own statistics), and ReLU, pooling and dropout act per element or per
channel as they are. The input is [B, K, 28, 28] (slot k is model k's batch), the output [B, K, 10]
log-probabilities. Every tensor of the state dict keeps its name and holds the K models' tensors
concatenated along its first axis, which is what ``unstack`` and the engine's checkpoints cut apart.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.core.errors import MnistlabError
from mnistlab.models.layers import Net, Tied

# Layers that act per element or per channel: the same module serves K models' channels unchanged.
_SHARED = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity, nn.Flatten)


# Blocks whose forward only applies their children and adds their outputs: stacked child by child.
_CONTAINERS = (Tied,)


class StackedNet(nn.Module):
    """K ``Net``s of one architecture computed at once: [B, K, 28, 28] in, [B, K, 10] log-probabilities out."""

    def __init__(self, features: nn.Sequential, template: Net, slots: int) -> None:
        super().__init__()
        self.features = features
        self.slots = slots
        self._template = [template]  # in a list: a plain model to copy, not a submodule with parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, K, 28, 28)
        scores = self.features(x).flatten(1).view(len(x), self.slots, -1)  # (B, K, 10)
        return F.log_softmax(scores, dim=-1)

    def template(self) -> Net:
        return self._template[0]


def stack(models: list[nn.Module]) -> StackedNet:
    """One network computing ``models`` (same architecture, any weights) side by side."""
    if not models:
        raise MnistlabError("stack needs at least one model")
    first = models[0]
    for model in models:
        if not isinstance(model, Net):
            raise MnistlabError(f"{type(model).__name__} cannot be stacked: only the registry's Net models stack")
        if [type(m) for m in model.modules()] != [type(m) for m in first.modules()]:
            raise MnistlabError("stacked models must share one architecture")
    # one model is its own stacked form: any layers it has, [B, 1, 28, 28] in as a plain batch
    features = (
        copy.deepcopy(first.features) if len(models) == 1 else _stack_module([m.features for m in models], "features")
    )
    stacked = StackedNet(features, copy.deepcopy(first).cpu(), len(models))
    stacked.train(first.training)
    return stacked.to(next(first.parameters()).device)


def stack_problem(model: nn.Module) -> str | None:
    """Why seeds of ``model``'s architecture cannot be stacked into one network (None if they can)."""
    try:
        stack([model, model])
    except MnistlabError as exc:
        return str(exc)
    return None


def _stack_module(modules: list[nn.Module], name: str) -> nn.Module:
    first = modules[0]
    k = len(modules)
    if isinstance(first, nn.Sequential):
        return nn.Sequential(
            OrderedDict(
                (child, _stack_module([m.get_submodule(child) for m in modules], f"{name}.{child}"))
                for child, _ in first.named_children()
            )
        )
    if type(first) is nn.Conv2d:
        conv = nn.Conv2d(
            k * first.in_channels,
            k * first.out_channels,
            first.kernel_size,
            stride=first.stride,
            padding=first.padding,
            dilation=first.dilation,
            groups=k * first.groups,
            bias=first.bias is not None,
            padding_mode=first.padding_mode,
        )
        conv.load_state_dict(stack_states([m.state_dict() for m in modules]))
        return conv
    if type(first) is nn.BatchNorm2d:
        norm = nn.BatchNorm2d(
            k * first.num_features,
            eps=first.eps,
            momentum=first.momentum,
            affine=first.affine,
            track_running_stats=first.track_running_stats,
        )
        norm.load_state_dict(stack_states([m.state_dict() for m in modules]))
        return norm
    if isinstance(first, nn.ModuleList):
        return nn.ModuleList(_stack_module([m[i] for m in modules], f"{name}.{i}") for i in range(len(first)))
    if type(first) in _CONTAINERS:  # its forward only composes its children: the same with each child stacked
        stacked = copy.deepcopy(first)
        for child, _ in first.named_children():
            setattr(stacked, child, _stack_module([m.get_submodule(child) for m in modules], f"{name}.{child}"))
        return stacked
    if isinstance(first, _SHARED):
        return copy.deepcopy(first)
    raise MnistlabError(f"layer {name} ({type(first).__name__}) has no stacked form; it cannot be stacked")


def concat(values: list[Any]) -> Any:
    """K models' tensors as the stacked one: along the first axis. A scalar tensor (a step count) or a
    value that is no tensor (an optimizer's setting) is the same for all K and is shared."""
    first = values[0]
    if not torch.is_tensor(first) or first.dim() == 0:
        return first.clone() if torch.is_tensor(first) else first
    return torch.cat([t.detach() for t in values])


def slot(value: Any, k: int, slots: int) -> Any:
    """Model k's part of a stacked tensor (the inverse of ``concat``), on the CPU."""
    if not torch.is_tensor(value):
        return value
    if value.dim() == 0:
        return value.detach().cpu().clone()
    return value.detach().chunk(slots)[k].cpu().clone()


def unstack(stacked: StackedNet) -> list[Net]:
    """The K plain models, with the stacked network's current weights and BatchNorm buffers."""
    models = []
    for state in unstack_state(stacked.state_dict(), stacked.slots):
        model = copy.deepcopy(stacked.template())
        model.load_state_dict(state)
        models.append(model.train(stacked.training))
    return models


def stack_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """K state dicts of one architecture (a model's, its moving average's, an optimizer entry's) as the
    stacked one's."""
    return {key: concat([s[key] for s in states]) for key in states[0]}


def unstack_state(state: dict[str, Any], slots: int) -> list[dict[str, Any]]:
    """The inverse of ``stack_states``: each model's state dict, on the CPU."""
    return [{key: slot(value, k, slots) for key, value in state.items()} for k in range(slots)]
