"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import ctypes
import glob
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnistlab.core.errors import MnistlabError

# The lock's back end, by what the platform offers: flock (Linux, macOS), byte-range locking (Windows), else a lock
# file created exclusively (taken over when the process named in it has ended).
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:  # everywhere else
    msvcrt = None  # type: ignore[assignment]


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
    seconds for another, then ``busy(its pid)`` is raised (None when the file does not say). With flock (Linux,
    macOS) or byte-range locks (Windows) the system releases the lock when its holder ends however it ends, so a lock
    never goes stale; elsewhere the file is created exclusively and taken over once the process it names has ended.
    The file holds the holder's pid, for messages, and is removed on release."""
    path = Path(path)
    deadline = time.monotonic() + wait
    while True:
        fd, owner = _acquire(path)
        if fd is not None:
            break
        if time.monotonic() >= deadline:
            raise busy(owner)
        time.sleep(0.05)
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        _release(fd, path)


_WINDOWS_BYTE = 1 << 20  # the byte locked on Windows, past the pid, so that others can read the pid


def _acquire(path: Path) -> tuple[int | None, int | None]:
    """One try at the lock: (its open file, None), or (None, the holder's pid if the file says)."""
    if fcntl is None and msvcrt is None:
        return _acquire_exclusive(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # held by another (BlockingIOError; PermissionError on Windows)
        owner = _pid_in(_read_start(fd))
        os.close(fd)
        return None, owner
    if not _same_file(fd, path):  # removed by its last holder between our open and our lock: open it anew
        os.close(fd)
        return _acquire(path)
    return fd, None


def _acquire_exclusive(path: Path) -> tuple[int | None, int | None]:
    """The lock where the platform offers no system locks: the file created exclusively; one that names an ended
    process is stale and removed."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), None
    except FileExistsError:
        pass
    try:
        owner = _pid_in(path.read_bytes()[:32])
    except OSError:
        owner = None
    if owner is not None and not process_alive(owner):
        path.unlink(missing_ok=True)
        return _acquire_exclusive(path)
    return None, owner


def _release(fd: int, path: Path) -> None:
    if msvcrt is not None and fcntl is None:
        # Windows: unlock, close, then remove the file unless another process has it open (then it stays, and is
        # the next holder's lock file)
        os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        os.close(fd)
        try:
            path.unlink(missing_ok=True)
        except PermissionError:
            pass
        return
    path.unlink(missing_ok=True)  # still held: a process that opened this file sees it gone and opens anew
    os.close(fd)


def _read_start(fd: int) -> bytes:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32)
    except OSError:  # Windows: the holder's region is locked
        return b""


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine."""
    if not 0 < pid < 2**31:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would end the process there
        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


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
