"""Pruning (models.prune) and a run that starts from a trained network cut to its widths (Recipe.init)."""

from __future__ import annotations

import json

import pytest
import torch

from mnistlab.core.errors import MnistlabError
from mnistlab.models import config_for, create_model, load_checkpoint
from mnistlab.models.layers import slim_net
from mnistlab.models.prune import cut_into
from mnistlab.models.stacking import unstack
from mnistlab.training.engine import build_stacked, fit


def trained_like(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``net`` with BatchNorm scales, shifts and statistics of a trained network's kind (not init's ones and
    zeros), in evaluation mode."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.weight.data = torch.randn(size, generator=generator)
            module.bias.data = torch.randn(size, generator=generator)
            module.running_mean = torch.randn(size, generator=generator)
            module.running_var = torch.rand(size, generator=generator) + 0.5
    return net.eval()


def test_a_child_as_wide_as_its_parent_is_its_parent():
    parent = trained_like(slim_net((8, 16), (26,) * 5, padded=3, factored=True))
    child = slim_net((8, 16), (26,) * 5, padded=3, factored=True).eval()
    cut_into(parent, child)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(parent(x), child(x))


def test_each_layer_keeps_its_largest_batchnorm_scales_in_order_and_the_next_layer_their_inputs():
    parent = trained_like(slim_net((4, 6), (8, 8), padded=1, factored=True))
    child = slim_net((4, 3), (5, 8), padded=1, factored=True)
    scales = torch.tensor([0.1, -2.0, 0.5, 1.5, -0.05, 0.9])
    parent.features.conv2.bn.weight.data = scales.clone()
    cut_into(parent, child)
    kept = [1, 3, 5]  # |-2.0|, 1.5, 0.9: the three largest, in the parent's order
    assert torch.equal(child.features.conv2.bn.weight, scales[kept])
    assert torch.equal(child.features.conv2.conv.weight, parent.features.conv2.conv.weight[kept])
    assert torch.equal(child.features.sep3.depthwise.weight, parent.features.sep3.depthwise.weight[kept])
    rows = child_rows(parent.features.sep3.bn, 5)
    assert torch.equal(child.features.sep3.pointwise.weight, parent.features.sep3.pointwise.weight[rows][:, kept])
    assert child.features.out.weight.shape == (10, 8, 1, 1)  # the last block kept all 8: the head keeps its inputs


def child_rows(bn: torch.nn.BatchNorm2d, width: int) -> torch.Tensor:
    return torch.argsort(bn.weight.abs(), descending=True, stable=True)[:width].sort().values


@pytest.mark.parametrize(
    "child, message",
    [
        (slim_net((4, 6), (8, 8, 8), padded=1, factored=True), "the same layers in the same order"),
        (slim_net((4, 7), (8, 8), padded=1, factored=True), "more than the 6 it is cut from"),
        (slim_net((4, 6), (8, 8), padded=1, factored=True, tied=2), "the same layers in the same order"),
    ],
)
def test_a_network_that_does_not_fit_is_one_line(child, message):
    parent = trained_like(slim_net((4, 6), (8, 8), padded=1, factored=True))
    with pytest.raises(MnistlabError, match=message):
        cut_into(parent, child)


def test_a_block_cutting_does_not_know_is_named():
    parent = trained_like(slim_net((4, 6), (8, 8), padded=1, factored=True, tied=2))
    child = slim_net((4, 6), (8, 8), padded=1, factored=True, tied=2)
    message = "layer tied \\(Tied\\) has weights that cutting does not know"
    with pytest.raises(MnistlabError, match=message):
        cut_into(parent, child)


def tiny(tmp_path, name, **overrides):
    values = dict(epochs=1, batch_size=50, val_size=100, device="cpu", output_dir=str(tmp_path / name), threads=1)
    return config_for("searched", **{**values, **overrides})


PARENT = {"stem": [4, 8], "body": [12, 12], "padded": 1, "factored": True}
CHILD = {"stem": [4, 6], "body": [8, 8], "padded": 1, "factored": True}


def test_a_run_starts_from_the_run_of_its_own_seed_cut_to_its_widths(tmp_path, tiny_data):
    quiet = dict(data=tiny_data, progress=False, log=lambda m: None)
    for seed in (1, 2):
        fit(tiny(tmp_path, f"parents/s{seed}", arch=PARENT, seed=seed), **quiet)
    config = tiny(tmp_path, "child", arch=CHILD, seed=2, init=str(tmp_path / "parents"), epochs=1)
    assert config.init == str(tmp_path / "parents" / "s2" / "last.pt") and len(config.init_sha256) == 64
    recorded = config_for("searched", **{k: v for k, v in config.to_dict().items() if k != "model"})
    assert recorded.init == config.init  # a config read back keeps its file and sha256
    # what the run starts from is the parent of seed 2 cut to its widths, whatever its own seed would draw
    (start,) = unstack(build_stacked([config], torch.device("cpu")))
    expected = create_model("searched", **CHILD)
    cut_into(load_checkpoint(config.init), expected)
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), expected.state_dict().values()))
    fit(config, **quiet)
    written = json.loads((tmp_path / "child" / "config.json").read_text())
    assert written["init"] == config.init and written["init_sha256"] == config.init_sha256


def test_a_changed_parent_or_one_that_saw_the_validation_images_is_refused(tmp_path, tiny_data):
    quiet = dict(data=tiny_data, progress=False, log=lambda m: None)
    fit(tiny(tmp_path, "seen", arch=PARENT, val_size=0), **quiet)
    with pytest.raises(MnistlabError, match="trained on validation images the student is scored on"):
        fit(tiny(tmp_path, "c1", arch=CHILD, init=str(tmp_path / "seen")), **quiet)
    fit(tiny(tmp_path, "parent", arch=PARENT), **quiet)
    config = tiny(tmp_path, "c2", arch=CHILD, init=str(tmp_path / "parent"))
    (tmp_path / "parent" / "last.pt").write_bytes((tmp_path / "parent" / "last.pt").read_bytes() + b"x")
    with pytest.raises(MnistlabError, match="changed since the run was configured"):
        fit(config, **quiet)
    with pytest.raises(MnistlabError, match="no checkpoint there for seed 3"):
        tiny(tmp_path, "c3", arch=CHILD, seed=3, init=str(tmp_path / "nothing"))
    # a folder of runs that holds one run, of another seed, starts no run of this seed from it
    fit(tiny(tmp_path, "ones/s1", arch=PARENT), **quiet)
    with pytest.raises(MnistlabError, match="no checkpoint there for seed 2"):
        tiny(tmp_path, "c4", arch=CHILD, seed=2, init=str(tmp_path / "ones"))
    assert tiny(tmp_path, "c5", arch=CHILD, seed=2, init=str(tmp_path / "ones" / "s1")).init.endswith("s1/last.pt")
