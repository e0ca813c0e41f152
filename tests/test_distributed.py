"""Runs on Ray: a local 2-CPU cluster that each test starts and stops (Ray is in the dev extra)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
from pathlib import Path

import pytest

from mnistlab.core.errors import MnistlabError
from mnistlab.core.rundir import read_history, run_status
from mnistlab.jobs.distributed import Cluster, connect, pack, unpack
from mnistlab.jobs.runner import run_all
from mnistlab_lab.studies import Run

ROOT = Path(__file__).resolve().parents[1]
TINY = {"epochs": 2, "batch_size": 64, "val_size": 100, "device": "cpu", "threads": 1}


class Interrupted(Exception):
    pass


@pytest.mark.ray
def test_runs_on_a_local_ray_cluster_equal_serial_ones_and_resume_there(tmp_path, tiny_data):
    """Three runs: two new ones, and one interrupted after its first epoch that the driver sends with its
    task. Every number, and every file a run writes but its timings, equals the serial one-thread run's."""
    from mnistlab.training.engine import fit_group

    runs = [Run("sepnet3k", seed, "tuning", f"c/s{seed}") for seed in (1, 2, 3)]
    serial = run_all(
        [r.config(tmp_path / "serial") for r in runs],
        overrides=TINY,
        progress=False,
        log=lambda m: None,
        data=tiny_data,
    )

    # seed 3 is interrupted after one epoch, before Ray sees it
    config = runs[2].config(tmp_path / "ray")
    config = type(config).from_dict({**config.to_dict(), **TINY})

    def stop(epoch, histories):
        raise Interrupted

    with pytest.raises(Interrupted):
        fit_group([config], progress=False, log=lambda m: None, data=tiny_data, after_epoch=stop)
    assert run_status(config.output_dir) == "partial"

    logs: list[str] = []
    on_ray = run_all(
        [r.config(tmp_path / "ray") for r in runs],
        overrides=TINY,
        log=logs.append,
        data=tiny_data,
        cluster=Cluster(cpus=2),
        stack=False,
    )
    assert any("3 jobs on Ray" in line for line in logs)
    for one, other in zip(serial, on_ray):
        keys = ("seed", "last_val_acc", "test_acc_last3", "best_epoch", "params")
        assert [one[k] for k in keys] == [other[k] for k in keys]
    for seed in (1, 2, 3):
        here, there = (
            tmp_path / "serial" / "tuning" / "c" / f"s{seed}",
            tmp_path / "ray" / "tuning" / "c" / f"s{seed}",
        )
        assert run_status(there) == "done"
        assert [h["val_acc"] for h in read_history(here)] == [h["val_acc"] for h in read_history(there)]
        written = json.loads((there / "config.json").read_text())
        assert written["output_dir"] == str(there)  # the driver's path, though the task trained elsewhere
        assert {k: v for k, v in written.items() if k != "output_dir"} == {
            k: v for k, v in json.loads((here / "config.json").read_text()).items() if k != "output_dir"
        }
        assert json.loads((there / "summary.json").read_text())["provenance"]["git_commit"] is not None
    log = (tmp_path / "ray" / "tuning" / "c" / "s3" / "train.log").read_text()
    assert "after epoch 1" in log and len(re.findall(r"epoch +2/2", log)) == 1  # resumed on Ray, not redone


def test_an_address_where_something_else_answers_is_one_line(mnistlab, tmp_path):
    """A server that accepts the connection but is no Ray head (here one that answers HTTP/1.1 400, as a proxy
    taking every port does): one line, nothing written, instead of Ray's half-minute of retries and a traceback."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            with client:
                client.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    try:
        args = ("reproduce", "--models", "model8", "--seeds", "1", "--no-tuning", "--results", str(tmp_path))
        result = mnistlab(*args, "--ray-address", f"127.0.0.1:{port}", timeout=60)
    finally:
        server.close()
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"error: cannot reach a Ray cluster at 127.0.0.1:{port} (something answers there, but")
    assert not any(tmp_path.iterdir())


def test_pack_and_unpack_carry_exactly_a_runs_files(tmp_path):
    run = tmp_path / "a"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "history.jsonl").write_text("{}\n")
    (run / "notes.txt").write_text("the user's own file: not a run file")
    files = pack(run)
    assert set(files) == {"config.json", "history.jsonl"}
    unpack(files, tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["config.json", "history.jsonl"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_or_malformed_ray_address_is_one_line(mnistlab, tmp_path):
    port = free_port()
    args = ("reproduce", "--models", "model8", "--seeds", "1", "--no-tuning", "--results", str(tmp_path))
    result = mnistlab(*args, "--ray-address", f"127.0.0.1:{port}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot reach a Ray cluster at 127.0.0.1:{port}")
    result = mnistlab(*args, "--ray-address", "nohost")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: --ray-address must be HOST:PORT, got 'nohost'"
    assert not any(tmp_path.iterdir())  # nothing was written


def test_without_ray_installed_the_message_says_how(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MnistlabError, match=r"pip install 'mnistlab\[ray\]'"):
        connect(Cluster())


@pytest.mark.ray
@pytest.mark.real_data
def test_reproduce_on_ray_writes_what_a_serial_reproduce_writes(mnistlab, tmp_path):
    """The command a user types: two real-data runs of a few hundred images on a local Ray cluster."""
    tiny = (
        "--models",
        "model8",
        "--seeds",
        "1,2",
        "--no-tuning",
        "--epochs",
        "1",
        "--limit",
        "300",
        "--quiet",
    )
    serial = mnistlab("reproduce", *tiny, "--threads", "1", "--no-stack", "--results", str(tmp_path / "serial"))
    assert serial.returncode == 0, serial.stderr
    ray = mnistlab("reproduce", *tiny, "--ray", "--no-stack", "--results", str(tmp_path / "ray"))
    assert ray.returncode == 0, ray.stderr
    assert "2 jobs on Ray" in ray.stdout
    for seed in (1, 2):
        one = json.loads((tmp_path / "serial" / "model8" / f"seed{seed}" / "summary.json").read_text())
        other = json.loads((tmp_path / "ray" / "model8" / f"seed{seed}" / "summary.json").read_text())
        assert one["test_acc_last3"] == other["test_acc_last3"] and one["best_train_acc"] == other["best_train_acc"]
    again = mnistlab("reproduce", *tiny, "--ray", "--results", str(tmp_path / "ray"))
    assert "2 already done, 0 to run" in again.stdout  # a second run continues: nothing left to do
    refused = mnistlab("reproduce", *tiny)
    assert refused.returncode == 2 and "write them elsewhere with --results DIR" in refused.stderr
    shutil.rmtree(tmp_path / "serial")


def test_ctrl_c_cancels_every_task_still_out_and_leaves_ray(monkeypatch):
    """What `reproduce --ray` does on Ctrl-C, with a stand-in for Ray that records the calls."""
    import mnistlab.jobs.distributed as distributed

    calls: list[tuple] = []

    class FakeRay:
        def cancel(self, ref, force):
            calls.append(("cancel", ref, force))

        def shutdown(self):
            calls.append(("shutdown",))

    monkeypatch.setattr(distributed, "connect", lambda cluster: FakeRay())
    with pytest.raises(KeyboardInterrupt):
        with distributed.session(Cluster()) as (_, out):
            out.update({"a": "job a", "b": "job b"})
            raise KeyboardInterrupt
    assert calls == [("cancel", "a", True), ("cancel", "b", True), ("shutdown",)]
    calls.clear()
    with distributed.session(Cluster()):
        pass
    assert calls == [("shutdown",)]
