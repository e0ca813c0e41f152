"""The demo's functions, called directly (the browser test drives the same page through Chromium)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnistlab.core.errors import MnistlabError
from mnistlab.models import create_model
from mnistlab.models.checkpoint import load_checkpoint
from mnistlab.tools.demo import build, choices, digit_from_file, digit_from_sketch, layer_text, sketch_to_gray, view
from mnistlab.tools.insight import Box, blocks, inspect_digit

ROOT = Path(__file__).resolve().parents[1]
MODEL8 = ROOT / "results" / "model8" / "seed1" / "last.pt"


def canvas_with_bar(size: int = 280) -> np.ndarray:
    """What Gradio's sketchpad gives for a black vertical stroke: RGBA, transparent elsewhere."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[40:240, 130:150] = (0, 0, 0, 255)
    return rgba


def test_a_drawn_bar_is_read_as_a_one_by_the_shipped_model8():
    digit = digit_from_sketch({"background": None, "layers": [], "composite": canvas_with_bar()})
    assert digit.shape == (28, 28) and digit.max() == pytest.approx(1.0)
    shown = view(digit, str(MODEL8))
    assert shown.prediction.startswith("Prediction: **1**") and shown.prediction.endswith(
        "by Model 8, 7,500 parameters"
    )
    assert shown.layer_names == ("conv1", "conv2", "pool1", "sep3", "sep4", "sep5", "sep6", "gap", "out")
    assert shown.layer == "conv1" and "Receptive field: 3×3 px (jump 1)" in shown.text
    last = view(digit, str(MODEL8), "out")
    assert "Layer 9 of 9: out" in last.text and "36×36 px (jump 16), larger than" in last.text
    assert "the box shows 28×28 px, rows 0–27, columns 0–27" in last.text
    assert view(digit, str(MODEL8), "no such layer").layer == "conv1"


