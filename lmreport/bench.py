"""Speed of the models on this machine: ``python -m lmreport bench``.

For each depth of a profile's model (``paper`` by default): training tokens/s of the full
step the study ran (batch 20, bptt 70, AdaBelief-LM with the running-minimum c, clipping,
AR/TAR, weight drop), the optimizer-step time, batch-1 test-evaluation tokens/s and peak
memory. Inputs are random token ids, so no corpus is needed. ``--compare`` also times, in
the same process, a *reference-structured* step and evaluation — organised the way the
study's published code was (below) — and prints the speed-ups. The reference is timed
first, before the process tunes glibc's allocator (``train.tune_cpu_allocator``), because
the published code ran with the defaults; it is timed again afterwards, so the JSON also
says how much of the gain is the allocator and how much the code. ``--jobs 1 2`` measures
the aggregate training throughput of N concurrent processes with cores/N threads each,
which is how ``grid --jobs N`` runs. ``--breakdown`` profiles the fast step and evaluation
and splits their time into the kernels the numerics fix and the rest (``KERNEL_GROUPS``).
Results are printed and saved as JSON under ``results/bench/`` (after every depth, so a
bench cut short keeps what it measured); ``benchtables`` turns the records into the
README's tables.

The reference-structured pieces are also the test oracle of the fast ones: the fast
step reproduces the reference step bit for bit on CPU (tests/test_bench.py).
"""
from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.optim import Optimizer

from .config import make_config
from .data import get_batch, load_corpus, repo_root
from .benchtables import EVAL_LABELS, SHARE_LABELS
from .children import die_with_parent, log_tail
from .files import make_folder, write_text
from .grid import GRID_RUNS_PER_DEPTH
from .model import repackage_hidden
from .optim import resolve_f
from .regularize import activation_reg, temporal_activation_reg
from .train import (build_model, build_optimizer, check_data, configure_numerics, device_name,
                    evaluate, read_status, select_device, train_step, tune_cpu_allocator)

VOCAB = 10_000
PTB_TOKENS = {"train": 929_589, "valid": 73_760, "test": 82_430}   # SPEC §4


# ------------------------------------------------------------ reference-structured code
class ReferenceAdaBeliefLM(Optimizer):
    """AdaBelief-LM organised like the study's published optimizer.

    Per parameter, in a Python loop: build a full-size tensor of the excess loss
    max(0, (U − c)·1), apply f to it, divide the gradient by f(...) + eps_lm, then the
    AdaBelief steps one tensor at a time. The scale is one number, but it is recomputed
    from freshly allocated parameter-sized tensors for every parameter at every step —
    the cost the fast path removes. ``step(loss, c)`` takes c from the caller, as the
    published loop did.
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, f="sqrt",
                 eps_lm=1.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.f, self.eps_lm = resolve_f(f)[1], eps_lm

    @torch.no_grad()
    def step(self, loss, c):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                excess = torch.maximum(torch.zeros_like(grad), (loss - c) * torch.ones_like(grad))
                grad = grad / (self.f(excess) + self.eps_lm)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_var"] = torch.zeros_like(p)
                if group["weight_decay"]:
                    grad.add_(p, alpha=group["weight_decay"])
                m, s = state["exp_avg"], state["exp_avg_var"]
                state["step"] += 1
                t = state["step"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                residual = grad - m
                s.mul_(beta2).addcmul_(residual, residual, value=1 - beta2)
                denom = (s.add_(group["eps"]).sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - beta1 ** t))


def reference_train_step(model, optimizer: ReferenceAdaBeliefLM, c, data, targets, hidden, config, params):
    """The published loop's step around the reference optimizer; returns (U, new c, hidden)."""
    optimizer.zero_grad()
    output, hidden, raw_outputs, dropped_outputs = model(data, hidden, return_h=True)
    loss = F.cross_entropy(model.logits(output).view(-1, model.vocab_size), targets)
    if config.alpha:
        loss = loss + activation_reg(dropped_outputs[-1], config.alpha)
    if config.beta:
        loss = loss + temporal_activation_reg(raw_outputs[-1], config.beta)
    loss.backward()
    c = loss.detach() if c is None else torch.minimum(c, loss.detach())
    if config.clip:
        torch.nn.utils.clip_grad_norm_(params, config.clip)
    optimizer.step(loss.detach(), c)
    return loss.detach(), c, hidden


