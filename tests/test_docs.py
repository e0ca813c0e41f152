"""Every command and Python block in the README and in docs/ runs, so that none goes stale.

Each page's blocks run in order in one scratch folder (a later command uses an earlier one's run), with the
package's command line and the real cached MNIST. Training is made tiny: ``train`` gets ``--epochs 1 --limit 6000``
added (1,000 images to train on beside the 5,000 of validation) (the last value of an option wins) and ``search`` ``--epochs 1 --limit 1000``;
the Python blocks are tiny as written. A block of Python that starts with ``# NAME.py`` is a file the page asks
the reader to write. What cannot run inside a test runs as near to it as it can, each said here: ``make TARGET``
is ``make -n TARGET`` (the target exists and what it runs), ``pip install`` checks that every extra it names is
declared (installing is ``tests/test_installed.py``'s), and ``mnistlab demo`` is served on a free port until it
answers.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
TINY = {"train": ["--epochs", "1", "--limit", "6000", "--quiet"],
        "search": ["--epochs", "1", "--limit", "1000"]}  # fmt: skip


def blocks(page: Path) -> list[tuple[str, str, str | None]]:
    """The page's code blocks in order: (language, code, the text it is said to print or None)."""
    text = page.read_text()
    found = list(BLOCK.finditer(text))
    out = []
    for k, match in enumerate(found):
        language, code = match.group(1), match.group(2)
        if language not in ("python", "bash"):
            continue
        after = found[k + 1] if k + 1 < len(found) else None
        prints = (
            after.group(2)
            if after is not None and after.group(1) == "text" and "prints" in text[match.end() : after.start()]
            else None
        )
        out.append((language, code, prints))
    return out


def commands(code: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comments dropped."""
    joined = code.replace("\\\n", " ")
    return [line.split("  #")[0].split(" # ")[0].strip() for line in joined.splitlines() if line.strip()]


def masked(text: str) -> list[str]:
    """Text with every number (and the width of a column of them) made one token: what a run on another machine
    or day prints the same."""
    lines = [re.sub(r"\d[\d.,]*", "N", line) for line in text.strip().splitlines()]
    return [re.sub(r"\s+", " ", line).strip() for line in lines]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_until_it_answers(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", *args, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, f"mnistlab {' '.join(args)} ended with {server.returncode}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                    assert page.status == 200
                    return
            except OSError:
                time.sleep(1)
        raise AssertionError(f"mnistlab {' '.join(args)} did not answer on 127.0.0.1:{port} in 120 s")
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_command(command: str, cwd: Path, env: dict[str, str], as_written: bool = False) -> str:
    words = shlex.split(command)
    if words[0] == "make":
        done = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
        return ""
    if words[:2] == ["pip", "install"]:
        declared = importlib.metadata.metadata("mnistlab").get_all("Provides-Extra") or []
        for extras in re.findall(r"\[([\w,]+)\]", command):
            assert set(extras.split(",")) <= set(declared), command
        for constraints in words[words.index("-c") + 1 :: 2] if "-c" in words else []:
            assert (ROOT / constraints).is_file(), command
        return ""
    assert words[0] == "mnistlab", f"a documented command this test does not know how to run: {command}"
    args = words[1:]
    if args[0] == "demo":
        serve_until_it_answers(args, cwd, env)
        return ""
    if args[0] in TINY and "--resume" not in args and not as_written:
        args += TINY[args[0]]
    done = subprocess.run(
        [sys.executable, "-m", "mnistlab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def run_python(code: str, prints: str | None, cwd: Path, env: dict[str, str]) -> None:
    first = code.splitlines()[0]
    if re.fullmatch(r"# [\w.]+\.py", first):  # a file the reader writes
        (cwd / first[2:]).write_text(code)
        return
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (code, done.stderr[-3000:])
    if prints is not None:
        assert masked(done.stdout) == masked(prints), done.stdout


@pytest.mark.real_data
@pytest.mark.cli
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_block_of_the_page_runs(page, tmp_path):
    from mnistlab.data import load_mnist

    images, _ = load_mnist("test")
    Image.fromarray(255 - images[0]).save(tmp_path / "digit.png")  # a 7, dark on light as on paper
    (tmp_path / "results").symlink_to(ROOT / "results")  # the lab's recorded runs, read by some pages
    env = {**os.environ, "MNISTLAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    found = blocks(page)
    for language, code, prints in found:
        if language == "python":
            run_python(code, prints, tmp_path, env)
        else:
            said = "".join(run_command(c, tmp_path, env, as_written=prints is not None) for c in commands(code))
            if prints is not None:  # a block shown with its output runs exactly as written, and prints it
                assert masked(said) == masked(prints), said
    assert not (ROOT / "results" / "search" / "tiny.db").exists()  # nothing a page runs writes into the lab's


def test_the_pages_hold_blocks_and_the_masking_keeps_words():
    assert sum(len(blocks(p)) for p in PAGES) >= 12
    assert masked("epoch  1/2  loss 1.1309  97.40%") == masked("epoch 1/2 loss 0.9  9.4%") == ["epoch N/N loss N N%"]
    assert masked("test accuracy") != masked("test accuracies")
