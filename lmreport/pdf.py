"""The report's PDF: the finished report.html printed by a headless Chromium.

The PDF is the HTML, printed: the same executed notebooks, the same numbers, the same
figure and table numbering and the same build stamp, so it cannot disagree with the HTML
or be older than it (the report build writes both, or removes a PDF it could not rewrite).
Print CSS keeps every table on the page: tables wrap their cells, and a table still wider
than the text column is set in a smaller font until it fits (down to ``MIN_TABLE_PT``);
figures are scaled to the column and never split across pages.

Chromium comes from the system (Debian: ``apt-get install chromium``, or
``LMREPORT_CHROMIUM``) and is driven by Playwright (``pip install playwright``); without
either, ``pdf_unavailable`` says what is missing.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

# flags a closed network needs (no background connections; no sandbox when run as root)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGE = "A4"
MARGIN_MM = 14
BODY_PT, TABLE_PT, MIN_TABLE_PT = 10, 8, 5.5
WRAP_TABLE_PT = 6.5  # a table whose cells must wrap starts small: fewer lines per cell

PRINT_CSS = f"""
@page {{ size: {PAGE}; margin: {MARGIN_MM}mm {MARGIN_MM}mm {MARGIN_MM + 4}mm {MARGIN_MM}mm; }}
@media print {{
  html, body {{ font-size: {BODY_PT}pt; background: white; }}
  body, .jp-Notebook, .jp-Cell, .jp-OutputArea, .jp-OutputArea-output, .jp-RenderedHTMLCommon {{
    width: auto !important; max-width: 100% !important; overflow: visible !important; padding: 0 !important;
    margin-left: 0 !important; }}
  .jp-OutputPrompt, .jp-InputPrompt {{ display: none !important; }}
  .jp-RenderedHTMLCommon table, .jp-OutputArea-output table {{
    font-size: {TABLE_PT}pt; table-layout: auto; width: auto; max-width: 100%; border-collapse: collapse;
    margin: 0.4em 0; page-break-inside: auto; }}
  /* headers wrap between words, never inside one; cells keep a number or a name on one line */
  .jp-RenderedHTMLCommon th, .jp-RenderedHTMLCommon td {{
    padding: 1pt 4pt !important; overflow-wrap: normal !important; word-break: keep-all !important;
    hyphens: none; vertical-align: bottom; }}
  .jp-RenderedHTMLCommon th {{ white-space: normal !important; }}
  .jp-RenderedHTMLCommon td {{ white-space: nowrap !important; }}
  /* except long prose cells (generated text): those wrap between words */
  .jp-RenderedHTMLCommon td.lm-prose {{ white-space: normal !important; min-width: 14em; }}
  /* a table too wide even in the smallest font: its cells wrap between words as well */
  .jp-RenderedHTMLCommon table.lm-wrap td {{ white-space: normal !important; }}
  tr, img, figure, math[display="block"] {{ page-break-inside: avoid; break-inside: avoid; }}
  thead {{ display: table-header-group; }}
  img {{ max-width: 100% !important; height: auto !important; }}
  h1, h2, h3 {{ page-break-after: avoid; break-after: avoid; }}
  pre {{ white-space: pre-wrap !important; word-break: normal !important; overflow-wrap: break-word !important;
         font-size: 8pt; }}
}}
"""

# Mark cells of more than six words as prose (they may wrap), then shrink, in print
# layout, each table still wider than its column: 0.5 pt at a time down to
# the floor; a table that is still too wide lets its cells wrap and shrinks again
# from WRAP_TABLE_PT.
# Returns [[table index, font size, fits, wrapped], ...] for the tables it touched.
FIT_TABLES_JS = r"""([start, floor, wrapStart]) => {
  const touched = [];
  document.querySelectorAll('.jp-OutputArea-output table, .jp-RenderedHTMLCommon table').forEach((t, i) => {
    t.querySelectorAll('td').forEach(td => { if (td.textContent.trim().split(/\s+/).length > 6) td.classList.add('lm-prose'); });
    const room = () => t.parentElement.clientWidth;
    if (t.scrollWidth <= room() + 1) return;
    const shrink = (from) => {
      let pt = from;
      t.style.fontSize = pt + 'pt';
      while (t.scrollWidth > room() + 1 && pt > floor) { pt -= 0.5; t.style.fontSize = pt + 'pt'; }
      return pt;
    };
    let pt = shrink(start), wrapped = false;
    if (t.scrollWidth > room() + 1) { t.classList.add('lm-wrap'); wrapped = true; pt = shrink(wrapStart); }  // cells wrap too
    touched.push([i, pt, t.scrollWidth <= room() + 1, wrapped]);
  });
  return touched;
}"""
# every table, in print layout: [index, table width, column width] (for the tests)
TABLE_WIDTHS_JS = """() => [...document.querySelectorAll('.jp-OutputArea-output table, .jp-RenderedHTMLCommon table')]
  .map((t, i) => [i, t.scrollWidth, t.parentElement.clientWidth])"""


def chromium_path() -> str | None:
    return os.environ.get("LMREPORT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def pdf_unavailable() -> str | None:
    """Why no PDF can be printed here, or None when it can."""
    if chromium_path() is None:
        return "no PDF: Chromium not found (Debian/Ubuntu: apt-get install chromium; or set LMREPORT_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no PDF: Playwright not installed (pip install playwright; it drives the system's Chromium)"
    return None


def footer(stamp: str) -> str:
    """Each page's footer: the build stamp and the page number, in the printed margin."""
    return ('<div style="font-size:7pt; color:#555; width:100%; padding:0 14mm; display:flex; '
            f'justify-content:space-between;"><span>{stamp}</span>'
            '<span>page <span class="pageNumber"></span> of <span class="totalPages"></span></span></div>')


def print_pdf(html: Path, target: Path, stamp: str = "") -> dict:
    """Print ``html`` to ``target`` (A4, print CSS, wide tables fitted); returns what was
    done: {"tables_shrunk": [[table index, font pt, fits, cells wrapped]],
    "browser": "Chromium <version>"}."""
    from playwright.sync_api import sync_playwright

    why = pdf_unavailable()
    if why:
        raise RuntimeError(why)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(Path(html).resolve().as_uri(), wait_until="load")
            page.add_style_tag(content=PRINT_CSS)
            page.emulate_media(media="print")
            # the print layout's column: A4 width less the margins, at CSS 96 px per inch
            page.set_viewport_size({"width": int((210 - 2 * MARGIN_MM) / 25.4 * 96), "height": 1100})
            shrunk = page.evaluate(FIT_TABLES_JS, [TABLE_PT, MIN_TABLE_PT, WRAP_TABLE_PT])
            target.parent.mkdir(parents=True, exist_ok=True)
            page.pdf(path=str(target), format=PAGE, print_background=True, prefer_css_page_size=True,
                     display_header_footer=True, header_template="<span></span>", footer_template=footer(stamp))
            version = browser.version
        finally:
            browser.close()
    return {"tables_shrunk": shrunk, "browser": f"Chromium {version}"}