def reference_evaluate(model, data: torch.Tensor, bptt: int) -> float:
    """The published evaluation: windows of ``bptt`` rows, autograd left on, each window's
    criterion value (Σ −log p / N, AWD-LSTM's SplitCrossEntropyLoss with one split) times
    its length, summed in float32."""
    model.eval()
    hidden = model.init_hidden(data.size(1))
    total = 0.0
    for i in range(0, data.size(0) - 1, bptt):
        x, y = get_batch(data, i, bptt)
        output, hidden = model(x, hidden)
        logp = F.log_softmax(F.linear(output.view(-1, output.size(2)), model.decoder.weight, model.decoder.bias), -1)
        criterion = (-torch.gather(logp, 1, y.view(-1, 1))).float().sum() / len(y)
        total = total + len(x) * criterion.data
        hidden = repackage_hidden(hidden)
    return float(total) / data.size(0)


# --------------------------------------------------------------- where the time goes
# Kernels whose work the model and the published numerics fix: the reference-structured
# code runs the same kernels on the same data (its evaluation in shorter windows;
# tests/test_bench.py checks that the numbers agree), so no reorganisation of the step or
# the evaluation that keeps the numbers removes their work. Everything else (elementwise updates, copies, the
# optimizer, clipping, LM scaling, allocation, Python) is what code structure can change.
KERNEL_GROUPS = {
    "lstm_forward": ("aten::mkldnn_rnn_layer", "aten::mkldnn_rnn", "aten::_cudnn_rnn",
                     "aten::_thnn_fused_lstm_cell"),
    "lstm_backward": ("aten::mkldnn_rnn_layer_backward", "aten::mkldnn_rnn_backward",
                      "aten::_cudnn_rnn_backward", "aten::_thnn_fused_lstm_cell_backward_impl"),
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm"),
    "softmax_ce": ("aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
                   "aten::nll_loss_backward"),
    "dropout_rng": ("aten::bernoulli_", "aten::uniform_", "aten::native_dropout"),  # the last: CUDA's fused mask
}


