"""Checkpoints: a round trip, and the foreign, damaged or missing files refused in one line."""

from __future__ import annotations

import pytest
import torch
from test_engine import tiny_config

from mnistlab.core.errors import MnistlabError
from mnistlab.models import create_model, load_checkpoint
from mnistlab.models.checkpoint import save_checkpoint


def test_checkpoint_round_trip_and_foreign_checkpoints(tmp_path):
    model = create_model("model8").eval()
    config = tiny_config(tmp_path).to_dict()
    path = save_checkpoint(tmp_path / "m.pt", model, config)
    loaded = load_checkpoint(path, model="model8")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x)) and not loaded.training
    with pytest.raises(MnistlabError, match="holds a model8 checkpoint, not model7"):
        load_checkpoint(path, model="model7")
    other = save_checkpoint(tmp_path / "o.pt", create_model("model7"), {**config, "model": "model8"})
    with pytest.raises(MnistlabError, match="do not fit model8"):
        load_checkpoint(other)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MnistlabError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    (tmp_path / "text.pt").write_text("junk\n")  # fails inside the unpickler with a KeyError, not a pickle error
    with pytest.raises(MnistlabError, match=r"text.pt is not a readable checkpoint: .* \(KeyError"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": 1}, tmp_path / "plain.pt")
    with pytest.raises(MnistlabError, match="not an mnistlab checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(MnistlabError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_checkpoint_that_is_not_its_folders_run_is_refused_in_one_line_naming_it(tmp_path, tiny_data):
    """`evaluate` (and every command that loads a checkpoint) on a file copied into another run's folder: refused
    by what it is, never rebuilt as the folder's model nor blamed on the folder's model_source.py."""
    import shutil

    from mnistlab.core.errors import MnistlabError
    from mnistlab.models import config_for, load_checkpoint
    from mnistlab.training.engine import fit

    tiny = dict(epochs=1, batch_size=64, val_size=100, device="cpu", limit=600)
    fit(config_for("model8", output_dir=str(tmp_path / "m8"), **tiny), data=tiny_data, progress=False, log=print)
    fit(config_for("sepnet3k", output_dir=str(tmp_path / "s3"), **tiny), data=tiny_data, progress=False, log=print)
    shutil.copy(tmp_path / "s3" / "last.pt", tmp_path / "m8" / "foreign.pt")
    with pytest.raises(MnistlabError) as caught:
        load_checkpoint(tmp_path / "m8" / "foreign.pt")
    said = str(caught.value)
    assert said.startswith(f"{tmp_path / 'm8' / 'foreign.pt'} is not a checkpoint of the run in {tmp_path / 'm8'}")
    assert "a sepnet3k checkpoint beside a model8 run" in said and "\n" not in said
    assert sum(p.numel() for p in load_checkpoint(tmp_path / "m8" / "best.pt").parameters()) == 7500  # its own
    shutil.copy(tmp_path / "m8" / "foreign.pt", tmp_path / "alone.pt")
    assert load_checkpoint(tmp_path / "alone.pt") is not None  # outside a run folder: its own
