"""Faults a user's machine meets: a stacked group cut mid-run, two writers into one folder, damaged files the lab
reads back, a process ended by SIGTERM. Each is one line and loses nothing."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import HOLD, held_by

from mnistlab.core.errors import MnistlabError
from mnistlab.core.rundir import LOCK, read_history, read_summary, run_lock
from mnistlab.models import config_for
from mnistlab.tools.runs import load_run
from mnistlab.training.engine import fit_group

QUIET = dict(progress=False, log=lambda m: None)


def group(tmp_path, folder="g", seeds=(1, 2), **overrides):
    values = {**dict(epochs=3, batch_size=32, val_size=100, device="cpu", threads=1, limit=600), **overrides}
    return [config_for("sepnet3k", seed=s, output_dir=str(tmp_path / folder / f"seed{s}"), **values) for s in seeds]


def test_a_cut_stacked_group_resumes_as_the_group_to_the_same_numbers(tmp_path, tiny_data):
    whole = fit_group(group(tmp_path, "whole"), data=tiny_data, **QUIET)
    fit_group(group(tmp_path, "cut"), data=tiny_data, stop_after=1, **QUIET)
    resumed = fit_group(group(tmp_path, "cut"), data=tiny_data, resume=True, **QUIET)
    for one, other in zip(whole, resumed):
        assert one["test_acc_last3"] == other["test_acc_last3"] and one["last_val_acc"] == other["last_val_acc"]
    for seed in (1, 2):
        a = torch.load(tmp_path / "whole" / f"seed{seed}" / "last.pt", weights_only=True)["state_dict"]
        b = torch.load(tmp_path / "cut" / f"seed{seed}" / "last.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a)
        rows = [{k: v for k, v in h.items() if k != "seconds"} for h in read_history(tmp_path / "cut" / f"seed{seed}")]
        assert rows == [
            {k: v for k, v in h.items() if k != "seconds"} for h in read_history(tmp_path / "whole" / f"seed{seed}")
        ]


def test_one_seed_of_a_group_is_not_resumed_alone(tmp_path, tiny_data):
    fit_group(group(tmp_path), data=tiny_data, stop_after=1, **QUIET)
    with pytest.raises(MnistlabError, match="trained stacked with seeds 1, 2: resume them together"):
        fit_group(group(tmp_path, seeds=(1,)), data=tiny_data, resume=True, **QUIET)


def test_a_killed_train_seeds_resumes_as_its_group_to_the_uninterrupted_numbers(mnistlab, tmp_path):
    """The battery's case: `train --seeds 1,2` killed mid-run, then `train --resume` on its folder."""
    args = ["--model", "sepnet3k", "--epochs", "3", "--limit", "3000", "--threads", "1", "--seeds", "1,2", "--quiet"]
    whole = mnistlab("train", *args, "--output-dir", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    cut = tmp_path / "cut"
    train = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", "train", *args, "--output-dir", str(cut)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (cut / "seed2" / "last.pt").exists() and time.monotonic() < deadline and train.poll() is None:
            time.sleep(0.05)
        train.send_signal(signal.SIGTERM)
        train.communicate(timeout=120)
    finally:
        train.kill()
    assert train.returncode == 143 and not (cut / "seed1" / "summary.json").exists()
    alone = mnistlab("train", "--resume", cut / "seed1")
    assert alone.returncode == 2 and "resume them together" in alone.stderr, alone.stderr
    resumed = mnistlab("train", "--resume", cut, "--quiet")
    assert resumed.returncode == 0 and resumed.stdout.count("done in") == 2, resumed.stderr
    for seed in ("seed1", "seed2"):
        rows = [{k: v for k, v in h.items() if k != "seconds"} for h in read_history(cut / seed)]
        assert rows == [{k: v for k, v in h.items() if k != "seconds"} for h in read_history(tmp_path / "whole" / seed)]
    again = mnistlab("train", "--resume", cut)
    assert again.returncode == 0 and again.stdout.count("finished; nothing to resume") == 1


def test_a_second_writer_is_refused_at_once_and_a_stale_lock_taken_over(tmp_path, tiny_data):
    folder = tmp_path / "g" / "seed1"
    with held_by(f"from mnistlab.core.rundir import run_lock\nwith run_lock({str(folder)!r}):\n    {HOLD}") as holder:
        started = time.monotonic()
        with pytest.raises(MnistlabError, match=rf"is being trained by process {holder.pid}"):
            fit_group(group(tmp_path), data=tiny_data, **QUIET)
        assert time.monotonic() - started < 30 and not (folder / "config.json").exists()
    assert (folder / LOCK).read_text() == str(holder.pid)  # a kill -9 leaves its lock behind: stale now
    fit_group(group(tmp_path, epochs=1), data=tiny_data, **QUIET)
    assert not (folder / LOCK).exists() and read_summary(folder)["epochs"] == 1


def test_the_lock_is_released_on_any_exit(tmp_path):
    with pytest.raises(RuntimeError), run_lock(tmp_path / "r"):
        raise RuntimeError
    assert not (tmp_path / "r" / LOCK).exists()


@pytest.mark.parametrize(
    "name, content, says",
    [
        ("config.json", b"\x93\xff\x00garbage", "config.json is damaged (not valid JSON)"),
        ("config.json", b"[1, 2]", "config.json is damaged (a JSON list, not an object)"),
        ("summary.json", b'{"params": 3', "summary.json is damaged (not valid JSON); delete it and run"),
        ("history.jsonl", b'{"epoch": 1}\n{"ep', "history.jsonl is damaged (not JSON lines)"),
    ],
)
def test_a_damaged_file_in_a_run_folder_is_one_line_naming_it(tmp_path, tiny_data, name, content, says):
    (config,) = group(tmp_path, seeds=(1,), epochs=1)
    fit_group([config], data=tiny_data, **QUIET)
    run = tmp_path / "g" / "seed1"
    (run / name).write_bytes(content)
    with pytest.raises(MnistlabError, match=f"{run / name} is damaged") as caught:
        load_run(run)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_compare_and_resume_on_a_damaged_run_say_which_file(mnistlab, tmp_path, tiny_data):
    fit_group(group(tmp_path, epochs=1), data=tiny_data, **QUIET)
    run = tmp_path / "g" / "seed1"
    (run / "config.json").write_bytes(b"\xff\xfe not json")
    skipping = mnistlab("compare", tmp_path / "g", "--skip-damaged")  # as the user asks: the others compared
    assert skipping.returncode == 0 and f"skipped {run}: {run / 'config.json'} is damaged" in skipping.stderr
    assert "| 1 | 1 |" in skipping.stdout  # one seed left, one epoch
    for args in (["train", "--resume", run], ["compare", tmp_path / "g"]):
        result = mnistlab(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"{run / 'config.json'} is damaged" in result.stderr
    assert json.loads((run / "history.jsonl").read_text().splitlines()[0])["epoch"] == 1  # left as it was


@pytest.mark.real_data
def test_sigterm_ends_a_run_like_ctrl_c_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    train = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnistlab",
            "train",
            "--model",
            "sepnet3k",
            "--epochs",
            "3",
            "--limit",
            "3000",
            "--threads",
            "1",
            "--output-dir",
            str(out),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (out / "last.pt").exists() and time.monotonic() < deadline and train.poll() is None:
            time.sleep(0.2)
        train.send_signal(signal.SIGTERM)
        _, err = train.communicate(timeout=120)
    finally:
        train.kill()
    assert train.returncode == 143 and f"mnistlab train --resume {out}`" in err and "Traceback" not in err, err
    assert not (out / LOCK).exists()


def test_files_written_as_one_are_all_left_as_they_were_when_one_fails(tmp_path):
    from mnistlab.core.fileio import atomic_write_all

    (tmp_path / "a").write_text("old a")

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_all([(tmp_path / "a", lambda f: f.write(b"new a")), (tmp_path / "b", full)])
    assert (tmp_path / "a").read_text() == "old a" and not (tmp_path / "b").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temporary file left


def test_a_full_disk_mid_run_leaves_the_last_complete_epoch_and_resumes_exactly(tmp_path, tiny_data, monkeypatch):
    import mnistlab.training.engine as engine

    whole = fit_group(group(tmp_path, "whole"), data=tiny_data, **QUIET)
    real, calls = engine.atomic_write_all, []

    def fills_up(writes):
        calls.append(len(writes))
        if len(calls) == 3:  # the configs, epoch 1, then epoch 2: the disk fills while its second file is written

            def full(f):
                raise OSError(errno.ENOSPC, "No space left on device", str(writes[1][0]))

            writes = [writes[0], (writes[1][0], full), *writes[2:]]
        return real(writes)

    monkeypatch.setattr(engine, "atomic_write_all", fills_up)
    with pytest.raises(OSError, match="No space left"):
        fit_group(group(tmp_path, "cut"), data=tiny_data, **QUIET)
    for seed in (1, 2):
        run = tmp_path / "cut" / f"seed{seed}"
        assert len(read_history(run)) == 1  # the history is not ahead of its checkpoint
        assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
        assert not list(run.glob(".*.tmp"))
    monkeypatch.setattr(engine, "atomic_write_all", real)
    resumed = fit_group(group(tmp_path, "cut"), data=tiny_data, resume=True, **QUIET)
    assert [s["test_acc_last3"] for s in resumed] == [s["test_acc_last3"] for s in whole]


def test_a_disk_fault_is_one_line_with_the_path_and_what_to_do():
    from mnistlab.cli import _disk_fault

    full = _disk_fault(OSError(errno.ENOSPC, "No space left on device", "/data/run/.last.pt.x1.tmp"))
    assert full.startswith("/data/run: No space left on device; free some space, then run the same command again")
    locked = _disk_fault(PermissionError(errno.EACCES, "Permission denied", "/srv/out"))
    assert locked == "/srv/out: Permission denied; write somewhere this user may (--output-dir, --output or --results)"


@pytest.mark.real_data
def test_train_on_a_full_disk_ends_in_one_line_and_resumes(tmp_path, monkeypatch, capsys):
    import mnistlab.training.engine as engine
    from mnistlab.cli import main

    real = engine.atomic_write_all

    def full(writes):
        if (
            any(path.name == "last.pt" and "seed" not in str(path) for path, _ in writes)
            and len(read_history_or_none(tmp_path / "r")) >= 1
        ):
            raise OSError(errno.ENOSPC, "No space left on device", str(writes[0][0]))
        return real(writes)

    def read_history_or_none(run):
        return read_history(run) if (run / "history.jsonl").exists() else []

    monkeypatch.setattr(engine, "atomic_write_all", full)
    args = ["mnistlab", "train", "--model", "sepnet3k", "--epochs", "2", "--limit", "600", "--threads", "1", "--quiet"]
    monkeypatch.setattr(sys, "argv", [*args, "--output-dir", str(tmp_path / "r")])
    with pytest.raises(SystemExit) as ended:
        main()
    err = capsys.readouterr().err
    assert ended.value.code == 1 and err.count("\n") == 1 and "No space left on device; free some space" in err, err
    monkeypatch.setattr(engine, "atomic_write_all", real)
    monkeypatch.setattr(sys, "argv", ["mnistlab", "train", "--resume", str(tmp_path / "r"), "--quiet"])
    main()
    assert len(read_history(tmp_path / "r")) == 2 and read_summary(tmp_path / "r")["epochs"] == 2


def test_the_same_command_gives_the_same_numbers_in_fresh_processes(mnistlab, tmp_path):
    """The battery once saw two identical commands differ: the same tiny run, in fresh processes with other folder
    names, working folders and environments (threads left to torch, as the battery left them), must agree in every
    epoch and every tensor. Until it does, no resume test can be trusted."""
    args = ["train", "--model", "model8", "--epochs", "2", "--limit", "3000", "--quiet"]
    places = [
        (tmp_path / "ref", {}),
        (tmp_path / ("k9-" + "x" * 120), {"MNISTLAB_PADDING": "p" * 20_000}),  # a long name, a large environment
    ]
    for out, env in places:
        result = mnistlab(*args, "--output-dir", out, cwd=out.parent if env else tmp_path, env=env)
        assert result.returncode == 0, result.stderr
    (a, _), (b, _) = places
    assert read_history(a) and [{k: v for k, v in h.items() if k != "seconds"} for h in read_history(a)] == [
        {k: v for k, v in h.items() if k != "seconds"} for h in read_history(b)
    ]
    one, other = (torch.load(p / "last.pt", weights_only=True) for p in (a, b))
    assert all(torch.equal(one["state_dict"][k], other["state_dict"][k]) for k in one["state_dict"])
    assert one["history"] == [{**h, "seconds": o["seconds"]} for h, o in zip(other["history"], one["history"])]


def test_a_run_resumes_with_the_thread_count_it_started_with(tmp_path, tiny_data):
    """Left to torch's default, the thread count follows the CPUs a process may use; a resumed run keeps its own."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        whole = fit_group(group(tmp_path, "whole", threads=0), data=tiny_data, **QUIET)
        fit_group(group(tmp_path, "cut", threads=0), data=tiny_data, stop_after=1, **QUIET)
        torch.set_num_threads(1)  # a process allowed one CPU
        resumed = fit_group(group(tmp_path, "cut", threads=0), data=tiny_data, resume=True, **QUIET)
        assert torch.get_num_threads() == 2
        assert [s["test_acc_last3"] for s in resumed] == [s["test_acc_last3"] for s in whole]
    finally:
        torch.set_num_threads(before)
