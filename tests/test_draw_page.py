"""examples/draw.html in a real browser: headless Chromium, driven through Selenium.

Draws a 1, a 0, a small 7 in a corner, a 4 in two strokes and a 7 with pointer
actions on the canvas, as a person would, and reads each with both models the
server holds, flipping the page's switch between them (the page reads the
drawing again): the convnet (its feature maps shown, each tile exactly the map
the server sent) and the notebook's MLP (its hidden units shown), both trained
on the real MNIST in a few seconds. Checks that the preview is exactly the
model's input, that ``clear`` empties the prediction and the canvas, and that a
server with one model (``--model``) disables the other side of the switch. The
convnet's page is saved as a screenshot.

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
import draw_models  # noqa: E402

pytestmark = pytest.mark.browser

#: $DRAW_SCREENSHOT: where to keep the screenshot of the convnet's page (the README's is
#: examples/figures/draw.png); by default it goes to the test's temporary folder.
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
def models(mnist_data, tmp_path_factory):
    """The two models ``draw.py`` trains, on MNIST (a few seconds each), by kind."""
    folder = tmp_path_factory.mktemp("models")
    return {"convnet": draw_models.Reader(draw_models.train_convnet(folder / "mnist_convnet.npz")),
            "hidden": draw_models.Reader(draw_models.train(folder / "mnist_hidden.npz"))}


@pytest.fixture(scope="module")
def url(models, serving):
    """The page, served with both models as ``draw.py`` serves them: the convnet first."""
    with serving(draw.make_server(models.values(), port=0, quiet=True)) as address:
        yield address


@pytest.fixture(scope="module")
def hidden_url(models, serving):
    """The page, served with the MLP alone, as ``draw.py --model`` does."""
    with serving(draw.make_server(models["hidden"], port=0, quiet=True)) as address:
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


def read(driver, kind: str) -> dict:
    """Wait for the page's answer from model ``kind`` to the last stroke; the answer the
    server gave."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "return document.body.dataset.pending === '0' && window.lastResult !== null"
        " && window.lastResult.model === arguments[0]", kind))
    return driver.execute_script("return window.lastResult")


def flip(driver, kind: str) -> None:
    """Flip the page's switch to model ``kind``, as a person would: a click on its side."""
    driver.find_element("css selector", f'#model-switch [data-model="{kind}"]').click()


def test_draw_page_reads_digits_with_both_models(browser, url, tmp_path):
    browser.get(url)
    assert browser.title.startswith("Draw a digit")
    _wait_for_kind(browser, "convnet")  # the default
    assert _switch(browser) == {"convnet": "checked", "hidden": "enabled"}
    assert "Conv2D(32, 3×3, relu)" in browser.find_element("id", "model-description").text
    assert browser.find_element("id", "maps-panel").is_displayed()
    assert not browser.find_element("id", "hidden-panel").is_displayed()
    # The tiles are there before anything is drawn: one canvas per map, at the map's size.
    assert _tiles(browser) == [[26, 26, 32], [11, 11, 64]]
    assert browser.find_element("id", "prediction").text == ""
    bars = browser.find_elements("css selector", "#probabilities > [data-digit]")
    assert [b.get_attribute("data-digit") for b in bars] == [str(d) for d in range(10)]

    # Each digit is read by the model the switch is on, then by the other one when it flips:
    # the convnet reads the 1 first, the MLP the 0.
    kind, other = "convnet", "hidden"
    for digit, strokes in DRAWINGS:
        browser.find_element("id", "clear").click()
        draw_strokes(browser, strokes)
        _check_reading(browser, url, digit, kind)
        flip(browser, other)
        _check_reading(browser, url, digit, other)
        kind, other = other, kind
    assert "Dense(100, relu)" in browser.find_element("id", "model-description").text
    _screenshot(browser, tmp_path / "draw_hidden.png")

    # Back to the convnet for the README's picture, the last 7 still on the canvas.
    flip(browser, "convnet")
    _check_reading(browser, url, DRAWINGS[-1][0], "convnet")
    assert _switch(browser) == {"convnet": "checked", "hidden": "enabled"}
    _screenshot(browser, Path(SCREENSHOT or tmp_path / "draw.png"))

    _clear_and_check(browser)
    assert _tiles(browser) == [[26, 26, 32], [11, 11, 64]]
    blank = browser.execute_script("""
        return Array.from(document.querySelectorAll('#feature-maps canvas')).every(c =>
            c.getContext('2d').getImageData(0, 0, c.width, c.height).data.every(v => v === 0));""")
    assert blank
    # With nothing drawn, a flip changes the panel and asks nothing.
    flip(browser, "hidden")
    _wait_for_kind(browser, "hidden")
    assert browser.find_element("id", "hidden-panel").is_displayed()
    assert browser.execute_script("return [document.body.dataset.pending, window.lastResult]") \
        == ["0", None]


