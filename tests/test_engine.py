"""The engine on tiny data: learning, resume, checkpoints, schedulers, user errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mnistlab.core.errors import MnistlabError
from mnistlab.core.rundir import (
    HISTORY_KEYS,
    LAST_MEAN,
    LAST_MIN,
    LAST_TESTS,
    SUMMARY_KEYS,
    Provenance,
    read_history,
)
from mnistlab.models import config_for, create_model, load_checkpoint
from mnistlab.training.engine import fit
from mnistlab.training.step import TrainingState, make_optimizer, make_scheduler


def tiny_config(tmp_path, **overrides):
    values = dict(epochs=3, batch_size=32, val_size=100, device="cpu", output_dir=str(tmp_path / "run"))
    values.update(overrides)
    return config_for("model8", **values)


def test_short_fit_learns_and_writes_the_run_directory(tmp_path, tiny_data):
    summary = fit(tiny_config(tmp_path), data=tiny_data, progress=False, log=lambda m: None)
    run = tmp_path / "run"
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert summary["data"] == {"train": 500, "val": 100, "test": 200}
    assert summary["params"] == 7500 and len(summary["test_acc_last3"]) == 3
    assert summary["provenance"]["torch"] == torch.__version__
    for name in ("config.json", "summary.json", "last.pt", "best.pt"):
        assert (run / name).is_file()
    assert not list(run.glob("*.tmp"))
    # the files are exactly the typed records every reader uses (core.rundir), keys in order
    assert all(tuple(row) == HISTORY_KEYS for row in history)
    written = json.loads((run / "summary.json").read_text())
    assert tuple(written) == SUMMARY_KEYS and set(written["provenance"]) <= set(Provenance.__annotations__)
    assert {LAST_TESTS, LAST_MEAN, LAST_MIN} <= set(SUMMARY_KEYS)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_reaches_the_same_numbers(tmp_path, tiny_data, ema):
    quiet = dict(data=tiny_data, progress=False, log=lambda m: None)
    whole = fit(tiny_config(tmp_path / "a", ema=ema), **quiet)
    config = tiny_config(tmp_path / "b", ema=ema)
    assert fit(config, stop_after=1, **quiet) == {"stopped_after": 1}
    resumed = fit(config, resume=True, **quiet)
    for key in ("test_acc_last3", "best_val_acc", "best_train_acc", "best_epoch"):
        assert resumed[key] == whole[key], key
    a = load_checkpoint(tmp_path / "a" / "run" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "run" / "last.pt")
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


def test_ema_weights_are_the_ones_evaluated_and_shipped(tmp_path, tiny_data):
    from mnistlab.data.loader import make_loaders
    from mnistlab.training.step import evaluate

    config = tiny_config(tmp_path, ema=0.9)
    fit(config, data=tiny_data, progress=False, log=lambda m: None, stop_after=2)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    shipped, trained = state["state_dict"], state["train_state_dict"]
    assert any(not torch.equal(shipped[k], trained[k]) for k in shipped)  # the average differs from the last step
    summary = fit(config, data=tiny_data, progress=False, log=lambda m: None, resume=True)
    finished = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    # a finished run's last.pt keeps what evaluation and teachers read, not the state nothing will resume
    assert not {"optimizer", "scheduler", "train_state_dict", "average"} & set(finished)
    assert {"state_dict", "config", "epoch", "history", "best_score"} <= set(finished)
    loaders = make_loaders(*tiny_data, batch_size=32, val_size=100, seed=1)
    again = evaluate(load_checkpoint(tmp_path / "run" / "last.pt"), loaders.test)
    assert again["acc"] == pytest.approx(summary["last_test_acc"])
    with pytest.raises(MnistlabError, match="ema decay"):
        tiny_config(tmp_path, ema=1.0)


def test_refuses_to_overwrite_or_resume_another_config(tmp_path, tiny_data):
    quiet = dict(data=tiny_data, progress=False, log=lambda m: None)
    config = tiny_config(tmp_path, epochs=1)
    fit(config, **quiet)
    with pytest.raises(MnistlabError, match="already holds a run"):
        fit(config, **quiet)
    with pytest.raises(MnistlabError, match=r"differs from the config its last.pt was trained with \(lr\)"):
        fit(tiny_config(tmp_path, epochs=1, lr=0.02), resume=True, **quiet)


def test_schedulers_step_as_configured(tmp_path):
    model = create_model("model8")
    step = tiny_config(tmp_path, scheduler="step", step_size=1, gamma=0.5, lr=0.1)
    optimizer = make_optimizer(model, step)
    scheduler = make_scheduler(optimizer, step, steps_per_epoch=10)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    onecycle = tiny_config(tmp_path, scheduler="onecycle", lr=0.1)
    optimizer = make_optimizer(model, onecycle)
    scheduler = make_scheduler(optimizer, onecycle, steps_per_epoch=10)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / onecycle.div_factor)
    plateau = tiny_config(tmp_path, scheduler="plateau", patience=0, gamma=0.5, lr=0.1)
    optimizer = make_optimizer(model, plateau)
    scheduler = make_scheduler(optimizer, plateau, steps_per_epoch=10)
    scheduler.step(1.0)  # an improvement: no decay
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    scheduler.step(2.0)  # worse, patience 0: decay
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": 0}, "epochs must be positive"),
        ({"lr": 0.0}, "learning rate must be in"),
        ({"batch_size": -1}, "batch size must be positive"),
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"dropout": 1.5}, "dropout"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_nonsense_hyper_parameters_are_refused(tmp_path, overrides, message):
    with pytest.raises(MnistlabError, match=message):
        tiny_config(tmp_path, **overrides)


def test_the_moving_average_moves_and_lags_the_trained_weights(tmp_path, tiny_data):
    """With ema, the shipped weights are an average of the trained ones: they left their initial values, and
    sit between them and the last step's weights (closer to the start than the trained weights are)."""
    config = tiny_config(tmp_path, ema=0.99, epochs=3)
    fit(config, data=tiny_data, progress=False, log=lambda m: None, stop_after=2)  # a finished run keeps no state
    torch.manual_seed(config.seed)
    initial = create_model("model8").state_dict()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    shipped, trained = state["state_dict"], state["train_state_dict"]
    weights = [k for k in initial if k.endswith("weight")]
    moved = sum((shipped[k] - initial[k]).norm() for k in weights)
    trained_moved = sum((trained[k] - initial[k]).norm() for k in weights)
    assert moved > 0.01 * trained_moved  # it moved from the initial weights...
    assert moved < trained_moved  # ...and lags the trained ones (32 steps at decay 0.99)
    assert state["average"]["n_averaged"] == 2 * 16  # one update per step: 500 images / 32 per batch, 2 epochs


