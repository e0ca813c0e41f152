"""What a model sees: each layer's feature maps for one digit, its most active unit, and where on the input
that unit looks (its receptive field, from the analysis module's centre, jump and field size).

A "layer" here is one block of the network as a student names it (``conv1``: convolution, BatchNorm, ReLU;
``sep3``: depthwise, pointwise, BatchNorm, ReLU; ``pool1``; ``gap``; ``out``): its output is what the next
block is given, and its field is that of the block's last analysed row. Data only; the demo draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnistlab.core.rundir import LAST
from mnistlab.data.loader import normalize
from mnistlab.tools.analysis import WRAPPED, AnalysisError, LayerRow, analyze, leaf_calls, pair

IMAGE = 28  # the input's side in pixels


@dataclass(frozen=True)
class Box:
    """Rows and columns of input pixels, inclusive; may reach outside the image (see ``clipped``)."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top + 1

    @property
    def width(self) -> int:
        return self.right - self.left + 1

    def clipped(self, size: int = IMAGE) -> Box:
        """The part of the box inside a ``size`` x ``size`` image."""
        return Box(max(self.top, 0), max(self.left, 0), min(self.bottom, size - 1), min(self.right, size - 1))

    @property
    def inside(self) -> bool:
        return self == self.clipped()


@dataclass(frozen=True)
class LayerView:
    """One block's output for one digit, and the receptive field of its most active unit."""

    name: str  # the block's module name, e.g. "conv3"
    types: str  # what the block is made of, e.g. "Conv2d, BatchNorm2d"
    maps: np.ndarray  # (channels, height, width) activations
    unit: tuple[int, int, int]  # (channel, row, column) of the largest activation
    rf: tuple[int, int] | None  # receptive field (height, width) in input pixels; None: not computed for this model
    jump: tuple[int, int] | None  # input pixels between neighbouring units
    box: Box | None  # the field of ``unit`` on the input, unclipped

    @property
    def value(self) -> float:
        return float(self.maps[self.unit])


@dataclass(frozen=True)
class Inspection:
    digit: np.ndarray  # the 28x28 input in [0, 1], as the model is given it (before normalisation)
    probabilities: tuple[float, ...]
    layers: tuple[LayerView, ...]

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probabilities))


@dataclass(frozen=True)
class Block:
    """A block's module path and the analysis rows inside it, in order."""

    path: str
    rows: tuple[LayerRow, ...]
    call: int = 0  # which call of the module at ``path`` (a module used twice is two blocks, each shown)

    @property
    def label(self) -> str:
        """What the page calls it: the module's own name (a Sequential's index as "layer 2"), and which use."""
        last = self.path.removeprefix(WRAPPED).split(".")[-1]
        name = f"layer {last}" if last.isdigit() else last
        return name if self.call == 0 else f"{name} (use {self.call + 1})"


def blocks(model: nn.Module) -> list[Block]:
    """The model's blocks with a spatial output, in order: the children of the deepest container that holds
    every analysed layer (``features`` for the zoo's ``Net``)."""
    try:
        found = [(row, _module_path(model, row.name)) for row in analyze(model).rows if len(row.output_shape) == 3]
    except AnalysisError:  # a layer the analysis does not know: the maps are still shown, without their fields
        return _blocks_without_fields(model)
    rows = [row for row, path in found if path is not None]
    if not rows:
        return []
    parts = [path.split(".") for _, path in found if path is not None]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    grouped: list[tuple[str, list[LayerRow]]] = []  # in the order the rows run: a module used again is a new block
    for row, p in zip(rows, parts):
        key = ".".join(p[: common + 1])
        if grouped and grouped[-1][0] == key:
            grouped[-1][1].append(row)
        else:
            grouped.append((key, [row]))
    return _numbered([(path, tuple(members)) for path, members in grouped])


