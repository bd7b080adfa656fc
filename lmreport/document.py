"""The combined report notebook as a document: numbered sections, a table of contents,
numbered figures and tables with captions, and alt text taken from the captions.

A notebook gives a figure its caption by showing it with ``show_figure(fig, caption)``
(the caption travels in the output's metadata); a figure shown otherwise gets the title of
its section. ``number_document`` rewrites the combined notebook in place (headings, a
caption after each figure and before each table, a contents cell first) and returns what it
numbered; ``add_alt_text`` gives each output image of the exported HTML its caption.
"""
from __future__ import annotations

import re

import nbformat

META_KEY = "lmreport"
HEADING = re.compile(r"^(#{1,2}) +(.*)$")
# "4 · Title", "1. Title", "2.3 Title": the numbering a notebook gave itself
OWN_NUMBER = re.compile(r"^\d+(\.\d+)*\s*[·.:)–-]?\s+")
TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}", re.M)


def show_figure(fig, caption: str) -> None:
    """Display a matplotlib figure with its caption (numbered by the report build)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(fig, metadata={META_KEY: {"caption": caption}})
    plt.close(fig)


def show_source(*objects) -> None:
    """Display the source of package functions as a Python listing, so that a notebook can
    show the code it calls without defining it in a cell."""
    import inspect

    from IPython.display import Markdown, display

    code = "\n\n".join(inspect.getsource(obj).rstrip() for obj in objects)
    display(Markdown(f"```python\n{code}\n```"))


def caption_output(kind: str, number: int, caption: str) -> nbformat.NotebookNode:
    anchor = f'<a id="{kind.lower()}-{number}"></a>'
    return nbformat.v4.new_output("display_data", data={"text/markdown": f"{anchor}**{kind} {number}.** {caption}"})


def _headings(source: str):
    """(line index, level, text) of the # and ## headings outside code fences."""
    fenced = False
    for i, line in enumerate(source.splitlines()):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if match:
            yield i, len(match.group(1)), match.group(2).strip()


def build_stamp(when: float | None = None) -> str:
    """'Built 2026-12-03 (UTC) from commit 1a2b3c4': the line the HTML shows under its
    contents and the PDF in every footer, so a reader can tell the two come from one build.
    The day, not the time, so a rebuild of the same commit on the same day is byte for byte
    the same; ``+`` after the commit marks a working tree with uncommitted changes."""
    import subprocess
    import time
    from pathlib import Path

    here = Path(__file__).parent

    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=here, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ":/lmreport", ":/notebooks")) if commit else False
    day = time.strftime("%Y-%m-%d", time.gmtime(when))
    return f"Built {day} (UTC)" + (f" from commit {commit}{'+' if dirty else ''}" if commit else "")


def number_document(book: nbformat.NotebookNode, stamp: str = "") -> dict:
    """Number sections (1, 1.1, ...) and figures and tables (1, 2, ...) across the whole
    book, add their captions, put a table of contents first (and ``stamp``, the build's
    date, above it); return the numbered items."""
    sections, figures, tables = [], [], []
    top = sub = 0
    section_title = ""
    for cell in book.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.splitlines()
            for i, level, text in list(_headings(cell.source)):
                title = OWN_NUMBER.sub("", text)
                if level == 1:
                    top, sub = top + 1, 0
                    number = f"{top}"
                else:
                    sub += 1
                    number = f"{top}.{sub}"
                anchor = "sec-" + number.replace(".", "-")
                lines[i] = f'<a id="{anchor}"></a>\n\n{"#" * level} {number} {title}'
                sections.append({"level": level, "number": number, "title": title, "anchor": anchor})
                section_title = title
            cell.source = "\n".join(lines)
        elif cell.cell_type == "code":
            outputs = []
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                caption = out.get("metadata", {}).get(META_KEY, {}).get("caption")
                markdown = data.get("text/markdown", "")
                if markdown and TABLE_RULE.search(markdown) and "text/html" not in data:
                    tables.append(caption or section_title)
                    outputs.append(caption_output("Table", len(tables), tables[-1]))
                outputs.append(out)
                if "image/png" in data:
                    figures.append(caption or section_title)
                    outputs.append(caption_output("Figure", len(figures), figures[-1]))
            cell["outputs"] = outputs
    contents = ([f'<p class="lm-stamp"><em>{stamp}</em></p>', ""] if stamp else []) + ["## Contents", ""] + [
        f"{'    ' if s['level'] == 2 else ''}- [{s['number']} {s['title']}](#{s['anchor']})" for s in sections]
    book.cells.insert(0, nbformat.v4.new_markdown_cell("\n".join(contents)))
    book.cells[0]["id"] = "contents"
    return {"sections": sections, "figures": figures, "tables": tables}


def add_alt_text(html: str, captions: list[str]) -> str:
    """Each output image, in document order, gets 'Figure k: caption' as its alt text."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, features="html.parser")
    images = soup.select(".jp-OutputArea-output img")
    for k, (img, caption) in enumerate(zip(images, captions), start=1):
        img["alt"] = f"Figure {k}: {_plain(caption)}"
    return str(soup)


def _plain(markdown: str) -> str:
    """Caption text without markdown emphasis, code ticks or maths dollars (alt text is plain)."""
    return re.sub(r"[*`$]", "", markdown).strip()


DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)
INLINE_MATH = re.compile(r"(?<![\\$\w])\$(?=\S)([^$\n]+?)(?<=\S)\$(?![\w$])")


def render_maths(text: str) -> str:
    """LaTeX maths ($...$, $$...$$) as MathML, which browsers draw without MathJax or a
    network (the HTML report must read offline); a formula latex2mathml cannot convert is
    left as it was."""
    from latex2mathml.converter import convert

    def mathml(match: re.Match, display: str) -> str:
        try:
            return convert(match.group(1).strip(), display=display)
        except Exception:  # noqa: BLE001 - keep the source rather than lose the formula
            return match.group(0)

    text = DISPLAY_MATH.sub(lambda m: "\n\n" + mathml(m, "block") + "\n\n", text)
    return INLINE_MATH.sub(lambda m: mathml(m, "inline"), text)


def maths_as_mathml(book: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the book for the HTML export, its markdown maths rendered as MathML."""
    import copy

    book = copy.deepcopy(book)
    for cell in book.cells:
        if cell.cell_type == "markdown":
            cell.source = render_maths(cell.source)
        for out in cell.get("outputs", []):
            if "text/markdown" in out.get("data", {}):
                out["data"]["text/markdown"] = render_maths(out["data"]["text/markdown"])
    return book
