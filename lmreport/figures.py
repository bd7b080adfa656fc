"""One plotting style for every figure of the report, and the headline figure.

Every variant has one colour and one marker in every figure (``variant_style``): the
study's AdaBelief-LM family in a sequential blue-to-purple ramp ordered by f (x² … ∛x, so
the ordering the thesis argues about reads as a gradient), the baseline in black, the
ablations in a separate family of warm colours with open markers. ``use_style`` sets the
matplotlib/seaborn defaults the notebooks share.
"""
from __future__ import annotations

import numpy as np

# study family: AdaBelief-LM by f, from the weakest smoothing to the strongest
STUDY_STYLE = {
    "adabelief": ("#000000", "o"),
    "lm-x2": ("#9ecae1", "s"),
    "lm-x": ("#4292c6", "D"),
    "lm-sqrt": ("#2171b5", "^"),
    "lm-cbrt": ("#54278f", "v"),
}
# ablations and other optimizers: warm colours, open markers
OTHER_STYLE = {
    "lm-cbrt-czero": ("#d94801", "P"),
    "lm-x2-czero": ("#fd8d3c", "X"),
    "lm-cbrt-cglobal": ("#a63603", "*"),
    "adabelief-whh-trained": ("#636363", "h"),
    "lm-cbrt-whh-trained": ("#e7298a", "p"),
    "adabelief-wdx2": ("#1b9e77", "d"),
    "adam": ("#8c6d31", "<"),
    "adam-lm-cbrt": ("#bd9e39", ">"),
    "sgd": ("#7f7f7f", "8"),
}
# the toy model's dynamics (notebook 01): AdaBelief black as in the results, the others in
# hues far from each other and from the f-family's blues; dashed is the LM version
TOY_COLORS = {"adabelief": "#000000", "gd": "#e69f00", "langevin": "#009e73", "isa": "#cc79a7"}
PUBLISHED_MARKER = dict(marker="D", facecolor="none", edgecolor="#d62728", s=55, linewidths=1.6, zorder=4)
METRIC_LABELS = {"min_test": "min test PPL", "test_at_best_valid": "test PPL at the best-valid epoch"}


def variant_style(variant: str) -> dict:
    """Colour, marker and fill of a variant, the same in every figure."""
    if variant in STUDY_STYLE:
        color, marker = STUDY_STYLE[variant]
        return {"color": color, "marker": marker, "filled": True}
    color, marker = OTHER_STYLE.get(variant, ("#bcbd22", "o"))
    return {"color": color, "marker": marker, "filled": False}


