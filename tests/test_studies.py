"""The lab's ledger: runs declared against frozen recipes, each model's role, the final runs it plans."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mnistlab.models import list_models, registry
from mnistlab_lab import studies
from mnistlab_lab.studies import EARLIER, ROLES, TUNING, Role, planned_runs, role


def test_editing_a_card_does_not_change_what_a_recorded_run_meant(monkeypatch):
    """Study and earlier runs are declared against named, frozen recipes, not against today's cards."""
    before = {(r.folder, r.name): r.config(Path("results")).to_dict() for r in TUNING + EARLIER if r.base is not None}
    assert len(before) > 100
    for name in ("model7", "model8", "sepnet6k", "sepnet3k"):
        card = registry._REGISTRY[name]
        monkeypatch.setitem(
            registry._REGISTRY,
            name,
            dataclasses.replace(card, recipe=dataclasses.replace(card.recipe, lr=0.123, batch_size=99)),
        )
    after = {(r.folder, r.name): r.config(Path("results")).to_dict() for r in TUNING + EARLIER if r.base is not None}
    assert after == before


def test_final_runs_take_each_roles_seed_count_unless_seeds_are_named(monkeypatch):
    """`mnistlab reproduce` makes seeds 1..final_seeds of each model (a record learning from teachers is judged on
    6); `--seeds` names them for every model."""
    monkeypatch.setitem(ROLES, "sepnet6k", Role(refit=True, final_seeds=6))
    runs = planned_runs(["model8", "sepnet6k"], None, tuning=False)
    assert [(r.model, r.seed) for r in runs] == [("model8", s) for s in (1, 2, 3)] + [
        ("sepnet6k", s) for s in range(1, 7)
    ]
    assert all(r.overrides == {"val_size": 0} for r in runs)  # both chosen on validation: all 60,000 images
    assert [r.seed for r in planned_runs(["sepnet6k"], (4, 5), tuning=False)] == [4, 5]
    assert planned_runs(["model7"], None, tuning=False)[0].overrides == {}  # not refit: validation kept out


def test_every_model_of_the_lab_has_a_role_or_says_why_not():
    """A model added to the package without its part in the ledger is caught here."""
    others = {"searched", *studies.TEACHER_MODELS}  # the search's family; teachers
    missing = [name for name in list_models(outside=False) if role(name) is None and name not in others]
    assert missing == []
    assert all(name in list_models() for name in ROLES)
    assert "sepnet3k_kd" in studies.lab_models() and "slim_a" not in studies.lab_models()


def test_the_library_card_carries_no_lab_history():
    fields = {f.name for f in dataclasses.fields(registry.ModelCard)}
    assert not fields & {f.name for f in dataclasses.fields(Role)}


def test_the_ledger_is_data_every_study_a_file_whose_candidates_make_its_runs():
    """Each study is one file under lab/ledger/studies (its candidates, rule, margin and winner); the loader makes its
    runs from it: one `tuning/<name>` run, or `tuning/<name>/s<seed>` on each seed without the test set; a candidate
    taken from an earlier study is that study's, recorded once."""
    import json

    from mnistlab.models import get_card

    folder = studies.LEDGER.joinpath("studies")
    files = sorted(f.name for f in folder.iterdir() if f.name.endswith(".json"))
    assert [f.split("-", 1)[1][:-5] for f in files] == [s.key for s in studies.STUDIES]
    earlier: set[str] = set()
    for name, study in zip(files, studies.STUDIES):
        data = json.loads(folder.joinpath(name).read_text())
        assert data["rule"] in ("mean", "smallest") and get_card(data["winner"])
        assert study.rule == data["rule"] and study.mean_at_least == data.get("mean_at_least", 0.0)
        names = [c["name"] for c in data["candidates"]]
        assert list(dict.fromkeys(studies.candidate_name(r) for r in study.runs)) == names
        for candidate in data["candidates"]:
            if "from" in candidate:
                assert candidate["from"] in earlier, (study.key, candidate)
                continue
            runs = [r for r in study.runs if studies.candidate_name(r) == candidate["name"]]
            if candidate["seeds"] is None:
                assert [(r.seed, r.name) for r in runs] == [(1, candidate["name"])]
            else:
                assert [r.seed for r in sorted(runs, key=lambda r: r.seed)] == candidate["seeds"]
                assert all(r.overrides["test_every_epoch"] is False for r in runs)
        earlier.add(study.key)
    assert {r.folder for r in studies.TUNING} == {"tuning"} and len(
        studies.TUNING
    ) == 317  # every validation run the ledger declares


def test_a_study_file_edited_wrong_is_one_line_naming_it(tmp_path):
    """The ledger is data a person edits: a study file that is not JSON, lacks a field, takes a candidate from no
    earlier study or names no recipe stops the loading in one line that names the file."""
    import json
    import shutil

    import pytest

    from mnistlab.core.errors import MnistlabError
    from mnistlab_lab.studies import LEDGER, RECIPES, _studies

    folder = tmp_path / "studies"
    shutil.copytree(str(LEDGER.joinpath("studies")), folder)
    assert [s.key for s in _studies(RECIPES, folder)] == [s.key for s in studies.STUDIES]
    target = folder / "07-record-distill.json"
    good = json.loads(target.read_text())
    broken = [
        ("{not json", "cannot be read"),
        (json.dumps({**good, "rule": "largest"}), "its rule is mean or smallest"),
        (json.dumps({k: v for k, v in good.items() if k != "winner"}), "a study needs the fields"),
        (json.dumps({**good, "candidates": [{"from": "ladder-3000", "name": "x"}]}), "taken from 'ladder-3000'"),
        (json.dumps({**good, "candidates": [{**good["candidates"][1], "base": "model9-first"}]}), "no recipe"),
        (json.dumps({**good, "candidates": [{**good["candidates"][1], "seeds": [0]}]}), "list of positive seeds"),
    ]
    for text, message in broken:
        target.write_text(text)
        with pytest.raises(MnistlabError, match=message) as caught:
            _studies(RECIPES, folder)
        assert "07-record-distill.json" in str(caught.value) and "\n" not in str(caught.value)
