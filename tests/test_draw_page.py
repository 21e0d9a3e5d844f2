"""examples/draw.html in a real browser: headless Chromium, driven through Selenium.

Draws a 1, a 0, a small 7 in a corner, a 4 in two strokes and a 7 with pointer
actions on the canvas, as a person would, and checks what the page reads (with
the notebook's hidden model, trained on the real MNIST), that the preview is
exactly the model's input, and that ``clear`` empties the prediction and the
canvas; then saves a screenshot.

Needs Debian's ``chromium`` and ``chromium-driver`` and PyPI's ``selenium``
(``make test-browser`` installs them). Without them the test skips with one
line, except in CI (``CI`` set), where ``.ci/run`` installs them and their
absence is a failure.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import draw  # noqa: E402

pytestmark = pytest.mark.browser

#: $DRAW_SCREENSHOT: where to keep the screenshot (the README's is examples/figures/draw.png);
#: by default it goes to the test's temporary folder.
SCREENSHOT = os.environ.get("DRAW_SCREENSHOT")
SIDE = 280  # the canvas's size in CSS pixels (examples/draw.html)


def _circle(cx, cy, rx, ry, start=-math.pi / 2, points=28):
    angles = [start + 2 * math.pi * k / points for k in range(points + 1)]
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def _moved(strokes, scale, dx, dy):
    """The strokes scaled about the canvas's centre, then shifted."""
    return [[(SIDE / 2 + (x - SIDE / 2) * scale + dx, SIDE / 2 + (y - SIDE / 2) * scale + dy)
             for x, y in stroke] for stroke in strokes]


ONE = [[(152, 48), (148, 100), (144, 160), (140, 232)]]       # slightly slanted
SEVEN = [[(80, 62), (140, 60), (206, 58), (180, 110), (150, 170), (128, 232)]]
ZERO = [_circle(140, 142, 62, 88)]                             # started at the top, closed
FOUR = [[(100, 50), (80, 150), (205, 150)], [(175, 60), (170, 240)]]  # two strokes

#: What a person draws, in canvas pixels from the top left, and the digit it is. The
#: last one stays on the screenshot.
DRAWINGS = [
    (1, ONE),
    (0, ZERO),
    (7, _moved(SEVEN, 0.45, -70, -65)),  # small, in the top left corner
    (4, FOUR),
    (7, SEVEN),
]


def _browser_paths() -> tuple[str | None, str | None, str | None]:
    """(chromium, chromedriver, what is missing or None)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "selenium is not installed"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in [("chromium", chromium), ("chromedriver", driver)]
               if path is None]
    return chromium, driver, f"{' and '.join(missing)} not on PATH" if missing else None


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path, missing = _browser_paths()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test needs a browser in CI: {missing}")
        pytest.skip(f"no browser: {missing} (make test-browser installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1020,800", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    # An explicit driver: Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def url(mnist_data, tmp_path_factory, serving):
    """The page, served with the notebook's hidden model trained on MNIST (a few seconds)."""
    model = draw.train(tmp_path_factory.mktemp("model") / "mnist_hidden.npz")
    with serving(draw.make_server(draw.Reader(model), port=0, quiet=True)) as address:
        yield address


def draw_strokes(driver, strokes):
    """Press, move through the points, release: pointer events, one stroke at a time."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("id", "canvas")
    for stroke in strokes:
        # Offsets are from the element's centre.
        x0, y0 = stroke[0]
        actions = ActionChains(driver, duration=20)
        actions.move_to_element_with_offset(canvas, round(x0 - SIDE / 2), round(y0 - SIDE / 2))
        actions.click_and_hold()
        for (xa, ya), (xb, yb) in zip(stroke, stroke[1:]):
            actions.move_by_offset(round(xb) - round(xa), round(yb) - round(ya))
        actions.release()
        actions.perform()


def read(driver) -> dict:
    """Wait for the page's answer to the last stroke; the answer the server gave."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "return document.body.dataset.pending === '0' && window.lastResult !== null"))
    return driver.execute_script("return window.lastResult")


def test_draw_page_reads_digits(browser, url, tmp_path):
    browser.get(url)
    assert browser.title.startswith("Draw a digit")
    assert browser.find_element("id", "prediction").text == ""
    bars = browser.find_elements("css selector", "#probabilities > [data-digit]")
    assert [b.get_attribute("data-digit") for b in bars] == [str(d) for d in range(10)]

    for digit, strokes in DRAWINGS:
        browser.find_element("id", "clear").click()
        draw_strokes(browser, strokes)
        answer = read(browser)
        shown = browser.find_element("id", "prediction").text
        assert (shown, answer["prediction"]) == (str(digit), digit), answer["probabilities"]

        # What the page shows is what the model got: the preview's pixels are the input
        # the server used, and that input sent to /predict gives the same answer.
        preview = browser.execute_script("""
            const c = document.getElementById('input-preview');
            return Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data)
                        .filter((_, i) => i % 4 === 0);""")
        pixels = np.array(answer["input"])
        assert np.array_equal(preview, np.round(255 * pixels)), "preview != model input"
        again = _post(url + "predict", {"pixels": answer["input"]})
        assert again["prediction"] == digit
        assert again["probabilities"] == answer["probabilities"]
        assert again["hidden"] == answer["hidden"]
        assert len(browser.find_elements("css selector", "#hidden > div")) == 100
        top = browser.find_element("css selector", f'#probabilities > [data-digit="{digit}"]')
        assert "top" in top.get_attribute("class").split()

    # The whole page in the picture: the window grows to the document's height.
    chrome, height = browser.execute_script(
        "return [window.outerHeight - window.innerHeight, document.documentElement.scrollHeight]")
    browser.set_window_size(1020, chrome + height)
    screenshot = Path(SCREENSHOT or tmp_path / "draw.png")
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000

    browser.find_element("id", "clear").click()
    assert browser.find_element("id", "prediction").text == ""
    assert browser.execute_script("return window.lastResult") is None
    ink = browser.execute_script("""
        const c = document.getElementById('canvas');
        return c.getContext('2d').getImageData(0, 0, c.width, c.height).data
                .reduce((sum, v, i) => i % 4 === 3 ? sum + v : sum, 0);""")
    assert ink == 0
    assert not browser.find_elements("css selector", "#probabilities .top")


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