def use_style() -> None:
    """The report's defaults: white grid, readable sizes, legends framed, figures saved tight."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    mpl.rcParams.update({"figure.dpi": 110, "savefig.dpi": 130, "savefig.bbox": "tight",
                         "legend.frameon": True, "legend.framealpha": 0.95, "axes.titlesize": 12,
                         "axes.labelsize": 11})


def plot_paired_differences(paired, published: dict | None = None, metrics=("min_test", "test_at_best_valid"),
                            title: str = ""):
    """The headline figure: per depth, each variant minus AdaBelief (paired by seed), the
    mean and its 95% t-interval per metric, a zero line, and the published difference
    (min test only; the study did not publish test at the best-valid epoch) beside it.
    Differences are in percent of AdaBelief's mean over the paired seeds, so that a
    reduced-scale profile (perplexity near 180) and the study (near 60) share one axis.

    ``paired``: ``report.paired_against_baseline`` rows (baseline AdaBelief);
    ``published``: (layers, variant) -> the published min test PPL difference to AdaBelief,
    in percent of AdaBelief's (``report.published_differences()``), or None.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = paired[paired["baseline"] == "AdaBelief"]
    depths = sorted(rows["layers"].unique())
    variants = list(dict.fromkeys(rows["variant"]))
    fig, axes = plt.subplots(1, len(depths), figsize=(4.3 * len(depths) + 0.6, 0.55 * len(variants) + 1.8),
                             sharey=True, squeeze=False)
    offsets = np.linspace(-0.18, 0.18, len(metrics)) if len(metrics) > 1 else [0.0]
    fills = {"min_test": "full", "test_at_best_valid": "none"}
    for ax, layers in zip(axes[0], depths):
        ax.axvline(0, color="0.35", lw=1, zorder=1)
        for y, variant in enumerate(variants):
            style = variant_style(variant)
            for off, metric in zip(offsets, metrics):
                row = rows[(rows["layers"] == layers) & (rows["variant"] == variant) & (rows["metric"] == metric)]
                if row.empty:
                    continue
                r = row.iloc[0]
                pct = 100 / r["baseline mean"]
                if np.isfinite(r.get("95% CI low", np.nan)):
                    ax.plot([r["95% CI low"] * pct, r["95% CI high"] * pct], [y + off] * 2, color=style["color"],
                            lw=2.2, solid_capstyle="butt", zorder=2)
                ax.plot(r["mean difference"] * pct, y + off, marker=style["marker"], color=style["color"], ms=7,
                        fillstyle=fills.get(metric, "full"), markeredgewidth=1.5, zorder=3, ls="none")
            if published and published.get((layers, variant)) is not None:
                ax.scatter([published[(layers, variant)]], [y + offsets[0] - 0.22], **PUBLISHED_MARKER)
        ax.set_title(f"{layers} layer{'s' if layers > 1 else ''}")
        ax.set_xlabel("variant − AdaBelief (% of its PPL)")
        ax.grid(axis="y", visible=False)
    axes[0][0].set_yticks(range(len(variants)))
    axes[0][0].set_yticklabels([r["label"] for _, r in rows.drop_duplicates("variant").iterrows()])
    axes[0][0].invert_yaxis()
    handles = [Line2D([], [], color="0.2", marker="o", ls="-", fillstyle=fills.get(m, "full"), lw=2.2,
                      label=f"{METRIC_LABELS.get(m, m)}: mean and 95% interval over paired seeds")
               for m in metrics]
    if published:
        handles.append(Line2D([], [], marker="D", ls="none", markerfacecolor="none", markeredgecolor="#d62728",
                              markeredgewidth=1.6, label="published difference in min test PPL, % (Siow 2024)"))
    fig.legend(handles=handles, loc="lower center", ncol=1, bbox_to_anchor=(0.5, -0.02), frameon=False)
    fig.suptitle(title or "Each variant against AdaBelief, paired by seed (left of zero: the variant is better)")
    fig.tight_layout(rect=(0, 0.04 * len(handles) + 0.01, 1, 1))
    return fig


