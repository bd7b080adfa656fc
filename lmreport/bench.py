"""Speed of the paper-size models on this machine: ``python -m lmreport bench``.

For each depth: training tokens/s of the full step the study ran (batch 20, bptt 70,
AdaBelief-LM with the running-minimum c, clipping, AR/TAR, weight drop), and tokens/s
of the batch-1 test evaluation. Inputs are random token ids, so no corpus is needed.
Prints a table and writes JSON (device, torch version, threads) under results/bench/.
"""
from __future__ import annotations

import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .config import make_config
from .data import repo_root
from .model import repackage_hidden
from .train import build_model, build_optimizer, evaluate, select_device, train_step, tune_cpu_allocator

VOCAB = 10_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(layers: int, steps: int = 8, warmup: int = 2, eval_tokens: int = 5600,
                device: torch.device | None = None) -> dict:
    device = device or select_device("auto")
    config = make_config("paper", layers=layers, optimizer="adabelief-lm", f="sqrt", seed=0)
    torch.manual_seed(0)
    model = build_model(config, VOCAB).to(device)
    params = list(model.parameters())
    optimizer, lm = build_optimizer(config, params)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(VOCAB, (config.bptt + 1, config.batch_size), generator=gen).to(device)
    data, targets = tokens[:-1], tokens[1:].reshape(-1)
    hidden = model.init_hidden(config.batch_size)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        _, _, hidden = train_step(model, optimizer, lm, data, targets, repackage_hidden(hidden),
                                  config, params)
    _sync(device)
    train_s = time.perf_counter() - start
    test = torch.randint(VOCAB, (eval_tokens, 1), generator=gen).to(device)
    evaluate(model, test[: config.bptt * 2], config.bptt)  # warm-up
    _sync(device)
    start = time.perf_counter()
    evaluate(model, test, config.bptt)
    _sync(device)
    eval_s = time.perf_counter() - start
    return {"layers": layers, "train_tokens_per_s": steps * data.numel() / train_s,
            "step_ms": 1000 * train_s / steps, "test_eval_tokens_per_s": eval_tokens / eval_s}


def run_bench(layers=(1, 2, 3), steps: int = 8, warmup: int = 2, eval_tokens: int = 5600,
              device: str = "auto", threads: int | None = None, out: str | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    tuned = tune_cpu_allocator()
    dev = select_device(device)
    rows = []
    print(f"device {dev} | torch {torch.__version__} | threads {torch.get_num_threads()}")
    print(f"{'layers':>6} {'train tok/s':>12} {'step ms':>9} {'test-eval tok/s':>16}")
    for n in layers:
        row = bench_model(n, steps, warmup, eval_tokens, dev)
        rows.append(row)
        print(f"{n:>6} {row['train_tokens_per_s']:>12,.0f} {row['step_ms']:>9,.0f} "
              f"{row['test_eval_tokens_per_s']:>16,.0f}", flush=True)
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "host": platform.node(),
        "fast_malloc": tuned,
        "batch_size": 20, "bptt": 70, "steps": steps, "warmup": warmup, "eval_tokens": eval_tokens,
        "results": rows,
    }
    path = Path(out) if out else (repo_root() or Path.cwd()) / "results" / "bench" / \
        f"bench-{dev.type}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return record
