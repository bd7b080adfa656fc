"""One prepared check of a GPU: ``python -m lmreport gpu-check --out DIR``.

Four phases, each printed with its time, into one JSON record (``gpu-check-<device>-<time>.json``):

1. tests: the ``cuda``-marked tests (tests/test_cuda.py) in a fresh pytest process: a run
   killed mid-run resumes bit-identical, two runs at once on one device equal each alone,
   TF32 really off by default and on with ``--tf32``, deterministic mode honoured;
2. concurrency: aggregate training tokens/s of 1, 4, 8 and 16 concurrent processes of the
   3-layer paper model on the one device (``bench.throughput``), before this process
   touches CUDA, so its own context holds no device memory meanwhile;
3. speed: per depth, the paper model's training tokens/s, batch-1 test tokens/s and the
   projected epoch seconds (``bench.bench_model``), and the 45-run grid's wall time at the
   best concurrency (each depth's one-at-a-time hours divided by the measured gain of the
   3-layer model at that concurrency);
4. tf32: the perplexity difference TF32 makes after a fixed number of steps (CUDA only).

``--device cpu --tiny`` does the same with the smoke model, two processes at most and a few
steps, in well under a minute, so that this command is exercised in CI and does not rot.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from .bench import bench_model, tf32_effect, throughput
from .config import make_config
from .data import repo_root
from .files import make_folder, write_text
from .grid import GRID_RUNS_PER_DEPTH
from .train import device_name, select_device

FULL = dict(profile="paper", steps=20, warmup=5, eval_tokens=5600, concurrency=(1, 4, 8, 16))
TINY = dict(profile="smoke", steps=3, warmup=1, eval_tokens=280, concurrency=(1, 2))


def run_tests(device: str) -> dict:
    """The cuda-marked tests in their own process; per test its outcome (and why, if not passed)."""
    root = repo_root()
    tests = root / "tests" / "test_cuda.py" if root else None
    if not tests or not tests.is_file():
        return {"run": False, "reason": "no tests/test_cuda.py here (run gpu-check from a checkout)"}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        env = dict(os.environ, LMREPORT_CHECK_DEVICE=device)
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                               f"--junitxml={report}", str(tests)], cwd=root, env=env,
                              capture_output=True, text=True)
        outcomes = {}
        if report.is_file():
            for case in ET.parse(report).getroot().iter("testcase"):
                result = {"outcome": "passed", "seconds": float(case.get("time", 0))}
                for tag in ("failure", "error", "skipped"):
                    node = case.find(tag)
                    if node is not None:
                        result.update(outcome="failed" if tag == "error" else tag,
                                      message=(node.get("message") or "").splitlines()[0][:300])
                outcomes[case.get("name")] = result
    counts = {k: sum(r["outcome"] == k for r in outcomes.values()) for k in ("passed", "failed", "skipped")}
    return {"run": True, "exit_code": proc.returncode, **counts, "tests": outcomes,
            "output_tail": proc.stdout[-1500:] if proc.returncode not in (0, 5) else ""}


def gpu_check(out_dir: str | Path | None = None, device: str = "auto", tiny: bool = False,
              progress: bool = True) -> dict:
    """Run the four phases and write the record after each (a check cut short keeps what it
    measured); return the record."""
    settings = TINY if tiny else FULL
    dev = select_device(device)  # a bad device name fails here, before anything runs
    out = make_folder(Path(out_dir) if out_dir else (repo_root() or Path.cwd()) / "results" / "bench", "out")
    now = datetime.now(timezone.utc)
    path = out / f"gpu-check-{dev.type}{'-tiny' if tiny else ''}-{now:%Y%m%d-%H%M%S}.json"
    record = {"date": now.isoformat(timespec="seconds"), "device": str(dev), "tiny": tiny,
              "profile": settings["profile"], "steps": settings["steps"], "warmup": settings["warmup"],
              "eval_tokens": settings["eval_tokens"], "cpu_count": os.cpu_count(), "phase_seconds": {}}
    say = print if progress else (lambda *a, **k: None)

    def phase(name: str, fn):
        say(f"gpu-check: {name} ...", flush=True)
        start = time.perf_counter()
        record[name] = fn()
        record["phase_seconds"][name] = round(time.perf_counter() - start, 1)
        write_text(path, json.dumps(record, indent=2) + "\n")
        say(f"gpu-check: {name} done in {record['phase_seconds'][name]:.0f} s", flush=True)

    phase("tests", lambda: run_tests(dev.type))
    tests = record["tests"]
    if tests.get("run"):
        say(f"  tests: {tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped")
        for name, result in tests["tests"].items():
            if result["outcome"] != "passed":
                say(f"  {result['outcome']}: {name}: {result.get('message', '')}")
    phase("concurrency", lambda: [throughput(settings["profile"], 3, n, settings["steps"], dev.type)
                                  for n in settings["concurrency"]])
    rates = {row["jobs"]: row["aggregate_train_tokens_per_s"] for row in record["concurrency"]}
    for row in record["concurrency"]:
        row["gain_vs_one"] = row["aggregate_train_tokens_per_s"] / rates[1]
        say(f"  {row['jobs']:>3} at once: {row['aggregate_train_tokens_per_s']:>10,.0f} tok/s "
            f"({row['gain_vs_one']:.2f}x one)")
    record["device_name"] = device_name(dev)
    phase("speed", lambda: [bench_model(n, settings["profile"], settings["steps"], settings["warmup"],
                                        settings["eval_tokens"], dev) for n in (1, 2, 3)])
    best = max(record["concurrency"], key=lambda r: r["gain_vs_one"])
    one_at_a_time = sum(r["projected_grid_hours_this_depth"] for r in record["speed"])
    record["grid"] = {"runs": GRID_RUNS_PER_DEPTH * 3, "epochs": make_config(settings["profile"]).epochs,
                      "hours_one_at_a_time": one_at_a_time, "best_concurrency": best["jobs"],
                      "hours_at_best_concurrency": one_at_a_time / best["gain_vs_one"]}
    for row in record["speed"]:
        say(f"  {row['layers']} layers: train {row['train_tokens_per_s']:>9,.0f} tok/s, test (batch 1) "
            f"{row['test_eval_tokens_per_s']:>8,.0f} tok/s, epoch {row['projected_epoch_s']:,.0f} s")
    say(f"  {record['grid']['runs']}-run grid: {one_at_a_time:,.1f} h one at a time, "
        f"{record['grid']['hours_at_best_concurrency']:,.1f} h with {best['jobs']} at once")
    if dev.type == "cuda":
        phase("tf32", lambda: tf32_effect(3, settings["profile"], 50 if not tiny else 3,
                                          settings["eval_tokens"], dev))
        say(f"  TF32 moves the 3-layer perplexity by {record['tf32']['relative_difference']:+.2e} (relative)")
    else:
        record["tf32"] = {"run": False, "reason": f"TF32 exists only on CUDA GPUs, not on {dev.type}"}
    record["complete"] = True
    write_text(path, json.dumps(record, indent=2) + "\n")
    say(f"wrote {path}")
    return record