def kernel_shares(fn, device: torch.device, wall_s: float | None = None) -> dict:
    """Run ``fn`` under the torch profiler; the share of its time in each kernel group,
    ``other`` and ``idle``, summing to 1.

    On a CPU the groups split the host's self time and ``idle`` is 0. On CUDA they split
    the device time, and with ``wall_s`` (``fn``'s wall time measured without the
    profiler) ``idle`` is the part of it in which the GPU ran no kernel: launch latency and
    Python between kernels, the time CUDA graphs would take away."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        _sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    group_of = {name: group for group, names in KERNEL_GROUPS.items() for name in names}
    times_us = dict.fromkeys([*KERNEL_GROUPS, "other"], 0.0)
    for event in prof.key_averages():
        if device.type == "cuda" and event.device_type != torch.autograd.DeviceType.CPU:
            continue  # kernel rows: their time is already the self device time of the op that launched them
        times_us[group_of.get(event.key, "other")] += getattr(event, attr)
    return shares_of(times_us, wall_s if device.type == "cuda" else None)


def shares_of(times_us: dict, wall_s: float | None = None) -> dict:
    """Group times (microseconds) as shares; with ``wall_s`` the time not covered by any
    group is ``idle`` (profiler noise that makes the groups exceed the wall time leaves
    ``idle`` at 0 instead of negative)."""
    busy = sum(times_us.values())
    total = max(busy, 1e6 * wall_s) if wall_s else busy
    total = total or 1.0
    shares = {group: t / total for group, t in times_us.items()}
    shares["idle"] = 1.0 - busy / total if wall_s else 0.0
    return shares


def fixed_share(shares: dict) -> float:
    """The share of the time in kernels the model and the numerics fix."""
    return sum(shares[g] for g in KERNEL_GROUPS)


# ------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _timed(fn, n: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return time.perf_counter() - start


class _Bench:
    """One paper-style model with a fixed batch and a fixed batch-1 test stream."""

    def __init__(self, layers: int, profile: str, eval_tokens: int, device: torch.device, tf32: bool,
                 batch_size: int | None = None):
        self.layers, self.device, self.eval_tokens = layers, device, eval_tokens
        self.config = make_config(profile, layers=layers, optimizer="adabelief-lm", f="sqrt", seed=0, tf32=tf32,
                                  batch_size=batch_size)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        torch.manual_seed(0)
        self.model = build_model(self.config, VOCAB).to(device)
        self.params = list(self.model.parameters())
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(VOCAB, (self.config.bptt + 1, self.config.batch_size), generator=gen).to(device)
        self.data, self.targets = tokens[:-1], tokens[1:].reshape(-1)
        self.test = torch.randint(VOCAB, (eval_tokens, 1), generator=gen).to(device)

    def fast(self, steps: int, warmup: int) -> dict:
        """The package's step and evaluation."""
        model, config, params = self.model, self.config, self.params
        optimizer, lm = build_optimizer(config, params)
        state = {"hidden": model.init_hidden(config.batch_size)}
        model.train()

        def step():
            _, state["loss"], state["hidden"] = train_step(model, optimizer, lm, self.data, self.targets,
                                                           repackage_hidden(state["hidden"]), config, params)

        _timed(step, warmup, self.device)
        train_s = _timed(step, steps, self.device)
        opt_s = _timed(lambda: (lm.apply_(params, state["loss"]), optimizer.step()), steps, self.device)
        evaluate(model, self.test[: config.bptt * 2], config.bptt)  # warm-up
        eval_s = _timed(lambda: evaluate(model, self.test, config.bptt), 1, self.device)
        cut = self.eval_tokens - self.eval_tokens % config.eval_batch_size
        valid = self.test[:cut].view(-1, config.eval_batch_size)
        valid_s = _timed(lambda: evaluate(model, valid, config.bptt), 1, self.device)
        row = {"layers": self.layers, "train_tokens_per_s": steps * self.data.numel() / train_s,
               "step_ms": 1000 * train_s / steps, "optimizer_step_ms": 1000 * opt_s / steps,
               "test_eval_tokens_per_s": self.eval_tokens / eval_s,
               "valid_eval_tokens_per_s": valid.numel() / valid_s, "peak_memory_mb": _peak_mb(self.device)}
        row.update(project(row, config))
        self.step, self.eval = step, lambda: evaluate(model, self.test, config.bptt)
        return row

    def breakdown(self, steps: int, row: dict) -> dict:
        """Kernel-group shares of the step and the batch-1 evaluation (after ``fast``, whose
        unprofiled times in ``row`` are the wall times the shares refer to on CUDA)."""
        self.model.train()  # ``fast`` ended with an evaluation, which left the model in eval mode
        return {"step_kernel_shares": kernel_shares(lambda: [self.step() for _ in range(steps)], self.device,
                                                    steps * row["step_ms"] / 1000),
                "eval_kernel_shares": kernel_shares(self.eval, self.device,
                                                    self.eval_tokens / row["test_eval_tokens_per_s"])}

    def reference(self, steps: int, warmup: int) -> dict:
        """The reference-structured step and evaluation (same model, batch and stream)."""
        model, config, params = self.model, self.config, self.params
        opt = ReferenceAdaBeliefLM(params, lr=config.lr, betas=config.betas, eps=config.eps,
                                   weight_decay=config.wdecay, f="sqrt")
        ref = {"c": None, "hidden": model.init_hidden(config.batch_size)}
        model.train()

        def step():
            ref["loss"], ref["c"], ref["hidden"] = reference_train_step(
                model, opt, ref["c"], self.data, self.targets, repackage_hidden(ref["hidden"]), config, params)

        _timed(step, warmup, self.device)
        train_s = _timed(step, steps, self.device)
        opt_s = _timed(lambda: opt.step(ref["loss"], ref["c"]), steps, self.device)
        reference_evaluate(model, self.test[: config.bptt * 2], config.bptt)  # warm-up
        eval_s = _timed(lambda: reference_evaluate(model, self.test, config.bptt), 1, self.device)
        return {"train_tokens_per_s": steps * self.data.numel() / train_s, "optimizer_step_ms": 1000 * opt_s / steps,
                "test_eval_tokens_per_s": self.eval_tokens / eval_s}


def bench_model(layers: int, profile: str = "paper", steps: int = 8, warmup: int = 2,
                eval_tokens: int = 5600, device: torch.device | None = None, tf32: bool = False,
                batch_size: int | None = None) -> dict:
    """The package's training step and evaluation for one depth (``batch_size``: the
    profile's unless given)."""
    return _Bench(layers, profile, eval_tokens, device or select_device("auto"), tf32, batch_size).fast(steps, warmup)


def _speedups(row: dict, ref: dict, tag: str) -> dict:
    out = {f"{tag}_{k}": v for k, v in ref.items()}
    out[f"speedup_train_step_vs_{tag}"] = row["train_tokens_per_s"] / ref["train_tokens_per_s"]
    out[f"speedup_optimizer_step_vs_{tag}"] = ref["optimizer_step_ms"] / row["optimizer_step_ms"]
    out[f"speedup_test_eval_vs_{tag}"] = row["test_eval_tokens_per_s"] / ref["test_eval_tokens_per_s"]
    return out


