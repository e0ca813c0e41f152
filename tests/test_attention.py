"""Attention transfer: the blocks it compares, the maps of a stacked network slot by slot, the clean view's warped
targets, its term in the loss, and runs that use it (resumed exactly, their table kept and read back)."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from mnistlab.core.errors import MnistlabError
from mnistlab.core.rundir import read_history, read_summary
from mnistlab.models import config_for, create_model
from mnistlab.models.layers import Net, conv, head
from mnistlab.models.stacking import stack
from mnistlab.training.attention import Attention, Pair, energy, matched_pairs, warp_maps
from mnistlab.training.engine import fit, fit_group, graphed_trainer
from mnistlab.training.step import Teachers, TrainingState

QUIET = dict(progress=False, log=lambda line: None)
TINY = dict(epochs=2, batch_size=64, val_size=100, device="cpu", threads=1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A Model 8 trained on the tiny data's training split, its 100 validation images held out."""
    from conftest import tiny_digits

    data = tiny_digits(600, seed=0), tiny_digits(200, seed=1)
    out = tmp_path_factory.mktemp("teacher") / "m8"
    fit(config_for("model8", output_dir=str(out), **TINY), data=data, **QUIET)
    return out


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_the_blocks_compared_are_the_last_of_each_size_both_networks_have():
    pairs = matched_pairs(create_model("sepnet3k6w"), [create_model("teacher98k")])
    assert [(p.size, p.stride, p.student, p.teachers) for p in pairs] == [
        (26, 1, "conv1", ("conv1",)),
        (24, 1, "conv2", ("conv2",)),
        (10, 2, "sep3", ("conv3",)),
        (8, 2, "sep6", ("conv5",)),  # the student's last 8x8 block (sep4..sep6 all are), the teacher's (conv4, conv5)
    ]
    wide = Net(OrderedDict(conv1=conv(1, 4, kernel=7), gap=torch.nn.AdaptiveAvgPool2d(1), out=head(4)))  # 22x22 only
    with pytest.raises(MnistlabError, match="share none: set attention to 0"):
        matched_pairs(wide, [create_model("teacher98k")])


def test_a_stacked_networks_maps_are_each_models_own():
    torch.manual_seed(0)
    models = [create_model("sepnet3k6w").eval() for _ in range(2)]
    images = torch.randn(5, 2, 28, 28)
    net = stack(models).eval()
    attention = Attention.create(1000.0, net, [stack([create_model("teacher98k")]).eval()])
    net(images)
    maps = attention.student.energies(2)
    for k, model in enumerate(models):
        x = images[:, k : k + 1]
        for name, layer in model.features.named_children():
            x = layer(x)
            if name == "sep3":
                expected = F.normalize(x.pow(2).mean(1).flatten(1), dim=-1)
                assert torch.allclose(maps[2][:, k], expected, atol=1e-5)
    assert torch.allclose(maps[0].norm(dim=-1), torch.ones(5, 2))
    assert energy(torch.randn(3, 2 * 4, 6, 6), 2).shape == (3, 2, 36)


def test_warped_maps_follow_the_images_warp_at_each_blocks_scale():
    pair = Pair(size=10, stride=2, student="sep3", teachers=("conv3",))
    rows = torch.zeros(1, 1, 100)
    rows[0, 0, 3 * 10 + 4] = 1.0  # one position lit: row 3, column 4
    assert torch.allclose(warp_maps(rows, None, pair)[:, :, 34], torch.ones(1, 1))
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).view(1, 1, 2, 3)
    assert torch.allclose(warp_maps(rows, identity, pair), rows.transpose(0, 1), atol=1e-6)
    # the image moved 4 pixels right (output -> input: x - 4): the map, 2 pixels a position, moves 2 positions
    shifted = torch.tensor([[1.0, 0.0, -2 * 4 / 28], [0.0, 1.0, 0.0]]).view(1, 1, 2, 3)
    moved = warp_maps(rows, shifted, pair).view(10, 10)
    assert moved[3, 6] == pytest.approx(1.0, abs=1e-5) and moved.sum() == pytest.approx(1.0, abs=1e-5)


