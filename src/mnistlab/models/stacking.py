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
import operator
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

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
    if type(first) is nn.Linear:
        return StackedLinear(modules)
    if not type(first).__module__.startswith("torch."):  # a model as its author wrote it: by its graph
        return _stack_traced(modules, name)
    raise MnistlabError(f"layer {name} ({type(first).__name__}) has no stacked form; it cannot be stacked")


class StackedLinear(nn.Module):
    """K linear layers side by side: [B, K*in] in (model-major), [B, K*out] out."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        first = layers[0]
        self.slots, self.in_features, self.out_features = len(layers), first.in_features, first.out_features
        self.weight = nn.Parameter(torch.cat([layer.weight.detach() for layer in layers]))  # [K*out, in]
        self.bias = (
            nn.Parameter(torch.cat([layer.bias.detach() for layer in layers])) if first.bias is not None else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.slots
        out = torch.einsum(
            "bki,koi->bko", x.reshape(len(x), k, self.in_features), self.weight.view(k, -1, self.in_features)
        )
        if self.bias is not None:
            out = out + self.bias.view(k, -1)
        return out.reshape(len(x), -1)


# ------------------------------------------------------------------------------- a model by its traced graph
# Functions that act per element, or per channel and position: the same call serves K models' channels.
_PER_ELEMENT = {
    F.relu,
    torch.relu,
    F.relu6,
    F.leaky_relu,
    F.gelu,
    F.silu,
    F.elu,
    torch.sigmoid,
    torch.tanh,
    F.dropout,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    torch.add,
    torch.mul,
}
_PER_ELEMENT_METHODS = {"relu", "sigmoid", "tanh", "size", "contiguous", "clamp", "clamp_min"}


def _stack_traced(modules: list[nn.Module], name: str) -> nn.Module:
    """K copies of a model written as its own ``forward`` (functional calls, branches, residual adds), stacked by
    its traced graph: each layer it calls stacked as above, each operation kept where it acts per channel, a
    ``torch.cat`` of channels and a softmax over classes made per model; any other operation is named."""
    first, k = modules[0], len(modules)
    try:
        traced = fx.symbolic_trace(first)
    except Exception as exc:  # noqa: BLE001  fx raises many kinds for control flow it cannot follow
        raise MnistlabError(f"layer {name} ({type(first).__name__}) cannot be traced to stack it: {exc}") from None
    graph = copy.deepcopy(traced.graph)
    for node in graph.nodes:
        if node.op == "get_attr":
            raise MnistlabError(f"layer {name}.{node.target}: a tensor used directly by forward has no stacked form")
    # the layers it calls, and any that hold weights, in the order the model registered them: the stacked
    # parameters then line up with each model's own (its optimizer state and checkpoints are cut by that order)
    called = {str(n.target) for n in graph.nodes if n.op == "call_module"}
    order = list(dict(first.named_modules()))
    holders = {
        n for n, m in first.named_modules() if n and not list(m.children()) and list(m.parameters(recurse=False))
    }
    root = nn.Module()
    for target in sorted(called | holders, key=order.index):
        if any(target.startswith(f"{other}.") for other in called):
            continue  # inside a layer that is stacked whole
        stacked = _stack_module([m.get_submodule(target) for m in modules], f"{name}.{target}")
        _set_submodule(root, target, stacked)
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.cat:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if dim != 1:
                raise MnistlabError(f"layer {name}: torch.cat along dim {dim} has no stacked form (dim 1 has)")
            node.target, node.args, node.kwargs = _cat_per_model, (node.args[0], k), {}
        elif node.op == "call_function" and node.target in (F.log_softmax, F.softmax, torch.log_softmax, torch.softmax):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if dim not in (1, -1):
                raise MnistlabError(f"layer {name}: {function_name(node.target)} over dim {dim} has no stacked form")
            log = node.target in (F.log_softmax, torch.log_softmax)
            node.args, node.kwargs = (node.args[0], log, k), {}
            node.target = _softmax_per_model
        elif node.op == "call_function" and node.target is torch.flatten:
            if (node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)) != 1:
                raise MnistlabError(f"layer {name}: torch.flatten must start at dim 1 to stack")
        elif node.op == "call_method" and node.target in ("flatten", "view", "reshape", "mean"):
            _check_method(node, name)
        elif node.op == "call_function" and node.target in (getattr, operator.getitem) and _about_shape(node):
            continue
        elif node.op == "call_function" and node.target not in _PER_ELEMENT:
            raise MnistlabError(f"layer {name}: {function_name(node.target)} has no stacked form; it cannot be stacked")
        elif node.op == "call_method" and node.target not in _PER_ELEMENT_METHODS | {
            "flatten",
            "view",
            "reshape",
            "mean",
        }:
            raise MnistlabError(f"layer {name}: .{node.target}() has no stacked form; it cannot be stacked")
    graph.lint()
    return fx.GraphModule(root, graph, class_name=f"Stacked{type(first).__name__}")


def _about_shape(node: Any) -> bool:
    """``x.shape``, ``x.size()`` and an item of them: about the batch's size, not its values."""
    if node.target is getattr:
        return node.args[1] == "shape"
    source = node.args[0]
    return isinstance(source, fx.Node) and (
        (source.op == "call_method" and source.target == "size")
        or (source.op == "call_function" and source.target is getattr and source.args[1] == "shape")
    )


def _check_method(node: Any, name: str) -> None:
    """``x.flatten(1)``, ``x.view(x.size(0), -1)``, ``x.mean((2, 3))`` keep each model's values together."""
    args = node.args[1:]
    if node.target == "flatten" and (args[:1] or (node.kwargs.get("start_dim", 0),))[0] == 1:
        return
    if node.target in ("view", "reshape") and len(args) == 2 and args[1] == -1:
        return
    if node.target == "mean":
        dims = args[0] if args else node.kwargs.get("dim")
        if dims is not None and {d % 4 for d in (dims if isinstance(dims, (tuple, list)) else [dims])} >= {2, 3}:
            return
    raise MnistlabError(f"layer {name}: .{node.target}{tuple(args)} has no stacked form; it cannot be stacked")


def _cat_per_model(tensors: list[torch.Tensor], k: int) -> torch.Tensor:
    """``torch.cat(dim=1)`` of K models' channels, model by model (each model's branches stay together)."""
    parts = [t.reshape(len(t), k, -1, *t.shape[2:]) for t in tensors]
    joined = torch.cat(parts, dim=2)
    return joined.reshape(len(joined), -1, *joined.shape[3:])


def _softmax_per_model(x: torch.Tensor, log: bool, k: int) -> torch.Tensor:
    """A (log-)softmax over each model's classes: [B, K*10] in and out."""
    per_model = x.reshape(len(x), k, -1)
    return (F.log_softmax(per_model, dim=-1) if log else F.softmax(per_model, dim=-1)).reshape(len(x), -1)


def function_name(target: Any) -> str:
    """A graph node's function as a user wrote it: ``F.interpolate``, ``torch.cat``, ``operator.add``."""
    module = getattr(target, "__module__", "") or ""
    name = getattr(target, "__name__", str(target))
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    if module.startswith("torch") or module == "" and hasattr(torch, name):
        return f"torch.{name}"
    if module == "_operator":
        return f"operator.{name}"
    return f"{module}.{name}" if module else name


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    *path, leaf = target.split(".")
    for part in path:
        if not hasattr(root, part):
            root.add_module(part, nn.Module())
        root = getattr(root, part)
    root.add_module(leaf, module)


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
