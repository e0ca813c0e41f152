"""Recorded experiments and the report written from them, on tiny runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mnistlab.core.config import Recipe
from mnistlab.jobs.runner import run_all
from mnistlab_lab.report import write_report
from mnistlab_lab.studies import STUDIES, Run

RECIPE_FIELDS = [f.name for f in dataclasses.fields(Recipe)]

TINY = {"epochs": 3, "batch_size": 64, "val_size": 100, "device": "cpu"}


def train_runs(runs: list[Run], results: Path, **kwargs) -> list[dict]:
    """The ledger's ``runs`` made under ``results`` by the runner, tiny and quiet."""
    return run_all([run.config(results) for run in runs], overrides=TINY, progress=False, log=lambda m: None, **kwargs)


def test_report_is_written_from_the_records(tmp_path, tiny_data):
    runs = [Run("model8", s, "model8", f"seed{s}") for s in (1, 2)] + [Run("model7", 1, "model7", "seed1")]
    train_runs(runs, tmp_path / "results", data=tiny_data)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\nold\n<!-- results:end -->\nrest\n")
    report = write_report(tmp_path / "results", tmp_path / "REPORT.md", readme).read_text()
    assert "old" not in readme.read_text() and "| Model 8 (`model8`) | 7,500 |" in readme.read_text()
    assert readme.read_text().endswith("<!-- results:end -->\nrest\n")
    summary = json.loads((tmp_path / "results" / "model8" / "seed2" / "summary.json").read_text())
    assert "## All models against the reference" in report
    assert f"{summary['test_acc_last3_mean']:.2f}" in report  # numbers come from the records
    assert "| **all 2 seeds** |" in report
    assert "Seed 2: 99.4% reached in" in report
    assert "Against Model 7:" in report  # the analysis compares with the previous model
    assert "Model 3 (`model3`) | 9,434 | - | - | not run" in report
    # the reference's wrong receptive fields are named
    assert "features.out (Conv2d, kernel 7, jump before it 4): reference 36x36, computed 42x42" in report
    assert "features.gap (AdaptiveAvgPool2d, kernel 8, jump before it 2): reference 14x14, computed 28x28" in report
    # where a model is below the reference's figure, the report says so and what the numbers say of why
    model7 = json.loads((tmp_path / "results" / "model7" / "seed1" / "summary.json").read_text())
    assert f"Model 7: our mean last epoch {model7['last_test_acc']:.2f} is below the reference's 99.11" in report
    assert (tmp_path / "results" / "figures" / "model8-curves.png").is_file()
    assert "![Model 8 curves](results/figures/model8-curves.png)" in report


def test_seeded_study_is_scored_over_its_seeds(tmp_path, tiny_data):
    from statistics import mean

    from mnistlab_lab.records import tuning_scores

    study = next(s for s in STUDIES if s.key == "model8-seeds")
    runs = [run for run in study.runs if run.name in ("m8/s1", "m8/s2")]
    results = tmp_path / "results"
    train_runs(runs, results, data=tiny_data)
    (candidate,) = tuning_scores(results, study)
    per_seed = [mean(h["val_acc"] for h in r.history[-3:]) for r in candidate.runs]
    assert candidate.name == "m8" and len(per_seed) == 2 and candidate.score == pytest.approx(mean(per_seed))
    assert all(r.summary["test_acc_last3"] == [] for r in candidate.runs)  # the test set was never used
    report = write_report(results, tmp_path / "REPORT.md").read_text()
    assert f"| `m8` | {runs[0].why} | 7,500 | {per_seed[0]:.2f}, {per_seed[1]:.2f} | {candidate.score:.3f} |" in report


