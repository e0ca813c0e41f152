"""REPORT.md, written from the recorded runs under results/, the model cards and the lab's ledger. No result is
typed by hand: every figure of a run comes from its summary or history, every sentence of analysis from those
figures; the one outside figure, the smallest public model's size, is the ledger's ``PUBLIC_RECORD_PARAMS``.

Three steps: ``collect`` reads every recorded run the report speaks of (``Collected``); ``render`` turns that into
markdown, every table through ``table``, and names the figures it links to (``Figures``) without drawing them;
``write_report`` draws the figures, refreshes the README's table and writes REPORT.md, after all is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import atomic_write_text, remove_litter
from mnistlab.core.rundir import LAST_K, LAST_MEAN, LAST_MIN, TARGET
from mnistlab.jobs.search import batch_size_of, best_row, finished
from mnistlab.models import create_model, get_card, list_models
from mnistlab.models.found import entries
from mnistlab.models.registry import ModelCard
from mnistlab.tools.analysis import LayerTable, analyze
from mnistlab.tools.plots import plot_curves, plot_held_against_params, plot_search
from mnistlab.tools.runs import RunGroup, find_runs
from mnistlab_lab.models import FOUND
from mnistlab_lab.records import (
    Candidate,
    ModelResult,
    RecordedRun,
    Searches,
    chosen,
    load_searches,
    model_runs,
    read_run,
    recorded_runs,
    tuning_scores,
    waiting,
)
from mnistlab_lab.studies import (
    EARLIER,
    PUBLIC_RECORD_PARAMS,
    RECORD_BUDGET,
    RECORD_STUDIES,
    RESULTS,
    STUDIES,
    TEACHER_SET,
    Role,
    Run,
    Study,
    candidate_name,
    lab_models,
    role,
)

# results/stacked/<model>-<n>seeds: one final recipe on many seeds at once; results/stacked/model8: Model 8's final
# seeds stacked, beside its single runs
HOLD_RATES = "stacked"
SPATIAL = ("Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d")


def table(header: Sequence[str | None], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table, a newline after its last row. A cell None is left blank (``| |``); any other cell is
    written as ``str`` gives it, so "" keeps its two spaces (``|  |``), a ``|`` in it escaped (a layout's
    "8-15 | pool" stays in its cell)."""

    def cell(value: Any) -> str:
        return " " if value is None else " " + str(value).replace("|", "\\|") + " "

    def line(cells: Sequence[Any]) -> str:
        return "|" + "|".join(map(cell, cells)) + "|"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)]) + "\n"


@dataclass
class Figures:
    """The figures the report links to: each asked for while it is rendered (its file under ``folder`` and how to
    draw it), drawn by ``draw`` when the report is written; links are relative to the report's folder."""

    folder: Path
    output: Path
    wanted: list[tuple[Path, Callable[[Path], Any]]] = field(default_factory=list)

    def link(self, name: str, draw: Callable[[Path], Any]) -> str:
        path = self.folder / name
        self.wanted.append((path, draw))
        return os.path.relpath(path, self.output.parent)

    def draw(self) -> None:
        folders = {path.parent for path, _ in self.wanted}
        for folder in folders:  # what a report killed while it drew left (the report is the figures' one writer)
            remove_litter(folder, tuple(path.name for path, _ in self.wanted if path.parent == folder))
        for path, draw in self.wanted:
            draw(path)  # each written atomically by its plot function


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cache_note(runs: list[RecordedRun]) -> str:
    """Whether a run's teachers were computed as it trained, read from outputs kept by an earlier run, or shown
    the unwarped images once."""
    counts = [r.summary["provenance"].get("teacher_cache") for r in runs]
    if not any(counts):
        return ""
    if all(r.config.get("teacher_view") == "clean" for r in runs):  # one table of the unwarped images
        return " (teachers shown the unwarped images: their outputs computed once for all epochs)"
    if all(c and c["hits"] and not c["misses"] for c in counts):
        return " (teachers' outputs read from the cache)"
    return " (teachers' outputs computed, and kept)" if all(c and not c["hits"] for c in counts) else " (partly cached)"


def _seconds(value: float) -> str:
    return f"{value / 60:.1f} min" if value >= 120 else f"{value:.0f} s"


def _fit_sentence(train: float, last: float) -> str:
    """Train against last test accuracy: overfitting, regularisation, or neither."""
    gap = train - last
    if gap > 0.3:
        return (
            f"Best train accuracy {train:.2f}% is {gap:.2f} points above the last test accuracy "
            f"{last:.2f}%: the model fits the training set better than it generalises (overfitting)."
        )
    if gap < -0.1:
        return (
            f"Last test accuracy {last:.2f}% is {-gap:.2f} points above the best train accuracy "
            f"{train:.2f}% (measured on augmented or dropped-out batches): the regularisation costs "
            "training accuracy, not test accuracy; there is no overfitting."
        )
    return f"Train ({train:.2f}%) and last test accuracy ({last:.2f}%) are within {abs(gap):.2f} points."


