"""The package's imports form no circle, counting the imports written inside functions: a circle hidden in a
function-level import is still one (engine and graphstep, runner and distributed had such circles)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

PACKAGE = Path(os.environ.get("MNISTLAB_PACKAGE") or Path(__file__).resolve().parents[1] / "src" / "mnistlab")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package's modules (of ``known``) that ``path`` imports anywhere in it (top level or in a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, known) - {module_name(f)} for f in files}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``edges`` (a list of modules, the first repeated at its end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for after in sorted(edges.get(node, ())):
            if state.get(after) == "open":
                return stack[stack.index(after) :] + [after]
            if after not in state and (found := visit(after)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_circle():
    assert cycle(graph()) is None, " -> ".join(cycle(graph()) or [])


def test_the_check_finds_a_circle_hidden_in_a_function(tmp_path):
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle(edges) == ["a", "b", "c", "a"]
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from mnistlab.training.engine import fit\n")
    assert imports_of(source, {"mnistlab.training.engine", "mnistlab_lab.report"}) == {"mnistlab.training.engine"}


# the wings from the bottom up: a module imports only from its own wing or the ones below it
WINGS = ("core", "data", "models", "training", "tools", "jobs")


def wing_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # the package's face: its version, and the public API loaded lazily
    return WINGS.index(parts[1]) if parts[1] in WINGS else len(WINGS)  # cli, __main__, the public faces: the top


def test_imports_run_only_down_the_wings():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph().items()
        for target in targets
        if wing_of(target) > wing_of(module)
    )
    assert upward == []


LAB = PACKAGE.parents[1] / "lab" / "mnistlab_lab"


def test_the_lab_stands_above_the_package_which_never_imports_it():
    """The repository's lab (lab/mnistlab_lab) imports the package; the package reaches the lab only through its
    entry points (``mnistlab.models``, ``mnistlab.commands``), never by an import."""
    lab_modules = {"mnistlab_lab"} | {f"mnistlab_lab.{f.stem}" for f in LAB.glob("*.py")}
    into_lab = sorted(str(f) for f in PACKAGE.rglob("*.py") if imports_of(f, lab_modules))
    assert into_lab == []
    package_modules = set(graph())
    assert all(imports_of(f, package_modules) for f in LAB.glob("*.py") if f.stem not in ("__init__",))


def test_no_function_of_the_package_or_the_lab_is_longer_than_60_lines():
    long = []
    for path in [*PACKAGE.rglob("*.py"), *LAB.rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.name}:{node.name} {node.end_lineno - node.lineno + 1} lines")
    assert long == []
