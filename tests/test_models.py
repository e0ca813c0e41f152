"""Every registered model: documented parameter count, output, backward pass, determinism, registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mnistlab.core.errors import MnistlabError
from mnistlab.models import ModelCard, config_for, create_model, get_card, list_models, register_model
from mnistlab.models.registry import _REGISTRY


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_is_the_documented_one(name):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == get_card(name).params


@pytest.mark.parametrize("name", [n for n in list_models() if get_card(n).reference is not None])
def test_models_with_a_reference_hit_its_parameter_count(name):
    """Exactly: Model 1 ... Model 8 are the reference's architectures (a redesign has a name of its own)."""
    assert sum(p.numel() for p in create_model(name).parameters()) == get_card(name).reference.params


def test_model7_is_the_references_and_its_redesign_has_its_own_name():
    assert sum(p.numel() for p in create_model("model7").parameters()) == 7_568
    redesign = get_card("model7_rf")
    assert redesign.params == 7_408 and redesign.title == "Model 7 redesigned (field 32)"


def test_model8_is_under_8000():
    assert sum(p.numel() for p in create_model("model8").parameters()) < 8_000


@pytest.mark.parametrize("name", list_models())
def test_log_probabilities_backward_and_deterministic_eval(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(3, 1, 28, 28)
    out = model(x)
    assert out.shape == (3, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_recipes_are_checked_when_made():
    from mnistlab.core.config import Augment, Recipe, recipe_values
    from mnistlab.models import config_for
    from mnistlab.models.registry import teacher_files

    for name in list_models():  # a card's recipe is what a run of it trains with, every field
        card = get_card(name)
        assert card.target and all(isinstance(t, str) and t for t in card.target), name
        config = config_for(name).to_dict()
        recipe = dataclasses.asdict(card.recipe)
        recipe["teachers"] = teacher_files(card.recipe.teachers)[0]  # a run folder means each of its seeds
        assert {k: config[k] for k in recipe_values(card.recipe)} == recipe, name
    with pytest.raises(MnistlabError, match="learning rate must be in"):
        Recipe(lr=0)  # a card with a bad recipe fails at import, not at its first run
    assert Recipe(augment={"rotation": 5.0}).augment == Augment(rotation=5.0)  # dicts become Augment once


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(MnistlabError, match="unknown model 'model9'.*model1, model2"):
        create_model("model9")


def test_list_models_pattern_and_register_decorator():
    assert list_models("model1*") == ["model1"]
    assert list_models()[:3] == ["model1", "model2", "model3"]

    card = ModelCard(title="Tiny", target=("test",), design="one conv", recipe=get_card("model8").recipe, params=10)

    @register_model(card)
    def tiny_for_test() -> torch.nn.Module:
        return torch.nn.Conv2d(1, 1, 3)

    try:
        assert "tiny_for_test" in list_models("tiny*")
        with pytest.raises(ValueError, match="registered twice"):
            register_model(card)(tiny_for_test)
    finally:
        _REGISTRY.pop("tiny_for_test")


# (kernel, stride, padding) of every conv and pool, in order, as the reference's receptive-field tables list them
REFERENCE_LAYERS = {
    "model1": [(3, 1, 1), (3, 1, 1), (2, 2, 0), (3, 1, 1), (3, 1, 1), (2, 2, 0), (3, 1, 0), (3, 1, 0), (3, 1, 0)],
    "model2": [
        (3, 1, 1),
        (3, 1, 1),
        (3, 1, 1),
        (2, 2, 0),
        (1, 1, 0),
        (3, 1, 1),
        (3, 1, 1),
        (2, 2, 0),
        (1, 1, 0),
        (7, 1, 0),
    ],
    "model4": [
        (3, 1, 0),
        (3, 1, 0),
        (1, 1, 0),
        (2, 2, 0),
        (3, 1, 0),
        (3, 1, 0),
        (3, 1, 0),
        (3, 1, 1),
        (6, 1, 0),
        (1, 1, 0),
    ],
    "model7": [(3, 1, 0), (3, 1, 0), (1, 1, 0), (2, 2, 0), (3, 1, 0), (3, 1, 0), None, (1, 1, 0)],
    # our redesign of Model 7 (round three): Model 6's sequence with adaptive pooling
    "model7_rf": [
        (3, 1, 0),
        (3, 1, 0),
        (1, 1, 0),
        (2, 2, 0),
        (3, 1, 0),
        (3, 1, 0),
        (3, 1, 0),
        (3, 1, 1),
        None,
        (1, 1, 0),
    ],
}
REFERENCE_LAYERS["model5"] = REFERENCE_LAYERS["model6"] = REFERENCE_LAYERS["model4"]


@pytest.mark.parametrize("name", sorted(REFERENCE_LAYERS))
def test_layer_sequence_is_the_references(name):
    layers = [
        m
        for m in create_model(name).modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.AvgPool2d, torch.nn.AdaptiveAvgPool2d))
    ]

    def geometry(m):
        if isinstance(m, torch.nn.AdaptiveAvgPool2d):
            return None
        first = lambda v: v if isinstance(v, int) else v[0]  # noqa: E731
        return first(m.kernel_size), first(m.stride), first(m.padding)

    assert [geometry(m) for m in layers] == REFERENCE_LAYERS[name]


