"""`mnistlab search` on tiny settings: a study stored in SQLite, resumed, budgets enforced, bad input refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
from conftest import HOLD, held_by

pytestmark = pytest.mark.real_data


def tiny_settings(tmp_path, name, db, *, threads=1, **changes):
    """A study's settings on 300 images of each split, in ``tmp_path``, stored in the SQLite file ``db``."""
    from mnistlab.jobs.search import Settings

    return Settings(name=name, storage=f"sqlite:///{db}", limit=300, results=str(tmp_path), threads=threads, **changes)


def test_a_tiny_study_runs_twice_and_the_second_continues_it(mnistlab, tmp_path):
    (tmp_path / "space.json").write_text(
        json.dumps({"width": [12, 16], "stem1": [4, 5], "stem2": [8, 9], "depth": [2, 3], "factored": [True]})
    )
    args = [
        "search",
        "--max-params",
        "3500",
        "--trials",
        "2",
        "--seeds",
        "1,2",
        "--epochs",
        "2",
        "--limit",
        "600",
        "--storage",
        "sqlite:///study.db",
        "--space",
        "space.json",
        "--threads",
        "1",
    ]
    for _ in range(2):
        result = mnistlab(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert "4 trials (2 new)" in result.stdout
    study = optuna.load_study(study_name="record-3500", storage=f"sqlite:///{tmp_path / 'study.db'}")
    drawn = [t.params for t in study.trials]  # a resumed study with one worker draws new trials, not its first again
    assert drawn[2] != drawn[0] and drawn[3] != drawn[1], drawn
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert finished and all(t.user_attrs["params"] <= 3500 for t in finished)
    assert study.user_attrs["commands"] == ["mnistlab " + " ".join(args)] * 2  # what the report says made it
    for t in finished:  # the score is the worst seed's validation mean, from runs that never saw test
        runs = [tmp_path / "runs" / "search" / "record-3500" / f"trial{t.number}" / f"s{s}" for s in (1, 2)]
        assert t.value == pytest.approx(min(t.user_attrs["val_per_seed"]))
        for run in runs:
            summary = json.loads((run / "summary.json").read_text())
            assert summary["test_acc_last3"] == [] and summary["last_test_acc"] is None
            assert json.loads((run / "config.json").read_text())["arch"] == t.user_attrs["arch"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-params", "50"], "no candidate of the search space fits 50 parameters"),
        (["--max-params", "3500", "--storage", "nosuchdb://x"], "cannot open the study storage"),
        (["--max-params", "3500", "--space", "space.json"], "names unknown field 'widths'"),
        (["--max-params", "3500", "--deadline", "0"], "--deadline is seconds from now, more than 0"),
    ],
)
def test_bad_search_input_is_one_line(mnistlab, tmp_path, args, message):
    (tmp_path / "space.json").write_text(json.dumps({"widths": [12, 16]}))
    result = mnistlab("search", "--trials", "1", "--epochs", "1", "--limit", "300", *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "space, message",
    [
        ([1, 2], "is not a JSON object of fields"),
        ({"width": 12}, "'width' is a range [low, high] of integers of at least 1, got 12"),
        ({"width": [30, 12]}, "'width' is a range [low, high] with low <= high"),
        ({"depth": [2.5, 4]}, "'depth' is a range [low, high] of integers"),
        ({"lr": ["a", 1]}, "'lr' is a range [low, high] of numbers"),
        ({"lr": [0, 0.1]}, "'lr' is a range of one-cycle peaks above 0"),
        ({"translate": [0.1, 0.9]}, "augmentation translate=0.9 is out of range"),
        ({"batch_size": [0]}, "'batch_size' is a list of choices, integers of at least 1, got [0]"),
        ({"batch_size": []}, "'batch_size' is a list of choices"),
        ({"factored": [1]}, "'factored' is a list of choices, true/false values, got [1]"),
        ({"ema": [0.0, 1.0]}, "'ema' is a list of decays below 1"),
    ],
)
def test_a_malformed_space_file_is_one_line_before_any_trial(mnistlab, tmp_path, space, message):
    (tmp_path / "space.json").write_text(json.dumps(space))
    result = mnistlab(
        "search",
        "--max-params",
        "3500",
        "--trials",
        "1",
        "--epochs",
        "1",
        "--limit",
        "300",
        "--space",
        "space.json",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "search" / "record-3500.db").exists()  # no study was opened


