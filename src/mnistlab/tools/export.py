"""Export a checkpoint to ONNX that a stranger can use, checked against PyTorch in onnxruntime
(``pip install 'mnistlab[onnx]'``).

The file takes what an MNIST image is, not what our network takes: input ``pixels``, float32 [N, 1, 28, 28] in
[0, 1] (a white digit on black, fitted to 20x20 and centred by mass in 28x28, as MNIST's are; ``mnistlab predict``
does that to a photo), normalised inside the graph; output ``log_probabilities`` [N, 10] for the digits 0 to 9.
Its metadata says so, with the model's name, parameters and the sha256 of the checkpoint it came from.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnistlab import __version__
from mnistlab.core.errors import MnistlabError, first_line
from mnistlab.core.fileio import atomic_write_bytes, remove_litter, sha256_file
from mnistlab.data.mnist import TRAIN_MEAN, TRAIN_STD, cached_split
from mnistlab.models.checkpoint import model_from, read_checkpoint

INPUT = "pixels"
OUTPUT = "log_probabilities"
INPUT_DOC = (
    "float32 [N, 1, 28, 28], pixel values in [0, 1] (value / 255), a white digit on a black background, fitted to "
    "20x20 and centred by its mass in 28x28 as MNIST's digits are; normalised inside the graph"
)


class _FromPixels(nn.Module):
    """The network with MNIST's normalisation in front: pixels in [0, 1] in, log-probabilities out."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network((pixels - TRAIN_MEAN) / TRAIN_STD)


CHECK_IMAGES = 1000  # the test images the exported file is checked on (random pixels when MNIST is not cached)


def _check_images() -> tuple[torch.Tensor, str]:
    """The pixels the exported graph is compared with PyTorch on: the first test images when the cache holds them."""
    test = cached_split("test")
    if test is not None:
        pixels = torch.tensor(test[0][:CHECK_IMAGES], dtype=torch.float32)  # a copy: the cache's arrays are read-only
        return pixels.div(255).unsqueeze(1), f"{CHECK_IMAGES} test images"
    return torch.rand(CHECK_IMAGES, 1, 28, 28, generator=torch.Generator().manual_seed(0)), "random images"


# float32 arithmetic in another order (onnxruntime's kernels) moves a deep or looped network's probabilities by about
# 1e-4 of themselves (LoopNet: 1.2e-4, every prediction the same): the default allows ten times that, and every
# prediction must still agree
TOLERANCE = 1e-3


def export_onnx(checkpoint: str | Path, output: str | Path, tolerance: float = TOLERANCE) -> float:
    """Write the model as ONNX (batch size free, normalisation inside, metadata) and return the largest difference
    from PyTorch's log-probabilities on the same pixels, relative (to 1 or more): the file is written only when it is
    within ``tolerance`` and every prediction agrees."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise MnistlabError("ONNX export needs the optional extra: pip install 'mnistlab[onnx]'") from None
    payload = read_checkpoint(checkpoint)
    model = _FromPixels(model_from(payload, checkpoint)).eval()
    data = _quietly(lambda: _export_or_say_why(model))
    graph = onnx.load_from_string(data)
    graph.doc_string = f"mnistlab {__version__}: {payload['model']} from {Path(checkpoint).name}"
    graph.graph.input[0].doc_string = INPUT_DOC
    graph.graph.output[0].doc_string = "float32 [N, 10]: log-probabilities of the digits 0 to 9"
    metadata = {
        "model": payload["model"],
        "parameters": str(sum(p.numel() for p in model.parameters())),
        "classes": "0,1,2,3,4,5,6,7,8,9",
        "input": INPUT_DOC,
        "output": "log-probabilities of the digits 0 to 9; argmax is the digit",
        "checkpoint_sha256": sha256_file(checkpoint),
        "mnistlab": __version__,
    }
    onnx.helper.set_model_props(graph, metadata)
    data = graph.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    check, what = _check_images()
    with torch.inference_mode():
        expected = model(check).numpy()
    got = session.run(None, {INPUT: check.numpy()})[0]
    # what a user reads off the file: each probability, and the digit; a log-probability of -1134 (a digit the
    # model rules out) may differ in its fifth digit without changing either, so they are compared relatively
    difference = float((np.abs(got - expected) / np.maximum(1.0, np.abs(expected))).max())
    disagree = int((got.argmax(1) != expected.argmax(1)).sum())
    if difference > tolerance or disagree:
        raise MnistlabError(
            f"ONNX output differs from PyTorch on {what}: relative difference {difference:.2e} (tolerance "
            f"{tolerance:g}), {disagree} of {len(check)} predictions differ; not written (--tolerance sets it)"
        )
    remove_litter(Path(output).parent, (Path(output).name,))  # what an export killed mid-write left
    atomic_write_bytes(output, data)
    return difference


def _export_or_say_why(model: nn.Module) -> bytes:
    """``_export``, or one line when the exporter cannot follow the model: where its code branches on a tensor's
    value (``if x.sum() > 0``) or does what ONNX has no form for."""
    try:
        return _export(model)
    except Exception as exc:  # the exporter's own errors are many and private; each becomes one line
        text = str(exc)
        where = _user_line(text, traceback.extract_tb(exc.__traceback__))
        data_dependent = "data-dependent" in text or "GuardOnDataDependent" in type(exc).__name__ + text
        why = (
            "its forward branches on a tensor's value (an `if` or a loop on data), which a graph cannot hold"
            if data_dependent
            else f"the exporter stopped ({type(exc).__name__}: {first_line(exc)[:200]})"
        )
        raise MnistlabError(
            f"cannot export this model to ONNX: {why}{f' at {where}' if where else ''}; write that step with "
            "tensor operations (torch.where) to export it"
        ) from None


def _user_line(text: str, frames: list[traceback.FrameSummary]) -> str:
    """The model's own source line the exporter stopped at (outside torch), as ``file:line``, or ""."""
    torch_dir = str(Path(torch.__file__).parent)
    for path, line in re.findall(r'File "([^"]+)", line (\d+)', text):
        if not path.startswith(torch_dir) and "site-packages" not in path:
            return f"{Path(path).name}:{line}"
    for frame in reversed(frames):
        if (
            not frame.filename.startswith(torch_dir)
            and "site-packages" not in frame.filename
            and "mnistlab" not in frame.filename
        ):
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return ""


def _export(model: nn.Module) -> bytes:
    program = torch.onnx.export(
        model,
        (torch.rand(4, 1, 28, 28),),
        dynamo=True,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes={"pixels": {0: torch.export.Dim("batch")}},
    )
    buffer = io.BytesIO()
    program.save(buffer)
    return buffer.getvalue()


def _quietly(work):  # type: ignore[no-untyped-def]
    """Run ``work`` with the exporter's progress lines, warnings and log records kept off the terminal."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.fx", "torch.export", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # their handlers write to the terminal's stream as it was at import: not redirected
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            return work()
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
