"""Report helpers: where figures and tables go, and how they are written."""
from __future__ import annotations

import re
from pathlib import Path

from .data import project_dir
from .files import atomic_write, replace_block, write_text


def figures_dir(profile: str | None = None) -> Path:
    folder = project_dir() / "figures"
    return folder / profile if profile else folder


def save_figure(fig, name: str, folder: str | Path | None = None) -> list[Path]:
    """Write ``fig`` as PNG (for the HTML report) and PDF (vector, for print)."""
    folder = Path(folder) if folder else figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    atomic_write(paths[0], lambda tmp: fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight"))
    atomic_write(paths[1], lambda tmp: fig.savefig(tmp, format="pdf", bbox_inches="tight",
                                                   metadata={"CreationDate": None}))
    return paths


# ------------------------------------------------------------------ one run (notebook 03)
def plot_run_curves(metrics, when=(), title: str = ""):
    """Train / valid / test perplexity per epoch on a log scale, lr drops marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for column, label in (("train_ppl", "train (dropout on)"), ("valid_ppl", "valid (batch 10)"),
                          ("test_ppl", 'test (batch 1; the study\'s "valid")')):
        ax.plot(metrics["epoch"], metrics[column], marker="o" if len(metrics) < 30 else None,
                ms=3, lw=1.8, label=label)
    for i, epoch in enumerate(when):
        ax.axvline(epoch - 0.5, color="grey", ls=":", lw=1, label="lr ÷ 10" if i == 0 else None)
    ax.set(yscale="log", xlabel="epoch", ylabel="perplexity", title=title)
    ax.legend()
    return fig


def run_summary(metrics):
    """The numbers a run is reported by: minima over epochs and the sound selection."""
    import pandas as pd

    best_valid = metrics.loc[metrics["valid_ppl"].idxmin()]
    best_test = metrics.loc[metrics["test_ppl"].idxmin()]
    rows = [
        ("min train perplexity", metrics["train_ppl"].min(), int(metrics.loc[metrics["train_ppl"].idxmin(), "epoch"])),
        ('min test perplexity (the study\'s "valid", test-set selection)', best_test["test_ppl"], int(best_test["epoch"])),
        ("min valid perplexity", best_valid["valid_ppl"], int(best_valid["epoch"])),
        ("test perplexity at the best-valid epoch (sound)", best_valid["test_ppl"], int(best_valid["epoch"])),
        ("test perplexity at the last epoch", metrics["test_ppl"].iloc[-1], int(metrics["epoch"].iloc[-1])),
    ]
    return pd.DataFrame(rows, columns=["measure", "perplexity", "epoch"])


# ------------------------------------------------------------------ a grid (notebook 04)
PUBLISHED_SOURCE = "Siow (2024), Tables 4.1–4.3 (means over seeds 141, 6, 42)"
# (layers, variant) -> (min train PPL, min "valid" PPL); the study's "valid" is the test split.
PUBLISHED = {
    (1, "adabelief"): (57.8, 84.3), (1, "lm-x2"): (59.9, 84.7), (1, "lm-x"): (60.2, 84.4),
    (1, "lm-sqrt"): (60.6, 84.1), (1, "lm-cbrt"): (60.7, 84.0),
    (2, "adabelief"): (45.1, 66.5), (2, "lm-x2"): (46.3, 65.6), (2, "lm-x"): (45.6, 64.5),
    (2, "lm-sqrt"): (45.0, 64.1), (2, "lm-cbrt"): (44.9, 64.0),
    (3, "adabelief"): (36.8, 61.2), (3, "lm-x2"): (38.8, 61.0), (3, "lm-x"): (38.1, 60.0),
    (3, "lm-sqrt"): (37.5, 59.3), (3, "lm-cbrt"): (37.5, 59.4),
}
# notebook 05's sharpness columns as a reader reads them (ρ: the perturbation's relative radius)
SHARPNESS_LABELS = {"lambda_max": "λ_max", "lambda_min": "λ_min", "trace": "Hessian trace",
                    "avg_sharpness_0.01": "average sharpness (ρ = 0.01)",
                    "worst_sharpness_0.001": "worst-case sharpness (ρ = 0.001)", "weight_norm": "weight norm"}
METRICS = {
    "min_train": "min train PPL",
    "min_test": 'min test PPL (study\'s "valid")',
    "test_at_best_valid": "test PPL at best-valid epoch",
}


DERIVED_LABELS = {"adabelief-wdx2": "AdaBelief, L2 × x² factor"}


def variant_label(variant: str) -> str:
    from .grid import VARIANTS
    from .optim import F_LABELS

    spec = VARIANTS.get(variant)
    if spec is None:
        return DERIVED_LABELS.get(variant, variant)
    name = {"adabelief": "AdaBelief", "adabelief-lm": "AdaBelief-LM", "adam": "Adam",
            "adam-lm": "Adam-LM", "sgd": "SGD", "sgd-lm": "SGD-LM"}[spec["optimizer"]]
    extras = [F_LABELS[spec["f"]]] if "f" in spec else []
    extras += [f"{k}={v}" for k, v in spec.items() if k not in ("optimizer", "f")]
    return " ".join([name, *extras])


def _identify(config, folder: str, profile: str, root: Path | None = None):
    """(layers, variant, seed) of a run directory's config, by matching the variant table;
    another run is ``custom:<its folder>``, as a run name leaves out most overrides (two
    runs differing only in wdecay share one) and a folder holds one run."""
    from .config import make_config
    from .grid import DERIVED_VARIANTS, VARIANTS, variant_overrides

    for name in list(VARIANTS) + list(DERIVED_VARIANTS):
        try:
            spec = variant_overrides(name, profile, config.layers, config.seed, root)
            candidate = make_config(profile, layers=config.layers, seed=config.seed, **spec)
        except ValueError:
            continue
        if candidate.science() == config.science():
            return config.layers, name, config.seed
    return config.layers, f"custom:{folder}", config.seed


def summarize_metrics(metrics) -> dict:
    best_valid = metrics.loc[metrics["valid_ppl"].idxmin()]
    best_test = metrics.loc[metrics["test_ppl"].idxmin()]
    return {"epochs": int(metrics["epoch"].max()), "min_train": metrics["train_ppl"].min(),
            "min_test": best_test["test_ppl"], "min_test_epoch": int(best_test["epoch"]),
            "min_valid": best_valid["valid_ppl"], "best_valid_epoch": int(best_valid["epoch"]),
            "test_at_best_valid": best_valid["test_ppl"], "last_test": metrics["test_ppl"].iloc[-1],
            "hours": metrics["seconds"].sum() / 3600}


PARTIAL_SEED = "seed incomplete"   # the status hold_back_partial_seeds gives a run it leaves out


def partial_seeds(runs) -> set[tuple[int, int]]:
    """The (layers, seed) pairs to leave out: a seed beyond the grid's own (141, 6, 42) at a
    depth where some study variant has runs, but not every such variant has settled that
    seed (finished, or diverged, which the grid never reruns)."""
    from .grid import STUDY_SEEDS, STUDY_VARIANTS
    from .train import DONE

    if runs.empty:
        return set()
    study = runs[runs.variant.isin(STUDY_VARIANTS)]
    variants_at = study.groupby("layers").variant.unique().to_dict()
    settled = set(zip(study.layers, study.variant, study.seed, study.status.isin(DONE)))
    return {(n, s) for n, s in set(zip(runs.layers, runs.seed))
            if s not in STUDY_SEEDS and n in variants_at
            and not all((n, v, s, True) in settled for v in variants_at[n])}


def hold_back_partial_seeds(runs):
    """Leave out the finished runs of ``partial_seeds``: their status becomes
    ``PARTIAL_SEED``, so tables, figures and paired statistics (which read finished runs
    only) skip them and the report lists them with the runs not finished.

    A grid that adds seeds one at a time (``grid --planned``) is committed between sittings;
    without this, a seed finished for AdaBelief but not yet for the variants would move
    AdaBelief's mean in Tables 4.1-4.3 over a different set of seeds than theirs."""
    runs = runs.copy()
    held = partial_seeds(runs)
    if held:
        runs.loc[[(n, s) in held and status == "finished"
                  for n, s, status in zip(runs.layers, runs.seed, runs.status)], "status"] = PARTIAL_SEED
    return runs


def collect_runs(profile: str, root: str | Path | None = None, layers=None, variants=None, seeds=None,
                 whole_seeds: bool = True):
    """Every run of a profile: the expected grid plus whatever else is on disk, of the
    depths and seeds asked for (other variants on disk are always added: ablations and
    custom runs). With ``whole_seeds``, the runs of an extra seed that not every study
    variant of their depth has finished are held back (``hold_back_partial_seeds``) and
    their epochs left out.

    Returns ``(runs, epochs)``: one row per run (status, summary numbers; missing and
    unfinished runs included, with their status) and one row per trained epoch (none of the
    runs held back).
    """
    import pandas as pd

    from .config import RunConfig
    from .grid import plan, results_root
    from .train import read_metrics, read_status

    root = Path(root) if root else results_root()
    expected = {(j.layers, j.variant, j.seed): j.run_dir(root)
                for j in plan(profile, layers, variants, seeds, root=root, check=False)}
    found = {}
    runs_dir = root / profile / "runs"
    for config_path in sorted(runs_dir.glob("*/config.json")) if runs_dir.is_dir() else []:
        key = _identify(RunConfig.from_json(config_path), config_path.parent.name, profile, root)
        if (layers and key[0] not in layers) or (seeds and key[2] not in seeds):
            continue  # e.g. notebook 05 measuring two of the three seeds
        if key not in found or found[key] != expected.get(key):  # of two copies of a grid run, the grid's wins
            found[key] = config_path.parent
    rows, epochs = [], []
    for key in list(expected) + [k for k in found if k not in expected]:
        folder = found.get(key, expected.get(key))
        row = dict(zip(("layers", "variant", "seed"), key), run_dir=str(folder),
                   status=read_status(folder)["status"])
        metrics_path = folder / "metrics.csv"
        if metrics_path.is_file() and metrics_path.stat().st_size > 1:
            metrics = read_metrics(folder)
            if len(metrics):
                row.update(summarize_metrics(metrics))
                epochs.append(metrics.assign(layers=key[0], variant=key[1], seed=key[2]))
        rows.append(row)
    runs = pd.DataFrame(rows)
    runs["label"] = runs["variant"].map(variant_label)
    epochs = pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame()
    if whole_seeds:
        held = partial_seeds(runs)
        runs = hold_back_partial_seeds(runs)
        if len(epochs) and held:  # every run's epochs at a held-back seed, finished or not
            epochs = epochs[[(n, s) not in held for n, s in zip(epochs.layers, epochs.seed)]].reset_index(drop=True)
    return runs, epochs


def study_table(runs, layers: int):
    """Tables 4.1–4.3: per variant, means and stds over finished seeds, published beside."""
    import pandas as pd

    done = runs[(runs["layers"] == layers) & (runs["status"] == "finished")]
    rows = []
    for variant, group in done.groupby("variant", sort=False):
        row = {"variant": variant, "label": variant_label(variant), "n seeds": len(group)}
        for key in METRICS:
            row[f"{key} mean"] = group[key].mean()
            row[f"{key} std"] = group[key].std(ddof=1) if len(group) > 1 else float("nan")
        published = PUBLISHED.get((layers, variant))
        row["published min_train"] = published[0] if published else float("nan")
        row["published min_test"] = published[1] if published else float("nan")
        row["min_test − published"] = row["min_test mean"] - row["published min_test"]
        rows.append(row)
    columns = ["variant", "label", "n seeds"] + [f"{k} {s}" for k in METRICS for s in ("mean", "std")] \
        + ["published min_train", "published min_test", "min_test − published"]
    return pd.DataFrame(rows, columns=columns)


MIN_RUNS_FOR_TAU = 3  # Kendall's tau of two points is always +-1, of one undefined


def kendall_by_depth(measured, x: str = "lambda_max", y: str = "min_test"):
    """Per depth, Kendall's tau (and p) between ``x`` and ``y`` over all runs, and the mean
    tau within variants (each variant's tau computed over its seeds, then averaged).

    Where a depth or a variant has fewer than ``MIN_RUNS_FOR_TAU`` runs, its tau is NaN
    (shown as a dash) rather than a number from one or two points.
    """
    import numpy as np
    import pandas as pd
    from scipy import stats

    rows = []
    for n_layers, group in measured.groupby("layers"):
        tau, p = stats.kendalltau(group[x], group[y]) if len(group) >= MIN_RUNS_FOR_TAU else (np.nan, np.nan)
        within = [stats.kendalltau(g[x], g[y])[0] for _, g in group.groupby("variant") if len(g) >= MIN_RUNS_FOR_TAU]
        within = [t for t in within if np.isfinite(t)]
        rows.append({"layers": n_layers, "runs": len(group), "τ (all runs)": tau, "p": p,
                     "mean τ within variant": np.mean(within) if within else np.nan})
    return pd.DataFrame(rows, columns=["layers", "runs", "τ (all runs)", "p", "mean τ within variant"])


def kendall_by_measure(measured, measures=("lambda_max", "worst_sharpness_0.001"), y: str = "min_test"):
    """``kendall_by_depth`` for several sharpness measures, one block of depths per measure."""
    import pandas as pd

    return pd.concat([kendall_by_depth(measured, m, y).assign(measure=SHARPNESS_LABELS[m]) for m in measures],
                     ignore_index=True)[["measure", "layers", "runs", "τ (all runs)", "p", "mean τ within variant"]]


def paired_against_baseline(runs, metric: str = "min_test", baseline: str = "adabelief"):
    """Each variant minus the baseline, paired by (layers, seed): mean, 95% t-interval, p."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    done = runs[runs["status"] == "finished"]
    rows = []
    for (layers, variant), group in done.groupby(["layers", "variant"], sort=False):
        if variant == baseline:
            continue
        base = done[(done["layers"] == layers) & (done["variant"] == baseline)].set_index("seed")[metric]
        pairs = group.set_index("seed")[metric].to_frame("v").join(base.rename("b"), how="inner")
        d = (pairs["v"] - pairs["b"]).to_numpy()
        n = len(d)
        row = {"layers": layers, "variant": variant, "label": variant_label(variant),
               "baseline": variant_label(baseline), "metric": metric,
               "n pairs": n, "mean difference": d.mean() if n else np.nan,
               "baseline mean": pairs["b"].mean() if n else np.nan}
        if n >= 2:
            half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
            row.update({"95% CI low": d.mean() - half, "95% CI high": d.mean() + half,
                        "p (paired t)": stats.ttest_rel(pairs["v"], pairs["b"]).pvalue if d.std() > 0 else np.nan,
                        "seeds better": int((d < 0).sum())})
        if n:  # a depth where the baseline has no finished seed has nothing to pair
            rows.append(row)
    columns = ["layers", "variant", "label", "baseline", "metric", "n pairs", "mean difference", "95% CI low",
               "95% CI high", "p (paired t)", "seeds better", "baseline mean"]
    return pd.DataFrame(rows, columns=columns)


def sharpness_paired(measured, measures=("lambda_max", "worst_sharpness_0.001")):
    """Notebook 05's test of the flat-minima account: per measure, each variant minus
    AdaBelief paired by seed, as text. λ_max alone is not enough, because it changes when the
    weights are rescaled and the LM variants end with smaller weights; the adaptive
    worst-case sharpness is invariant to that rescaling. Rows need two pairs."""
    import pandas as pd

    frames = []
    for measure in measures:
        paired = paired_against_baseline(measured, measure)
        paired = paired[paired["n pairs"] >= 2]
        pct = {c: relative(paired, c) for c in ("mean difference", "95% CI low", "95% CI high")}
        frames.append(pd.DataFrame({
            "layers": paired["layers"], "variant": paired["label"], "measure": SHARPNESS_LABELS[measure],
            "seeds": paired["n pairs"], "AdaBelief mean": paired["baseline mean"].map("{:.4g}".format),
            "difference (95% CI)": [f"{m:+.2g} [{lo:+.2g}, {hi:+.2g}]" for m, lo, hi in
                                    zip(paired["mean difference"], paired["95% CI low"], paired["95% CI high"])],
            "% of AdaBelief (95% CI)": [f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]" for m, lo, hi in
                                        zip(pct["mean difference"], pct["95% CI low"], pct["95% CI high"])],
            "lower on": [f"{b:.0f} of {n}" for b, n in zip(paired["seeds better"], paired["n pairs"])],
        }))
    return pd.concat(frames, ignore_index=True)


def relative(paired, column: str):
    """A paired table's PPL column as percent of the baseline's mean over the same seeds: the
    scale on which a reduced profile's effects and the published ones compare (the same
    relative gain is three times as many PPL at 180 as at 61)."""
    return 100 * paired[column] / paired["baseline mean"]


def published_relative(layers: int, variant: str, baseline: str = "adabelief") -> float | None:
    """The study's min "valid" (test) PPL difference of ``variant`` to ``baseline``, percent of
    the baseline's (``PUBLISHED``), or None where it published neither."""
    if (layers, variant) not in PUBLISHED or (layers, baseline) not in PUBLISHED:
        return None
    return 100 * (PUBLISHED[(layers, variant)][1] / PUBLISHED[(layers, baseline)][1] - 1)


