"""Per-layer analysis of a model: output shape, receptive field, jump, centre offset, parameters and MACs.

The model is traced with torch.fx, so functional calls in ``forward`` (``F.relu``, ``F.max_pool2d``,
``x.view``) are seen as well as modules. Receptive-field arithmetic, per axis, for a layer with kernel k,
dilation d, stride s and padding p on an input with field r, jump j and first-unit centre c:

    k' = d (k - 1) + 1        r_out = r + (k' - 1) j        j_out = j s        c_out = c + ((k' - 1) / 2 - p) j

Global pooling, flattening and linear layers see the whole map: their field is r + (size - 1) j.
Anything the tracer cannot place is reported as an error, never guessed.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from mnistlab.core.errors import MnistlabError
from mnistlab.models.external import model_card
from mnistlab.models.stacking import function_name

Pair = tuple[int, int]


class AnalysisError(MnistlabError):
    """The model holds an operation whose effect on the receptive field is not known."""


@dataclass(frozen=True)
class Field:
    """The receptive field of every unit of a feature map, per axis (H, W)."""

    rf: tuple[float, float]
    jump: tuple[float, float]
    centre: tuple[float, float]  # input coordinate (pixel index) of the first unit's field centre
    spatial: bool = True  # False once flattened: the field then covers everything it saw

    def through(self, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair = (1, 1)) -> Field:
        rf, jump, centre = [], [], []
        for axis in range(2):
            span = dilation[axis] * (kernel[axis] - 1) + 1
            rf.append(self.rf[axis] + (span - 1) * self.jump[axis])
            centre.append(self.centre[axis] + ((span - 1) / 2 - padding[axis]) * self.jump[axis])
            jump.append(self.jump[axis] * stride[axis])
        return Field(tuple(rf), tuple(jump), tuple(centre))  # type: ignore[arg-type]

    def whole(self, size: Pair) -> Field:
        """Every unit sees all ``size`` positions of this map (global pooling, flatten, linear)."""
        field = self.through(size, size, (0, 0))
        return Field(field.rf, field.jump, field.centre, spatial=self.spatial)


@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    kernel: int | Pair | None
    stride: int | Pair | None
    padding: int | Pair | None
    dilation: int | Pair | None
    output_shape: tuple[int, ...]  # without the batch dimension
    receptive_field: int | Pair
    jump: int | Pair
    centre: float | tuple[float, float]  # centre of the first output unit's field, in input pixels
    params: int
    macs: int  # multiply-accumulates per image


@dataclass(frozen=True)
class LayerTable:
    model: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    rows: tuple[LayerRow, ...]
    params: int  # sum(p.numel()) over the model
    trainable_params: int
    macs: int

    @property
    def receptive_field(self) -> int | Pair:
        fields_ = [row.receptive_field for row in self.rows if row.receptive_field is not None]
        return fields_[-1] if fields_ else 1

    def to_dicts(self) -> list[dict[str, Any]]:
        return [asdict(row) for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rows"}
        return {**data, "receptive_field": self.receptive_field, "rows": self.to_dicts()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render_table(self) -> str:
        return render(self, markdown=False)

    def render_markdown(self) -> str:
        return render(self, markdown=True)

    def __str__(self) -> str:  # print(analyze(model)) in a notebook: the table, not the dataclass's fields
        return self.render_table()

    def _repr_markdown_(self) -> str:  # a notebook cell that ends with analyze(model): the table, rendered
        return self.render_markdown()


# ---------------------------------------------------------------------------------------------------------
# Tracing


def conv_macs(out_elements: int, in_per_group: int, kernel: Pair) -> int:
    """A convolution's multiply-accumulates per image: each output element sums its group's inputs over the kernel."""
    return out_elements * in_per_group * kernel[0] * kernel[1]


def pair(value: Any, kind: type = int) -> Any:
    """A size given once or per axis (a kernel, a field, a centre) as (H, W) of ``kind``."""
    return (kind(value[0]), kind(value[1])) if isinstance(value, (tuple, list)) else (kind(value), kind(value))


def _compact(value: Pair | tuple[float, float] | None) -> Any:
    if value is None:
        return None
    a, b = (int(v) if float(v).is_integer() else v for v in value)
    return a if a == b else (a, b)


# functions and methods that change neither the field nor the spatial size
_NEUTRAL_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.gelu,
    F.silu,
    F.elu,
    F.hardswish,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    F.dropout,
    F.dropout2d,
    F.log_softmax,
    F.softmax,
    F.batch_norm,
    torch.log_softmax,
    operator.add,
    operator.mul,
    operator.sub,
    operator.truediv,
    torch.add,
    torch.mul,
    torch.cat,
    getattr,
    operator.getitem,
}
_MAX_POOLS = {F.max_pool2d, torch.max_pool2d}
_AVG_POOLS = {F.avg_pool2d}
_NEUTRAL_METHODS = {
    "relu",
    "sigmoid",
    "tanh",
    "contiguous",
    "log_softmax",
    "softmax",
    "add",
    "mul",
    "float",
    "clone",
    "to",
    "size",
    "dim",
}
_NEUTRAL_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.LogSoftmax,
    nn.Softmax,
)


def _spatial(meta: Any) -> Pair | None:
    shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()
    return (int(shape[-2]), int(shape[-1])) if len(shape) == 4 else None


def _merge(fields_: list[Field], where: str) -> Field:
    """The field of an elementwise combination: the union of its inputs' fields. An input that is no map any more
    (pooled to a vector: a squeeze-excite gate) is broadcast over the map: it sets no stride, and its field, all it
    pooled over, joins every unit's."""
    maps = [f for f in fields_ if f.spatial] or fields_
    first = maps[0]
    if any(f.jump != first.jump for f in maps):
        raise AnalysisError(f"{where}: combines maps of different strides; its receptive field is ambiguous")
    lows = [tuple(f.centre[a] - (f.rf[a] - 1) / 2 for a in range(2)) for f in fields_]
    highs = [tuple(f.centre[a] + (f.rf[a] - 1) / 2 for a in range(2)) for f in fields_]
    low = tuple(min(v[a] for v in lows) for a in range(2))
    high = tuple(max(v[a] for v in highs) for a in range(2))
    rf = tuple(high[a] - low[a] + 1 for a in range(2))
    centre = tuple((high[a] + low[a]) / 2 for a in range(2))
    if len(maps) < len(fields_) and any(f.spatial for f in fields_):
        # a map gated by a vector: every unit's field is all the vector pooled over, the same for each (it no longer
        # moves from unit to unit: jump 0, and no later layer widens it)
        return Field(rf, (0, 0), centre)  # type: ignore[arg-type]
    return Field(rf, first.jump, centre, spatial=all(f.spatial for f in fields_))  # type: ignore[arg-type]


