"""An empirical receptive-field measure, independent of mnistlab.tools.analysis's arithmetic.

Make every weight positive (so nothing cancels), put BatchNorm in eval mode with unit statistics, turn max
pools into average pools of the same geometry (a max passes gradient to one input only), feed ones, pick one
output unit and backpropagate: the input pixels with a non-zero gradient are its receptive field, clipped
to the image.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.tools.analysis import trace


def _avg_like(pool: nn.Module) -> nn.Module:
    if isinstance(pool, nn.MaxPool2d):
        return nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode)
    if isinstance(pool, nn.AdaptiveMaxPool2d):
        return nn.AdaptiveAvgPool2d(pool.output_size)
    return pool


def measured_extent(model: nn.Module, node_name: str, input_size: int = 28) -> tuple[tuple[int, int], ...]:
    """(low, high) input rows and columns that influence the centre unit of ``node_name``'s output."""
    model = copy.deepcopy(model).double().eval()
    graph = trace(model)  # torch.fx, keeping known layers as leaves
    for name, module in list(graph.named_modules()):
        if isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            parent, _, leaf = name.rpartition(".")
            setattr(graph.get_submodule(parent) if parent else graph, leaf, _avg_like(module))
    target = None
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target in (F.max_pool2d, torch.max_pool2d):
            node.target = F.avg_pool2d
            node.kwargs = {k: v for k, v in node.kwargs.items() if k not in ("dilation", "return_indices")}
        if (node.op == "call_module" and node.target == node_name) or node.name == node_name:
            target = node
    assert target is not None, f"no node {node_name}"
    output = next(n for n in graph.graph.nodes if n.op == "output")
    output.args = (target,)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    with torch.no_grad():
        for module in graph.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
        for p in graph.parameters():
            p.copy_(torch.rand_like(p) * 0.9 + 0.1)
    x = torch.ones(1, 1, input_size, input_size, dtype=torch.float64, requires_grad=True)
    out = graph(x)
    unit = out[0, 0, out.shape[2] // 2, out.shape[3] // 2] if out.dim() == 4 else out[0, 0]
    unit.backward()
    nonzero = x.grad[0, 0] != 0
    if not nonzero.any():  # every tap of the unit lands in padding: it depends on no pixel at all
        return None
    rows = torch.nonzero(nonzero.any(1)).flatten()
    cols = torch.nonzero(nonzero.any(0)).flatten()
    return (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))


def expected_window(row, output_hw: tuple[int, int] | None) -> tuple[tuple[float, float], ...]:
    """The window of the probed unit from a summary row: its centre ± (rf - 1) / 2, per axis, unclipped."""
    rf = row.receptive_field if isinstance(row.receptive_field, tuple) else (row.receptive_field,) * 2
    jump = row.jump if isinstance(row.jump, tuple) else (row.jump,) * 2
    start = row.centre if isinstance(row.centre, tuple) else (row.centre,) * 2
    index = (output_hw[0] // 2, output_hw[1] // 2) if output_hw else (0, 0)
    centres = [start[axis] + index[axis] * jump[axis] for axis in range(2)]
    return tuple((c - (r - 1) / 2, c + (r - 1) / 2) for c, r in zip(centres, rf))


def check_extent(measured, window, input_size: int = 28, dense: bool = True) -> None:
    """Each window edge inside the image must be hit exactly; an edge outside is clipped to the image.

    A sparse field (strides larger than kernels, dilation) has holes, so where its window is clipped the
    last tap inside the image may stop short of the image edge: ``dense=False`` allows that.
    """
    for (low, high), (w_low, w_high) in zip(measured, window):
        if w_low >= 0:
            assert low == w_low, (measured, window)
        else:
            assert low == 0 if dense else low >= 0, (measured, window)
        if w_high <= input_size - 1:
            assert high == w_high, (measured, window)
        else:
            assert high == input_size - 1 if dense else high <= input_size - 1, (measured, window)
