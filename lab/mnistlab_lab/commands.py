"""The lab's commands, added to ``mnistlab`` through the ``mnistlab.commands`` entry point when the repository's lab
is installed: ``report`` (REPORT.md and the README's table from results/) and ``reproduce`` (every recorded run that
is missing, resumed where it stopped). Each is a shell over the lab (``report``, ``studies``) and the library's
runner (``jobs.runner.run_all``)."""

from __future__ import annotations

from pathlib import Path

import click

from mnistlab.cli import (
    cluster_for,
    field_option,
    parse_seeds,
    progress_bars,
    quiet_option,
    results_option,
    scores_line,
    stopped_hint,
    workers_option,
)
from mnistlab.core.config import TrainConfig
from mnistlab.core.errors import MnistlabError
from mnistlab.core.rundir import run_status
from mnistlab_lab import RESULTS_DIR


@click.command()
@results_option(RESULTS_DIR)
@click.option("--output", type=click.Path(), default="REPORT.md", show_default=True)
@click.option(
    "--readme",
    type=click.Path(),
    default="README.md",
    show_default=True,
    help="README whose results table (between its markers) is refreshed",
)
def report(results: str, output: str, readme: str) -> None:
    """Write REPORT.md from the recorded runs under results/, and the README's results table."""
    from mnistlab_lab.report import write_report

    path = write_report(Path(results), Path(output), Path(readme))
    click.echo(f"wrote {path}")


@click.command()
@click.option(
    "--models",
    default=None,
    help="comma-separated [every model with final runs, not a study's losing candidates; cheapest first]",
)
@click.option(
    "--seeds",
    default=None,
    help="the final runs' seeds, for every model [each model's own: 1 to its final_seeds in the lab's ledger, 3 for most]",
)
@results_option(RESULTS_DIR)
@click.option(
    "--tuning/--no-tuning",
    default=True,
    help="also the validation runs behind every choice, and the earlier attempts' final runs",
)
@field_option(TrainConfig, "threads", "torch CPU threads per run (0: torch's default)", default=0)
@click.option(
    "--study",
    "studies",
    multiple=True,
    help="only this study's validation runs (repeatable; see `mnistlab report`'s tuning tables)",
)
@field_option(TrainConfig, "device", "where every run trains [each run's default: auto]")
@workers_option("runs trained at once, each in its own process (a GPU fits many small runs)")
@click.option(
    "--stack/--no-stack",
    "stack",
    default=True,
    show_default=True,
    help="train the seeds of each recipe as one stacked network (measured as fast or faster than "
    "one process per seed on the CPU, 2.3x on a GPU); --no-stack re-makes single runs bit for bit",
)
@field_option(TrainConfig, "epochs", "every run this many epochs: a first try, not the record")
@field_option(TrainConfig, "limit", "only the first N images of each split: a first try")
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="send each job to Ray (a local cluster; pip install 'mnistlab[ray]'): one thread per job unless "
    "--threads, and with --device cuda, --workers jobs share each GPU",
)
@click.option("--ray-address", default=None, metavar="HOST:PORT", help="join this Ray cluster (implies --ray)")
@field_option(
    TrainConfig,
    "precision",
    "every run's forward pass in this precision [each run's recorded one: fp32]; auto: bf16 on a CPU that "
    "computes it natively",
)
@quiet_option
def reproduce(
    models: str,
    seeds: str | None,
    results: str,
    tuning: bool,
    threads: int,
    studies: tuple[str, ...],
    device: str | None,
    workers: int,
    stack: bool,
    epochs: int | None,
    limit: int | None,
    use_ray: bool,
    ray_address: str | None,
    precision: str | None,
    quiet: bool,
) -> None:
    """Re-run every recorded experiment that is missing; resume the interrupted ones."""
    from mnistlab.jobs.runner import run_all
    from mnistlab.models import resolve
    from mnistlab_lab.studies import planned_runs

    if workers < 1:
        raise MnistlabError(f"--workers must be at least 1, got {workers}")
    unlike = epochs is not None or limit is not None or precision not in (None, "fp32")
    if unlike and Path(results).resolve() == Path(RESULTS_DIR).resolve():
        raise MnistlabError(
            "--epochs, --limit and a --precision other than fp32 make runs unlike the recorded ones: write them "
            "elsewhere with --results DIR"
        )
    names = [resolve(m.strip()).name for m in models.split(",") if m.strip()] if models else None
    runs = planned_runs(names, parse_seeds(seeds) if seeds else None, tuning, studies)
    configs = [run.config(Path(results)) for run in runs]
    todo = [c for c in configs if run_status(c.output_dir) != "done"]
    click.echo(f"{len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run")
    stopped_hint("the same `mnistlab reproduce` command")
    cluster = cluster_for(use_ray, ray_address, gpus_per_job=1.0 / workers)
    if cluster is not None:
        threads = threads or 1
    if precision == "auto":
        from mnistlab.core.perf import resolve_precision

        precision = resolve_precision(precision, device or "auto")
    pairs = (("threads", threads), ("device", device), ("epochs", epochs), ("limit", limit), ("precision", precision))
    overrides = {key: value for key, value in pairs if value is not None and value != 0}
    summaries = run_all(
        configs,
        overrides=overrides or None,
        log=click.echo,
        progress=progress_bars(quiet),
        workers=workers,
        stack=stack,
        cluster=cluster,
    )
    for run, summary in zip(runs, summaries):
        click.echo(f"{run.folder}/{run.name}: params {summary['params']:,}, {scores_line(summary)}")
