"""Evaluating a checkpoint on the official test set: accuracy, per-class accuracy, confusion, mistakes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistlab.data.loader import TensorLoader
from mnistlab.data.mnist import load_mnist
from mnistlab.models.checkpoint import load_checkpoint
from mnistlab.training.step import evaluate


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # percent
    loss: float
    per_class: tuple[float, ...]  # percent correct for digits 0..9
    confusion: np.ndarray  # [10, 10] counts: row = true digit, column = predicted
    predictions: np.ndarray  # [N]
    labels: np.ndarray  # [N]
    written: tuple[Path, ...] = ()  # the figures and evaluation.json, when asked for (``mnistlab.evaluate``)

    def __str__(self) -> str:  # print(evaluate(run)): accuracy, per digit, confusion
        return summary_lines(self)

    @property
    def mistakes(self) -> np.ndarray:
        return np.flatnonzero(self.predictions != self.labels)

    def to_dict(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "errors": int(len(self.mistakes)),
            "per_class": list(self.per_class),
            "confusion": self.confusion.tolist(),
        }


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = 10) -> np.ndarray:
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)


def evaluate_model(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> EvalResult:
    metrics = evaluate(model, TensorLoader(images, labels, 1000), keep_predictions=True)
    predictions = metrics["predictions"].numpy()
    confusion = confusion_matrix(labels, predictions)
    per_class = tuple(100.0 * confusion[d, d] / max(confusion[d].sum(), 1) for d in range(10))
    return EvalResult(metrics["acc"], metrics["loss"], per_class, confusion, predictions, labels)


def evaluate_checkpoint(path: str | Path, data_dir: str | Path | None = None) -> EvalResult:
    images, labels = load_mnist("test", data_dir)
    return evaluate_model(load_checkpoint(path), images, labels)


def summary_lines(result: EvalResult) -> str:
    """What ``mnistlab evaluate`` prints: accuracy and errors, per-digit accuracy, the confusion matrix."""
    return "\n".join(
        [
            f"test accuracy {result.accuracy:.2f}% ({len(result.mistakes)} errors of {len(result.labels)}), "
            f"loss {result.loss:.4f}",
            "per class: " + "  ".join(f"{d}:{a:.2f}" for d, a in enumerate(result.per_class)),
            render_confusion(result.confusion),
        ]
    )


def render_confusion(confusion: np.ndarray) -> str:
    head = "true\\pred " + " ".join(f"{d:>5}" for d in range(10))
    lines = [head] + [f"{t:>9} " + " ".join(f"{v:>5}" for v in row) for t, row in enumerate(confusion)]
    return "\n".join(lines)