def project(row: dict, config) -> dict:
    """The profile's epoch time (train + batch-10 validation + batch-1 test on its share of PTB)
    from the measured rates, and what one run and this depth's share of the 45-run grid would
    take one at a time."""
    def tokens(split, cap):
        return min(PTB_TOKENS[split], cap or PTB_TOKENS[split])
    epoch_s = (tokens("train", config.max_train_tokens) / row["train_tokens_per_s"]
               + tokens("valid", config.max_eval_tokens) / row["valid_eval_tokens_per_s"]
               + tokens("test", config.max_eval_tokens) / row["test_eval_tokens_per_s"])
    run_h = epoch_s * config.epochs / 3600
    return {"projected_epoch_s": epoch_s, "projected_run_hours": run_h, "epochs": config.epochs,
            "projected_grid_hours_this_depth": GRID_RUNS_PER_DEPTH * run_h}


def tf32_effect(layers: int, profile: str, steps: int, eval_tokens: int, device: torch.device,
                deterministic: bool = True) -> dict:
    """CUDA: the same short training and evaluation with IEEE fp32 and with TF32.

    Reports both perplexities and their relative difference, the price of ``--tf32``."""
    out = {"layers": layers}
    gen_seed = 0
    for tf32 in (False, True):
        configure_numerics(tf32, deterministic)
        config = make_config(profile, layers=layers, optimizer="adabelief-lm", f="sqrt", seed=0, tf32=tf32)
        torch.manual_seed(0)
        model = build_model(config, VOCAB).to(device)
        params = list(model.parameters())
        optimizer, lm = build_optimizer(config, params)
        gen = torch.Generator().manual_seed(gen_seed)
        hidden = model.init_hidden(config.batch_size)
        model.train()
        for _ in range(steps):
            tokens = torch.randint(VOCAB, (config.bptt + 1, config.batch_size), generator=gen).to(device)
            _, _, hidden = train_step(model, optimizer, lm, tokens[:-1], tokens[1:].reshape(-1),
                                      repackage_hidden(hidden), config, params)
        test = torch.randint(VOCAB, (eval_tokens, 1), generator=gen).to(device)
        out["ppl_tf32" if tf32 else "ppl_ieee"] = math.exp(evaluate(model, test, config.bptt))
    configure_numerics(False, deterministic)
    out["relative_difference"] = out["ppl_tf32"] / out["ppl_ieee"] - 1
    return out


def throughput(profile: str, layers: int, jobs: int, steps: int, device: str = "auto") -> dict:
    """Aggregate training tokens/s of ``jobs`` concurrent processes, cores/jobs threads each."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"{k}.json" for k in range(jobs)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        procs = [subprocess.Popen([sys.executable, "-m", "lmreport", "bench", "--profile", profile,
                                   "--layers", str(layers), "--steps", str(steps), "--eval-tokens", "140",
                                   "--threads", str(threads), "--device", device, "--out", str(out)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for out in outs]
        for proc in procs:
            if proc.wait() != 0:
                raise RuntimeError(f"benchmark process failed: {proc.stderr.read().strip()[-300:]}")
        rates = [json.loads(out.read_text(encoding="utf-8"))["results"][0]["train_tokens_per_s"] for out in outs]
    return {"profile": profile, "layers": layers, "jobs": jobs, "threads_per_job": threads,
            "aggregate_train_tokens_per_s": sum(rates)}


CONCURRENT_RUN = dict(optimizer="adabelief-lm", f="sqrt", seed=141)  # one of the study's runs
COMPARED = ["train_ppl", "valid_ppl", "test_ppl"]


def _train_processes(profile: str, layers: int, run_dirs: list[Path], epochs: int, threads: int,
                     device: str, deterministic: bool, data_dir: str | None) -> float:
    """Train the same run in each of ``run_dirs`` at once, one process each; the wall seconds."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    args = ["--profile", profile, "--layers", str(layers), "--epochs", str(epochs), "--threads", str(threads),
            "--device", device, "--no-progress", "--no-save-best",
            "--deterministic" if deterministic else "--no-deterministic"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in CONCURRENT_RUN.items()]
    args += ["--data-dir", data_dir] if data_dir else []
    procs = []
    start = time.perf_counter()
    try:
        for d in run_dirs:
            d.mkdir(parents=True)
            with open(d / "train.log", "w") as log:  # a file, not a pipe: N chatty children cannot block
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "lmreport", "train", *args, "--run-dir", str(d)], env=env, stdout=log,
                    stderr=subprocess.STDOUT, preexec_fn=die_with_parent if os.name == "posix" else None))
        for proc, d in zip(procs, run_dirs):
            proc.wait()
            status = read_status(d)["status"]  # "diverged" exits 1 too; the status says which
            if status != "finished":
                status = status if status == "diverged" else "failed"
                raise RuntimeError(f"training process {status} (exit {proc.returncode}): {log_tail(d / 'train.log')}")
    finally:  # one failed or Ctrl-C: the others would only keep the cores (or the GPU) busy
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return time.perf_counter() - start


