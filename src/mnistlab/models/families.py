"""The architecture families a student starts from, with their layers as data: ``searched`` is the family of shapes
``mnistlab search`` draws from (``layers.slim_net``); a trial's layers are its run's ``arch``."""

from __future__ import annotations

from torch import nn

from mnistlab.models.layers import slim_net
from mnistlab.models.registry import ModelCard, register_model
from mnistlab.models.zoo import MODEL8_RECIPE

SEARCHED = "searched"  # the family of shapes a search draws from (below): a trial's layers are its `arch`


@register_model(
    ModelCard(
        title="Searched shape",
        target=(
            "A shape drawn by `mnistlab search`: the family the record's models come from, with its layers as data "
            "(a run's `arch`), so that any trial can be trained, reloaded and reported like the zoo's models.",
        ),
        design="slim_net(stem, body, padded, factored, tied): unpadded 3x3 stem convolutions | max pool | body blocks "
        "(full 3x3 or separable), the last `padded` keeping their size | optionally one separable block applied "
        "`tied` times with the same weights and a residual add each pass | GAP | 1x1 to the classes. Without an "
        "`arch`, Model 8's layers.",
        recipe=MODEL8_RECIPE,
        params=7_500,
        listed=False,
        note="not a student: the search's family",
    )
)
def searched(
    stem: tuple[int, ...] = (8, 16),
    body: tuple[int, ...] = (36, 36, 36, 36),
    padded: int = 2,
    factored: bool = True,
    dropout: float = 0.0,
    tied: int = 0,
) -> nn.Module:
    return slim_net(tuple(stem), tuple(body), padded, dropout, factored=factored, tied=tied)
