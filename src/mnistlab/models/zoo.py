"""The reference's progression (Model 1 to Model 8), each with its Target, its design notes and its recipe (our
variants of its designs, ``model7_rf``, ``model8_v1`` and their kin, are the lab's: the repository's ``lab/``).

Conventions from Model 2 on (the reference does not say; these are ours): convolutions have no bias and are
followed by BatchNorm then ReLU (BatchNorm's shift makes a bias redundant); the layer that produces the
10 class scores has neither; dropout follows each 3x3 block. Channel widths were chosen to hit the reference's
parameter counts exactly with a shape a student of the course would recognise.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from torch import nn

from mnistlab.core.config import Augment, Recipe
from mnistlab.models.layers import Net, conv, head, slim_net
from mnistlab.models.registry import ModelCard, Reference, register_model


def _sgd(epochs: int, **kwargs: object) -> Recipe:
    return Recipe(epochs=epochs, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9, **kwargs)  # type: ignore[arg-type]


ROTATE_7 = Augment(rotation=7.0)


@register_model(
    ModelCard(
        title="Model 1",
        target=(
            "Get the basic skeleton right. We will try and avoid changing this skeleton as much as possible.",
            "No fancy stuff.",
        ),
        design="Seven 3x3 convolutions 32-64 | pool | 128-256 | pool | 512-1024-10, biased, ReLU, no BatchNorm; "
        "the last three unpadded convolutions shrink 7x7 to 1x1. Widths ours (the classic skeleton "
        "that gives exactly the reference's count).",
        recipe=_sgd(20),
        params=6_379_786,
        reference=Reference(params=6_379_786, best_test_acc=99.21),
        reference_rf=(3, 5, 6, 10, 14, 16, 24, 32, 40),
    )
)
def model1() -> nn.Module:
    # fmt: off
    return Net(OrderedDict(
        conv1=conv(1, 32, padding=1, norm=False),      # 28
        conv2=conv(32, 64, padding=1, norm=False),     # 28
        pool1=nn.MaxPool2d(2),                         # 14
        conv3=conv(64, 128, padding=1, norm=False),    # 14
        conv4=conv(128, 256, padding=1, norm=False),   # 14
        pool2=nn.MaxPool2d(2),                         # 7
        conv5=conv(256, 512, norm=False),              # 5
        conv6=conv(512, 1024, norm=False),             # 3
        conv7=head(1024, 3, bias=True),                # 1
    ))
    # fmt: on


@register_model(
    ModelCard(
        title="Model 2",
        target=(
            "Reduce the number of parameters while maintaining the model performance.",
            "Introduce batch normalization and dropout for regularization.",
        ),
        design="Padded 3x3 convolutions 10-10-20 | pool | 1x1 to 10 | 10-20 | pool | 1x1 to 10 | a 7x7 "
        "convolution to the 10 classes. Widths, BatchNorm on the 1x1 transitions and dropout 0.1 are ours.",
        recipe=_sgd(20, dropout=0.1),
        params=10_970,
        reference=Reference(params=10_970, best_test_acc=99.20),
        reference_rf=(3, 5, 7, 8, 8, 12, 16, 18, 18, 36),
    )
)
def model2(dropout: float = 0.1) -> nn.Module:
    # fmt: off
    return Net(OrderedDict(
        conv1=conv(1, 10, padding=1, dropout=dropout),   # 28
        conv2=conv(10, 10, padding=1, dropout=dropout),  # 28
        conv3=conv(10, 20, padding=1, dropout=dropout),  # 28
        pool1=nn.MaxPool2d(2),                           # 14
        trans1=conv(20, 10, kernel=1),                   # 14
        conv4=conv(10, 10, padding=1, dropout=dropout),  # 14
        conv5=conv(10, 20, padding=1, dropout=dropout),  # 14
        pool2=nn.MaxPool2d(2),                           # 7
        trans2=conv(20, 10, kernel=1),                   # 7
        out=head(10, 7),                                 # 1
    ))
    # fmt: on


@register_model(
    ModelCard(
        title="Model 3",
        target=(
            "Make the skeleton lean: drop padding so every convolution shrinks the map, and move the 1x1 "
            "transition before the pool, as Models 4-8 do.",
            "Keep the big final kernel for one more step, so that Model 4 changes one thing: it replaces it with GAP.",
        ),
        design="Unpadded 3x3 convolutions 10-16 | 1x1 to 8 | pool | 12-16-10 | a 6x6 convolution to the 10 "
        "classes. The reference left this model blank; all of it is ours.",
        recipe=_sgd(20, dropout=0.1),
        params=9_434,
    )
)
def model3(dropout: float = 0.1) -> nn.Module:
    # fmt: off
    return Net(OrderedDict(
        conv1=conv(1, 10, dropout=dropout),    # 26
        conv2=conv(10, 16, dropout=dropout),   # 24
        trans1=conv(16, 8, kernel=1),          # 24
        pool1=nn.MaxPool2d(2),                 # 12
        conv3=conv(8, 12, dropout=dropout),    # 10
        conv4=conv(12, 16, dropout=dropout),   # 8
        conv5=conv(16, 10, dropout=dropout),   # 6
        out=head(10, 6),                       # 1
    ))
    # fmt: on


def gap_net(widths: tuple[int, ...], dropout: float, *, adaptive: bool = False) -> Net:
    """Models 4-6: conv-conv | 1x1 | pool | conv-conv-conv-conv(padded) | GAP 6x6 | 1x1 to the classes.

    ``adaptive`` pools with AdaptiveAvgPool2d(1) (Model 7's ingredient): the same numbers on 28x28 inputs."""
    c1, c2, c3, c4, c5, c6, c7 = widths
    # fmt: off
    return Net(OrderedDict(
        conv1=conv(1, c1, dropout=dropout),              # 26
        conv2=conv(c1, c2, dropout=dropout),             # 24
        trans1=conv(c2, c3, kernel=1),                   # 24
        pool1=nn.MaxPool2d(2),                           # 12
        conv3=conv(c3, c4, dropout=dropout),             # 10
        conv4=conv(c4, c5, dropout=dropout),             # 8
        conv5=conv(c5, c6, dropout=dropout),             # 6
        conv6=conv(c6, c7, padding=1, dropout=dropout),  # 6
        # the reference's stride 1: one window either way
        gap=nn.AdaptiveAvgPool2d(1) if adaptive else nn.AvgPool2d(6, stride=1),  # 1
        out=head(c7),                                    # 1
    ))
    # fmt: on


@register_model(
    ModelCard(
        title="Model 4",
        target=(
            "Keeping the same number of parameters while maintaining the model performance.",
            "Introduce Global Average Pooling (GAP) and remove the last BIG kernel.",
        ),
        design="Unpadded 3x3 convolutions 20-20 | 1x1 to 10 | pool | 14-16-16 | padded 3x3 to 10 | "
        "AvgPool 6x6 (GAP) | 1x1 to the classes. Widths and dropout 0.1 are ours.",
        recipe=_sgd(20, dropout=0.1),
        params=11_312,
        reference=Reference(params=11_312, best_test_acc=99.30),
        reference_rf=(3, 5, 5, 6, 10, 14, 18, 20, 32, 32),
    )
)
def model4(dropout: float = 0.1) -> nn.Module:
    return gap_net((20, 20, 10, 14, 16, 16, 10), dropout)


@register_model(
    ModelCard(
        title="Model 5",
        target=(
            "Reduce the number of parameters while maintaining the model performance.",
            "Use a smaller number of channels in the initial convolutional layers.",
        ),
        design="Model 4's layers with 8-16 channels before the first pool instead of 20-20, and 12-12-16-16-16 "
        "after it. Widths and dropout 0.05 are ours.",
        recipe=_sgd(20, dropout=0.05),
        params=9_400,
        reference=Reference(params=9_400, best_test_acc=99.40),
        reference_rf=(3, 5, 5, 6, 10, 14, 18, 20, 32, 32),
    )
)
def model5(dropout: float = 0.05) -> nn.Module:
    return gap_net((8, 16, 12, 12, 16, 16, 16), dropout)


@register_model(
    ModelCard(
        title="Model 6",
        target=(
            "Introduce image augmentation techniques to improve model generalization.",
            "Reduce the number of epochs to 15 while maintaining model performance.",
            "Further optimize the model architecture to reduce the number of parameters.",
        ),
        design="Model 5's layers with widths 8-16 | 12 | 16-16-12-16; trained with random rotation of +-7 "
        "degrees and StepLR (x0.1 every 6 epochs). Widths, rotation and schedule are ours.",
        recipe=_sgd(15, dropout=0.05, augment=ROTATE_7, scheduler="step", step_size=6, gamma=0.1),
        params=9_256,
        reference=Reference(params=9_256, best_test_acc=99.06),
        reference_rf=(3, 5, 5, 6, 10, 14, 18, 20, 32, 32),
    )
)
def model6(dropout: float = 0.05) -> nn.Module:
    return gap_net((8, 16, 12, 16, 16, 12, 16), dropout)


# Model 7's recipe as its rounds one and two chose it on the validation split (its layers are the reference's)
MODEL7_RECIPE = Recipe(
    epochs=15,
    batch_size=64,
    optimizer="sgd",
    lr=0.05,
    momentum=0.9,
    augment=Augment(rotation=7.0, translate=0.1),
    scheduler="plateau",
    gamma=0.1,
    patience=1,
)


@register_model(
    ModelCard(
        title="Model 7",
        target=(
            "Optimize the model architecture for better performance.",
            "Incorporate adaptive average pooling for flexible input sizes.",
            "Utilize an adaptive learning rate scheduler for improved convergence.",
        ),
        design="The reference's layers: unpadded 3x3 convolutions 16-24 | 1x1 to 8 | pool | 16-16 | "
        "AdaptiveAvgPool2d(1) | 1x1 to the classes (7,568 parameters, the reference's count; its field ends at 14 "
        "pixels, half a digit). ReduceLROnPlateau on the validation loss (x0.1 after an epoch without improvement). "
        "The starting rate 0.05, batch 64, no dropout and shifts up to 10% beside the rotation were chosen on the "
        "validation split in rounds one and two, on 4 seeds; the scheduler's settings are ours. Round three "
        "redesigned its layers: Model 7 redesigned (`model7_rf`).",
        recipe=MODEL7_RECIPE,
        params=7_568,
        reference=Reference(params=7_568, best_test_acc=99.11),
        reference_rf=(3, 5, 5, 6, 10, 14, 14, 14),  # the reference's table for these layers
    )
)
def model7(dropout: float = 0.05) -> nn.Module:
    # fmt: off
    return Net(OrderedDict(
        conv1=conv(1, 16, dropout=dropout),   # 26
        conv2=conv(16, 24, dropout=dropout),  # 24
        trans1=conv(24, 8, kernel=1),         # 24
        pool1=nn.MaxPool2d(2),                # 12
        conv3=conv(8, 16, dropout=dropout),   # 10
        conv4=conv(16, 16, dropout=dropout),  # 8
        gap=nn.AdaptiveAvgPool2d(1),          # 1
        out=head(16),                         # 1
    ))
    # fmt: on


# Model 8's first design's recipe, chosen on validation; the redesigned Model 8 adds zoom to it, and the record's
# candidates start from it
MODEL8_RECIPE = Recipe(
    epochs=15,
    batch_size=64,
    optimizer="sgd",
    lr=0.05,
    momentum=0.9,
    scheduler="onecycle",
    pct_start=0.3,
    div_factor=10.0,
    final_div_factor=100.0,
    augment=Augment(rotation=7.0, translate=0.1),
    dropout=0.0,
)

# Model 8's recipe as round three chose it: also the recipe a model from outside the package starts from
MODEL8_FINAL_RECIPE = dataclasses.replace(
    MODEL8_RECIPE, lr=0.1, augment=Augment(rotation=7.0, translate=0.1, scale=0.1)
)


@register_model(
    ModelCard(
        title="Model 8",
        target=(
            "Reach at least 99.4% test accuracy in every one of the last 3 of 15 epochs, on every seed, "
            "with fewer than 8,000 parameters.",
            "With margin: the first design (Model 8, first design) held it on 2 of 3 seeds only. Factor the "
            "3x3 convolutions after the pool into depthwise and pointwise parts, which buys 36 channels there "
            "instead of 16 for the same parameters.",
        ),
        design="Unpadded 3x3 convolutions 8-16 | pool | separable 3x3 36-36 | padded separable 3x3 36-36 | GAP | "
        "1x1 to the classes; each separable block is a depthwise 3x3, a pointwise 1x1, BatchNorm and ReLU. "
        "SGD with OneCycleLR (peak 0.1) at batch 64, rotation +-7 degrees, shifts up to 10% and zoom up to "
        "10%, no dropout: the first design's recipe plus zoom and a higher peak; the architecture and each "
        "change chosen on the validation split (see the three tuning tables and the earlier attempts; the "
        "peak was chosen in round three, on 4 seeds).",
        recipe=MODEL8_FINAL_RECIPE,
        params=7_500,
    )
)
def model8(dropout: float = 0.0) -> nn.Module:
    return slim_net((8, 16), (36, 36, 36, 36), padded=2, dropout=dropout, factored=True)
