"""The teachers' outputs computed once: what frozen teachers say of a stacked group's batches depends only on
the images each seed sees in an epoch and on the teachers, so a study's candidates that share a recipe's data
path (seeds, batch size, augmentation, split) and its teachers share them.

One file per epoch, ``<cache>/<key>.pt``: the mean teacher probability at the temperature, [B, K, 10], for every
batch in order. The key is a sha256 of everything that decides those numbers (the teachers' sha256, the
temperature, the seeds, the epoch, batch size, augmentation, split and data, the device kind and torch); a file is
written atomically and checked against its key and the epoch's batches when read, and a damaged one is computed
again. The targets are the same function of the same images as the step's own call (``TrainingState.losses``),
so a run that reads them computes, bit for bit, what a run that does not would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mnistlab.core.config import TrainConfig
from mnistlab.core.fileio import atomic_write
from mnistlab.data.loader import TensorLoader
from mnistlab.training.step import Teachers

FORMAT = "mnistlab-teacher-outputs"
VERSION = 1


def data_fingerprint(data: tuple[tuple[np.ndarray, np.ndarray], ...] | None) -> str:
    """What the images are: the verified MNIST files (their sha256 are fixed), or a hash of in-memory arrays."""
    if data is None:
        return "mnist"
    digest = hashlib.sha256()
    for images, labels in data:
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


class TeacherCache:
    """The epochs' teacher targets of one stacked group, read from ``folder`` or computed and kept there."""

    def __init__(self, folder: Path, configs: list[TrainConfig], data: str, device: torch.device) -> None:
        first = configs[0]
        self.folder = folder
        self.identity = {
            "format": FORMAT,
            "version": VERSION,
            "teachers": list(first.teacher_sha256),
            "temperature": first.distill_temperature,
            "seeds": [c.seed for c in configs],
            "batch_size": first.batch_size,
            "augment": asdict(first.augment),
            "val_size": first.val_size,
            "limit": first.limit,
            "data": data,
            "device": device.type,
            "torch": torch.__version__,
        }
        self.hits = self.misses = 0

    def key(self, epoch: int) -> str:
        text = json.dumps({**self.identity, "epoch": epoch}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def targets(self, epoch: int, loader: TensorLoader, teachers: Teachers, device: torch.device) -> list[torch.Tensor]:
        """Epoch ``epoch``'s targets, one [B, K, 10] tensor per batch of ``loader`` (set to that epoch)."""
        key = self.key(epoch)
        path = self.folder / f"{key}.pt"
        stored = _read(path, key, len(loader))
        if stored is not None:
            self.hits += 1
            return [t.to(device) for t in stored]
        self.misses += 1
        seeds = tuple(self.identity["seeds"])
        computed = [teachers.probabilities(images.to(device)) for images, _ in loader.stacked(seeds)]
        payload = {"key": key, "targets": [t.cpu() for t in computed]}
        atomic_write(path, lambda f: torch.save(payload, f))
        return computed


def _read(path: Path, key: str, batches: int) -> list[torch.Tensor] | None:
    """The stored targets if ``path`` holds this key's, whole; None otherwise (absent, damaged, another's)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  a damaged file fails inside unpickling in many ways: computed again
        return None
    targets = payload.get("targets") if isinstance(payload, dict) else None
    if payload.get("key") != key or not isinstance(targets, list) or len(targets) != batches:
        return None
    if not all(torch.is_tensor(t) and t.dim() == 3 and bool(torch.isfinite(t).all()) for t in targets):
        return None
    return targets


def cache_for(
    configs: list[TrainConfig],
    teachers: Teachers | None,
    data: tuple[tuple[np.ndarray, np.ndarray], ...] | None,
    device: torch.device,
    folder: Callable[[], Path],
) -> TeacherCache | None:
    """The group's cache, where it learns from teachers and its config keeps the cache on (None otherwise)."""
    if teachers is None or not configs[0].teacher_cache:
        return None
    return TeacherCache(folder(), configs, data_fingerprint(data), device)
