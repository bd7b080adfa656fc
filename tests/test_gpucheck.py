"""gpu-check on the CPU with the smoke model (as CI runs it, so the command cannot rot)."""
from __future__ import annotations

import json
import subprocess
import sys

from lmreport.cli import main


def test_gpu_check_tiny_on_the_cpu_runs_every_phase_and_writes_its_record(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lmreport", "gpu-check", "--device", "cpu", "--tiny",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (path,) = tmp_path.glob("gpu-check-cpu-tiny-*.json")
    record = json.loads(path.read_text())
    assert record["complete"] and record["device"] == "cpu" and record["profile"] == "smoke"
    tests = record["tests"]
    assert (tests["passed"], tests["failed"], tests["skipped"]) == (3, 0, 1), tests
    assert tests["tests"]["test_tf32_is_really_off_by_default_and_on_with_the_flag"]["outcome"] == "skipped"
    assert [r["jobs"] for r in record["concurrency"]] == [1, 2]
    assert all(r["aggregate_train_tokens_per_s"] > 0 for r in record["concurrency"])
    assert [r["layers"] for r in record["speed"]] == [1, 2, 3]
    assert all(r["train_tokens_per_s"] > 0 and r["test_eval_tokens_per_s"] > 0 and r["projected_epoch_s"] > 0
               for r in record["speed"])
    grid = record["grid"]
    assert grid["runs"] == 45 and grid["best_concurrency"] in (1, 2)
    assert 0 < grid["hours_at_best_concurrency"] <= grid["hours_one_at_a_time"]
    assert record["tf32"] == {"run": False, "reason": "TF32 exists only on CUDA GPUs, not on cpu"}
    assert set(record["phase_seconds"]) == {"tests", "concurrency", "speed"}
    for phase in ("tests", "concurrency", "speed"):
        assert f"gpu-check: {phase} done in" in proc.stdout


def test_gpu_check_refuses_a_bad_device_in_one_line(tmp_path, capsys):
    assert main(["gpu-check", "--device", "tpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmreport gpu-check: error: device='tpu' is invalid") and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())
