"""Learning from bigger models: the distillation loss, a tiny distilled run (config naming its teachers with their
sha256, resumed exactly, stacked and through the graph step's code), and the teachers it refuses."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import sha256_file
from mnistlab.core.rundir import read_history
from mnistlab.models import config_for, create_model
from mnistlab.models.stacking import stack
from mnistlab.training.engine import fit, fit_group
from mnistlab.training.step import Teachers, TrainingState

QUIET = dict(progress=False, log=lambda line: None)
TINY = dict(epochs=2, batch_size=64, val_size=100, device="cpu", threads=1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, request):
    """A Model 8 trained on the tiny data's training split, its 100 validation images held out."""
    from conftest import tiny_digits

    data = tiny_digits(600, seed=0), tiny_digits(200, seed=1)
    out = tmp_path_factory.mktemp("teacher") / "m8"
    fit(config_for("model8", output_dir=str(out), **TINY), data=data, **QUIET)
    return out


def test_the_loss_is_the_labels_plus_the_teachers_share():
    torch.manual_seed(0)
    net = stack([create_model("sepnet3k")]).eval()
    images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8, 1))
    log_probs = net(images)
    plain = TrainingState(net, torch.optim.SGD(net.parameters(), lr=0.1), None, None, "none")
    hard = plain.losses(images, log_probs, labels)
    assert torch.allclose(hard, F.cross_entropy(log_probs[:, 0], labels[:, 0]).unsqueeze(0))
    itself = Teachers([stack([create_model("sepnet3k")])], temperature=4.0)
    itself.groups[0].load_state_dict(net.state_dict())
    distilled = TrainingState(
        net, plain.optimizer, None, None, "none", teachers=itself, distill_alpha=0.5, distill_temperature=4.0
    )
    # a teacher that is the student: the KL term is 0, the loss half the labels' term
    assert torch.allclose(distilled.losses(images, log_probs, labels), 0.5 * hard, atol=1e-6)
    other = Teachers([stack([create_model("model8")])], temperature=4.0)
    other_state = TrainingState(
        net, plain.optimizer, None, None, "none", teachers=other, distill_alpha=1.0, distill_temperature=4.0
    )
    target = torch.softmax(other.groups[0](images) / 4.0, -1)[:, 0]
    student = F.log_softmax(log_probs[:, 0] / 4.0, -1)
    expected = 16.0 * F.kl_div(student, target, reduction="batchmean")
    assert torch.allclose(other_state.losses(images, log_probs, labels), expected.unsqueeze(0), atol=1e-5)


def test_a_distilled_run_names_its_teachers_and_resumes_exactly(tmp_path, tiny_data, teacher):
    def config(out):
        return config_for("sepnet3k", teachers=[str(teacher)], output_dir=str(tmp_path / out), **TINY)

    whole = fit(config("whole"), data=tiny_data, **QUIET)
    recorded = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert recorded["teachers"] == [str(teacher / "last.pt")]
    assert recorded["teacher_sha256"] == [sha256_file(teacher / "last.pt")]
    fit(config("cut"), data=tiny_data, stop_after=1, **QUIET)
    resumed = fit(config("cut"), data=tiny_data, resume=True, **QUIET)
    assert read_history(tmp_path / "cut") == [
        {**h, "seconds": c["seconds"]} for h, c in zip(read_history(tmp_path / "whole"), read_history(tmp_path / "cut"))
    ]
    assert resumed["last_val_acc"] == whole["last_val_acc"]
    plain = fit(config_for("sepnet3k", output_dir=str(tmp_path / "plain"), **TINY), data=tiny_data, **QUIET)
    assert read_history(tmp_path / "plain")[0]["train_loss"] != read_history(tmp_path / "whole")[0]["train_loss"]
    assert not math.isnan(plain["last_val_acc"])


def test_stacked_seeds_and_the_graph_steps_code_learn_from_the_teachers_too(tmp_path, tiny_data, teacher, request):
    def configs(root):
        return [
            config_for(
                "sepnet3k",
                seed=s,
                teachers=[str(teacher)],
                output_dir=str(tmp_path / root / f"s{s}"),
                **{**TINY, "ema": 0.0},
            )
            for s in (1, 2)
        ]

    alone = [fit(c, data=tiny_data, **QUIET) for c in configs("alone")]
    together = fit_group(configs("together"), data=tiny_data, **QUIET)
    for one, other in zip(alone, together):
        assert one["last_val_acc"] == pytest.approx(other["last_val_acc"], abs=2.0)

    request.getfixturevalue("eager_graph_step")  # from here on, through the graph step's code
    graphed = fit_group(configs("graphed"), data=tiny_data, **QUIET)
    for one, other in zip(together, graphed):
        assert one["last_val_acc"] == pytest.approx(other["last_val_acc"], abs=2.0)
    first = [read_history(tmp_path / root / "s1")[0]["train_loss"] for root in ("together", "graphed")]
    assert first[0] == pytest.approx(first[1], rel=1e-3)  # the same loss, teachers' term included


