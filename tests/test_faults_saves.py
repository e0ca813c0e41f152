"""A group saved as one: a kill at any point of an epoch's save, or of the summaries' write, leaves a group that
resumes (the runner's path, as `train --resume` takes it) to the numbers of a group never stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mnistlab.core import fileio
from mnistlab.core.fileio import COMMIT, finish_commit
from mnistlab.core.rundir import RUN_FILES, read_history, read_summary, run_status
from mnistlab.jobs.runner import run_all
from mnistlab.models import config_for
from mnistlab.training.engine import fit_group

QUIET = dict(progress=False, log=lambda m: None)
TESTS = Path(__file__).parent


def group(tmp_path, folder, seeds=(1, 2), **overrides):
    values = {**dict(epochs=2, batch_size=64, val_size=100, device="cpu", threads=1, limit=600), **overrides}
    return [config_for("sepnet3k", seed=s, output_dir=str(tmp_path / folder / f"seed{s}"), **values) for s in seeds]


def rows(folder):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in read_history(folder)]


class Killed(BaseException):
    """Stands for a kill: nothing after the raising call runs (no handler of ours catches a BaseException)."""


def cut_at(monkeypatch, tmp_path, tiny_data, folder, nth):
    """Train a group, killed at the ``nth`` rename after epoch 1 is saved (epoch 2's save, then the summaries').
    Return the renames there were in all."""
    real, calls = fileio.os.replace, {"armed": False, "n": 0}

    def replace(src, dst):
        if calls["armed"]:
            if calls["n"] == nth:
                raise Killed
            calls["n"] += 1
        return real(src, dst)

    def arm(epoch, histories):
        calls["armed"] = True

    monkeypatch.setattr(fileio.os, "replace", replace)
    try:
        fit_group(group(tmp_path, folder), data=tiny_data, after_epoch=arm, **QUIET)
    except Killed:
        pass
    finally:
        monkeypatch.setattr(fileio.os, "replace", real)
    return calls["n"]


def test_a_group_killed_at_any_rename_of_a_save_resumes_to_the_uninterrupted_numbers(tmp_path, tiny_data, monkeypatch):
    whole = fit_group(group(tmp_path, "whole"), data=tiny_data, **QUIET)
    renames = cut_at(monkeypatch, tmp_path, tiny_data, "count", nth=10**6)  # never killed: counts the renames
    assert renames >= 8  # epoch 2: each seed's last.pt, history, best.pt (when better) and two records; summaries
    for nth in range(renames):
        folder = f"cut{nth}"
        cut_at(monkeypatch, tmp_path, tiny_data, folder, nth)
        states = {run_status(tmp_path / folder / s) for s in ("seed1", "seed2")}
        resumed = run_all(group(tmp_path, folder), stack=True, data=tiny_data, **QUIET)
        for k, seed in enumerate(("seed1", "seed2")):
            assert rows(tmp_path / folder / seed) == rows(tmp_path / "whole" / seed), (nth, states)
            assert resumed[k]["test_acc_last3"] == whole[k]["test_acc_last3"]
            leftovers = [p.name for p in (tmp_path / folder / seed).iterdir() if p.name.startswith(".")]
            assert leftovers == [], (nth, leftovers)


def test_a_commit_record_completes_in_any_folder_it_names(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    fileio.atomic_write_all([(a / "x", lambda f: f.write(b"old")), (b / "y", lambda f: f.write(b"old"))])
    assert not (a / COMMIT).exists() and not (b / COMMIT).exists()
    real = fileio.os.replace
    seen = []

    def first_only(src, dst):  # the records are written, then the process dies after the first file's rename
        if str(dst).endswith(("/x", "/y")) and seen:
            raise Killed
        if str(dst).endswith(("/x", "/y")):
            seen.append(dst)
        return real(src, dst)

    fileio.os.replace = first_only
    try:
        with pytest.raises(Killed):
            fileio.atomic_write_all([(a / "x", lambda f: f.write(b"new")), (b / "y", lambda f: f.write(b"new"))])
    finally:
        fileio.os.replace = real
    assert (a / "x").read_bytes() == b"new" and (b / "y").read_bytes() == b"old"
    assert finish_commit(b, ("y",))  # from the other folder's record: both files new, both records gone
    assert (a / "x").read_bytes() == b"new" and (b / "y").read_bytes() == b"new"
    assert not any(p.name.startswith(".") for p in [*a.iterdir(), *b.iterdir()])


def test_a_damaged_commit_record_is_one_line(tmp_path):
    (tmp_path / COMMIT).write_text("{not json")
    from mnistlab.core.errors import MnistlabError

    with pytest.raises(MnistlabError, match="is damaged .*delete it"):
        finish_commit(tmp_path, RUN_FILES)


SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from conftest import tiny_digits
from mnistlab.core import fileio
from mnistlab.models import config_for
from mnistlab.training.engine import fit_group
where, nth = sys.argv[1], int(sys.argv[2])
real, calls = {hook}, {{"armed": False, "n": 0}}
def hooked(*args, **kwargs):
    if calls["armed"]:
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        calls["n"] += 1
    return real(*args, **kwargs)
{patch} = hooked
def arm(epoch, histories):
    calls["armed"] = True
values = dict(epochs=2, batch_size=64, val_size=100, device="cpu", threads=1, limit=600)
configs = [config_for("sepnet3k", seed=s, output_dir=f"{{where}}/seed{{s}}", **values) for s in (1, 2)]
fit_group(configs, data=(tiny_digits(600, seed=0), tiny_digits(200, seed=1)), progress=False, log=print, after_epoch=arm)
"""


