"""The report as a reader opens it: a real headless Chromium (Debian's package) driven by
Playwright. Skipped, saying why, where either is missing (CI); run here, it also saves
screenshots of the first screen and of the headline figure beside the report."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LMREPORT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
PROFILE = os.environ.get("LMREPORT_BROWSER_PROFILE", "cpu")
REPORT = ROOT / "results" / PROFILE / "report.html"
# the flags a closed network needs (no background connections, no sandbox as root)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page():
    if CHROMIUM is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; or set LMREPORT_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright not installed (pip install playwright)")
    if not REPORT.is_file():
        pytest.skip(f"{REPORT} not built (python -m lmreport report --profile {PROFILE})")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(REPORT.as_uri(), wait_until="load")
        yield page
        browser.close()


def test_the_first_screen_and_the_headline_figure_are_saved(page):
    out = REPORT.parent / "screenshots"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "first_screen.png"))
    headline = page.locator("img[alt*='Each variant minus AdaBelief']").first
    headline.scroll_into_view_if_needed()
    headline.screenshot(path=str(out / "headline_figure.png"))
    assert (out / "first_screen.png").stat().st_size > 10_000 and (out / "headline_figure.png").stat().st_size > 10_000


def test_contents_links_resolve_and_sections_are_numbered_without_gaps(page):
    links = page.eval_on_selector_all("a[href^='#sec-']", "els => els.map(e => e.getAttribute('href').slice(1))")
    assert links, "no table of contents"
    missing = [a for a in links if page.locator(f"[id='{a}']").count() == 0]
    assert not missing
    tops = [int(a.split("-")[1]) for a in links if a.count("-") == 1]
    assert tops == list(range(1, len(tops) + 1))


def test_every_image_has_a_caption_and_its_alt_text(page):
    alts = page.eval_on_selector_all(".jp-OutputArea-output img", "els => els.map(e => e.alt)")
    assert alts and all(re.match(r"Figure \d+: \S", a) for a in alts), alts[:3]
    text = page.inner_text("body")
    for k in range(1, len(alts) + 1):
        assert f"Figure {k}." in text


def test_no_raw_maths_is_left_for_a_reader(page):
    text = page.inner_text("body")
    raw = re.findall(r"\$[^$\n]{1,60}\$", text)
    assert not raw, raw[:5]
    assert page.locator("math").count() > 0
