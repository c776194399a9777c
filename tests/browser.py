"""A real headless Chromium (Debian's chromium and chromedriver) driven by Selenium, for the explorer's tests.

`make test` installs both through apt when they are missing; here a missing browser skips the browser tests,
unless GC_REQUIRE_BROWSER=1 (set by .ci/run), where it fails them: CI must run them.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")


def missing() -> str | None:
    """Why no browser can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if CHROMIUM is None:
        return "no chromium found (apt-get install chromium)"
    if CHROMEDRIVER is None:
        return "no chromedriver found (apt-get install chromium-driver)"
    return None


def require_browser() -> None:
    why = missing()
    if why is None:
        return
    if os.environ.get("GC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser tests must run here (GC_REQUIRE_BROWSER=1) but {why}")
    pytest.skip(why)


def start(width: int = 1400, height: int = 900):
    """A headless Chromium session (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def node_element(driver, name: str):
    """The SVG group of the node called `name` on an explorer page."""
    return driver.execute_script(
        "const n = window.gcExplorer.data.nodes.find(n => n.name === arguments[0]);"
        "return n && Array.from(document.querySelectorAll('g.node'))"
        ".find(g => g.querySelector('title').textContent === n.id);", name)


def click_node(driver, name: str) -> None:
    el = node_element(driver, name)
    assert el is not None, f"no node {name!r} drawn on the page"
    driver.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'})", el)
    el.click()
