"""The plotting style and the headline figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from lmreport.figures import OTHER_STYLE, STUDY_STYLE, plot_paired_differences, variant_style  # noqa: E402
from lmreport.grid import DERIVED_VARIANTS, VARIANTS  # noqa: E402


def test_every_variant_has_its_own_colour_and_the_families_differ_in_fill():
    names = list(VARIANTS) + list(DERIVED_VARIANTS)
    colours = [variant_style(v)["color"] for v in names]
    assert len(set(colours)) == len(names)
    assert set(STUDY_STYLE) | set(OTHER_STYLE) == set(names)
    assert all(variant_style(v)["filled"] for v in STUDY_STYLE) and not any(variant_style(v)["filled"] for v in OTHER_STYLE)


def test_headline_figure_shows_intervals_zero_and_the_published_difference_outside_the_data():
    rows = []
    for layers in (1, 2):
        for variant, label in (("lm-x2", "AdaBelief-LM x²"), ("lm-cbrt", "AdaBelief-LM ∛x")):
            for metric in ("min_test", "test_at_best_valid"):
                rows.append({"layers": layers, "variant": variant, "label": label, "baseline": "AdaBelief",
                             "metric": metric, "n pairs": 3, "mean difference": -1.0,
                             "95% CI low": -2.0, "95% CI high": 0.5, "baseline mean": 200.0})
    published = {(1, "lm-x2"): 0.47, (1, "lm-cbrt"): -0.36, (2, "lm-x2"): -1.35, (2, "lm-cbrt"): -3.76}
    fig = plot_paired_differences(pd.DataFrame(rows), published)
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["1 layer", "2 layers"]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["AdaBelief-LM x²", "AdaBelief-LM ∛x"]
    # per panel: a zero line, 2 variants x 2 metrics of (interval, dot), 2 published markers
    assert sum(1 for line in axes[0].lines if list(line.get_xdata()) == [0, 0]) == 1
    assert len(axes[0].collections) == 2
    offsets = sorted(round(float(x), 2) for c in axes[1].collections for x, _ in c.get_offsets())
    assert offsets == [-3.76, -1.35]  # drawn where it is given, beside its variant's row
    interval = [line for line in axes[0].lines if len(line.get_xdata()) == 2 and list(line.get_xdata()) != [0, 0]]
    assert sorted(interval[0].get_xdata()) == [-1.0, 0.25]  # -2.0 and +0.5 PPL at a baseline of 200
    assert axes[0].get_xlabel() == "variant − AdaBelief (% of its PPL)"
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert all(legend.y1 <= a.get_window_extent().y0 for a in axes)  # below every panel, over no data


def test_headline_panels_axis_labels_do_not_run_into_each_other():
    from lmreport.figures import use_style

    use_style()  # the report's fonts, which are what made a longer label collide
    rows = [{"layers": layers, "variant": variant, "label": label, "baseline": "AdaBelief", "metric": metric,
             "n pairs": 3, "mean difference": -1.0, "95% CI low": -2.0, "95% CI high": 0.5, "baseline mean": 200.0}
            for layers in (1, 2, 3)
            for variant, label in (("lm-x2", "AdaBelief-LM x²"),
                                   ("lm-cbrt-whh-trained", "AdaBelief-LM ∛x wdrop_mode=trained"))
            for metric in ("min_test", "test_at_best_valid")]
    fig = plot_paired_differences(pd.DataFrame(rows), {})
    fig.canvas.draw()
    labels = [a.xaxis.label.get_window_extent() for a in fig.axes]
    assert all(left.x1 < right.x0 for left, right in zip(labels, labels[1:]))


def test_the_document_numbers_sections_figures_and_tables_and_gives_images_their_captions():
    import nbformat

    from lmreport.document import META_KEY, add_alt_text, number_document

    png = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}
    book = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 4 · The tables\n\nText.\n\n## Tables 4.1–4.3"),
        nbformat.v4.new_code_cell(outputs=[
            nbformat.v4.new_output("display_data", data={"text/markdown": "| a |\n|---|\n| 1 |"}),
            nbformat.v4.new_output("display_data", data=png, metadata={META_KEY: {"caption": "Curves: lr drops move them."}}),
        ]),
        nbformat.v4.new_markdown_cell("# 5 · Sharpness\n```\n# not a heading\n```"),
        nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("display_data", data=png)]),
    ])
    numbered = number_document(book)
    assert [(s["number"], s["title"]) for s in numbered["sections"]] == [
        ("1", "The tables"), ("1.1", "Tables 4.1–4.3"), ("2", "Sharpness")]
    assert numbered["figures"] == ["Curves: lr drops move them.", "Sharpness"]  # no caption: its section
    assert numbered["tables"] == ["Tables 4.1–4.3"]
    assert book.cells[0].source.splitlines()[2:] == ["- [1 The tables](#sec-1)", "    - [1.1 Tables 4.1–4.3](#sec-1-1)",
                                                    "- [2 Sharpness](#sec-2)"]
    outs = book.cells[2].outputs
    assert outs[0].data["text/markdown"].endswith("**Table 1.** Tables 4.1–4.3")
    assert outs[3].data["text/markdown"].endswith("**Figure 1.** Curves: lr drops move them.")
    assert "# not a heading" in book.cells[3].source
    html = ('<div class="jp-OutputArea-output"><img src="a"></div><p><img src="x"></p>'
            '<div class="jp-OutputArea-output"><img src="b"></div>')
    out = add_alt_text(html, numbered["figures"])
    assert 'alt="Figure 1: Curves: lr drops move them."' in out and 'alt="Figure 2: Sharpness"' in out
    assert '<img src="x"/>' in out  # not an output image: left alone


def test_maths_becomes_mathml_and_prices_stay_text():
    from lmreport.document import render_maths

    out = render_maths("Scale $1/(f(x)+\\epsilon)$, cost $5 or $6, and $$x^2$$.")
    assert out.count("<math") == 2 and 'display="block"' in out and 'display="inline"' in out
    assert "cost $5 or $6" in out and "$$" not in out


def test_wilson_interval_brackets_the_proportion_and_stays_in_0_1():
    import numpy as np

    from lmreport.figures import wilson_interval

    low, high = wilson_interval(np.array([0, 5, 10]), 10)
    assert low[0] == 0 and 0 < high[0] < 0.35 and high[2] == 1 and 0.9 > low[2] > 0.65
    assert low[1] < 0.5 < high[1]
