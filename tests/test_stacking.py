"""Stacked training: K seeds as one network compute what K separate networks would, on tiny data."""

from __future__ import annotations

import copy
import json
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.core.config import TrainConfig
from mnistlab.core.errors import MnistlabError
from mnistlab.data.loader import make_loaders
from mnistlab.models import config_for, create_model, list_models, load_checkpoint
from mnistlab.models.layers import Net
from mnistlab.models.stacking import stack, unstack
from mnistlab.training.engine import fit, fit_group
from mnistlab.training.graphstep import ema_update, sgd_update
from mnistlab.training.step import evaluate, make_optimizer, make_scheduler

QUIET = dict(progress=False, log=lambda m: None)


def seeded_models(name: str, seeds=(1, 2, 3)) -> list[nn.Module]:
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(create_model(name))
    return models


def without_dropout(*modules: nn.Module) -> None:
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0


@pytest.mark.parametrize("name", list_models())
def test_stacked_forward_equals_each_model_on_its_slot(name):
    models = seeded_models(name)
    stacked = stack(models)
    without_dropout(stacked, *models)
    x = torch.randn(5, 3, 28, 28)
    for mode in ("train", "eval"):  # train: BatchNorm uses each slot's own batch statistics
        stacked.train(mode == "train")
        for m in models:
            m.train(mode == "train")
        expected = torch.stack([m(x[:, k : k + 1]) for k, m in enumerate(models)], dim=1)
        torch.testing.assert_close(stacked(x), expected, rtol=1e-4, atol=1e-5)
    for model, back in zip(models, unstack(stacked)):  # running statistics too
        for (key, a), b in zip(model.state_dict().items(), back.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=key)