def analysis_sentences(result: ModelResult, previous: ModelResult | None) -> list[str]:
    """What the numbers say, in words derived from them."""
    if not result.runs:
        return ["Not run yet: `mnistlab reproduce --models " + result.card.name + "`."]
    out = [_fit_sentence(result.stat("best_train_acc"), result.stat("last_test_acc"))]
    for run in result.runs:
        hits = sum(a >= TARGET for a in run.last3)
        out.append(
            f"Seed {run.summary['seed']}: {TARGET}% reached in {hits} of the last {len(run.last3)} epochs "
            f"(test {', '.join(_pct(a) for a in run.last3)})."
        )
    if len(result.runs) > 1:
        means = [mean(r.last3) for r in result.runs]
        spread = max(means) - min(means)
        out.append(
            f"Across its {len(result.runs)} seeds the last-3 mean ranges from {min(means):.2f} to {max(means):.2f} "
            f"({spread:.2f} points) and single epochs from {min(result.last3_all):.2f} to "
            f"{max(result.last3_all):.2f}; a single-seed comparison carries noise of this size."
        )
    if previous is not None and previous.runs:
        delta = mean(result.last3_all) - mean(previous.last3_all)
        spread = max(mean(r.last3) for r in result.runs) - min(mean(r.last3) for r in result.runs)
        params = result.card.params - previous.card.params
        verdict = (
            (
                "within the spread between its seeds"
                if abs(delta) <= spread
                else "more than the spread between its seeds"
            )
            if len(result.runs) > 1
            else "on one seed each"
        )
        out.append(
            f"Against {previous.card.title}: {params:+,} parameters, {delta:+.2f} points of mean test "
            f"accuracy over the last 3 epochs ({len(result.runs)} seeds against {len(previous.runs)}; "
            f"{verdict})."
        )
    reference = result.card.reference
    if reference is not None:
        out.append(
            f"The reference reported a best test accuracy of {reference.best_test_acc:.2f}% (its best epoch, "
            f"chosen on test); ours is {result.stat('last_test_acc'):.2f}% at the last epoch and "
            f"{mean(result.last3_all):.2f}% over the last 3, averaged over seeds."
        )
    return out


def rf_comparison(card: ModelCard, table: LayerTable) -> list[str]:
    """Lines naming each layer where the reference's hand-made receptive field differs from the computed one."""
    rows = [r for r in table.rows if r.type in SPATIAL]
    if not card.reference_rf or len(rows) != len(card.reference_rf):
        return []
    return [
        f"{row.name} ({row.type}, kernel {row.kernel}, jump before it {_jump_before(rows, i)}): "
        f"reference {reference_rf}x{reference_rf}, computed {row.receptive_field}x{row.receptive_field}"
        for i, (row, reference_rf) in enumerate(zip(rows, card.reference_rf))
        if row.receptive_field != reference_rf
    ]


def _jump_before(rows: list[Any], index: int) -> Any:
    return rows[index - 1].jump if index else 1


def recipe_table(card: ModelCard) -> str:
    r = card.recipe
    aug = r.augment
    augment = (
        ", ".join(
            f"{k} {v}"
            for k, v in (
                ("rotation", aug.rotation),
                ("translate", aug.translate),
                ("scale", aug.scale),
                ("shear", aug.shear),
            )
            if v
        )
        or "none"
    )
    scheduler = {
        "none": "none",
        "step": f"StepLR(step {r.step_size}, gamma {r.gamma})",
        "onecycle": f"OneCycleLR(max_lr {r.lr}, pct_start {r.pct_start}, div {r.div_factor}, final div {r.final_div_factor})",
        "plateau": f"ReduceLROnPlateau(validation loss, factor {r.gamma}, patience {r.patience})",
    }[r.scheduler]
    optimizer = f"{r.optimizer.upper()}(lr {r.lr}" + (f", momentum {r.momentum}" if r.optimizer == "sgd" else "")
    optimizer += f", weight decay {r.weight_decay})" if r.weight_decay else ")"
    rows = [
        ("epochs", r.epochs),
        ("batch size", r.batch_size),
        ("optimizer", optimizer),
        ("scheduler", scheduler),
        ("augmentation", augment),
        ("dropout", r.dropout),
        ("label smoothing", r.label_smoothing),
        ("weights evaluated", f"moving average, decay {r.ema} per step" if r.ema else "as trained"),
    ]
    return table(["recipe", None], rows)


RESULTS_HEADER = (
    "seed", "params", "best train", "best val (epoch)", "test at last epoch", "last-3 test", "last-3 mean",
    "last-3 min", "epochs", "train time", "machine",
)  # fmt: skip


def results_table(result: ModelResult) -> str:
    rows: list[list[Any]] = [
        [
            s["seed"],
            f"{s['params']:,}",
            _pct(s["best_train_acc"]),
            f"{_pct(s['best_val_acc'])} ({s['best_epoch']})",
            _pct(s["last_test_acc"]),
            ", ".join(_pct(a) for a in run.last3),
            _pct(s[LAST_MEAN]),
            _pct(s[LAST_MIN]),
            s["epochs"],
            _seconds(s["train_seconds"]),
            f"{s['provenance']['machine']}, torch {s['provenance']['torch']}",
        ]
        for run in result.runs
        for s in [run.summary]
    ]
    if len(result.runs) > 1:
        values = result.last3_all
        mean_and_min = [f"**{mean(values):.2f}**", f"**{min(values):.2f}**"]
        rows.append([f"**all {len(result.runs)} seeds**", *[None] * 5, *mean_and_min, *[None] * 3])
    return table(RESULTS_HEADER, rows)


COMPARISON_HEADER = (
    "model", "params", "reference's params", "reference's best test", "seeds", "epochs", "last epoch: mean",
    "last epoch: min", "last-3: mean", "last-3: min", "≥99.4% in each of last 3, every seed",
)  # fmt: skip


def comparison_table(results: list[ModelResult]) -> str:
    rows = []
    for r in results:
        ref = r.card.reference
        ref_cells = [f"{ref.params:,}", f"{ref.best_test_acc:.2f}"] if ref else ["-", "-"]
        ours: list[Any] = ["not run", *[None] * 5, ""]
        if r.runs:
            ours = [
                len(r.runs),
                r.runs[0].summary["epochs"],
                f"{r.stat('last_test_acc'):.2f}",
                f"{r.stat('last_test_acc', min):.2f}",
                f"{mean(r.last3_all):.2f}",
                f"{min(r.last3_all):.2f}",
                "yes" if r.held else "no",
            ]
        rows.append([f"{r.card.title} (`{r.card.name}`)", f"{r.card.params:,}", *ref_cells, *ours])
    notes = [target_line(r) for r in results if len(r.runs) > 1 and _role_of(r.card.name).aims]
    below = [line for r in results if (line := below_reference(r))]
    if below:
        notes.append(
            "Against the reference (mean over seeds of the last epoch):\n\n" + "\n".join(f"- {b}" for b in below)
        )
    return table(COMPARISON_HEADER, rows) + "".join(f"\n{n}\n" for n in notes)


