"""`mnistlab demo` in a real browser: started as a user starts it, driven in headless Chromium (Debian's
package, through Playwright's Python client; `make test` installs both). Screenshots go to
artifacts/browser/. Any request the page makes off this machine fails the test: the page must work offline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = os.environ.get("MNISTLAB_CHROMIUM", "/usr/bin/chromium")
# what a headless Chromium needs on a machine with no network (and, as root, no sandbox)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = (ARTIFACTS / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", "demo", "--port", str(port)], cwd=ROOT, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            if process.poll() is not None:
                pytest.fail(f"mnistlab demo exited with {process.returncode}: see {ARTIFACTS / 'server.log'}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mnistlab demo did not answer within 2 minutes")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(server, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1500})
    page = context.new_page()
    outside: list[str] = []

    def only_this_machine(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_machine)
    page.goto(server, wait_until="load")
    page.wait_for_selector("#sketch canvas", timeout=60_000)
    yield page
    context.close()
    assert not outside, f"the page asked for something off this machine: {outside[:5]}"


def text_of(page, selector: str) -> str:
    """A Markdown element's text, without Gradio's progress overlay."""
    return page.locator(f"{selector} [data-testid=markdown]").inner_text()


def wait_for_text(page, selector: str, words: str, timeout: float = 90_000) -> str:
    page.wait_for_function(
        "([selector, words]) => document.querySelector(selector)?.innerText.includes(words)",
        arg=[f"{selector} [data-testid=markdown]", words],
        timeout=timeout,
    )
    return text_of(page, selector)


def draw_vertical_bar(page) -> None:
    """A stroke down the middle of the 280x280 drawing area, as a hand draws a 1."""
    page.wait_for_timeout(500)  # the page picks the brush on load
    area = page.locator("#sketch canvas").first.bounding_box()
    x, middle = area["x"] + area["width"] / 2, area["y"] + area["height"] / 2
    page.mouse.move(x, middle - 100)
    page.mouse.down()
    for step in range(21):
        page.mouse.move(x, middle - 100 + 10 * step)
    page.mouse.up()


def test_a_drawn_one_is_predicted_and_its_fields_grow_layer_by_layer(page):
    draw_vertical_bar(page)
    assert wait_for_text(page, "#prediction", "Prediction:").startswith("Prediction: 1 (")
    assert "by Model 8, 7,500 parameters" in text_of(page, "#prediction")
    assert text_of(page, "#message").strip() == ""
    first = wait_for_text(page, "#layer-text", "Layer 1 of 9: conv1")
    assert "Receptive field: 3×3 px (jump 1), rows" in first and "larger than" not in first
    page.screenshot(path=ARTIFACTS / "demo-first-layer.png", full_page=True)

    page.get_by_label("sep4").check()
    assert "Receptive field: 14×14 px (jump 2)" in wait_for_text(page, "#layer-text", "Layer 5 of 9: sep4")
    page.screenshot(path=ARTIFACTS / "demo-sep4.png", full_page=True)  # the README's picture

    page.get_by_label("out", exact=True).check()
    last = wait_for_text(page, "#layer-text", "Layer 9 of 9: out")
    assert "Receptive field: 36×36 px (jump 16), larger than the part of the 28×28 image it covers" in last
    assert "the box shows 28×28 px, rows 0–27, columns 0–27" in last
    page.screenshot(path=ARTIFACTS / "demo-last-layer.png", full_page=True)

    # the field view is the 28x28 input enlarged 10 times with the box drawn on it
    field = page.locator("#field img").first
    shot = ARTIFACTS / "field-view.png"
    field.screenshot(path=shot)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    assert red.sum() > 200  # the box and its centre


def test_another_checkpoint_is_picked_from_the_list(page):
    draw_vertical_bar(page)
    wait_for_text(page, "#prediction", "Prediction:")
    page.locator("#checkpoint input").click()
    page.get_by_role("option", name="sepnet3k, seed 2").click()
    shown = wait_for_text(page, "#prediction", "by SepNet 3.4k (record), 3,424 parameters")
    assert shown.startswith("Prediction: 1 (")


def test_bad_inputs_are_messages_on_the_page(page, tmp_path):
    draw_vertical_bar(page)
    wait_for_text(page, "#prediction", "Prediction:")
    page.locator('#sketch button[aria-label="Clear canvas"]').click()
    assert "the canvas is empty" in wait_for_text(page, "#message", "the canvas is empty")

    page.get_by_role("tab", name="Upload").click()
    (tmp_path / "notes.png").write_text("not an image")
    page.locator("#upload input[type=file]").set_input_files(tmp_path / "notes.png")
    assert "not a readable image" in wait_for_text(page, "#message", "not a readable image")

    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(tmp_path / "grey.png")
    page.locator("#upload button[aria-label='Clear']").first.click()
    page.locator("#upload input[type=file]").set_input_files(tmp_path / "grey.png")
    assert "blank image" in wait_for_text(page, "#message", "blank image")
    page.screenshot(path=ARTIFACTS / "demo-bad-input.png", full_page=True)
    assert "Traceback" not in page.content()
