"""`mnistlab search` on tiny settings: a study stored in SQLite, resumed, budgets enforced, bad input refused."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

pytestmark = pytest.mark.real_data


def mnistlab(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mnistlab", *args], capture_output=True, text=True, cwd=cwd)


def test_a_tiny_study_runs_twice_and_the_second_continues_it(tmp_path):
    (tmp_path / "space.json").write_text(json.dumps({"width": [12, 16], "stem1": [4, 5], "stem2": [8, 9],
                                                     "depth": [2, 3], "factored": [True]}))  # fmt: skip
    args = ["search", "--max-params", "3500", "--trials", "2", "--seeds", "1,2", "--epochs", "2", "--limit", "600",
            "--storage", "sqlite:///study.db", "--space", "space.json", "--threads", "1"]  # fmt: skip
    for _ in range(2):
        result = mnistlab(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert "4 trials (2 new)" in result.stdout
    study = optuna.load_study(study_name="record-3500", storage=f"sqlite:///{tmp_path / 'study.db'}")
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert finished and all(t.user_attrs["params"] <= 3500 for t in finished)
    for t in finished:  # the score is the worst seed's validation mean, from runs that never saw test
        runs = [
            tmp_path / "results" / "search" / "record-3500" / f"trial{t.number}" / f"s{s}" for s in (1, 2)
        ]
        assert t.value == pytest.approx(min(t.user_attrs["val_per_seed"]))
        for run in runs:
            summary = json.loads((run / "summary.json").read_text())
            assert summary["test_acc_last3"] == [] and summary["last_test_acc"] is None
            assert json.loads((run / "config.json").read_text())["arch"] == t.user_attrs["arch"]


@pytest.mark.parametrize("args, message", [
    (["--max-params", "50"], "no candidate of the search space fits 50 parameters"),
    (["--max-params", "3500", "--storage", "nosuchdb://x"], "cannot open the study storage"),
    (["--max-params", "3500", "--space", "space.json"], "names unknown field 'widths'"),
])  # fmt: skip
def test_bad_search_input_is_one_line(tmp_path, args, message):
    (tmp_path / "space.json").write_text(json.dumps({"widths": [12, 16]}))
    result = mnistlab("search", "--trials", "1", "--epochs", "1", "--limit", "300", *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_trial_over_budget_is_never_trained(tmp_path):
    from mnistlab.search import Settings, Space, search

    settings = Settings("tiny", f"sqlite:///{tmp_path / 's.db'}", max_params=3000, seeds=(1,), epochs=1, limit=300,
                        results=str(tmp_path))  # fmt: skip
    space = Space(width=(20, 20), stem1=(4, 4), stem2=(8, 8), depth=(2, 2), factored=(False, True))
    study = search(settings, space, trials=6, log=lambda m: None)  # separable: ~1.5k parameters; full: ~8k
    over = [t for t in study.trials if t.user_attrs.get("over_budget")]
    assert over and all(t.user_attrs["params"] > 2500 for t in over)
    for t in over:
        assert not (tmp_path / "search" / "tiny" / f"trial{t.number}").exists()
