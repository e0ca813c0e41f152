"""What learning from teachers costs on the CPU: seconds per epoch (60,000 images) of a student's training, with
no teacher, two and eight, alone and with 3 seeds stacked. One process, an idle machine, real MNIST.

    python benchmarks/distill_cpu.py [--images 3200] [--threads 2] [--output benchmarks/distill_cpu.json]

Teachers are the 55,000-image runs a validation study may use (Model 8's final recipe, ``tuning/m8-lr0.1``, and
SepNet 6.5k's, ``tuning/sep6k-ema``, 4 seeds each); "2" is Model 8's seeds 1 and 2. Each row is the median of
``--repeats`` one-epoch fits of ``--images`` training images, scaled to 60,000 (no validation or test pass).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from mnistlab.core.fileio import atomic_write_json
from mnistlab.models import config_for
from mnistlab.training.engine import fit_group, provenance
from mnistlab.training.step import resolve_device

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = {
    "none": [],
    "2 (Model 8 x2)": [f"results/tuning/m8-lr0.1/s{s}" for s in (1, 2)],
    "8 (Model 8 x4, SepNet 6.5k x4)": ["results/tuning/m8-lr0.1", "results/tuning/sep6k-ema"],
}


def seconds_per_epoch(student: str, seeds: int, teachers: list[str], images: int, threads: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            configs = [
                config_for(
                    student,
                    seed=s,
                    epochs=1,
                    limit=images,
                    val_size=0,
                    test_every_epoch=False,
                    device="cpu",
                    threads=threads,
                    teachers=[str(ROOT / t) for t in teachers] or None,
                    output_dir=f"{out}/s{s}",
                )
                for s in range(1, seeds + 1)
            ]
            summaries = fit_group(configs, progress=False, log=lambda m: None)
            # no validation split and no test pass: an epoch is its training steps alone
            times.append(summaries[0]["train_seconds"] * 60_000 / summaries[0]["data"]["train"])
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--student", default="sepnet3k")
    parser.add_argument("--images", type=int, default=3200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "distill_cpu.json")
    args = parser.parse_args()
    rows = []
    for seeds in (1, 3):
        for label, teachers in TEACHERS.items():
            value = seconds_per_epoch(args.student, seeds, teachers, args.images, args.threads, args.repeats)
            rows.append({"student": args.student, "seeds": seeds, "teachers": label, "seconds_per_epoch": value})
            print(f"{args.student} x{seeds}, teachers {label}: {value:.0f} s per 60,000 images", flush=True)
    atomic_write_json(
        args.output,
        {
            "command": "python benchmarks/distill_cpu.py",
            "images": args.images,
            "threads": args.threads,
            "rows": rows,
            "provenance": provenance(resolve_device("cpu")),
        },
    )


if __name__ == "__main__":
    main()
