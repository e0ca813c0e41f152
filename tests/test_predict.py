"""MNIST-style preprocessing of arbitrary digit pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
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


def _png(path, width: int, height: int, extra: bytes = b"") -> None:
    """A PNG whose header claims ``width`` x ``height`` (and holds no real pixels), with chunks ``extra``."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    "width, height, says",
    [
        (30_000, 30_000, "decompression bomb"),  # past Pillow's own limit
        (12_000, 12_000, "decompression bomb"),  # past its warning: our decision, not a warning
        (5_000, 4_000, "too large for one digit"),  # under both, over a digit's budget: refused from the header
    ],
)
def test_an_image_bomb_is_refused_from_its_header_in_one_line(tmp_path, width, height, says):
    import warnings

    _png(tmp_path / "bomb.png", width, height)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning reaches the user
        with pytest.raises(MnistlabError, match=says) as caught:
            load_image(tmp_path / "bomb.png")
    assert str(caught.value).startswith("bomb.png: ") and str(tmp_path) not in str(caught.value)


def test_a_text_chunk_that_inflates_to_megabytes_is_refused(tmp_path):
    import struct
    import zlib

    text = b"comment\0\0" + zlib.compress(b"a" * 64_000_000)
    data = text
    chunk = struct.pack(">I", len(data)) + b"zTXt" + data + struct.pack(">I", zlib.crc32(b"zTXt" + data))
    _png(tmp_path / "text.png", 28, 28, chunk)
    with pytest.raises(MnistlabError, match="text.png: not a readable image"):
        load_image(tmp_path / "text.png")


def test_a_large_photo_is_reduced_in_the_decoder_and_read(tmp_path):
    picture = np.full((4_000, 5_000), 255, dtype=np.uint8)
    picture[1_000:3_000, 2_300:2_700] = 0  # a dark bar on white paper
    Image.fromarray(picture).save(tmp_path / "photo.jpg", quality=90)
    gray = load_image(tmp_path / "photo.jpg")
    assert gray.size <= 16_000_000 and to_mnist(gray).max() == pytest.approx(1.0)


def test_a_digit_on_a_transparent_background_is_laid_on_white(tmp_path):
    rgba = np.zeros((60, 60, 4), dtype=np.uint8)  # black and fully transparent, as drawing apps save it
    rgba[10:50, 25:35] = (0, 0, 0, 255)  # a black stroke
    Image.fromarray(rgba, "RGBA").save(tmp_path / "seven.png")
    gray = load_image(tmp_path / "seven.png")
    assert gray[0, 0] == 1.0 and gray[30, 30] == 0.0  # white paper, black ink
    digit = to_mnist(gray)
    assert digit[0, 0] == 0.0 and digit.max() == pytest.approx(1.0)  # MNIST's polarity


def test_the_shipped_model_is_model8_seed1s_recorded_last_epoch(tmp_path):
    """What a fresh install predicts with (and the demo shows outside the lab's checkout): the recorded run's own
    weights, remade from it by `slim_copy`."""
    import torch
    from conftest import ROOT

    from mnistlab.models.checkpoint import SHIPPED, read_checkpoint, slim_copy

    shipped, recorded = read_checkpoint(SHIPPED), read_checkpoint(ROOT / "results" / "model8" / "seed1" / "last.pt")
    assert shipped["model"] == "model8" and shipped["epoch"] == recorded["epoch"] == 15
    assert all(torch.equal(shipped["state_dict"][k], recorded["state_dict"][k]) for k in recorded["state_dict"])
    remade = read_checkpoint(slim_copy(ROOT / "results" / "model8" / "seed1" / "last.pt", tmp_path / "m.pt"))
    assert remade["config"] == shipped["config"] and "optimizer" not in shipped


