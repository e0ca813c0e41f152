"""One training step, many ways: each of mnistlab's speed choices switched off (or an alternative on) alone.

Every variant runs in a fresh Python process, because the allocator setting, the thread count and oneDNN
are process-wide. Each one trains a model on real MNIST (rotation ±7°) for ``--steps`` timed steps after
a warm-up, and reports seconds per 60,000-image epoch and minor page faults per step. ``--profile``
prints the operators that take the time in the default configuration.

    python benchmarks/variants.py [--model model8] [--steps 60] [--output benchmarks/variants.json]
    python benchmarks/variants.py --profile

The rows of benchmarks/NOTES.md (2-9) come from this script; ``speed.py`` is the side-by-side benchmark.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

EPOCH_IMAGES = 60_000

# name -> (what it changes against the default, settings)
VARIANTS: dict[str, tuple[str, dict]] = {
    "default": ("mnistlab's settings: channels-last, mallopt, 2 threads, batch 128, no dropout", {}),
    "contiguous": ("weights and activations in the default (NCHW) memory format", {"channels_last": False}),
    "no-mallopt": ("glibc's default allocator thresholds", {"mallopt": False}),
    "dropout-torch": (
        "dropout 0.05 where the builder takes it, masks from torch's Bernoulli",
        {"dropout": "torch"},
    ),
    "dropout-numpy": (
        "dropout 0.05 where the builder takes it, masks from numpy (mnistlab's Dropout)",
        {"dropout": "numpy"},
    ),
    "compile": ("torch.compile (inductor); compile time reported apart", {"compile": True}),
    "batch256": ("batch 256 (a different recipe)", {"batch": 256}),
    "batch512": ("batch 512 (a different recipe)", {"batch": 512}),
    "no-onednn": ("oneDNN off: PyTorch's native convolution kernels", {"onednn": False}),
    "threads1": ("1 thread instead of 2", {"threads": 1}),
    "batch64": ("batch 64 (Model 8's recipe): the step `make train` takes", {"batch": 64}),
    "bf16-64": (
        "batch 64, bfloat16 autocast on the CPU (native where AVX-512 BF16 or AMX)",
        {"batch": 64, "bf16": True},
    ),
    "bf16": ("bfloat16 autocast on the CPU (native where AVX-512 BF16 or AMX)", {"bf16": True}),
}


def run_variant(model_name: str, steps: int, settings: dict) -> dict:
    """Time ``steps`` training steps in this process with ``settings`` applied; called in a child process."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from mnistlab.core import perf
    from mnistlab.data import Augment, TensorLoader, load_mnist
    from mnistlab.models import create_model

    if settings.get("mallopt", True):
        perf.keep_freed_memory()
    torch.set_num_threads(settings.get("threads", 2))
    torch.backends.mkldnn.enabled = settings.get("onednn", True)
    torch.manual_seed(0)
    dropout = settings.get("dropout")
    model = create_model(model_name, dropout=0.05) if dropout else create_model(model_name)
    if dropout == "torch":  # the same positions, PyTorch's own dropout
        for parent in model.modules():
            for key, child in parent.named_children():
                if type(child).__name__ == "Dropout" and type(child) is not nn.Dropout:
                    setattr(parent, key, nn.Dropout(child.p))
    if settings.get("channels_last", True):
        model = model.to(memory_format=torch.channels_last)
    batch = settings.get("batch", 128)
    warmup = 10
    images, labels = load_mnist("train")
    need = (steps + warmup) * batch
    loader = TensorLoader(images[:need], labels[:need], batch, shuffle=True, augment=Augment(rotation=7.0))
    forward = model
    compile_seconds = 0.0
    if settings.get("compile"):
        forward = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    start = faults = None
    for step, (x, y) in enumerate(loader):
        if step == warmup:
            start, faults = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        first = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(settings.get("bf16"))):
            out = forward(x)
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == 0 and settings.get("compile"):
            compile_seconds = time.perf_counter() - first
    assert start is not None and faults is not None
    seconds = time.perf_counter() - start
    return {
        "s_per_epoch": seconds / (steps * batch) * EPOCH_IMAGES,
        "faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps,
        "compile_seconds": compile_seconds,
    }


def profile(model_name: str, steps: int) -> None:
    """The default configuration's training step under torch.profiler: operators by self CPU time."""
    import torch
    import torch.nn.functional as F

    from mnistlab.core import perf
    from mnistlab.data import Augment, TensorLoader, load_mnist
    from mnistlab.models import create_model

    perf.keep_freed_memory()
    torch.set_num_threads(2)
    model = create_model(model_name).to(memory_format=torch.channels_last).train()
    images, labels = load_mnist("train")
    loader = TensorLoader(
        images[: 128 * (steps + 5)], labels[: 128 * (steps + 5)], 128, shuffle=True, augment=Augment(rotation=7.0)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = iter(loader)
    for _ in range(5):
        x, y = next(batches)
        F.cross_entropy(model(x), y).backward()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def markdown(rows: list[dict]) -> str:
    """The variants as a table, each against the default configuration of the same run."""
    base = next((r["s_per_epoch"] for r in rows if r["variant"] == "default"), None)
    lines = [
        "| variant | what changes | s per 60k-image epoch (median) | vs default | minor faults/step |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['s_per_epoch'] / base:.2f}x" if base else "-"
        compile_note = f" (+{r['compile_seconds']:.0f} s compile)" if r["compile_seconds"] else ""
        lines.append(
            f"| `{r['variant']}` | {r['what']} | {r['s_per_epoch']:.1f}{compile_note} | {ratio} | "
            f"{r['faults_per_step']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="model8")
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per variant")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; the median is reported")
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/variants.json"))
    parser.add_argument("--profile", action="store_true", help="profile the default step and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a variant's settings, run in this process
    args = parser.parse_args()

    if args.child is not None:
        print(json.dumps(run_variant(args.model, args.steps, json.loads(args.child))))
        return
    if args.profile:
        profile(args.model, args.steps)
        return

    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    rows = []
    print(f"{args.model}, {args.steps} timed steps, median of {args.repeats} fresh processes per variant")
    print(f"{'variant':<14} {'s/epoch':>8} {'faults/step':>12}  what")
    for name in names:
        what, settings = VARIANTS[name]
        runs = []
        for _ in range(args.repeats):
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--model",
                    args.model,
                    "--steps",
                    str(args.steps),
                    "--child",
                    json.dumps(settings),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
        runs.sort(key=lambda r: r["s_per_epoch"])
        median = runs[len(runs) // 2]
        row = {"variant": name, "what": what, **median, "all_s_per_epoch": [r["s_per_epoch"] for r in runs]}
        rows.append(row)
        extra = f" (+{median['compile_seconds']:.0f} s compile)" if median["compile_seconds"] else ""
        print(f"{name:<14} {median['s_per_epoch']:>8.1f} {median['faults_per_step']:>12.0f}  {what}{extra}")

    import torch

    from mnistlab.core.fileio import atomic_write_json
    from mnistlab.training.engine import provenance

    atomic_write_json(
        args.output,
        {
            "model": args.model,
            "steps": args.steps,
            "repeats": args.repeats,
            "variants": rows,
            "provenance": provenance(torch.device("cpu")),
        },
    )
    print("\nas markdown (benchmarks/NOTES.md):\n")
    print(markdown(rows))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