def published_differences(baseline: str = "adabelief") -> dict:
    """(layers, variant) -> ``published_relative`` for every variant the study published
    beside ``baseline``: the red markers of the headline figure."""
    return {(layers, variant): published_relative(layers, variant, baseline)
            for layers, variant in PUBLISHED if variant != baseline and (layers, baseline) in PUBLISHED}


# Comparisons an ablation exists for, beyond "every variant against AdaBelief":
# (variant, its own baseline). LM against AdaBelief when both train the recurrent matrices
# asks whether the study's comparison survives the corrected model; ∛x with c = 0 against
# ∛x with the running minimum isolates what the published notebook's c changes, f held fixed.
ABLATION_PAIRS = (("lm-cbrt-whh-trained", "adabelief-whh-trained"), ("lm-cbrt-czero", "lm-cbrt"))


def paired_comparisons(runs, metrics=("min_test", "test_at_best_valid")):
    """Every variant against AdaBelief, then each ``ABLATION_PAIRS`` variant against its own
    baseline, for each metric: one table."""
    import pandas as pd

    frames = [paired_against_baseline(runs, m) for m in metrics]
    for variant, baseline in ABLATION_PAIRS:
        pair = runs[runs["variant"].isin([variant, baseline])]
        frames += [paired_against_baseline(pair, m, baseline=baseline) for m in metrics]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else paired_against_baseline(runs.iloc[:0])


