"""The demo page (``mnistlab demo``): draw a digit, and watch the model see it.

The page shows the 28x28 image the model is given (MNIST's preprocessing, as ``mnistlab predict`` does it), the
ten class probabilities, and for the layer picked: its feature maps and, on the input, the receptive field of
its most active unit. Everything it serves is local: Gradio's own bundled front end, system fonts, no
analytics, no version check. Gradio is an optional extra (``pip install 'mnistlab[demo]'``); the functions that
turn inputs into pictures and text need only numpy, PIL and matplotlib, so they are tested without a browser.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mnistlab.core.errors import MnistlabError
from mnistlab.core.rundir import FINALS
from mnistlab.models.checkpoint import model_from, read_checkpoint
from mnistlab.models.registry import get_card, list_models
from mnistlab.tools.insight import IMAGE, Block, Inspection, LayerView, blocks, inspect_digit, shipped_checkpoints
from mnistlab.tools.predict import load_image, to_mnist

SCALE = 10  # screen pixels per input pixel in the field view
TILE = 64  # side of one feature map in the grid
MARGIN = 28  # blank rows above the grid, where the page lays the picture's label
FIELD = (220, 40, 40)  # the receptive field's colour
DEFAULT = "model8, seed 1"
INSTALL = "the demo needs Gradio: pip install 'mnistlab[demo]'"


# ------------------------------------------------------------------------------------------- inputs to a digit
def sketch_to_gray(value: Any) -> np.ndarray:
    """The sketchpad's picture (Gradio's editor value, or an array) as grayscale in [0, 1], strokes dark on
    white; a transparent canvas counts as white."""
    image = value.get("composite") if isinstance(value, dict) else value
    if image is None:
        raise MnistlabError("the canvas is empty: draw a digit on it")
    array = np.asarray(image, dtype=np.float32)
    if array.max() > 1.0:
        array = array / 255.0
    if array.ndim == 3 and array.shape[2] == 4:  # RGBA over white
        alpha = array[..., 3:4]
        array = array[..., :3] * alpha + (1.0 - alpha)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=2)
    if array.max() - array.min() < 0.1:
        raise MnistlabError("the canvas is empty: draw a digit on it")
    return array


def digit_from_sketch(value: Any) -> np.ndarray:
    return to_mnist(sketch_to_gray(value), "drawing")


def digit_from_file(path: str | Path | None) -> np.ndarray:
    if not path:
        raise MnistlabError("no file: upload an image of one digit")
    return to_mnist(load_image(path), Path(path).name)


# ------------------------------------------------------------------------------------------- checkpoints
@dataclass(frozen=True)
class Loaded:
    model: Any
    layers: tuple[Block, ...]
    title: str  # the model's title and size, e.g. "Model 8, 7,500 parameters"


@lru_cache(maxsize=8)
def load(path: str) -> Loaded:
    """A checkpoint's model and its blocks (cached: the page asks for them on every event)."""
    payload = read_checkpoint(path)
    model = model_from(payload, path)
    title = get_card(payload["model"]).title
    return Loaded(model, tuple(blocks(model)), f"{title}, {sum(p.numel() for p in model.parameters()):,} parameters")


def choices(
    results: str | Path, checkpoint: str | Path | None = None, models: list[str] | None = None
) -> dict[str, str]:
    """Labels to checkpoint paths: ``checkpoint`` first when given, then the final runs of ``models`` (None: every
    registered model) found under ``results``."""
    shipped = shipped_checkpoints(results, list_models() if models is None else models)
    given = {str(checkpoint): str(checkpoint)} if checkpoint is not None else {}
    return {**given, **{label: str(path) for label, path in shipped.items()}}


