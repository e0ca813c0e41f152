"""Several seeds on the CPU: one stacked network against independent one-thread processes, side by side.

    python benchmarks/stacking.py [--model model8] [--steps 60] [--output benchmarks/stacking.json]

Each variant trains Model 8's recipe (batch 64, rotation, shifts, zoom, SGD) on real MNIST for ``--steps``
steps after a warm-up, and reports model-images per second (images x seeds). ``processes`` runs one model
per process, as many processes as cores, each with one thread (how `reproduce --workers 2 --threads 1`
trains); ``stacked K`` trains K seeds as one network in one process with every core. ``reproduce`` stacks
by default only where this measures faster (see NOTES.md). GPU rows come from ``gpu_session.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from pathlib import Path

import torch

from mnistlab.core import perf
from mnistlab.core.fileio import atomic_write_json
from mnistlab.data import load_mnist
from mnistlab.data.loader import TensorLoader
from mnistlab.models import config_for
from mnistlab.training.engine import build_stacked
from mnistlab.training.step import TrainingState, make_optimizer, train_one_epoch


def images_per_second(model_name: str, seeds: tuple[int, ...], steps: int, threads: int, warmup: int = 5) -> float:
    """Model-images per second of ``seeds`` trained as one stacked network on ``threads`` threads."""
    perf.configure(threads)
    config = config_for(model_name, device="cpu", val_size=0)
    images, labels = load_mnist("train")
    batch = config.batch_size
    count = (steps + warmup) * batch
    loader = TensorLoader(images[:count], labels[:count], batch, shuffle=True, augment=config.augment, seed=1)
    model = build_stacked([config_for(model_name, seed=s, device="cpu") for s in seeds], torch.device("cpu"))
    state = TrainingState(model, make_optimizer(model, config), None, None, "none")  # the step alone, no schedule
    loader.set_epoch(1)
    batches = iter(loader.stacked(seeds))
    train_one_epoch(state, [next(batches) for _ in range(warmup)])
    timed = [next(batches) for _ in range(steps)]
    start = time.perf_counter()
    train_one_epoch(state, timed)
    return steps * batch * len(seeds) / (time.perf_counter() - start)


def _one_process(args: tuple[str, int, int]) -> float:
    model_name, seed, steps = args
    return images_per_second(model_name, (seed,), steps, threads=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="model8")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "stacking.json")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    context = multiprocessing.get_context("spawn")
    with context.Pool(cores) as pool:  # every process trains at once, as reproduce's workers do
        rates = pool.map(_one_process, [(args.model, seed, args.steps) for seed in range(1, cores + 1)])
    rows.append({"variant": f"{cores} processes x 1 thread, one model each", "model_images_per_s": sum(rates)})
    for k in (1, 2, 3, 4, 8):
        rate = images_per_second(args.model, tuple(range(1, k + 1)), args.steps, threads=cores)
        rows.append({"variant": f"stacked K={k}, one process, {cores} threads", "model_images_per_s": rate})
    for row in rows:
        print(f"{row['variant']:<45} {row['model_images_per_s']:>8.0f} model-images/s")
    atomic_write_json(
        args.output,
        {"model": args.model, "steps": args.steps, "cores": cores, "torch": torch.__version__, "rows": rows},
    )


if __name__ == "__main__":
    main()
