"""Is a reduced-scale run in the study's regime? The criteria of issue #17, and its pilot.

The study's claim is about converged training (200 epochs, the last lr drop 56 epochs
before the end), so a reduced profile only answers it if its AdaBelief baseline shows the
same regime. Four checks, per run unless said otherwise:

1. converged: the test minimum comes before the last epoch, or the last fifth of the
   epochs improves test perplexity by less than 1%;
2. generalisation gap: at the best (min test) epoch the training perplexity is clearly
   below the test perplexity, train/test <= ``GAP_RATIO`` (study: 57.8/84.3 = 0.69 at
   one layer, 36.8/61.2 = 0.60 at three);
3. lr drops: each drop comes at or before the best epoch, or moves the curve: the drop
   epoch's training perplexity falls by at least ``DROP_MOVE`` (relative) and by more than
   in the epoch before it;
4. depth ordering (per candidate, mean over seeds): min test 3-layer < 2-layer < 1-layer.

The pilot trains the baseline of a few candidate settings (``CANDIDATES``) into
``results/converged/pilot/<candidate>/``; ``pilot_table`` scores what is there.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .config import PROFILES
from .grid import STUDY_VARIANTS
from .report import ABLATION_PAIRS

if TYPE_CHECKING:
    from .config import RunConfig

GAP_RATIO = 0.9
DROP_MOVE = 0.01
LAST_FIFTH_GAIN = 0.01

def scaled_when(epochs: int) -> list[int]:
    """The study's lr drops (before epochs 100 and 145 of 200) at the same fractions of
    ``epochs``: 99, 45 and 56 epochs scaled and rounded (8 -> [5, 7], 16 -> [9, 13])."""
    return [round(epochs * 99 / 200) + 1, round(epochs * 144 / 200) + 1]


_B = dict(emsize=128, nhid=256, max_train_tokens=200_000, epochs=30, when=scaled_when(30), test_batch_size=10)
# name -> RunConfig overrides of the study's settings (seed and depth are the run's)
_A = dict(emsize=200, nhid=400, max_train_tokens=100_000, epochs=16, when=[9, 13])
CANDIDATES: dict[str, dict] = {
    # 200/400 model, first 100k training tokens, 16 epochs, drops before 9 and 13
    "A": _A,
    # the same with the deeper models' lr 1e-2 for the 1-layer model (published: 1e-3)
    "Alr": {**_A, "lr": 1e-2},
    # a smaller model (128/256) seeing twice the tokens per epoch for 30 epochs, so that about
    # 2200 steps come before the first drop; test scored at batch 10 like valid, which
    # halves the evaluation time (batch 1 is the published test)
    "B": _B,
    # the same with lr 1e-2 at one layer too: at lr 1e-3 the 1-layer model of B is still
    # underfitting after 30 epochs (train/test 0.98); its 2- and 3-layer runs are B's
    "Blr": {**_B, "lr": 1e-2},
    # Blr with less dropout between layers (0.25 -> 0.1), the dropout that grows with depth:
    # B's 3-layer model trails its 2-layer one; its 1-layer run is Blr's (no such dropout)
    "C": {**_B, "lr": 1e-2, "dropouth": 0.1},
    # Blr trained 1.5x longer (45 epochs, drops before 23 and 33): do more updates separate
    # the 3-layer model from the 2-layer one, which is flat by the end of 30 epochs?
    "D": {**_B, "lr": 1e-2, "epochs": 45, "when": scaled_when(45)},
}

# The candidate the converged profile (config.PROFILES["converged"]) was set to; a test
# keeps the two equal.
PROFILE_CANDIDATE = "D"


def candidate_config(candidate: str, layers: int, seed: int, root: str | Path, **runtime):
    """The RunConfig of one pilot run: the study's settings with the candidate's values,
    under the name of the converged profile. Built from the paper values rather than from
    the converged profile, so that a candidate stays what it was when the profile moves to
    the chosen one (lr and eps: the published per-depth values unless the candidate sets lr)."""
    from dataclasses import replace

    from .config import make_config

    if candidate not in CANDIDATES:
        raise ValueError(f"candidate={candidate!r} is invalid: one of {', '.join(CANDIDATES)}")
    run_dir = Path(root) / candidate / f"L{layers}-adabelief-s{seed}"
    config = make_config("paper", layers=layers, seed=seed, **CANDIDATES[candidate])
    return replace(config, profile="converged", run_dir=str(run_dir), **runtime).validate()


def pilot_runs(root: str | Path) -> dict[Path, RunConfig]:
    """Every pilot run folder under ``root/<candidate>/`` and its config, and the converged
    grid's finished runs beside it (``root/../runs/``): once a candidate is the profile, the grid's
    AdaBelief runs of more seeds are that candidate's pilot runs too (same settings)."""
    from .config import RunConfig

    from .train import read_status

    root = Path(root)
    grid = [p for p in sorted((root.parent / "runs").glob("*/config.json"))
            if read_status(p.parent)["status"] == "finished"]  # one in flight is the grid's business
    found = sorted(root.glob("*/*/config.json")) + grid
    runs, seen = {}, set()
    for path in found:  # a grid run that links to a pilot run is that one run, listed once
        if path.resolve() not in seen:
            seen.add(path.resolve())
            runs[path.parent] = RunConfig.from_json(path)
    return runs


