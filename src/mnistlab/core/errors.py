"""The one exception type a user can cause: the CLI turns it into a single line and a non-zero exit."""

from __future__ import annotations

import importlib
from typing import Any


class MnistlabError(Exception):
    """A problem the user can fix (bad file, bad option, unknown name). Its message says what to do."""


def first_line(exc: BaseException, default: str = "") -> str:
    """An exception's message, its first line only (a library's own words can run to pages): what one-line
    errors quote."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else default


def optional(module: str, extra: str, what: str) -> Any:
    """Import ``module`` of an optional extra, or say in one line which extra ``what`` needs."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MnistlabError(f"{what} needs {module.split('.')[0]}: pip install 'mnistlab[{extra}]'") from None