def _legend_right(fig, ax, title: str | None = None) -> None:
    """The variants' legend to the right of the panels, never over data."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend():
        ax.get_legend().remove()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), title=title, frameon=False)


def _plain_log_ticks(ax) -> None:
    """Log-scale y ticks as plain numbers (400, 500), not 4 × 10²."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)))
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    ax.yaxis.set_major_formatter(formatter)
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_curves_vs_baseline(epochs, layers: int, when=(), baseline: str = "adabelief", title: str = ""):
    """Figures 4.2–4.4: left, the test perplexity per epoch of each variant (mean over its
    seeds, log scale); right, each variant minus the baseline per epoch, paired by seed (mean
    line, band from the lowest to the highest seed), where raw curves a pixel apart separate.
    Dotted verticals: the lr drops."""
    import matplotlib.pyplot as plt

    from .report import variant_label

    data = epochs[epochs["layers"] == layers]
    variants = list(dict.fromkeys(data["variant"]))
    base = data[data["variant"] == baseline].set_index(["seed", "epoch"])["test_ppl"]
    fig, (raw, diff) = plt.subplots(1, 2, figsize=(12.5, 4.4))
    every = max(1, int(data["epoch"].max()) // 8)
    for variant in variants:
        style = variant_style(variant)
        group = data[data["variant"] == variant]
        mean = group.groupby("epoch")["test_ppl"].mean()
        kw = dict(color=style["color"], marker=style["marker"], markevery=every, ms=5, lw=1.6,
                  fillstyle="full" if style["filled"] else "none", label=variant_label(variant))
        raw.plot(mean.index, mean.to_numpy(), **kw)
        if variant == baseline:
            continue
        d = (group.set_index(["seed", "epoch"])["test_ppl"] - base).dropna().groupby(level="epoch")
        if not len(d):
            continue
        diff.plot(d.mean().index, d.mean().to_numpy(), **kw)
        diff.fill_between(d.min().index, d.min().to_numpy(), d.max().to_numpy(), color=style["color"], alpha=0.15, lw=0)
    for ax in (raw, diff):
        for epoch in when:
            ax.axvline(epoch - 0.5, color="0.5", ls=":", lw=1)
        ax.set_xlabel("epoch")
    diff.axhline(0, color="0.3", lw=1)
    raw.set(yscale="log", ylabel="test perplexity (mean over seeds, log scale)")
    _plain_log_ticks(raw)
    diff.set(ylabel=f"variant − {variant_label(baseline)} (test PPL, paired by seed)")
    n_seeds = data.groupby("variant")["seed"].nunique().max()
    diff.set_title(f"band: lowest to highest of {n_seeds} seeds", fontsize=10)
    _legend_right(fig, raw)
    fig.suptitle(title or f"{layers}-layer LSTM: test perplexity per epoch (dotted: lr ÷ 10)")
    fig.tight_layout()
    return fig


def plot_paired_seeds(runs, layers: int, metrics=("min_train", "min_test"), title: str = ""):
    """Figures 4.5–4.7: each run's value per variant, the runs of one seed joined by a line
    (for n ≤ 5 seeds a box hides the pairing: a seed that is worst for every variant moves
    all of its points together), the seed named at the line's end."""
    import matplotlib.pyplot as plt

    from .report import METRICS, variant_label

    data = runs[(runs["layers"] == layers) & (runs["status"] == "finished")]
    variants = list(dict.fromkeys(data["variant"]))
    x = {v: i for i, v in enumerate(variants)}
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 4.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        ends = []
        for seed, group in data.groupby("seed"):
            group = group.assign(pos=group["variant"].map(x)).sort_values("pos")
            ax.plot(group["pos"], group[metric], color="0.65", lw=1, zorder=1)
            ends.append((group.iloc[-1][metric], group.iloc[-1]["pos"], seed))
        # the seed names at the lines' ends, pushed apart so that they never print over each other
        low, high = data[metric].min(), data[metric].max()
        gap = 0.075 * (high - low if high > low else 1.0)
        placed = []
        for value, pos, seed in sorted(ends):
            y = max(value, placed[-1] + gap) if placed else value
            placed.append(y)
            ax.annotate(f"seed {seed}", (pos, value), xytext=(pos + 0.18, y), textcoords="data",
                        va="center", fontsize=8, color="0.35",
                        arrowprops=dict(arrowstyle="-", color="0.75", lw=0.6) if abs(y - value) > gap / 3 else None)
        for variant in variants:
            style = variant_style(variant)
            values = data[data["variant"] == variant][metric]
            ax.scatter([x[variant]] * len(values), values, s=48, zorder=3, marker=style["marker"],
                       facecolor=style["color"] if style["filled"] else "white", edgecolor=style["color"], linewidths=1.5)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels([variant_label(v) for v in variants], rotation=30, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.5, len(variants) - 0.5 + 0.9)  # room for the seed names
        ax.set(ylabel=METRICS.get(metric, metric), xlabel="")
        ax.grid(axis="x", visible=False)
    fig.suptitle(title or f"{layers}-layer LSTM: every run, joined by seed")
    fig.tight_layout()
    return fig


def wilson_interval(k, n: int, z: float = 1.96):
    """95% Wilson score interval of a binomial proportion k/n (arrays welcome)."""
    k = np.asarray(k, dtype=float)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)  # rounding: never below 0