def below_reference(result: ModelResult) -> str:
    """Where our mean last-epoch accuracy is below the reference's figure, and what the numbers say of why."""
    ref = result.card.reference
    if ref is None or not result.runs:
        return ""
    ours = result.stat("last_test_acc")
    best_epochs = mean(max(h["test_acc"] for h in r.history) for r in result.runs)  # like the reference's figure
    title = result.card.title
    if ours >= ref.best_test_acc:
        return f"{title}: our mean last epoch {ours:.2f} ≥ the reference's {ref.best_test_acc:.2f}."
    if best_epochs >= ref.best_test_acc:
        return (
            f"{title}: our mean last epoch {ours:.2f} is below the reference's {ref.best_test_acc:.2f}, which "
            f"is its best epoch chosen on test; picked the same way ours is {best_epochs:.2f} (mean over seeds "
            "of each run's best test epoch), so the gap is the choice of epoch, not the model."
        )
    return (
        f"{title}: our mean last epoch {ours:.2f} is below the reference's {ref.best_test_acc:.2f}, and "
        f"so is our mean best test epoch ({best_epochs:.2f}): with our layers and recipe this model is "
        "below the reference's."
    )


def target_line(result: ModelResult) -> str:
    """Whether the course's target held, seed by seed, in words."""
    held = [r.summary["seed"] for r in result.runs if r.held]
    failed = [r for r in result.runs if not r.held]
    text = (
        f"**{result.card.title}** ({result.card.params:,} parameters): {TARGET}% or more in each of the last 3 "
        f"epochs on {len(held)} of {len(result.runs)} seeds (mean {mean(result.last3_all):.2f}, "
        f"min {min(result.last3_all):.2f})."
    )
    if failed:
        text += " Not met on " + ", ".join(f"seed {r.summary['seed']} (min {min(r.last3):.2f})" for r in failed) + "."
    return text


def _change(candidate: Candidate, by_name: dict[str, float]) -> str:
    """The candidate's score against the candidate it changes one thing of, if that one was recorded."""
    against = candidate.declared.against
    return f"{candidate.score - by_name[against]:+.2f} vs `{against}`" if against in by_name else "-"


def tuning_section(study: Study, candidates: list[Candidate], by_name: dict[str, float]) -> str:
    """One study's table and what it chose; ``by_name`` holds every study's candidate scores, for the ``against``
    column."""
    if not candidates:
        return ""
    lines = (
        [f"## {study.title}", ""] + _candidates_table(study, candidates, by_name) + ["", _verdict(study, candidates)]
    )
    return "\n".join(lines + _predictions(study)) + "\n"


def _predictions(study: Study) -> list[str]:
    """What the ledger said the study would show, written before its runs: beside what it showed."""
    if not study.prediction and not study.predicted:
        return []
    said = [f"the study: {study.prediction}"] if study.prediction else []
    said += [f"`{name}`: {text}" for name, text in study.predicted]
    return ["", "Predicted in the ledger before the runs: " + "; ".join(said) + "."]


def _candidates_table(study: Study, candidates: list[Candidate], by_name: dict[str, float]) -> list[str]:
    """How a study's candidates were judged, and their table: on several seeds by the mean of their validation
    means, or on one seed with its test accuracy beside (for information)."""
    if any(len(c.runs) > 1 for c in candidates):
        seeds = sorted({r.summary["seed"] for c in candidates for r in c.runs})
        devices = sorted({r.summary["provenance"]["device"] for c in candidates for r in c.runs})
        how = (
            f"Each candidate trained on the 55,000 training images with each of seeds "
            f"{', '.join(map(str, seeds))}; the 5,000 held-out validation images decide, by the mean over "
            "seeds of each seed's mean over its last 3 epochs. These runs never evaluated the test set. "
            f"Device: {', '.join(devices)}{study.where}."
        )
        header = ["candidate", "what", "params", "val mean per seed, last 3 epochs", "mean", "lowest epoch"]
        header += ["change in mean", "train time per run"]
        rows = [
            [
                f"`{c.name}`",
                c.declared.why,
                f"{c.runs[0].summary['params']:,}",
                ", ".join(f"{v:.2f}" for v in c.per_seed),
                f"{c.score:.3f}",
                _pct(c.lowest_epoch),
                _change(c, by_name),
                _seconds(mean(r.summary["train_seconds"] for r in c.runs)) + _cache_note(c.runs),
            ]
            for c in candidates
        ]
    else:
        how = (
            "Each candidate trained on the 55,000 training images with seed 1; the 5,000 held-out validation "
            "images decide. Test accuracy is shown for information only; it chose nothing."
        )
        header = ["candidate", "what", "params", "val acc, last 3 epochs", "val mean", "change in val mean"]
        header += ["test at last epoch", "train time"]
        rows = [
            [
                f"`{c.name}`",
                c.declared.why,
                f"{first.summary['params']:,}",
                ", ".join(_pct(h["val_acc"]) for h in first.history[-LAST_K:]),
                f"{c.score:.2f}",
                _change(c, by_name),
                _pct(first.summary["last_test_acc"]),
                _seconds(first.summary["train_seconds"]),
            ]
            for c in candidates
            for first in [c.runs[0]]
        ]
    return [how, "", *table(header, rows).splitlines()]


