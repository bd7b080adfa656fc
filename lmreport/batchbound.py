"""Would training K runs of one depth as one batched model be faster? A measured bound.

K runs with their own weights, stacked into one model, do K times the arithmetic of one
run: each matrix product becomes a batched product over K weight sets. The cheapest
that stacked step can be is one model trained at K times the batch, where the K products
even share their weights and merge into one larger product. So

    gain of batching K runs  <=  1 - t(step at batch K*B) / (K * t(step at batch B)),

and when the step at batch K*B costs K times the step at batch B (the step is bound by
arithmetic, not by per-kernel overhead) there is nothing for batching to win. ``bound``
measures both steps on the profile's model; ``bench --batch-bound K`` prints and records it.
"""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone

import torch

from .bench import bench_model, record_path
from .config import PROFILES, make_config
from .files import write_text
from .train import device_name, select_device


def bound(profile: str, layers: int, factor: int, steps: int = 8, warmup: int = 2,
          device: str = "auto") -> dict:
    """Step time at the profile's batch and at ``factor`` times it, and the bound above."""
    dev = select_device(device)
    batch = make_config(profile, layers=layers).batch_size
    one = bench_model(layers, profile, steps, warmup, eval_tokens=200, device=dev)
    big = bench_model(layers, profile, steps, warmup, eval_tokens=200, device=dev, batch_size=factor * batch)
    ratio = big["step_ms"] / one["step_ms"]
    return {"layers": layers, "batch_size": batch, "factor": factor, "step_ms": one["step_ms"],
            "step_ms_at_factor_batch": big["step_ms"], "cost_ratio": ratio,
            "max_gain_of_batching": max(0.0, 1 - ratio / factor)}


def run(profile: str = "converged", layers=(1, 2, 3), factor: int = 2, steps: int = 8, warmup: int = 2,
        device: str = "auto", threads: int | None = None, out: str | None = None) -> dict:
    """Measure the bound per depth, print a table, write a JSON record (default under
    ``results/bench/``)."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is invalid: one of {', '.join(PROFILES)}")
    for name, value, least in (("factor", factor, 2), ("steps", steps, 1), ("warmup", warmup, 0)):
        if value < least:
            raise ValueError(f"{name}={value} is invalid: an integer >= {least}")
    if not layers or any(n < 1 for n in layers):
        raise ValueError(f"layers={list(layers)} is invalid: one or more integers >= 1")
    if threads:
        torch.set_num_threads(threads)
    dev = select_device(device)
    now = datetime.now(timezone.utc)
    path = record_path(out, f"batch-bound-{dev.type}-{now:%Y%m%d-%H%M%S}.json")  # checked before measuring
    record = {"date": now.isoformat(timespec="seconds"), "device": str(dev), "device_name": device_name(dev),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "host": platform.node(), "profile": profile, "steps": steps, "warmup": warmup, "rows": []}
    print(f"{'layers':>6} {'batch':>6} {'step ms':>9} {f'at batch x{factor}':>14} {'cost ratio':>11} "
          f"{'batching gains at most':>23}")
    for n in layers:
        row = bound(profile, n, factor, steps, warmup, device)
        record["rows"].append(row)
        print(f"{n:>6} {row['batch_size']:>6} {row['step_ms']:>9.1f} {row['step_ms_at_factor_batch']:>14.1f} "
              f"{row['cost_ratio']:>11.2f} {100 * row['max_gain_of_batching']:>22.0f}%", flush=True)
    write_text(path, json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return record