def test_empty_uniform_and_unreadable_inputs_are_one_line_messages(tmp_path):
    with pytest.raises(MnistlabError, match="the canvas is empty"):
        digit_from_sketch({"background": None, "layers": [], "composite": np.zeros((280, 280, 4), np.uint8)})
    with pytest.raises(MnistlabError, match="the canvas is empty"):
        digit_from_sketch(None)
    Image.fromarray(np.full((30, 30), 200, np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(MnistlabError, match="grey.png: blank image"):
        digit_from_file(tmp_path / "grey.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(MnistlabError, match="notes.png: not a readable image"):
        digit_from_file(tmp_path / "notes.png")
    with pytest.raises(MnistlabError, match="no file"):
        digit_from_file(None)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MnistlabError, match="broken.pt is not a readable checkpoint"):
        view(np.zeros((28, 28), np.float32), str(tmp_path / "broken.pt"))


def test_sketch_colours_become_grey_with_white_behind_transparency():
    gray = sketch_to_gray(canvas_with_bar())
    assert gray[0, 0] == 1.0 and gray[100, 140] == 0.0
    rgb = np.full((50, 50, 3), 255, np.uint8)
    rgb[10:40, 20:25] = (255, 0, 0)
    assert sketch_to_gray(rgb)[20, 22] == pytest.approx(1 / 3, abs=1e-3)


@pytest.mark.parametrize("name", ["model2", "model4", "model7", "model8", "sepnet3k", "tied3k4"])
def test_each_box_holds_every_input_pixel_its_unit_depends_on(name):
    """The box comes from the analysis module's arithmetic; the gradient of the unit with respect to the
    input says which pixels it really reads. They must lie in the box, and fill it where nothing pads."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    digit = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    inspection = inspect_digit(model, digit)
    assert len(inspection.layers) >= 4
    for index, layer in enumerate(inspection.layers):
        image = torch.from_numpy(digit)[None, None].clone().requires_grad_(True)
        outputs: dict[str, torch.Tensor] = {}
        module = model.get_submodule(blocks(model)[index].path)
        handle = module.register_forward_hook(lambda _m, _i, out, kept=outputs: kept.__setitem__("x", out))
        model(image)
        handle.remove()
        outputs["x"][(0, *layer.unit)].backward()
        rows, cols = np.nonzero(image.grad[0, 0].abs().numpy() > 0)
        if rows.size == 0:  # a unit past a ReLU at zero reads nothing
            continue
        shown = layer.box.clipped()
        read = Box(int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max()))
        assert shown.top <= read.top and read.bottom <= shown.bottom, (name, layer.name, read, shown)
        assert shown.left <= read.left and read.right <= shown.right, (name, layer.name, read, shown)
        if index == 0:
            assert read == layer.box  # the first convolution reads its whole 3x3 field
    first, last = inspection.layers[0], inspection.layers[-1]
    assert first.rf == (3, 3) and last.rf[0] >= first.rf[0]


def test_box_clipping_and_text_say_the_true_size():
    box = Box(-4, -4, 31, 31)
    assert not box.inside and box.clipped() == Box(0, 0, 27, 27) and (box.height, box.width) == (36, 36)
    assert Box(2, 3, 4, 5).inside


def test_the_picker_lists_every_shipped_final_run_and_a_given_checkpoint_first(tmp_path):
    options = choices(ROOT / "results")
    assert options["model8, seed 1"] == str(MODEL8)
    assert {"sepnet3k, seed 3", "model7, seed 2", "model2, seed 1"} <= set(options)
    assert not any(label.startswith("model1,") for label in options)  # Model 1's weights are not shipped
    assert all(Path(path).name == "last.pt" for path in options.values())
    assert next(iter(choices(ROOT / "results", tmp_path / "mine.pt"))) == str(tmp_path / "mine.pt")
    for path in list(options.values())[::5]:  # every one of them loads and inspects
        assert view(np.eye(28, dtype=np.float32), path).layer_names


def test_the_page_builds_and_says_how_to_install_gradio_when_it_is_missing(monkeypatch):
    app = build(ROOT / "results")
    assert type(app).__name__ == "Blocks" and "mnistlab" in app.title
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    with pytest.raises(MnistlabError, match=r"pip install 'mnistlab\[demo\]'"):
        build(ROOT / "results")


def test_layer_text_names_position_channels_and_unit():
    model = load_checkpoint(MODEL8)
    layer = inspect_digit(model, np.eye(28, dtype=np.float32)).layers[3]
    text = layer_text(layer, 4, 9)
    channel, row, column = layer.unit
    assert text.startswith("**Layer 4 of 9: sep3**") and "36 channels of 10×10" in text
    assert f"channel {channel} at row {row}, column {column}" in text


def test_the_command_refuses_a_bad_checkpoint_and_a_taken_port_in_one_line(mnistlab, tmp_path):
    import socket

    def demo(*args: str):
        return mnistlab("demo", *args, timeout=120)

    (tmp_path / "text.pt").write_text("junk\n")
    result = demo("--checkpoint", str(tmp_path / "text.pt"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1  # one line, whatever the unpickler's own words are
    assert lines[0].startswith(f"error: {tmp_path / 'text.pt'} is not a readable checkpoint: ")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = demo("--port", str(port))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot serve on 127.0.0.1:{port}: the port is taken or the host is not this machine's; pick "
        "another --port or --host"
    )


@pytest.mark.parametrize("kind", ["mlp", "upsample"])
def test_the_page_serves_any_model_that_predicts(tmp_path, kind):
    """An MLP (no feature maps) still shows its prediction; a model with a layer the analysis does not know
    (nn.Upsample) shows its maps without a field box."""
    from torch import nn

    from mnistlab.models import config_for, model_card, save_checkpoint

    def mlp() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))

    def upsample() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(4, 10, 3),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip

    card = model_card(mlp if kind == "mlp" else upsample)
    checkpoint = tmp_path / "m.pt"
    save_checkpoint(checkpoint, card.build(), config_for(card).to_dict())
    shown = view(digit_from_sketch(canvas_with_bar()), str(checkpoint))
    assert shown.prediction.startswith("Prediction: **") and shown.probabilities is not None
    if kind == "mlp":
        assert shown.layer_names == () and "no layer with a spatial output" in shown.text
    else:
        assert len(shown.layer_names) >= 2 and "Receptive field: not computed for this model" in shown.text


@pytest.mark.cli
def test_port_0_serves_on_a_free_port_and_prints_its_url(tmp_path):
    """`demo --port 0`: a free port chosen, the URL printed, the page answering there (loopback only)."""
    import re
    import subprocess
    import time
    import urllib.request

    demo = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", "demo", "--port", "0", "--checkpoint", str(MODEL8)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = demo.stdout.readline()
        found = re.match(r"serving on http://127\.0\.0\.1:(\d+) \(Ctrl-C stops\)", line)
        assert found and int(found.group(1)) > 0, line
        url = f"http://127.0.0.1:{found.group(1)}/"
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and status is None and demo.poll() is None:
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as response:
                    status = response.status
            except OSError:
                time.sleep(0.5)
        assert status == 200
    finally:
        demo.terminate()
        demo.wait(timeout=30)


def test_a_module_used_twice_is_shown_at_each_use_in_order_and_a_sequentials_layers_by_name():
    """A block called before and after a pool: both uses, in the order they run, each with its own map size;
    a Sequential's layers are "layer 0", not "0"."""
    from torch import nn

    from mnistlab.tools.insight import inspect_digit

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.block = nn.Conv2d(4, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.head = nn.Sequential(nn.Conv2d(4, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def forward(self, x):
            x = self.pool(self.block(self.stem(x)))
            return self.head(self.block(x)).log_softmax(1)

    seen = inspect_digit(Twice(), np.zeros((28, 28), dtype=np.float32))
    names = [view.name for view in seen.layers]
    assert names.index("block") < names.index("pool") < names.index("block (use 2)"), names
    sizes = {view.name: view.maps.shape[1:] for view in seen.layers}
    assert sizes["block"] == (28, 28) and sizes["block (use 2)"] == (14, 14)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    labels = [view.name for view in inspect_digit(plain, np.zeros((28, 28), dtype=np.float32)).layers]
    assert labels[0] == "layer 0" and "0" not in labels, labels