def _verdict(study: Study, candidates: list[Candidate]) -> str:
    """What a study chose by its rule, or why it chose nothing (yet)."""
    pending = ", ".join(f"`{name}`" for name in waiting(study, candidates))
    if pending:  # a study still running chooses nothing yet
        return f"Not every candidate is recorded yet ({pending}): nothing is chosen until they are."
    at_least = study.mean_at_least
    best = chosen(study, candidates)
    if best is None:
        return (
            f"No candidate held {TARGET}% on validation on every seed"
            + (f" with a validation mean of {at_least:.2f}" if at_least else "")
            + f", so `{study.winner}` keeps its recipe."
        )
    rule = (
        "the highest validation mean"
        if study.rule == "mean"
        else f"the fewest parameters among those that held {TARGET}% on validation in each of the last 3 epochs "
        "of every seed" + (f" with a validation mean of {at_least:.2f} or more" if at_least else "")
    )
    return f"Chosen by {rule}: `{best.name}` ({best.declared.why}); it became {study.outcome}. " + _finals_note(study)


def earlier_section(earlier: list[tuple[Run, RecordedRun]]) -> str:
    """Final runs of recipes that were replaced, with why: their last-3 test accuracy per seed."""
    lines = [
        "## Earlier attempts",
        "",
        "Final runs of a recipe that was replaced (after it missed its target on a seed) or of a run that was "
        "shortened; kept under `results/earlier/` as the evidence.",
        "",
    ]
    rows = [
        [
            f"{run.why} (`{run.folder}`)",
            run.seed,
            f"{recorded.summary['params']:,}",
            ", ".join(_pct(a) for a in recorded.last3),
            _pct(min(recorded.last3)),
            "yes" if recorded.held else "no",
        ]
        for run, recorded in earlier
    ]
    header = ["attempt", "seed", "params", "last-3 test", "min", "held"]
    return "\n".join(lines) + "\n" + table(header, rows) if rows else ""


def _finals_note(study: Study) -> str:
    if _role_of(study.winner).refit:
        return (
            "Final runs train on all 60,000 training images; with no split left, their `best.pt` is the "
            "epoch of best training accuracy, and the figures reported are the last epochs', which choose "
            "nothing."
        )
    return (
        "Final runs keep the 5,000 validation images out (the plateau schedule steps on their loss) and "
        "train on the other 55,000; the figures reported are the last epochs', which choose nothing."
    )


def search_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finished trials no smaller trial beats: the best worst-seed score at or under each size."""
    front: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: (r["params"], -r["score"])):
        if not front or row["score"] > front[-1]["score"]:
            front.append(row)
    return front


def searches_section(studies: Searches, figures: Figures) -> str:
    """A section per search stored under results/search/: its trials, the parameters-against-score front as
    a plot, and the trials taken to final runs (the found models registered from it)."""
    if not studies:
        return ""
    found = entries(FOUND)
    parts = [
        "## Searches",
        "",
        "Each made by `mnistlab search` (Optuna's TPE sampler, median pruner on the worst seed's validation "
        "accuracy), scored on the validation split only: the worst seed's mean over the last "
        f"{LAST_K} epochs. A trial over the budget is never trained. The test set is not evaluated in a "
        "search; the trials taken to final runs are reported with the models above.",
        "",
    ]
    for store, study, rows in studies:
        parts += _search_part(store, study, rows, found, figures)
    return "\n".join(parts)


def _search_part(
    store: Path, study: Any, rows: list[dict[str, Any]], found: list[dict[str, Any]], figures: Figures
) -> list[str]:
    """One search's lines: its settings and counts, its front as a figure, its best trials, what was taken from it."""
    parts: list[str] = []
    settings = study.user_attrs.get("settings", {})
    done = finished(rows)
    budget = settings.get("max_params", max((r["params"] or 0) for r in rows))
    front = search_front(done)
    points, line = [(r["params"], r["score"]) for r in done], [(r["params"], r["score"]) for r in front]
    link = figures.link(
        f"search-{study.study_name}.png",
        lambda path, p=points, f=line, b=budget, t=study.study_name: plot_search(p, f, b, path, title=t),
    )
    parts += [
        f"### Search `{study.study_name}` (stored in `search/{store.name}`)",
        "",
        f"Budget {budget:,} parameters; each trial on seeds {settings.get('seeds')}, "
        f"{settings.get('epochs')} epochs"
        + (f", the first {settings['limit']:,} images of each split" if settings.get("limit") else "")
        + f". {_trial_counts(rows)}.",
        "",
        *(
            ["Made by " + "; then ".join(f"`{c}`" for c in study.user_attrs["commands"]) + ".", ""]
            if study.user_attrs.get("commands")
            else []
        ),
        f"![{study.study_name}: parameters against the worst seed's validation mean]({link})",
        "",
    ]
    if done:
        parts += [*trials_table(done, front).splitlines(), ""]
    return [*parts, _taken_line(study.study_name, found), ""]


def _trial_counts(rows: list[dict[str, Any]]) -> str:
    """How a search's trials ended, in words."""
    over = sum(r["over_budget"] for r in rows)
    pruned = sum(r["state"] == "PRUNED" and not r["over_budget"] for r in rows)
    running = sum(r["state"] == "RUNNING" for r in rows)
    stopped = sum(r["state"] == "FAIL" and bool(r["stopped"]) for r in rows)
    failed = sum(r["state"] == "FAIL" for r in rows) - stopped
    return (
        f"{len(rows)} trials: {len(finished(rows))} finished, {pruned} "
        f"pruned by the median rule, {over} over the budget (not trained)"
        + (f", {running} training or interrupted" if running else "")
        + (f", {stopped} stopped at a deadline (a lent machine's end)" if stopped else "")
        + (f", {failed} failed (their worker was stopped)" if failed else "")
    )


def _taken_line(study: str, found: list[dict[str, Any]]) -> str:
    """Which of a search's trials were registered and taken to final runs."""
    taken = [f for f in found if f["study"] == study]
    if not taken:
        return (
            f"Taken to final runs: none yet (`mnistlab register --study {study} --trial N --name NAME`, then "
            "`mnistlab reproduce --models NAME`)."
        )
    return (
        "Taken to final runs: "
        + ", ".join(
            f"trial {f['trial']} as `{f['name']}` ({f['params']:,} parameters; its final runs are in the table above)"
            for f in taken
        )
        + "."
    )


