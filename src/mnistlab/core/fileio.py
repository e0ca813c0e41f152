"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnistlab.core.errors import MnistlabError


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    os.replace(_staged(path, write, mode), path)
    return path


COMMIT = ".mnistlab-commit.json"  # in each folder a multi-file write touches, while its files are renamed into place


def atomic_write_all(writes: list[tuple[Path, Callable[[Any], None]]], mode: str = "wb") -> None:
    """Several files, in one folder or several, as one: each is written whole beside its place first; then a
    commit record naming every rename is written into each folder they touch; then they are renamed into place
    and the records removed. A write that fails (a full disk) leaves every file as it was; a process killed at any
    point leaves either the old files (no record: the staged ones are litter for ``finish_commit``) or a record,
    from which ``finish_commit`` completes the renames: never some files of the new set beside some of the old."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, write in writes:
            staged.append((_staged(Path(path), write, mode), Path(path)))
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    folders = sorted({path.parent.resolve() for _, path in staged}) if len(staged) > 1 else []
    records = [folder / COMMIT for folder in folders]
    try:
        for folder, record in zip(folders, records):
            body = {
                "renames": [
                    [os.path.relpath(Path(tmp).resolve(), folder), os.path.relpath(path.resolve(), folder)]
                    for tmp, path in staged
                ],
                "records": [os.path.relpath(r, folder) for r in records],
            }
            atomic_write(record, lambda f, body=body: f.write(json_text(body)), mode="w")
    except BaseException:
        if not any(r.is_file() for r in records):  # no record made it: the old files stand, the staged ones go
            for tmp, _ in staged:
                Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    for record in records:
        record.unlink(missing_ok=True)


def finish_commit(folder: str | Path, names: tuple[str, ...]) -> bool:
    """Complete a multi-file write that a killed process left in ``folder`` (its commit record present), and remove
    the temporary files of ``names`` that a write cut short before its record left behind. Call it only as the folder's one writer.
    Whether there was a write to complete."""
    folder = Path(folder)
    record = folder / COMMIT
    done = False
    if record.is_file():
        try:
            body = json.loads(record.read_text())
            renames = [(folder / tmp, folder / path) for tmp, path in body["renames"]]
            records = [folder / r for r in body["records"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MnistlabError(
                f"{record} is damaged ({type(exc).__name__}); it records a save that was cut short: delete it, "
                "then check the folder's files"
            ) from None
        for tmp, path in renames:
            if tmp.is_file():
                os.replace(tmp, path)
        for other in records:
            other.unlink(missing_ok=True)
        done = True
    remove_litter(folder, (*names, COMMIT))
    return done


def remove_litter(folder: str | Path, names: tuple[str, ...] | None, older_than: float = 0.0) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``; every name with None) that writes of ``names`` cut short left in
    ``folder``; return them. Another process's write in progress looks the same: call it as the files' one writer,
    or with ``older_than`` (seconds since the file last changed), where writers share the folder (a cache)."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / COMMIT).is_file():
        return []
    patterns = [f".{glob.escape(name)}.*.tmp" for name in names] if names is not None else [".*.tmp"]
    now = time.time()
    litter = [
        p
        for pattern in patterns
        for p in folder.glob(pattern)
        if p.is_file() and (not older_than or now - p.stat().st_mtime > older_than)
    ]
    for path in litter:
        path.unlink(missing_ok=True)
    return litter


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
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a write's error names no file: name the one it was for
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
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


@contextmanager
def exclusive(path: str | Path, *, busy: Callable[[int | None], MnistlabError], wait: float = 0.0) -> Iterator[None]:
    """Hold the lock ``path`` (a file made for it): one holder at a time on this machine, waiting up to ``wait``
    seconds for another, then ``busy(its pid)`` is raised (None when the file does not say). The kernel releases the
    lock when its holder ends however it ends, so a lock never goes stale; the file holds the holder's pid, for
    messages only, and is removed on release."""
    path = Path(path)
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _pid_in(os.pread(fd, 32, 0))
            os.close(fd)
            if time.monotonic() >= deadline:
                raise busy(owner) from None
            time.sleep(0.05)
            continue
        if _same_file(fd, path):  # not removed by its last holder between our open and our lock
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # still held: a process that opened this file sees it gone and opens anew
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _pid_in(data: bytes) -> int | None:
    """A pid written in a lock file, read defensively: anything but a plausible pid is None."""
    text = data.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() and 0 < len(text) <= 10 and 0 < int(text) < 2**31 else None