class _Tracer(fx.Tracer):
    """torch.fx's tracer, also keeping subclasses of the known layers (e.g. our Dropout) as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _NEUTRAL_MODULES) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """The model as a torch.fx graph whose nodes are the layers this module knows how to analyse."""
    return fx.GraphModule(model, _Tracer().trace(model))


WRAPPED = "features.model."  # a model from outside is held in a Net (its log-softmax): its layers keep their own names


def _layer_name(node: fx.Node) -> str:
    """A layer's name as its model names it (``up``, ``features.2``), not the graph's (``features_model_up``)."""
    return (str(node.target) if node.op == "call_module" else node.name).removeprefix(WRAPPED)


def analyze(model: Any, input_shape: tuple[int, ...] = (1, 28, 28), name: str | None = None) -> LayerTable:
    """Trace ``model`` on one ``input_shape`` image and return its per-layer table. ``model`` is a built network,
    or anything ``mnistlab.models.create_model`` builds (a name, a ``FILE.py:BUILDER``, a class or builder);
    ``name`` titles the table. The table has ``.rows`` (each layer's output shape, receptive field, jump, start,
    parameters and MACs), ``.params``, ``.macs``, ``.receptive_field``, and renders with ``print`` (text),
    ``.render_table()``, ``.render_markdown()`` or ``.to_json()``.

    >>> table = analyze("model8")                  # doctest: +SKIP
    >>> table.params, table.receptive_field         # doctest: +SKIP
    (7500, 36)
    """
    if not isinstance(model, nn.Module):
        card = model_card(model)
        name, model = name or card.name, card.build()
    graph = _traced(model, input_shape)
    rows, output_shape = _rows(graph, dict(model.named_parameters()))
    params = sum(p.numel() for p in model.parameters())
    counted = sum(row.params for row in rows)
    if counted < params:  # weights used by an operation that is no layer (x * self.scale): the rows still add up
        none = (None,) * 4
        rows.append(LayerRow("(other parameters)", "used elsewhere", *none, (), None, None, None, params - counted, 0))
    return LayerTable(
        model=name or type(model).__name__,
        input_shape=tuple(input_shape),
        output_shape=output_shape,
        rows=tuple(rows),
        params=params,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=sum(r.macs for r in rows),
    )


def _traced(model: nn.Module, input_shape: tuple[int, ...]) -> fx.GraphModule:
    """``model``'s graph, each node with its output's shape for one ``input_shape`` image (in eval mode)."""
    try:
        graph = trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise AnalysisError(f"cannot trace {type(model).__name__} with torch.fx: {exc}") from None
    was_training = model.training
    model.eval()
    try:
        ShapeProp(graph).propagate(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
    return graph


def _rows(graph: fx.GraphModule, parameters: dict[str, nn.Parameter]) -> tuple[list[LayerRow], tuple[int, ...]]:
    """A row per layer of ``graph``, in order, each with the field it gives; and the network's output shape. A
    module or tensor of the model used again (tied weights) has its parameters counted at its first use."""
    modules = dict(graph.named_modules())
    field_of: dict[fx.Node, Field] = {}
    rows: list[LayerRow] = []
    used: set[str] = set()  # the modules already called, and the model's own tensors already used

    def params_of(attr: fx.Node) -> int:
        """A ``get_attr`` tensor's parameter count at its first use (0 after, or for a buffer)."""
        if attr.op != "get_attr" or str(attr.target) in used:
            return 0
        used.add(str(attr.target))
        return parameters[str(attr.target)].numel() if str(attr.target) in parameters else 0

    output_shape: tuple[int, ...] = ()
    for node in graph.graph.nodes:
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape)[1:] if meta is not None and hasattr(meta, "shape") else ()
        parents = [field_of[a] for a in node.all_input_nodes if a in field_of]
        if node.op == "placeholder":
            field_of[node] = Field((1.0, 1.0), (1.0, 1.0), (0.0, 0.0))
            continue
        if node.op == "output":
            output_shape = tuple(node.args[0].meta["tensor_meta"].shape)[1:]
            continue
        if node.op == "get_attr" or not parents:
            continue
        where = f"layer {_layer_name(node)!r} ({operation_name(node, modules)})"
        field = parents[0] if len(parents) == 1 else _merge(parents, where)
        in_size = _spatial(node.all_input_nodes[0].meta.get("tensor_meta"))
        layer = _layer(node, modules, field, in_size, shape, where, params_of)
        if layer is None:
            field_of[node] = field
            continue
        kind, new_field, geometry, params, macs = layer
        field_of[node] = new_field
        if node.op == "call_module":  # a module used again (tied weights): its parameters were counted at its first use
            if node.target in used:
                kind, params = f"{kind} (reused)", 0
            used.add(str(node.target))
        kernel, stride, padding, dilation = geometry
        rows.append(
            LayerRow(
                name=_layer_name(node),
                type=kind,
                kernel=_compact(kernel),
                stride=_compact(stride),
                padding=_compact(padding),
                dilation=_compact(dilation),
                output_shape=tuple(int(s) for s in shape),
                receptive_field=_compact(new_field.rf),
                jump=_compact(new_field.jump),
                centre=_compact(new_field.centre),
                params=params,
                macs=macs,
            )
        )
    return rows, output_shape


