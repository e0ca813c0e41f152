"""Process-level settings that make small-CNN training faster on a CPU without changing what it computes."""

from __future__ import annotations

import ctypes
import sys

import torch

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_done = False


def keep_freed_memory() -> bool:
    """Stop glibc from handing large blocks back to the kernel after every use.

    Each training step frees and re-allocates activations of a few MB; by default glibc serves those with
    fresh mmap()s, so every step page-faults thousands of times (measured: ~3,400-5,000 minor faults per
    Model 8 step, ~8 with this). Returns whether the setting took effect (glibc on Linux only).
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = all(
        libc.mallopt(p, v) == 1 for p, v in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
    )
    _done = ok
    return ok


def configure(threads: int = 0) -> None:
    """Apply the process-wide CPU settings before training: allocator and thread count."""
    keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where autocast to it is fast; elsewhere it
    is emulated and slower than float32. Read from /proc/cpuinfo (Linux); False where it cannot be told."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: str) -> str:
    """A new run's precision: "auto" is bf16 on a CPU that computes it natively, fp32 anywhere else (a GPU runs the
    captured float32 step); "fp32" and "bf16" as asked."""
    if precision != "auto":
        return precision
    if device not in ("auto", "cpu"):
        return "fp32"
    accelerator = getattr(torch, "accelerator", None)
    if device == "auto" and accelerator is not None and accelerator.is_available():
        return "fp32"
    return "bf16" if native_bf16() else "fp32"