def test_a_trained_variant_is_its_architecture_under_a_tag_and_its_old_name():
    """`sepnet3k.kd98` and the name the lab's runs record (`sepnet3k_kd98`) are one card, which builds sepnet3k's
    network (no builder of its own) with its own recipe; architectures list apart from variants."""
    from mnistlab.models.registry import register_variant, variants_of

    assert get_card("sepnet3k.kd98") is get_card("sepnet3k_kd98")
    variant, base = get_card("sepnet3k.kd98"), get_card("sepnet3k")
    assert (variant.architecture, variant.tag, variant.tagged) == ("sepnet3k", "kd98", "sepnet3k.kd98")
    assert variant.builder is base.builder and variant.recipe != base.recipe
    built, plain = create_model("sepnet3k.kd98"), create_model("sepnet3k")
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert config_for("sepnet3k.kd98", teachers=()).model == "sepnet3k_kd98"  # as the lab's runs record it
    for name in list_models():
        card = get_card(name)
        if card.architecture:
            assert name in variants_of(card.architecture) and card.params == get_card(card.architecture).params
    assert "sepnet3k_kd98" not in list_models(variants=False) and "sepnet3k" in list_models(variants=False)
    assert list_models("sepnet3k.k*") == ["sepnet3k_kd", "sepnet3k_kd98"]
    with pytest.raises(MnistlabError, match="sepnet3k has no variant 'kd99'; its variants: sepnet3k.first"):
        get_card("sepnet3k.kd99")
    card = dataclasses.replace(base, name="wrong_count", params=3_000)
    with pytest.raises(ValueError, match="says 3,000 parameters; sepnet3k has 3,424"):
        register_variant("sepnet3k", "wrong", card)
    with pytest.raises(ValueError, match="itself a variant"):
        register_variant("sepnet3k_kd98", "again", card)
    assert "wrong_count" not in _REGISTRY
    with pytest.raises(ValueError, match="'sepnet3k.kd98' is registered twice"):
        register_variant("sepnet3k", "kd98", dataclasses.replace(base, name="twice"))
    assert "twice" not in _REGISTRY  # a refused variant leaves nothing registered


def test_models_lists_architectures_and_with_variants_their_tags():
    from click.testing import CliRunner

    from mnistlab.cli import cli

    plain = CliRunner().invoke(cli, ["models"]).output
    assert "sepnet3k " in plain and "variants: kd, kd98" in plain and "sepnet3k.kd98" not in plain
    tagged = CliRunner().invoke(cli, ["models", "--variants"]).output
    assert "  sepnet3k.kd98 " in tagged and "recorded as sepnet3k_kd98" in tagged
    assert "tied2k9.kd98" in CliRunner().invoke(cli, ["models", "--all"]).output


def test_the_labs_recorded_checkpoints_of_a_variant_load_under_either_name():
    """A run recorded before tags names its model `sepnet3k_kd98`; it loads, and its card is sepnet3k.kd98's."""
    from pathlib import Path

    from mnistlab.models import load_checkpoint
    from mnistlab.models.checkpoint import read_checkpoint

    path = Path(__file__).resolve().parents[1] / "results" / "sepnet3k_kd98" / "seed1" / "last.pt"
    payload = read_checkpoint(path)
    assert payload["model"] == "sepnet3k_kd98" and get_card(payload["model"]).tagged == "sepnet3k.kd98"
    model = load_checkpoint(path)
    assert sum(p.numel() for p in model.parameters()) == get_card("sepnet3k").params


def test_a_user_registers_a_variant_of_their_own_architecture():
    from mnistlab.models import register_variant

    card = ModelCard(title="Tiny", target=("test",), design="one conv", recipe=get_card("model8").recipe, params=10)

    @register_model(card)
    def tiny_arch() -> torch.nn.Module:
        return torch.nn.Conv2d(1, 1, 3)

    try:
        slow = dataclasses.replace(card, name="tiny_arch_slow", recipe=dataclasses.replace(card.recipe, lr=0.001))
        register_variant("tiny_arch", "slow", slow)
        assert config_for("tiny_arch.slow").lr == 0.001 and config_for("tiny_arch.slow").model == "tiny_arch_slow"
        assert isinstance(create_model("tiny_arch.slow"), torch.nn.Conv2d)
        assert list_models("tiny_arch*", variants=False) == ["tiny_arch"]
    finally:
        from mnistlab.models.registry import _ALIASES

        for name in ("tiny_arch", "tiny_arch_slow"):
            _REGISTRY.pop(name, None)
        _ALIASES.pop("tiny_arch.slow", None)
