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

import pandas as pd

GAP_RATIO = 0.9
DROP_MOVE = 0.01
LAST_FIFTH_GAIN = 0.01

# name -> RunConfig overrides on top of the converged profile (seed and depth are the run's)
_A = dict(emsize=200, nhid=400, max_train_tokens=100_000, epochs=16, when=[9, 13])
CANDIDATES: dict[str, dict] = {
    # 200/400 model, first 100k training tokens, 16 epochs, drops before 9 and 13
    "A": _A,
    # the same with the deeper models' lr 1e-2 for the 1-layer model (published: 1e-3)
    "Alr": {**_A, "lr": 1e-2},
}


def candidate_config(candidate: str, layers: int, seed: int, root: str | Path, **runtime):
    """The RunConfig of one pilot run: the converged profile with the candidate's values."""
    from .config import make_config

    if candidate not in CANDIDATES:
        raise ValueError(f"candidate={candidate!r} is invalid: one of {', '.join(CANDIDATES)}")
    run_dir = Path(root) / candidate / f"L{layers}-adabelief-s{seed}"
    return make_config("converged", layers=layers, seed=seed, run_dir=str(run_dir),
                       **CANDIDATES[candidate], **runtime)


def run_pilot(candidate: str, layers=(1, 2, 3), seeds=(141,), root: str | Path = ".", threads: int | None = None,
              progress: bool = True) -> list[Path]:
    """Train (or resume, or skip if finished) a candidate's baseline runs, one at a time."""
    from .train import train

    configs = [candidate_config(candidate, n, s, root, threads=threads, progress=progress)
               for n in layers for s in seeds]  # every config checked before any run starts
    return [train(c) for c in configs]


def scaled_when(epochs: int) -> list[int]:
    """The study's lr drops (before epochs 100 and 145 of 200) at the same fractions of
    ``epochs``: 99, 45 and 56 epochs scaled and rounded (8 -> [5, 7], 16 -> [9, 13])."""
    return [round(epochs * 99 / 200) + 1, round(epochs * 144 / 200) + 1]


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
    """One row per pilot run found under ``root/<candidate>/<run>/``, scored; plus, per
    candidate, whether its depths are in the study's order (criterion 4)."""
    from .config import RunConfig
    from .train import read_metrics, read_status

    rows = []
    for config_path in sorted(Path(root).glob("*/*/config.json")):
        run = config_path.parent
        config = RunConfig.from_json(config_path)
        row = {"candidate": run.parent.name, "layers": config.layers, "seed": config.seed,
               "emsize": config.emsize, "nhid": config.nhid, "train tokens": config.max_train_tokens,
               "lr": config.lr, "status": read_status(run)["status"]}
        metrics = read_metrics(run)
        if len(metrics):
            row.update(run_checks(metrics, config.when))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    finished = table[table.status == "finished"]
    order = {}
    for cand, group in finished.groupby("candidate"):
        means = group.groupby("layers")["min test"].mean()
        order[cand] = (bool(means.get(3, math.inf) < means.get(2, math.inf) < means.get(1, math.inf))
                       if {1, 2, 3} <= set(means.index) else pd.NA)
    table["depth order"] = table.candidate.map(order)
    return table