def paired_lines(paired, metric: str = "min_test") -> list[str]:
    """One generated sentence per paired comparison with at least two seeds."""
    lines = []
    for _, row in paired[paired["metric"] == metric].iterrows():
        if row["n pairs"] < 2:
            continue
        low, high = row["95% CI low"], row["95% CI high"]
        verdict = ("excludes 0: " + ("worse than" if low > 0 else "better than") + f" {row['baseline']}"
                   if low > 0 or high < 0 else "includes 0: not resolved with these seeds")
        scale = 100 / row["baseline mean"]
        line = (f"{row['layers']} layer(s), {row['label']} − {row['baseline']} ({METRICS[metric]}, "
                f"{row['n pairs']} seeds): {row['mean difference']:+.2f} [{low:+.2f}, {high:+.2f}] PPL, "
                f"{row['mean difference'] * scale:+.2f}% [{low * scale:+.2f}%, {high * scale:+.2f}%] of the "
                f"baseline; better on {row['seeds better']:.0f} of {row['n pairs']} seeds — the interval {verdict}")
        published = published_relative(row["layers"], row["variant"]) if row["baseline"] == "AdaBelief" else None
        if published is not None and metric == "min_test":
            inside = low * scale <= published <= high * scale
            line += (f"; the published difference, {published:+.2f}%, lies "
                     + ("inside it." if inside else "outside it."))
        lines.append(line + ("" if line.endswith(".") else "."))
    return lines


