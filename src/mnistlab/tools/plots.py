"""Figures, drawn from recorded data: training curves, confusion matrix, misclassified digits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from mnistlab.core.rundir import TARGET, HistoryRow

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mnistlab.core.fileio import atomic_write  # noqa: E402


def _save(fig: Any, path: str | Path) -> Path:
    path = atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_curves(history: list[HistoryRow], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch for train, validation and test (as recorded)."""
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style in (("train", "-o"), ("val", "-s"), ("test", "-^")):
        if history and history[0].get(f"{split}_loss") is not None:
            loss_ax.plot(epochs, [h[f"{split}_loss"] for h in history], style, ms=3, label=split)
            acc_ax.plot(epochs, [h[f"{split}_acc"] for h in history], style, ms=3, label=split)
    acc_ax.axhline(TARGET, color="grey", ls="--", lw=0.8, label=f"{TARGET}%")
    loss_ax.set(xlabel="epoch", ylabel="loss", yscale="log", title=f"{title} loss".strip())
    top = max((h.get("test_acc") or 0) for h in history) if history else 100
    acc_ax.set(
        xlabel="epoch", ylabel="accuracy (%)", ylim=(min(98.0, top - 1), 100.0), title=f"{title} accuracy".strip()
    )
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion(confusion: np.ndarray, path: str | Path, title: str = "Confusion matrix") -> Path:
    fig, ax = plt.subplots(figsize=(6, 5.4))
    shown = confusion.astype(float).copy()
    np.fill_diagonal(shown, np.nan)  # the diagonal would swamp the colour scale
    image = ax.imshow(shown, cmap="Reds")
    for t in range(10):
        for p in range(10):
            ax.text(
                p,
                t,
                str(confusion[t, p]),
                ha="center",
                va="center",
                fontsize=7,
                color="black" if t != p else "tab:blue",
            )
    ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10), title=title)
    fig.colorbar(image, ax=ax, label="errors")
    return _save(fig, path)


def plot_misclassified(
    images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, path: str | Path, limit: int = 40
) -> Path:
    """A grid of misclassified digits, each titled true→predicted."""
    wrong = np.flatnonzero(predictions != labels)[:limit]
    cols = 10
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, wrong):
        ax.imshow(images[index], cmap="gray_r")
        ax.set_title(f"{labels[index]}→{predictions[index]}", fontsize=9)
    fig.suptitle(f"{len(np.flatnonzero(predictions != labels))} misclassified (first {len(wrong)} shown)")
    return _save(fig, path)


def plot_search(
    points: list[tuple[int, float]], front: list[tuple[int, float]], budget: int, path: str | Path, title: str = ""
) -> Path:
    """Each finished trial's parameters against its worst seed's validation mean, the front (the best score
    at or under each size) as a line, the budget and the target."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if points:
        ax.scatter([p for p, _ in points], [s for _, s in points], s=18, color="#7a8899", label="trials")
    if front:
        ax.plot([p for p, _ in front], [s for _, s in front], "-o", ms=5, color="#dc2828", label="front")
    ax.axhline(TARGET, color="grey", ls="--", lw=0.8, label=f"{TARGET}%")
    ax.axvline(budget, color="black", ls=":", lw=0.8, label=f"budget {budget:,}")
    ax.set(xlabel="parameters", ylabel="worst seed's validation mean, last epochs (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_seed_bands(groups: list[tuple[str, list[list[dict[str, Any]]]]], path: str | Path) -> Path:
    """Test accuracy per epoch for each group of runs: the mean over its seeds as a line, the lowest to the
    highest seed as a band."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    lowest = 100.0
    for label, histories in groups:
        epochs = min(len(h) for h in histories)
        values = np.array([[h[e]["test_acc"] for e in range(epochs)] for h in histories], dtype=float)
        x = np.arange(1, epochs + 1)
        (line,) = ax.plot(x, values.mean(0), "-o", ms=3, label=f"{label} ({len(histories)} seeds)")
        ax.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
        lowest = min(lowest, float(np.nanmin(values[:, epochs // 2 :])))
    ax.axhline(TARGET, color="grey", ls="--", lw=0.8, label=f"{TARGET}%")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(min(TARGET - 0.4, lowest - 0.2), 100.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_accuracy_against_params(points: list[tuple[str, int, float, float, float]], path: str | Path) -> Path:
    """Each model's mean test accuracy over its last epochs and seeds against its parameters (log scale), the
    whiskers from its lowest to its highest epoch."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, params, mean_acc, low, high in points:
        ax.errorbar([params], [mean_acc], yerr=[[mean_acc - low], [high - mean_acc]], fmt="o", capsize=3)
        ax.annotate(label, (params, mean_acc), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axhline(TARGET, color="grey", ls="--", lw=0.8, label=f"{TARGET}%")
    ax.set(xscale="log", xlabel="parameters", ylabel="test accuracy, last epochs (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_held_against_params(points: list[tuple[str, int, int, int]], public: int, path: str | Path) -> Path:
    """Each final model's seeds that held the target (as a share of its final seeds) against its parameters, the
    smallest public model's size marked."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    placed: list[tuple[int, float]] = []
    for label, params, held, seeds in sorted(points, key=lambda p: p[1]):
        share = held / seeds
        # labels of close points at the same height climb in steps instead of printing over each other
        level = sum(1 for x, y in placed if y == share and params < x * 1.3)
        placed.append((params, share))
        ax.scatter([params], [share], color="tab:green" if held == seeds else "tab:red")
        ax.annotate(
            f"{label} ({held}/{seeds})",
            (params, share),
            textcoords="offset points",
            xytext=(5, 4 + 11 * level),
            fontsize=8,
        )
    ax.axvline(public, color="grey", ls="--", lw=0.8, label=f"smallest public model, {public:,} (one run)")
    ax.set(xscale="log", xlabel="parameters", ylabel="final seeds that held 99.4% (share)", ylim=(-0.05, 1.1))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)