def trials_table(done: list[dict[str, Any]], front: list[dict[str, Any]]) -> str:
    """A search's 12 best finished trials: score, shape and drawn recipe, and whether each is on the front."""
    rows = []
    on_front = {r["trial"] for r in front}
    for r in sorted(done, key=lambda r: -r["score"])[:12]:
        drawn, arch = r["params_drawn"], r["arch"]
        shape = (
            f"{'-'.join(map(str, arch['stem']))} | {len(arch['body'])}x{arch['body'][0]} "
            f"{'sep' if arch['factored'] else 'full'}, {arch['padded']} padded"
        )
        rows.append(
            [
                r["trial"],
                f"{r['params']:,}",
                f"{r['score']:.2f}",
                ", ".join(f"{v:.2f}" for v in r["val_per_seed"] or []),
                shape,
                f"{drawn['lr']:.3f}",
                batch_size_of(drawn),
                drawn["ema"],
                f"{drawn['rotation']:.1f}°, {drawn['translate']:.2f}, {drawn['scale']:.2f}",
                "yes" if r["trial"] in on_front else "",
            ]
        )
    header = ["trial", "params", "worst seed (val, last epochs)", "per seed", "shape", "one-cycle peak"]
    return table([*header, "batch", "moving average", "rotation, shift, zoom", "on the front"], rows)


def stacked_section(three: list[RecordedRun], single_runs: list[RecordedRun]) -> str:
    """Model 8's final seeds trained stacked (``three``), beside the single runs recorded for them."""
    if not three:
        return ""
    singles = {r.summary["seed"]: r for r in single_runs}
    lines = [
        "## Stacked training beside single runs",
        "",
        "Model 8's final recipe with its three final seeds trained as one stacked network "
        "(`engine.fit_group`: each seed keeps its initial weights, batch order and augmentation; the loss is "
        "the sum of the three) on a GPU with the captured-graph step, beside the single runs of the same "
        "seeds recorded on the CPU. Not bit-identical (other kernels, another device), the same in "
        "distribution.",
        "",
    ]
    rows = []
    for run in three:
        seed = run.summary["seed"]
        single = singles.get(seed)
        rows.append(
            [
                seed,
                f"{', '.join(_pct(a) for a in single.last3)} ({single.summary['provenance']['device']})"
                if single
                else "-",
                f"{', '.join(_pct(a) for a in run.last3)} ({run.summary['provenance']['device']})",
                _pct(min(single.last3)) if single else "-",
                _pct(min(run.last3)),
            ]
        )
    header = ["seed", "single run (device): last-3 test", "stacked (device): last-3 test", "min single", "min stacked"]
    return "\n".join(lines) + "\n" + table(header, rows)


def hold_rate_groups(results: Path) -> list[RunGroup]:
    """The runs of each final recipe on many seeds: the folders ``<model>-<n>seeds`` under results/stacked/."""
    folders = [f for f in sorted((results / HOLD_RATES).glob("*-*seeds")) if any(f.glob("seed*/summary.json"))]
    return find_runs(folders) if folders else []  # in the order given: by folder name


def hold_rates_section(groups: list[RunGroup], results: Path, model_results: list[ModelResult]) -> str:
    """Each model's final recipe on many seeds (``hold_rate_groups``): on how many seeds it held, its mean and
    lowest epoch, beside the verdict of its final seeds (its role's count)."""
    if not groups:
        return ""
    finals = {r.card.name: r for r in model_results}
    lines = [
        "## Hold rates: the final recipes on many seeds",
        "",
        f"Three seeds can be lucky. Each row is one model's final recipe (all 60,000 training images) on many "
        f"seeds as one stacked network, tested at every epoch; 'held' counts the seeds with {TARGET}% or more in "
        "each of the last 3 epochs. Nothing is chosen from these runs.",
        "",
    ]
    rows = []
    for group in groups:
        first, worst, final = group.runs[0], group.lowest, finals.get(group.model)
        verdict = f"{final.held_count} of {len(final.runs)}" if final and final.runs else "-"
        where = first.summary["provenance"].get("gpu") or first.summary["provenance"]["machine"]
        if first.summary["provenance"].get("precision", "fp32") != "fp32":  # the fast path's runs say so
            where += f", {first.summary['provenance']['precision']}"
        rows.append(
            [
                f"`{Path(group.label).relative_to(results).as_posix()}`",
                f"`{group.model}`",
                f"{group.params:,}",
                len(first.config.get("teachers") or ()),
                len(group.runs),
                f"**{group.held_count} of {len(group.runs)}**",
                f"{mean(group.last3_all):.2f}",
                f"{min(worst.last3):.2f} ({worst.summary['seed']})",
                verdict,
                f"{where}, {_seconds(first.summary['wall_seconds'])}",
            ]
        )
    header = ["run", "model", "params", "teachers", "seeds", "held", "last-3 mean", "lowest epoch (seed)"]
    lines += table([*header, "final runs held", "where, time for all seeds"], rows).splitlines()
    lines += [
        "",
        "Made by `python benchmarks/gpu_session.py --only holdrates` on a lent GPU, or on any machine by "
        "`mnistlab train --model NAME --seeds 1,...,16 --val-size 0 --output-dir results/stacked/NAME-16seeds`.",
    ]
    return "\n".join(lines) + "\n"


def record_section(
    model_results: list[ModelResult],
    study_scores: dict[str, list[Candidate]],
    searches: Searches,
    teachers_of: dict[str, list[RecordedRun]],
) -> str:
    """The record in a few lines: what was tried on validation (studies and searches), and which models held
    on every seed; ``teachers_of``: each distilled model's teachers' runs (``teacher_runs``)."""
    lines = [
        "## The record: 99.4% with as few parameters as possible",
        "",
        f"Goal: at most {RECORD_BUDGET:,} parameters, {TARGET}% or more in each of the last 3 of 15 epochs on "
        "every seed of the final runs (at least 3), every choice made on the validation split (the studies "
        "below). No test-time "
        "augmentation is used anywhere: every test figure is one forward pass of the shipped weights.",
        "",
        "Tried on the validation split (each study's table below has every candidate):",
        "",
        *_tried(study_scores, searches),
        "",
        "Final runs (all 60,000 training images, test accuracy in the last 3 epochs):",
        "",
        *_finals(model_results, teachers_of),
        "",
        f"For scale: the smallest public model we know of to reach {TARGET}% has {PUBLIC_RECORD_PARAMS:,} parameters, on one run.",
    ]
    return "\n".join(lines) + "\n"