def conclusions(runs, metric: str = "min_test") -> list[str]:
    """Sentences that judge the results, generated from the numbers."""
    from .optim import F_LABELS

    lines = []
    sound = metric == "test_at_best_valid"
    what = METRICS[metric]
    for layers in sorted(runs["layers"].unique()):
        table = study_table(runs, layers)
        if table.empty or "adabelief" not in set(table["variant"]):
            lines.append(f"{layers} layer(s): no finished AdaBelief baseline yet; nothing to compare.")
            continue
        from .grid import STUDY_VARIANTS
        t = table[table["variant"].isin(STUDY_VARIANTS)].set_index("variant")  # ablations: paired lines
        base, base_std = t.loc["adabelief", f"{metric} mean"], t.loc["adabelief", f"{metric} std"]
        seeds = sorted(set(t["n seeds"]))
        note = "" if len(seeds) == 1 else f" (seed counts differ: {', '.join(map(str, seeds))})"
        best = t[f"{metric} mean"].idxmin()
        gap = t.loc[best, f"{metric} mean"] - base
        spread = t[f"{metric} std"].max()
        if len(t) == 1:
            verdict = "no other study variant has finished at this depth yet"
        elif best == "adabelief":
            verdict = "AdaBelief itself is the best of the study's variants"
        else:
            verdict = (f"{t.loc[best, 'label']} is the best of the study's variants, {abs(gap):.2f} below "
                       f"AdaBelief ({gap / base:+.1%}); "
                       + ("that is larger than" if abs(gap) > spread else "that is within")
                       + f" the largest seed standard deviation among them ({spread:.2f})")
        lines.append(f"{layers} layer(s), {what}: AdaBelief {base:.2f} (std {base_std:.2f}); {verdict}{note}.")
        lm = [v for v in ("lm-x2", "lm-x", "lm-sqrt", "lm-cbrt") if v in t.index]
        if len(lm) == 4:
            ours = sorted(lm, key=lambda v: -t.loc[v, f"{metric} mean"])
            ours_text = " > ".join(F_LABELS[v.removeprefix("lm-")] for v in ours)
            # for an excess loss below 1, x² shrinks the step least and ∛x most
            trend = ("; the stronger the modification, the better, monotonically in f" if ours == lm else
                     "; the stronger the modification, the worse, monotonically in f" if ours == lm[::-1] else "")
            if not sound:
                pub = sorted(lm, key=lambda v: -PUBLISHED[(layers, v)][1]) if (layers, "lm-x2") in PUBLISHED else None
                pub_text = " > ".join(F_LABELS[v.removeprefix("lm-")] for v in pub) if pub else "n/a"
                same = "the same as" if pub == ours else "not the same as"
                lines.append(f"  Ordering of f by {what} (worst to best): {ours_text}{trend}; published: {pub_text} — "
                             f"{same} the published order.")
            else:
                lines.append(f"  Ordering of f by {what} (worst to best): {ours_text}{trend}.")
    return lines


