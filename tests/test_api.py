"""The public API (``mnistlab.fit``, ``load_run``, ``evaluate``, ``predict``, ``compare``, ``plot_curves``): what
the notebook and the README use, on tiny data the tests make."""

from __future__ import annotations

import json

import numpy as np
import pytest
from torch import nn

import mnistlab
from mnistlab.core.errors import MnistlabError

TINY = {"epochs": 2, "val_size": 100, "batch_size": 64, "log": lambda m: None}


def test_the_public_names_are_importable_from_the_package_and_documented():
    for name in ("fit", "load_run", "evaluate", "predict", "compare", "plot_curves", "analyze"):
        function = getattr(mnistlab, name)
        assert function.__doc__ and ">>>" in function.__doc__, name
    for field in ("epochs", "lr", "limit", "threads", "seed", "augment", "teachers"):
        assert f"``{field}``" in mnistlab.fit.__doc__, field


def test_fit_documents_every_recipe_field_and_no_choice_a_field_lacks():
    """``fit``'s docstring names each recipe field, and a field's choices written there are its declared ones (a
    scheduler it listed, "cosine", never existed)."""
    import re

    from mnistlab.core.config import Recipe, TrainConfig, field_specs

    text = " ".join(mnistlab.fit.__doc__.split())
    for name in field_specs(Recipe):
        assert f"``{name}``" in text, name
    for spec in field_specs(TrainConfig).values():
        listed = re.search(rf"``{spec.name}`` \(([a-z0-9]+(?:, [a-z0-9]+)+)[);]", text)
        if spec.choices:
            assert listed and set(listed.group(1).split(", ")) == {*spec.choices, *spec.also}, spec.name
        else:
            assert not listed, spec.name  # a list of words in brackets after a field without choices


def test_fit_by_name_gives_the_run_back_and_a_resume_of_it_says_it_is_finished(tmp_path, tiny_data):
    run = mnistlab.fit("model8", output_dir=tmp_path / "m8", data=tiny_data, **TINY)
    assert run.summary["params"] == 7500 and len(run.history) == 2 and run.config["model"] == "model8"
    assert run.train_config.epochs == 2
    assert isinstance(run.model(), nn.Module)
    before = (tmp_path / "m8" / "history.jsonl").read_bytes()
    said: list[str] = []
    again = mnistlab.fit(resume=tmp_path / "m8", data=tiny_data, log=said.append)
    assert any("is finished; nothing to resume" in line for line in said), said
    assert again.history == run.history and (tmp_path / "m8" / "history.jsonl").read_bytes() == before
    with pytest.raises(MnistlabError, match="already holds a run"):
        mnistlab.fit("model8", output_dir=tmp_path / "m8", data=tiny_data, **TINY)


def test_fit_group_resumed_on_a_finished_run_says_so_and_trains_nothing(tmp_path, tiny_data):
    config = mnistlab.config_for("model1", epochs=1, val_size=100, output_dir=str(tmp_path / "m1"))
    first = mnistlab.fit_group([config], data=tiny_data, progress=False, log=lambda m: None)
    said: list[str] = []
    again = mnistlab.fit_group([config], data=tiny_data, progress=False, log=said.append, resume=True)
    assert again == first and any("finished; nothing to resume" in line for line in said), said
    assert not any("resuming" in line for line in said)


def test_fit_stacks_seeds_and_takes_a_class_defined_here(tmp_path, tiny_data):
    class Little(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, stride=2)
            self.head = nn.Linear(4, 10)

        def forward(self, x):
            return self.head(self.conv(x).relu().mean((2, 3)))

    runs = mnistlab.fit(Little, seeds=[1, 2], output_dir=tmp_path / "little", data=tiny_data, **TINY)
    assert [r.summary["seed"] for r in runs] == [1, 2] and runs[0].path == tmp_path / "little" / "seed1"
    assert runs[0].summary["provenance"]["stacked"] == 2
    resumed = mnistlab.fit(resume=tmp_path / "little", data=tiny_data, log=lambda m: None)
    assert [r.history for r in resumed] == [r.history for r in runs]


def test_fit_takes_augmentation_ranges_as_a_dict_over_the_models_own(tmp_path, tiny_data):
    run = mnistlab.fit("model8", output_dir=tmp_path / "a", data=tiny_data, augment={"rotation": 3.0}, **TINY)
    own = mnistlab.config_for("model8").augment
    assert run.train_config.augment.rotation == 3.0 and run.train_config.augment.translate == own.translate


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"epoch": 1}, r"fit\(\) has no field epoch; the fields are: epochs"),
        ({"augment": {"spin": 1.0}}, "augment has no range spin"),
        ({"seeds": [1, 1]}, "seeds must be distinct"),
        ({"resume": "x", "epochs": 1}, "give it alone"),
    ],
)
def test_a_wrong_argument_to_fit_is_one_line(tmp_path, kwargs, says):
    with pytest.raises(MnistlabError, match=says) as caught:
        mnistlab.fit("model8", output_dir=tmp_path / "x", **kwargs)
    assert "\n" not in str(caught.value)


def test_load_run_of_a_folder_without_a_finished_run_says_what_to_do(tmp_path, tiny_data):
    with pytest.raises(MnistlabError, match="holds no run"):
        mnistlab.load_run(tmp_path)
    config = mnistlab.config_for("model1", epochs=2, val_size=100, output_dir=str(tmp_path / "cut"))
    mnistlab.fit_group([config], data=tiny_data, progress=False, log=lambda m: None, stop_after=1)
    with pytest.raises(MnistlabError, match=r"is not finished .*resume"):
        mnistlab.load_run(tmp_path / "cut")