Geometry = tuple[Pair | None, Pair | None, Pair | None, Pair | None]
Layer = tuple[str, Field, Geometry, int, int]  # type, field after, geometry, params, MACs


def _layer(
    node: fx.Node,
    modules: dict[str, nn.Module],
    field: Field,
    in_size: Pair | None,
    shape: tuple[int, ...],
    where: str,
    params_of: Callable[[fx.Node], int],
) -> Layer | None:
    """(type, field after, geometry, params, MACs) for a node that does work; None for a neutral node."""
    out_elems = 1
    for s in shape:
        out_elems *= int(s)
    if node.op == "call_module":
        return _module_layer(modules[str(node.target)], field, in_size, shape, out_elems, where)
    if node.op == "call_function":
        return _function_layer(node, field, in_size, shape, out_elems, where, params_of)
    if node.op == "call_method":
        return _method_layer(node, field, in_size, shape, where)
    raise AnalysisError(f"{where}: unsupported graph operation {node.op}")


def _module_layer(
    module: nn.Module, field: Field, in_size: Pair | None, shape: tuple[int, ...], out_elems: int, where: str
) -> Layer | None:
    """A layer module's row: a convolution, pool, linear layer or normalisation; None for a neutral one."""
    own = sum(p.numel() for p in module.parameters(recurse=False))
    if isinstance(module, nn.Conv2d):
        k, s, p, d = (
            pair(module.kernel_size),
            pair(module.stride),
            pair(module.padding),
            pair(module.dilation),
        )
        if isinstance(module.padding, str):
            raise AnalysisError(f"{where}: string padding {module.padding!r} is not supported")
        macs = conv_macs(out_elems, module.in_channels // module.groups, k)
        return "Conv2d", _need_spatial(field, where).through(k, s, p, d), (k, s, p, d), own, macs
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p = (
            pair(module.kernel_size),
            pair(module.stride or module.kernel_size),
            pair(module.padding),
        )
        d = pair(getattr(module, "dilation", 1))
        return type(module).__name__, _need_spatial(field, where).through(k, s, p, d), (k, s, p, d), 0, 0
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _adaptive(type(module).__name__, field, in_size, shape, where)
    if isinstance(module, nn.Linear):
        return "Linear", field, (None, None, None, None), own, module.in_features * module.out_features
    if isinstance(module, nn.Flatten):
        return _flatten(field, in_size)
    if isinstance(module, nn.Unflatten):  # a vector laid out as a map: each unit sees all the vector saw
        if field.spatial:
            return None if len(shape) < 3 else _not_uniform("an unflatten of a map", where)
        return "Unflatten", Field(field.rf, (0.0, 0.0), field.centre), (None, None, None, None), 0, 0
    if isinstance(module, (nn.ConvTranspose2d, nn.PixelShuffle, nn.PixelUnshuffle, nn.Upsample)):
        return _not_uniform(f"a {type(module).__name__}", where)
    if isinstance(module, (nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d)):
        if not (isinstance(module, nn.modules.instancenorm._InstanceNorm) and module.track_running_stats):
            axes = _normalised_axes(module, shape)
            return type(module).__name__, _per_image(field, in_size, axes), (None, None, None, None), own, 0
    if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.InstanceNorm1d, nn.InstanceNorm2d)):
        return type(module).__name__, field, (None, None, None, None), own, 0
    if isinstance(module, _NEUTRAL_MODULES):
        return None
    raise AnalysisError(f"{where}: unknown module type; its receptive field cannot be computed")


