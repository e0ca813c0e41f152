"""The public face of ``mnistlab.tools.analysis``, where the course's notebook and users import it from:
``from mnistlab.analysis import analyze``."""

from mnistlab.tools.analysis import AnalysisError, LayerRow, LayerTable, analyze, shapes_and_params

__all__ = ["AnalysisError", "LayerRow", "LayerTable", "analyze", "shapes_and_params"]