def _tried(study_scores: dict[str, list[Candidate]], searches: Searches) -> list[str]:
    """A line per record study (declared, or what it reached at best) and per search."""
    lines = []
    studies = {study.key: study for study in STUDIES}
    listed: set[str] = set()
    for key in RECORD_STUDIES:
        candidates = study_scores.get(key, [])
        if not candidates:  # declared before its runs: said, with the command that makes them
            study = studies[key]
            names = sorted({candidate_name(r) for r in study.runs})
            seeds = len({r.seed for r in study.runs})
            lines.append(
                f"- {study.title}: declared, not run yet ({', '.join(f'`{n}`' for n in names)} on {seeds} seeds; "
                f"`mnistlab reproduce --study {key}`)."
            )
            continue
        best = max(candidates, key=lambda c: c.score)  # by mean here: what each study reached at best
        pending = waiting(studies[key], candidates)
        if {c.name for c in candidates} <= listed:  # a later rule over the runs already listed
            pick = None if pending else chosen(studies[key], candidates)
            lines.append(
                f"- {studies[key].title}: the candidates above, by its own rule; "
                + (f"{len(pending)} of its candidates still to record." if pending else "")
                + (f"it chose `{pick.name}`." if pick else "" if pending else "none met it.")
            )
            continue
        listed |= {c.name for c in candidates}
        seeds = max(len(c.runs) for c in candidates)
        sizes = sorted({c.runs[0].summary["params"] for c in candidates})
        count = f"{len(candidates)} candidates" if len(candidates) > 1 else "1 candidate"
        size = f"{sizes[0]:,} to {sizes[-1]:,}" if len(sizes) > 1 else f"{sizes[0]:,}"
        lines.append(
            f"- {studies[key].title}: {count} of {size} parameters on {seeds} "
            f"seed{'s' if seeds > 1 else ''}; best `{best.name}` ({best.declared.why}), "
            f"validation mean {best.score:.2f}."
        )
    for _, study, rows in searches:
        done, top = finished(rows), best_row(rows)
        if top:
            budget = study.user_attrs.get("settings", {}).get("max_params")
            lines.append(
                f"- Search `{study.study_name}` (at most {budget:,} parameters): {len(rows)} trials, "
                f"{len(done)} finished; best trial {top['trial']} ({top['params']:,} parameters), worst "
                f"seed's validation mean {top['score']:.2f} (section Searches)."
            )
    return lines


def _finals(model_results: list[ModelResult], teachers_of: dict[str, list[RecordedRun]]) -> list[str]:
    """A line per record model's final runs, smallest first, then the smallest that held alone and taught."""
    by_name = {r.card.name: r for r in model_results}
    lines, held = [], []
    # the record's models and those taken from the searches, smallest first
    for name in sorted((n for n in list_models() if _role_of(n).record), key=lambda n: get_card(n).params):
        result = by_name.get(name)
        if result is None:  # a candidate that no study took to final runs
            continue
        if not result.runs:
            lines.append(f"- {name}: not run yet (`mnistlab reproduce --models {name}`).")
            continue
        teachers = f" Learning from {teachers_note(result, teachers_of[name])}." if result.card.recipe.teachers else ""
        lines.append(f"- {target_line(result)}{teachers}")
        if result.held and len(result.runs) >= 3:
            held.append(result)
    lines.append("")
    # two rows, plainly apart: what a model learns alone, and what it learns from bigger models
    for taught, kind in ((False, "without a teacher"), (True, "learning from teachers")):
        group = [r for r in held if bool(r.card.recipe.teachers) == taught]
        if not group:
            lines.append(f"- Smallest that held on every seed, {kind}: none yet.")
            continue
        smallest = min(group, key=lambda r: r.card.params)
        within = "within" if smallest.card.params <= RECORD_BUDGET else "above"
        line = (
            f"- Smallest that held on every seed, {kind}: **{smallest.card.title}** (`{smallest.card.name}`, "
            f"{smallest.card.params:,} parameters, {within} the {RECORD_BUDGET:,}-parameter budget; held on "
            f"{smallest.held_count} of {len(smallest.runs)} seeds, lowest epoch "
            f"{min(smallest.last3_all):.2f}; on more seeds, where measured: the hold rates below)"
        )
        if taught:
            line += f"; learning from {teachers_note(smallest, teachers_of[smallest.card.name])}"
        lines.append(line + ".")
    return lines


LADDER = (6_568, 3_762, 3_500, 3_000)  # the ladder's rungs: at most this many parameters (6,568: fewer than)


