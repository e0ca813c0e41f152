"""A group saved as one: a kill at any point of an epoch's save, or of the summaries' write, leaves a group that
resumes (the runner's path, as `train --resume` takes it) to the numbers of a group never stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
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


@pytest.mark.kills
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


@pytest.mark.kills
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


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("lr", "0.05", "field 'lr' must be a number"),
        ("epochs", "3", "field 'epochs' must be an integer"),
        ("epochs", 2.5, "field 'epochs' must be an integer"),
        ("augment", "none", "field 'augment' must be an object of rotation"),
        ("augment", {"rotation": "5"}, "field 'augment' must be an object"),
        ("seed", None, "field 'seed' must not be null"),
        ("teachers", "a.pt", "field 'teachers' must be a list of strings"),
        ("compile", "yes", "field 'compile' must be true or false"),
        ("epochs", 0, "epochs must be positive"),
        ("optimizer", "lion", "unknown optimizer 'lion'"),
    ],
)
def test_a_hand_edited_config_is_one_line_naming_the_file_and_the_field(tmp_path, field, value, says):
    from mnistlab.core.config import TrainConfig
    from mnistlab.core.errors import MnistlabError

    config = group(tmp_path, "edited", seeds=(1,))[0]
    values = {**config.to_dict(), field: value}
    Path(config.output_dir).mkdir(parents=True)
    Path(config.output_dir, "config.json").write_text(json.dumps(values))
    with pytest.raises(MnistlabError, match=rf"^{config.output_dir}/config.json: {says}") as caught:
        TrainConfig.read(config.output_dir)
    assert "\n" not in str(caught.value)


def test_resume_of_a_hand_edited_config_is_one_line_and_no_traceback(mnistlab, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    values = {**group(tmp_path, "x", seeds=(1,))[0].to_dict(), "lr": "0.05", "output_dir": str(run)}
    (run / "config.json").write_text(json.dumps(values))
    done = mnistlab("train", "--resume", run)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {run}/config.json: field 'lr' must be a number, got \"0.05\"; correct it (or restore the file)"
    ]


@pytest.mark.parametrize("content", ["99999999999999999999999999", "-5", "garbage\x00", ""])
def test_a_lock_file_holding_anything_is_read_defensively(tmp_path, tiny_data, content):
    from mnistlab.core.fileio import process_alive
    from mnistlab.core.rundir import LOCK

    folder = tmp_path / "g" / "seed1"
    folder.mkdir(parents=True)
    (folder / LOCK).write_text(content)  # left by a process that is gone: no process holds it
    fit_group(group(tmp_path, "g", seeds=(1,), epochs=1), data=tiny_data, **QUIET)
    assert read_summary(folder)["epochs"] == 1 and not (folder / LOCK).exists()
    assert process_alive(10**30) is False and process_alive(-1) is False


def test_the_next_report_removes_what_a_killed_one_left(tmp_path):
    from mnistlab.core.fileio import remove_litter

    (tmp_path / ".REPORT.md.abc123.tmp").write_text("half")
    (tmp_path / ".other.txt.abc123.tmp").write_text("not ours to remove")
    assert [p.name for p in remove_litter(tmp_path, ("REPORT.md",))] == [".REPORT.md.abc123.tmp"]
    assert (tmp_path / ".other.txt.abc123.tmp").exists()


def test_a_full_disk_names_the_file_and_advises_what_the_command_can_do(tmp_path, monkeypatch):
    import errno

    from mnistlab import cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # a write's error names no file

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OSError) as caught:
        fileio.atomic_write_text(tmp_path / "found.json", "[]")
    assert caught.value.filename == str(tmp_path / "found.json")
    monkeypatch.setattr(cli, "HINTS", cli.Hints())  # a command like register, restored after
    said = cli._disk_fault(caught.value)
    assert (
        said
        == f"{tmp_path}/found.json: No space left on device; free some space, then run the same command again (what was written stays whole)"
    )
    assert "--resume" not in said
    cli.stopped_hint(f"`mnistlab train --resume {tmp_path}`")  # train says how to continue
    assert cli._disk_fault(caught.value).endswith(
        f"then `mnistlab train --resume {tmp_path}` continues from the last complete epoch"
    )
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path / "data"))
    readonly = cli._disk_fault(PermissionError(errno.EROFS, "Read-only file system", str(tmp_path / "data" / "x")))
    assert readonly.endswith("point the MNIST cache at a folder this user may write ($MNISTLAB_DATA, or --data-dir)")


def test_a_hand_edited_value_of_the_right_type_says_which_fields_to_set_back(tmp_path, tiny_data):
    from mnistlab.core.config import TrainConfig
    from mnistlab.core.errors import MnistlabError

    configs = group(tmp_path, "edited")
    fit_group(configs, data=tiny_data, stop_after=1, **QUIET)
    path = Path(configs[0].output_dir) / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "lr": 0.123}))
    read = [TrainConfig.read(c.output_dir) for c in configs]
    with pytest.raises(MnistlabError, match=r"config.json differs from the config its last.pt was trained with \(lr\)"):
        run_all(read, stack=True, data=tiny_data, **QUIET)


def test_litter_in_a_shared_cache_is_removed_only_once_it_is_stale(tmp_path):
    from mnistlab.core.fileio import remove_litter

    old, fresh = tmp_path / ".abc.pt.x1.tmp", tmp_path / ".def.pt.x2.tmp"
    old.write_text("killed")
    fresh.write_text("a live writer's")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert remove_litter(tmp_path, None, older_than=3600) == [old] and fresh.exists()


def test_a_config_with_layers_as_data_reads_back():
    """``arch`` (a searched model's builder arguments) is an object, ``data_dir`` a string or null."""
    from mnistlab.core.config import TrainConfig

    config = TrainConfig.from_dict({"model": "model8", "arch": {"stem": [5, 9]}, "data_dir": None, "limit": 300}, "x")
    assert config.arch == {"stem": [5, 9]} and config.limit == 300