def save_table(table, name: str, folder: str | Path, floatfmt="g") -> list[Path]:
    """CSV (exact numbers) and Markdown side by side. The Markdown keeps six significant
    digits by default, so a p-value of 0.0036 or a residual of 8e-12 does not print as 0.00."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    atomic_write(csv_path, lambda tmp: table.to_csv(tmp, index=False))
    write_text(md_path, markdown_table(table, floatfmt) + "\n")
    return [csv_path, md_path]


def read_table(name: str, folder: str | Path):
    """A table ``save_table`` wrote earlier (its CSV), or None if there is none."""
    import pandas as pd

    path = Path(folder) / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() else None


def load_models(runs, vocab_size: int, checkpoint: str = "best_test"):
    """The finished runs' trained models, keyed by (layers, variant), in eval mode.

    Weights are not committed, so a fresh clone has none: runs whose ``<checkpoint>.pt``
    is missing are returned by name in the second value instead of failing.
    """
    import torch

    from .config import RunConfig
    from .train import build_model

    models, missing = {}, []
    duplicated = runs.duplicated(["layers", "variant"], keep=False)
    if duplicated.any():
        names = ", ".join(Path(d).name for d in runs.loc[duplicated, "run_dir"])
        raise ValueError(f"runs {names} share (layers, variant); select one seed first")
    for row in runs.itertuples():
        folder = Path(row.run_dir)
        weights = folder / f"{checkpoint}.pt"
        if not weights.is_file():
            missing.append(folder.name)
            continue
        model = build_model(RunConfig.from_json(folder / "config.json"), vocab_size)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=False)["model"])
        models[(row.layers, row.variant)] = model.eval()
    return models, missing


# a cell that reads as a number: signs, thousands commas, exponents, a trailing %
NUMBER = re.compile(r"[+−-]?[\d,]*\.?\d+(e[+-]?\d+)?%?")


def markdown_table(table, floatfmt=".2f") -> str:
    """A DataFrame as a Markdown table, each cell printed as it is: integers as integers,
    floats with ``floatfmt`` (one format, or one per column), text untouched (a p-value
    formatted as "0.012" or a signed "+1.26" is not re-read as a number), missing values
    as –. Columns of numbers, or of text that reads as one, are right-aligned."""
    import numpy as np
    import pandas as pd

    formats = list(floatfmt) if isinstance(floatfmt, (list, tuple)) else [floatfmt] * table.shape[1]

    def cell(value, fmt):
        if value is None or value is pd.NA or (isinstance(value, float) and value != value):
            return "–"
        if isinstance(value, (float, np.floating)):
            return format(value, fmt) if fmt else repr(float(value))
        return str(value).replace("|", "\\|")  # a bare | would start a new column

    columns = {name: [cell(v, fmt) for v in table[name].tolist()] for name, fmt in zip(table.columns, formats)}
    numeric = [all(NUMBER.fullmatch(v) for v in values if v != "–") for values in columns.values()]
    from tabulate import tabulate
    return tabulate(columns, headers="keys", tablefmt="pipe", disable_numparse=True,
                    colalign=["right" if n else "left" for n in numeric])


def show_table(table, floatfmt: str = ".2f", caption: str = "") -> None:
    """Display a table as Markdown, which renders in JupyterLab, the HTML and the PDF;
    ``caption`` (what to see in it) is numbered by the report build and set above it."""
    from IPython.display import Markdown, display

    from .document import META_KEY

    display(Markdown(markdown_table(table, floatfmt)), metadata={META_KEY: {"caption": caption}} if caption else None)


def show_lines(lines: list[str]) -> None:
    """Display generated sentences as a Markdown list (they wrap in every output format)."""
    from IPython.display import Markdown, display

    display(Markdown("\n".join(f"- {line}" for line in lines)))


def _pm(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}" if std == std else f"{mean:.2f}"


def format_study_table(table):
    """The columns of Tables 4.1–4.3 a reader needs, as text (mean ± std over seeds)."""
    import pandas as pd

    def published(values):
        return [f"{v:.1f}" if v == v else "–" for v in values]

    return pd.DataFrame({
        "variant": table["label"], "seeds": table["n seeds"],
        "min train PPL": [_pm(m, s) for m, s in zip(table["min_train mean"], table["min_train std"])],
        "published": published(table["published min_train"]),
        'min test PPL ("valid")': [_pm(m, s) for m, s in zip(table["min_test mean"], table["min_test std"])],
        "published ": published(table["published min_test"]),
        "test @ best valid": [_pm(m, s) for m, s in
                              zip(table["test_at_best_valid mean"], table["test_at_best_valid std"])],
    })


def format_paired(paired):
    """Paired differences against each row's baseline, as text."""
    import pandas as pd

    def ci(lo, hi):
        return f"[{lo:+.2f}, {hi:+.2f}]" if lo == lo else "–"

    return pd.DataFrame({
        "layers": paired["layers"], "variant": paired["label"], "against": paired["baseline"],
        "metric": paired["metric"].map({"min_test": "min test", "test_at_best_valid": "test @ best valid"}),
        "seeds": paired["n pairs"], "mean difference": paired["mean difference"].map("{:+.2f}".format),
        "95% CI": [ci(lo, hi) for lo, hi in zip(paired.get("95% CI low", []), paired.get("95% CI high", []))]
        if "95% CI low" in paired else "–",
        "% of baseline (95% CI)": [f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]" if lo == lo else f"{m:+.2f}" for m, lo, hi in
                                   zip(relative(paired, "mean difference"), relative(paired, "95% CI low"),
                                       relative(paired, "95% CI high"))],
        "published %": [f"{v:+.2f}" if v is not None and b == "AdaBelief" and m == "min_test" else "–"
                        for v, b, m in zip((published_relative(n, var) for n, var in zip(paired["layers"],
                                                                                          paired["variant"])),
                                           paired["baseline"], paired["metric"])],
        "p (paired t)": paired["p (paired t)"].map("{:.3f}".format) if "p (paired t)" in paired else "–",
        "better on": [f"{b:.0f} of {n}" if b == b else "–" for b, n in
                      zip(paired.get("seeds better", [float("nan")] * len(paired)), paired["n pairs"])],
    })