def _function_layer(
    node: fx.Node,
    field: Field,
    in_size: Pair | None,
    shape: tuple[int, ...],
    out_elems: int,
    where: str,
    params_of: Callable[[fx.Node], int],
) -> Layer | None:
    """A functional call's row (``F.conv2d`` with the model's own weights, pools, norms...); None for a neutral one."""
    target = node.target
    if target in (F.conv2d, torch.conv2d):  # a convolution with weights of the model's own (nn.Parameter)
        args = _call_args(node, ["input", "weight", "bias", "stride", "padding", "dilation", "groups"])
        weight = _meta_shape(args["weight"])
        if isinstance(args.get("padding"), str):
            raise AnalysisError(f"{where}: string padding {args['padding']!r} is not supported")
        k = (int(weight[-2]), int(weight[-1]))
        s, p, d = (pair(args.get(key, default)) for key, default in (("stride", 1), ("padding", 0), ("dilation", 1)))
        macs = conv_macs(out_elems, int(weight[1]), k)
        field = _need_spatial(field, where).through(k, s, p, d)
        return "conv2d", field, (k, s, p, d), _own_params(args, params_of), macs
    if target in (F.linear, torch.nn.functional.linear):
        args = _call_args(node, ["input", "weight", "bias"])
        weight = _meta_shape(args["weight"])
        macs = out_elems * int(weight[1])
        return "linear", field, (None, None, None, None), _own_params(args, params_of), macs
    if target in (F.group_norm, F.layer_norm, F.instance_norm):  # statistics of each image: it sees it all
        axes = (0, 1) if target is not F.layer_norm else _normalised_axes(node, shape)
        params = _own_params(_call_args(node, ["input", "x", "weight", "bias"]), params_of)
        return target.__name__, _per_image(field, in_size, axes), (None, None, None, None), params, 0
    if target in _MAX_POOLS or target in _AVG_POOLS:
        args = _call_args(node, ["input", "kernel_size", "stride", "padding", "dilation"])
        k = pair(args["kernel_size"])
        s = pair(args.get("stride") or args["kernel_size"])
        p = pair(args.get("padding", 0))
        d = pair(args.get("dilation", 1)) if target in _MAX_POOLS else (1, 1)
        kind = "MaxPool2d" if target in _MAX_POOLS else "AvgPool2d"
        return kind, _need_spatial(field, where).through(k, s, p, d), (k, s, p, d), 0, 0
    if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        kind = "AdaptiveAvgPool2d" if target is F.adaptive_avg_pool2d else "AdaptiveMaxPool2d"
        return _adaptive(kind, field, in_size, shape, where)
    if target is torch.flatten:
        return _flatten(field, in_size)
    if target in (torch.matmul, operator.matmul, torch.einsum, torch.mm, torch.bmm) and not field.spatial:
        # a linear map of vectors by the model's own weights: every output sees what the vectors saw
        params = sum(params_of(a) for a in node.all_input_nodes if a.op == "get_attr")
        return target.__name__, field, (None, None, None, None), params, _product_macs(node, target)
    if target in _NEUTRAL_FUNCTIONS:
        return None
    raise AnalysisError(f"{where}: unknown function; its receptive field cannot be computed")