def test_the_term_is_zero_for_the_teachers_own_maps_and_slots_stay_apart():
    torch.manual_seed(0)
    student = create_model("sepnet3k6w").eval()
    images = torch.randn(6, 1, 28, 28)
    net = stack([student]).eval()
    itself = Teachers([stack([create_model("sepnet3k6w")])], temperature=4.0)
    itself.groups[0].load_state_dict(net.state_dict())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    attention = Attention.create(1000.0, net, list(itself.groups))
    state = TrainingState(
        net, optimizer, None, None, "none", teachers=itself, distill_alpha=0.5, distill_temperature=4.0
    )
    log_probs = net(images)
    labels = torch.randint(0, 10, (6, 1))
    plain = state.losses(images, log_probs, labels)
    state.attention = attention
    assert torch.allclose(state.losses(images, log_probs, labels), plain, atol=1e-6)  # the same maps: no term
    other = Teachers([stack([create_model("teacher98k")])], temperature=4.0)
    state = TrainingState(
        net, optimizer, None, None, "none", teachers=other, distill_alpha=0.5, distill_temperature=4.0
    )
    without = state.losses(images, log_probs, labels)
    state.attention = Attention.create(1000.0, net, list(other.groups))
    net(images)
    term = state.losses(images, log_probs, labels) - without
    other.probabilities(images)
    targets = state.attention.teachers.mean(6, 1)
    expected = 500.0 * sum((s - t).pow(2).mean() for s, t in zip(state.attention.student.energies(1), targets))
    assert term.item() == pytest.approx(float(expected.detach()), rel=1e-4) and term.item() > 0
    # two slots: each slot's term is what its model alone would have
    pair = stack([student, create_model("sepnet3k6w").eval()]).eval()
    both = Attention.create(1000.0, pair, list(other.groups))
    two = images.expand(-1, 2, -1, -1)
    pair(two)
    other.probabilities(two)
    assert torch.allclose(both.loss(2, both.teachers.mean(6, 2))[0], term, rtol=1e-4)


def test_an_attention_run_resumes_exactly_and_differs_from_one_without(tmp_path, tiny_data, teacher):
    def config(out, **changes):
        values = {**TINY, "teachers": [str(teacher)], "attention": 1000.0, "augment": {"rotation": 10.0}, **changes}
        return config_for("sepnet3k", output_dir=str(tmp_path / out), **values)

    whole = fit(config("whole"), data=tiny_data, **QUIET)
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["attention"] == 1000.0
    fit(config("cut"), data=tiny_data, stop_after=1, **QUIET)
    resumed = fit(config("cut"), data=tiny_data, resume=True, **QUIET)
    assert strip(read_history(tmp_path / "cut")) == strip(read_history(tmp_path / "whole"))
    assert resumed["last_val_acc"] == whole["last_val_acc"]
    fit(config("none", attention=0.0), data=tiny_data, **QUIET)
    assert read_history(tmp_path / "none")[0]["train_loss"] != read_history(tmp_path / "whole")[0]["train_loss"]
    assert not math.isnan(whole["last_val_acc"])