def test_unstack_of_stack_round_trips_exactly():
    models = seeded_models("sepnet6k")
    back = unstack(stack(models))
    assert [type(m) for m in back] == [type(m) for m in models]
    for model, again in zip(models, back):
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize(
    "name, momentum, weight_decay, nesterov", [("model8", 0.9, 0.0, False), ("model6", 0.8, 1e-3, True)]
)
def test_two_stacked_sgd_steps_equal_steps_taken_alone(name, momentum, weight_decay, nesterov):
    models = seeded_models(name)
    stacked = stack(models)
    without_dropout(stacked, *models)
    config = config_for(name, lr=0.05, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    opt = make_optimizer(stacked, config)
    alone = [make_optimizer(m, config) for m in models]
    torch.manual_seed(0)
    for _ in range(2):
        x, y = torch.randn(8, 3, 28, 28), torch.randint(0, 10, (8, 3))
        out = stacked(x)
        loss = sum(F.cross_entropy(out[:, k], y[:, k]) for k in range(3))  # the sum: each model's own gradient
        opt.zero_grad()
        loss.backward()
        opt.step()
        for k, (model, optimizer) in enumerate(zip(models, alone)):
            optimizer.zero_grad()
            F.cross_entropy(model(x[:, k : k + 1]), y[:, k]).backward()
            optimizer.step()
    for model, back in zip(models, unstack(stacked)):
        for (key, a), b in zip(model.state_dict().items(), back.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=key)


def test_a_layer_without_a_stacked_form_is_named():
    odd = Net(OrderedDict(conv1=nn.Conv2d(1, 4, 3), norm=nn.LayerNorm([4, 26, 26]), out=nn.Conv2d(4, 10, 26)))
    with pytest.raises(MnistlabError, match=r"layer features.norm \(LayerNorm\) has no stacked form"):
        stack([odd, copy.deepcopy(odd)])
    assert stack([odd]).slots == 1  # one model is its own stacked form, whatever its layers
    linear = Net(OrderedDict(conv1=nn.Conv2d(1, 4, 3), flat=nn.Flatten(), out=nn.Linear(4 * 26 * 26, 10)))
    assert stack([linear, copy.deepcopy(linear)]).slots == 2  # a Linear head stacks (StackedLinear)
    with pytest.raises(MnistlabError, match="one architecture"):
        stack([create_model("model8"), create_model("model7")])


def reference_fit(config: TrainConfig, data) -> tuple[nn.Module, list[float]]:
    """A plain single-model training loop, written independently of the engine: what `fit` must compute.
    Returns the model and each epoch's mean training loss (summed on the device batch by batch) and accuracy."""
    loaders = make_loaders(
        *data, batch_size=config.batch_size, augment=config.augment, val_size=config.val_size, seed=config.seed
    )
    torch.manual_seed(config.seed)
    model = create_model(config.model).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(loaders.train))
    losses = []
    for epoch in range(1, config.epochs + 1):
        torch.manual_seed(config.seed * 1_000 + epoch)
        loaders.train.set_epoch(epoch)
        model.train()
        total, seen, correct = torch.zeros(()), 0, 0
        for images, labels in loaders.train:
            log_probs = model(images)
            loss = F.cross_entropy(log_probs, labels)
            correct += int((log_probs.argmax(1) == labels).sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach() * len(labels)
            seen += len(labels)
        losses.append((total.item() / seen, 100.0 * correct / seen))
    return model, losses


def test_a_group_of_one_computes_exactly_what_a_plain_network_does(tmp_path, tiny_data):
    config = config_for("model8", epochs=2, batch_size=32, val_size=100, device="cpu", output_dir=str(tmp_path / "run"))
    fit(config, data=tiny_data, **QUIET)
    expected, losses = reference_fit(config, tiny_data)
    shipped = load_checkpoint(tmp_path / "run" / "last.pt")
    for (key, a), b in zip(expected.state_dict().items(), shipped.state_dict().values()):
        assert torch.equal(a, b), key
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [(h["train_loss"], h["train_acc"]) for h in history] == losses  # the logged loss and accuracy too


def test_a_stacked_run_writes_each_seed_a_run_that_reloads_to_its_numbers(tmp_path, tiny_data):
    configs = [
        config_for(
            "model8", seed=s, epochs=2, batch_size=32, val_size=100, device="cpu", output_dir=str(tmp_path / f"seed{s}")
        )
        for s in (1, 2)
    ]
    summaries = fit_group(configs, data=tiny_data, **QUIET)
    loaders = make_loaders(*tiny_data, batch_size=32, val_size=100, seed=1)
    for config, summary in zip(configs, summaries):
        history = [json.loads(line) for line in open(f"{config.output_dir}/history.jsonl")]
        assert [h["epoch"] for h in history] == [1, 2] and summary["seed"] == config.seed
        assert summary["provenance"]["stacked"] == 2 and summary["params"] == 7500
        again = evaluate(load_checkpoint(f"{config.output_dir}/last.pt"), loaders.test)
        assert again["acc"] == pytest.approx(summary["last_test_acc"])
    first, second = (load_checkpoint(f"{c.output_dir}/last.pt").state_dict() for c in configs)
    assert any(not torch.equal(first[k], second[k]) for k in first)  # two seeds, two different models


def test_stacked_runs_match_the_same_seeds_trained_alone(tmp_path, tiny_data):
    """Not bit-identical (other kernels), but the same training: each seed's accuracies agree closely."""
    base = dict(epochs=2, batch_size=32, val_size=100, device="cpu", dropout=0.0)
    configs = [config_for("model6", seed=s, output_dir=str(tmp_path / f"g{s}"), **base) for s in (1, 2)]
    stacked = fit_group(configs, data=tiny_data, **QUIET)
    for config, together in zip(configs, stacked):
        alone = fit(
            config_for("model6", seed=config.seed, output_dir=str(tmp_path / f"a{config.seed}"), **base),
            data=tiny_data,
            **QUIET,
        )
        assert together["best_val_acc"] == pytest.approx(alone["best_val_acc"], abs=2.0)
        assert together["test_acc_last3"] == pytest.approx(alone["test_acc_last3"], abs=2.0)


def two_seeds(folder, **changes):
    """sepnet3k on seeds 1 and 2, two short epochs of batch 32, each run in ``folder/seed<k>``."""
    return [
        config_for(
            "sepnet3k",
            seed=s,
            epochs=2,
            batch_size=32,
            val_size=100,
            device="cpu",
            output_dir=str(folder / f"seed{s}"),
            **changes,
        )
        for s in (1, 2)
    ]


def test_a_stacked_group_resumes_to_the_same_numbers(tmp_path, tiny_data):
    def configs(root):
        return two_seeds(tmp_path / root)

    whole = fit_group(configs("a"), data=tiny_data, **QUIET)  # with the moving average (sepnet3k's recipe)
    assert fit_group(configs("b"), data=tiny_data, stop_after=1, **QUIET)[0] == {"stopped_after": 1}
    resumed = fit_group(configs("b"), data=tiny_data, resume=True, **QUIET)
    for one, other in zip(whole, resumed):
        assert one["test_acc_last3"] == other["test_acc_last3"] and one["best_val_acc"] == other["best_val_acc"]


def test_plateau_and_mixed_recipes_do_not_stack(tmp_path, tiny_data):
    plateau = [config_for("model7", seed=s, output_dir=str(tmp_path / f"{s}")) for s in (1, 2)]
    with pytest.raises(MnistlabError, match="plateau"):
        fit_group(plateau, data=tiny_data, **QUIET)
    mixed = [
        config_for("model8", seed=1, output_dir=str(tmp_path / "x")),
        config_for("model8", seed=2, lr=0.2, output_dir=str(tmp_path / "y")),
    ]
    with pytest.raises(MnistlabError, match="differ in lr"):
        fit_group(mixed, data=tiny_data, **QUIET)


def test_the_device_step_updates_as_torch_sgd_and_averaged_model_do():
    torch.manual_seed(0)
    params = [torch.randn(5, 3), torch.randn(7)]
    copies = [p.clone().requires_grad_() for p in params]
    reference = torch.optim.SGD(copies, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    buffers = [torch.zeros_like(p) for p in params]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for c, g in zip(copies, grads):
            c.grad = g.clone()
        reference.step()
        sgd_update(params, grads, buffers, torch.tensor(0.1), torch.tensor(0.9), 1e-3, nesterov=True)
    for p, c in zip(params, copies):
        torch.testing.assert_close(p, c.detach(), rtol=1e-6, atol=1e-7)
    model = nn.BatchNorm1d(4)
    averaged = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9), use_buffers=True
    )
    mine = copy.deepcopy(model)
    averaged.update_parameters(model)  # the first update copies, as the device step's first one does
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(torch.randn(4))
        model(torch.randn(6, 4))  # moves the running statistics too
        averaged.update_parameters(model)
        ema_update(
            list(mine.parameters()) + list(mine.buffers()),
            list(model.parameters()) + list(model.buffers()),
            0.9,
        )
    for a, b in zip(averaged.module.state_dict().values(), mine.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_the_graph_trainers_step_run_eagerly_matches_the_engine(tmp_path, tiny_data, request):
    """The captured step's code (device step counter, schedule tables, own SGD and average), run eagerly on
    the CPU, trains as the engine's torch.optim path does."""

    def configs(root):
        return two_seeds(tmp_path / root, dropout=0.0)

    plain = fit_group(configs("plain"), data=tiny_data, **QUIET)

    request.getfixturevalue("eager_graph_step")  # from here on, through the graph step's code
    device = fit_group(configs("device"), data=tiny_data, **QUIET)
    for one, other in zip(plain, device):
        assert one["test_acc_last3"] == pytest.approx(other["test_acc_last3"], abs=1.0)
    for s in (1, 2):
        a = load_checkpoint(tmp_path / "plain" / f"seed{s}" / "last.pt").state_dict()
        b = load_checkpoint(tmp_path / "device" / f"seed{s}" / "last.pt").state_dict()
        for key in a:
            if a[key].is_floating_point():
                torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-3, msg=key)
    assert (
        json.loads((tmp_path / "device" / "seed1" / "history.jsonl").read_text().splitlines()[-1])["lr"]
        == json.loads((tmp_path / "plain" / "seed1" / "history.jsonl").read_text().splitlines()[-1])["lr"]
    )


