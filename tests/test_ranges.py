"""Values read back are checked for their range as well as their type: a hand-edited config.json with an
impossible value is one line naming the file and the field; a run whose loss stops being finite stops there."""

from __future__ import annotations

import json

import pytest
from torch import nn

import mnistlab
from mnistlab.core.config import TrainConfig
from mnistlab.core.errors import MnistlabError


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("lr", 1e9, "learning rate must be in (0, 10], got 1000000000.0"),
        ("lr", 0.0, "learning rate must be in"),
        ("seed", -1, "seed must be 0 or more, got -1"),
        ("epochs", 0, "epochs must be positive"),
        ("batch_size", -3, "batch size must be positive"),
        ("weight_decay", 5.0, "weight decay must be in [0, 1)"),
        ("distill_temperature", 1e6, "distill temperature must be in (0, 100]"),
        ("limit", 0, "limit must be positive"),
        ("threads", -1, "threads must be 0 or more"),
    ],
)
def test_an_impossible_value_edited_into_config_json_is_one_line_naming_file_and_field(tmp_path, field, value, says):
    config = mnistlab.config_for("model8", output_dir=str(tmp_path))
    values = {**config.to_dict(), field: value}
    (tmp_path / "config.json").write_text(json.dumps(values))
    with pytest.raises(MnistlabError) as caught:
        TrainConfig.read(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "config.json") in message and says in message and "\n" not in message


class Diverges(nn.Module):
    """A network whose output stops being a number once training has begun (after its checks on a blank batch)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(784, 10)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.head(x.flatten(1)) * (float("nan") if self.training and self.calls > 4 else 1.0)


def test_a_run_whose_loss_is_not_finite_stops_in_one_line_and_saves_no_such_epoch(tmp_path, tiny_data):
    with pytest.raises(MnistlabError, match=r"training loss is not finite at epoch 1 .*lower rate") as caught:
        mnistlab.fit(Diverges, epochs=2, val_size=100, output_dir=tmp_path / "nan", data=tiny_data, log=lambda m: None)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "nan" / "history.jsonl").exists() and not (tmp_path / "nan" / "last.pt").exists()