def acting_settings(config) -> dict:
    """The settings that decide a run's numbers: ``science()`` less dropouth for a 1-layer
    model, which has no layer-to-layer dropout (model.AWDLSTM applies it between layers)."""
    science = config.science()
    if config.layers == 1:
        science.pop("dropouth")
    return science


def shared_run(config, runs: dict) -> Path | None:
    """A run folder (of any candidate) that trained what ``config`` would: candidates that
    agree at a depth share its run instead of training it twice."""
    for run, other in runs.items():
        if acting_settings(other) == acting_settings(config):
            return run
    return None


def run_pilot(candidate: str, layers=(1, 2, 3), seeds=(141,), root: str | Path = ".", threads: int | None = None,
              progress: bool = True) -> list[Path]:
    """Train (or resume, or skip if finished) a candidate's baseline runs, one at a time; a
    run another candidate already has (same settings) is not trained again."""
    from .train import train

    configs = [candidate_config(candidate, n, s, root, threads=threads, progress=progress)
               for n in layers for s in seeds]  # every config checked before any run starts
    done = []
    for config in configs:
        elsewhere = shared_run(config, {r: c for r, c in pilot_runs(root).items() if r != Path(config.run_dir)})
        done.append(elsewhere if elsewhere else train(config))
    return done


def run_checks(metrics: pd.DataFrame, when: list[int]) -> dict:
    """The per-run criteria (1-3) on one run's metrics.csv."""
    m = metrics.set_index("epoch")
    last = int(m.index.max())
    best = int(m["test_ppl"].idxmin())
    fifth_start = last - max(1, round(last / 5))
    gain = 1 - m.loc[last, "test_ppl"] / m.loc[fifth_start, "test_ppl"]
    ratio = m.loc[best, "train_ppl"] / m.loc[best, "test_ppl"]

    def moves(drop: int) -> bool:
        if drop not in m.index or drop - 1 not in m.index:
            return False
        fall = 1 - m.loc[drop, "train_ppl"] / m.loc[drop - 1, "train_ppl"]
        before = 1 - m.loc[drop - 1, "train_ppl"] / m.loc[drop - 2, "train_ppl"] if drop - 2 in m.index else -math.inf
        return fall >= DROP_MOVE and fall > before

    drops = [d <= best or moves(d) for d in when]
    return {"epochs": last, "best epoch": best, "min test": float(m.loc[best, "test_ppl"]),
            "train at best": float(m.loc[best, "train_ppl"]), "train/test": float(ratio),
            "last-fifth gain": float(gain),
            "converged": bool(best < last or gain < LAST_FIFTH_GAIN),
            "gap": bool(ratio <= GAP_RATIO), "drops": bool(all(drops)),
            "epoch s": float(m["seconds"].mean())}


def pilot_table(root: str | Path) -> pd.DataFrame:
    """One row per (candidate, run) for the runs under ``root/<candidate>/<run>/``, scored; a
    run counts for every candidate whose settings it trained (``folder`` says where it is);
    plus, per candidate, whether its depths are in the study's order (criterion 4)."""
    from .train import read_metrics, read_status

    runs = pilot_runs(root)
    rows = []
    for candidate in CANDIDATES:
        for run, config in runs.items():
            if acting_settings(config) != acting_settings(candidate_config(candidate, config.layers, config.seed, root)):
                continue
            row = {"candidate": candidate, "layers": config.layers, "seed": config.seed,
                   "emsize": config.emsize, "nhid": config.nhid, "train tokens": config.max_train_tokens,
                   "lr": config.lr, "folder": f"{run.parent.name}/{run.name}", "status": read_status(run)["status"]}
            metrics = read_metrics(run)
            if len(metrics):
                row.update(run_checks(metrics, config.when))
            rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values(["layers", "seed"], kind="stable").sort_values(
        "candidate", key=lambda c: c.map(list(CANDIDATES).index), kind="stable").reset_index(drop=True)
    finished = table[table.status == "finished"]
    order = {}
    for cand, group in finished.groupby("candidate"):
        means = group.groupby("layers")["min test"].mean()
        order[cand] = (bool(means.get(3, math.inf) < means.get(2, math.inf) < means.get(1, math.inf))
                       if {1, 2, 3} <= set(means.index) else pd.NA)
    table["depth order"] = table.candidate.map(order)
    return table


