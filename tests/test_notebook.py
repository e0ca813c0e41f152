"""The main notebook runs headless on a tiny setting, so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "main.ipynb"


@pytest.mark.real_data
def test_main_notebook_runs(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    settings = notebook.cells[1]
    assert "parameters" in settings.metadata.get("tags", [])
    settings.source = settings.source.replace("EPOCHS = None", "EPOCHS = 1").replace("LIMIT = None", "LIMIT = 300")
    settings.source = settings.source.replace(
        'OUTPUT_DIR = "runs/notebook-" + MODEL', f'OUTPUT_DIR = r"{tmp_path / "nb"}"'
    )
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "test accuracy" in outputs and "Total: 7,500 parameters" in outputs
    assert (tmp_path / "nb" / "best.pt").is_file() and (tmp_path / "nb" / "misclassified.png").is_file()
    # the model defined in a cell: trained, and its run keeps the class's source, so a fresh process (this one)
    # rebuilds it from the run's copy
    assert "CellNet: 1,418 parameters" in outputs and "features.model" not in outputs
    mine = tmp_path / "nb-cellnet"
    assert "class CellNet(nn.Module):" in (mine / "model_source.py").read_text()
    from mnistlab.models import load_checkpoint

    model = load_checkpoint(mine / "last.pt")
    assert sum(p.numel() for p in model.parameters()) == 1418


def test_the_committed_notebook_shows_a_real_run_and_uses_only_the_public_api():
    """On a code host a student sees the outputs without running anything: the committed notebook carries those
    of `make notebook` (Model 8's full recipe), and it calls only what `import mnistlab` offers."""
    import re

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs for cell in code[1:]), "run `make notebook` and commit its outputs"  # [0]: settings
    pictures = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 2  # the curves and the misclassified digits
    text = "".join(o.get("text", "") for cell in code for o in cell.outputs)
    assert "epoch 15" in text and "Total: 7,500 parameters" in text
    sources = "\n".join(cell.source for cell in code)
    assert not re.search(r"^\s*(from mnistlab\.|import mnistlab\.)", sources, re.M), "the public API only"