def front_section(model_results: list[ModelResult], study_scores: dict[str, list[Candidate]], figures: Figures) -> str:
    """The record's front, rung by rung: the best declared candidate on validation with and without teachers at
    each budget, and the final seeds that held of the models taken to final runs; a figure of held seeds against
    parameters."""
    candidates = {c.name: c for key in RECORD_STUDIES for c in study_scores.get(key, [])}
    finals = [r for r in model_results if r.runs and _role_of(r.card.name).record]
    if not candidates and not finals:
        return ""
    lines = [
        "## The ladder: the front at each budget",
        "",
        "Each rung is a budget of parameters (the first: fewer than SepNet 6.5k's 6,568, the smallest that held); "
        "per rung the best candidate declared in a study, by its validation mean over seeds of the last 3 epochs, "
        "alone and learning from teachers, and the models taken to final runs with the seeds that held "
        f"{TARGET}% in each of the last 3 epochs. The smallest public model known: {PUBLIC_RECORD_PARAMS:,} "
        "parameters, on one run.",
        "",
    ]
    rows = []
    for budget in LADDER:

        def within(params: int, budget: int = budget) -> bool:
            return params < budget if budget == LADDER[0] else params <= budget

        cells = []
        for taught in (False, True):
            fits = [
                c
                for c in candidates.values()
                if within(c.runs[0].summary["params"]) and bool(c.runs[0].config.get("teachers")) == taught
            ]
            best = max(fits, key=lambda c: c.score, default=None)
            cells.append(
                f"`{best.name}` ({best.runs[0].summary['params']:,}): {best.score:.3f} on {len(best.runs)} seeds"
                if best
                else "-"
            )
        taken = [r for r in finals if within(r.card.params)]
        held = "; ".join(
            f"`{r.card.name}` {r.held_count} of {len(r.runs)} ({min(r.last3_all):.2f})"
            for r in sorted(taken, key=lambda r: r.card.params)
        )
        rows.append([f"{budget:,}", *cells, held or "-"])
    header = ["at most", "best without teachers (validation mean)", "best with teachers (validation mean)"]
    lines += table([*header, "final runs: held (lowest epoch)"], rows).splitlines()
    points = [(r.card.name, r.card.params, r.held_count, len(r.runs)) for r in finals]
    if points:
        link = figures.link(
            "ladder-held.png", lambda path: plot_held_against_params(points, PUBLIC_RECORD_PARAMS, path)
        )
        lines += ["", f"![final seeds that held against parameters]({link})"]
    return "\n".join(lines) + "\n"


def teacher_section(teachers: list[tuple[Run, RecordedRun]]) -> str:
    """The teacher set's own runs: each teacher's validation and test accuracy at its last epochs (nothing is
    chosen from them) and what it cost."""
    if not teachers:
        return ""
    lines = [
        "## The teachers",
        "",
        "Declared in the ledger (`TEACHER_SET`) before they ran; the 55,000-image runs teach validation studies "
        "(they never saw the 5,000 images that judge a student), the 60,000-image runs final runs.",
        "",
    ]
    rows = [
        [
            f"`{run.folder}`",
            run.seed,
            f"{recorded.summary['params']:,}",
            f"{recorded.summary['data']['train']:,}",
            ", ".join(_pct(h["val_acc"]) for h in recorded.history[-3:] if h.get("val_acc") is not None) or "-",
            ", ".join(_pct(a) for a in recorded.last3),
            "yes" if recorded.held else "no",
            _seconds(recorded.summary["train_seconds"]),
        ]
        for run, recorded in teachers
    ]
    header = ["run", "seed", "params", "images", "last-3 validation", "last-3 test", "held 99.4%", "time"]
    return "\n".join(lines) + "\n" + table(header, rows)


def teacher_runs(result: ModelResult) -> list[RecordedRun]:
    """The recorded runs of the teachers a distilled model's first run learned from (those still recorded)."""
    if not result.runs:
        return []
    found = (
        read_run(recorded_path(result.runs[0], path).parent) for path in result.runs[0].config.get("teachers") or ()
    )
    return [run for run in found if run is not None]


def teachers_note(result: ModelResult, teachers: list[RecordedRun]) -> str:
    """What a distilled model's teachers (``teacher_runs``) are: how many, their sizes and their own training time."""
    config = result.runs[0].config
    sizes: list[int] = []
    groups: set[tuple[Path, float]] = set()
    for run in teachers:
        sizes.append(run.summary["params"])
        # seeds trained stacked share one process: their group's time is counted once
        stacked = (run.summary["provenance"].get("stacked") or 1) > 1
        groups.add((run.path.parent if stacked else run.path, run.summary["train_seconds"]))
    settings = f"alpha {config['distill_alpha']}, T {config['distill_temperature']}"
    if not teachers:  # a results folder without the teachers' runs (a copy of some runs only)
        return f"{len(config.get('teachers') or ())} models (their runs are not in these results), {settings}"
    kinds = ", ".join(f"{sizes.count(p)} x {p:,}" for p in sorted(set(sizes)))
    seconds = sum(seconds for _, seconds in groups)
    return f"{len(sizes)} models ({kinds} parameters), trained for {_seconds(seconds)} in all, {settings}"