def test_predict_compare_and_plot_curves_on_a_run(tmp_path, tiny_data):
    run = mnistlab.fit("model1", output_dir=tmp_path / "runs" / "m1", data=tiny_data, **TINY)
    (images, labels) = tiny_data[1]
    found = mnistlab.predict(run, [images[k] / 255.0 for k in range(5)])
    assert len(found) == 5 and all(0 <= p.digit <= 9 and len(p.probabilities) == 10 for p in found)
    assert [p.digit for p in mnistlab.predict(tmp_path / "runs" / "m1", [images[0] / 255.0])] == [found[0].digit]
    table = mnistlab.compare(tmp_path / "runs")
    assert "`model1`" in table and "| 1 |" in table
    picture = mnistlab.plot_curves(run)
    assert picture == run.path / "curves.png" and picture.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(MnistlabError, match="does not exist"):
        mnistlab.predict(tmp_path / "nowhere.pt", [images[0] / 255.0])
    assert json.loads((run.path / "config.json").read_text())["model"] == "model1"
    assert np.isfinite(run.summary["last_val_acc"])


def numbers(runs):
    """Every epoch's losses and accuracies of ``runs``: what an interrupted run must reach (timings aside)."""
    return [[{k: v for k, v in row.items() if k != "seconds"} for row in r.history] for r in runs]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted group of two seeds (stacked, or one after another), made once for the kill tests."""
    from conftest import tiny_digits

    made: dict[bool, list] = {}

    def group(unstackable: bool) -> list:
        if unstackable not in made:
            data = (tiny_digits(600, seed=0), tiny_digits(200, seed=1))
            recipe = {**TINY, "data": data, **({"scheduler": "plateau"} if unstackable else {})}
            folder = tmp_path_factory.mktemp("whole")
            made[unstackable] = mnistlab.fit("model1", seeds=[1, 2], output_dir=folder, **recipe)
        return made[unstackable]

    return group


class Stop(KeyboardInterrupt):
    """What Ctrl-C (or a kill) does to the process, raised where a test chooses."""


def test_a_group_trained_seed_after_seed_killed_in_its_first_seed_resumes_to_its_last(tmp_path, tiny_data):
    """Seeds that cannot stack (a plateau schedule) train one after another: killed during the first, a resume
    of the folder finishes every seed, each to the numbers of an uninterrupted run."""
    recipe = {**TINY, "scheduler": "plateau", "data": tiny_data}
    whole = mnistlab.fit("model1", seeds=[1, 2], output_dir=tmp_path / "whole", **recipe)

    def kill_after_first_epoch(configs):
        def hook(epoch, histories):
            if epoch == 1:
                raise Stop()

        return hook

    with pytest.raises(Stop):
        mnistlab.fit("model1", seeds=[1, 2], output_dir=tmp_path / "cut", after_epoch=kill_after_first_epoch, **recipe)
    assert (tmp_path / "cut" / "seed2" / "config.json").is_file()  # the group was known from its first write
    resumed = mnistlab.fit(resume=tmp_path / "cut", data=tiny_data, log=lambda m: None)
    assert [r.summary["seed"] for r in resumed] == [1, 2]
    assert numbers(resumed) == numbers(whole)


@pytest.mark.kills
@pytest.mark.parametrize("unstackable", [False, True])
@pytest.mark.parametrize("at", [1, 2, 3, 4])
def test_a_group_killed_at_each_rename_of_its_first_save_resumes_as_the_group(
    tmp_path, tiny_data, monkeypatch, at, unstackable, uninterrupted
):
    """The first write of a group (every seed's config.json, with a commit record in each folder) cut at each of its
    renames (the two records, the two configs): a resume completes or discards it, finds every seed, and trains them
    as the group they were (stacked, or one after another), to the uninterrupted run's numbers."""
    from mnistlab.core import fileio

    recipe = {**TINY, "data": tiny_data, **({"scheduler": "plateau"} if unstackable else {})}
    whole = uninterrupted(unstackable)
    real, calls = fileio.os.replace, {"n": 0}

    def replace(source, target):
        calls["n"] += 1
        if calls["n"] == at:
            raise Stop()
        return real(source, target)

    monkeypatch.setattr(fileio.os, "replace", replace)
    with pytest.raises(Stop):
        mnistlab.fit("model1", seeds=[1, 2], output_dir=tmp_path / "cut", **recipe)
    monkeypatch.setattr(fileio.os, "replace", real)
    if at >= 3:  # cut among the configs' renames, its records written: resumable as the group
        resumed = mnistlab.fit(resume=tmp_path / "cut", data=tiny_data, log=lambda m: None)
    else:  # cut before every record was written: no config stands, the same command starts it again
        assert not list((tmp_path / "cut").glob("seed*/config.json"))
        resumed = mnistlab.fit("model1", seeds=[1, 2], output_dir=tmp_path / "cut", **recipe)
    assert [r.summary["seed"] for r in resumed] == [1, 2] and numbers(resumed) == numbers(whole)
    assert resumed[1].summary["provenance"]["stacked"] == (1 if unstackable else 2)
