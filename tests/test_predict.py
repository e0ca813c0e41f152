"""MNIST-style preprocessing of arbitrary digit pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnistlab.core.errors import MnistlabError
from mnistlab.tools.predict import load_image, to_mnist


def stroke_picture(size=(90, 60), dark_on_light=False) -> np.ndarray:
    """A 'digit': a thick vertical bar off-centre in a large canvas."""
    canvas = np.zeros(size, dtype=np.float32)
    canvas[10:70, 5:15] = 1.0
    return 1.0 - canvas if dark_on_light else canvas


@pytest.mark.parametrize("dark_on_light", [False, True])
def test_fits_20x20_and_centres_by_mass(dark_on_light):
    digit = to_mnist(stroke_picture(dark_on_light=dark_on_light))
    assert digit.shape == (28, 28) and digit.min() >= 0 and digit.max() <= 1
    rows, cols = np.nonzero(digit > 0.2)
    assert rows.max() - rows.min() + 1 <= 20 and cols.max() - cols.min() + 1 <= 20
    assert rows.max() - rows.min() + 1 >= 19  # the long side fills the box
    cy, cx = (np.indices(digit.shape) * digit).reshape(2, -1).sum(1) / digit.sum()
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1
    assert digit[0].max() == 0 and digit[:, 0].max() == 0  # background is black, as in MNIST


def test_polarity_does_not_matter():
    assert np.allclose(to_mnist(stroke_picture()), to_mnist(stroke_picture(dark_on_light=True)), atol=1e-6)


def test_blank_and_unreadable_images_are_refused(tmp_path):
    with pytest.raises(MnistlabError, match="blank image"):
        to_mnist(np.full((40, 40), 0.7, dtype=np.float32))
    (tmp_path / "x.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(MnistlabError, match="not a readable image"):
        load_image(tmp_path / "x.png")
    with pytest.raises(MnistlabError, match="no such file"):
        load_image(tmp_path / "missing.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(MnistlabError, match="blank image"):
        to_mnist(load_image(tmp_path / "black.png"))