def _product_macs(node: fx.Node, target: Any) -> int:
    """A vector-by-matrix product's multiply-accumulates per image: [N, in] @ [in, out] is in x out; an einsum's
    is the product of the sizes of every index it names but the batch's."""
    shapes = [_meta_shape(a) for a in node.all_input_nodes]
    if target is torch.einsum:
        sizes: dict[str, int] = {}
        letters = str(node.args[0]).replace(" ", "").split("->")[0].split(",")
        for term, shape in zip(letters, shapes):
            sizes.update({letter: int(n) for letter, n in zip(term, shape)})
        batch = letters[0][0] if letters and letters[0] else ""
        total = 1
        for letter, n in sizes.items():
            total *= 1 if letter == batch else n
        return total
    if len(shapes) == 2 and len(shapes[1]) == 2:
        return int(shapes[1][0]) * int(shapes[1][1])
    return 0


def _not_uniform(what: str, where: str) -> Layer:
    """Refuse, naming the layer, an operation after which units do not share one field (it shifts by the unit's
    phase: a transposed convolution with stride, a pixel shuffle, an upsampling)."""
    raise AnalysisError(
        f"{where}: after {what} the units' fields differ by their position (no one size and jump describes them)"
    )


def _method_layer(
    node: fx.Node, field: Field, in_size: Pair | None, shape: tuple[int, ...], where: str
) -> Layer | None:
    """A tensor method's row: a flatten or a global mean; None for a neutral method."""
    method = str(node.target)
    if method in ("view", "reshape", "flatten"):
        return _flatten(field, in_size) if in_size is not None and len(shape) < 3 else None
    if method == "mean":
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if in_size is not None and dims is not None and set(_dims(dims)) >= {2, 3}:
            kind, whole, geometry, params, macs = _global("GlobalAvgPool", field, in_size)
            if len(shape) < 3:  # pooled to a vector: broadcast when it meets a map again (a squeeze-excite gate)
                whole = Field(whole.rf, whole.jump, whole.centre, spatial=False)
            return kind, whole, geometry, params, macs
    if method in _NEUTRAL_METHODS:
        return None
    raise AnalysisError(f"{where}: unknown method; its receptive field cannot be computed")


def _meta_shape(node: Any) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else tuple(getattr(node, "shape", ()))


def _own_params(args: dict[str, Any], params_of: Callable[[fx.Node], int]) -> int:
    """The parameters a functional call takes from the model itself (``get_attr``: its own ``nn.Parameter``s),
    each counted at its first use only."""
    return sum(params_of(v) for k, v in args.items() if k in ("weight", "bias") and isinstance(v, fx.Node))


