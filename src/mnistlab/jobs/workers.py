"""Worker processes: the one spawned pool that the runner and the search share, each worker ending with its
parent, and a job's fit with its log lines written to ``train.log`` in each run's folder (a worker process, or
a Ray task, has no terminal to print to)."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from mnistlab.core.config import TrainConfig
from mnistlab.core.rundir import LOG, Summary
from mnistlab.training.engine import fit_group


def end_with_parent() -> None:
    """Worker start-up: Ctrl-C is the parent's to handle (a terminal sends it to the whole process group; the parent
    then stops every worker at once, ``in_processes``, and no worker prints a traceback of its own); on Linux, have
    the kernel end this worker if the parent dies (a killed ``reproduce`` or ``search`` must not leave runs
    training, and writing, behind it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def in_processes(function: Callable[..., Any], calls: list[tuple], workers: int) -> Iterator[tuple[int, Any]]:
    """``function(*call)`` for every call, ``workers`` at a time, each in a process of its own; yields each
    call's index and result as it finishes (an exception in a call is raised here)."""
    # spawn, not fork: a forked child cannot use a CUDA context, and the parent holds no model state
    context = multiprocessing.get_context("spawn")
    # workers ended by ``stop`` leave their queue's semaphores to the resource tracker, which would warn of them on
    # the terminal after the one line a stop prints; it starts with the first pool and reads this then
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:multiprocessing.resource_tracker")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=end_with_parent) as pool:
        futures = {pool.submit(function, *call): index for index, call in enumerate(calls)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:  # stopped (Ctrl-C, kill) or failed: no call starts after this, the running ones end now
            stop(pool)
            raise


def stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the calls not started and end the worker processes (what a killed run leaves is whole: its saves
    are atomic, and the next run of the same command settles and resumes it)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public way; shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)


def fit_logged(configs: tuple[TrainConfig, ...], resume: bool, data: Any) -> list[Summary]:
    """One job (a run, or stacked seeds), each run's log lines appended to ``train.log`` in its folder."""
    handles = []
    for config in configs:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        handles.append(open(Path(config.output_dir) / LOG, "a"))  # noqa: SIM115  (closed below)

    def log(line: str) -> None:
        for handle in handles:
            handle.write(line + "\n")
            handle.flush()

    try:
        return fit_group(list(configs), resume=resume, progress=False, log=log, data=data)
    finally:
        for handle in handles:
            handle.close()
