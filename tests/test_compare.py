"""`mnistlab compare`: runs grouped by folder, their table and figures; a folder without runs refused."""

from __future__ import annotations

import pytest
from conftest import ROOT
from test_external import QUIET, TINY, student

from mnistlab.core.errors import MnistlabError
from mnistlab.models import config_for, resolve
from mnistlab.tools.compare import write
from mnistlab.tools.runs import find_runs
from mnistlab.training.engine import fit_group


def test_compare_groups_seeds_and_refuses_a_folder_without_runs(tmp_path, tiny_data):
    name = resolve(f"{student(tmp_path, 'StudentC')}:StudentC").name
    configs = [config_for(name, seed=s, output_dir=str(tmp_path / "runs" / name / f"seed{s}"), **TINY) for s in (1, 2)]
    fit_group(configs, data=tiny_data, **QUIET)
    groups = find_runs([tmp_path / "runs", ROOT / "results" / "model8"])
    assert [(g.model, len(g.runs)) for g in groups] == [(name, 2), ("model8", 3)]
    text = write(groups, tmp_path / "cmp")
    assert "| `model8` | " in text and "3 of 3" in text and f"| `{name}` | " in text
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {
        "compare.md",
        "accuracy-per-epoch.png",
        "accuracy-against-parameters.png",
    }
    (tmp_path / "empty").mkdir()
    with pytest.raises(MnistlabError, match="no finished runs"):
        find_runs([tmp_path / "empty"])
