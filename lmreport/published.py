"""The study's published per-epoch logs: load, check, and recompute its tables from them.

The logs are the ``data/`` folder of the study's repository
(github.com/andrewswj/Improved-Adaptive-Optimization-Language-Modeling, commit 23f93af):
one file per run with columns ``train_ppl`` and ``valid_ppl`` — the latter is the TEST
split at batch size 1. Where they live is a setting, ``LMREPORT_PUBLISHED_LOGS``; without
it the git-ignored ``data/siow2024/`` of the checkout is used, and missing files are
downloaded there when the network allows. Files may carry a ``.csv`` ending or none.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

from .data import DataError, repo_root
from .files import write_bytes

REPO_RAW = ("https://raw.githubusercontent.com/andrewswj/"
            "Improved-Adaptive-Optimization-Language-Modeling/23f93af/data/")
F_FILES = {"x2": "xx", "x": "x", "sqrt": "sqrtx", "cbrt": "cuberoot"}
EXTRA_FILES = {  # seed 141 only, outside the published tables
    "lm-xminus1squaredplus1": "xminus1squaredplus1", "lm-piecewise1_xx": "piecewise1_xx"}
EXTRA_LAYERS = {"lm-xminus1squaredplus1": (2, 3), "lm-piecewise1_xx": (2,)}


def log_name(layers: int, variant: str, seed: int) -> str:
    """File name (without ending) of a published run, e.g. lstm_adabelief_lm_log_2layer_xx_seed6."""
    suffix = "" if seed == 141 else f"_seed{seed}"
    if variant == "adabelief":
        return f"lstm_adabelief_log_{layers}layer{suffix}"
    f = F_FILES.get(variant.removeprefix("lm-")) or EXTRA_FILES[variant]
    return f"lstm_adabelief_lm_log_{layers}layer_{f}{suffix}"


def published_runs() -> list[tuple[int, str, int]]:
    runs = [(n, v, s) for n in (1, 2, 3) for v in ("adabelief", "lm-x2", "lm-x", "lm-sqrt", "lm-cbrt")
            for s in (141, 6, 42)]
    runs += [(n, v, 141) for v, layers in EXTRA_LAYERS.items() for n in layers]
    return runs


def default_logs_dir() -> Path:
    env = os.environ.get("LMREPORT_PUBLISHED_LOGS")
    if env:
        return Path(env).expanduser()
    return (repo_root() or Path.cwd()) / "data" / "siow2024"


def _find(folder: Path, layers: int, name: str) -> Path | None:
    for candidate in (folder / f"{layers}layer" / f"{name}.csv", folder / f"{layers}layer" / name,
                      folder / f"{name}.csv", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _download(folder: Path, layers: int, name: str) -> Path:
    target = folder / f"{layers}layer" / f"{name}.csv"
    url = f"{REPO_RAW}{layers}layer/{name}"
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            body = resp.read()
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"published log {name} is not in {folder} and cannot be downloaded from "
                        f"{url} ({getattr(err, 'reason', err)}); set LMREPORT_PUBLISHED_LOGS to a copy "
                        f"of the study's data/ folder") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(target, body)


def load_published_logs(folder: str | Path | None = None, download: bool = True) -> pd.DataFrame:
    """All published runs as one tidy table: layers, variant, seed, epoch, train_ppl,
    test_ppl (the published "valid"), file, md5."""
    folder = Path(folder) if folder else default_logs_dir()
    frames = []
    for layers, variant, seed in published_runs():
        name = log_name(layers, variant, seed)
        path = _find(folder, layers, name)
        if path is None:
            if not download:
                raise DataError(f"published log {name} is not in {folder}; set LMREPORT_PUBLISHED_LOGS")
            path = _download(folder, layers, name)
        raw = path.read_bytes()
        table = pd.read_csv(path).rename(columns={"valid_ppl": "test_ppl"})
        table.insert(0, "epoch", range(1, len(table) + 1))
        frames.append(table.assign(layers=layers, variant=variant, seed=seed, file=name,
                                   md5=hashlib.md5(raw).hexdigest()))
    return pd.concat(frames, ignore_index=True)


def duplicates(logs: pd.DataFrame) -> list[list[str]]:
    """Groups of files with identical bytes."""
    files = logs.drop_duplicates("file")[["file", "md5"]]
    groups = files.groupby("md5")["file"].apply(list)
    return [sorted(g) for g in groups if len(g) > 1]


def run_minima(logs: pd.DataFrame) -> pd.DataFrame:
    """Per run: min train, min test (the published metric), last-epoch test, epochs."""
    g = logs.groupby(["layers", "variant", "seed", "file"], sort=False)
    return g.agg(epochs=("epoch", "max"), min_train=("train_ppl", "min"), min_test=("test_ppl", "min"),
                 last_test=("test_ppl", "last"),
                 min_test_epoch=("test_ppl", lambda s: int(logs.loc[s.idxmin(), "epoch"]))).reset_index()


def log_gap(logs: pd.DataFrame, column: str, variant: str, seed: int, layers: int = 1,
            baseline: str = "adabelief"):
    """Per epoch, log(column of ``variant`` / column of ``baseline``) for one seed and depth:
    how far a published run sits from the same seed's AdaBelief run (numpy array)."""
    import numpy as np

    table = logs.sort_values(["layers", "variant", "seed", "epoch"]).set_index(["layers", "variant", "seed"])
    return np.log(table.loc[(layers, variant, seed), column].values
                  / table.loc[(layers, baseline, seed), column].values)