def test_every_recorded_space_file_loads():
    from mnistlab.jobs.search import Space

    files = sorted((Path(__file__).resolve().parents[1] / "results" / "search").glob("*.space.json"))
    assert len(files) >= 2
    for path in files:
        assert Space.from_file(path).width[0] >= 1


def test_a_trial_over_budget_is_never_trained(tmp_path):
    from mnistlab.jobs.search import Space, search

    settings = tiny_settings(tmp_path, "tiny", tmp_path / "s.db", max_params=3000, seeds=(1,), epochs=1, threads=0)
    space = Space(width=(20, 20), stem1=(4, 4), stem2=(8, 8), depth=(2, 2), factored=(False, True))
    study = search(settings, space, trials=6, log=lambda m: None)  # separable: ~1.5k parameters; full: ~8k
    over = [t for t in study.trials if t.user_attrs.get("over_budget")]
    assert over and all(t.user_attrs["params"] > 2500 for t in over)
    for t in over:
        assert not (tmp_path / "search" / "tiny" / f"trial{t.number}").exists()


TINY_SPACE = {
    "width": [12, 16],
    "stem1": [4, 5],
    "stem2": [8, 9],
    "depth": [2, 3],
    "factored": [True],
    "batch_size": [32],
}


def test_two_local_workers_share_one_study_and_a_trial_becomes_a_model(tmp_path):
    from mnistlab.core.config import TrainConfig
    from mnistlab.jobs.search import Space, open_existing, register_trial, search
    from mnistlab.models import config_for, create_model, get_card
    from mnistlab.models.found import register_entries

    settings = tiny_settings(tmp_path, "tiny", tmp_path / "s.db", max_params=3500, seeds=(1, 2), epochs=1)
    study = search(
        settings, Space(**{k: tuple(v) for k, v in TINY_SPACE.items()}), trials=3, log=lambda m: None, workers=2
    )
    assert len(study.trials) == 3 and study.user_attrs["settings"]["seeds"] == [1, 2]
    drawn = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(drawn)) == 3  # each worker has its own sampler seed: no trial is drawn twice
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done

    found = tmp_path / "found.json"
    entry = register_trial(open_existing(settings.name, settings.storage), done[0].number, "tiny_found", found)
    with pytest.raises(Exception, match="exists already"):
        register_trial(open_existing(settings.name, settings.storage), done[0].number, "model8", found)
    with pytest.raises(Exception, match="lower-case letters"):
        register_trial(open_existing(settings.name, settings.storage), done[0].number, "Tiny Found", found)
    with pytest.raises(Exception, match="did not finish"):
        register_trial(open_existing(settings.name, settings.storage), 99, "other", found)
    from mnistlab_lab.records import load_searches
    from mnistlab_lab.report import Figures, searches_section

    (tmp_path / "search" / "tiny.db").parent.mkdir(exist_ok=True)
    (tmp_path / "s.db").rename(tmp_path / "search" / "tiny.db")  # where `mnistlab search` keeps its studies
    figures = Figures(tmp_path / "figures", tmp_path / "REPORT.md")
    section = searches_section(load_searches(tmp_path), figures)
    figures.draw()
    assert "### Search `tiny` (stored in `search/tiny.db`)" in section and "3 trials:" in section
    assert f"| {done[0].number} | {done[0].user_attrs['params']:,} | {done[0].value:.2f} |" in section
    assert (tmp_path / "figures" / "search-tiny.png").stat().st_size > 1000
    assert f"3 trials: {len(done)} finished" in section  # a pruned trial's last value is not a score
    register_entries(found)  # what importing mnistlab.models does with the user's found.json
    card = get_card("tiny_found")
    assert sum(p.numel() for p in create_model("tiny_found").parameters()) == entry["params"] == card.params
    trained = TrainConfig.from_dict(
        json.loads((tmp_path / "search" / "tiny" / f"trial{done[0].number}" / "s1" / "config.json").read_text())
    )
    mine = config_for("tiny_found")
    for key in ("lr", "ema", "augment", "epochs", "batch_size", "scheduler", "optimizer"):
        assert getattr(mine, key) == getattr(trained, key), key
    assert trained.batch_size == 32  # drawn from the space, not the family's 64


def test_a_trial_from_before_the_batch_size_was_drawn_keeps_the_familys():
    from mnistlab.jobs.search import recipe_of

    drawn = {"rotation": 1.0, "translate": 0.0, "scale": 0.0, "lr": 0.05, "ema": 0.0}
    assert recipe_of(drawn)["batch_size"] == 64
    assert recipe_of({**drawn, "batch_size": 128})["batch_size"] == 128