def test_a_page_served_one_model_disables_the_other(browser, hidden_url):
    browser.get(hidden_url)
    _wait_for_kind(browser, "hidden")
    assert _switch(browser) == {"convnet": "disabled", "hidden": "checked"}
    assert "--model" in browser.find_element(
        "css selector", '#model-switch [data-model="convnet"]').get_attribute("title")
    assert browser.find_element("id", "hidden-panel").is_displayed()
    draw_strokes(browser, FOUR)
    _check_reading(browser, hidden_url, 4, "hidden")
    flip(browser, "convnet")  # nothing happens
    assert _switch(browser) == {"convnet": "disabled", "hidden": "checked"}
    assert browser.execute_script("return document.body.dataset.pending") == "0"
    assert read(browser, "hidden")["prediction"] == 4
    _clear_and_check(browser)


def _check_reading(driver, url: str, digit: int, kind: str) -> None:
    """Wait for model ``kind``'s answer, and check that it reads ``digit``, that the page shows
    it with that model's panel (the convnet's feature maps, the MLP's hidden units), and that
    the preview is exactly the model's input."""
    answer = read(driver, kind)
    shown = driver.find_element("id", "prediction").text
    assert (shown, answer["prediction"]) == (str(digit), digit), (kind, answer["probabilities"])
    assert driver.execute_script("return document.body.dataset.kind") == kind
    assert _switch(driver)[kind] == "checked"
    top = driver.find_element("css selector", f'#probabilities > [data-digit="{digit}"]')
    assert "top" in top.get_attribute("class").split()

    # What the page shows is what the model got: the preview's pixels are the input
    # the server used, and that input sent to /predict gives the same answer.
    preview = driver.execute_script("""
        const c = document.getElementById('input-preview');
        return Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data)
                    .filter((_, i) => i % 4 === 0);""")
    assert np.array_equal(preview, np.round(255 * np.array(answer["input"]))), "preview != input"
    again = _post(url + "predict", {"model": kind, "pixels": answer["input"]})
    assert again == {k: answer[k] for k in again}

    maps_shown = driver.find_element("id", "maps-panel").is_displayed()
    hidden_shown = driver.find_element("id", "hidden-panel").is_displayed()
    assert (maps_shown, hidden_shown) == (kind == "convnet", kind == "hidden")
    if kind == "hidden":
        assert "feature_maps" not in answer and len(answer["hidden"]) == 100
        titles = driver.execute_script(
            "return Array.from(document.querySelectorAll('#hidden > div'), c => c.title)")
        assert len(titles) == 100 and all(titles)
        firing = sum(a > 0 for a in answer["hidden"])
        assert f"{firing} of them fire" in driver.find_element("id", "hidden-caption").text
        return
    assert "hidden" not in answer
    assert [layer["shape"] for layer in answer["feature_maps"]] == [[26, 26, 32], [11, 11, 64]]
    # Every tile shows exactly the map the server sent, as gray levels.
    drawn = driver.execute_script("""
        return Array.from(document.querySelectorAll('#feature-maps .tiles'), tiles =>
            Array.from(tiles.children, c => Array.from(
                c.getContext('2d').getImageData(0, 0, c.width, c.height).data)));""")
    for layer, tiles in zip(answer["feature_maps"], drawn):
        rgba = np.array(tiles).reshape(len(tiles), -1, 4)
        maps = np.array(layer["maps"])
        assert np.array_equal(rgba[..., 0], maps) and np.array_equal(rgba[..., 2], maps)
        assert (rgba[..., 3] == 255).all()
    notes = [e.text for e in driver.find_elements("css selector", "#feature-maps h3 span")]
    for layer, note in zip(answer["feature_maps"], notes):
        active = sum(high > low for low, high in zip(layer["low"], layer["high"]))
        assert f"{active} respond to this drawing" in note


def _switch(driver) -> dict:
    """Each side of the model switch: "checked", "enabled" or "disabled"."""
    return driver.execute_script("""
        return Object.fromEntries(Array.from(document.querySelectorAll('#model-switch input'),
            i => [i.value, i.checked ? 'checked' : i.disabled ? 'disabled' : 'enabled']));""")


def _screenshot(driver, path: Path) -> None:
    """The whole page in the picture: the window grows to the document's height."""
    chrome, height = driver.execute_script(
        "return [window.outerHeight - window.innerHeight, document.documentElement.scrollHeight]")
    driver.set_window_size(1020, chrome + height)
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000


def _wait_for_kind(driver, kind: str) -> None:
    """Wait until the page shows model ``kind`` (after asking GET /models, or a flip)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return document.body.dataset.kind") == kind)


def _tiles(driver) -> list:
    """[h, w, tiles] of each layer's block of feature-map tiles on the page."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#feature-maps .tiles'), tiles =>
            [tiles.children[0].height, tiles.children[0].width, tiles.children.length]);""")


def _clear_and_check(driver) -> None:
    """Clear, and check that the prediction, the answer and the canvas are gone."""
    driver.find_element("id", "clear").click()
    assert driver.find_element("id", "prediction").text == ""
    assert driver.execute_script("return window.lastResult") is None
    ink = driver.execute_script("""
        const c = document.getElementById('canvas');
        return c.getContext('2d').getImageData(0, 0, c.width, c.height).data
                .reduce((sum, v, i) => i % 4 === 3 ? sum + v : sum, 0);""")
    assert ink == 0
    assert not driver.find_elements("css selector", "#probabilities .top")


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