def test_an_empty_training_split_is_a_clear_error(tmp_path, tiny_data):
    with pytest.raises(MnistlabError, match="the training split is empty; lower --val-size or raise --limit"):
        fit(tiny_config(tmp_path, val_size=600), data=tiny_data, progress=False, log=lambda m: None)
    from mnistlab.training.step import train_one_epoch

    state = TrainingState.create(create_model("model8"), tiny_config(tmp_path), steps_per_epoch=1)
    with pytest.raises(MnistlabError, match="the training split is empty"):
        train_one_epoch(state, [])


def test_the_fast_path_is_bf16_where_the_cpu_computes_it_natively_and_recorded(tmp_path, tiny_data, monkeypatch):
    """`--precision auto` becomes bf16 on a CPU with native bfloat16 (AVX-512 BF16, AMX) and fp32 elsewhere, when the
    config is made; the run records it, resumes to the uninterrupted numbers, and a config without the field (every
    recorded run) is fp32."""
    from mnistlab.core import perf
    from mnistlab.core.config import TrainConfig
    from mnistlab.models import config_for
    from mnistlab.training.engine import fit_group

    monkeypatch.setattr(perf, "native_bf16", lambda: False)
    assert config_for("model8", precision="auto").precision == "fp32"
    monkeypatch.setattr(perf, "native_bf16", lambda: True)
    assert config_for("model8", precision="auto").precision == "bf16"
    assert config_for("model8", precision="auto", device="cuda").precision == "fp32"  # the GPU's captured step
    recorded = config_for("model8").to_dict()
    del recorded["precision"]
    assert TrainConfig.from_dict(recorded).precision == "fp32"

    def group(name):
        values = dict(epochs=2, batch_size=64, val_size=100, device="cpu", threads=1, precision="bf16")
        return [config_for("model8", seed=s, output_dir=str(tmp_path / name / f"s{s}"), **values) for s in (1, 2)]

    quiet = dict(data=tiny_data, progress=False, log=lambda m: None)
    whole = fit_group(group("whole"), **quiet)
    fit_group(group("cut"), stop_after=1, **quiet)
    resumed = fit_group(group("cut"), resume=True, **quiet)
    assert [s["test_acc_last3"] for s in resumed] == [s["test_acc_last3"] for s in whole]
    assert whole[0]["provenance"]["precision"] == "bf16" and "native_bf16" in whole[0]["provenance"]
    plain = fit_group(
        [dataclasses.replace(c, precision="fp32", output_dir=c.output_dir + "-fp32") for c in group("x")], **quiet
    )
    assert [s["train_seconds"] > 0 for s in plain] == [True, True]
    assert (
        read_history(tmp_path / "whole" / "s1")[0]["train_loss"]
        != read_history(tmp_path / "x" / "s1-fp32")[0]["train_loss"]
    )


def test_reproduce_refuses_to_write_other_precisions_into_the_labs_results(mnistlab):
    done = mnistlab("reproduce", "--models", "model8", "--seeds", "1", "--no-tuning", "--precision", "bf16")
    assert done.returncode == 2 and "a --precision other than fp32 make runs unlike the recorded ones" in done.stderr


@pytest.mark.compiles
def test_a_compiled_network_trains_on_the_cpu(tmp_path, tiny_data):
    """`--compile` runs the step through torch.compile: it trains one epoch and records the run as any other (the
    compiled module has no truth value, so the step must not ask it for one)."""
    config = tiny_config(tmp_path, epochs=1, compile=True, threads=1)
    summary = fit(config, data=tiny_data, progress=False, log=lambda m: None)
    assert len(summary["test_acc_last3"]) == 1 and json.loads((tmp_path / "run" / "config.json").read_text())["compile"]


def test_provenance_records_the_commit_of_this_packages_own_checkout_only(tmp_path, monkeypatch):
    """From this repository's src/ the commit is recorded; installed inside a user's own git repository (a virtual
    environment in their project), the user's commit is not ours and nothing is recorded."""
    import subprocess

    import mnistlab.training.engine as engine

    assert engine.provenance(torch.device("cpu"))["git_commit"]  # this checkout's
    user = tmp_path / "project"
    user.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=user, check=True)
    subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=user, check=True)  # fmt: skip
    installed = user / ".venv" / "lib" / "python3.11" / "site-packages" / "mnistlab" / "training" / "engine.py"
    installed.parent.mkdir(parents=True)
    installed.write_text("")
    monkeypatch.setattr(engine, "__file__", str(installed))
    made = engine.provenance(torch.device("cpu"))
    assert made["git_commit"] is None and made["git_dirty"] is None
