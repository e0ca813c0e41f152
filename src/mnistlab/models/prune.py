"""Pruning: a trained network cut down to a narrower one of the same layers, a starting point for training it.

Each convolution block (a 3x3 convolution or a separable block, then BatchNorm) keeps the output channels whose
BatchNorm scale is largest in size, as network slimming ranks them (Liu et al., 2017): a channel whose scale is
near zero contributes little to what follows. The next layer keeps the input channels that survived; the
depthwise filters follow their channels; the class head keeps its inputs. Kept channels stay in their order, so
a child as wide as its parent is the parent, exactly (tested). Layers without weights (pooling, GAP) pass through.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistlab.core.errors import MnistlabError


def cut_into(parent: nn.Module, child: nn.Module) -> None:
    """Set ``child``'s weights to ``parent``'s, cut to ``child``'s widths. Both are networks of one family (a
    ``features`` sequence of the same named layers: conv, separable and head blocks), the child no wider than the
    parent anywhere; one line says which layer does not fit."""
    parents = dict(_layers(parent))
    children = list(_layers(child))
    if [name for name, _ in children] != list(parents):
        raise MnistlabError("a network is cut into one with the same layers in the same order, only narrower")
    kept = torch.arange(1)  # the image's one channel
    with torch.no_grad():
        for name, layer in children:
            kept = _cut_layer(name, parents[name], layer, kept)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise MnistlabError(f"{type(model).__name__} is not a network of this family (no `features` of layers)")
    return list(features.named_children())


def _cut_layer(name: str, parent: nn.Module, child: nn.Module, kept: torch.Tensor) -> torch.Tensor:
    """Copy one layer's kept weights; return the channels its output keeps."""
    if isinstance(child, nn.Conv2d):  # the class head: every class, the inputs that survived
        _copy(child.weight, parent.weight[:, kept], name)
        if child.bias is not None:
            _copy(child.bias, parent.bias, name)
        return torch.arange(child.out_channels)
    parts = dict(child.named_children())
    if "bn" not in parts:
        if any(True for _ in child.parameters()):
            raise MnistlabError(f"layer {name} ({type(child).__name__}) has weights that cutting does not know")
        return kept  # pooling, GAP, dropout: no weights, the same channels
    width = child.bn.num_features
    scales = parent.bn.weight.abs()
    if width > scales.numel():
        raise MnistlabError(f"layer {name} has {width} channels, more than the {scales.numel()} it is cut from")
    out = torch.argsort(scales, descending=True, stable=True)[:width].sort().values
    if "conv" in parts:
        _copy(child.conv.weight, parent.conv.weight[out][:, kept], name)
    elif "pointwise" in parts:
        _copy(child.depthwise.weight, parent.depthwise.weight[kept], name)
        _copy(child.pointwise.weight, parent.pointwise.weight[out][:, kept], name)
    else:
        raise MnistlabError(f"layer {name}: a block with BatchNorm but neither a convolution nor a separable pair")
    for key in ("weight", "bias", "running_mean", "running_var"):
        _copy(getattr(child.bn, key), getattr(parent.bn, key)[out], name)
    child.bn.num_batches_tracked.copy_(parent.bn.num_batches_tracked)
    return out


def _copy(target: torch.Tensor, source: torch.Tensor, name: str) -> None:
    if target.shape != source.shape:
        raise MnistlabError(f"layer {name}: {tuple(source.shape)} cut from the parent, {tuple(target.shape)} wanted")
    target.copy_(source)