def profile_regime(runs: pd.DataFrame, epochs: pd.DataFrame, profile: str,
                   baseline: str = "adabelief") -> tuple[pd.DataFrame, list[str]]:
    """The criteria on a profile's finished ``baseline`` runs (``report.collect_runs``'s two
    frames), one row per run, and sentences on criterion 4 and on how many runs of every
    variant still have their test minimum at the last epoch (a proxy's mark: the late phase
    the study's claim is about never came)."""
    from .config import make_config

    done = runs[runs.status == "finished"]
    rows = []
    for r in done[done.variant == baseline].sort_values(["layers", "seed"]).itertuples():
        own = epochs[(epochs.layers == r.layers) & (epochs.variant == r.variant) & (epochs.seed == r.seed)]
        checks = run_checks(own, make_config(profile, layers=int(r.layers)).when)
        rows.append({"layers": r.layers, "seed": r.seed, **{k: v for k, v in checks.items() if k != "epoch s"}})
    table = pd.DataFrame(rows)
    lines = []
    if len(table):
        means = table.groupby("layers")["min test"].mean()
        text = ", ".join(f"{means[n]:.2f} at {n} layer{'s' * (n > 1)}" for n in sorted(means.index))
        if {1, 2, 3} <= set(means.index):
            ordered = means[3] < means[2] < means[1]
            lines.append(f"Depth order (criterion 4): mean min test PPL {text}; "
                         + ("3 < 2 < 1 layers, as in the study." if ordered else "not the study's 3 < 2 < 1."))
        else:
            lines.append(f"Depth order (criterion 4): not decided, finished baselines at {text} only.")
        meet = int((table.converged & table.gap & table.drops).sum())
        misses = [f"{name} in {n}" for name in ("converged", "gap", "drops") if (n := int((~table[name]).sum()))]
        lines.append(f"{meet} of {len(table)} finished {baseline} runs meet criteria 1-3"
                     + (f" (failed: {', '.join(misses)})." if misses else "."))
    keys = set(zip(done.layers, done.variant, done.seed))
    finished = [g for key, g in epochs.groupby(["layers", "variant", "seed"]) if key in keys] if len(epochs) else []
    if finished:
        at_last = sum(int(g.test_ppl.idxmin() == g.epoch.idxmax()) for g in finished)
        lines.append(f"Test minimum at the last epoch in {at_last} of {len(finished)} finished runs (every variant).")
    return table, lines


README_START, README_END = "<!-- pilot:begin -->", "<!-- pilot:end -->"


def describe(candidate: str) -> str:
    """A candidate's settings in words, from its overrides (nothing typed by hand)."""
    c = CANDIDATES[candidate]
    parts = [f"{c['emsize']}/{c['nhid']}", f"first {c['max_train_tokens'] // 1000}k tokens",
             f"{c['epochs']} epochs", "lr/10 before " + " and ".join(map(str, c["when"]))]
    if "dropouth" in c:
        parts.append(f"dropouth {c['dropouth']:g}")
    if c.get("test_batch_size", 1) != 1:
        parts.append(f"test at batch {c['test_batch_size']}")
    parts.append(f"lr {c['lr']:g} at every depth" if "lr" in c else "published lr (1e-3 at 1 layer, 1e-2 deeper)")
    return ", ".join(parts)


