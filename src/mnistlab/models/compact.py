"""Models beyond the seed's eight: the smallest CNNs we could make hold 99.4%, and the candidates they beat.

All share one shape (``slim_net``): unpadded 3x3 convolutions on the 28x28 image (the stem), a 2x2 max
pool, 3x3 convolutions on the 12x12 map (the body; the last ``padded`` of them keep their size), global
average pooling and a 1x1 convolution to the 10 classes. BatchNorm then ReLU after every 3x3, no biases.
Each registered candidate says what it was for; the report's record section shows what it scored on the
validation split.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from mnistlab.config import Recipe
from mnistlab.data.augment import Augment
from mnistlab.models.registry import register_model
from mnistlab.models.zoo import Net, conv, head


def separable(cin: int, cout: int, padding: int = 0) -> nn.Sequential:
    """Depthwise 3x3 (one filter per channel) then pointwise 1x1, then BatchNorm and ReLU: a 3x3 convolution
    factored into 9*cin + cin*cout weights instead of 9*cin*cout."""
    return nn.Sequential(OrderedDict(
        depthwise=nn.Conv2d(cin, cin, 3, padding=padding, groups=cin, bias=False),
        pointwise=nn.Conv2d(cin, cout, 1, bias=False),
        bn=nn.BatchNorm2d(cout),
        relu=nn.ReLU(),
    ))  # fmt: skip


def slim_net(
    stem: tuple[int, ...],
    body: tuple[int, ...],
    padded: int = 1,
    dropout: float = 0.0,
    *,
    factored: bool = False,
) -> Net:
    """``stem`` widths at full resolution, pool, ``body`` widths; the last ``padded`` body convs keep size.

    With ``factored``, the body's convolutions are depthwise-separable (``separable``)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    cin, index = 1, 1
    for width in stem:
        layers[f"conv{index}"] = conv(cin, width, dropout=dropout)
        cin, index = width, index + 1
    layers["pool1"] = nn.MaxPool2d(2)
    for k, width in enumerate(body):
        pad = 1 if k >= len(body) - padded else 0
        block = separable(cin, width, pad) if factored else conv(cin, width, padding=pad, dropout=dropout)
        layers[f"{'sep' if factored else 'conv'}{index}"] = block
        cin, index = width, index + 1
    layers["gap"] = nn.AdaptiveAvgPool2d(1)
    layers["out"] = head(cin)
    return Net(layers)


# Model 8's recipe (chosen on the validation split for Model 8) is every candidate's starting point.
SLIM_RECIPE = Recipe(epochs=15, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, scheduler="onecycle",
                     pct_start=0.3, div_factor=10.0, final_div_factor=100.0,
                     augment=Augment(rotation=7.0, translate=0.1), dropout=0.0)  # fmt: skip


@register_model(
    title="Slim 3.5k",
    target=("At least 99.4% test accuracy in each of the last 3 of 15 epochs on 3 seeds, with at most "
            "3,500 parameters.",),
    design="Unpadded 3x3 6-10 | pool | 10-10 | padded 3x3 10 | GAP | 1x1 to the classes (3,486 "
           "parameters); Model 8's recipe.",
    recipe=SLIM_RECIPE,
    params=3_486,
    candidate=True,
)  # fmt: skip
def slim_a(dropout: float = 0.0) -> nn.Module:
    return slim_net((6, 10), (10, 10, 10), padded=1, dropout=dropout)


@register_model(
    title="Slim 3.5k, padded body",
    target=("slim_a's target; the same parameters spent on a body that keeps the 12x12 map (2.2x the "
            "multiply-adds after the pool).",),
    design="Unpadded 3x3 6-10 | pool | padded 3x3 10-10-10 | GAP | 1x1 to the classes (3,486 parameters); "
           "Model 8's recipe.",
    recipe=SLIM_RECIPE,
    params=3_486,
    candidate=True,
)  # fmt: skip
def slim_b(dropout: float = 0.0) -> nn.Module:
    return slim_net((6, 10), (10, 10, 10), padded=3, dropout=dropout)


@register_model(
    title="Slim 3.5k, separable body",
    target=("slim_a's target; the body's 3x3 convolutions factored into depthwise and pointwise parts, which "
            "buys 24 channels after the pool instead of 10 for the same parameters.",),
    design="Unpadded 3x3 8-12 | pool | separable 3x3 24-24 | padded separable 3x3 24 | GAP | 1x1 to the "
           "classes (3,340 parameters); Model 8's recipe.",
    recipe=SLIM_RECIPE,
    params=3_340,
)  # fmt: skip
def slim_sep(dropout: float = 0.0) -> nn.Module:
    return slim_net((8, 12), (24, 24, 24), padded=1, dropout=dropout, factored=True)


@register_model(
    title="Slim 3.5k, deeper separable",
    target=("slim_sep's target; four separable blocks of 20 channels instead of three of 24.",),
    design="Unpadded 3x3 8-12 | pool | separable 3x3 20-20 | padded separable 3x3 20-20 | GAP | 1x1 to the "
           "classes (3,424 parameters); Model 8's recipe.",
    recipe=SLIM_RECIPE,
    params=3_424,
)  # fmt: skip
def slim_sep4(dropout: float = 0.0) -> nn.Module:
    return slim_net((8, 12), (20, 20, 20, 20), padded=2, dropout=dropout, factored=True)