def test_predict_reads_a_digit_with_the_shipped_model_when_no_checkpoint_is_given(mnistlab, tmp_path):
    ink = np.full((200, 200), 255, dtype=np.uint8)
    ink[30:170, 90:110] = 0  # a one, dark on white paper
    Image.fromarray(ink).save(tmp_path / "one.png")
    result = mnistlab("predict", tmp_path / "one.png", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith(f"{tmp_path / 'one.png'}: 1 (p="), result.stderr


def test_export_checks_probabilities_and_predictions_with_a_relative_tolerance(tmp_path, monkeypatch):
    """A model whose log-probabilities reach -1000 on some digits: a difference in the fifth digit of such a value
    changes no probability and no prediction, so the file is written; a tolerance it misses is refused in one line."""
    import numpy as np

    from mnistlab.core.errors import MnistlabError
    from mnistlab.models import config_for, save_checkpoint
    from mnistlab.tools import export

    class Sharp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(1, 10, 28)

        def forward(self, x):  # digits ruled out by a margin of thousands: log-probabilities down to -9000
            return torch.log_softmax(self.c(x).flatten(1) - 1000.0 * torch.arange(10.0) * (1 + x.mean()), dim=1)

    from mnistlab.models import model_card

    card = model_card(Sharp)
    model = card.build()
    checkpoint = tmp_path / "sharp.pt"
    save_checkpoint(checkpoint, model, config_for(card).to_dict())
    difference = export.export_onnx(checkpoint, tmp_path / "sharp.onnx")
    assert (tmp_path / "sharp.onnx").is_file() and difference < 1e-4
    import onnxruntime

    pixels, _ = export._check_images()
    session = onnxruntime.InferenceSession(str(tmp_path / "sharp.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {export.INPUT: pixels.numpy()})[0]
    with torch.inference_mode():
        want = export._FromPixels(model).eval()(pixels).numpy()
    assert np.abs(got - want).max() > 1e-4  # an absolute check on log-probabilities would have refused it
    assert (got.argmax(1) == want.argmax(1)).all()
    with pytest.raises(MnistlabError, match=r"relative difference .* \(tolerance 1e-12\), 0 of 1000 predictions"):
        export.export_onnx(checkpoint, tmp_path / "strict.onnx", tolerance=1e-12)
    assert not (tmp_path / "strict.onnx").exists()
    assert np.isfinite(difference)


def test_a_16_bit_photo_on_grey_paper_reads_as_its_8_bit_twin(tmp_path):
    """A 16-bit greyscale scan (dark ink on grey paper) is read over its own range of values, as the 8-bit image
    of the same photo is, not clipped to white and refused as blank."""
    from PIL import Image

    from mnistlab.tools.predict import load_image, to_mnist

    paper = np.full((60, 60), 40000, dtype=np.uint16)
    paper[10:50, 27:33] = 9000  # a stroke: a 1
    Image.fromarray(paper).save(tmp_path / "deep.png")
    Image.fromarray((paper / 257).round().astype(np.uint8)).save(tmp_path / "flat.png")
    deep, flat = load_image(tmp_path / "deep.png"), load_image(tmp_path / "flat.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert np.abs(deep - flat).max() < 2 / 255
    assert np.abs(to_mnist(deep) - to_mnist(flat)).max() < 0.02


def test_export_of_a_model_that_branches_on_data_is_one_line_naming_the_line(tmp_path, capfd):
    from strangers import STRANGERS

    from mnistlab.core.errors import MnistlabError
    from mnistlab.models import config_for, model_card, save_checkpoint
    from mnistlab.tools import export

    (tmp_path / "strangers.py").write_text(STRANGERS)
    card = model_card(f"{tmp_path / 'strangers.py'}:Branchy")
    checkpoint = tmp_path / "b.pt"
    save_checkpoint(checkpoint, card.build(), config_for(card).to_dict())
    with pytest.raises(MnistlabError, match=r"branches on a tensor's value .* at strangers.py:\d+; ") as caught:
        export.export_onnx(checkpoint, tmp_path / "b.onnx")
    assert "\n" not in str(caught.value) and not (tmp_path / "b.onnx").exists()
    assert capfd.readouterr().err == ""  # the exporter's own warnings stay off the terminal


def test_export_default_tolerance_passes_float32_reordering_and_refuses_what_is_more(tmp_path, monkeypatch):
    """onnxruntime's kernels sum in another order: a looped model's probabilities move by about 1e-4 of themselves
    (LoopNet read 1.2e-4, every prediction the same). The default passes that; it refuses 1e-2."""
    import onnxruntime

    from mnistlab.core.errors import MnistlabError
    from mnistlab.models import config_for, model_card, save_checkpoint
    from mnistlab.tools import export

    card = model_card("model2")
    checkpoint = tmp_path / "m.pt"
    save_checkpoint(checkpoint, card.build(), config_for(card).to_dict())
    real = onnxruntime.InferenceSession

    def drifting(relative):
        class Session(real):
            def run(self, *args, **kwargs):
                out = super().run(*args, **kwargs)
                return [out[0] * (1 + relative)]  # every log-probability off by ``relative`` of itself

        return Session

    monkeypatch.setattr(onnxruntime, "InferenceSession", drifting(2e-4))
    assert 1e-4 < export.export_onnx(checkpoint, tmp_path / "m.onnx") < export.TOLERANCE
    monkeypatch.setattr(onnxruntime, "InferenceSession", drifting(1e-2))
    with pytest.raises(MnistlabError, match="relative difference"):
        export.export_onnx(checkpoint, tmp_path / "far.onnx")
