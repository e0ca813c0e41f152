"""The teachers' outputs computed once: what frozen teachers say of a stacked group's batches depends only on
the images each seed sees in an epoch and on the teachers, so a study's candidates that share a recipe's data
path (seeds, batch size, augmentation, split) and its teachers share them.

One file per epoch, ``<cache>/<key>.pt``: the mean teacher probability at the temperature, [B, K, 10], for every
batch in order. The key is a sha256 of everything that decides those numbers (the teachers' sha256, the
temperature, the seeds, the epoch, batch size, augmentation, split and data, the device kind and torch); a file is
written atomically and checked against its key, the epoch's batches and the sha256 of its values when read, and a
damaged one is computed again. The targets are the same function of the same images as the step's own call (``TrainingState.losses``),
so a run that reads them computes, bit for bit, what a run that does not would.

With the recipe's ``teacher_view`` "clean" the teachers look at each training image as it is, once for the split:
``CleanTargets`` keeps one [N, 10] table (``<cache>/<key>.pt`` as well, keyed by the same things less the seeds,
epoch, batch size and augmentation) and every epoch's batch gathers its images' rows; with attention transfer,
``CleanMaps`` keeps the teachers' attention maps of the same images, which each batch warps by its own warps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab.core.config import TrainConfig
from mnistlab.core.fileio import atomic_write, remove_litter
from mnistlab.data.loader import TensorLoader, normalize
from mnistlab.training.attention import Attention, warp_maps
from mnistlab.training.step import Teachers

FORMAT = "mnistlab-teacher-outputs"
STALE = 3600.0  # seconds after which a temporary file in the cache is a killed run's, not a writer's in progress
VERSION = 2  # 2: each file carries the sha256 of its targets, checked when read


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
            **_teachers_identity(first, data, device),
            "seeds": [c.seed for c in configs],
            "batch_size": first.batch_size,
            "augment": asdict(first.augment),
        }
        self.hits = self.misses = 0

    def key(self, epoch: int) -> str:
        return _digest({**self.identity, "epoch": epoch})

    def targets(self, epoch: int, loader: TensorLoader, teachers: Teachers, device: torch.device) -> list[torch.Tensor]:
        """Epoch ``epoch``'s targets, one [B, K, 10] tensor per batch of ``loader`` (set to that epoch)."""
        key = self.key(epoch)
        path = self.folder / f"{key}.pt"
        sizes = _batch_sizes(len(loader.labels), loader.batch_size)
        stored = _read(path, key, lambda t: _is_epoch(t, sizes, len(self.identity["seeds"])))
        if stored is not None:
            self.hits += 1
            return [t.to(device) for t in stored]
        self.misses += 1
        seeds = tuple(self.identity["seeds"])
        computed = [teachers.probabilities(images.to(device)) for images, _ in loader.stacked(seeds)]
        targets = [t.cpu() for t in computed]
        payload = {"key": key, "targets": targets, "sha256": content_digest(targets)}
        atomic_write(path, lambda f: torch.save(payload, f))
        return computed


class CleanTargets:
    """The teachers' mean probability of every training image unwarped, [N, 10], computed once (or read from
    ``folder``) and gathered, per epoch, into the [B, K, 10] targets of the group's batches."""

    CHUNK = 1000  # images per teachers' call when the table is made: fixed, so the table is the same every time

    def __init__(self, folder: Path | None, configs: list[TrainConfig], data: str, device: torch.device) -> None:
        first = configs[0]
        self.folder = folder
        self.seeds = tuple(c.seed for c in configs)
        self.identity = {**_teachers_identity(first, data, device), "view": "clean"}
        self._table: torch.Tensor | None = None
        self.hits = self.misses = 0

    def key(self) -> str:
        return _digest(self.identity)

    def targets(self, epoch: int, loader: TensorLoader, teachers: Teachers, device: torch.device) -> list[torch.Tensor]:
        """Epoch ``epoch``'s targets, one [B, K, 10] tensor per batch of ``loader``, in the batches' order."""
        table = self.table(loader, teachers, device)
        n = loader.num_samples
        plans = [loader.plan(seed, epoch).order for seed in self.seeds]
        orders = torch.stack([torch.arange(n) if order is None else order for order in plans]).to(device)  # [K, N]
        size = loader.batch_size
        return [table[orders[:, start : start + size]].transpose(0, 1) for start in range(0, n, size)]  # [B, K, 10]

    def table(self, loader: TensorLoader, teachers: Teachers, device: torch.device) -> torch.Tensor:
        """The [N, 10] table of ``loader``'s images: made (or read) on the first call, then kept."""
        if self._table is not None:
            return self._table
        n, pixels = loader.num_samples, loader.pixels

        def make() -> torch.Tensor:
            chunks = [
                teachers.probabilities(normalize(pixels[start : start + self.CHUNK].to(device)))[:, 0]
                for start in range(0, n, self.CHUNK)
            ]  # each [C, 10]: the images as [C, 1, 28, 28], one slot
            return torch.cat(chunks)

        self._table, hit = _kept_table(self.folder, self.key(), lambda t: _is_table(t, n), make, device)
        self.hits, self.misses = self.hits + hit, self.misses + (not hit)
        return self._table