def _max_relative_difference(runs: list[pd.DataFrame], ref: pd.DataFrame) -> float:
    return max(float((m[COMPARED] / ref[COMPARED] - 1).abs().to_numpy().max()) for m in runs)


def concurrent_runs(profile: str, layers: int, counts, epochs: int = 2, device: str = "auto",
                    deterministic: bool = True, data_dir: str | None = None) -> list[dict]:
    """Real training of one study run (``CONCURRENT_RUN``), alone and N copies at once.

    Each process trains ``epochs`` epochs of the profile on PTB (train, batch-10 validation
    and batch-1 test, as the grid does) with cores/N threads. Per N: the mean epoch seconds
    of a run (after the first epoch, which carries the start-up, when there are two or
    more), the aggregate rate, the hours this depth's 15 grid runs would take N at once,
    and whether every copy's per-epoch perplexities equal, bit for bit, the same run
    trained alone with the same number of threads. (On a CPU the thread count itself moves
    the last bits, so a run is reproduced with the ``threads`` its config.json records;
    ``max_relative_difference_vs_all_cores`` shows by how much.) On CUDA every run gets
    cores/max(N) host threads.
    """
    full_epochs = make_config(profile, layers=layers).epochs
    cores = os.cpu_count() or 1
    # CPU: cores/N threads, as grid --jobs N gives each run. On a GPU the host threads only
    # feed the device, so every run gets the same share and one run alone is the reference.
    on_gpu = select_device(device).type == "cuda"
    rows, alone = [], {}  # alone: threads -> (metrics of the run trained alone, wall seconds)
    with tempfile.TemporaryDirectory(prefix="lmreport-concurrent-") as tmp:
        def train_alone(threads: int):
            if threads not in alone:
                run = Path(tmp) / f"L{layers}-alone-t{threads}"
                wall = _train_processes(profile, layers, [run], epochs, threads, device, deterministic, data_dir)
                alone[threads] = (pd.read_csv(run / "metrics.csv"), wall, read_status(run).get("device_name"))
            return alone[threads]

        for n in sorted(set(counts)):
            threads = max(1, cores // (max(counts) if on_gpu else n))
            ref, ref_wall, name = train_alone(threads)
            if n == 1:
                metrics, wall = [ref], ref_wall
            else:
                dirs = [Path(tmp) / f"L{layers}-n{n}-{k}" for k in range(n)]
                wall = _train_processes(profile, layers, dirs, epochs, threads, device, deterministic, data_dir)
                metrics = [pd.read_csv(d / "metrics.csv") for d in dirs]
            steady = [m["seconds"].iloc[1:] if len(m) > 1 else m["seconds"] for m in metrics]
            epoch_s = float(np.mean([x.mean() for x in steady]))
            all_cores = alone.get(cores)
            rows.append({
                "layers": layers, "runs_at_once": n, "device_name": name, "threads_per_run": threads,
                "epochs": epochs,
                "epoch_s": epoch_s, "epoch_s_slowest_run": float(max(x.mean() for x in steady)),
                "wall_s": wall, "aggregate_epochs_per_hour": n * 3600 / epoch_s,
                "identical_to_alone": all(m[COMPARED].equals(ref[COMPARED]) for m in metrics),
                "max_relative_difference_vs_alone": _max_relative_difference(metrics, ref),
                "max_relative_difference_vs_all_cores": (
                    _max_relative_difference(metrics, all_cores[0]) if all_cores else None),
                "projected_grid_hours_this_depth": GRID_RUNS_PER_DEPTH * full_epochs * epoch_s / n / 3600,
                "full_epochs": full_epochs,
                **{f"runs_{k}": [m[k].tolist() for m in metrics] for k in COMPARED},
                **{f"alone_{k}": ref[k].tolist() for k in COMPARED}})
    return rows


def _duration(hours: float) -> str:
    """Hours as a reader wants them: the smoke profile's projections are minutes or seconds."""
    if hours >= 1:
        return f"{hours:,.1f} h"
    return f"{hours * 60:.0f} min" if hours * 60 >= 1 else f"{hours * 3600:.0f} s"


def _print_concurrent(rows: list[dict], profile: str) -> None:
    print(f"{'layers':>6} {'at once':>8} {'threads':>8} {'epoch s':>8} {'slowest':>8} {'epochs/h':>9} "
          f"{'grid (this depth)':>20}   same numbers as alone (same threads)   vs all cores")
    for r in rows:
        same = "yes" if r["identical_to_alone"] else f"no, {r['max_relative_difference_vs_alone']:.1e}"
        if r["runs_at_once"] == 1:
            same = "(the reference)"
        cores = r["max_relative_difference_vs_all_cores"]
        print(f"{r['layers']:>6} {r['runs_at_once']:>8} {r['threads_per_run']:>8} {r['epoch_s']:>8.1f} "
              f"{r['epoch_s_slowest_run']:>8.1f} {r['aggregate_epochs_per_hour']:>9.0f} "
              f"{_duration(r['projected_grid_hours_this_depth']):>20}   {same:<37}  "
              f"{'-' if cores is None else f'{cores:.1e}'}", flush=True)
    for n in sorted({r["runs_at_once"] for r in rows}):
        depths = [r for r in rows if r["runs_at_once"] == n]
        print(f"projection: the {profile} grid of depths {', '.join(str(r['layers']) for r in depths)} "
              f"({GRID_RUNS_PER_DEPTH * len(depths)} runs), {n} at once: "
              f"{_duration(sum(r['projected_grid_hours_this_depth'] for r in depths))}")


def _print_breakdown(rows: list[dict], compare: bool, on_gpu: bool) -> None:
    step_groups = [g for g in SHARE_LABELS if g != "idle" or on_gpu]  # idle: the GPU waiting for the host
    eval_groups = [g for g in EVAL_LABELS if g != "idle" or on_gpu]
    print("share of " + ("wall time per kernel group on the GPU" if on_gpu else "self time per kernel group")
          + " (other" + (" and GPU idle" if on_gpu else "") + " = what code structure can change)")
    print(f"{'layers':>6}  step: " + " ".join(f"{SHARE_LABELS[g]:>10}" for g in step_groups)
          + "   test-eval: " + " ".join(f"{EVAL_LABELS[g]:>10}" for g in eval_groups)
          + ("   ceiling vs reference: step  test-eval" if compare else ""))
    for row in rows:
        step, ev = row["step_kernel_shares"], row["eval_kernel_shares"]
        line = (f"{row['layers']:>6}        " + " ".join(f"{step[g]:>10.1%}" for g in step_groups) + "              "
                + " ".join(f"{ev[g]:>10.1%}" for g in eval_groups))
        if compare:
            line += (f"   {row['ceiling_train_step_vs_reference']:>20.2f}x "
                     f"{row['ceiling_test_eval_vs_reference']:>9.2f}x")
        print(line, flush=True)


def record_path(out: str | None, default_name: str) -> Path:
    """Where a bench record goes (``out``, else results/bench/), checked before anything is
    measured, so a bad path does not cost the measurements."""
    path = Path(out) if out else (repo_root() or Path.cwd()) / "results" / "bench" / default_name
    if path.is_dir():
        raise ValueError(f"out={str(path)!r} is invalid: a folder; give a file name, e.g. {path / default_name}")
    make_folder(path.parent, "out")
    return path


def eval_accuracy(run_dir: str | Path, checkpoint: str = "checkpoint", out: str | None = None,
                  threads: int | None = None, data_dir: str | None = None) -> dict:
    """How far each evaluation arithmetic lands from the exact value, on a trained run.

    Evaluates the run's weights (``checkpoint.pt``: its last epoch) on the test split
    three ways: ``eval_mode="chunked"``, ``eval_mode="published"``, and the published
    windows with every token's -log p computed and summed in float64 (the reference both
    approximate). Prints and saves the mean NLL and perplexity of each.
    """
    from .config import RunConfig
    from .data import batchify, load_corpus

    run_dir = Path(run_dir)
    weights = run_dir / f"{checkpoint}.pt"
    for needed in (run_dir / "config.json", weights):
        if not needed.is_file():
            raise ValueError(f"run_dir={str(run_dir)!r} is invalid: no {needed.name} there (train the run first)")
    path = record_path(out, f"eval-accuracy-{run_dir.name}.json")
    if threads:
        torch.set_num_threads(threads)
    config = RunConfig.from_json(run_dir / "config.json").validate()
    corpus = load_corpus(data_dir or config.data_dir, progress=False)
    model = build_model(config, len(corpus.dictionary))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=False)["model"])
    test = batchify(corpus.test[: config.max_eval_tokens], config.test_batch_size)
    with torch.inference_mode():
        nll = {mode: evaluate(model, test, config.bptt, mode) for mode in ("chunked", "published")}
        model.eval()
        hidden, total = model.init_hidden(test.size(1)), 0.0
        for i in range(0, test.size(0) - 1, config.bptt):
            x, y = get_batch(test, i, config.bptt)
            output, hidden = model(x, hidden)
            logits = model.logits(output).view(-1, model.vocab_size).double()
            total += F.cross_entropy(logits, y, reduction="sum").item() / test.size(1)
        nll["float64 windows"] = total / test.size(0)
    exact = nll["float64 windows"]
    rows = [{"evaluation": mode, "mean_nll": v, "ppl": math.exp(v), "ppl_relative_to_float64": math.exp(v - exact) - 1,
             "nll_relative_to_float64": v / exact - 1} for mode, v in nll.items()]
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "run_dir": str(run_dir),
              "checkpoint": checkpoint, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "device_name": device_name(torch.device("cpu")), "eval_accuracy": rows}
    write_text(path, json.dumps(record, indent=2) + "\n")
    print(f"{'evaluation':>16} {'mean NLL':>14} {'test PPL':>13} {'PPL vs float64':>15}")
    for row in rows:
        print(f"{row['evaluation']:>16} {row['mean_nll']:>14.10f} {row['ppl']:>13.7f} "
              f"{row['ppl_relative_to_float64']:>+15.2e}")
    print(f"saved {path}")
    return record


