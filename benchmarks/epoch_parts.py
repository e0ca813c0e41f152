"""Where one epoch of the main job goes, and which fast path pays, measured so that the machine's own drift cancels.

    python benchmarks/epoch_parts.py [--threads 2] [--rounds 12] [--chunk 40] [--output benchmarks/epoch_parts.json]

Model 8's final recipe on all 60,000 images (as `make train`), through the engine's own pieces:

1. the data path alone (batches and their warps), and one training step cut into its parts (forward, loss,
   zero_grad, backward, optimizer, schedule, accuracy), as the median over the timed batches;
2. the same step in fp32, bf16 autocast, torch.compile and both, each its own network, timed **interleaved**:
   ``--rounds`` rounds of ``--chunk`` batches, every variant once per round, so a slow minute of this shared machine
   slows all of them alike (timed one after another, the same step read 10.9-16.6 s an epoch within minutes);
3. the test pass.

Seconds are per 60,000-image epoch. Run it on an idle machine: any second process doubles the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

from mnistlab.core import perf
from mnistlab.models import config_for
from mnistlab.training.engine import _loaders, build_stacked, provenance
from mnistlab.training.step import TrainingState, evaluate_slots, train_one_epoch

WARMUP = 30  # batches before timing (oneDNN's primitives, the compile)
VARIANTS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "compile": ("fp32", True), "compile-bf16": ("bf16", True)}


def step_parts(state: TrainingState, batches: list) -> dict[str, float]:
    """The median milliseconds of each part of the engine's training step (``step.train_one_epoch``'s body)."""
    parts: dict[str, list[float]] = {
        k: [] for k in ("forward", "loss", "zero_grad", "backward", "optimizer", "schedule")
    }
    model = state.model
    model.train()
    for images, labels in batches:
        marks = [time.perf_counter()]
        log_probs = model(images).float()
        marks.append(time.perf_counter())
        losses = state.losses(images, log_probs, labels)
        marks.append(time.perf_counter())
        state.optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        losses.sum().backward()
        marks.append(time.perf_counter())
        state.optimizer.step()
        marks.append(time.perf_counter())
        state.after_batch()
        marks.append(time.perf_counter())
        for values, start, end in zip(parts.values(), marks, marks[1:]):
            values.append(end - start)
    return {key: round(statistics.median(values) * 1e3, 3) for key, values in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12, help="rounds of the interleaved comparison")
    parser.add_argument("--chunk", type=int, default=40, help="batches per variant per round")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    perf.configure(args.threads)
    device = torch.device("cpu")
    config = config_for("model8", val_size=0, device="cpu", threads=args.threads)
    loaders = _loaders(config, device, None)
    epoch = len(loaders.train)  # batches per epoch
    loaders.train.set_epoch(1)
    needed = WARMUP + args.rounds * args.chunk
    start = time.perf_counter()
    batches = list(itertools.islice(loaders.train.stacked((1,)), needed))
    data = (time.perf_counter() - start) / len(batches) * epoch
    print(f"{provenance(device)['machine']}, {torch.get_num_threads()} threads, native bf16: {perf.native_bf16()}")
    print(f"data path: {data:.2f} s an epoch")

    state = TrainingState.create(build_stacked([config], device), config, epoch)
    train_one_epoch(state, batches[:WARMUP], device=device)
    parts = step_parts(state, batches[WARMUP:])
    print("one fp32 step, median ms: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))

    runs = {}
    for name in args.variants.split(","):
        precision, compiled = VARIANTS[name]
        run = dataclasses.replace(config, precision=precision)
        variant = TrainingState.create(build_stacked([run], device), run, epoch)
        forward = torch.compile(variant.model) if compiled else None
        start = time.perf_counter()
        train_one_epoch(variant, batches[:WARMUP], device=device, forward=forward)
        runs[name] = (variant, forward, [], time.perf_counter() - start)
    for r in range(args.rounds):
        chunk = batches[WARMUP + r * args.chunk : WARMUP + (r + 1) * args.chunk]
        for variant, forward, times, _ in runs.values():
            start = time.perf_counter()
            train_one_epoch(variant, chunk, device=device, forward=forward)
            times.append((time.perf_counter() - start) / len(chunk) * epoch)
    interleaved = {}
    for name, (_, _, times, warmup) in runs.items():
        interleaved[name] = {
            "median": round(statistics.median(times), 2),
            "min": round(min(times), 2),
            "max": round(max(times), 2),
            "warmup_s": round(warmup, 1),
        }
        print(
            f"{name:<13} median {statistics.median(times):5.2f} s an epoch (rounds {min(times):.2f}-{max(times):.2f}; "
            f"first {WARMUP} batches {warmup:.1f} s)"
        )
    start = time.perf_counter()
    evaluate_slots(state.scored, loaders.test, device=device)
    test = time.perf_counter() - start
    print(f"test pass: {test:.2f} s")
    if args.output:
        record = {
            "provenance": provenance(device),
            "threads": torch.get_num_threads(),
            "data_s": round(data, 2),
            "step_ms": parts,
            "interleaved_s_per_epoch": interleaved,
            "test_s": round(test, 2),
            "rounds": args.rounds,
            "chunk": args.chunk,
        }
        args.output.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
