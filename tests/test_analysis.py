"""The per-layer analysis: computed receptive fields proven against an empirical gradient measure."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from rf_probe import check_extent, expected_window, measured_extent
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mnistlab.models import create_model, list_models
from mnistlab.tools.analysis import AnalysisError, analyze, trace


def spatial_hw(row):
    return tuple(row.output_shape[-2:]) if len(row.output_shape) == 3 else None


@pytest.mark.parametrize("name", list_models())
def test_receptive_field_matches_gradient_measure_for_every_model(name):
    model = create_model(name)
    summary = analyze(model, name=name)
    # a module used several times (tied weights) is measured at its last call, the one its hook sees last
    last = {row.name: row for row in summary.rows}
    for row in last.values():
        if row.type.removesuffix(" (reused)") in ("Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"):
            check_extent(measured_extent(model, row.name), expected_window(row, spatial_hw(row)))


@pytest.mark.parametrize("name", list_models())
def test_params_and_macs_match_independent_counts(name):
    model = create_model(name).eval()
    summary = analyze(model)
    assert summary.params == sum(p.numel() for p in model.parameters())
    assert sum(r.params for r in summary.rows) == summary.params
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28))
    assert counter.get_total_flops() == 2 * summary.macs  # conv and matmul FLOPs are 2 per MAC


def test_reference_tables_where_they_were_wrong():
    # Model 2: the 7x7 conv after two pools (jump 4) adds 6 * 4 = 24 to 18, giving 42, not the reference's 36
    rows = {r.name: r for r in analyze(create_model("model2")).rows}
    assert rows["features.out"].receptive_field == 42
    # Model 4: three 3x3 convs at jump 2 after the pool (6) give 18, the padded one 22 (the reference says 20)
    rows = {r.name: r for r in analyze(create_model("model4")).rows}
    assert rows["features.conv6.conv"].receptive_field == 22
    assert rows["features.gap"].receptive_field == 32
    # Model 7 (the reference's layers, whose table this is): global pooling sees the whole 8x8 map at
    # jump 2: 14 + 7 * 2 = 28, not 14
    rows = {r.name: r for r in analyze(create_model("model7")).rows}
    assert rows["features.gap"].receptive_field == 28


class Functional(nn.Module):
    """A model written with functional calls, dilation, a strided conv and padding in a pool."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=2, dilation=2)
        self.c2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        x = F.relu(self.c1(x))  # 28x28, rf 5
        x = F.max_pool2d(F.relu(self.c2(x)), 3, stride=1, padding=1)  # 14x14, rf 7 then 11
        x = x.view(x.size(0), -1)
        return F.log_softmax(self.fc(x[:, : 8 * 7 * 7]), dim=1)


def test_functional_ops_dilation_and_stride():
    model = Functional()
    rows = {r.name: r for r in analyze(model).rows}
    assert rows["c1"].receptive_field == 5 and rows["c1"].jump == 1
    assert rows["c2"].receptive_field == 7 and rows["c2"].jump == 2
    assert rows["max_pool2d"].receptive_field == 11 and rows["max_pool2d"].output_shape == (8, 14, 14)
    for name in ("c1", "c2", "max_pool2d"):
        check_extent(measured_extent(model, name), expected_window(rows[name], spatial_hw(rows[name])))


def test_unknown_operation_is_reported_not_guessed():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.roll(x, 1, dims=2)

    with pytest.raises(AnalysisError, match="unknown function"):
        analyze(Odd())


def test_summary_is_data_then_rendered():
    summary = analyze(create_model("model8_v1"), name="model8_v1")
    row = summary.rows[0]
    assert (row.receptive_field, row.jump, row.params, row.output_shape) == (3, 1, 72, (8, 26, 26))
    data = json.loads(summary.to_json())
    assert data["params"] == 7432 and len(data["rows"]) == len(summary.rows)
    markdown = summary.render_markdown()
    assert markdown.splitlines()[0].startswith("| Layer | Type | Kernel Size | Stride | Padding |")
    assert "| features.conv5.conv | Conv2d | 3 | 1 | 1 | 1 | 16x8x8 | 18x18 | 2 | 2,304 | 147,456 |" in markdown
    assert "Total: 7,432 parameters" in summary.render_table()