# Seed texts of the study's Appendix C (Tables C.1 and C.2). The second reads "now over" in
# the thesis's seed column, but its generated rows (and PTB's validation text) read "over now".
APPENDIX_C_PROMPTS = (
    "makes some executives nervous <eos> last year the research",
    "those days are over now he believes <eos> competition from",
    "why would he ever",
    "neither the environmental protection agency nor the",
    "futures prices had been headed up on expectations that world oil demand will continue to be "
    "strong <eos> the organization of petroleum",
    "the group had an operating profit",
    "that fund was put together by blackstone group a new york investment bank <eos> the latest two "
    "funds were assembled jointly by",
    "blue arrow was able to pull off the $",
)


README_START, README_END = "<!-- results:{profile}:start -->", "<!-- results:{profile}:end -->"


def decay_factors(runs, profile: str):
    """The ``adabelief-wdx2`` ablation's decay factors, traced to the runs they came from.

    Per (layers, seed): the matching ``lm-x2`` run's mean LM scale (mean over epochs of the
    epoch's mean 1/(f((U − c)_+) + 1)), the factor D = 1 / that mean, and the L2 decay the
    ablation run actually used divided by the profile's, which must equal D.
    """
    import pandas as pd

    from .config import RunConfig, make_config
    from .grid import x2_decay_factor, x2_source_run

    rows = []
    for _, run in runs[(runs["variant"] == "adabelief-wdx2")].iterrows():
        layers, seed = int(run["layers"]), int(run["seed"])
        source = x2_source_run(profile, layers, seed, Path(run["run_dir"]).parents[2])
        config_path = Path(run["run_dir"]) / "config.json"
        if not config_path.is_file() or not (source / "metrics.csv").is_file():
            continue
        factor = x2_decay_factor(source)
        used = RunConfig.from_json(config_path).wdecay / make_config(profile, layers=layers).wdecay
        rows.append({"layers": layers, "seed": seed, "source run": source.name,
                     "mean LM scale": 1.0 / factor, "factor D = 1/scale": factor,
                     "decay used / profile decay": used, "status": run["status"]})
    return pd.DataFrame(rows, columns=["layers", "seed", "source run", "mean LM scale", "factor D = 1/scale",
                                       "decay used / profile decay", "status"])


