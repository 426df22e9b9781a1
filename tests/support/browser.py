"""The UI driven in Chromium (Debian's, through Playwright): ``search_in_browser`` for the compose
tests, and the ``browser`` and ``page`` fixtures of the UI tests (a plugin: tests/conftest.py)."""

from __future__ import annotations

import re
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000  # a loaded 2-core CI box can take a while to rerun a Streamlit script
HEX12 = re.compile(r"^[0-9a-f]{12}$")
# How long a page may take to show something: a Streamlit page on a loaded 2-core machine can take
# longer than Playwright's default 30 s to render its first widget.
WAIT_MS = 120_000


def search_in_browser(ui_url: str, query: str, expected: int) -> list[str]:
    """Type ``query`` into the UI in Chromium; the id prefixes of the results shown, in order."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            page.goto(ui_url)
            box = page.get_by_label("Describe what you are looking for")
            box.fill(query)
            box.press("Enter")
            captions = page.get_by_test_id("stCaptionContainer")
            page.wait_for_function(
                "n => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
                ".filter(e => /^[0-9a-f]{12}$/.test(e.innerText.trim())).length >= n", arg=expected, timeout=WAIT_MS)
            page.locator("[data-testid=stImage] img").first.wait_for()
            return [t.strip() for t in captions.all_inner_texts() if HEX12.match(t.strip())]
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    """A fresh page (tab) of the module's Chromium for each test."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    page.close()
