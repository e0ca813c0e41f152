"""The runner: trains the runs that are missing under results/, resumes the interrupted ones, stacks the seeds
of a recipe into one network and spreads jobs over processes.

A finished run (``summary.json`` present) is skipped and an interrupted one (``last.pt`` only) resumed, so
``mnistlab reproduce`` can be stopped and started again at any time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.core.config import TrainConfig
from mnistlab.core.rundir import Summary, read_summary, run_lock, run_status
from mnistlab.jobs.distributed import run_jobs
from mnistlab.jobs.workers import fit_logged, in_processes
from mnistlab.models.external import ensure_registered
from mnistlab.training.engine import fit_group, recipe_unstackable


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
    train as one stacked network, and the interrupted ones resume as one."""
    jobs: list[Job] = []
    groups: dict[str, list[int]] = {}
    for i, (config, state) in enumerate(zip(configs, states)):
        if state == "done":
            continue
        if not stack or recipe_unstackable(config) is not None:
            jobs.append(Job((i,), (config,), state == "partial"))
            continue
        # an interrupted group resumes as the group it was (its checkpoints name its seeds)
        key = json.dumps([state, config.shared()], sort_keys=True)
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        jobs.append(Job(tuple(members), tuple(configs[i] for i in members), states[members[0]] == "partial"))
    return sorted(jobs, key=lambda job: job.positions[0])


def settle(run_dir: str) -> None:
    """A run folder as its last save left it, whole: a save a killed process cut short is completed (taking the
    folder's lock does it, ``rundir.run_lock``). A folder another process trains into is refused here, in one line."""
    if Path(run_dir).is_dir():
        with run_lock(run_dir):
            pass


def _done_already(configs: list[TrainConfig], states: list[str], log: Callable[[str], None]) -> dict[int, Summary]:
    """The summaries of the runs already done, by their position in ``configs``."""
    summaries: dict[int, Summary] = {}
    for index, (config, state) in enumerate(zip(configs, states)):
        if state == "done":
            log(f"[{index + 1}/{len(configs)}] {config.output_dir}: done, skipped")
            summaries[index] = read_summary(Path(config.output_dir))
    return summaries


def run_all(
    configs: list[TrainConfig],
    *,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    data: Any = None,
    workers: int = 1,
    stack: bool = False,
    after_each: Callable[[], None] | None = None,
    cluster: Any = None,
    after_epoch: Callable[[list[TrainConfig]], Any] | None = None,
) -> list[Summary]:
    """Train the runs of ``configs`` (each into its ``output_dir``) that are not done yet, resuming what was
    interrupted; return every run's summary.

    ``overrides`` change every run's config (tests make runs tiny); ``data`` replaces real MNIST (tests).
    With ``stack`` the seeds of one recipe train as one stacked network (``engine.fit_group``). With
    ``workers`` > 1 that many jobs train at once, each in its own process and writing its epochs to
    ``train.log`` in its folder: many small runs fill a GPU (or a many-core machine) that one cannot.
    ``after_each`` is called when a job has finished (e.g. to copy its results off a lent machine).
    With ``cluster`` (``distributed.Cluster``) every job is a Ray task instead, and ``workers`` is unused.
    ``after_epoch(configs)`` gives a job trained in this process its ``fit_group`` epoch hook (TensorBoard).
    """
    if overrides:
        configs = [TrainConfig.from_dict({**config.to_dict(), **overrides}) for config in configs]
    for config in configs:
        settle(config.output_dir)
        ensure_registered(config.to_dict(), Path(config.output_dir), log)  # a model from outside: plan_jobs asks it
    states = [run_status(config.output_dir) for config in configs]
    summaries = _done_already(configs, states, log)
    jobs = plan_jobs(configs, states, stack)

    def finished(job: Job, done: list[Summary]) -> None:
        summaries.update(zip(job.positions, done))
        log(f"{job.head}: finished, val {[s['last_val_acc'] for s in done]}, {done[0]['wall_seconds']:.0f} s")
        if after_each is not None:
            after_each()

    if cluster is not None and jobs:
        log(f"{len(jobs)} jobs on Ray; each run's files arrive when its job ends")
        run_jobs(jobs, cluster, finished, data)
    elif workers <= 1:
        for job in jobs:
            verb = "resuming" if job.resume else "training"
            seeds = ", ".join(str(c.seed) for c in job.configs)
            log(f"{job.head}: {verb} {job.configs[0].model} seed {seeds}")
            hook = None if after_epoch is None else after_epoch(list(job.configs))
            done = fit_group(
                list(job.configs), resume=job.resume, progress=progress, log=log, data=data, after_epoch=hook
            )
            summaries.update(zip(job.positions, done))
            if after_each is not None:
                after_each()
    elif jobs:
        log(f"{len(jobs)} jobs on {workers} workers; each run writes its epochs to <run>/train.log")
        for index, done in in_processes(fit_logged, [(job.configs, job.resume, data) for job in jobs], workers):
            finished(jobs[index], done)
    return [summaries[i] for i in range(len(configs))]
