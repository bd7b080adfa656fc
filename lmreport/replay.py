"""Replay a finished run whose weights are gone, to measure what needs them.

Run folders are committed without their ``.pt`` files, and a session's machine may be
replaced before a finished run's sharpness was measured. Training is deterministic on a
CPU at a fixed thread count, so the weights can be had again by training the same
configuration once more. A replay is only trusted when it *is* the committed run:

1. Train ``config.json`` (same seed, same recorded thread count) into a scratch folder,
   ``results/<profile>/replay/<run>/`` (checkpointed: an interrupted replay resumes).
2. Compare its metrics.csv with the committed one on every column that is arithmetic
   (perplexities, LM statistics, lr, batches), requiring exact equality; timing columns
   are ignored. A mismatch writes nothing into the run folder and fails, naming the
   first differing epoch and column.
3. Measure the replay's weights (``sharpness.measure_run``) and store the result in the
   committed run folder's sharpness.json, with a note that it came from a verified replay.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .config import RunConfig
from .data import CommandFailed
from .files import write_text
from .sharpness import SharpnessConfig, cached_result, measure_run
from .train import read_status, train

# metrics.csv columns that depend on the machine's speed, not on the arithmetic
TIMING_COLUMNS = ("train_seconds", "tokens_per_s", "eval_seconds", "seconds", "threads", "device")


class ReplayMismatch(CommandFailed):
    """A replay did not reproduce the committed run's metrics."""


def replay_dir(run_dir: Path) -> Path:
    """results/<profile>/runs/<run> -> results/<profile>/replay/<run> (git-ignored)."""
    run_dir = Path(run_dir)
    return run_dir.parent.parent / "replay" / run_dir.name


def needs_replay(run_dir, checkpoint: str = "best_test", config: SharpnessConfig | None = None) -> bool:
    """A finished run with neither the weights nor a stored measurement for them."""
    run_dir = Path(run_dir)
    return (read_status(run_dir)["status"] == "finished" and not (run_dir / f"{checkpoint}.pt").is_file()
            and cached_result(run_dir, checkpoint, config or SharpnessConfig()) is None)


def first_difference(committed: pd.DataFrame, replayed: pd.DataFrame) -> str | None:
    """Where two metrics tables first differ on an arithmetic column, or None if nowhere."""
    columns = [c for c in committed.columns if c not in TIMING_COLUMNS]
    if list(replayed.columns) != list(committed.columns):
        return f"columns {list(replayed.columns)} instead of {list(committed.columns)}"
    if len(replayed) != len(committed):
        return f"{len(replayed)} epochs instead of {len(committed)}"
    for i in range(len(committed)):
        for column in columns:
            a, b = committed[column].iloc[i], replayed[column].iloc[i]
            if not (a == b or (pd.isna(a) and pd.isna(b))):
                return f"epoch {committed['epoch'].iloc[i]}, {column}: {b!r} instead of {a!r}"
    return None


def replay_and_measure(run_dir, checkpoint: str = "best_test", config: SharpnessConfig | None = None,
                       corpus=None, progress: bool = False) -> dict:
    """Steps 1-3 of the module docstring for one run; returns the stored measurement."""
    run_dir, config = Path(run_dir), config or SharpnessConfig()
    run = RunConfig.from_json(run_dir / "config.json")
    scratch = replay_dir(run_dir)
    replayed = train(replace(run, run_dir=str(scratch), progress=progress, save_best=True), corpus=corpus)
    status = read_status(replayed)
    if status["status"] != "finished":
        raise ReplayMismatch(f"replay of {run_dir.name} ended {status['status']!r}, not 'finished' ({replayed})")
    where = first_difference(pd.read_csv(run_dir / "metrics.csv"), pd.read_csv(replayed / "metrics.csv"))
    if where is not None:
        raise ReplayMismatch(f"replay of {run_dir.name} does not reproduce its metrics.csv ({where}); "
                             f"nothing was written to {run_dir}")
    result = dict(measure_run(replayed, checkpoint, config, corpus))
    result["replayed"] = {"metrics_identical": True, "ignored_columns": list(TIMING_COLUMNS),
                          "threads": run.threads}
    write_text(run_dir / "sharpness.json", json.dumps(result, indent=1) + "\n")
    return result