def test_hold_rates_count_the_seeds_that_held_beside_the_final_verdict(tmp_path):
    """A recipe on many seeds (results/stacked/<model>-<n>seeds) is reported as held on k of n, with its mean
    and lowest epoch, beside its 3 final seeds' verdict; no such folder, no section."""
    from mnistlab.core.rundir import LAST_TESTS
    from mnistlab.models import get_card
    from mnistlab_lab.records import ModelResult, model_runs
    from mnistlab_lab.report import hold_rate_groups, hold_rates_section

    assert hold_rate_groups(tmp_path) == [] and hold_rates_section([], tmp_path, []) == ""
    lasts = {1: [99.41, 99.45, 99.40], 2: [99.38, 99.50, 99.52], 3: [99.44, 99.43, 99.47], 4: [99.40, 99.40, 99.40]}
    for seed, last3 in lasts.items():
        run = tmp_path / "stacked" / "sepnet3k-4seeds" / f"seed{seed}"
        run.mkdir(parents=True)
        summary = {"model": "sepnet3k", "params": 3424, "seed": seed, LAST_TESTS: last3, "wall_seconds": 90.0}
        summary["provenance"] = {"gpu": None, "machine": "x86_64 test CPU"}
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "config.json").write_text(json.dumps({"model": "sepnet3k", "teachers": ["a/last.pt", "b/last.pt"]}))
        (run / "history.jsonl").write_text("")
    finals = [ModelResult(get_card("sepnet3k"), model_runs(tmp_path / "stacked", "sepnet3k-4seeds")[:2])]
    section = hold_rates_section(hold_rate_groups(tmp_path), tmp_path, finals)
    row = next(line for line in section.splitlines() if line.startswith("| `stacked/sepnet3k-4seeds`"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    mean_of_all = sum(a for last3 in lasts.values() for a in last3) / 12
    # the model, its size, its teachers, the seeds and how many held, the mean, the lowest epoch and its seed, the
    # final runs' verdict (1 of the 2 given held), where it ran
    assert cells[1:8] == ["`sepnet3k`", "3,424", "2", "4", "**3 of 4**", f"{mean_of_all:.2f}", "99.38 (2)"], row
    assert cells[8] == "1 of 2" and "x86_64 test CPU" in cells[9], row


def test_a_study_over_runs_already_listed_says_what_its_rule_chose():
    """The record section lists each candidate once: a later study that applies another rule to the same
    recorded runs (record-distill-best) says which it chose instead of listing them again."""
    from mnistlab_lab.records import Candidate, RecordedRun
    from mnistlab_lab.report import record_section

    def candidate(name: str, *vals: float) -> Candidate:  # recorded on each of its 4 declared seeds
        runs = [
            RecordedRun(Path(name), {"params": 3424, "seed": k}, [{"val_acc": v} for v in vals], {}) for k in range(4)
        ]
        return Candidate(name, Run("sepnet3k", 1, "tuning", f"{name}/s1", why=f"{name} why"), runs)

    plain, taught = candidate("sep3k", 99.3, 99.3, 99.3), candidate("sep3k-kd", 99.5, 99.3, 99.4)
    six = candidate("sep3k-kd6", 99.4, 99.3, 99.4)
    scores = {"record-distill2": [plain, taught, six]}
    scores["record-distill-best"] = scores["record-distill2"]
    section = record_section([], scores, [], {})
    assert section.count("best `sep3k-kd` (sep3k-kd why)") == 1
    listed_again = [line for line in section.splitlines() if "it chose `sep3k-kd`" in line]
    assert len(listed_again) == 1 and "sep3k-kd why" not in listed_again[0]
    scores["record-distill-best"] = [plain, taught]  # one of its candidates not recorded yet: it chooses nothing
    waiting = [line for line in record_section([], scores, [], {}).splitlines() if "still to record" in line]
    assert len(waiting) == 1 and "it chose" not in waiting[0]


def test_report_refuses_an_empty_or_damaged_results_folder_and_writes_nothing(tmp_path, tiny_data):
    from mnistlab.core.errors import MnistlabError

    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\nold\n<!-- results:end -->\n")
    with pytest.raises(MnistlabError, match="no recorded runs under"):
        write_report(tmp_path / "nothing", tmp_path / "REPORT.md", readme)
    train_runs([Run("model8", 1, "model8", "seed1")], tmp_path / "results", data=tiny_data)
    (tmp_path / "results" / "model8" / "seed1" / "summary.json").write_text('{"params": 75')  # cut short
    with pytest.raises(MnistlabError, match=r"summary.json is damaged"):
        write_report(tmp_path / "results", tmp_path / "REPORT.md", readme)
    assert not (tmp_path / "REPORT.md").exists() and "old" in readme.read_text()  # both left as they were


def test_a_damaged_study_database_is_one_line_naming_it(tmp_path):
    from mnistlab.core.errors import MnistlabError
    from mnistlab_lab.records import load_searches

    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "record-3500.db").write_bytes(b"SQLite format 3\0" + b"\x07" * 4000)
    with pytest.raises(MnistlabError, match=r"record-3500.db is not a readable study database") as caught:
        load_searches(tmp_path)
    assert "\n" not in str(caught.value)


def test_the_front_lists_every_rung_with_the_best_candidates_and_the_finals_held(tmp_path):
    from conftest import ROOT

    from mnistlab.models import get_card
    from mnistlab_lab.records import ModelResult, model_runs, tuning_scores
    from mnistlab_lab.report import LADDER, Figures, front_section
    from mnistlab_lab.studies import lab_models

    results = ROOT / "results"
    models = [ModelResult(get_card(n), model_runs(results, n)) for n in lab_models()]
    scores = {s.key: tuning_scores(results, s) for s in STUDIES}
    figures = Figures(tmp_path / "figures", tmp_path / "REPORT.md")
    section = front_section(models, scores, figures)
    assert not (tmp_path / "figures").exists()  # asked for while rendering, drawn when written
    figures.draw()
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| at most")]
    assert [row.split(" | ")[0] for row in rows] == [f"| {b:,}" for b in LADDER]
    assert "`sepnet3k_kd` 0 of 6" in rows[2]  # the record learning from teachers, judged on 6 seeds
    assert "`sep3k-kd98` (3,424): 99.455 on 4 seeds" in rows[2]  # the ladder-3500 study's winner
    assert (tmp_path / "figures" / "ladder-held.png").stat().st_size > 1000


def test_a_teacher_sets_time_counts_seeds_trained_stacked_once():
    """Four Teacher 98k seeds trained as one stacked process took that process's time, not four times it."""
    from conftest import ROOT

    from mnistlab.models import get_card
    from mnistlab_lab.records import ModelResult, RecordedRun, read_run
    from mnistlab_lab.report import teacher_runs, teachers_note

    teachers = [ROOT / f"results/teachers/teacher98k/seed{s}" for s in (1, 2, 3, 4)]
    group = {read_run(t).summary["train_seconds"] for t in teachers}
    assert len(group) == 1 and all(read_run(t).summary["provenance"]["stacked"] == 4 for t in teachers)
    config = {"teachers": [str(t / "last.pt") for t in teachers], "distill_alpha": 0.5, "distill_temperature": 4.0}
    student = RecordedRun(Path("student"), {}, [], config)
    result = ModelResult(get_card("sepnet3k_kd98"), [student])
    note = teachers_note(result, teacher_runs(result))
    assert note.startswith(f"4 models (4 x 98,032 parameters), trained for {group.pop() / 60:.1f} min in all")


def test_a_studys_time_says_whether_the_teachers_outputs_were_computed_or_read_from_the_cache():
    """The ladder's first candidate computed the Teacher 98k outputs and kept them; the next ones read them."""
    from conftest import ROOT

    from mnistlab_lab.records import tuning_scores
    from mnistlab_lab.report import tuning_section

    study = next(s for s in STUDIES if s.key == "ladder-3500")
    candidates = tuning_scores(ROOT / "results", study)
    section = tuning_section(study, candidates, {c.name: c.score for c in candidates})
    rows = {line.split(" | ")[0]: line for line in section.splitlines() if line.startswith("| `")}
    assert rows["| `sep3k-kd98`"].endswith("min (teachers' outputs computed, and kept) |")
    assert rows["| `tied3k4-kd98`"].endswith("min (teachers' outputs read from the cache) |")
    assert rows["| `sep3k-kd`"].endswith(" min |") and rows["| `tied3k4`"].endswith(" min |")


def test_a_record_study_declared_but_not_run_is_listed_with_the_command_that_runs_it():
    """A study committed before its runs shows in the record section as declared, never as a result."""
    from mnistlab_lab.report import record_section

    study = next(s for s in STUDIES if s.key == "ladder-6568")
    section = record_section([], {}, [], {})  # no run of any study, no search
    assert (
        f"- {study.title}: declared, not run yet (`sep4k9-kd98`, `sep5k4-kd98` on 8 seeds; "
        "`mnistlab reproduce --study ladder-6568`)." in section
    )


def test_a_study_whose_teachers_saw_the_unwarped_images_says_so():
    """ladder-6568-clean's candidates learned from one table of the teachers' outputs, computed once."""
    from conftest import ROOT

    from mnistlab_lab.records import tuning_scores
    from mnistlab_lab.report import tuning_section

    study = next(s for s in STUDIES if s.key == "ladder-6568-clean")
    candidates = tuning_scores(ROOT / "results", study)
    section = tuning_section(study, candidates, {c.name: c.score for c in candidates})
    rows = [line for line in section.splitlines() if line.startswith("| `sep")]
    assert len(rows) == 2
    assert all(
        row.endswith("min (teachers shown the unwarped images: their outputs computed once for all epochs) |")
        for row in rows
    )


def test_a_study_with_a_margin_names_it_in_its_rule():
    """A smallest-rule study that also asks a validation mean says so, whether a candidate met it or none did."""
    import dataclasses

    from conftest import ROOT

    from mnistlab_lab.records import tuning_scores
    from mnistlab_lab.report import tuning_section

    clean = next(s for s in STUDIES if s.key == "ladder-6568-clean")
    candidates = tuning_scores(ROOT / "results", clean)  # validation means 99.48 and 99.52
    by_name = {c.name: c.score for c in candidates}
    met = tuning_section(dataclasses.replace(clean, mean_at_least=99.50), candidates, by_name)
    assert "of every seed with a validation mean of 99.50 or more: `sep5k4-kd98c`" in met
    missed = tuning_section(dataclasses.replace(clean, mean_at_least=99.55), candidates, by_name)
    assert "No candidate held 99.4% on validation on every seed with a validation mean of 99.55, so" in missed


def test_the_report_is_the_same_bytes_from_any_working_folder(tmp_path, tiny_data, monkeypatch):
    """`report --results R` from another folder: every path a run recorded relative to where it was trained (a
    teacher's checkpoint) is found from the run's own folder, never from the working folder."""
    from mnistlab.models import get_card
    from mnistlab_lab.records import ModelResult, read_run
    from mnistlab_lab.report import teacher_runs, teachers_note

    lab = tmp_path / "lab"
    lab.mkdir()
    monkeypatch.chdir(lab)  # the lab trains with relative paths, as `mnistlab reproduce` does
    train_runs([Run("model8", s, "model8", f"seed{s}") for s in (1, 2)], Path("results"), data=tiny_data)
    teachers = [f"results/model8/seed{s}/last.pt" for s in (1, 2)]
    from mnistlab.models import config_for

    config = config_for(
        "sepnet3k", teachers=teachers, output_dir="results/sepnet3k_kd/seed1", **{**TINY, "val_size": 0}
    )
    student = run_all(
        [config],
        progress=False,
        log=lambda m: None,
        data=tiny_data,
    )
    assert student[0]["epochs"] == TINY["epochs"]
    student_run = ModelResult(get_card("sepnet3k_kd"), [read_run(lab / "results/sepnet3k_kd/seed1")])
    here = teachers_note(student_run, teacher_runs(student_run))
    write_report(Path("results"), Path("REPORT.md"))
    monkeypatch.chdir(tmp_path)
    there = teachers_note(student_run, teacher_runs(student_run))
    assert here == there and here.startswith("2 models (2 x 7,500 parameters)")
    before = (lab / "REPORT.md").read_bytes()
    write_report(lab / "results", lab / "REPORT.md")
    assert (lab / "REPORT.md").read_bytes() == before


FIXTURE = Path(__file__).parent / "fixtures"  # results/: 4 models' runs and one hold-rate run (JSON files only)


def test_the_report_of_a_small_fixed_results_folder_is_the_golden_one(tmp_path):
    """The whole report, rendered from a fixed slice of the lab's recorded runs (tests/fixtures/results: Model 1, 7
    and 8 on 3 seeds, sepnet3k_kd98 and sepnet6k0_kd98c on 6, one hold-rate group), is byte for byte tests/fixtures/REPORT.md: a change
    to how the report is collected or rendered shows here as a diff. After a change meant to alter the report:
    MNISTLAB_UPDATE_GOLDEN=1 pytest tests/test_report.py -k golden, and read the diff."""
    import os
    import shutil

    shutil.copytree(FIXTURE / "results", tmp_path / "results")
    write_report(tmp_path / "results", tmp_path / "REPORT.md")
    text = (tmp_path / "REPORT.md").read_text()
    if os.environ.get("MNISTLAB_UPDATE_GOLDEN"):
        (FIXTURE / "REPORT.md").write_text(text)
    assert text == (FIXTURE / "REPORT.md").read_text()
    figures = sorted(p.name for p in (tmp_path / "results" / "figures").iterdir())
    assert figures == [
        "ladder-held.png",
        "model1-curves.png",
        "model7-curves.png",
        "model8-curves.png",
        "sepnet3k_kd98-curves.png",
        "sepnet6k0_kd98c-curves.png",
    ]
    for name in figures:
        assert f"](results/figures/{name})" in text


def test_a_report_killed_while_it_drew_leaves_no_litter_after_the_next(tmp_path):
    """Temporary figure files that a killed report left in results/figures/ are removed by the next report; a
    file of the user's there is not."""
    import shutil

    shutil.copytree(FIXTURE / "results", tmp_path / "results")
    figures = tmp_path / "results" / "figures"
    figures.mkdir(exist_ok=True)
    litter = figures / ".model8-curves.png.k1ll3d.tmp"
    litter.write_bytes(b"half a png")
    mine = figures / "my-notes.txt"
    mine.write_text("mine")
    write_report(tmp_path / "results", tmp_path / "REPORT.md")
    assert not litter.exists() and mine.read_text() == "mine"
    assert (figures / "model8-curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_table_cell_keeps_a_bar_of_its_text_inside_it():
    from mnistlab_lab.report import table

    assert table(["what", "n"], [["8-15 | pool", 1], [None, ""]]) == (
        "| what | n |\n|---|---|\n| 8-15 \\| pool | 1 |\n| |  |\n"
    )