# ------------------------------------------------------------------------------------------- pictures and words
def enlarged(digit: np.ndarray, scale: int = SCALE) -> Image.Image:
    """The 28x28 input as a grey picture, each pixel ``scale`` screen pixels wide."""
    gray = (np.clip(digit, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(gray).resize((IMAGE * scale, IMAGE * scale), Image.Resampling.NEAREST)


def field_picture(digit: np.ndarray, layer: LayerView) -> Image.Image:
    """The input, enlarged, with the receptive field of ``layer``'s most active unit drawn on it."""
    picture = enlarged(digit).convert("RGB")
    if layer.box is None:  # the field is not computed for this model: the input alone
        return picture
    draw = ImageDraw.Draw(picture)
    box = layer.box.clipped()
    corners = (box.left * SCALE, box.top * SCALE, (box.right + 1) * SCALE - 1, (box.bottom + 1) * SCALE - 1)
    draw.rectangle(corners, outline=FIELD, width=3)
    cy = (layer.box.top + layer.box.bottom + 1) / 2 * SCALE
    cx = (layer.box.left + layer.box.right + 1) / 2 * SCALE
    draw.ellipse((cx - 4, cy - 4, cx + 4, cy + 4), fill=FIELD)  # the field's centre
    return picture


def maps_picture(layer: LayerView, columns: int = 8) -> Image.Image:
    """Every channel's map as a gray tile (one scale for all, black at zero), the most active unit's channel
    framed in the field's colour."""
    maps = layer.maps
    low, high = float(min(maps.min(), 0.0)), float(maps.max())
    scaled = ((maps - low) / (high - low if high > low else 1.0) * 255).astype(np.uint8)
    count = scaled.shape[0]
    columns = min(columns, count)
    rows = -(-count // columns)
    sheet = Image.new("RGB", (columns * (TILE + 4), rows * (TILE + 4) + MARGIN), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for index in range(count):
        tile = Image.fromarray(scaled[index]).resize((TILE, TILE), Image.Resampling.NEAREST)
        x, y = (index % columns) * (TILE + 4) + 2, (index // columns) * (TILE + 4) + 2 + MARGIN
        sheet.paste(tile, (x, y))
        if index == layer.unit[0]:  # frame the channel, and mark the unit in it
            draw.rectangle((x - 2, y - 2, x + TILE + 1, y + TILE + 1), outline=FIELD, width=2)
            height, width = scaled.shape[1:]
            row, column = layer.unit[1:]
            cell = (x + column * TILE // width, y + row * TILE // height)
            draw.rectangle(
                (*cell, cell[0] + max(TILE // width, 3) - 1, cell[1] + max(TILE // height, 3) - 1), outline=FIELD
            )
    return sheet


def probabilities_picture(probabilities: tuple[float, ...]) -> Image.Image:
    """The ten class probabilities as a bar chart, the predicted class in the field's colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.2, 2.4), dpi=100)
    best = int(np.argmax(probabilities))
    red = "#" + "".join(f"{c:02x}" for c in FIELD)
    colours = [red if i == best else "#7a8899" for i in range(len(probabilities))]
    axes.bar(range(len(probabilities)), probabilities, color=colours)
    axes.set_xticks(range(len(probabilities)))
    axes.set_ylim(0, 1)
    axes.set_xlabel("digit")
    axes.set_ylabel("probability")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return Image.open(io.BytesIO(buffer.getvalue()))


def prediction_text(inspection: Inspection, model: str) -> str:
    best = inspection.predicted
    return f"Prediction: **{best}** ({inspection.probabilities[best]:.1%}) by {model}"


def layer_text(layer: LayerView, position: int, count: int) -> str:
    channels, height, width = layer.maps.shape
    channel, row, column = layer.unit
    head = (
        f"**Layer {position} of {count}: {layer.name}** ({layer.types}), {channels} channels of {height}×{width}.  \n"
        f"Most active unit: channel {channel} at row {row}, column {column} (activation {layer.value:.2f}).  \n"
    )
    if layer.box is None or layer.rf is None or layer.jump is None:  # unset together (insight.inspect_digit)
        return head + "Receptive field: not computed for this model (a layer the analysis does not know)."
    box, shown = layer.box, layer.box.clipped()
    size = f"{layer.rf[0]}×{layer.rf[1]} px" if layer.rf[0] != layer.rf[1] else f"{layer.rf[0]}×{layer.rf[0]} px"
    where = f"rows {shown.top}–{shown.bottom}, columns {shown.left}–{shown.right}"
    if box.inside:
        field = f"Receptive field: {size} (jump {layer.jump[0]}), {where} of the input."
    else:
        field = (
            f"Receptive field: {size} (jump {layer.jump[0]}), larger than the part of the "
            f"{IMAGE}×{IMAGE} image it covers: the box shows {shown.height}×{shown.width} px, {where}."
        )
    return head + field


@dataclass(frozen=True)
class View:
    """Everything the page shows for one digit, one checkpoint and one layer."""

    digit: np.ndarray
    prediction: str
    probabilities: Image.Image
    layer_names: tuple[str, ...]
    layer: str
    field: Image.Image
    maps: Image.Image
    text: str


def view(digit: np.ndarray, checkpoint: str, layer: str | None = None) -> View:
    """What the page shows; ``layer`` by name, the first one when absent or unknown."""
    loaded = load(checkpoint)
    inspection = inspect_digit(loaded.model, digit, list(loaded.layers))
    names = tuple(v.name for v in inspection.layers)
    if not names:  # a model without spatial maps (an MLP): its prediction still
        return View(
            digit=inspection.digit,
            prediction=prediction_text(inspection, loaded.title),
            probabilities=probabilities_picture(inspection.probabilities),
            layer_names=(),
            layer="",
            field=enlarged(inspection.digit).convert("RGB"),
            maps=Image.new("RGB", (TILE, TILE), (255, 255, 255)),
            text="This model has no layer with a spatial output (no feature maps to show): its prediction only.",
        )
    index = names.index(layer) if layer in names else 0
    shown = inspection.layers[index]
    return View(
        digit=inspection.digit,
        prediction=prediction_text(inspection, loaded.title),
        probabilities=probabilities_picture(inspection.probabilities),
        layer_names=names,
        layer=names[index],
        field=field_picture(inspection.digit, shown),
        maps=maps_picture(shown),
        text=layer_text(shown, index + 1, len(names)),
    )


# ------------------------------------------------------------------------------------------- the page
# Gradio's sketchpad opens with no tool chosen ("select the draw tool to start"): choose the brush on load
PICK_BRUSH = """() => {
  const pick = () => {
    const brush = document.querySelector('#sketch button[aria-label="Brush"]');
    if (brush) { brush.click(); } else { setTimeout(pick, 100); }
  };
  pick();
}"""


def build(results: str | Path = FINALS, checkpoint: str | Path | None = None, models: list[str] | None = None) -> Any:
    """The Gradio app (not launched): its picker offers ``checkpoint`` and the final runs of ``models``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise MnistlabError(INSTALL) from None

    options = choices(results, checkpoint, models)
    if not options:
        raise MnistlabError(f"no checkpoint to show: none under {results}/<model>/seed<k>/ and no --checkpoint")
    first = str(checkpoint) if checkpoint is not None else (DEFAULT if DEFAULT in options else next(iter(options)))
    respond, from_source = _handlers(gr, options)
    theme = gr.themes.Default(
        font=["system-ui", "Helvetica", "Arial", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    with gr.Blocks(title="mnistlab: what the model sees", analytics_enabled=False) as app:
        app.theme_for_launch = theme  # Gradio 6 takes the theme at launch (see ``launch``)
        page = _page(gr, options, first)
        outputs = [page[name] for name in OUTPUTS]
        inputs = [page["model"], page["layer"]]
        page["sketch"].change(from_source(digit_from_sketch), [page["sketch"], *inputs], outputs)
        page["upload"].upload(from_source(digit_from_file), [page["upload"], *inputs], outputs)
        page["model"].input(respond, [page["digit"], *inputs], outputs)
        page["layer"].input(respond, [page["digit"], *inputs], outputs)
    return app


# what every handler returns, in order: the page's components it updates
OUTPUTS = ("digit", "message", "given", "prediction", "probabilities", "layer", "field", "maps", "text")


def _handlers(gr: Any, options: dict[str, Any]) -> tuple[Any, Any]:
    """The page's handlers: ``respond`` (a digit, a checkpoint and a layer to what the page shows, ``OUTPUTS``) and
    ``from_source`` (a reader of the sketch or the upload, then ``respond``)."""
    blank = (None, "", None, gr.update(), None, None, "")

    def respond(digit: np.ndarray | None, label: str, layer: str | None) -> tuple:
        """(state, message, input, prediction, probabilities, layer picker, field, maps, layer text)"""
        if digit is None:
            return (None, "Draw a digit on the canvas, or upload an image.", *blank)
        try:
            if label not in options:
                raise MnistlabError(f"unknown checkpoint {label!r}: pick one from the list")
            shown = view(digit, options[label], layer)
        except MnistlabError as exc:
            return (digit, f"⚠️ {exc}", *blank)
        picker = gr.update(choices=list(shown.layer_names), value=shown.layer or None)
        return (
            digit,
            "",
            enlarged(shown.digit),
            shown.prediction,
            shown.probabilities,
            picker,
            shown.field,
            shown.maps,
            shown.text,
        )

    def from_source(read: Any) -> Any:
        def handler(value: Any, label: str, layer: str | None) -> tuple:
            try:
                digit = read(value)
            except MnistlabError as exc:
                return (None, f"⚠️ {exc}", *blank)
            return respond(digit, label, layer)

        return handler

    return respond, from_source


def _page(gr: Any, options: dict[str, Any], first: str) -> dict[str, Any]:
    """The page's components, laid out inside the app's ``gr.Blocks``, by name."""
    gr.Markdown(
        "# What the model sees\nDraw a digit (or upload a picture of one). The model is given the "
        "28×28 image below; pick a layer to see its feature maps and, on the input, the receptive "
        "field of its most active unit."
    )
    digit = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(list(options), value=first, label="Checkpoint", elem_id="checkpoint")
            with gr.Tab("Draw"):
                sketch = gr.Sketchpad(
                    label="Draw a digit",
                    canvas_size=(280, 280),
                    fixed_canvas=True,
                    image_mode="RGBA",
                    brush=gr.Brush(default_size=18, colors=["#000000"], color_mode="fixed"),
                    layers=False,
                    transforms=(),
                    elem_id="sketch",
                )
            with gr.Tab("Upload"):
                upload = gr.File(label="An image of one digit", type="filepath", elem_id="upload")
            message = gr.Markdown("Draw a digit on the canvas, or upload an image.", elem_id="message")
        with gr.Column(scale=1):
            given = gr.Image(label="What the model is given (28×28)", type="pil", interactive=False, elem_id="given")
            prediction = gr.Markdown(elem_id="prediction")
            probabilities = gr.Image(label="Probabilities", type="pil", interactive=False, elem_id="probabilities")
    layer = gr.Radio([], label="Layer", elem_id="layer")
    with gr.Row():
        field = gr.Image(
            label="Receptive field of the most active unit", type="pil", interactive=False, elem_id="field"
        )
        maps = gr.Image(label="Feature maps (the unit's channel framed)", type="pil", interactive=False, elem_id="maps")
    text = gr.Markdown(elem_id="layer-text")

    return {
        "digit": digit,
        "model": model,
        "sketch": sketch,
        "upload": upload,
        "message": message,
        "given": given,
        "prediction": prediction,
        "probabilities": probabilities,
        "layer": layer,
        "field": field,
        "maps": maps,
        "text": text,
    }


def free_port(host: str) -> int:
    """A port on ``host`` that no process listens on now (``--port 0``)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, 0))
            return int(probe.getsockname()[1])
    except OSError as exc:
        raise MnistlabError(f"cannot serve on {host}: {exc.strerror}; pick another --host") from None


def launch(app: Any, host: str, port: int) -> None:
    """Serve the page until interrupted."""
    try:
        app.launch(
            server_name=host,
            server_port=port,
            theme=app.theme_for_launch,
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            footer_links=[],
            quiet=True,
            js=PICK_BRUSH,
        )
    except OSError:  # Gradio's "Cannot find empty port", or an address that is not this machine's
        raise MnistlabError(
            f"cannot serve on {host}:{port}: the port is taken or the host is not this "
            "machine's; pick another --port or --host"
        ) from None