@pytest.mark.ray
def test_search_workers_on_a_local_ray_cluster(mnistlab, tmp_path):
    (tmp_path / "space.json").write_text(json.dumps(TINY_SPACE))
    args = [
        "search",
        "--max-params",
        "3500",
        "--trials",
        "2",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--limit",
        "300",
        "--storage",
        "sqlite:///study.db",
        "--space",
        "space.json",
        "--workers",
        "2",
        "--ray",
    ]
    result = mnistlab(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 search workers on Ray" in result.stdout and "2 trials (2 new)" in result.stdout
    assert not (tmp_path / "runs" / "search" / "record-3500").exists()  # trial folders stayed on the workers
    study = optuna.load_study(study_name="record-3500", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert sum(t.state.name == "COMPLETE" for t in study.trials) >= 1


def test_a_timeout_stops_new_trials_not_the_one_training(tmp_path):
    from mnistlab.jobs.search import Space, search

    settings = tiny_settings(tmp_path, "t", tmp_path / "t.db", max_params=3500, seeds=(1,), epochs=1)
    space = Space(width=(12, 12), stem1=(4, 4), stem2=(8, 8), depth=(2, 2), factored=(True,))
    study = search(settings, space, trials=5, log=lambda m: None, timeout=0.01)
    assert len(study.trials) == 1 and study.trials[0].state.name == "COMPLETE"


def test_registering_from_a_missing_study_is_one_line(mnistlab, tmp_path):
    result = mnistlab(
        "register", "--study", "nope", "--trial", "1", "--name", "x", "--results", str(tmp_path), cwd=tmp_path
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == f"error: no study storage at sqlite:///{tmp_path}/search/nope.db; run `mnistlab search` first"
    )


def test_a_trial_pruned_by_the_median_rule_is_not_a_finished_one_in_the_report(tmp_path):
    """Optuna gives a pruned trial its last reported value: the report must not count it as a score."""
    from mnistlab_lab.records import load_searches
    from mnistlab_lab.report import Figures, searches_section

    (tmp_path / "search").mkdir()
    study = optuna.create_study(
        study_name="s", storage=f"sqlite:///{tmp_path / 'search' / 's.db'}", direction="maximize"
    )
    for state, value in ((optuna.trial.TrialState.COMPLETE, 99.1), (optuna.trial.TrialState.PRUNED, 99.9)):
        trial = study.ask()
        for name in ("lr", "ema", "rotation", "translate", "scale"):
            trial.suggest_float(name, 0.0, 1.0)
        arch = {"stem": [4, 8], "body": [12, 12], "padded": 0, "factored": True}
        trial.set_user_attr("params", 1_000)
        trial.set_user_attr("arch", arch)
        trial.report(value, 1)
        study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    figures = Figures(tmp_path / "figures", tmp_path / "REPORT.md")
    section = searches_section(load_searches(tmp_path), figures)
    figures.draw()
    assert "2 trials: 1 finished, 1 pruned by the median rule" in section
    assert "| 99.10 |" in section and "99.90" not in section


class _Clock:
    """time.time() for the search module: 0 at the first call (the search's start), 100 after."""

    def __init__(self) -> None:
        self.calls = 0

    def time(self) -> float:
        self.calls += 1
        return 0.0 if self.calls == 1 else 100.0


@pytest.mark.parametrize("epochs, state", [(2, "FAIL"), (1, "COMPLETE")])
def test_a_deadline_stops_a_trial_in_flight_but_not_after_its_last_epoch(tmp_path, monkeypatch, epochs, state):
    import mnistlab.jobs.search
    from mnistlab.jobs.search import Space, search
    from mnistlab_lab.records import load_searches
    from mnistlab_lab.report import Figures, searches_section

    monkeypatch.setattr(mnistlab.jobs.search, "time", _Clock())
    (tmp_path / "search").mkdir()
    settings = tiny_settings(
        tmp_path, "d", tmp_path / "search" / "d.db", max_params=3500, seeds=(1,), epochs=epochs, stop_at=10.0
    )
    space = Space(width=(12, 12), stem1=(4, 4), stem2=(8, 8), depth=(2, 2), factored=(True,), batch_size=(32,))
    study = search(settings, space, trials=1, log=lambda m: None)
    assert [t.state.name for t in study.trials] == [state]
    figures = Figures(tmp_path / "figures", tmp_path / "REPORT.md")
    section = searches_section(load_searches(tmp_path), figures)
    figures.draw()
    if state == "FAIL":
        assert study.trials[0].user_attrs["stopped"] == "at the deadline, after epoch 1"
        assert "1 trials: 0 finished" in section and "1 stopped at a deadline (a lent machine's end)." in section
        assert "their worker was stopped" not in section  # stopped by the deadline, not a dead worker
    else:  # the table says each trial's batch size
        assert "| one-cycle peak | batch |" in section
        assert f"| {study.trials[0].params['lr']:.3f} | 32 |" in section


def test_no_trial_starts_once_the_deadline_has_passed(tmp_path):
    import time

    from mnistlab.jobs.search import Space, search

    settings = tiny_settings(
        tmp_path, "d", tmp_path / "d.db", max_params=3500, seeds=(1,), epochs=1, stop_at=time.time() - 1
    )
    space = Space(width=(12, 12), stem1=(4, 4), stem2=(8, 8), depth=(2, 2), factored=(True,))
    assert search(settings, space, trials=3, log=lambda m: None).trials == []


def test_a_try_out_registers_into_the_file_mnistlab_found_names_not_the_packages(mnistlab, tmp_path):
    from mnistlab_lab.models import FOUND as LAB_FOUND

    shipped = LAB_FOUND.read_bytes()
    (tmp_path / "space.json").write_text(json.dumps(TINY_SPACE))
    result = mnistlab(
        "search",
        "--max-params",
        "3500",
        "--trials",
        "1",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--limit",
        "300",
        "--space",
        "space.json",
        "--name",
        "tiny",
        "--threads",
        "1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    env = {"MNISTLAB_FOUND": str(tmp_path / "found.json")}
    result = mnistlab("register", "--study", "tiny", "--trial", "0", "--name", "tryout", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert [e["name"] for e in json.loads((tmp_path / "found.json").read_text())] == ["tryout"]
    assert LAB_FOUND.read_bytes() == shipped
    assert "tryout" in mnistlab("models", cwd=tmp_path, env=env).stdout
    home = {"MNISTLAB_HOME": str(tmp_path / "home")}  # the user's own folder, without MNISTLAB_FOUND
    assert "tryout" not in mnistlab("models", cwd=tmp_path, env=home).stdout
    result = mnistlab("register", "--study", "tiny", "--trial", "0", "--name", "mine", cwd=tmp_path, env=home)
    assert result.returncode == 0, result.stderr
    assert [e["name"] for e in json.loads((tmp_path / "home" / "found.json").read_text())] == ["mine"]
    assert "mine" in mnistlab("models", cwd=tmp_path, env=home).stdout and LAB_FOUND.read_bytes() == shipped


def test_the_trial_taken_to_final_runs_is_the_best_score_then_the_smallest():
    from mnistlab.jobs.search import best_row

    def row(trial, params, score, state="COMPLETE"):
        return {"trial": trial, "params": params, "score": score, "state": state}

    rows = [
        row(0, 3094, 99.32),
        row(1, 2923, (99.3 + 99.32 + 99.34) / 3),
        row(2, 3000, 99.9, "PRUNED"),
        row(3, 2500, 99.1),
    ]
    assert best_row(rows)["trial"] == 1  # equal to 99.32 but for rounding, and smaller
    assert best_row([row(0, 3094, 99.33), row(1, 2923, 99.32)])["trial"] == 0
    assert best_row([row(0, 3094, 99.5, "PRUNED")]) is None


def test_a_study_with_teachers_draws_whether_and_how_to_learn_from_them(mnistlab, tmp_path):
    """The teachers are the study's (fixed); each trial that draws distillation trains with them, and a
    registered trial keeps them in its recipe."""
    teacher = Path(__file__).resolve().parents[1] / "results" / "tuning" / "m8-lr0.1" / "s1"  # 55,000 images
    space = {"width": [12, 14], "depth": [2, 2], "stem1": [4, 5], "stem2": [8, 9], "distill": [True]}
    (tmp_path / "space.json").write_text(json.dumps(space))
    args = ["search", "--max-params", "3500", "--trials", "1", "--seeds", "1", "--epochs", "1", "--limit", "300"]
    args += ["--storage", "sqlite:///s.db", "--space", "space.json", "--threads", "1", "--teacher", str(teacher)]
    result = mnistlab(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="record-3500", storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.trials[0]
    assert trial.params["distill"] is True and 0.2 <= trial.params["distill_alpha"] <= 0.9
    config = json.loads((tmp_path / "runs" / "search" / "record-3500" / "trial0" / "s1" / "config.json").read_text())
    assert config["teachers"] == [str(teacher / "last.pt")] and len(config["teacher_sha256"]) == 1
    assert config["distill_alpha"] == trial.params["distill_alpha"]
    other = mnistlab(*args[:-1], str(teacher.parent / "s2"), cwd=tmp_path)
    assert other.returncode == 2 and "a study's teachers are fixed" in other.stderr
    env = {"MNISTLAB_FOUND": str(tmp_path / "found.json")}
    registered = mnistlab(
        "register",
        "--study",
        "record-3500",
        "--trial",
        "0",
        "--name",
        "distilled",
        "--storage",
        "sqlite:///s.db",
        cwd=tmp_path,
        env=env,
    )
    assert registered.returncode == 0, registered.stderr
    recipe = json.loads((tmp_path / "found.json").read_text())[0]["recipe"]
    assert recipe["teachers"] == [str(teacher / "last.pt")] and recipe["distill_alpha"] == trial.params["distill_alpha"]


def test_a_killed_searchs_running_trials_are_failed_when_the_study_is_next_opened(tmp_path):
    """Trials left running by a worker that is gone are marked failed at once by the next run; a live worker's
    trial stays running."""
    import os
    import socket
    import subprocess
    import sys

    import optuna

    from mnistlab.jobs.search import open_study

    settings = tiny_settings(tmp_path, "orphans", tmp_path / "orphans.db", max_params=4000)
    study = open_study(settings)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan, alive = study.ask(), study.ask()
    orphan.set_user_attr("worker", {"host": socket.gethostname(), "pid": dead.pid})
    alive.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
    again = open_study(settings)
    states = {t.number: t.state for t in again.get_trials(deepcopy=False)}
    assert states == {orphan.number: optuna.trial.TrialState.FAIL, alive.number: optuna.trial.TrialState.RUNNING}
    assert again.trials[orphan.number].user_attrs["stopped"] == "its worker was gone"


def test_a_space_with_tied_passes_draws_them_and_their_weights_count_once():
    """`tied` in a space file adds a block applied k times with the same weights after the body: the trial's arch
    says k, the model has k passes, and each pass beyond the first adds only its BatchNorm (2 x width). A space
    without it draws nothing new, so recorded searches' trials keep their shape."""
    from optuna.trial import FixedTrial

    from mnistlab.analysis import analyze
    from mnistlab.jobs.search import Space, count_params, sample
    from mnistlab.models import create_model

    fixed = {"depth": 2, "stem1": 8, "stem2": 12, "width": 20, "padded": 1, "factored": True, "rotation": 5.0}
    fixed |= {"translate": 0.0, "scale": 0.0, "lr": 0.05, "ema": 0.0, "batch_size": 64}
    plain, _ = sample(FixedTrial(fixed), Space())
    assert "tied" not in plain
    arch, _ = sample(FixedTrial({**fixed, "tied": 3}), Space(tied=(0, 4)))
    assert arch["tied"] == 3 and {k: v for k, v in arch.items() if k != "tied"} == plain
    assert count_params(arch) - count_params({**arch, "tied": 1}) == 2 * 2 * 20
    assert count_params({**arch, "tied": 0}) == count_params(plain)
    model = create_model("searched", **arch)
    assert len(model.features.tied.norms) == 3
    table = analyze(model)
    assert table.params == count_params(arch)  # the analysis counts the reused weights once
    passes = [row.receptive_field for row in table.rows if row.name.startswith("features.tied.norms")]
    assert passes == [18, 22, 26]  # each pass of the same weights widens the field by 4 (2 at stride 2)


def finished_study(tmp_path, name="regs"):
    """A study with one finished trial, drawn but not trained (registering reads only its draws and score)."""
    from mnistlab.jobs.search import Space, count_params, open_study, sample

    settings = tiny_settings(tmp_path, name, tmp_path / f"{name}.db", max_params=4000, epochs=1)
    study = open_study(settings)
    trial = study.ask()
    arch, _ = sample(trial, Space(**{k: tuple(v) for k, v in TINY_SPACE.items()}))
    trial.set_user_attr("params", count_params(arch))
    trial.set_user_attr("arch", arch)
    study.tell(trial, 99.0)
    return settings, trial.number


REGISTER = """
import sys, time
from mnistlab.core import fileio
from mnistlab.jobs import search
slow = fileio.atomic_write_text
def slowly(path, text):
    time.sleep(0.3)  # a slow disk: the window in which a second writer would read the old list
    return slow(path, text)
search.atomic_write_json = lambda path, obj: slowly(path, fileio.json_text(obj))
storage, study, number, name, found = sys.argv[1:]
search.register_trial(search.open_existing(study, storage), int(number), name, found)
print("registered", name)
"""


def test_two_registrations_at_once_keep_both_names(tmp_path):
    """The battery's case: six `register` commands at once with slow writes; each one's read-add-write holds the
    found file's lock, so none is lost."""
    import subprocess
    import sys

    settings, number = finished_study(tmp_path)
    found = tmp_path / "home" / "found.json"
    names = [f"reg_{k}" for k in range(6)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, settings.storage, settings.name, str(number), name, str(found)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert sorted(e["name"] for e in json.loads(found.read_text())) == names
    assert not (tmp_path / "home" / "found.json.lock").exists()


def test_a_registration_that_waits_too_long_for_the_lock_is_one_line(tmp_path, monkeypatch):

    from mnistlab.core.errors import MnistlabError
    from mnistlab.jobs import search

    settings, number = finished_study(tmp_path)
    found = tmp_path / "found.json"
    lock = str(found) + ".lock"
    with held_by(
        f"from mnistlab.core.fileio import exclusive\nwith exclusive({lock!r}, busy=None):\n    {HOLD}"
    ) as holder:
        monkeypatch.setattr(search, "REGISTRY_WAIT", 0.5)
        with pytest.raises(MnistlabError, match=rf"{found} is being written by process {holder.pid} for over 0 s"):
            search.register_trial(search.open_existing(settings.name, settings.storage), number, "late", found)
    assert not found.exists()
    search.register_trial(search.open_existing(settings.name, settings.storage), number, "late", found)  # stale: taken
    assert [e["name"] for e in json.loads(found.read_text())] == ["late"]


def test_a_study_storage_locked_by_another_process_waits_then_says_so_in_one_line(tmp_path, monkeypatch):
    import sqlite3

    from mnistlab.core.errors import MnistlabError
    from mnistlab.jobs import search

    settings, _ = finished_study(tmp_path, "locked")
    db = settings.storage[len("sqlite:///") :]
    exclusive_transaction = (
        f"import sqlite3\nc = sqlite3.connect({db!r}, isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\n{HOLD}"
    )
    with held_by(exclusive_transaction):
        monkeypatch.setattr(search, "LOCK_WAIT", 0.5)
        space = search.Space(**{k: tuple(v) for k, v in TINY_SPACE.items()})
        with pytest.raises(MnistlabError) as caught:
            search.search(settings, space, trials=1, log=lambda m: None)
        message = str(caught.value)
        assert message.startswith(f"the study storage {settings.storage} is locked by another process (waited 0 s)")
        assert "\n" not in message
    assert sqlite3.connect(db).execute("select count(*) from trials").fetchone() == (1,)  # the file is intact


@pytest.mark.parametrize("to_the_group", [True, False])
def test_ctrl_c_during_a_search_with_two_workers_stops_them_all_in_one_line(mnistlab, tmp_path, to_the_group):
    """Ctrl-C in a terminal reaches the whole process group; `kill -INT` the parent alone. Either way every worker
    stops within seconds, no trial begins after the signal, and one line says how to continue."""
    import signal
    import subprocess
    import sys
    import time

    args = ["search", "--max-params", "40000", "--trials", "8", "--workers", "2", "--epochs", "15", "--limit", "9000",
            "--seeds", "1", "--name", "stop", "--results", str(tmp_path), "--threads", "1"]  # fmt: skip
    search = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a terminal gives it
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(tmp_path.rglob("history.jsonl"))) < 2:
        time.sleep(0.5)  # both workers are training a trial (each has saved an epoch)
    assert search.poll() is None, search.communicate()
    if to_the_group:
        os.killpg(search.pid, signal.SIGINT)
    else:
        search.send_signal(signal.SIGINT)
    out, err = search.communicate(timeout=60)
    assert search.returncode == 130, (out, err)
    assert err.strip().splitlines() == [
        "stopped; every finished trial is kept in the study: the same `mnistlab search` command adds the rest"
    ], err
    begun = [line for line in out.splitlines() if "trial" in line and "parameters" in line]
    assert len(begun) <= 2 + out.count("over the budget"), out  # nothing began after the signal
    time.sleep(2)
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert not left, f"workers left running: {left}"
