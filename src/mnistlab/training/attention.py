"""Attention transfer (Zagoruyko and Komodakis, 2017): the student matches its teachers' attention maps as well as
their probabilities. A block's attention map is its channel energy, the mean over channels of its squared
activations, as a unit vector over positions; the student's and the teachers' are compared at the blocks whose maps
have the same size in both networks (for each size, the last block of that size in each), and each slot's term is
``weight / 2`` times the sum over those blocks of the mean squared difference. No parameter is added: the maps are
read off the blocks' outputs by forward hooks.

Where the teachers see the student's own warped batch (``teacher_view`` "augmented") their maps come from that same
pass. With "clean", the teachers' maps of each unwarped training image are a table made once
(``teachercache.CleanMaps``) and each batch's rows are warped by the batch's own affine warp (``warp_maps``): a
teacher's map of the warped image, up to what its layers do not share with the warp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.core.errors import MnistlabError
from mnistlab.models.layers import Net
from mnistlab.models.stacking import StackedNet

IMAGE = 28  # the input's side, in pixels


@dataclass(frozen=True)
class Block:
    """A layer of a network's feature stack whose output is a map: its name, side and stride (input pixels per
    position)."""

    name: str
    size: int
    stride: int


@dataclass(frozen=True)
class Pair:
    """Where the student and its teachers are compared: one map size, the student's layer and each teacher
    architecture's (in the order of ``Teachers.groups``)."""

    size: int
    stride: int
    student: str
    teachers: tuple[str, ...]


def map_blocks(net: Net) -> list[Block]:
    """The layers of ``net.features`` with weights whose output is a square map larger than one position."""
    blocks, stride = [], 1
    x = torch.zeros(1, 1, IMAGE, IMAGE)
    was = net.training
    net.eval()
    with torch.no_grad():
        for name, layer in net.features.named_children():
            x = layer(x)
            stride *= _stride(layer)
            has_weights = any(True for _ in layer.parameters())
            if has_weights and x.dim() == 4 and x.shape[-1] == x.shape[-2] and x.shape[-1] > 1:
                blocks.append(Block(name, int(x.shape[-1]), stride))
    net.train(was)
    return blocks


def _stride(layer: nn.Module) -> int:
    """How many input positions one step of ``layer``'s output moves (its convolutions' and pools' strides)."""
    total = 1
    for module in layer.modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            step = module.stride
            total *= step[0] if isinstance(step, tuple) else step
    return total


def matched_pairs(student: Net, teachers: list[Net]) -> list[Pair]:
    """For each map size every network has, its last block of that size in each (the student's and each teacher
    architecture's), smallest stride first; one line when there is none."""

    def last_of_size(net: Net) -> dict[int, Block]:
        return {block.size: block for block in map_blocks(net)}  # later blocks of a size replace earlier ones

    mine = last_of_size(student)
    theirs = [last_of_size(t) for t in teachers]
    sizes = [s for s in mine if all(s in t and t[s].stride == mine[s].stride for t in theirs)]
    if not sizes:
        raise MnistlabError(
            "attention transfer needs blocks whose maps have the same size in the student and its teachers (the "
            "layers of its feature stack; a model from a file or module is one layer, its maps hidden inside): these "
            "share none: set attention to 0, or choose teachers or a layer stack of a like shape"
        )
    return [Pair(s, mine[s].stride, mine[s].name, tuple(t[s].name for t in theirs)) for s in sizes]


def energy(maps: torch.Tensor, slots: int) -> torch.Tensor:
    """The attention maps of a stacked layer's output [B, K*C, H, W]: each slot's channel energy as a unit vector,
    [B, K, H*W]."""
    b, kc, h, w = maps.shape
    q = maps.float().reshape(b, slots, kc // slots, h * w).pow(2).mean(2)
    return F.normalize(q, dim=-1)


def transfer_loss(student: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Each slot's sum over pairs of the mean squared difference between its maps and its targets' ([B, K, P] each
    pair), [K]."""
    return sum((s - t).pow(2).mean((0, 2)) for s, t in zip(student, targets))  # type: ignore[return-value]


def warp_maps(rows: torch.Tensor, theta: torch.Tensor | None, pair: Pair) -> torch.Tensor:
    """Maps of unwarped images, [K, B, H*W], warped by each image's affine map ``theta`` ([K, B, 2, 3], the
    image's; None: unwarped) and made unit vectors again, [B, K, H*W]. A map's positions span ``size * stride`` of
    the image's pixels about its centre: rotation, shear and zoom are the image's, a shift scales to the map's
    span; positions beyond the map read its edge (the background's energy)."""
    k, b, positions = rows.shape
    if theta is not None:
        theta = theta.reshape(k * b, 2, 3).to(rows.dtype).clone()
        theta[:, :, 2] *= IMAGE / (pair.size * pair.stride)
        grid = F.affine_grid(theta, [k * b, 1, pair.size, pair.size], align_corners=False)
        maps = rows.reshape(k * b, 1, pair.size, pair.size)
        rows = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.normalize(rows.reshape(k, b, positions), dim=-1).transpose(0, 1)


class Taps:
    """Forward hooks that keep the outputs of some of a stacked network's top-level layers (their last call's)."""

    def __init__(self, net: StackedNet, names: list[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.names = names
        self.handles = [net.features.get_submodule(name).register_forward_hook(self._keep(name)) for name in names]

    def _keep(self, name: str):  # noqa: ANN202  a hook
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            self.outputs[name] = output

        return hook

    def energies(self, slots: int) -> list[torch.Tensor]:
        """The last call's attention maps at each tapped layer, [B, slots, H*W] each."""
        return [energy(self.outputs[name], slots) for name in self.names]


class TeacherMaps:
    """The teachers' mean attention maps of the batch they last saw: taps on each teacher architecture's stack."""

    def __init__(self, groups: list[StackedNet], pairs: list[Pair]) -> None:
        self.groups = groups
        self.taps = [Taps(g, [p.teachers[i] for p in pairs]) for i, g in enumerate(groups)]

    def mean(self, batch: int, slots: int) -> list[torch.Tensor]:
        """Each pair's mean over the teachers of their unit maps, a unit vector again, [batch, slots, H*W], of
        the teachers' last call on [batch * slots] images."""
        total: list[torch.Tensor] | None = None
        count = 0
        for group, taps in zip(self.groups, self.taps):
            maps = [m.sum(1) for m in taps.energies(group.slots)]  # [B*K, T, P] summed over T
            total = maps if total is None else [a + m for a, m in zip(total, maps)]
            count += group.slots
        assert total is not None
        return [F.normalize(m / count, dim=-1).view(batch, slots, -1) for m in total]


@dataclass
class Attention:
    """Attention transfer inside a training step: its weight, the pairs, the student's taps and the teachers'."""

    weight: float
    pairs: list[Pair]
    student: Taps
    teachers: TeacherMaps

    @classmethod
    def create(cls, weight: float, model: StackedNet, groups: list[StackedNet]) -> Attention:
        pairs = matched_pairs(model.template(), [g.template() for g in groups])
        return cls(weight, pairs, Taps(model, [p.student for p in pairs]), TeacherMaps(groups, pairs))

    def loss(self, slots: int, targets: list[torch.Tensor]) -> torch.Tensor:
        """Each slot's term, [K], from the student's last forward pass and the teachers' maps ``targets``."""
        return self.weight / 2 * transfer_loss(self.student.energies(slots), targets)