def plot_escape_fractions(results: dict, steps: int, title: str = ""):
    """Toy model: per method, the fraction of runs past the barrier after each step, with its
    95% Wilson band (n runs per method); dashed lines are the LM versions. A method that never
    escapes lies on the zero line, which is drawn inside the axes so it stays visible."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    step_axis = np.arange(1, steps + 1)
    bases = list(dict.fromkeys(m.removesuffix("-lm") for m in results))
    colors = {b: TOY_COLORS.get(b, "#bcbd22") for b in bases}
    for method, times in results.items():
        n = len(times)
        escaped = (np.asarray(times)[:, None] <= step_axis).sum(axis=0)
        low, high = wilson_interval(escaped, n)
        color = colors[method.removesuffix("-lm")]
        ax.fill_between(step_axis, low, high, color=color, alpha=0.12, lw=0)
        ax.plot(step_axis, escaped / n, lw=2, color=color, ls="--" if method.endswith("-lm") else "-",
                label=f"{method} ({escaped[-1] / n:.0%} by step {steps})")
    ax.set(xlabel="step", ylabel="fraction of runs past the barrier", ylim=(-0.03, 1.03), xlim=(1, steps))
    ax.set_title(title, fontsize=11)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def plot_slice_rise_vs_baseline(slices, baseline: str = "adabelief"):
    """Sharpness along a filter-normalised direction: per depth, each variant's loss rise
    L(w + αd) − L(w) minus AdaBelief's at the same α, paired by seed (mean line, band from the
    lowest to the highest seed). The raw parabolas of nine variants overlap; their differences
    show which minimum is flatter (below zero: flatter than AdaBelief's)."""
    import matplotlib.pyplot as plt

    from .report import variant_label

    depths = sorted(slices["layers"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(4.4 * len(depths) + 2.4, 3.8), squeeze=False)
    for ax, layers in zip(axes[0], depths):
        data = slices[slices["layers"] == layers]
        base = data[data["variant"] == baseline].set_index(["seed", "slice_alpha"])["rise"]
        for variant in dict.fromkeys(data["variant"]):
            if variant == baseline:
                continue
            style = variant_style(variant)
            d = (data[data["variant"] == variant].set_index(["seed", "slice_alpha"])["rise"] - base).dropna()
            if not len(d):
                continue
            g = d.groupby(level="slice_alpha")
            ax.plot(g.mean().index, g.mean().to_numpy(), color=style["color"], marker=style["marker"], ms=4,
                    fillstyle="full" if style["filled"] else "none", lw=1.5, label=variant_label(variant))
            ax.fill_between(g.min().index, g.min().to_numpy(), g.max().to_numpy(), color=style["color"],
                            alpha=0.12, lw=0)
        ax.axhline(0, color="0.3", lw=1)
        ax.set(title=f"{layers} layer{'s' if layers > 1 else ''}", xlabel="α (filter-normalised direction)",
               ylabel=f"rise − {variant_label(baseline)}'s rise (nats)")
    _legend_right(fig, axes[0][0])
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ toy landscape (notebook 01)
def f_style(f: str) -> dict:
    """The style of noise function f (x2, x, sqrt, cbrt): that of its AdaBelief-LM variant,
    so f = ∛x is the same purple in the toy figures as in the results."""
    return variant_style(f"lm-{f}")


def plot_landscape(z, u, h, c: float, f_label: str, eps: float):
    """Figure 2.1: U(z) and its modification H(z), the threshold c as a labelled line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.2, 4.2))
    ax.plot(z, u, color="0.1", lw=2, label="U(z), the toy loss")
    ax.plot(z, h, color=variant_style("lm-x")["color"], lw=2, label=f"H(z), its modification with f(x) = {f_label}")
    ax.axhline(c, color="0.45", ls=":", lw=1.2, label=f"threshold c = {c}")
    ax.set(xlabel="parameter z", ylabel="loss value (U or H, arbitrary units)", ylim=(-0.1, 3.0),
           title=f"Landscape modification of U, c = {c}, ε = {eps}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_gradient_factor(factor, noise_functions, labels: dict, ranges=((1.0, "running minimum: x = U − c mostly < 1"),
                                                                     (9.0, "c ≡ 0: x = U ≈ 4–9 nats"))):
    """Figure 4.1: the factor 1/(f(x) + 1) per f over two ranges of x; on the wide range
    the crossing x = 1 (dotted) and the band x = U under c ≡ 0 (shaded), all named in one
    legend beside the panels."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ranges), figsize=(5.2 * len(ranges) + 2.6, 4))
    for ax, (hi, regime) in zip(np.atleast_1d(axes), ranges):
        x = np.linspace(0, hi, 400)
        for name in noise_functions:
            ax.plot(x, factor(x, name), color=f_style(name)["color"], lw=2, label=f"f(x) = {labels[name]}")
        if hi > 1:
            ax.axvline(1, color="0.35", ls=":", lw=1.2, label="x = 1, where the order of f flips")
            ax.axvspan(4, min(9, hi), color="0.5", alpha=0.12, lw=0, label="x = U under c ≡ 0 (4–9 nats)")
        ax.set(xlabel="x = (U − c)₊  (nats above the threshold)", ylabel="gradient factor 1 / (f(x) + 1)",
               title=regime, ylim=(0, 1.02))
    _legend_right(fig, np.atleast_1d(axes)[-1])
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ notebook 02
def plot_lm_factor_trace(scored, smooth: int = 10):
    """The LM factor a recorded run's batches would get, per f (one colour each, as in the
    results) and per rule for c (one panel each): thin line per batch, thick line its
    running mean over ``smooth`` batches, so the level reads through the noise."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from .optim import F_LABELS

    modes = list(dict.fromkeys(scored["c_mode"]))
    names = {"running_min": "c = running minimum of U", "zero": "c ≡ 0"}
    by_label = {v: k for k, v in F_LABELS.items()}
    fig, axes = plt.subplots(1, len(modes), figsize=(5.6 * len(modes) + 2.2, 3.9), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        data = scored[scored["c_mode"] == mode]
        for f, group in data.groupby("f", sort=False):
            color = f_style(by_label.get(f, f))["color"]
            series = pd.Series(group["scale"].to_numpy(), index=group["step"].to_numpy())
            ax.plot(series.index, series.to_numpy(), color=color, lw=0.6, alpha=0.35)
            ax.plot(series.index, series.rolling(smooth, min_periods=1).mean().to_numpy(), color=color, lw=2,
                    label=f"f(x) = {f}")
        ax.set(title=names.get(mode, f"c: {mode}"), xlabel="training batch",
               ylabel="LM factor 1 / (f((U − c)₊) + 1)")
    axes[0][-1].plot([], [], color="0.4", lw=0.6, alpha=0.5, label="per batch")
    axes[0][-1].plot([], [], color="0.4", lw=2, label=f"mean of {smooth} batches")
    _legend_right(fig, axes[0][-1])
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ notebook 05
def plot_sharpness_scatter(measured, x: str = "lambda_max", y: str = "min_test", xlabel: str = "",
                           ylabel: str = ""):
    """Per depth, each run's sharpness against its perplexity, in the variants' fixed
    styles; Kendall's τ over the runs and its p-value in the panel's title (not over the
    points), the variants' legend beside the panels."""
    import matplotlib.pyplot as plt
    from scipy import stats

    from .report import variant_label

    depths = sorted(measured["layers"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(4.3 * len(depths) + 2.8, 4.0), squeeze=False)
    for ax, layers in zip(axes[0], depths):
        data = measured[measured["layers"] == layers]
        for variant, group in data.groupby("variant", sort=False):
            style = variant_style(variant)
            ax.scatter(group[x], group[y], s=46, marker=style["marker"], linewidths=1.4, zorder=3,
                       facecolor=style["color"] if style["filled"] else "white", edgecolor=style["color"],
                       label=variant_label(variant))
        tau, p = stats.kendalltau(data[x], data[y]) if len(data) > 2 else (np.nan, np.nan)
        ax.set_title(f"{layers} layer{'s' if layers > 1 else ''}: Kendall τ = {tau:.2f}, p = {p:.2g} "
                     f"(n = {len(data)})", fontsize=10.5)
        ax.set(xlabel=xlabel or f"{x} of the training loss", ylabel=ylabel or y)
        ax.margins(0.08)
    _legend_right(fig, axes[0][0])
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ notebook 06
def plot_shared_file_gap(gaps: dict, shared: dict, labels: dict, title: str = ""):
    """The audit of one log file the study used for two variants: per column (panel), the
    log ratio to the same seed's AdaBelief log of each candidate's other seeds (colour: the
    variant, line style: the seed) and of the shared file (black).

    ``gaps``: {(variant, seed): {column: array}}; ``shared``: {column: array};
    ``labels``: {column: axis label}."""
    import matplotlib.pyplot as plt

    from .report import variant_label

    columns = list(shared)
    dashes = ["-", "--", "-.", ":"]
    seeds = list(dict.fromkeys(s for _, s in gaps))
    fig, axes = plt.subplots(1, len(columns), figsize=(5.4 * len(columns) + 2.8, 4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        epochs = np.arange(1, len(shared[column]) + 1)
        for (variant, seed), values in gaps.items():
            ax.plot(epochs, values[column], color=variant_style(variant)["color"], lw=1.1,
                    ls=dashes[seeds.index(seed) % len(dashes)], label=f"{variant_label(variant)}, seed {seed}")
        ax.plot(epochs, shared[column], color="black", lw=1.8, label="the shared seed-141 file")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set(xlabel="epoch", ylabel=labels.get(column, column))
    _legend_right(fig, axes[0][0])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