@st.composite
def stacks(draw):
    """Random conv/pool stacks that keep a map of at least 1x1."""
    size = draw(st.sampled_from([20, 28, 32]))
    layers, channels, current = [], 1, size
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["conv", "max", "avg"]))
        k = draw(st.integers(1, 5) if kind == "conv" else st.integers(2, 3))
        s = draw(st.integers(1, 2))
        p = draw(st.integers(0, k // 2))
        d = draw(st.integers(1, 2)) if kind == "conv" else 1
        span = d * (k - 1) + 1
        after = (current + 2 * p - span) // s + 1
        if after < 1:
            break
        if kind == "conv":
            out = draw(st.integers(1, 3))
            layers += [nn.Conv2d(channels, out, k, stride=s, padding=p, dilation=d), nn.ReLU()]
            channels = out
        elif kind == "max":
            layers.append(nn.MaxPool2d(k, s, p))
        else:
            layers.append(nn.AvgPool2d(k, s, p))
        current = after
    if not layers:
        layers.append(nn.Conv2d(1, 1, 3))
    if draw(st.booleans()):
        layers.append(nn.AdaptiveAvgPool2d(1))
    return nn.Sequential(*layers), size


@settings(max_examples=60, deadline=None, derandomize=True)  # the same examples on every run: no flaky CI
@given(stacks())
def test_random_stacks_match_gradient_measure(stack):
    model, size = stack
    summary = analyze(model, input_shape=(1, size, size))
    last = summary.rows[-1]
    window = expected_window(last, spatial_hw(last))
    measured = measured_extent(model, last.name, size)
    # a unit whose every tap lands in padding (dilation over a 1x1 map) has no pixel to measure
    assume(measured is not None)
    check_extent(measured, window, size, dense=False)


@pytest.mark.parametrize("name", ["model4", "model7", "model8"])
def test_a_global_pool_sees_the_whole_image_centred(name):
    """After global average pooling one unit's field is centred on the image (13.5, 13.5 on 28x28)."""
    rows = {row.name: row for row in analyze(create_model(name)).rows}
    assert rows["features.gap"].centre == 13.5 and rows["features.gap"].receptive_field >= 28


def test_a_module_used_again_counts_its_parameters_once_and_says_so():
    """A tied block (one separable block applied 4 times) lists each pass, its weights only at the first."""
    table = analyze(create_model("tied3k4"))
    passes = [r for r in table.rows if r.name == "features.tied.pointwise"]
    assert [r.type for r in passes] == ["Conv2d"] + ["Conv2d (reused)"] * 3
    assert [r.params for r in passes] == [32 * 32, 0, 0, 0] and len({r.macs for r in passes}) == 1
    assert sum(r.params for r in table.rows) == table.params == 3_420
    assert [r.receptive_field for r in passes] == [14, 18, 22, 26]  # each pass widens the field


def test_an_operation_the_tracer_does_not_know_is_named_plainly_and_the_rest_still_counted():
    import torch.nn.functional as F
    from torch import nn

    from mnistlab.tools.analysis import AnalysisError, shapes_and_params

    class Upper(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 4, 3)
            self.b = nn.Conv2d(4, 10, 1)

        def forward(self, x):
            x = F.interpolate(self.a(x), scale_factor=0.5)
            return F.adaptive_max_pool2d(self.b(x), 1).flatten(1)

    with pytest.raises(AnalysisError, match=r"\(F\.interpolate\): unknown function") as caught:
        analyze(Upper())
    assert "0x" not in str(caught.value)  # no object address
    table = shapes_and_params(Upper())
    assert "24,336" in table and "6,760" in table and "Total: 90 parameters, 31,096 MACs" in table

    class MaxHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 10, 3)

        def forward(self, x):
            return F.adaptive_max_pool2d(self.a(x), 1).flatten(1)

    kinds = [row.type for row in analyze(MaxHead()).rows]
    assert "AdaptiveMaxPool2d" in kinds and "AdaptiveAvgPool2d" not in kinds


class FunctionalConv(nn.Module):
    """A weight of its own used through F.conv2d, then a Linear, as students write them."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 1, 3, 3))
        self.bias = nn.Parameter(torch.zeros(8))
        self.c2 = nn.Conv2d(8, 16, 3, stride=2)
        self.w_out = nn.Parameter(torch.randn(10, 16))
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.weight, self.bias, padding=1))
        x = F.relu(self.c2(x)).mean((2, 3))
        return F.linear(x, self.w_out) * self.scale


def test_functional_layers_with_their_own_weights_get_rows_and_the_rows_add_up():
    table = analyze(FunctionalConv())
    rows = {row.name: row for row in table.rows}
    assert rows["conv2d"].params == 8 * 9 + 8 and rows["conv2d"].kernel == 3 and rows["conv2d"].padding == 1
    assert rows["conv2d"].macs == 8 * 28 * 28 * 9 and rows["conv2d"].receptive_field == 3
    assert rows["c2"].receptive_field == 5
    assert rows["linear"].params == 160 and rows["linear"].macs == 160
    assert rows["(other parameters)"].params == 1  # the scale, used by a multiplication
    assert (
        sum(row.params for row in table.rows) == table.params == sum(p.numel() for p in FunctionalConv().parameters())
    )
    assert json.loads(table.to_json())["params"] == table.params  # every format holds it


def _field_by_gradient(model: nn.Module, name: str, size: int = 28) -> tuple[int, int]:
    """(rows, cols) of the input that the centre unit of layer ``name``'s output depends on, on a random image."""
    graph = trace(copy.deepcopy(model).double().eval())
    target = next(n for n in graph.graph.nodes if n.name == name or (n.op == "call_module" and n.target == name))
    output = next(n for n in graph.graph.nodes if n.op == "output")
    output.args = (target,)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    x = torch.rand(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    out = graph(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    hit = x.grad[0, 0] != 0
    return int(hit.any(1).sum()), int(hit.any(0).sum())


@pytest.mark.parametrize(
    "norm, name",
    [
        (lambda: nn.GroupNorm(2, 8), "1"),
        (lambda: nn.InstanceNorm2d(8, affine=True), "1"),
        (lambda: nn.LayerNorm([8, 26, 26]), "1"),
        ("group_norm", "group_norm"),
    ],
)
def test_a_norm_of_each_images_statistics_sees_the_whole_image_as_the_gradient_says(norm, name):
    if norm == "group_norm":

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.c = nn.Conv2d(1, 8, 3)
                self.after = nn.Conv2d(8, 10, 3)

            def forward(self, x):
                return self.after(F.group_norm(self.c(x), 2))

        model = Net()
    else:
        model = nn.Sequential(nn.Conv2d(1, 8, 3), norm(), nn.Conv2d(8, 10, 3))
    table = analyze(model)
    row = next(r for r in table.rows if r.name == name)
    assert _field_by_gradient(model, name) == (28, 28)  # what a gradient says: every pixel
    assert row.receptive_field >= 28 and table.rows[-1].receptive_field >= 28
    batch = analyze(nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 10, 3)))
    assert batch.rows[-1].receptive_field == 5  # BatchNorm in eval: running statistics, nothing per image


class Gated(nn.Module):
    """A squeeze-excite gate: a vector pooled over the whole map multiplies it, then a convolution follows."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=2)
        self.squeeze = nn.Linear(8, 4)
        self.excite = nn.Linear(4, 8)
        self.after = nn.Conv2d(8, 8, 3)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        # no sigmoid: the probe's positive weights would saturate it to exactly 1.0 and hide the gate's gradient
        gate = self.excite(torch.relu(self.squeeze(x.mean((2, 3)))))
        x = self.after(x * gate[:, :, None, None])
        return self.head(x.mean((2, 3)))


def test_a_squeeze_excite_gate_makes_every_units_field_all_the_gate_pooled_over():
    """The gate's vector carries every pixel the map read (27 of 28 rows: the stride-2 convolution reads rows
    0-26), so after it each unit's field is that whole window, checked against the gradient probe."""
    model = Gated()
    summary = analyze(model)
    rows = {row.name: row for row in summary.rows}
    assert summary.receptive_field in (27, (27, 27))
    after = rows["after"]
    assert after.receptive_field in (27, (27, 27))
    check_extent(measured_extent(model, "after"), expected_window(after, spatial_hw(after)))
    check_extent(measured_extent(model, "conv"), expected_window(rows["conv"], spatial_hw(rows["conv"])))


class MatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.w = nn.Parameter(torch.randn(4 * 13 * 13, 16) * 0.01)
        self.v = nn.Parameter(torch.randn(16, 10) * 0.1)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1) @ self.w
        return torch.einsum("bi,ij->bj", h, self.v)


class Grow(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 64)
        self.unflat = nn.Unflatten(1, (1, 8, 8))
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.head(self.conv(self.unflat(self.fc(x.flatten(1)))).flatten(1))


class Up(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.head = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x):
        return self.head(self.up(self.conv(x)).flatten(1))


def test_functional_products_unflatten_and_the_layers_without_one_field():
    """A vector multiplied by the model's own weights (`@`, einsum) keeps what the vector saw, its parameters and
    MACs counted; a vector unflattened to a map gives every unit all of it (checked against the gradient probe); a
    transposed convolution is refused with the layer's own name."""
    table = analyze(MatNet())
    rows = {row.name: row for row in table.rows}
    assert (rows["matmul"].params, rows["matmul"].macs) == (676 * 16, 676 * 16)
    assert (rows["einsum"].params, rows["einsum"].macs) == (160, 160)
    assert table.params == sum(p.numel() for p in MatNet().parameters()) and table.receptive_field in (27, (27, 27))
    grow = Grow()
    table = analyze(grow)
    conv = {row.name: row for row in table.rows}["conv"]
    assert conv.receptive_field in (28, (28, 28))
    check_extent(measured_extent(grow, "conv"), expected_window(conv, spatial_hw(conv)))
    with pytest.raises(AnalysisError, match=r"layer 'up' \(ConvTranspose2d\): after a ConvTranspose2d the units"):
        analyze(Up())
