"""Where one epoch of the main job goes: the data path alone, the training loop (data included) and the test pass,
each timed on its own through the engine's own pieces, for fp32 and bf16.

    python benchmarks/epoch_parts.py [--batches 300] [--threads 2]

Model 8's final recipe on all 60,000 images (as `make train`); the loop is timed over ``--batches`` batches and
scaled to the epoch. Run it on an idle machine: any second process doubles the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import torch

from mnistlab.core import perf
from mnistlab.models import config_for
from mnistlab.training.engine import _loaders, build_stacked, provenance
from mnistlab.training.step import TrainingState, evaluate_slots, train_one_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300, help="training batches timed (scaled to the epoch)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    perf.configure(args.threads)
    device = torch.device("cpu")
    config = config_for("model8", val_size=0, device="cpu", threads=args.threads)
    loaders = _loaders(config, device, None)
    per_epoch = len(loaders.train) / args.batches
    print(f"{provenance(device)['machine']}, {torch.get_num_threads()} threads, native bf16: {perf.native_bf16()}")
    for precision in ("fp32", "bf16"):
        run = dataclasses.replace(config, precision=precision)
        state = TrainingState.create(build_stacked([run], device), run, len(loaders.train))
        loaders.train.set_epoch(1)
        start = time.perf_counter()
        for _ in itertools.islice(loaders.train.stacked((1,)), args.batches):
            pass
        data = (time.perf_counter() - start) * per_epoch
        start = time.perf_counter()
        train_one_epoch(state, itertools.islice(loaders.train.stacked((1,)), args.batches), device=device)
        loop = (time.perf_counter() - start) * per_epoch
        start = time.perf_counter()
        evaluate_slots(state.scored, loaders.test, device=device)
        test = time.perf_counter() - start
        print(f"{precision}: data {data:.1f} s, training loop (data included) {loop:.1f} s, test pass {test:.1f} s")


if __name__ == "__main__":
    main()
