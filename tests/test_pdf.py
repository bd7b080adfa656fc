"""The report's PDF is its HTML, printed: the same build, the same numbers, every table on
the page. Needs Chromium (Debian's package), Playwright and pypdf; skipped, saying which is
missing, where one is (CI), like test_browser.py."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lmreport import pdf

ROOT = Path(__file__).resolve().parents[1]
PROFILE = os.environ.get("LMREPORT_BROWSER_PROFILE", "cpu")
REPORT = ROOT / "results" / PROFILE / "report.html"
PDF = REPORT.with_suffix(".pdf")


@pytest.fixture(scope="module")
def printer():
    why = pdf.pdf_unavailable()
    if why:
        pytest.skip(why)
    return pdf.print_pdf


def _text(path: Path) -> str:
    pypdf = pytest.importorskip("pypdf", reason="pypdf not installed (pip install pypdf)")
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(str(path)).pages)


def _squeeze(text: str) -> str:
    """Text without whitespace or soft hyphens (a PDF line break may fall anywhere in prose)."""
    return re.sub(r"[\s\u00ad]+", "", text)


@pytest.fixture(scope="module")
def committed(printer):
    if not (REPORT.is_file() and PDF.is_file()):
        pytest.skip(f"{REPORT.name} or {PDF.name} not built (python -m lmreport report --profile {PROFILE})")
    from bs4 import BeautifulSoup

    return BeautifulSoup(REPORT.read_text(encoding="utf-8"), features="html.parser"), _text(PDF)


def test_the_pdf_comes_from_the_same_build_as_the_html(committed):
    soup, text = committed
    stamp = soup.select_one(".lm-stamp").get_text(strip=True)
    assert re.match(r"Built \d{4}-\d\d-\d\d \(UTC\)", stamp), stamp
    assert text.count(stamp) >= 2  # under the contents, and in every page's footer
    assert _squeeze(stamp) in _squeeze(text.split("Contents")[0])


def test_numbers_of_the_html_tables_are_the_numbers_of_the_pdf(committed):
    soup, text = committed
    flat = _squeeze(text)
    checked = 0
    for caption in ("The escape experiment", "Table 4.1 of the thesis", "Each variant minus its baseline"):
        anchor = soup.find(string=re.compile(re.escape(caption)))
        assert anchor is not None, f"no caption starting {caption!r} in the HTML"
        table = anchor.find_next("table")
        for cell in table.select("td"):
            value = cell.get_text(" ", strip=True)
            if re.search(r"\d", value):  # a number (or a name with one) the reader compares
                assert _squeeze(value) in flat, f"{value!r} of the {caption!r} table is not in the PDF"
                checked += 1
    assert checked > 50
    # the step sizes of the escape table that an earlier PDF printed as 0
    assert "0.01" in text and "0.05" in text
    html_numbers = {a.get_text(strip=True) for a in soup.select("strong") if re.fullmatch(r"(Figure|Table) \d+\.",
                                                                                           a.get_text(strip=True))}
    assert html_numbers and all(n in text for n in html_numbers)


def test_every_table_of_the_report_fits_the_page(printer, tmp_path):
    if not REPORT.is_file():
        pytest.skip(f"{REPORT} not built")
    done = printer(REPORT, tmp_path / "report.pdf", "Built test")
    assert all(fits for _, _, fits, _ in done["tables_shrunk"]), done["tables_shrunk"]
    assert done["browser"].startswith("Chromium ")


def test_a_wide_table_is_set_smaller_until_it_fits(printer, tmp_path):
    header = "".join(f"<th>column {k} with a long header</th>" for k in range(12))
    row = "".join(f"<td>{1000 + k}.25 ± 3.5</td>" for k in range(12))
    html = tmp_path / "wide.html"
    html.write_text(f'<html><body><div class="jp-RenderedHTMLCommon jp-OutputArea-output"><table><thead><tr>{header}</tr></thead>'
                    f"<tbody><tr>{row}</tr></tbody></table></div><p>after</p></body></html>", encoding="utf-8")
    done = printer(html, tmp_path / "wide.pdf", "Built 2026-01-01 (UTC)")
    [(index, pt, fits, wrapped)] = done["tables_shrunk"]
    assert fits and pdf.MIN_TABLE_PT <= pt < pdf.TABLE_PT and not wrapped
    text = _text(tmp_path / "wide.pdf")
    assert "1011.25 ± 3.5" in text and "Built 2026-01-01 (UTC)" in text and "page 1 of 1" in text
