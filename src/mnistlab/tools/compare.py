"""``mnistlab compare``: the user's runs (and ours) side by side: one table, seeds of one model grouped, and two
figures: test accuracy per epoch with the seeds as a band, and accuracy against parameters."""

from __future__ import annotations

from pathlib import Path
from statistics import mean

from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import atomic_write_text
from mnistlab.core.rundir import LAST_K, TARGET
from mnistlab.models.external import ensure_registered
from mnistlab.models.registry import build_model, get_card
from mnistlab.tools.analysis import analyze
from mnistlab.tools.plots import plot_accuracy_against_params, plot_seed_bands
from mnistlab.tools.runs import RunGroup

HEAD = (
    f"| model | runs in | params | MACs | field at the head | seeds | epochs | last epoch: mean | last-{LAST_K}: mean | "
    f"last-{LAST_K}: min | ≥{TARGET}% in each of the last {LAST_K} |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def geometry(group: RunGroup) -> tuple[str, str]:
    """The model's MACs per image and the receptive field of its last layer, or why they are not known."""
    first = group.runs[0]
    try:
        ensure_registered(first.config, first.path)  # a model from outside: from the copy its run keeps
        table = analyze(build_model(get_card(group.model), first.config), name=group.model)
    except MnistlabError:  # a model this version does not know, or whose field cannot be traced
        return "-", "-"
    field = table.receptive_field
    size = "x".join(map(str, field)) if isinstance(field, tuple) else f"{field}x{field}"
    return f"{table.macs:,}", size


def table(groups: list[RunGroup]) -> str:
    lines = []
    for g in groups:
        macs, field = geometry(g)
        tail = g.last3_all
        last = mean(r.summary["last_test_acc"] for r in g.runs) if all(r.last3 for r in g.runs) else None
        cells = (
            f"{last:.2f} | {mean(tail):.2f} | {min(tail):.2f} | {g.held_count} of {len(g.runs)}"
            if tail and last is not None
            else "- | - | - | test not evaluated"
        )
        epochs = sorted({r.summary["epochs"] for r in g.runs})
        lines.append(
            f"| `{g.model}` | `{g.label}` | {g.params:,} | {macs} | {field} | {len(g.runs)} | "
            f"{', '.join(map(str, epochs))} | {cells} |"
        )
    return HEAD + "\n".join(lines) + "\n"


def write(groups: list[RunGroup], output: Path | None) -> str:
    """The comparison as Markdown; with ``output``, also ``compare.md`` and the two figures there."""
    text = "# Runs compared\n\n" + table(groups)
    if output is None:
        return text
    tested = [g for g in groups if g.last3_all]
    bands = plot_seed_bands([(g.model, [r.history for r in g.runs]) for g in tested], output / "accuracy-per-epoch.png")
    points = [(g.model, g.params, mean(g.last3_all), min(g.last3_all), max(g.last3_all)) for g in tested]
    scatter = plot_accuracy_against_params(points, output / "accuracy-against-parameters.png")
    text += f"\n![test accuracy per epoch]({bands.name})\n\n![accuracy against parameters]({scatter.name})\n"
    atomic_write_text(output / "compare.md", text)
    return text