def run_bench(layers=(1, 2, 3), steps: int = 8, warmup: int = 2, eval_tokens: int = 5600,
              device: str = "auto", threads: int | None = None, out: str | None = None,
              profile: str = "paper", compare: bool = False, jobs=None, tf32: bool | str = False,
              breakdown: bool = False, concurrent=None, epochs: int = 2, deterministic: bool = True,
              data_dir: str | None = None) -> dict:
    """``tf32``: False (IEEE fp32), True (TF32 timings) or "effect" (perplexity with and without).

    ``concurrent`` (list of N): instead of the synthetic step, train one study run of the
    profile on PTB for ``epochs`` epochs, alone and N at once (``concurrent_runs``).

    ``breakdown`` also profiles the fast step and evaluation and prints the share of the
    kernels that the numerics fix (``KERNEL_GROUPS``); with ``compare``, the speed-up a
    change that kept those kernels could reach at most: reference time / their time."""
    for name, value in (("layers", layers), ("jobs", jobs), ("concurrent", concurrent)):
        if value is not None and (not value or any(n < 1 for n in value)):
            raise ValueError(f"{name}={list(value)} is invalid: one or more integers >= 1")
    for name, value, least in (("steps", steps, 1), ("warmup", warmup, 0), ("epochs", epochs, 1),
                               ("eval_tokens", eval_tokens, 20), ("threads", threads if threads is not None else 1, 1)):
        if value < least:
            raise ValueError(f"{name}={value} is invalid: an integer >= {least}")
    if concurrent and (jobs or threads):
        raise ValueError("--concurrent sets the threads itself (cores/N per run); drop --jobs and --threads")
    if threads:
        torch.set_num_threads(threads)
    dev = select_device(device)
    if tf32 and dev.type != "cuda":
        raise ValueError(f"--tf32{'-effect' if tf32 == 'effect' else ''} needs a CUDA device "
                         f"(TF32 does not exist on {dev.type})")
    if concurrent:  # what would fail every training process (data missing, not PTB, too short)
        corpus = load_corpus(data_dir)
        for n in layers:
            check_data(corpus, make_config(profile, layers=n, epochs=epochs, **CONCURRENT_RUN))
    now = datetime.now(timezone.utc)
    path = record_path(out, f"{'concurrent' if concurrent else 'bench'}-{dev.type}-{now:%Y%m%d-%H%M%S}.json")
    if dev.type == "cuda":
        configure_numerics(tf32 is True, deterministic)
    # --compare times the reference-structured code first, with the C allocator as the
    # published code had it; the tuning below is part of what the package changes.
    untuned = {}
    if compare and not jobs and not concurrent and tf32 != "effect":
        print("timing the reference-structured code (C allocator defaults) ...", flush=True)
        for n in layers:
            untuned[n] = _Bench(n, profile, eval_tokens, dev, tf32 is True).reference(steps, warmup)
    tuned = tune_cpu_allocator() if dev.type == "cpu" else False  # as training does

    def save(complete: bool) -> None:
        # after every depth, so a bench stopped by a time limit keeps the depths it finished
        record["complete"] = complete
        write_text(path, json.dumps(record, indent=2) + "\n")

    record = {
        "date": now.isoformat(timespec="seconds"), "device": str(dev),
        # --concurrent leaves CUDA to its training processes: a context here would hold GPU
        # memory all along, and block them on a GPU in exclusive-process mode
        "device_name": None if concurrent and dev.type == "cuda" else device_name(dev),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "host": platform.node(), "fast_malloc": tuned, "tf32": tf32, "profile": profile,
        "batch_size": 20, "bptt": 70, "steps": steps, "warmup": warmup, "eval_tokens": eval_tokens,
        "deterministic": deterministic,
    }
    print(f"device {dev} ({record['device_name'] or 'named by the runs'}) | torch {torch.__version__} | "
          f"threads {torch.get_num_threads()} | profile {profile}")
    if concurrent:
        record["concurrent"] = []
        for n in layers:
            record["concurrent"] += concurrent_runs(profile, n, concurrent, epochs, device, deterministic, data_dir)
            record["device_name"] = record["device_name"] or record["concurrent"][0]["device_name"]
            save(complete=False)
        _print_concurrent(record["concurrent"], profile)
    elif jobs:
        record["throughput"] = []
        print(f"{'layers':>6} {'jobs':>5} {'threads/job':>12} {'aggregate train tok/s':>22}")
        for n in layers:
            for j in jobs:
                row = throughput(profile, n, j, steps)
                record["throughput"].append(row)
                print(f"{n:>6} {j:>5} {row['threads_per_job']:>12} {row['aggregate_train_tokens_per_s']:>22,.0f}",
                      flush=True)
                save(complete=False)
    elif tf32 == "effect":
        record["tf32_effect"] = []
        print(f"{'layers':>6} {'PPL fp32':>10} {'PPL tf32':>10} {'relative':>9}")
        for n in layers:
            row = tf32_effect(n, profile, steps, eval_tokens, dev, deterministic)
            record["tf32_effect"].append(row)
            print(f"{n:>6} {row['ppl_ieee']:>10.3f} {row['ppl_tf32']:>10.3f} {row['relative_difference']:>+9.2e}",
                  flush=True)
            save(complete=False)
    else:
        record["results"] = []
        head = (f"{'layers':>6} {'train tok/s':>12} {'step ms':>8} {'opt ms':>7} {'test-eval tok/s':>16} "
                f"{'peak MB':>8} {'epoch s':>8} {'one run':>8}")
        print(head + ("   speed-up vs reference: step  optimizer  test-eval  (allocator-tuned reference: step)"
                      if compare else ""))
        for n in layers:
            bench = _Bench(n, profile, eval_tokens, dev, tf32 is True)
            row = bench.fast(steps, warmup)
            line = (f"{n:>6} {row['train_tokens_per_s']:>12,.0f} {row['step_ms']:>8,.0f} "
                    f"{row['optimizer_step_ms']:>7,.1f} {row['test_eval_tokens_per_s']:>16,.0f} "
                    f"{row['peak_memory_mb']:>8,.0f} {row['projected_epoch_s']:>8,.0f} "
                    f"{_duration(row['projected_run_hours']):>8}")
            if compare:
                row.update(_speedups(row, untuned[n], "reference"))
                row.update(_speedups(row, bench.reference(steps, warmup), "reference_tuned_allocator"))
                line += (f"   {row['speedup_train_step_vs_reference']:>25.2f}x "
                         f"{row['speedup_optimizer_step_vs_reference']:>9.2f}x "
                         f"{row['speedup_test_eval_vs_reference']:>10.2f}x "
                         f"{row['speedup_train_step_vs_reference_tuned_allocator']:>12.2f}x")
            if breakdown:
                row.update(bench.breakdown(steps, row))
                if compare:
                    # with only the fixed kernels left, the time would be their share of today's
                    for what, kind in (("train_step", "step"), ("test_eval", "eval")):
                        row[f"ceiling_{what}_vs_reference"] = (
                            row[f"speedup_{what}_vs_reference"] / fixed_share(row[f"{kind}_kernel_shares"]))
            record["results"].append(row)
            print(line, flush=True)
            save(complete=False)
        if breakdown:
            _print_breakdown(record["results"], compare, dev.type == "cuda")
    if record.get("results"):
        grid_h = sum(r["projected_grid_hours_this_depth"] for r in record["results"])
        record["projected_grid_hours"] = grid_h
        n_runs = GRID_RUNS_PER_DEPTH * len(record["results"])
        print(f"projection: {profile} profile, {record['results'][0]['epochs']} epochs per run; the {n_runs}-run grid of "
              f"depths {', '.join(str(r['layers']) for r in record['results'])} run one at a time: {_duration(grid_h)}")
    save(complete=True)
    print(f"wrote {path}")
    return record