def _kept_table(
    folder: Path | None, key: str, whole: Callable[[object], bool], make: Callable[[], Any], device: torch.device
) -> tuple[Any, bool]:
    """A clean view's table (a tensor, or a list of them) under ``key``: read from ``folder`` when it holds it whole
    (True), or made by ``make`` and kept there (False)."""
    path = None if folder is None else folder / f"{key}.pt"
    stored = None if path is None else _read(path, key, whole)
    if stored is not None:
        return (stored.to(device) if torch.is_tensor(stored) else [t.to(device) for t in stored]), True
    made = make()
    if path is not None:
        kept = made.cpu() if torch.is_tensor(made) else [t.cpu() for t in made]
        payload = {"key": key, "targets": kept, "sha256": content_digest(kept)}
        atomic_write(path, lambda f: torch.save(payload, f))
    return made, False


def _teachers_identity(config: TrainConfig, data: str, device: torch.device) -> dict[str, Any]:
    """What decides the teachers' outputs in either view: the teachers, their temperature, the split and data, the
    device kind and torch."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "teachers": list(config.teacher_sha256),
        "temperature": config.distill_temperature,
        "val_size": config.val_size,
        "limit": config.limit,
        "data": data,
        "device": device.type,
        "torch": torch.__version__,
    }


def _digest(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _is_table(targets: object, images: int) -> bool:
    return torch.is_tensor(targets) and targets.shape == (images, 10) and bool(torch.isfinite(targets).all())


def _batch_sizes(images: int, batch_size: int) -> list[int]:
    full, rest = divmod(images, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def _is_epoch(targets: object, sizes: list[int], seeds: int) -> bool:
    """An epoch's targets for this group: a [B, K, 10] tensor per batch, B each batch's size and K the group's seeds
    (a file of another group's shape under this key, its digest recomputed, is not this group's)."""
    if not isinstance(targets, list) or len(targets) != len(sizes):
        return False
    return all(
        torch.is_tensor(t) and tuple(t.shape) == (b, seeds, 10) and bool(torch.isfinite(t).all())
        for t, b in zip(targets, sizes)
    )


def _read(path: Path, key: str, whole: Callable[[object], bool]) -> Any:
    """The stored targets if ``path`` holds this key's, whole (``whole`` says); None otherwise (absent, damaged,
    another's)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  a damaged file fails inside unpickling in many ways: computed again
        return None
    if not isinstance(payload, dict) or payload.get("key") != key:
        return None
    targets = payload.get("targets")
    if not whole(targets) or payload.get("sha256") != content_digest(targets):
        return None  # a flipped bit changes the numbers without breaking the file: its digest tells
    return targets


def content_digest(targets: torch.Tensor | list[torch.Tensor]) -> str:
    """The sha256 of the targets' values (shapes, dtypes and bytes), as written and as read back."""
    digest = hashlib.sha256()
    for t in targets if isinstance(targets, list) else [targets]:
        t = t.detach().cpu().contiguous()
        digest.update(f"{tuple(t.shape)} {t.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def cache_for(
    configs: list[TrainConfig],
    teachers: Teachers | None,
    data: tuple[tuple[np.ndarray, np.ndarray], ...] | None,
    device: torch.device,
    folder: Callable[[], Path],
) -> TeacherCache | CleanTargets | None:
    """Where the group's teacher targets come from: the clean view's table (kept in ``folder`` when the config
    keeps the cache on); the augmented view's cache, when on; None: the step asks the teachers itself."""
    if teachers is None:
        return None
    first = configs[0]
    kept = folder() if first.teacher_cache else None
    if kept is not None:
        remove_litter(kept, None, older_than=STALE)  # what a killed run left; never a live writer's
    if first.teacher_view == "clean":
        return CleanTargets(kept, configs, data_fingerprint(data), device)
    if kept is None or first.attention:  # attention transfer reads the teachers' maps of the same pass: live
        return None
    return TeacherCache(kept, configs, data_fingerprint(data), device)


