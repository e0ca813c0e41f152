"""Audits of the recorded results under results/: each study's winner is its best-validation candidate's model
and recipe, every recorded tuning run is exactly its declared config, and the record section names every search
and found model. They read the committed files; they train nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mnistlab.core.config import Recipe, TrainConfig
from mnistlab_lab.studies import STUDIES

RECIPE_FIELDS = [f.name for f in dataclasses.fields(Recipe)]
# the levers of a study that may leave its registered model without them: teachers and a starting network
DISTILL_FIELDS = {"teachers", "distill_alpha", "distill_temperature", "teacher_view", "attention", "init"}


def _as_json(value):
    """A value as config.json holds it (tuples as lists)."""
    return json.loads(json.dumps(value))


def _teachers(checkpoints, val_size: int = 0) -> list[str]:
    """The teachers' models, each from the config beside its checkpoint, which must hold ``val_size`` images out."""
    configs = [json.loads((Path(p).parent / "config.json").read_text()) for p in checkpoints]
    assert all(c["val_size"] == val_size for c in configs), [(p, c["val_size"]) for p, c in zip(checkpoints, configs)]
    return sorted(c["model"] for c in configs)


@pytest.mark.parametrize("study", STUDIES, ids=lambda study: study.key)
def test_each_study_winner_is_the_registered_model(study):
    """The model a study produced must be its best-validation candidate: same recipe, same layers."""
    from mnistlab.models import config_for, create_model
    from mnistlab_lab.records import chosen, tuning_scores, waiting

    results = Path(__file__).resolve().parent.parent / "results"
    scores = tuning_scores(results, study)
    if not scores:  # declared, not run yet: nothing of it may be recorded, not even a run it cut short
        assert not any(run.path(results).exists() for run in study.runs), study.key
        return
    if waiting(study, scores):  # still running: it chooses nothing yet, and no run of it may be half-recorded
        assert all((run.path(results) / "summary.json").is_file() for run in study.runs if run.path(results).exists())
        return
    best = chosen(study, scores)
    recipe = config_for(study.winner).to_dict()
    fields = RECIPE_FIELDS
    if best is None:  # no candidate met the rule: the registered model keeps the study's starting recipe
        assert study.rule == "smallest"
        best = scores[0]
        if not recipe["teachers"]:  # the teachers were the study's lever: the model stays without them
            fields = [key for key in RECIPE_FIELDS if key not in DISTILL_FIELDS]
    if study.superseded:  # a later study started from this winner: its first candidate has its recipe
        later = next(s for s in STUDIES if s.key == study.superseded)
        start = tuning_scores(results, later)
        if start:
            recipe = TrainConfig.from_dict(start[0].runs[0].config).to_dict()
    for run in best.runs:  # every seed of the winner ran the winner's recipe (fields added since: their defaults)
        recorded = TrainConfig.from_dict(run.config).to_dict()
        for key in fields:
            if key == "teachers":  # the same teachers' models; the winner's on all 60,000 images, the study's not
                assert _teachers(recipe[key]) == _teachers(recorded[key], val_size=5000), best.name
                continue
            assert _as_json(recipe[key]) == _as_json(recorded[key]), (key, best.name)
    shapes = {k: v.shape for k, v in create_model(best.declared.model).state_dict().items()}
    assert shapes == {k: v.shape for k, v in create_model(study.winner).state_dict().items()}, best.name


def test_every_recorded_tuning_run_is_its_declared_config():
    """`mnistlab reproduce --tuning` must re-make exactly the recorded validation runs."""
    from mnistlab.core.config import EXECUTION, TrainConfig, fields_with
    from mnistlab_lab.studies import EARLIER, TUNING

    results = Path(__file__).resolve().parent.parent / "results"
    checked = 0
    for run in TUNING + EARLIER:
        recorded = run.path(results) / "config.json"
        if not recorded.is_file():
            continue
        then = TrainConfig.from_dict(json.loads(recorded.read_text())).to_dict()
        now = run.config(Path("results")).to_dict()
        for key in set(then) - set(fields_with(EXECUTION)):
            assert then[key] == now[key], (run.name, key, then[key], now[key])
        checked += 1
    if not checked:
        pytest.skip("no recorded tuning runs")


def test_the_record_section_names_each_search_and_every_model_taken_from_one():
    """On the recorded results: a line per stored search with its best trial, and the final runs of every
    found model beside the hand-made ones, smallest first."""
    import optuna

    from mnistlab.models import get_card, list_models
    from mnistlab.models.found import entries
    from mnistlab_lab.models import FOUND
    from mnistlab_lab.records import ModelResult, load_searches, model_runs
    from mnistlab_lab.report import record_section, teacher_runs
    from mnistlab_lab.studies import role

    results = Path(__file__).resolve().parents[1] / "results"
    names = [n for n in list_models() if (part := role(n)) is not None and part.record]
    assert {f["name"] for f in entries(FOUND)} <= set(names)  # every found model is a record attempt
    finals = [ModelResult(get_card(n), model_runs(results, n)) for n in names]
    section = record_section(finals, {}, load_searches(results), {r.card.name: teacher_runs(r) for r in finals})
    for store in sorted((results / "search").glob("*.db")):
        study = optuna.load_study(study_name=store.stem, storage=f"sqlite:///{store}")
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        top = max(round(t.value, 6) for t in done)  # of the trials that tie on it, the smallest
        best = min((t for t in done if round(t.value, 6) == top), key=lambda t: t.user_attrs["params"])
        assert f"Search `{store.stem}`" in section and f"best trial {best.number} " in section
    for name in names:  # a model learning from teachers says from how many, and what they cost
        runs = model_runs(results, name)
        if runs and runs[0].config.get("teachers"):
            assert f"Learning from {len(runs[0].config['teachers'])} models (" in section, name
    finals = section[section.index("Final runs") :]
    by_size = sorted(names, key=lambda n: get_card(n).params)
    ran = [n for n in by_size if model_runs(results, n)]
    positions = [finals.index(f"**{get_card(n).title}** ({get_card(n).params:,} parameters)") for n in ran]
    assert positions == sorted(positions)
    for name in set(by_size) - set(ran):  # declared, its final runs not made yet: said so, with the command
        assert f"- {name}: not run yet (`mnistlab reproduce --models {name}`)." in finals


def test_every_recorded_history_row_and_summary_is_the_typed_record():
    """What the readers take on trust: every recorded run's history.jsonl and summary.json under results/ hold the
    keys of ``core.rundir.HistoryRow`` and ``Summary`` in their order; provenance only keys ``Provenance`` names."""
    from mnistlab.core.rundir import HISTORY_KEYS, SUMMARY_KEYS, Provenance

    results = Path(__file__).resolve().parents[1] / "results"
    summaries = sorted(results.rglob("summary.json"))
    assert len(summaries) > 300
    for path in summaries:
        summary = json.loads(path.read_text())
        assert tuple(summary) == SUMMARY_KEYS, path
        assert set(summary["provenance"]) <= set(Provenance.__annotations__), path
        rows = [json.loads(line) for line in (path.parent / "history.jsonl").read_text().splitlines() if line]
        assert rows and all(tuple(row) == HISTORY_KEYS for row in rows), path
