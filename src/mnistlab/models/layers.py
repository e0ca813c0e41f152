"""Layers shared by the zoo."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Dropout(nn.Dropout):
    """Element-wise dropout, as ``nn.Dropout``; on the CPU its mask comes from numpy's PCG64.

    PyTorch's CPU Bernoulli sampler (Mersenne Twister, one draw per element) was measured at ~40% of a
    Model 8 training step. Here one 64-bit draw gives four 16-bit lanes, each kept when it is at or above
    p * 65536: the keep probability is exact to 1/65536. The generator is seeded from torch's own RNG at every
    call, so ``torch.manual_seed`` makes the masks reproducible exactly as with ``nn.Dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training, self.inplace)
        seed = int(torch.randint(0, 2**63 - 1, (1,)).item())
        lanes = -(-x.numel() // 4)
        bits = np.random.default_rng(seed).integers(0, 2**64 - 1, lanes, dtype=np.uint64, endpoint=True)
        threshold = -32768 + round(self.p * 65536)
        keep = torch.from_numpy(bits.view(np.int16)[: x.numel()] >= threshold)
        # the mask follows x's memory layout, so channels-last activations stay channels-last
        keep = (
            keep.view(x.permute(0, 2, 3, 1).shape).permute(0, 3, 1, 2)
            if _channels_last(x)
            else keep.view(x.shape)
        )
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), 0.0)


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
