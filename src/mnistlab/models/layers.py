"""Layers and blocks shared by the models."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Dropout(nn.Dropout):
    """Element-wise dropout, as ``nn.Dropout``; on the CPU its mask comes from numpy's PCG64.

    PyTorch's CPU Bernoulli sampler (Mersenne Twister, one draw per element) was measured at ~40% of a
    Model 8 training step. Here one 64-bit draw gives four 16-bit lanes, each kept when it is at or above
    p * 65536: the keep probability is exact to 1/65536. The generator is seeded from torch's own RNG at every
    call, so ``torch.manual_seed`` makes the masks reproducible exactly as with ``nn.Dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training, self.inplace)
        seed = int(torch.randint(0, 2**63 - 1, (1,)).item())
        lanes = -(-x.numel() // 4)
        bits = np.random.default_rng(seed).integers(0, 2**64 - 1, lanes, dtype=np.uint64, endpoint=True)
        threshold = -32768 + round(self.p * 65536)
        keep = torch.from_numpy(bits.view(np.int16)[: x.numel()] >= threshold)
        # the mask follows x's memory layout, so channels-last activations stay channels-last
        keep = keep.view(x.permute(0, 2, 3, 1).shape).permute(0, 3, 1, 2) if _channels_last(x) else keep.view(x.shape)
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), 0.0)


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class Net(nn.Module):
    """A feature stack whose output holds the 10 class scores; ``forward`` returns log-probabilities."""

    def __init__(self, layers: OrderedDict[str, nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28)
        scores = self.features(x).flatten(1)  # (B, 10)
        return F.log_softmax(scores, dim=1)


def conv(
    cin: int,
    cout: int,
    kernel: int = 3,
    padding: int = 0,
    *,
    norm: bool = True,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU -> Dropout; ``norm=False`` gives a plain biased conv + ReLU."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv"] = nn.Conv2d(cin, cout, kernel, padding=padding, bias=not norm)
    if norm:
        layers["bn"] = nn.BatchNorm2d(cout)
    layers["relu"] = nn.ReLU()
    if dropout:
        layers["drop"] = Dropout(dropout)
    return nn.Sequential(layers)


def head(cin: int, kernel: int = 1, *, bias: bool = False) -> nn.Conv2d:
    """The layer that produces the 10 class scores: no BatchNorm, no ReLU."""
    return nn.Conv2d(cin, 10, kernel, bias=bias)


def separable(cin: int, cout: int, padding: int = 0) -> nn.Sequential:
    """Depthwise 3x3 (one filter per channel) then pointwise 1x1, then BatchNorm and ReLU: a 3x3 convolution
    factored into 9*cin + cin*cout weights instead of 9*cin*cout."""
    return nn.Sequential(
        OrderedDict(
            depthwise=nn.Conv2d(cin, cin, 3, padding=padding, groups=cin, bias=False),
            pointwise=nn.Conv2d(cin, cout, 1, bias=False),
            bn=nn.BatchNorm2d(cout),
            relu=nn.ReLU(),
        )
    )


class Tied(nn.Module):
    """One separable 3x3 block (depthwise then pointwise, padded) applied ``times`` times with the same weights,
    each pass with a BatchNorm of its own, a ReLU and a residual add: its weights count once while the field and
    the multiply-adds grow with every pass (more computation per parameter)."""

    def __init__(self, channels: int, times: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(times))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm in self.norms:
            x = x + self.relu(norm(self.pointwise(self.depthwise(x))))
        return x


def tied_net(stem: tuple[int, ...], width: int, times: int) -> Net:
    """Unpadded 3x3 ``stem`` convolutions, a 2x2 max pool, one unpadded separable block to ``width``, then one
    ``Tied`` block of ``width`` applied ``times`` times, GAP and a 1x1 convolution to the classes."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    cin = 1
    for index, channels in enumerate(stem, 1):
        layers[f"conv{index}"] = conv(cin, channels)
        cin = channels
    layers["pool1"] = nn.MaxPool2d(2)
    layers["sep1"] = separable(cin, width)
    layers["tied"] = Tied(width, times)
    layers["gap"] = nn.AdaptiveAvgPool2d(1)
    layers["out"] = head(width)
    return Net(layers)


def slim_net(
    stem: tuple[int, ...],
    body: tuple[int, ...],
    padded: int = 1,
    dropout: float = 0.0,
    *,
    factored: bool = False,
    tied: int = 0,
) -> Net:
    """``stem`` widths at full resolution, pool, ``body`` widths; the last ``padded`` body convs keep size.

    With ``factored``, the body's convolutions are depthwise-separable (``separable``); with ``tied`` > 0, a ``Tied``
    block of the last body width follows, applied ``tied`` times (its weights counted once)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    cin, index = 1, 1
    for width in stem:
        layers[f"conv{index}"] = conv(cin, width, dropout=dropout)
        cin, index = width, index + 1
    layers["pool1"] = nn.MaxPool2d(2)
    for k, width in enumerate(body):
        pad = 1 if k >= len(body) - padded else 0
        block = separable(cin, width, pad) if factored else conv(cin, width, padding=pad, dropout=dropout)
        layers[f"{'sep' if factored else 'conv'}{index}"] = block
        cin, index = width, index + 1
    if tied:
        layers["tied"] = Tied(cin, tied)
    layers["gap"] = nn.AdaptiveAvgPool2d(1)
    layers["out"] = head(cin)
    return Net(layers)
