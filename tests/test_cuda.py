"""The CUDA-only promises of training, marked ``cuda``: ``python -m lmreport gpu-check`` runs
them on a GPU (``pytest -m cuda`` does too). Without CUDA they are skipped, saying so;
``gpu-check --device cpu --tiny`` runs the device-neutral ones on the CPU so they cannot rot
(``LMREPORT_CHECK_DEVICE=cpu``)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from lmreport.config import make_config
from lmreport.train import configure_numerics, read_metrics, read_status, set_tf32, train

DEVICE = os.environ.get("LMREPORT_CHECK_DEVICE", "cuda")
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(),
    reason="no CUDA device here (gpu-check --device cpu runs the device-neutral ones on the CPU)")]
needs_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="TF32 exists only on CUDA GPUs")
TIMING = ["train_seconds", "tokens_per_s", "eval_seconds", "seconds", "threads", "device"]
# a 2-layer LM run small enough for seconds on either device, trained here or by `lmreport train`
RUN = dict(profile="smoke", layers=2, optimizer="adabelief-lm", f="sqrt", seed=7, max_train_tokens=3000,
           progress=False, save_best=False, threads=1, device=DEVICE)


def _config(run_dir: Path, data: Path, epochs: int):
    return make_config(**RUN, data_dir=str(data), epochs=epochs, when=[epochs], run_dir=str(run_dir))


def _train_cmd(run_dir: Path, data: Path, epochs: int) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in RUN.items() if not isinstance(v, bool)]
    return [sys.executable, "-m", "lmreport", "train", *flags, "--no-progress", "--no-save-best",
            "--data-dir", str(data), "--epochs", str(epochs), "--when", str(epochs), "--run-dir", str(run_dir)]


def _metrics(run_dir: Path) -> pd.DataFrame:
    assert read_status(run_dir)["status"] == "finished", read_status(run_dir)
    return read_metrics(run_dir).drop(columns=TIMING)


def test_a_run_killed_mid_run_resumes_to_the_same_bits(tmp_path, tiny_corpus):
    whole = train(_config(tmp_path / "whole", tiny_corpus, 12))
    proc = subprocess.Popen(_train_cmd(tmp_path / "cut", tiny_corpus, 12), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ((tmp_path / "cut" / "metrics.csv").is_file() and len(read_metrics(tmp_path / "cut")) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # a lost node or a Colab disconnect: no handler runs
    proc.wait()
    assert len(read_metrics(tmp_path / "cut")) < 12
    train(_config(tmp_path / "cut", tiny_corpus, 12))  # resumes from the last epoch's checkpoint
    pd.testing.assert_frame_equal(_metrics(tmp_path / "cut"), _metrics(whole), check_exact=True)


def test_two_runs_at_once_on_one_device_equal_each_run_alone(tmp_path, tiny_corpus):
    alone = train(_config(tmp_path / "alone", tiny_corpus, 3))
    procs = [subprocess.Popen(_train_cmd(tmp_path / f"at-once-{k}", tiny_corpus, 3), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for k in range(2)]
    for proc in procs:
        assert proc.wait() == 0, proc.stderr.read()
    for k in range(2):
        pd.testing.assert_frame_equal(_metrics(tmp_path / f"at-once-{k}"), _metrics(alone), check_exact=True)


def _matmul_error() -> float:
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(512, 512, generator=gen) for _ in range(2))
    exact = a.double() @ b.double()
    got = (a.to("cuda") @ b.to("cuda")).double().cpu()
    return float(((got - exact).abs().max() / exact.abs().max()))


@needs_cuda
def test_tf32_is_really_off_by_default_and_on_with_the_flag(tmp_path, tiny_corpus):
    base = dict(profile="smoke", layers=1, data_dir=str(tiny_corpus), max_train_tokens=3000, epochs=1,
                when=[1], device="cuda", progress=False, save_best=False)
    set_tf32(True)  # a notebook may have left it on: training must switch it off
    train(make_config(**base, run_dir=str(tmp_path / "ieee")))
    assert _matmul_error() < 1e-5  # IEEE fp32: ~1e-7
    train(make_config(**base, tf32=True, run_dir=str(tmp_path / "tf32")))
    assert _matmul_error() > 1e-4  # TF32 keeps 10 mantissa bits: ~1e-3
    configure_numerics(False)


def test_deterministic_mode_is_honoured_and_can_be_turned_off(tmp_path, tiny_corpus):
    base = dict(profile="smoke", layers=2, data_dir=str(tiny_corpus), max_train_tokens=3000, epochs=2,
                when=[2], device=DEVICE, progress=False, save_best=False, optimizer="adabelief-lm", f="sqrt")
    runs = [train(make_config(**base, run_dir=str(tmp_path / f"run{k}"))) for k in range(2)]
    pd.testing.assert_frame_equal(_metrics(runs[0]), _metrics(runs[1]), check_exact=True)
    if DEVICE != "cuda":
        return  # the switches below are CUDA's; a CPU run is deterministic without them
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    train(make_config(**base, deterministic=False, run_dir=str(tmp_path / "free")))
    assert not torch.are_deterministic_algorithms_enabled()
    configure_numerics(False)
