"""Export a checkpoint to ONNX and check it against PyTorch in onnxruntime (``pip install mnistlab[onnx]``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import atomic_write_bytes
from mnistlab.models.checkpoint import load_checkpoint


def export_onnx(checkpoint: str | Path, output: str | Path, tolerance: float = 1e-4) -> float:
    """Write the model as ONNX (batch size free) and return the largest |difference| from PyTorch."""
    try:
        import onnxruntime
    except ImportError:
        raise MnistlabError("ONNX export needs the optional extra: pip install 'mnistlab[onnx]'") from None
    model = load_checkpoint(checkpoint)
    example = torch.randn(4, 1, 28, 28)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model.onnx"
        program = torch.onnx.export(
            model, (example,), dynamo=True, dynamic_shapes={"x": {0: torch.export.Dim("batch")}}
        )
        program.save(str(staged))
        data = staged.read_bytes()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    check = torch.randn(7, 1, 28, 28)
    with torch.inference_mode():
        expected = model(check).numpy()
    got = session.run(None, {session.get_inputs()[0].name: check.numpy()})[0]
    difference = float(np.abs(got - expected).max())
    if difference > tolerance:
        raise MnistlabError(f"ONNX output differs from PyTorch by {difference:.2e} (> {tolerance}); not written")
    atomic_write_bytes(output, data)
    return difference