def _normalised_axes(norm: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial axes (0: H, 1: W) a layer norm's statistics run over: the last ``len(normalized_shape)`` dims."""
    if isinstance(norm, fx.Node):
        given = norm.args[1] if len(norm.args) > 1 else norm.kwargs.get("normalized_shape", ())
    else:
        given = getattr(norm, "normalized_shape", (0, 0))
    if isinstance(norm, (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
        return (0, 1)
    count = len(given) if isinstance(given, (tuple, list)) else 1
    return tuple(a for a in (0, 1) if 2 - a <= count) if len(shape) == 3 else ()


def _per_image(field: Field, in_size: Pair | None, axes: tuple[int, ...]) -> Field:
    """A layer normalised by statistics of each image's whole map (GroupNorm, LayerNorm, InstanceNorm): each unit
    depends on every position of its map along ``axes``. Its window, centred on the unit as every window is,
    spans the map's whole field from wherever the unit stands: the field grows by twice the map's extent."""
    if in_size is None or not field.spatial:
        return field
    rf = [field.rf[a] + (2 * (in_size[a] - 1) * field.jump[a] if a in axes else 0) for a in range(2)]
    return Field((rf[0], rf[1]), field.jump, field.centre, field.spatial)


def _dims(dims: Any) -> list[int]:
    return [d % 4 for d in (dims if isinstance(dims, (tuple, list)) else [dims])]


def _call_args(node: fx.Node, names: list[str]) -> dict[str, Any]:
    values = dict(zip(names, node.args))
    values.update(node.kwargs)
    return {k: v for k, v in values.items() if v is not None}


def _need_spatial(field: Field, where: str) -> Field:
    if not field.spatial:
        raise AnalysisError(f"{where}: a spatial layer after flattening cannot be analysed")
    return field


def _global(kind: str, field: Field, in_size: Pair) -> tuple[str, Field, Geometry, int, int]:
    return kind, field.whole(in_size), (in_size, in_size, (0, 0), None), 0, 0


def _adaptive(
    kind: str, field: Field, in_size: Pair | None, shape: tuple[int, ...], where: str
) -> tuple[str, Field, Geometry, int, int]:
    out_size = (int(shape[-2]), int(shape[-1]))
    if in_size is None:
        raise AnalysisError(f"{where}: adaptive pooling of a map of unknown size")
    if any(i % o for i, o in zip(in_size, out_size)):
        raise AnalysisError(f"{where}: adaptive pooling {in_size}->{out_size} has uneven windows; not analysed")
    k = (in_size[0] // out_size[0], in_size[1] // out_size[1])
    return kind, field.through(k, k, (0, 0)), (k, k, (0, 0), None), 0, 0


def _flatten(field: Field, in_size: Pair | None) -> tuple[str, Field, Geometry, int, int] | None:
    if not field.spatial or in_size is None:
        return None
    whole = field.whole(in_size)
    return "Flatten", Field(whole.rf, whole.jump, whole.centre, spatial=False), (None, None, None, None), 0, 0


# ---------------------------------------------------------------------------------------------------------
# Rendering

COLUMNS = (
    "Layer",
    "Type",
    "Kernel Size",
    "Stride",
    "Padding",
    "Dilation",
    "Output Shape",
    "Receptive Field",
    "Jump",
    "Params",
    "MACs",
)


def _fmt(value: Any, square: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return f"{value}x{value}" if square else str(value)


def _cells(row: LayerRow) -> list[str]:
    return [
        row.name,
        row.type,
        _fmt(row.kernel),
        _fmt(row.stride),
        _fmt(row.padding),
        _fmt(row.dilation),
        "x".join(str(s) for s in row.output_shape),
        _fmt(row.receptive_field, square=True),
        _fmt(row.jump),
        f"{row.params:,}",
        f"{row.macs:,}",
    ]


def render(table: LayerTable, markdown: bool) -> str:
    """A terminal or markdown table of ``table`` with a totals line."""
    body = [["Input", "-", "-", "-", "-", "-", "x".join(map(str, table.input_shape)), "1x1", "1", "0", "0"]]
    body += [_cells(row) for row in table.rows]
    total = f"Total: {table.params:,} parameters, {table.macs:,} MACs per image, receptive field " + _fmt(
        table.receptive_field, square=True
    )
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + f"\n\n{total}\n"
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(COLUMNS)]
    line = "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths))
    rule = "-" * len(line)
    rows = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in body]
    return "\n".join([table.model, rule, line, rule, *rows, rule, total]) + "\n"


def leaf_calls(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> list[tuple[str, nn.Module, Any]]:
    """Every call of a leaf layer, in order, with its output, when one blank image runs through ``model`` in eval
    mode (forward hooks, no tracing: it works where ``analyze`` cannot trace)."""
    calls: list[tuple[str, nn.Module, Any]] = []
    hooks = [
        module.register_forward_hook(lambda m, _i, out, name=name: calls.append((name, m, out)))
        for name, module in model.named_modules()
        if name and not list(module.children())
    ]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return calls


def shape_rows(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> list[dict[str, Any]]:
    """Each leaf layer's name, type, output shape, parameters and MACs (``leaf_calls``): what a summary still gives
    when the receptive field cannot be computed (``analyze`` failed). A layer called again lists its parameters at
    its first call only; weights used outside any layer are one row of their own, so that the rows add up."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name, module, output in leaf_calls(model, input_shape):
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None
        params = 0 if name in seen else sum(p.numel() for p in module.parameters(recurse=False))
        kind = type(module).__name__ + (" (reused)" if name in seen else "")
        seen.add(name)
        rows.append(
            {"name": name, "type": kind, "output_shape": shape, "params": params, "macs": _hook_macs(module, output)}
        )
    total = sum(p.numel() for p in model.parameters())
    counted = sum(row["params"] for row in rows)
    if counted < total:  # weights of a container used by its own forward (F.conv2d): the rows still add up
        rows.append(
            {
                "name": "(other parameters)",
                "type": "used elsewhere",
                "output_shape": None,
                "params": total - counted,
                "macs": None,
            }
        )
    return rows


def shapes_and_params(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28), markdown: bool = False) -> str:
    """``shape_rows`` as a table (text, or Markdown) with the totals under it."""
    rows = shape_rows(model, input_shape)
    total = sum(p.numel() for p in model.parameters())
    total_macs = sum(row["macs"] or 0 for row in rows)
    cells = [
        [
            row["name"],
            row["type"],
            "-" if row["output_shape"] is None else "x".join(map(str, row["output_shape"])),
            f"{row['params']:,}",
            "-" if row["macs"] is None else f"{row['macs']:,}",
        ]
        for row in rows
    ]
    columns = ["Layer", "Type", "Output", "Params", "MACs"]
    foot = f"Total: {total:,} parameters, {total_macs:,} MACs per image (its layers')\n"
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(r)) + " |" for r in cells]
        return "\n".join(lines) + "\n\n" + foot
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join(lines) + "\n" + foot


def _hook_macs(module: nn.Module, output: Any) -> int:
    """A layer's multiply-accumulates per image, from its output (convolutions and linear layers; others 0)."""
    if not isinstance(output, torch.Tensor) or output.dim() < 2:
        return 0
    per_image = output[0].numel()
    if isinstance(module, nn.Conv2d):
        return conv_macs(per_image, module.in_channels // module.groups, pair(module.kernel_size))
    if isinstance(module, nn.ConvTranspose2d) and output.dim() == 4:
        # every input element meets every weight of its group once: the input's size from the output's
        (kh, kw), (sh, sw), (ph, pw) = pair(module.kernel_size), pair(module.stride), pair(module.padding)
        (dh, dw), (oh, ow) = pair(module.dilation), pair(module.output_padding)
        height = (output.shape[2] + 2 * ph - dh * (kh - 1) - oh - 1) // sh + 1
        width = (output.shape[3] + 2 * pw - dw * (kw - 1) - ow - 1) // sw + 1
        return height * width * module.in_channels * (module.out_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    return 0


# what a MAC counts here, said under every summary
MAC_MEANING = (
    "MACs: the multiply-accumulates of the convolutions' and linear layers' weights for one image; BatchNorm, "
    "pooling, activations and adds are not counted (fvcore and thop count some of them)."
)


def operation_name(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """What a graph node does, as a user wrote it: a module's type, ``F.interpolate``, ``torch.cat``, ``.view``."""
    if node.op == "call_module":
        return type(modules[str(node.target)]).__name__
    if node.op == "call_method":
        return f".{node.target}"
    return function_name(node.target)