def _blocks_without_fields(model: nn.Module) -> list[Block]:
    """Each leaf layer with a spatial output (``analysis.leaf_calls``): blocks with no rows."""
    calls = leaf_calls(model, (1, IMAGE, IMAGE))
    return _numbered([(name, ()) for name, _, out in calls if isinstance(out, torch.Tensor) and out.dim() == 4])


def _numbered(uses: list[tuple[str, tuple[LayerRow, ...]]]) -> list[Block]:
    """Blocks in the order they run, each numbered among the uses of its module (0 for the first)."""
    seen: dict[str, int] = {}
    found = []
    for path, rows in uses:
        found.append(Block(path, rows, seen.get(path, 0)))
        seen[path] = seen.get(path, 0) + 1
    return found


def _module_path(model: nn.Module, name: str) -> str | None:
    """The submodule an analysis row names (a model from outside: inside its wrapper, ``analysis.WRAPPED``)."""
    for path in (name, WRAPPED + name):
        try:
            model.get_submodule(path)
        except AttributeError:
            continue
        return path
    return None


@torch.inference_mode()
def inspect_digit(model: nn.Module, digit: np.ndarray, layers: list[Block] | None = None) -> Inspection:
    """Run one 28x28 digit through ``model`` and look at every block's output."""
    layers = blocks(model) if layers is None else layers
    outputs: dict[str, list[torch.Tensor]] = {}
    handles = [
        model.get_submodule(path).register_forward_hook(
            lambda _m, _i, out, path=path: outputs.setdefault(path, []).append(out.detach())
        )
        for path in dict.fromkeys(block.path for block in layers)
    ]
    try:
        batch = normalize(torch.from_numpy(np.asarray(digit, dtype=np.float32))[None, None])
        probabilities = model.eval()(batch).exp()[0]
    finally:
        for handle in handles:
            handle.remove()
    views = []
    uses = {path: sum(b.path == path for b in layers) for path in outputs}
    for block in layers:
        seen = outputs[block.path]  # one output per call; a block applied twice in a row is one block: its last
        maps = (seen[block.call] if len(seen) == uses[block.path] else seen[-1])[0].float().numpy()
        if maps.ndim != 3:  # a block that ends in a vector (its own flatten): no map to show
            continue
        unit = tuple(int(i) for i in np.unravel_index(int(np.argmax(maps)), maps.shape))
        box = size = step = None
        if block.rows and block.rows[-1].receptive_field is not None:
            last = block.rows[-1]
            rf, jump, centre = (pair(v, float) for v in (last.receptive_field, last.jump, last.centre))
            # the unit's field centre: the first unit's, moved ``jump`` pixels per unit
            cy, cx = centre[0] + unit[1] * jump[0], centre[1] + unit[2] * jump[1]
            top, left = round(cy - (rf[0] - 1) / 2), round(cx - (rf[1] - 1) / 2)
            box = Box(top, left, top + int(rf[0]) - 1, left + int(rf[1]) - 1)
            size, step = (int(rf[0]), int(rf[1])), (int(jump[0]), int(jump[1]))
        module = model.get_submodule(block.path)
        types = ", ".join(dict.fromkeys(row.type for row in block.rows)) or type(module).__name__
        views.append(LayerView(block.label, types, maps, unit, size, step, box))  # type: ignore[arg-type]
    return Inspection(np.asarray(digit, dtype=np.float32), tuple(float(p) for p in probabilities), tuple(views))


def shipped_checkpoints(results: str | Path, models: list[str]) -> dict[str, Path]:
    """Every final run's checkpoint under ``results`` (``<model>/seed<k>/last.pt``), labelled "<model>, seed k",
    in ``models``' order then by seed."""
    found: dict[str, Path] = {}
    for model in models:
        runs = sorted(Path(results, model).glob(f"seed*/{LAST}"), key=lambda p: (len(p.parent.name), p.parent.name))
        for path in runs:
            found[f"{model}, {path.parent.name.replace('seed', 'seed ')}"] = path
    return found
