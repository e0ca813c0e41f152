"""TensorBoard event files, for those who read training there (``train --tensorboard DIR``): each run's epoch
rows as ``fit_group`` saves them, under ``DIR/<model>-seed<k>``. TensorBoard is an optional extra."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnistlab.core.config import TrainConfig
from mnistlab.core.errors import MnistlabError

INSTALL = "TensorBoard is not installed: pip install 'mnistlab[tensorboard]'"
SCALARS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr")


def tensorboard_logger(
    folder: str | Path, configs: list[TrainConfig]
) -> Callable[[int, list[list[dict[str, Any]]]], None]:
    """An ``after_epoch`` callback for ``fit_group`` that writes each run's latest epoch as scalars."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
    except ImportError:
        raise MnistlabError(INSTALL) from None
    writers = [SummaryWriter(str(Path(folder) / f"{c.model}-seed{c.seed}")) for c in configs]

    def log(epoch: int, histories: list[list[dict[str, Any]]]) -> None:
        for writer, history in zip(writers, histories):
            row = history[-1]
            for key in SCALARS:
                if row.get(key) is not None:
                    writer.add_scalar(key.replace("_", "/", 1) if key != "lr" else key, row[key], epoch)
            writer.flush()

    return log