@pytest.mark.parametrize(
    "hook, patch, nth",
    [
        ("fileio._staged", "fileio._staged", 2),  # killed while the files are staged: litter, no record
        ("fileio.os.replace", "fileio.os.replace", 1),  # while the commit records are written
        ("fileio.os.replace", "fileio.os.replace", 4),  # between the renames of epoch 2's files
        ("fileio.os.replace", "fileio.os.replace", 9),  # between the two summaries
    ],
)
def test_a_kill_9_at_a_save_resumes_to_the_uninterrupted_numbers(tmp_path, tiny_data, hook, patch, nth):
    whole = fit_group(group(tmp_path, "whole"), data=tiny_data, **QUIET)
    script = SCRIPT.format(tests=str(TESTS), hook=hook, patch=patch)
    cut = tmp_path / "cut"
    done = subprocess.run([sys.executable, "-c", script, str(cut), str(nth)], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    resumed = run_all(group(tmp_path, "cut"), stack=True, data=tiny_data, **QUIET)
    for k, seed in enumerate(("seed1", "seed2")):
        assert rows(cut / seed) == rows(tmp_path / "whole" / seed)
        assert resumed[k]["test_acc_last3"] == whole[k]["test_acc_last3"]
        assert read_summary(cut / seed)["epochs"] == 2
        assert not any(p.name.startswith(".") for p in (cut / seed).iterdir())


def test_a_group_killed_before_its_first_save_starts_again_to_the_same_numbers(tmp_path, tiny_data):
    whole = fit_group(group(tmp_path, "whole"), data=tiny_data, **QUIET)
    configs = group(tmp_path, "early")
    for config in configs:  # what a kill during epoch 1 leaves: the configs only
        Path(config.output_dir).mkdir(parents=True)
        Path(config.output_dir, "config.json").write_text(json.dumps(config.to_dict()))
    again = fit_group(configs, data=tiny_data, resume=True, **QUIET)
    assert [s["test_acc_last3"] for s in again] == [s["test_acc_last3"] for s in whole]


def test_a_group_left_by_an_older_save_at_two_epochs_says_what_works(tmp_path, tiny_data):
    """A group cut by mnistlab before saves were one: seed 2 an epoch behind. The message names what to delete;
    done, the same command finishes (seed 1 alone: its epochs are all there; seed 2 trained again)."""
    fit_group(group(tmp_path, "old"), data=tiny_data, stop_after=1, **QUIET)
    (tmp_path / "behind").mkdir()
    for name in ("last.pt", "history.jsonl", "best.pt"):
        shutil.copy(tmp_path / "old" / "seed2" / name, tmp_path / "behind" / name)
    fit_group(group(tmp_path, "old"), data=tiny_data, resume=True, **QUIET)
    for name in ("last.pt", "history.jsonl", "best.pt"):
        os.replace(tmp_path / "behind" / name, tmp_path / "old" / "seed2" / name)
    for seed in ("seed1", "seed2"):
        (tmp_path / "old" / seed / "summary.json").unlink()
    from mnistlab.core.errors import MnistlabError

    with pytest.raises(MnistlabError, match=r"seed2 stopped at an earlier epoch .* delete its last.pt"):
        run_all(group(tmp_path, "old"), stack=True, data=tiny_data, **QUIET)
    for name in ("last.pt", "history.jsonl", "best.pt"):
        (tmp_path / "old" / "seed2" / name).unlink(missing_ok=True)
    done = run_all(group(tmp_path, "old"), stack=True, data=tiny_data, **QUIET)
    assert [s["epochs"] for s in done] == [2, 2]
