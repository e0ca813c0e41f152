"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnistlab.core.errors import MnistlabError


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    os.replace(_staged(path, write, mode), path)
    return path


def atomic_write_all(writes: list[tuple[Path, Callable[[Any], None]]], mode: str = "wb") -> None:
    """Several files as one: each is written whole beside its place first, and only then are they all renamed
    into place, so a write that fails (a full disk) leaves every one of them as it was."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, write in writes:
            staged.append((_staged(Path(path), write, mode), Path(path)))
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)


def _staged(path: Path, write: Callable[[Any], None], mode: str) -> str:
    """``write`` to a new temporary file beside ``path``, flushed to disk; its name (removed if it fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; these are ordinary results
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def check_writable(folder: str | Path, what: str) -> None:
    """Refuse, before any work, a folder this process cannot write into (read-only, not ours, full)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mnistlab-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise MnistlabError(f"cannot write {what} into {folder}: {exc.strerror}; choose another folder") from None


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_text(obj: Any) -> str:
    """How this project writes a JSON file (config, summary): indented, in the object's own key order."""
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json_text(obj))
