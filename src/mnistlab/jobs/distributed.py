"""Runs on Ray: each job (one run, or the stacked seeds of one recipe) is a Ray task that trains in a scratch
folder on whichever machine Ray picks and returns its run files; the driver writes them under ``--results``.

No shared file system is needed, and the driver is the only writer of results: a run's files land when its
task ends (``summary.json`` last, so a run is "done" only once all of it is there). A killed driver loses only
the runs still training; an interrupted run that the driver holds is sent with its task and resumes there.
Ctrl-C cancels the tasks still out and exits. Ray is an optional extra (``pip install 'mnistlab[ray]'``);
without ``--ray`` the runner's local process pool is used.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.core.config import TrainConfig
from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import atomic_write_bytes, json_text
from mnistlab.core.rundir import CONFIG, RUN_FILES, SUMMARY, Summary
from mnistlab.jobs.workers import fit_logged

INSTALL = "Ray is not installed: pip install 'mnistlab[ray]'"
CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster's address before saying it is unreachable


@dataclass(frozen=True)
class Cluster:
    """Where Ray runs: a new local cluster (``address`` None) or an existing one at HOST:PORT."""

    address: str | None = None
    cpus: int | None = None  # a new local cluster's CPUs (None: every core)
    gpus_per_job: float = 1.0  # the share of a GPU a job asks for when it trains on CUDA


def connect(cluster: Cluster) -> Any:
    """Start or join the cluster; return the ``ray`` module. One line for a missing Ray or a bad address."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    try:
        import ray
    except ImportError:
        raise MnistlabError(INSTALL) from None
    if cluster.address is not None:
        host, port = _host_port(cluster.address)
        problem = _not_a_ray_head(host, port)
        if problem is None:
            try:
                ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
            except ConnectionError as exc:
                problem = str(exc).splitlines()[0]
        if problem is not None:
            raise MnistlabError(
                f"cannot reach a Ray cluster at {cluster.address} ({problem}); start one there with "
                "`ray start --head --port PORT`, or leave out --ray-address for a local one"
            )
    else:
        ray.init(num_cpus=cluster.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    return ray


def _not_a_ray_head(host: str, port: int) -> str | None:
    """Why ``host:port`` is not a Ray head, found in seconds (None if it answers as one). Something may accept
    the connection and not be Ray (another server, a proxy that takes every port): ``ray.init`` would retry for
    half a minute, then fail with a traceback. Ray's own client asks the head for its cluster ID once."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    from ray._raylet import GcsClient  # Ray is there: connect() imported it

    try:
        with _quiet_stderr():  # its C++ side logs the failure to the terminal, besides raising it
            GcsClient(address=f"{host}:{port}")
    except Exception as exc:  # noqa: BLE001  Ray's RPC errors are of several kinds
        return f"something answers there, but not a Ray head: {str(exc).splitlines()[0]}"
    return None


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 sent to /dev/null for the block (a library's C++ code writes there, not to sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise MnistlabError(f"--ray-address must be HOST:PORT, got {address!r}")
    return host, int(port)


def resources(config: TrainConfig, cluster: Cluster) -> dict[str, float]:
    """What one job asks Ray for: its CPU threads, and a share of a GPU when it trains on CUDA."""
    wanted: dict[str, float] = {"num_cpus": float(max(1, config.threads))}
    if config.device == "cuda":
        wanted["num_gpus"] = cluster.gpus_per_job
    return wanted


def pack(run_dir: str | Path) -> dict[str, bytes]:
    """A run folder's files (those a run writes), by name."""
    return {name: (Path(run_dir) / name).read_bytes() for name in RUN_FILES if (Path(run_dir) / name).is_file()}


def unpack(files: dict[str, bytes], run_dir: str | Path) -> None:
    """Write a run's files into ``run_dir``, each atomically, the summary last."""
    for name in sorted(files, key=lambda n: n == SUMMARY):
        atomic_write_bytes(Path(run_dir) / name, files[name])


def train_job(
    configs: list[dict[str, Any]], resume: bool, sent: list[dict[str, bytes]], data: Any
) -> tuple[list[Summary], list[dict[str, bytes]]]:
    """The body of a Ray task: train the job in a scratch folder under the same relative paths the driver
    uses (so that every file, config.json included, is what a local run writes), and return the summaries
    and the run files."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="mnistlab-") as scratch:
        os.chdir(scratch)
        try:
            local = [TrainConfig.from_dict(c) for c in configs]
            for config, files in zip(local, sent):
                unpack(files, config.output_dir)
            summaries = fit_logged(tuple(local), resume, data)
            return summaries, [pack(c.output_dir) for c in local]
        finally:
            os.chdir(here)


def relative(config: TrainConfig) -> TrainConfig:
    """The config a task trains: its run folder as a relative path (an absolute one loses its root)."""
    path = Path(config.output_dir)
    if not path.is_absolute():
        return config
    return TrainConfig.from_dict({**config.to_dict(), "output_dir": str(path.relative_to(path.anchor))})


@contextmanager
def session(cluster: Cluster) -> Iterator[tuple[Any, dict[Any, Any]]]:
    """Ray, started or joined for the block, and a dict of the tasks out (reference: what it is for): Ctrl-C
    cancels them; Ray is shut down (or left) after."""
    ray = connect(cluster)
    out: dict[Any, Any] = {}
    try:
        yield ray, out
    except KeyboardInterrupt:
        for ref in out:
            ray.cancel(ref, force=True)
        raise
    finally:
        ray.shutdown()


def result(ray: Any, refs: Any, where: str = "") -> Any:
    """``ray.get``, with a user's error inside a task still one line."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, MnistlabError):
            raise MnistlabError(f"{where}{exc.cause}") from None
        raise


def run_jobs(
    jobs: Iterable[Any],
    cluster: Cluster,
    on_done: Callable[[Any, list[Summary]], None],
    data: Any = None,
) -> None:
    """Send every job (``runner.Job``) to Ray; as each ends, write its runs' files where the driver keeps them
    and call ``on_done(job, summaries)``. Ctrl-C cancels what is still out."""
    with session(cluster) as (ray, pending):
        task = ray.remote(train_job)
        for job in jobs:
            sent = [pack(c.output_dir) if job.resume else {} for c in job.configs]
            configs = [relative(c).to_dict() for c in job.configs]
            options = resources(job.configs[0], cluster)
            pending[task.options(**options).remote(configs, job.resume, sent, data)] = job
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            summaries, files = result(ray, ready[0], f"{job.head}: ")
            for config, run_files in zip(job.configs, files):
                if Path(config.output_dir).is_absolute():  # the task trained under a relative one
                    run_files = {**run_files, CONFIG: _with_output_dir(run_files[CONFIG], config)}
                unpack(run_files, config.output_dir)
            on_done(job, summaries)


def _with_output_dir(config_json: bytes, config: TrainConfig) -> bytes:
    return json_text({**json.loads(config_json), "output_dir": config.output_dir}).encode()


def run_tasks(function: Callable[..., Any], calls: list[tuple], cluster: Cluster, options: dict[str, float]) -> list:
    """``function(*call)`` for every call, each a Ray task asking for ``options``; their results in order.
    Ctrl-C cancels what is still out."""
    with session(cluster) as (ray, out):
        task = ray.remote(function)
        refs = [task.options(**options).remote(*call) for call in calls]
        out.update(dict.fromkeys(refs))
        return result(ray, refs)