def test_teachers_that_saw_the_validation_images_or_changed_are_refused(tmp_path, tiny_data, teacher):
    full = tmp_path / "full"
    fit(config_for("model8", output_dir=str(full), **{**TINY, "val_size": 0, "epochs": 1}), data=tiny_data, **QUIET)
    with pytest.raises(MnistlabError, match="trained on validation images the student is scored on"):
        fit(
            config_for("sepnet3k", teachers=[str(full)], output_dir=str(tmp_path / "s"), **TINY),
            data=tiny_data,
            **QUIET,
        )
    # a final run (no validation split) may learn from it
    final = config_for("sepnet3k", teachers=[str(full)], output_dir=str(tmp_path / "f"), **{**TINY, "val_size": 0})
    fit(final, data=tiny_data, stop_after=1, **QUIET)
    payload = torch.load(full / "last.pt", weights_only=True)
    payload["epoch"] = 99  # the teacher's file changes after the run began
    torch.save(payload, full / "last.pt")
    with pytest.raises(MnistlabError, match="changed since the run was configured"):
        fit(final, data=tiny_data, resume=True, **QUIET)
    with pytest.raises(MnistlabError, match="no checkpoint there"):
        config_for("sepnet3k", teachers=[str(tmp_path / "nowhere")])


def test_cached_teacher_outputs_give_the_uncached_run_bit_for_bit(tmp_path, tiny_data, teacher):
    """A second candidate with the same images and teachers reads the teachers' outputs instead of running them,
    and every epoch and weight equals a run that never cached; a damaged cache file is computed again."""
    from mnistlab.core.rundir import read_summary

    def group(name, **changes):
        values = {**TINY, "teachers": (str(teacher),), "data_dir": str(tmp_path / "data"), **changes}
        return [config_for("sepnet3k", seed=s, output_dir=str(tmp_path / name / f"s{s}"), **values) for s in (1, 2)]

    fit_group(group("plain", teacher_cache=False), data=tiny_data, **QUIET)
    fit_group(group("first"), data=tiny_data, **QUIET)  # computes and keeps them
    cached = sorted((tmp_path / "data" / "teacher-outputs").glob("*.pt"))
    assert len(cached) == TINY["epochs"]
    fit_group(group("second"), data=tiny_data, **QUIET)  # reads them
    assert read_summary(tmp_path / "first" / "s1")["provenance"]["teacher_cache"] == {"hits": 0, "misses": 2}
    assert read_summary(tmp_path / "second" / "s1")["provenance"]["teacher_cache"] == {"hits": 2, "misses": 0}
    for name in ("first", "second"):
        for seed in (1, 2):
            ours, theirs = tmp_path / name / f"s{seed}", tmp_path / "plain" / f"s{seed}"
            strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
            assert strip(read_history(ours)) == strip(read_history(theirs))
            a = torch.load(ours / "last.pt", weights_only=True)["state_dict"]
            b = torch.load(theirs / "last.pt", weights_only=True)["state_dict"]
            assert all(torch.equal(a[k], b[k]) for k in a)
    cached[0].write_bytes(b"damaged")
    fit_group(group("third"), data=tiny_data, **QUIET)
    assert read_summary(tmp_path / "third" / "s1")["provenance"]["teacher_cache"] == {"hits": 1, "misses": 1}
    plain = [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(tmp_path / "plain" / "s2")]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(tmp_path / "third" / "s2")] == plain
    payload = torch.load(cached[0], weights_only=True)  # one value changed, the file still loads: its digest tells
    payload["targets"][0][0, 0, 0] += 0.25
    torch.save(payload, cached[0])
    fit_group(group("flipped"), data=tiny_data, **QUIET)
    assert read_summary(tmp_path / "flipped" / "s1")["provenance"]["teacher_cache"] == {"hits": 1, "misses": 1}
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(tmp_path / "flipped" / "s2")] == plain
    payload = torch.load(cached[0], weights_only=True)  # a one-seed group's targets under this two-seed key
    payload["targets"] = [t[:, :1].clone() for t in payload["targets"]]
    from mnistlab.training.teachercache import content_digest

    payload["sha256"] = content_digest(payload["targets"])  # forged: the digest recomputed, the shape wrong
    torch.save(payload, cached[0])
    fit_group(group("forged"), data=tiny_data, **QUIET)
    assert read_summary(tmp_path / "forged" / "s1")["provenance"]["teacher_cache"] == {"hits": 1, "misses": 1}
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(tmp_path / "forged" / "s2")] == plain
    other = group("other", distill_temperature=2.0)  # other teachers' settings: another key
    fit_group(other, data=tiny_data, **QUIET)
    assert len(list((tmp_path / "data" / "teacher-outputs").glob("*.pt"))) == 2 * TINY["epochs"]