def test_the_clean_view_warps_its_kept_table_and_gives_the_same_numbers_read_back(tmp_path, tiny_data, teacher):
    from mnistlab.data.loader import make_loaders, normalize
    from mnistlab.training.teachercache import CleanMaps

    def group(name, **changes):
        values = {**TINY, "teachers": (str(teacher),), "data_dir": str(tmp_path / "data"), "teacher_view": "clean"}
        values = {**values, "augment": {"rotation": 10.0}, "attention": 300.0, **changes}
        return [config_for("sepnet3k", seed=s, output_dir=str(tmp_path / name / f"s{s}"), **values) for s in (1, 2)]

    configs = group("probe")
    cpu = torch.device("cpu")
    teachers = Teachers.load(configs[0], cpu)
    attention = Attention.create(300.0, stack([create_model("sepnet3k")] * 2), list(teachers.groups))
    loader = make_loaders(*tiny_data, batch_size=64, augment=configs[0].augment, val_size=100).train
    batch = CleanMaps(None, configs, attention, "tiny", cpu).epoch(1, loader, teachers, cpu)(0)
    assert [m.shape for m in batch] == [(64, 2, p.size**2) for p in attention.pairs]
    for slot, seed in enumerate((1, 2)):
        plan = loader.plan(seed, 1)
        teachers.probabilities(normalize(loader.pixels[plan.order[:64]]))
        clean = attention.teachers.mean(64, 1)
        for got, rows, pair in zip(batch, clean, attention.pairs):
            expected = warp_maps(rows.transpose(0, 1), plan.theta[None, :64], pair)[:, 0]
            assert torch.allclose(got[:, slot], expected, atol=1e-6)

    fit_group(group("plain", teacher_cache=False), data=tiny_data, **QUIET)
    fit_group(group("first"), data=tiny_data, **QUIET)  # makes both tables and keeps them
    assert len(list((tmp_path / "data" / "teacher-outputs").glob("*.pt"))) == 2  # probabilities and maps
    fit_group(group("second"), data=tiny_data, **QUIET)  # reads them
    assert read_summary(tmp_path / "first" / "s1")["provenance"]["attention_maps"] == {"hits": 0, "misses": 1}
    assert read_summary(tmp_path / "second" / "s1")["provenance"]["attention_maps"] == {"hits": 1, "misses": 0}
    kept = max((tmp_path / "data" / "teacher-outputs").glob("*.pt"), key=lambda f: f.stat().st_size)  # the maps
    kept.write_bytes(b"damaged")
    fit_group(group("third"), data=tiny_data, **QUIET)  # made again
    assert read_summary(tmp_path / "third" / "s1")["provenance"]["attention_maps"] == {"hits": 0, "misses": 1}
    for seed in (1, 2):
        plain = strip(read_history(tmp_path / "plain" / f"s{seed}"))
        assert all(strip(read_history(tmp_path / name / f"s{seed}")) == plain for name in ("first", "second", "third"))
    fit_group(group("without", attention=0.0), data=tiny_data, **QUIET)
    assert strip(read_history(tmp_path / "without" / "s1")) != strip(read_history(tmp_path / "plain" / "s1"))


def test_attention_asks_for_teachers_and_leaves_the_captured_graph(teacher):
    with pytest.raises(MnistlabError, match="attention transfer needs teachers"):
        config_for("sepnet3k", attention=100.0)
    with pytest.raises(MnistlabError, match=r"attention weight must be in \[0, 100000\], got -1.0"):
        config_for("sepnet3k", teachers=[str(teacher)], attention=-1.0)
    config = config_for("sepnet3k", teachers=[str(teacher)], attention=100.0, val_size=100)
    assert graphed_trainer(config=config, state=None, loader=None, seeds=(1,), device=torch.device("cuda")) is None


def test_the_moving_average_has_no_taps(teacher):
    """The weights evaluated (the moving average's copy) are not tapped: only the training pass feeds the term."""
    config = config_for("sepnet3k", teachers=[str(teacher)], attention=100.0, val_size=100, ema=0.999)
    teachers = Teachers.load(config, torch.device("cpu"))
    state = TrainingState.create(stack([create_model("sepnet3k")]), config, 10, teachers)
    tapped = [p.student for p in state.attention.pairs]
    assert all(state.model.features.get_submodule(name)._forward_hooks for name in tapped)
    assert not any(state.averaged.module.features.get_submodule(name)._forward_hooks for name in tapped)