FUNCTIONAL = '''
import torch
import torch.nn.functional as F
from torch import nn


class Branchy(nn.Module):
    """Two branches joined by torch.cat, a convolution applied twice, residual adds, a Linear head, log-softmax."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 4, 1)
        self.again = nn.Conv2d(12, 12, 3, padding=1)
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.stem(x))), 2)
        x = torch.cat([F.relu(self.left(x)), F.relu(self.right(x))], dim=1)
        x = x + F.relu(self.again(x))
        x = x + F.relu(self.again(x))
        return F.log_softmax(self.head(F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1)), dim=1)


class Plain(nn.Module):
    """Convolutions and pooling by functional calls only."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3)
        self.c2 = nn.Conv2d(8, 10, 3)

    def forward(self, x):
        return self.c2(F.avg_pool2d(F.relu(self.c1(x)), 2)).mean((2, 3))


class Sliced(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 20, 28)

    def forward(self, x):
        return self.c(x)[:, :10].flatten(1)
'''


@pytest.mark.parametrize("builder", ["Branchy", "Plain"])
def test_a_model_written_with_functional_calls_stacks_by_what_its_operations_do(tmp_path, builder):
    from mnistlab.models.external import resolve
    from mnistlab.models.stacking import stack_problem

    (tmp_path / "nets.py").write_text(FUNCTIONAL)
    card = resolve(f"{tmp_path / 'nets.py'}:{builder}")
    torch.manual_seed(0)
    models = [card.build().eval() for _ in range(3)]
    assert stack_problem(models[0]) is None
    stacked = stack(models).eval()
    x = torch.randn(4, 3, 28, 28)
    out = stacked(x)
    for k, model in enumerate(models):
        assert torch.allclose(out[:, k], model(x[:, k : k + 1]), atol=1e-5)
    for k, plain in enumerate(unstack(stacked)):
        assert all(torch.equal(plain.state_dict()[key], models[k].state_dict()[key]) for key in plain.state_dict())


def test_an_operation_without_a_stacked_form_is_named(tmp_path):
    from mnistlab.models.external import resolve
    from mnistlab.models.stacking import stack_problem

    (tmp_path / "nets.py").write_text(FUNCTIONAL)
    problem = stack_problem(resolve(f"{tmp_path / 'nets.py'}:Sliced").build())
    assert problem is not None and "getitem" in problem and "has no stacked form" in problem


def test_a_functional_models_stacked_parameters_line_up_with_each_models_own(tmp_path):
    """The optimizer state and checkpoints are cut by parameter order: the stacked graph keeps the model's."""
    from mnistlab.models.external import resolve

    (tmp_path / "nets.py").write_text(FUNCTIONAL)
    model = resolve(f"{tmp_path / 'nets.py'}:Branchy").build()
    stacked = stack([model, copy.deepcopy(model)])
    assert [n for n, _ in stacked.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert [p.shape[0] for p in stacked.parameters()] == [2 * p.shape[0] for p in model.parameters()]
