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
