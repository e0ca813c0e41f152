"""Models from outside the package, registered like the zoo's so that every command takes them.

A model is named, wherever a command takes one, as
- ``path/to/my_net.py:Builder``: a Python file and the builder in it (a function or class that returns an
  ``nn.Module`` mapping [N, 1, 28, 28] images to [N, 10] log-probabilities, or logits: those get a log-softmax);
- ``my_package.module:Builder``: the same from an importable module;
- ``my_net.json``: a layer spec, a model without Python (``layers_from_spec`` documents it);
- a name that an installed package registers through the entry-point group ``mnistlab.models``.

Each is checked on one dummy batch before anything trains, and registered under the builder's (or the spec's)
name. A run of one records where it came from (``TrainConfig.source``) and the sha256 of what it read, and keeps
a copy in its folder (``model_source.py`` or ``model_spec.json``): ``evaluate``, ``predict``, ``export``, ``demo``
and ``--resume`` rebuild the model from that copy, even after the original moved, changed or was deleted. The
copy is Python the user wrote; it runs only when the user names that run (its folder or a checkpoint in it).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import linecache
import sys
import textwrap
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistlab.core.config import Recipe
from mnistlab.core.errors import MnistlabError, first_line
from mnistlab.core.fileio import atomic_write_bytes
from mnistlab.core.rundir import SOURCE_COPY, SPEC_COPY, run_status
from mnistlab.models.layers import Net, conv, head, separable
from mnistlab.models.registry import ModelCard, get_card, is_registered, register
from mnistlab.models.zoo import MODEL8_FINAL_RECIPE

ENTRY_POINTS = "mnistlab.models"  # installed packages register their builders here
# a model from outside trains, unless told otherwise (--recipe FILE, --lr, ...), with Model 8's final recipe
DEFAULT_RECIPE = MODEL8_FINAL_RECIPE


PYTHON = "__main__"  # the "module" of a model given as a Python object defined in a notebook cell or a script


def model_card(model: Any, recipe: Recipe | None = None) -> ModelCard:
    """The card of whatever names a model in the Python API, resolved once: a card; a name or a spec as the command
    line takes it (``resolve``); or a Python object, a ``nn.Module`` class or a builder function, as a notebook has
    it (``from_python``)."""
    if isinstance(model, ModelCard):
        return model
    if isinstance(model, str):
        return resolve(model, recipe)
    return from_python(model, recipe)


def from_python(obj: Any, recipe: Recipe | None = None) -> ModelCard:
    """A model given as a Python object: a ``nn.Module`` subclass, or a function that returns one, checked on a
    dummy batch and registered under its name. One from a module with a file is named by that file, as the command
    line names it; one defined in a notebook cell (or a script's ``__main__``) keeps its definition and its
    cell's imports as source, so that its runs keep a copy (``model_source.py``) and resume in a fresh process.
    Where that source does not rebuild the same layers alone (it uses a helper from another cell), the model is
    registered all the same, without a copy: its runs then resume only in the process that defined it."""
    if isinstance(obj, nn.Module):
        raise MnistlabError(
            f"give the model's class or a function that builds it, not a built {type(obj).__name__}: each seed "
            "builds its own"
        )
    name = getattr(obj, "__name__", "")
    if not callable(obj) or not name.isidentifier():
        raise MnistlabError(f"a model is a name, a FILE.py:BUILDER spec, a nn.Module class or a builder; got {obj!r}")
    module = sys.modules.get(getattr(obj, "__module__", ""))
    file = getattr(module, "__file__", None)
    top_level = module is not None and getattr(module, name, None) is obj
    if top_level and module.__name__ != PYTHON and file and Path(file).is_file():
        return resolve(f"{file}:{name}", recipe)  # a module's or a model file's builder: named as the CLI names it
    source = Source(f"{PYTHON}:{name}", "python", PYTHON, name)
    data = _definition(obj)
    if data is not None and _rebuilds(obj, data):
        _PYTHON_SOURCES[source.spec] = data
        return get_card(source.register(data, recipe))
    builder, params = _checked(obj, source.spec)
    if is_registered(name) and (get_card(name).source is not None or not get_card(name).outside):
        raise MnistlabError(f"model name {name!r} is taken by a registered model; rename your class or builder")
    _register_outside(
        ModelCard(
            title=name,
            target=("Your model, defined in Python.",),
            design=_first_paragraph(obj) or f"`{name}`, defined in Python.",
            recipe=recipe or DEFAULT_RECIPE,
            params=params,
            name=name,
            builder=builder,
        )
    )
    return get_card(name)


_PYTHON_SOURCES: dict[str, bytes] = {}  # the source kept of each model given as a Python object, by its spec
_HEADER = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\n"


def _definition(obj: Any) -> bytes | None:
    """The source of ``obj``'s definition with the imports of the cell (or file) it was defined in, as a module
    of its own; None when Python kept no source of it."""
    functions = [obj] if inspect.isfunction(obj) else [v for v in vars(obj).values() if inspect.isfunction(v)]
    for function in functions:
        filename = function.__code__.co_filename
        text = "".join(linecache.getlines(filename))
        if not text:
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        kinds = (ast.ClassDef, ast.FunctionDef)  # a builder nested in a function too (its closure is checked below)
        found = [n for n in ast.walk(tree) if isinstance(n, kinds) and n.name == obj.__name__]
        if not found:
            continue
        imports = [ast.get_source_segment(text, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        node = found[-1]  # a cell run twice defines it twice: the last one is the one in use
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        body = textwrap.dedent("".join(text.splitlines(keepends=True)[start - 1 : node.end_lineno]))
        return (_HEADER + "".join(f"{i}\n" for i in imports if i) + "\n\n" + body).encode()
    return None


def _rebuilds(obj: Any, data: bytes) -> bool:
    """Whether ``data`` alone builds the layers ``obj`` builds (the same parameter names and shapes)."""
    try:
        module = _module_from_bytes(data, Path(f"<{obj.__name__}>.py"))
        copy, original = getattr(module, obj.__name__)(), obj()
    except Exception:  # noqa: BLE001  whatever the kept source lacks (a helper from another cell)
        return False
    shapes = lambda m: [(k, tuple(v.shape)) for k, v in m.state_dict().items()]  # noqa: E731
    return isinstance(copy, nn.Module) and isinstance(original, nn.Module) and shapes(copy) == shapes(original)


def is_external(spec: str) -> bool:
    """Whether ``spec`` names a model from outside the package (a file, a module's builder, a layer spec)."""
    return ":" in spec or spec.endswith((".py", ".json"))


def resolve(spec: str, recipe: Recipe | None = None) -> ModelCard:
    """The card ``spec`` names, once, to be passed down: a registered name's; a model from outside loaded, checked
    on a dummy batch and registered (with ``recipe``, or the default recipe)."""
    if not is_external(spec):
        return get_card(spec)  # an unknown name stops here, in one line
    source = Source.parse(spec)
    if source.kind in ("file", "spec") and not Path(source.where).is_absolute():  # recorded as found from anywhere
        absolute = str(Path(source.where).resolve())
        source = Source.parse(absolute if source.kind == "spec" else f"{absolute}:{source.builder}")
    return get_card(source.register(source.read(), recipe))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a model from outside comes from, as the user named it."""

    spec: str  # "my_net.py:Builder", "my_package.module:Builder", "my_net.json", or "__main__:Builder"
    kind: str  # file | module | spec | python (an object defined in a notebook cell or a script: ``from_python``)
    where: str  # the file's path, or the module's name
    builder: str  # the builder's name ("" for a spec)

    @classmethod
    def parse(cls, spec: str) -> Source:
        if spec.endswith(".json"):
            return cls(spec, "spec", spec, "")
        where, _, builder = spec.rpartition(":")
        if not where or not builder.isidentifier():
            raise MnistlabError(f"a model from outside is FILE.py:BUILDER, MODULE:BUILDER or SPEC.json, got {spec!r}")
        kind = "python" if where == PYTHON else "file" if where.endswith(".py") else "module"
        return cls(spec, kind, where, builder)

    def read(self) -> bytes:
        """The bytes the model is built from: the file or spec, or the module's source file."""
        if self.kind == "python":
            if self.spec not in _PYTHON_SOURCES:
                raise MnistlabError(
                    f"model {self.builder} was defined in Python (a notebook cell) and its run keeps no copy of it: "
                    f"define it again in this process and pass it to mnistlab (e.g. mnistlab.config_for({self.builder}))"
                )
            return _PYTHON_SOURCES[self.spec]
        if self.kind == "module":
            path = self._module_file()
        else:
            path = Path(self.where)
            if not path.is_file():
                raise MnistlabError(f"model file {path} does not exist")
        return path.read_bytes()

    def _module_file(self) -> Path:
        try:
            found = importlib.util.find_spec(self.where)
        except (ImportError, ValueError) as exc:
            raise MnistlabError(f"cannot import module {self.where!r}: {exc}") from None
        if found is None or not found.origin or not Path(found.origin).is_file():
            raise MnistlabError(f"no module {self.where!r} (is it installed, or on PYTHONPATH?)")
        return Path(found.origin)

    def register(self, data: bytes, recipe: Recipe | None = None, *, replace: bool = False) -> str:
        """Build the model from ``data`` (this source's bytes, or a run folder's copy of them), check it on a
        dummy batch and register it; return its name. ``replace`` re-registers a name this source registered
        before (a run rebuilt from its copy)."""
        if self.kind == "spec":
            name, build, design = _from_spec(data, self.where)
        else:
            build = self._builder(data)
            name = self.builder
            design = _first_paragraph(build)
        if is_registered(name):
            card = get_card(name)
            # a run rebuilt from its own copy (``replace``) takes the name over from another model from outside: what
            # a run trained is what its checkpoints load; a model of the package's own is never replaced
            if card.source != self.spec and not (replace and card.outside):
                raise MnistlabError(
                    f"model name {name!r} is taken by a registered model; rename your builder (or the spec's name)"
                )
            if not replace and card.source_sha256 == sha256(data):
                return name  # registered from these very bytes already
        builder, params = _checked(build, self.spec)
        _register_outside(
            ModelCard(
                title=name,
                target=(f"Your model, from `{self.spec}`.",),
                design=design or f"Built by `{self.spec}`.",
                recipe=recipe or DEFAULT_RECIPE,
                params=params,
                name=name,
                builder=builder,
                source=self.spec,
                source_sha256=sha256(data),
            )
        )
        return name

    def _builder(self, data: bytes) -> Callable[..., nn.Module]:
        if self.kind == "module":
            try:
                module = importlib.import_module(self.where)
            except Exception as exc:  # noqa: BLE001  the user's module may raise anything on import
                raise MnistlabError(f"importing {self.where} failed: {type(exc).__name__}: {exc}") from None
        else:
            module = _module_from_bytes(data, Path(self.where))
        build = getattr(module, self.builder, None)
        if not callable(build):
            known = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise MnistlabError(f"{self.where} has no builder {self.builder!r}; it defines: {', '.join(known)}")
        return build


def _module_from_bytes(data: bytes, path: Path) -> Any:
    """Run a model file's code as a module of its own (its folder importable for the time, as Python does)."""
    name = f"mnistlab_user_{sha256(data)[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    module = type(sys)(name)
    module.__file__ = str(path)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        exec(compile(data, str(path), "exec"), module.__dict__)  # noqa: S102  the user asked for this file's model
    except Exception as exc:  # noqa: BLE001  the user's file may raise anything
        raise MnistlabError(f"running {path} failed: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    sys.modules[name] = module
    return module


def _checked(build: Callable[..., nn.Module], spec: str) -> tuple[Callable[..., nn.Module], int]:
    """The builder as the lab calls it (``dropout`` passed only if it takes one), after one dummy batch through a
    model it built; and that model's parameter count. The model is held in a ``Net``, whose log-softmax makes
    logits log-probabilities and leaves log-probabilities as they are; seeds of it stack where its layers do."""
    takes_dropout = "dropout" in _parameters(build)

    def make(**kwargs: Any) -> nn.Module:
        return build(**({"dropout": kwargs["dropout"]} if takes_dropout and "dropout" in kwargs else {}))

    try:
        model = make()
    except Exception as exc:  # noqa: BLE001  the user's builder may raise anything
        raise MnistlabError(f"{spec}: the builder raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise MnistlabError(f"{spec}: the builder returned a {type(model).__name__}, not a torch.nn.Module")
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, 1, 28, 28))
    except Exception as exc:  # noqa: BLE001  a shape mismatch inside the user's layers, and the like
        first = first_line(exc)
        raise MnistlabError(
            f"{spec}: a [2, 1, 28, 28] batch fails in the model: {type(exc).__name__}: {first}"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 10):
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise MnistlabError(f"{spec}: the model maps [2, 1, 28, 28] to {shape}; it must give [2, 10] (10 classes)")
    if not bool(torch.isfinite(out).all()):
        raise MnistlabError(f"{spec}: the model's output on a blank batch is not finite")

    def builder(dropout: float = 0.0) -> nn.Module:
        return Net(OrderedDict(model=make(dropout=dropout)))

    return builder, sum(p.numel() for p in model.parameters())


def _first_paragraph(build: Callable[..., Any]) -> str:
    """A builder's docstring's first paragraph, on one line: its design, as the user wrote it."""
    return (inspect.getdoc(build) or "").split("\n\n")[0].replace("\n", " ")


def _register_outside(card: ModelCard) -> None:
    """Register a model from outside the package (again, from a run's copy), marked as not one of the lab's own
    (``list_models(outside=False)`` leaves it out)."""
    register(dataclasses.replace(card, outside=True), replace=True)


def _parameters(build: Callable[..., Any]) -> dict[str, Any]:
    try:
        return dict(inspect.signature(build).parameters)
    except (TypeError, ValueError):
        return {}


# ------------------------------------------------------------------------------------------------ layer specs

LAYERS = ("conv", "separable", "maxpool", "avgpool", "gap", "classes")


def layers_from_spec(spec: dict[str, Any], where: str) -> OrderedDict[str, nn.Module]:
    """A layer spec's layers. The spec is a JSON object::

        {"name": "tiny",                        # the model's name (default: the file's stem)
         "layers": [
           {"conv": 8},                         # 3x3 convolution to 8 channels, BatchNorm, ReLU (no padding)
           {"conv": 16, "kernel": 3, "padding": 0, "dropout": 0.0},
           {"maxpool": 2},                      # max pool, kernel and stride 2
           {"separable": 24, "padding": 1},     # depthwise 3x3 + pointwise 1x1 to 24, BatchNorm, ReLU
           {"avgpool": 2},
           {"gap": true},                       # global average pool to 1x1
           {"classes": true}                    # a 1x1 convolution to the 10 class scores (kernel: another size)
         ]}

    The last layer gives the class scores; a log-softmax follows (``Net``)."""
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise MnistlabError(f"layer spec {where}: 'layers' must be a non-empty list")
    built: OrderedDict[str, nn.Module] = OrderedDict()
    channels = 1
    for index, layer in enumerate(layers, 1):
        kinds = [k for k in layer if k in LAYERS] if isinstance(layer, dict) else []
        if len(kinds) != 1:
            raise MnistlabError(
                f"layer spec {where}: layer {index} ({json.dumps(layer)}) must name one of {', '.join(LAYERS)}"
            )
        kind = kinds[0]
        extra = sorted(set(layer) - {kind, "kernel", "padding", "dropout"})
        if extra:
            raise MnistlabError(f"layer spec {where}: layer {index} has unknown setting {extra[0]!r}")
        value = layer[kind]
        try:
            if kind == "conv":
                block = conv(
                    channels,
                    int(value),
                    int(layer.get("kernel", 3)),
                    int(layer.get("padding", 0)),
                    dropout=float(layer.get("dropout", 0.0)),
                )
                channels = int(value)
            elif kind == "separable":
                block, channels = separable(channels, int(value), int(layer.get("padding", 0))), int(value)
            elif kind in ("maxpool", "avgpool"):
                block = (nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)(int(value))
            elif kind == "gap":
                block = nn.AdaptiveAvgPool2d(1)
            else:
                block, channels = head(channels, int(layer.get("kernel", 1))), 10
        except (TypeError, ValueError) as exc:
            raise MnistlabError(f"layer spec {where}: layer {index} ({json.dumps(layer)}): {exc}") from None
        built[f"{kind}{index}"] = block
    return built


def _from_spec(data: bytes, where: str) -> tuple[str, Callable[..., nn.Module], str]:
    try:
        spec = json.loads(data)
    except json.JSONDecodeError as exc:
        raise MnistlabError(f"layer spec {where} is not JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise MnistlabError(f'layer spec {where} must be a JSON object with "layers"')
    name = spec.get("name") or Path(where).stem
    if not str(name).isidentifier():
        raise MnistlabError(f"layer spec {where}: the name {name!r} must be letters, digits and underscores")
    layers_from_spec(spec, where)  # every layer checked now, before a name is taken
    shape = " | ".join(next(f"{k} {v}" for k, v in layer.items() if k in LAYERS) for layer in spec["layers"])

    def build() -> nn.Module:
        return Net(layers_from_spec(spec, where))

    return str(name), build, f"From the layer spec `{where}`: {shape}."


# ------------------------------------------------------------------------------------------- run folders


def keep_copy(source_spec: str, run_dir: Path, recorded: str | None = None) -> None:
    """Copy what a model from outside is built from into a new run's folder (atomically); a copy already there
    with the ``recorded`` sha256 (a run started again) is kept."""
    source = Source.parse(source_spec)
    copy = run_dir / copy_name(source)
    if recorded and copy.is_file() and sha256(copy.read_bytes()) == recorded:
        return
    atomic_write_bytes(copy, source.read())


def copy_name(source: Source) -> str:
    return SPEC_COPY if source.kind == "spec" else SOURCE_COPY


def ensure_registered(config: dict[str, Any], run_dir: Path | None, log: Callable[[str], None] | None = None) -> None:
    """Make a run's model buildable: a model from outside is rebuilt from the copy its run folder keeps (the
    original may have moved, changed or gone), else from the original. ``log`` hears when the original changed."""
    spec = config.get("source")
    if not spec:
        return
    recorded = config.get("source_sha256")
    if is_registered(config["model"]):
        card = get_card(config["model"])
        if card.source == spec and card.source_sha256 == recorded:
            return  # this process built it from these very bytes already
    source = Source.parse(spec)
    copy = run_dir / copy_name(source) if run_dir is not None else None
    if copy is not None and copy.is_file() and recorded and sha256(copy.read_bytes()) != recorded:
        if run_status(copy.parent) != "todo":
            raise MnistlabError(f"{copy} is not the model the run trained (its sha256 differs from config.json's)")
        copy = None  # a copy left by another model's start that saved no epoch: the original is this run's model
    if copy is not None and copy.is_file():
        data = copy.read_bytes()
        if log is not None and source.kind in ("file", "spec"):
            original = Path(source.where)
            if not original.is_file():
                log(f"note: {original} is gone; the model is rebuilt from the run's copy, {copy}")
            elif sha256(original.read_bytes()) != sha256(data):
                log(f"note: {original} changed since the run; the model is rebuilt from the run's copy, {copy}")
    else:
        data = source.read()
        if recorded and sha256(data) != recorded:
            raise MnistlabError(
                f"the run folder keeps no copy of its model and {source.where} changed since the run; restore it"
            )
    source.register(data, get_card(config["model"]).recipe if is_registered(config["model"]) else None, replace=True)


def load_entry_points() -> list[str]:
    """Register the builders installed packages offer in the ``mnistlab.models`` group (each entry point's name
    is the model's); return their names. An entry point that names a module, not a builder, is imported: it
    registers its own models (the repository's lab does: ``lab = "mnistlab_lab.models"``). One that fails to load
    is skipped with a line on stderr."""
    names = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        if is_registered(entry.name):
            continue
        try:
            build = entry.load()
            if not entry.attr:  # a module: importing it registered its models
                continue
            builder, params = _checked(build, f"{entry.value} (entry point {entry.name})")
        except Exception as exc:  # noqa: BLE001  an installed package's problem must not stop the lab
            print(f"warning: model {entry.name} from {entry.value} not loaded: {exc}", file=sys.stderr)
            continue
        _register_outside(
            ModelCard(
                title=entry.name,
                target=(f"From the installed package's entry point `{entry.value}`.",),
                design=_first_paragraph(build) or f"Built by `{entry.value}`.",
                recipe=DEFAULT_RECIPE,
                params=params,
                name=entry.name,
                builder=builder,
            )
        )
        names.append(entry.name)
    return names