def readme_results(profile: str, root: str | Path | None = None) -> str:
    """The README's results block for a profile, generated from the run folders and the
    tables/conclusions notebook 04 wrote (nothing in it is typed by hand)."""
    import pandas as pd

    from .config import PROFILES
    from .grid import results_root

    root = Path(root) if root else results_root()
    runs, _ = collect_runs(profile, root)
    done = runs[runs["status"] == "finished"]
    parts = [f"Profile `{profile}`: {PROFILES[profile].description}", ""]
    sittings = root / profile / "grid_sittings.csv"
    wall = pd.read_csv(sittings)["wall_minutes"].sum() / 60 if sittings.is_file() else float("nan")
    parts.append(f"{len(done)} finished runs ({runs['variant'].nunique()} variants); "
                 f"{done['hours'].sum():.1f} hours of training and evaluation summed over runs"
                 + (f", {wall:.1f} hours of wall time for the grid sittings logged in "
                    f"`results/{profile}/grid_sittings.csv`." if wall == wall else "."))
    headline = figures_dir(profile) / "fig0_headline_paired_differences.png"
    if headline.is_file():
        parts += ["", f"![Each variant minus AdaBelief at `{profile}` scale, paired by seed, with 95% intervals and "
                  f"the published differences]({headline.relative_to(project_dir()).as_posix()})", "",
                  "*The headline (notebook 04): per depth, each variant minus AdaBelief over the seeds they "
                  "share, in percent of AdaBelief's perplexity (the scale on which a reduced profile and the "
                  "study compare) — dot the mean, bar the 95% t-interval; filled: min test PPL, open: test PPL "
                  "at the best-valid epoch; red diamond: the published difference (min test). Left of zero the "
                  "variant is better.*"]
    for layers in sorted(done["layers"].unique()):
        k = {1: 1, 2: 2, 3: 3}.get(layers, layers)
        parts += ["", f"**Table 4.{k} at `{profile}` scale, {layers}-layer LSTM** (mean ± std over seeds; "
                  f"published: {PUBLISHED_SOURCE}, paper scale)", "",
                  format_study_table(study_table(runs, layers)).to_markdown(index=False)]
    same = (done["best_valid_epoch"] == done["min_test_epoch"]).sum()
    last = ((done["best_valid_epoch"] == done["epochs"]) & (done["min_test_epoch"] == done["epochs"])).sum()
    parts += ["", f"The best-valid epoch is also the epoch of minimum test perplexity in {same} of the "
              f"{len(done)} runs (the last epoch in {last}); in those runs \"test @ best valid\" equals the "
              "published selection, the minimum over epochs" + (", so at this scale the test-set selection "
              "that notebook 06 sizes moves no number." if same == len(done) else ".")]
    factors = decay_factors(runs, profile)
    if len(factors):
        d = factors["factor D = 1/scale"]
        parts += ["", f"The `adabelief-wdx2` ablation multiplies AdaBelief's L2 decay by D = 1 / (mean LM "
                  f"scale of the matching x² run, same depth and seed), read from that run's `metrics.csv`: "
                  f"D = {d.min():.4f}–{d.max():.4f} over its {len(factors)} runs "
                  f"(`results/{profile}/tables/wdx2_factors.csv`)."]
    conclusions_md = root / profile / "tables" / "conclusions.md"
    if conclusions_md.is_file():
        parts += ["", "What notebook 04 concludes from these numbers (quoted from "
                  f"`results/{profile}/tables/conclusions.md`):", "", conclusions_md.read_text(encoding="utf-8").strip()]
    return "\n".join(parts)


def update_readme(profile: str, readme: str | Path | None = None, root: str | Path | None = None) -> bool:
    """Replace the README block between the profile's results markers; whether it changed."""
    readme = Path(readme) if readme else project_dir() / "README.md"
    return replace_block(readme, README_START.format(profile=profile), README_END.format(profile=profile),
                         lambda: readme_results(profile, root))
