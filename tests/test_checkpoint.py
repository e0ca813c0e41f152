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