def test_the_clean_view_gathers_the_teachers_table_into_every_batch(tmp_path, tiny_data, teacher):
    """With ``teacher_view`` "clean" the teachers see each training image unwarped, once: each batch's targets are
    their rows of that table in the epoch's order; kept or not, read back or damaged, a run gives the same numbers,
    and they differ from the augmented view's."""
    from mnistlab.core.rundir import read_summary
    from mnistlab.data.loader import make_loaders, normalize
    from mnistlab.training.teachercache import CleanTargets

    def group(name, **changes):
        values = {**TINY, "teachers": (str(teacher),), "data_dir": str(tmp_path / "data"), "teacher_view": "clean"}
        values = {**values, "augment": {"rotation": 10.0}, **changes}
        return [config_for("sepnet3k", seed=s, output_dir=str(tmp_path / name / f"s{s}"), **values) for s in (1, 2)]

    configs = group("probe")
    teachers = Teachers.load(configs[0], torch.device("cpu"))
    loader = make_loaders(*tiny_data, batch_size=64, augment=configs[0].augment, val_size=100).train
    targets = CleanTargets(None, configs, "tiny", torch.device("cpu")).targets(1, loader, teachers, torch.device("cpu"))
    assert len(targets) == len(loader) and targets[0].shape == (64, 2, 10)
    for slot, seed in enumerate((1, 2)):
        first = loader.plan(seed, 1).order[:64]
        expected = teachers.probabilities(normalize(loader.pixels[first]))[:, 0]
        assert torch.allclose(targets[0][:, slot], expected, atol=1e-6)

    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    fit_group(group("plain", teacher_cache=False), data=tiny_data, **QUIET)
    fit_group(group("first"), data=tiny_data, **QUIET)  # computes the table and keeps it
    kept = sorted((tmp_path / "data" / "teacher-outputs").glob("*.pt"))
    assert len(kept) == 1  # one table for the split: not one per epoch
    fit_group(group("second"), data=tiny_data, **QUIET)  # reads it
    assert read_summary(tmp_path / "first" / "s1")["provenance"]["teacher_cache"] == {"hits": 0, "misses": 1}
    assert read_summary(tmp_path / "second" / "s1")["provenance"]["teacher_cache"] == {"hits": 1, "misses": 0}
    kept[0].write_bytes(b"damaged")
    fit_group(group("third"), data=tiny_data, **QUIET)  # computed again
    assert read_summary(tmp_path / "third" / "s1")["provenance"]["teacher_cache"] == {"hits": 0, "misses": 1}
    for seed in (1, 2):
        plain = strip(read_history(tmp_path / "plain" / f"s{seed}"))
        assert all(strip(read_history(tmp_path / name / f"s{seed}")) == plain for name in ("first", "second", "third"))
    fit_group(group("augmented", teacher_view="augmented"), data=tiny_data, **QUIET)
    assert strip(read_history(tmp_path / "augmented" / "s1")) != strip(read_history(tmp_path / "plain" / "s1"))
    with pytest.raises(MnistlabError, match="unknown teacher view 'noisy'"):
        config_for("sepnet3k", teacher_view="noisy")


def test_the_captured_graph_leaves_the_clean_view_to_the_eager_step(teacher):
    """The captured CUDA graph asks the teachers of its own warped batch: a clean-view run must not take it (on a
    GPU it would silently learn from the augmented view). The check comes before anything is built."""
    from mnistlab.training.engine import graphed_trainer

    config = config_for("sepnet3k", teachers=[str(teacher)], teacher_view="clean", val_size=100)
    cuda = torch.device("cuda")
    assert graphed_trainer(config=config, state=None, loader=None, seeds=(1,), device=cuda) is None
