"""Batched augmentation: one affine warp per batch as tensor operations, no Python work per image.

The ranges (``Augment``) are configuration and live in ``config``; this module draws and applies them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mnistlab.core.config import Augment


def random_affine(images: torch.Tensor, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """Warp each image of a [B, C, H, W] batch by its own random affine map (bilinear, zero fill).

    Values outside the image are 0, so call this on pixels in [0, 1] before normalising.
    """
    return warp(images, random_theta(len(images), augment, generator))


def random_theta(count: int, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """``count`` random affine maps, as ``affine_grid``'s [count, 2, 3] matrices (output pixel -> input).

    Five draws of ``count`` numbers each, in the order angle, shear, zoom, shift x, shift y; a run draws
    one such set per batch. The CPU generator's stream does not depend on how it is cut, so one call for
    many batches gives each batch what its own call would have given.
    """
    return theta_from_draws(torch.rand(5, count, generator=generator) * 2 - 1, augment)


def theta_from_draws(draws: torch.Tensor, augment: Augment) -> torch.Tensor:
    """The maps of [5, N] uniform draws in [-1, 1] (angle, shear, zoom, shift x, shift y), scaled by ``augment``."""
    angle, shear, zoom, shift_x, shift_y = draws.unbind(0)
    return affine_theta(
        angle * math.radians(augment.rotation),
        shear * math.radians(augment.shear),
        1 + zoom * augment.scale,
        torch.stack([shift_x, shift_y], dim=1) * (2 * augment.translate),  # [-1, 1] units
    )


def affine_theta(angle: torch.Tensor, shear: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The inverse maps ([N, 2, 3]) of rotate @ shear @ zoom, then shift; angles in radians, shift [N, 2]."""
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    forward = torch.stack(
        [
            torch.stack([cos * zoom, (cos * tan - sin) * zoom], dim=1),
            torch.stack([sin * zoom, (sin * tan + cos) * zoom], dim=1),
        ],
        dim=1,
    )  # (N, 2, 2)
    inverse = torch.linalg.inv(forward)
    return torch.cat([inverse, -(inverse @ shift.unsqueeze(2))], dim=2)


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample each image of [B, C, H, W] through its matrix of ``theta`` [B, 2, 3] (bilinear, zero fill)."""
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