def recorded_path(run: RecordedRun, path: str) -> Path:
    """A path a run recorded in its config (a teacher's checkpoint), found from where the run is now: a relative
    one was relative to the folder the run was trained from, which its own recorded ``output_dir`` tells (so the
    report reads the same files from any working folder)."""
    recorded, out = Path(path), Path(run.config.get("output_dir") or "")
    here = run.path.resolve()
    if recorded.is_absolute() or out.is_absolute() or not out.parts or here.parts[-len(out.parts) :] != out.parts:
        return recorded
    return Path(*here.parts[: -len(out.parts)]) / recorded


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: Path, table: str) -> bool:
    """Put ``table`` between the README's results markers; False if the README has no markers."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    remove_litter(readme.parent, (readme.name,))  # what a report killed mid-write left
    atomic_write_text(readme, f"{head}{README_START}\n{table}{README_END}{tail}")
    return True


@dataclass(frozen=True)
class Collected:
    """Everything the report speaks of, read from ``results`` before a line of it is rendered."""

    results: Path
    models: list[ModelResult]  # the lab's models with their final runs (none yet: an empty list of runs)
    study_scores: dict[str, list[Candidate]]  # each study's candidates that have runs, by the study's key
    searches: Searches
    hold_rates: list[RunGroup]  # final recipes on many seeds (results/stacked/<model>-<n>seeds)
    stacked: list[RecordedRun]  # Model 8's final seeds trained stacked (results/stacked/model8)
    earlier: list[tuple[Run, RecordedRun]]  # replaced attempts, as the ledger declares them
    teachers: list[tuple[Run, RecordedRun]]  # the teacher set's runs
    taught: dict[str, list[RecordedRun]]  # each lab model's teachers' runs (none: an empty list)


def collect(results: Path) -> Collected:
    """Read every recorded run the report speaks of; one line, and nothing written, when there are none."""
    # the lab's models (a user's, registered from outside the package in this process, have their own runs)
    models = [ModelResult(get_card(n), model_runs(results, n)) for n in lab_models()]
    study_scores = {study.key: tuning_scores(results, study) for study in STUDIES}
    if not any(r.runs for r in models) and not any(study_scores.values()):
        raise MnistlabError(
            f"no recorded runs under {results}: nothing to report (`mnistlab reproduce --results {results}` records "
            "them); no file was written"
        )
    return Collected(
        results=results,
        models=models,
        study_scores=study_scores,
        searches=load_searches(results),
        hold_rates=hold_rate_groups(results),
        stacked=model_runs(results / HOLD_RATES, "model8"),
        earlier=recorded_runs(EARLIER, results),
        teachers=recorded_runs(TEACHER_SET, results),
        taught={r.card.name: teacher_runs(r) for r in models},
    )


INTRODUCTION = (
    "Written by `mnistlab report` from the runs recorded under `results/` (each made by `mnistlab reproduce`; "
    "each run folder holds its config, per-epoch history, summary with provenance, and checkpoints). "
    "Test accuracy is recorded every epoch but never used to choose anything: best checkpoints and "
    "hyper-parameters are chosen on a 5,000-image validation split carved from the training set. "
    "'Last-3' is the test accuracy in each of the last three epochs. Train times are wall-clock on the "
    "2-core machine named in each row, which was also used for development while some runs went on: "
    "controlled timings are in `benchmarks/`."
)
AGAINST_THE_REFERENCE = (
    "The reference is the ERA V2 session-7 student project this lab re-implements; its figure is the best "
    "test accuracy over its epochs (chosen on test), ours are the last epochs' over 3 seeds."
)
RF_CHECKED = (
    "Computed by `mnistlab.analysis.analyze` and checked in `tests/test_analysis.py` against an "
    "empirical measure (the non-zero input gradient of one output unit through positive weights)."
)


def render(lab: Collected, figures: Figures) -> str:
    """The report's markdown, from what ``collect`` read; the figures it links to are asked of ``figures``."""
    model_results, study_scores = lab.models, lab.study_scores
    by_name = {c.name: c.score for candidates in study_scores.values() for c in candidates}
    sections = [
        "\n".join(["# mnistlab report", "", INTRODUCTION, "", "## All models against the reference", ""]),
        AGAINST_THE_REFERENCE + "\n",
        comparison_table(model_results),
        record_section(model_results, study_scores, lab.searches, lab.taught),
        front_section(model_results, study_scores, figures),
        hold_rates_section(lab.hold_rates, lab.results, model_results),
        teacher_section(lab.teachers),
        *(tuning_section(study, study_scores[study.key], by_name) for study in STUDIES),
        searches_section(lab.searches, figures),
        stacked_section(lab.stacked, next((r.runs for r in model_results if r.card.name == "model8"), [])),
        earlier_section(lab.earlier),
    ]
    parts = [section for section in sections if section]
    wrong_tables: list[tuple[str, list[str]]] = []
    previous = None
    by_model = {r.card.name: r for r in model_results}
    for result in model_results:
        # a first design or a redesign is compared with its counterpart; the others with the model before them
        counterpart = by_model.get(_role_of(result.card.name).compared_with)
        lines, differences = model_section(result, counterpart or previous, figures)
        parts += lines
        if differences:
            wrong_tables.append((result.card.title, differences))
        if counterpart is None:
            previous = result
    parts += ["## Where the reference's receptive-field tables were wrong", ""]
    parts += [f"- **{title}**: " + "; ".join(differences) for title, differences in wrong_tables]
    parts += ["", RF_CHECKED, ""]
    return "\n".join(parts)


def model_section(result: ModelResult, against: ModelResult | None, figures: Figures) -> tuple[list[str], list[str]]:
    """A model's section (Target, Design, recipe, Results, Analysis, receptive field) as lines, and where the
    reference's hand-made receptive-field table differs from the computed one."""
    card = result.card
    table_ = analyze(create_model(card.name), name=card.name)
    lines = [f"## {card.title} (`{card.name}`)", "", "### Target", ""]
    lines += [f"- {t}" for t in card.target]
    lines += ["", "### Design", "", card.design, "", recipe_table(card), "### Results", ""]
    if result.runs:
        history = result.runs[0].history
        link = figures.link(f"{card.name}-curves.png", lambda path: plot_curves(history, path, title=card.title))
        lines += [results_table(result), f"![{card.title} curves]({link})", ""]
    lines += ["### Analysis", ""] + [f"- {s}" for s in analysis_sentences(result, against)] + [""]
    lines += ["### Receptive field (computed)", "", table_.render_markdown()]
    differences = rf_comparison(card, table_)
    if differences:
        lines += ["Where the reference's hand-made table differs:", ""] + [f"- {d}" for d in differences] + [""]
    return lines, differences


def write_report(results: Path = RESULTS, output: Path = Path("REPORT.md"), readme: Path | None = None) -> Path:
    """Write the report; with ``readme``, also refresh the comparison table in the README. Every run is read
    (``collect``) and the text rendered (``render``) before anything is written: then the figures, the README and
    the report, each file atomically."""
    results, output = results.resolve(), output.resolve()  # the same bytes from any working folder
    lab = collect(results)
    figures = Figures(results / "figures", output)
    text = render(lab, figures)
    figures.draw()
    if readme is not None:
        update_readme(readme, comparison_table(lab.models))
    remove_litter(output.parent, (output.name,))
    return atomic_write_text(output, text)


def _role_of(name: str) -> Role:
    """A model's part in the lab's studies; a model that is not the lab's has none (the default role's flags)."""
    return role(name) or Role()
