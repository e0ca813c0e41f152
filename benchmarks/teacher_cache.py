"""What the teachers' cache saves: seconds per epoch (scaled to 55,000 images) of a student's 4 seeds stacked, with
no teacher, with the four Teacher 98k runs computed as it trains, and with their outputs read from the cache
(``training/teachercache.py``). One process, an idle machine, real MNIST.

    python benchmarks/teacher_cache.py [--images 3200] [--threads 2] [--output benchmarks/teacher_cache.json]

"uncached" is a run with ``teacher_cache=False``; "first" the run that computes and keeps the outputs (the first
candidate of a study); "cached" a second run with the same images and teachers (every later candidate). Each row is the median of
``--repeats`` one-epoch fits of ``--images`` training images (no validation or test pass). The ladder's studies: ``--student sepnet4k9 --seeds 8 --output
benchmarks/teacher_cache_ladder.json``.

``--view clean`` measures the clean view instead (``teacher_view`` "clean": the teachers see each training image
unwarped, once): an epoch with the table kept, and the seconds that table of 55,000 images costs once
(``--student sepnet4k9 --seeds 8 --view clean --output benchmarks/teacher_view.json``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mnistlab.core.fileio import atomic_write_json
from mnistlab.data.loader import get_dataloaders
from mnistlab.models import config_for
from mnistlab.training.engine import fit_group, provenance
from mnistlab.training.step import Teachers, resolve_device
from mnistlab.training.teachercache import CleanTargets

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = [str(ROOT / f"results/teachers/teacher98k-55k/seed{s}") for s in (1, 2, 3, 4)]


def seconds_per_epoch(
    args: argparse.Namespace, teachers: list[str], cache: str | None, view: str = "augmented"
) -> float:
    """The median over repeats; ``cache``: None (no cache), "first" (an empty cache) or "cached" (a full one)."""
    times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:

            def configs(name: str) -> list:
                return [
                    config_for(
                        args.student,
                        seed=s,
                        epochs=1,
                        limit=args.images,
                        val_size=0,
                        test_every_epoch=False,
                        device="cpu",
                        threads=args.threads,
                        teachers=teachers or None,
                        teacher_cache=cache is not None,
                        teacher_view=view,
                        data_dir=str(args.data_dir) if cache is None else f"{out}/data",
                        output_dir=f"{out}/{name}/s{s}",
                    )
                    for s in range(1, args.seeds + 1)
                ]

            if cache is not None:
                _link_mnist(args.data_dir, Path(out) / "data")
            if cache == "cached":
                fit_group(configs("fill"), progress=False, log=lambda m: None)
            summaries = fit_group(configs("timed"), progress=False, log=lambda m: None)
            times.append(summaries[0]["train_seconds"] * 55_000 / summaries[0]["data"]["train"])
    return statistics.median(times)


def table_seconds(args: argparse.Namespace) -> float:
    """The clean view's one cost: the four teachers' table of the 55,000 training images of a validation study."""
    torch.set_num_threads(args.threads)
    configs = [config_for(args.student, teachers=TEACHERS, teacher_view="clean")]
    device = torch.device("cpu")
    teachers = Teachers.load(configs[0], device)
    loader = get_dataloaders(batch_size=configs[0].batch_size, val_size=configs[0].val_size).train
    start = time.perf_counter()
    CleanTargets(None, configs, "mnist", device).table(loader, teachers, device)
    return time.perf_counter() - start


def _link_mnist(source: Path, target: Path) -> None:
    """A data folder of its own (its cache starts empty) holding the MNIST files of ``source``."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*-ubyte*"):
        (target / path.name).symlink_to(path)


def main() -> None:
    from mnistlab.data.mnist import resolve_data_dir

    parser = argparse.ArgumentParser()
    parser.add_argument("--student", default="sepnet3k")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--images", type=int, default=3200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--view", choices=("augmented", "clean"), default="augmented")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "teacher_cache.json")
    args = parser.parse_args()
    args.data_dir = resolve_data_dir()
    rows, extra = [], {}
    augmented = (
        ("no teacher", [], None),
        ("4 teachers, uncached", TEACHERS, None),
        ("4 teachers, first run (computes the cache)", TEACHERS, "first"),
        ("4 teachers, cached", TEACHERS, "cached"),
    )
    clean = (("no teacher", [], None), ("4 teachers shown the unwarped images, table kept", TEACHERS, "cached"))
    for label, teachers, cache in augmented if args.view == "augmented" else clean:
        value = seconds_per_epoch(args, teachers, cache, args.view)
        rows.append({"student": args.student, "seeds": args.seeds, "teachers": label, "seconds_per_epoch": value})
        print(f"{args.student} x{args.seeds}, {label}: {value:.0f} s per 55,000 images", flush=True)
    if args.view == "clean":
        extra["table_seconds"] = table_seconds(args)  # once per teacher set and split, whatever the seeds
        print(f"the teachers' table of 55,000 unwarped images: {extra['table_seconds']:.0f} s, once", flush=True)
    atomic_write_json(
        args.output,
        {
            "command": " ".join(["python benchmarks/teacher_cache.py", *sys.argv[1:]]),
            "images": args.images,
            "threads": args.threads,
            "rows": rows,
            **extra,
            "provenance": provenance(resolve_device("cpu")),
        },
    )


if __name__ == "__main__":
    main()
