"""The fast data path: each split held as one tensor, batches cut by index, augmentation per batch.

No Dataset, no DataLoader, no per-sample Python: an epoch of 60,000 images is a permutation and a few
hundred tensor slices. Batches depend only on (seed, epoch), so a resumed run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistlab.core.errors import MnistlabError
from mnistlab.data.augment import Augment, random_theta, theta_from_draws, warp
from mnistlab.data.mnist import TRAIN_MEAN, TRAIN_STD, load_mnist

VALIDATION_SPLIT_SEED = 20240  # fixed, so every training seed is selected on the same held-out images


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels to the network's input scale, ``(p - mean) / std`` with the training statistics."""
    return (pixels - TRAIN_MEAN) / TRAIN_STD


def _tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    # verified MNIST arrays are read-only views of the file's bytes; torch wants memory it may write
    return torch.from_numpy(np.array(array)) if isinstance(array, np.ndarray) else array


@dataclass(frozen=True)
class EpochPlan:
    """What a seed decides about one epoch: the order of the images and each one's affine warp."""

    order: torch.Tensor | None  # [N] int64: position i of the epoch shows image order[i]; None: in order
    theta: torch.Tensor | None  # [N, 2, 3]: the warp of position i; None: no augmentation


class TensorLoader:
    """Iterates (images, labels) batches of a split held in memory.

    images: uint8 [N, 28, 28]; yielded as float [B, 1, 28, 28], normalised; labels as int64 [B].
    ``stacked(seeds)`` yields the batches of several seeds side by side: [B, K, 28, 28] and [B, K].
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: Augment = Augment(),
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if batch_size <= 0:
            raise MnistlabError(f"batch size must be positive, got {batch_size}")
        self.pixels = (_tensor(images).to(device=device, dtype=torch.float32) / 255.0).unsqueeze(1)
        self.labels = _tensor(labels).to(device=device, dtype=torch.int64)
        # without augmentation a batch is a slice of pre-normalised images: no arithmetic per epoch
        self.inputs = None if augment.active else normalize(self.pixels)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration yields."""
        self.epoch = epoch

    def plan(self, seed: int, epoch: int) -> EpochPlan:
        """The epoch's order and warps for ``seed``, drawn on the CPU (they are the same on every device):
        the permutation, then each batch's five draws (``random_theta``) in batch order."""
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=generator) if self.shuffle else None
        if not self.augment.active:
            return EpochPlan(order, None)
        full, rest = divmod(n, self.batch_size)
        # each batch draws its own five sets (random_theta); one draw for all of them, re-cut per batch
        draws = torch.rand(full, 5, self.batch_size, generator=generator) * 2 - 1
        theta = [theta_from_draws(draws.transpose(0, 1).reshape(5, -1), self.augment)] if full else []
        if rest:
            theta.append(random_theta(rest, self.augment, generator))
        return EpochPlan(order, torch.cat(theta))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.stacked((self.seed,)):
            yield images, labels[:, 0]

    def stacked(self, seeds: tuple[int, ...]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches for each of ``seeds``, side by side: images [B, K, 28, 28], labels [B, K]."""
        plans = [self.plan(seed, self.epoch) for seed in seeds]
        device = self.labels.device
        n = len(self.labels)
        orders = None if plans[0].order is None else torch.stack([p.order for p in plans]).to(device)
        thetas = None if plans[0].theta is None else torch.stack([p.theta for p in plans]).to(device)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            index = slice(start, stop) if orders is None else orders[:, start:stop]  # [K, B]
            yield self.batch(index, None if thetas is None else thetas[:, start:stop], len(seeds))

    def batch(
        self, index: slice | torch.Tensor, theta: torch.Tensor | None, slots: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, K, 28, 28] and labels [B, K] of the ``index`` ([K, B] or one slice for all K slots)."""
        if isinstance(index, slice):
            if theta is None:  # the same images in every slot: a view, no copy
                images = self.pixels[index] if self.inputs is None else self.inputs[index]  # [B, 1, 28, 28]
                return images.expand(-1, slots, -1, -1), self.labels[index].unsqueeze(1).expand(-1, slots)
            index = torch.arange(index.start, index.stop, device=self.labels.device).expand(slots, -1)
        k, b = index.shape
        labels = self.labels[index].t()  # [B, K]
        if theta is None:
            return self.inputs[index].view(k, b, 28, 28).transpose(0, 1), labels
        warped = warp(self.pixels[index].view(k * b, 1, 28, 28), theta.reshape(k * b, 2, 3))
        return normalize(warped).view(k, b, 28, 28).transpose(0, 1), labels


@dataclass(frozen=True)
class Loaders:
    """The three splits; unpacks as ``train, test = loaders`` like the reference's API."""

    train: TensorLoader
    test: TensorLoader
    val: TensorLoader | None = None

    def __iter__(self) -> Iterator[TensorLoader]:
        return iter((self.train, self.test))


def get_dataloaders(
    batch_size: int = 128,
    *,
    test_batch_size: int = 1000,
    augment: Augment = Augment(),
    val_size: int = 0,
    seed: int = 1,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> Loaders:
    """Train, test and (with ``val_size`` > 0) validation loaders over verified MNIST.

    The validation images are carved from the training set by a fixed permutation and never trained on.
    ``limit`` keeps the first ``limit`` images of each split, for tiny runs.
    """
    if val_size < 0 or val_size >= 60_000:
        raise MnistlabError(f"validation size must be in [0, 60000), got {val_size}")
    if limit is not None and limit <= 0:
        raise MnistlabError(f"limit must be positive, got {limit}")
    train_images, train_labels = load_mnist("train", data_dir)
    test_images, test_labels = load_mnist("test", data_dir)
    return make_loaders(
        (train_images, train_labels),
        (test_images, test_labels),
        batch_size=batch_size,
        test_batch_size=test_batch_size,
        augment=augment,
        val_size=val_size,
        seed=seed,
        limit=limit,
        device=device,
    )


def make_loaders(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    batch_size: int,
    test_batch_size: int = 1000,
    augment: Augment = Augment(),
    val_size: int = 0,
    seed: int = 1,
    limit: int | None = None,
    device: str | torch.device = "cpu",
) -> Loaders:
    """Loaders over arrays already in memory (the real data, or tiny data a test made)."""
    images, labels = train
    val = None
    if val_size:
        held_out = np.random.default_rng(VALIDATION_SPLIT_SEED).permutation(len(labels))
        val_index, train_index = np.sort(held_out[:val_size]), np.sort(held_out[val_size:])
        val_images, val_labels = images[val_index][:limit], labels[val_index][:limit]
        val = TensorLoader(val_images, val_labels, test_batch_size, device=device)
        images, labels = images[train_index], labels[train_index]
    return Loaders(
        train=TensorLoader(
            images[:limit],
            labels[:limit],
            batch_size,
            shuffle=True,
            augment=augment,
            seed=seed,
            device=device,
        ),
        test=TensorLoader(test[0][:limit], test[1][:limit], test_batch_size, device=device),
        val=val,
    )
