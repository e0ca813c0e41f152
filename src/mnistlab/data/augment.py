"""Batched augmentation: one affine warp per batch as tensor operations, no Python work per image."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mnistlab.errors import MnistlabError


@dataclass(frozen=True)
class Augment:
    """Random affine augmentation; every range is symmetric around the identity. All zero: off."""

    rotation: float = 0.0  # degrees: angle drawn from U(-rotation, rotation)
    translate: float = 0.0  # fraction of the image size, in x and y independently
    scale: float = 0.0  # zoom factor drawn from U(1 - scale, 1 + scale)
    shear: float = 0.0  # degrees, along x

    def __post_init__(self) -> None:
        for name, low, high in (
            ("rotation", 0, 180),
            ("translate", 0, 0.5),
            ("scale", 0, 0.9),
            ("shear", 0, 60),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                raise MnistlabError(f"augmentation {name}={value} is out of range [{low}, {high}]")

    @property
    def active(self) -> bool:
        return any((self.rotation, self.translate, self.scale, self.shear))


def random_affine(images: torch.Tensor, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """Warp each image of a [B, C, H, W] batch by its own random affine map (bilinear, zero fill).

    Values outside the image are 0, so call this on pixels in [0, 1] before normalising.
    """
    batch = images.shape[0]

    def uniform(half_width: float) -> torch.Tensor:
        return (torch.rand(batch, generator=generator) * 2 - 1) * half_width

    angle = uniform(math.radians(augment.rotation))
    shear = uniform(math.radians(augment.shear))
    zoom = 1 + uniform(augment.scale)
    shift = torch.stack(
        [uniform(2 * augment.translate), uniform(2 * augment.translate)], dim=1
    )  # [-1, 1] units
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # forward map: rotate @ shear @ zoom; affine_grid wants the inverse (output pixel -> input pixel)
    forward = torch.stack(
        [
            torch.stack([cos * zoom, (cos * tan - sin) * zoom], dim=1),
            torch.stack([sin * zoom, (sin * tan + cos) * zoom], dim=1),
        ],
        dim=1,
    )  # (B, 2, 2)
    inverse = torch.linalg.inv(forward)
    theta = torch.cat([inverse, -(inverse @ shift.unsqueeze(2))], dim=2).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