class CleanMaps:
    """The clean view's attention maps (``training.attention``): the teachers' mean unit map of every training image
    unwarped at each compared block, one [N, H*W] table per block, computed once (or read from ``folder``); each
    epoch's batch gathers its images' rows and warps them by its own warps."""

    def __init__(
        self, folder: Path | None, configs: list[TrainConfig], attention: Attention, data: str, device: torch.device
    ) -> None:
        first = configs[0]
        self.folder = folder
        self.seeds = tuple(c.seed for c in configs)
        self.attention = attention
        pairs = [[p.size, p.stride, p.student, list(p.teachers)] for p in attention.pairs]
        self.identity = {**_teachers_identity(first, data, device), "view": "clean-maps", "pairs": pairs}
        self._tables: list[torch.Tensor] | None = None
        self.hits = self.misses = 0

    def epoch(
        self, epoch: int, loader: TensorLoader, teachers: Teachers, device: torch.device
    ) -> Callable[[int], list[torch.Tensor]]:
        """Batch ``index``'s target maps of epoch ``epoch`` ([B, K, H*W] per pair), made when the step asks."""
        tables = self.tables(loader, teachers, device)
        plans = [loader.plan(seed, epoch) for seed in self.seeds]
        n, size = loader.num_samples, loader.batch_size
        orders = torch.stack([torch.arange(n) if p.order is None else p.order for p in plans]).to(device)  # [K, N]
        thetas = None if plans[0].theta is None else torch.stack([p.theta for p in plans]).to(device)  # [K, N, 2, 3]

        def batch(index: int) -> list[torch.Tensor]:
            cut = slice(index * size, min((index + 1) * size, n))
            theta = None if thetas is None else thetas[:, cut]
            return [warp_maps(table[orders[:, cut]], theta, pair) for table, pair in zip(tables, self.attention.pairs)]

        return batch

    def tables(self, loader: TensorLoader, teachers: Teachers, device: torch.device) -> list[torch.Tensor]:
        """The [N, H*W] tables of ``loader``'s images: made (or read) on the first call, then kept."""
        if self._tables is not None:
            return self._tables
        n, sides, pixels = loader.num_samples, [p.size for p in self.attention.pairs], loader.pixels

        def make() -> list[torch.Tensor]:
            chunks = []
            for start in range(0, n, CleanTargets.CHUNK):
                images = normalize(pixels[start : start + CleanTargets.CHUNK].to(device))  # [C, 1, 28, 28]: one slot
                teachers.probabilities(images)
                chunks.append([m[:, 0] for m in self.attention.teachers.mean(len(images), 1)])
            return [torch.cat(parts) for parts in zip(*chunks)]

        key = _digest(self.identity)
        self._tables, hit = _kept_table(self.folder, key, lambda t: _are_maps(t, n, sides), make, device)
        self.hits, self.misses = self.hits + hit, self.misses + (not hit)
        return self._tables


def _are_maps(tables: object, images: int, sides: list[int]) -> bool:
    if not isinstance(tables, list) or len(tables) != len(sides):
        return False
    return all(
        torch.is_tensor(t) and t.shape == (images, s * s) and bool(torch.isfinite(t).all())
        for t, s in zip(tables, sides)
    )


def maps_for(
    configs: list[TrainConfig],
    teachers: Teachers | None,
    attention: Attention | None,
    data: tuple[tuple[np.ndarray, np.ndarray], ...] | None,
    device: torch.device,
    folder: Callable[[], Path],
) -> CleanMaps | None:
    """Where the group's attention targets come from: the clean view's tables (kept in ``folder`` when the config
    keeps the cache on); None: the teachers' pass over the student's own batch gives them (the augmented view)."""
    first = configs[0]
    if teachers is None or attention is None or first.teacher_view != "clean":
        return None
    return CleanMaps(folder() if first.teacher_cache else None, configs, attention, data_fingerprint(data), device)
