"""Shared fixtures: tiny MNIST-shaped data the tests make themselves; and no silent skips."""

from __future__ import annotations

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
