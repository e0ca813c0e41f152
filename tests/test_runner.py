"""The runner: what is missing is trained, what is done skipped, what was cut resumed; seeds of a recipe stacked;
jobs spread over processes without changing a number. It takes configs, not the lab's ledger."""

from __future__ import annotations

from pathlib import Path

from mnistlab.core.config import TrainConfig
from mnistlab.core.rundir import run_status
from mnistlab.jobs.runner import plan_jobs, run_all
from mnistlab.models import config_for

TINY = {"epochs": 3, "batch_size": 64, "val_size": 100, "device": "cpu"}


def test_run_all_skips_done_resumes_partial_and_starts_todo(tmp_path, tiny_data):
    """Three runs in three states: seed 1 done, seed 2 cut after its first epoch (a real partial run: its
    checkpoint and one history row), seed 3 never started. One call finishes them all, and the cut run's numbers are
    those of a run never cut."""
    import dataclasses

    from mnistlab.core.rundir import read_history
    from mnistlab.training.engine import fit

    tiny = {**TINY, "threads": 1}
    configs = [config_for("model8", seed=s, output_dir=str(tmp_path / f"seed{s}"), **tiny) for s in (1, 2, 3)]
    quiet = dict(progress=False, log=lambda m: None, data=tiny_data)
    run_all(configs[:1], **quiet)
    assert fit(configs[1], stop_after=1, **quiet) == {"stopped_after": 1}
    assert [run_status(c.output_dir) for c in configs] == ["done", "partial", "todo"]
    assert len(read_history(configs[1].output_dir)) == 1
    done_before = (tmp_path / "seed1" / "last.pt").read_bytes()
    logs: list[str] = []
    summaries = run_all(configs, progress=False, log=logs.append, data=tiny_data)
    assert [run_status(c.output_dir) for c in configs] == ["done"] * 3
    assert any("seed1: done, skipped" in line for line in logs)
    assert (tmp_path / "seed1" / "last.pt").read_bytes() == done_before  # a finished run is not touched
    uncut = fit(dataclasses.replace(configs[1], output_dir=str(tmp_path / "uncut")), **quiet)
    assert summaries[1]["test_acc_last3"] == uncut["test_acc_last3"]
    assert read_history(configs[1].output_dir) == [
        {**row, "seconds": mine["seconds"]}
        for row, mine in zip(read_history(tmp_path / "uncut"), read_history(configs[1].output_dir))
    ]


def test_parallel_runs_match_serial_ones(tmp_path, tiny_data):
    """Workers change where runs train, not what they compute: each run's numbers equal the serial run's."""

    def configs(root: Path) -> list[TrainConfig]:
        return [config_for("sepnet3k", seed=s, output_dir=str(root / "tuning" / "c" / f"s{s}")) for s in (1, 2)]

    tiny = {**TINY, "epochs": 2, "threads": 1}
    serial = run_all(configs(tmp_path / "serial"), overrides=tiny, progress=False, log=lambda m: None, data=tiny_data)
    logs: list[str] = []
    parallel = run_all(configs(tmp_path / "parallel"), overrides=tiny, log=logs.append, data=tiny_data, workers=2)
    for one, other in zip(serial, parallel):
        assert (one["seed"], one["last_val_acc"], one["test_acc_last3"]) == (
            other["seed"],
            other["last_val_acc"],
            other["test_acc_last3"],
        )
    assert (tmp_path / "parallel" / "tuning" / "c" / "s2" / "train.log").read_text().count("epoch") == 2
    assert any("2 jobs on 2 workers" in line for line in logs)


def test_reproduce_stacks_the_seeds_of_a_recipe(tmp_path, tiny_data):
    """With stack, one job per recipe: the seeds still to do train as one network; an interrupted or a
    plateau-scheduled run trains alone."""
    configs = [config_for("sepnet3k", seed=s, output_dir=str(tmp_path / "c" / f"s{s}")) for s in (1, 2, 3)] + [
        config_for("model7", seed=s, output_dir=str(tmp_path / "model7" / f"seed{s}")) for s in (1, 2)
    ]
    jobs = plan_jobs(configs, ["todo", "todo", "partial", "todo", "todo"], stack=True)
    assert [job.positions for job in jobs] == [(0, 1), (2,), (3,), (4,)]
    assert [len(job.configs) for job in plan_jobs(configs, ["todo"] * 5, stack=False)] == [1] * 5
    summaries = run_all(
        configs[:2],
        overrides={**TINY, "epochs": 1},
        progress=False,
        log=lambda m: None,
        data=tiny_data,
        stack=True,
    )
    assert [s["provenance"]["stacked"] for s in summaries] == [2, 2] and [s["seed"] for s in summaries] == [
        1,
        2,
    ]
