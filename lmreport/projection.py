"""How long a grid will take, from epochs already measured on this kind of machine.

``project_grid`` is printed by ``grid`` before it starts: per depth, the runs left, their
epochs, and the measured seconds per epoch of runs with the same model settings (finished
or partly trained runs of the profile, else the pilot runs under ``results/converged/pilot``).
The wall time hands the runs, in the grid's order, each to the first of the ``parallel``
workers to come free, as the grid does: three equal runs two at a time take two runs'
time, not one and a half. Epochs already trained by an unfinished run are not counted again.
"""
from __future__ import annotations

import heapq
import statistics
from pathlib import Path

from .config import RunConfig
from .train import read_metrics

# what decides an epoch's cost (the optimizer and f barely do)
COST_FIELDS = ("layers", "emsize", "nhid", "batch_size", "bptt", "max_train_tokens", "max_eval_tokens",
               "eval_batch_size", "test_batch_size", "eval_mode")


def cost_key(config: RunConfig) -> tuple:
    return tuple(getattr(config, f) for f in COST_FIELDS)


def measured_epoch_seconds(folders) -> dict[tuple, float]:
    """cost key -> median seconds per epoch over the run folders that have epochs (one thread
    per run, as the grids of the 2-core machine run them)."""
    samples: dict[tuple, list[float]] = {}
    for folder in folders:
        path = Path(folder) / "config.json"
        if not path.is_file() or not (Path(folder) / "metrics.csv").is_file():
            continue
        metrics = read_metrics(folder)
        if not len(metrics) or "seconds" not in metrics:
            continue
        samples.setdefault(cost_key(RunConfig.from_json(path)), []).extend(metrics["seconds"].tolist())
    return {key: statistics.median(values) for key, values in samples.items()}


def project_grid(jobs, root: Path, parallel: int) -> dict:
    """Hours of training left and the wall time at ``parallel`` runs at once; per depth the
    runs, epochs left and seconds per epoch used (None where nothing like it was measured)."""
    folders = [p.parent for p in (root / jobs[0].profile / "runs").glob("*/config.json")] if jobs else []
    folders += [p.parent for p in (root / "converged" / "pilot").glob("*/*/config.json")]
    per_epoch = measured_epoch_seconds(folders)
    depths: dict[int, dict] = {}
    unknown = 0
    workers = [0.0] * max(1, parallel)  # when each worker comes free, in hours
    for job in jobs:
        config = job.config(root)
        done = len(read_metrics(job.run_dir(root))) if (job.run_dir(root) / "metrics.csv").is_file() else 0
        left = max(0, config.epochs - done)
        row = depths.setdefault(job.layers, {"runs": 0, "epochs left": 0, "epoch s": per_epoch.get(cost_key(config)),
                                             "hours": 0.0})
        row["runs"] += 1
        row["epochs left"] += left
        if row["epoch s"] is None:
            unknown += 1
        else:
            row["hours"] += left * row["epoch s"] / 3600
            heapq.heappush(workers, heapq.heappop(workers) + left * row["epoch s"] / 3600)
    hours = sum(r["hours"] for r in depths.values())
    return {"depths": depths, "hours": hours, "wall_hours": max(workers), "parallel": parallel,
            "runs_without_measurement": unknown}


def describe(projection: dict) -> str:
    """One line per depth, then the total, as ``grid`` prints it."""
    lines = []
    for layers, r in sorted(projection["depths"].items()):
        rate = f"{r['epoch s']:.0f} s per epoch" if r["epoch s"] is not None else "no epoch measured yet"
        lines.append(f"  {layers} layer(s): {r['runs']} runs, {r['epochs left']} epochs left, {rate}: "
                     f"{r['hours']:.1f} h")
    lines.append(f"  projected: {projection['hours']:.1f} h of training, {projection['wall_hours']:.1f} h wall "
                 f"with {projection['parallel']} at once"
                 + (f" (+ {projection['runs_without_measurement']} runs with nothing measured like them)"
                    if projection["runs_without_measurement"] else ""))
    return "\n".join(lines)
