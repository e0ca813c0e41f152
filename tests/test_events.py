"""`train --tensorboard`: each run's epoch rows as TensorBoard scalars, read back with TensorBoard's own reader."""

from __future__ import annotations

import sys

import pytest

from mnistlab.core.errors import MnistlabError
from mnistlab.core.rundir import read_history
from mnistlab.models import config_for
from mnistlab.training.engine import fit_group
from mnistlab.training.events import INSTALL, tensorboard_logger


def _group(tmp_path):
    values = dict(epochs=2, batch_size=64, val_size=100, device="cpu", threads=1)
    return [config_for("model8", seed=s, output_dir=str(tmp_path / "runs" / f"seed{s}"), **values) for s in (1, 2)]


def test_each_seed_of_a_stacked_group_gets_its_own_scalars_as_recorded(tmp_path, tiny_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    configs = _group(tmp_path)
    hook = tensorboard_logger(tmp_path / "tb", configs)
    fit_group(configs, data=tiny_data, progress=False, log=lambda m: None, after_epoch=hook)
    for config in configs:
        events = EventAccumulator(str(tmp_path / "tb" / f"model8-seed{config.seed}"))
        events.Reload()
        history = read_history(config.output_dir)
        assert set(events.Tags()["scalars"]) == {
            "train/loss",
            "train/acc",
            "val/loss",
            "val/acc",
            "test/loss",
            "test/acc",
            "lr",
        }
        for tag, key in (("train/loss", "train_loss"), ("val/acc", "val_acc"), ("test/acc", "test_acc"), ("lr", "lr")):
            scalars = events.Scalars(tag)
            assert [s.step for s in scalars] == [1, 2]
            assert [s.value for s in scalars] == pytest.approx([row[key] for row in history], rel=1e-6), tag
    seeds = [read_history(c.output_dir)[-1]["train_loss"] for c in configs]
    assert seeds[0] != seeds[1]  # each folder holds its own seed's numbers, not the group's


def test_a_missing_tensorboard_is_one_line_saying_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # an import of it fails
    with pytest.raises(MnistlabError) as caught:
        tensorboard_logger(tmp_path / "tb", _group(tmp_path))
    assert str(caught.value) == INSTALL and "pip install 'mnistlab[tensorboard]'" in INSTALL
    assert not (tmp_path / "tb").exists()
