"""The CPU path before and after stacking: seconds of ``fit`` for Model 8's recipe on the 2-core CPU.

    PYTHONPATH=<a checkout>/src python benchmarks/engine_cpu.py [--images 12800] [--repeats 3]

Run it once with this checkout's ``src`` and once with an older one's (``git worktree add /tmp/old REV``) on an
idle machine; it prints the median seconds per 60,000 training images of one epoch (no validation or test
pass), so the two engines are compared on the same steps. Works with both engines' APIs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import mnistlab.training.engine as engine

try:
    from mnistlab.models import config_for
except ImportError:  # engines before config_for
    from mnistlab.core.config import TrainConfig

    config_for = TrainConfig.for_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=12800)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            config = config_for(
                "model8",
                epochs=1,
                limit=args.images,
                val_size=0,
                test_every_epoch=False,
                device="cpu",
                threads=2,
                output_dir=out,
            )
            start = time.perf_counter()
            summary = engine.fit(config, progress=False, log=lambda m: None)
            times.append((time.perf_counter() - start) * 60_000 / summary["data"]["train"])
    print(
        f"{engine.__file__}: {statistics.median(times):.1f} s per 60,000 images (runs: "
        f"{', '.join(f'{t:.1f}' for t in times)})"
    )


if __name__ == "__main__":
    main()
