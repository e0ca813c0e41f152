"""The runner: trains the runs that are missing under results/, resumes the interrupted ones, stacks the seeds
of a recipe into one network and spreads jobs over processes.

A finished run (``summary.json`` present) is skipped and an interrupted one (``last.pt`` only) resumed, so
``mnistlab reproduce`` can be stopped and started again at any time.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.config import TrainConfig
from mnistlab.engine import GROUP_FREE, fit_group, recipe_unstackable
from mnistlab.rundir import LOG, read_summary, run_status
from mnistlab.studies import RESULTS, Run


def status(run: Run, results: Path = RESULTS) -> str:
    return run_status(results / run.group / run.name)


@dataclass(frozen=True)
class Job:
    """Runs trained together: one run, or several seeds of one recipe stacked into one network."""

    positions: tuple[int, ...]  # their places in the list of runs
    configs: tuple[TrainConfig, ...]
    resume: bool

    @property
    def head(self) -> str:
        names = [str(Path(c.output_dir)) for c in self.configs]
        return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} stacked)"


def plan_jobs(configs: list[TrainConfig], states: list[str], stack: bool) -> list[Job]:
    """One job per run, or with ``stack`` one per recipe: the runs still to do that differ only in seed
    train as one stacked network (an interrupted run resumes alone)."""
    jobs: list[Job] = []
    groups: dict[str, list[int]] = {}
    for i, (config, state) in enumerate(zip(configs, states)):
        if state == "done":
            continue
        if not stack or state == "partial" or recipe_unstackable(config) is not None:
            jobs.append(Job((i,), (config,), state == "partial"))
            continue
        key = json.dumps({k: v for k, v in config.to_dict().items() if k not in GROUP_FREE}, sort_keys=True)
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        jobs.append(Job(tuple(members), tuple(configs[i] for i in members), False))
    return sorted(jobs, key=lambda job: job.positions[0])


def run_all(
    runs: list[Run],
    results: Path = RESULTS,
    *,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    data: Any = None,
    workers: int = 1,
    stack: bool = False,
    after_each: Callable[[], None] | None = None,
    cluster: Any = None,
) -> list[dict[str, Any]]:
    """Run what is not done yet, resuming what was interrupted; return every run's summary.

    ``overrides`` change every run's config (tests make runs tiny); ``data`` replaces real MNIST (tests).
    With ``stack`` the seeds of one recipe train as one stacked network (``engine.fit_group``). With
    ``workers`` > 1 that many jobs train at once, each in its own process and writing its epochs to
    ``train.log`` in its folder: many small runs fill a GPU (or a many-core machine) that one cannot.
    ``after_each`` is called when a job has finished (e.g. to copy its results off a lent machine).
    With ``cluster`` (``distributed.Cluster``) every job is a Ray task instead, and ``workers`` is unused.
    """
    configs = []
    for run in runs:
        config = run.config(results)
        configs.append(TrainConfig.from_dict({**config.to_dict(), **overrides}) if overrides else config)
    states = [status(run, results) for run in runs]
    summaries: dict[int, dict[str, Any]] = {}
    for index, (run, state) in enumerate(zip(runs, states)):
        if state == "done":
            log(f"[{index + 1}/{len(runs)}] {run.group}/{run.name}: done, skipped")
            summaries[index] = read_summary(results / run.group / run.name)
    jobs = plan_jobs(configs, states, stack)

    def finished(job: Job, done: list[dict[str, Any]]) -> None:
        summaries.update(zip(job.positions, done))
        log(f"{job.head}: finished, val {[s['last_val_acc'] for s in done]}, {done[0]['wall_seconds']:.0f} s")
        if after_each is not None:
            after_each()

    if cluster is not None and jobs:
        from mnistlab.distributed import run_jobs

        log(f"{len(jobs)} jobs on Ray; each run's files arrive when its job ends")
        run_jobs(jobs, cluster, finished, data)
    elif workers <= 1:
        for job in jobs:
            verb = "resuming" if job.resume else "training"
            seeds = ", ".join(str(c.seed) for c in job.configs)
            log(f"{job.head}: {verb} {job.configs[0].model} seed {seeds}")
            done = fit_group(list(job.configs), resume=job.resume, progress=progress, log=log, data=data)
            summaries.update(zip(job.positions, done))
            if after_each is not None:
                after_each()
    elif jobs:
        # spawn, not fork: a forked child cannot use a CUDA context, and the parent holds no model state
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=end_with_parent
        ) as pool:
            futures = {pool.submit(fit_logged, job.configs, job.resume, data): job for job in jobs}
            log(f"{len(jobs)} jobs on {workers} workers; each run writes its epochs to <run>/train.log")
            for future in as_completed(futures):
                finished(futures[future], future.result())
    return [summaries[i] for i in range(len(runs))]


def end_with_parent() -> None:
    """Worker start-up: on Linux, have the kernel end this worker if the parent dies (a killed ``reproduce``
    must not leave runs training, and writing, behind it)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def fit_logged(configs: tuple[TrainConfig, ...], resume: bool, data: Any) -> list[dict[str, Any]]:
    """One job in a worker process, each run's log lines appended to ``train.log`` in its folder."""
    handles = []
    for config in configs:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        handles.append(open(Path(config.output_dir) / LOG, "a"))  # noqa: SIM115  (closed below)
    try:

        def log(line: str) -> None:
            for handle in handles:
                handle.write(line + "\n")
                handle.flush()

        return fit_group(list(configs), resume=resume, progress=False, log=log, data=data)
    finally:
        for handle in handles:
            handle.close()