def pilot_markdown(root: str | Path) -> str:
    """The README's pilot block: each candidate in words, then every run scored."""
    table = pilot_table(root)
    if table.empty:
        raise ValueError(f"--root {root}: no pilot runs there (folders <candidate>/<run>/config.json)")
    yes = {True: "yes", False: "no"}
    lines = [f"- **{c}**: {describe(c)}" for c in CANDIDATES if c in set(table.candidate)]
    lines += ["", "| candidate | layers | seed | status | epochs | best epoch | min test PPL | train PPL at best "
              "| train/test | last-fifth gain | converged | gap | drops | depth order | epoch s | run folder |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        if pd.isna(r.get("best epoch")):  # started, no epoch finished yet
            lines.append(f"| {r['candidate']} | {r['layers']} | {r['seed']} | {r['status']} | 0 |"
                         + " – |" * 10 + f" `{r['folder']}` |")
            continue
        order = r["depth order"]
        lines.append(
            f"| {r['candidate']} | {r['layers']} | {r['seed']} | {r['status']} | {r['epochs']:.0f} | {r['best epoch']:.0f} "
            f"| {r['min test']:.1f} | {r['train at best']:.0f} | {r['train/test']:.2f} | {100 * r['last-fifth gain']:.2f}% "
            f"| {yes[bool(r['converged'])]} | {yes[bool(r['gap'])]} | {yes[bool(r['drops'])]} "
            f"| {'–' if pd.isna(order) else yes[bool(order)]} | {r['epoch s']:.0f} | `{r['folder']}` |")
    return "\n".join(lines)


def update_readme(readme: str | Path, root: str | Path) -> bool:
    """Re-render the README's pilot block from the pilot runs under ``root``."""
    from .files import replace_block

    return replace_block(readme, README_START, README_END, lambda: pilot_markdown(root))


def seeds_needed(sd: float, baseline: float, target: float = 0.01, most: int = 30) -> int | None:
    """The fewest seeds n whose paired 95% t-interval, t(0.975, n-1) * sd / sqrt(n), is at most
    ``target`` of the baseline perplexity (None if more than ``most``)."""
    from scipy import stats

    for n in range(2, most + 1):
        if stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) <= target * baseline:
            return n
    return None


# The converged grid: the study's five variants and the three ablations the issue names (its plan's first block)
GRID_VARIANTS = PROFILES["converged"].grid_plan[0][1]
GRID_START, GRID_END = "<!-- converged-grid:begin -->", "<!-- converged-grid:end -->"


def grid_progress(results: str | Path, profile: str = "converged", variants=GRID_VARIANTS) -> pd.DataFrame:
    """Per variant and depth: the planned seeds and how many of their runs finished."""
    from .grid import plan
    from .train import read_status

    results = Path(results)
    rows = []
    # a profile without a plan of its own: the variants asked for at the study's seeds
    planned = bool(PROFILES[profile].grid_plan)
    for job in plan(profile, variants=list(variants), root=results, check=False, planned=planned):
        rows.append({"variant": job.variant, "layers": job.layers, "seed": job.seed,
                     "finished": read_status(job.run_dir(results))["status"] == "finished"})
    return pd.DataFrame(rows)


def grid_markdown(results: str | Path, profile: str = "converged") -> str:
    """The README's grid-progress block: finished/planned runs per variant and depth, and the
    wall time of the grid sittings so far (``grid_sittings.csv``)."""
    progress = grid_progress(results, profile)
    table = progress.pivot_table(index="variant", columns="layers", values="finished", aggfunc=["sum", "count"],
                                 sort=False)
    lines = ["| variant | 1 layer | 2 layers | 3 layers |", "|---|---|---|---|"]
    for variant in dict.fromkeys(progress.variant):
        cells = [f"{int(table.loc[variant, ('sum', n)])}/{int(table.loc[variant, ('count', n)])}" for n in (1, 2, 3)]
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    sittings_path = Path(results) / profile / "grid_sittings.csv"
    sittings = pd.read_csv(sittings_path) if sittings_path.is_file() else pd.DataFrame()
    hours = sittings["wall_minutes"].sum() / 60 if len(sittings) else 0.0
    lines += ["", f"{int(progress.finished.sum())} of {len(progress)} planned runs finished; "
              f"{len(sittings)} grid sitting(s) so far, {hours:.1f} h of wall time in all "
              f"(`results/{profile}/grid_sittings.csv`)."]
    paired = interim_paired(results, profile)
    tables = [] if paired.empty else [
        ("Interim paired differences (minimum test PPL, variant − AdaBelief by seed, two-sided 95% t-interval) "
         "over the seeds at which all five study variants of a depth have finished (at least three; the "
         "planned grid adds seeds one at a time), until the report's statistics cover the whole grid:", paired),
        ("The seeds the measured paired spread asks for (`regime.seeds_from_spread`: the sd of the paired "
         "differences pooled over the variants in the table above, against a 95% interval of 1% of the "
         "AdaBelief mean), and what the planned grid's seeds (`grid --planned`) give at that spread:",
         seeds_from_spread(results, profile))]
    own = ", ".join(f"`{variant}` against `{baseline}`" for variant, baseline in ABLATION_PAIRS)
    tables.append(("Interim ablations, the same statistics at the depths where an ablation is complete: each "
                   f"against AdaBelief and against its own reference ({own}):", interim_ablations(results, profile)))
    for caption, table in tables:
        if len(table):
            lines += ["", caption, "", table.to_markdown(index=False, disable_numparse=True)]
    return "\n".join(lines)


