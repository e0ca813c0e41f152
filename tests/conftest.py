"""Shared fixtures: tiny MNIST-shaped data the tests make themselves; and no silent skips."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest


def tiny_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images whose class is visible: a bright bar whose row depends on the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int64)
    images = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
    for i, label in enumerate(labels):
        row = 3 + 2 * int(label)
        images[i, row : row + 2, 6:22] = 255
    return images, labels


@pytest.fixture
def tiny_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return tiny_digits(600, seed=0), tiny_digits(200, seed=1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test is a test that does not exist: in this repository a skip fails, loudly."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, which this suite does not allow: {report.longrepr}"


ROOT = Path(__file__).resolve().parents[1]
# the test tiers: `make test-fast` leaves these out, `make test` (CI) runs everything
TIERS = {
    "real_data": "uses the real cached MNIST (fetched and verified on first use)",
    "cli": "runs the command line in a subprocess (every test that uses the `mnistlab` fixture)",
    "browser": "drives the demo page in Chromium",
    "ray": "starts a local Ray cluster",
    "kills": "kills training at every point of a save (many runs, or a process killed with -9)",
    "compiles": "trains through torch.compile (tens of seconds of compiling)",
}


def pytest_configure(config):
    for name, what in TIERS.items():
        config.addinivalue_line("markers", f"{name}: {what}")


def pytest_collection_modifyitems(items):
    for item in items:
        if "mnistlab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cli)


def run_mnistlab(*args: str, cwd: Path | str = ROOT, env: dict[str, str] | None = None, timeout: float = 900):
    """``python -m mnistlab ARGS`` as a user runs it: its exit status, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "mnistlab", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def mnistlab():
    """The command line in a subprocess (``run_mnistlab``); a test that uses it is in the `cli` tier."""
    return run_mnistlab


@pytest.fixture
def eager_graph_step(monkeypatch):
    """The engine trains through the captured-graph step's code, run eagerly (``capture=False``) on the CPU."""
    import mnistlab.training.engine as engine
    from mnistlab.training.graphstep import GraphedTrainer

    def eager(*, config, state, loader, seeds, device):
        return GraphedTrainer(config, state, loader, seeds, capture=False)

    monkeypatch.setattr(engine, "graphed_trainer", eager)


@pytest.fixture(autouse=True)
def registry_as_it_was():
    """Models a test registers from outside the package (files, specs, entry points) leave with it."""
    from mnistlab.models import registry

    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


# what a holder process runs once it holds its lock, indented under it (``held_by``)
HOLD = "print('held', flush=True); __import__('time').sleep(60)"


@contextmanager
def held_by(code: str) -> Iterator[subprocess.Popen]:
    """Another process that runs ``code`` (Python that takes a lock and then runs ``HOLD``), yielded once it holds
    the lock; killed with -9 at the end of the block, as a crash would leave it."""
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()
