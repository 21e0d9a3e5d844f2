"""The site's formulas render with no network: the built pages in headless Chromium.

The site is built (MkDocs, the project's ``mkdocs.yml``) into a temporary folder and
served on 127.0.0.1; Chromium resolves no other host, so every request outside the site
is refused, and the pages' own requests are logged to show that none was even tried. On
every tutorial page with formulas, the test checks that no raw TeX delimiter (``\\(``,
``\\[``, ``$$``) is left in the text a reader sees, and that the formulas are laid out as
mathematics: each ``<math>`` element has a size, and every fraction's numerator sits above
its denominator (a browser that did not render MathML would put them side by side).

The build is not ``--strict`` here: the chapters' figures (``docs/figures/``) exist only
after the tutorial has run, and ``make docs`` checks the strict build.

Needs the ``docs`` extra (MkDocs, latex2mathml), Debian's ``chromium`` and
``chromium-driver`` and PyPI's ``selenium``. Without them the test skips with one line,
except in CI (``CI`` set), where their absence is a failure.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent


def _missing() -> str | None:
    """What the test lacks, or None."""
    missing = [name for name in ("mkdocs", "material", "latex2mathml", "selenium")
               if importlib.util.find_spec(name) is None]
    missing += [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    return ", ".join(missing) or None


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the site's maths test needs, in CI: {missing}")
        pytest.skip(f"the site's maths test needs {missing} "
                    "(the docs and browser extras, make browser-deps)")
    built = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--quiet", "--no-strict",
         "--site-dir", str(built)],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return built


@pytest.fixture(scope="module")
def base_url(site, serving):
    handler = functools.partial(Quiet, directory=str(site))
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        yield url


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def browser(site):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1100,900",
                 # No host but the site's resolves: every other request is refused.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver: Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def pages_with_formulas(site: Path) -> list[str]:
    """The tutorial's pages whose HTML has a formula, as paths under the site."""
    return sorted(str(page.parent.relative_to(site)) + "/"
                  for page in (site / "tutorial").glob("*/index.html")
                  if 'class="arithmatex"' in page.read_text(encoding="utf-8"))


#: What a reader sees of the page, code blocks left out (they may hold backslashes), and
#: how the formulas are laid out.
INSPECT = """
const text = (() => {
  const body = document.querySelector("article").cloneNode(true);
  body.querySelectorAll("pre, code").forEach(e => e.remove());
  document.body.appendChild(body);          // innerText needs a rendered element
  body.style.position = "absolute"; body.style.left = "-99999px";
  const t = body.innerText;
  body.remove();
  return t;
})();
const formulas = [...document.querySelectorAll("article math")];
const unsized = formulas.filter(m => {
  const r = m.getBoundingClientRect();
  return !(r.width > 0 && r.height > 0);
}).length;
const fractions = [...document.querySelectorAll("article mfrac")].map(f => {
  const [top, bottom] = [...f.children].map(c => c.getBoundingClientRect());
  return top.bottom <= bottom.top + 1;
});
return {text, formulas: formulas.length, unsized, fractions};
"""


def outside_requests(driver, base_url: str) -> list[str]:
    """The URLs the page asked for that are not the site's (from the performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith((base_url, "data:", "blob:", "about:")):
                urls.append(url)
    return urls


def test_formulas_render_offline(site, base_url, browser):
    pages = pages_with_formulas(site)
    assert len(pages) >= 5, f"expected the tutorial's chapters with formulas, found {pages}"
    fractions_seen = 0
    for page in pages:
        browser.get(base_url + page)
        seen = browser.execute_script(INSPECT)
        raw = [d for d in ("\\(", "\\)", "\\[", "\\]", "$$") if d in seen["text"]]
        assert not raw, f"{page}: raw TeX delimiters {raw} left in the text"
        assert seen["formulas"] > 0, f"{page}: no <math> element"
        assert seen["unsized"] == 0, f"{page}: {seen['unsized']} formulas drawn with no size"
        assert all(seen["fractions"]), f"{page}: a fraction's parts side by side, not stacked"
        fractions_seen += len(seen["fractions"])
        outside = outside_requests(browser, base_url)
        assert not outside, f"{page} asked for files outside the site: {outside}"
    assert fractions_seen > 0, "no fraction on any page: the layout check checked nothing"