def _complete_runs(results: str | Path, profile: str, variants=STUDY_VARIANTS) -> pd.DataFrame:
    """The finished runs of ``variants`` that pair into a fixed set at each depth.

    A study variant counts at the seeds where all five study variants have finished (the
    planned grid adds seeds one at a time, so this set grows by whole seeds and every variant
    pairs over the same seeds). An ablation counts once all its planned seeds have finished,
    at seeds where the study's five have too. A depth with fewer than the study's three
    seeds so complete shows nothing, so no interval comes from a changing handful of runs."""
    from .report import collect_runs

    progress = grid_progress(results, profile, variants=GRID_VARIANTS)
    keep: set[tuple[int, str, int]] = set()
    for layers, depth in progress.groupby("layers"):
        study = depth[depth.variant.isin(STUDY_VARIANTS)].groupby("seed").finished
        seeds = {s for s, done in (study.all() & (study.count() == len(STUDY_VARIANTS))).items() if done}
        if len(seeds) < 3:
            continue
        for variant, mine in depth[depth.variant.isin(variants)].groupby("variant"):
            if variant in STUDY_VARIANTS:
                keep |= {(layers, variant, s) for s in seeds}
            elif mine.finished.all() and set(mine.seed) <= seeds:
                keep |= {(layers, variant, s) for s in mine.seed}
    runs, _ = collect_runs(profile, results, variants=list(variants))
    return runs[[key in keep for key in zip(runs.layers, runs.variant, runs.seed)]]


def interim_paired(results: str | Path, profile: str = "converged") -> pd.DataFrame:
    """``report.format_paired`` rows of the study's variants at each complete depth."""
    from .report import format_paired, paired_against_baseline

    paired = paired_against_baseline(_complete_runs(results, profile))
    return format_paired(paired).drop(columns=["against", "metric"])


def interim_ablations(results: str | Path, profile: str = "converged") -> pd.DataFrame:
    """``report.format_paired`` rows of the ablations at each complete depth, minimum test PPL:
    each against AdaBelief, and against its own reference (``report.ABLATION_PAIRS``) where
    that reference is complete too."""
    from .report import format_paired, paired_comparisons

    paired = paired_comparisons(_complete_runs(results, profile, variants=GRID_VARIANTS), metrics=("min_test",))
    return format_paired(paired[~paired["variant"].isin(STUDY_VARIANTS)]).drop(columns=["metric"])


def seeds_from_spread(results: str | Path, profile: str = "converged", target: float = 0.01) -> pd.DataFrame:
    """Per depth with complete seeds (``_complete_runs``), the seed count the measured paired
    spread asks for: the sd of (variant - AdaBelief) by seed, pooled over the study's LM
    variants (root mean of their variances), the seeds whose 95% interval is at most
    ``target`` of the baseline mean, and the half-width the planned grid's seed count for
    that depth would give at that spread."""
    from scipy import stats

    runs = _complete_runs(results, profile)
    planned = grid_progress(results, profile, variants=("adabelief",)).groupby("layers").seed.nunique()
    rows = []
    for layers, depth in runs[runs.status == "finished"].groupby("layers"):
        base = depth[depth.variant == "adabelief"].set_index("seed")["min_test"]
        variances = [(group.set_index("seed")["min_test"] - base).dropna().var(ddof=1)
                     for variant, group in depth.groupby("variant") if variant != "adabelief"]
        if not variances:
            continue
        sd = math.sqrt(sum(variances) / len(variances))
        needed = seeds_needed(sd, base.mean(), target)
        n = int(planned.get(layers, len(base)))
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        rows.append({"layers": layers, "variants pooled": len(variances), "seeds each": len(base),
                     "AdaBelief mean": f"{base.mean():.2f}", "paired sd": f"{sd:.2f}",
                     f"seeds for a {target:.0%} interval": "more than 30" if needed is None else str(needed),
                     "planned seeds": str(n), "half-width at planned seeds": f"{half:.2f} ({half / base.mean():.1%})"})
    return pd.DataFrame(rows)


def update_grid_readme(readme: str | Path, results: str | Path) -> bool:
    """Re-render the README's converged-grid block from the run folders."""
    from .files import replace_block

    return replace_block(readme, GRID_START, GRID_END, lambda: grid_markdown(results))
