"""Runs end to end: files, resume to identical numbers, divergence, skipping finished runs."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

import lmreport.train as train_mod
from lmreport.config import RunConfig, make_config
from lmreport.data import load_corpus
from lmreport.train import read_metrics, read_status, train

TIMING = ["train_seconds", "tokens_per_s", "eval_seconds", "seconds", "threads", "device"]  # where and how fast, not what


def _tiny(tmp_path, tiny_corpus, **kw):
    values = dict(layers=2, optimizer="adabelief-lm", f="sqrt", epochs=3, when=[3],
                  data_dir=str(tiny_corpus), run_dir=str(tmp_path / "run"), progress=False,
                  max_train_tokens=None, max_eval_tokens=None, bptt=12, batch_size=4)
    values.update(kw)
    return make_config("smoke", **values)


def test_smoke_profile_two_epochs_on_ptb(ptb_dir, tmp_path):
    config = make_config("smoke", layers=1, optimizer="adabelief-lm", f="cbrt", threads=1,
                         data_dir=str(ptb_dir), run_dir=str(tmp_path / "run"), progress=False)
    threads = torch.get_num_threads()
    try:
        run_dir = train(config)
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == [
        "best_test.pt", "best_valid.pt", "checkpoint.pt", "config.json", "metrics.csv", "status.json"]
    status = read_status(run_dir)
    assert status["status"] == "finished" and status["epoch"] == 2
    assert status["data_md5"]["train"] == "f26c4b92c5fdc7b3f8c7cdcb991d8420"
    assert status["threads"] == 1
    assert isinstance(status["device_name"], str) and status["device_name"]
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["optimizer"] == "adabelief-lm" and saved["lr"] == 1e-2 and saved["f"] == "cbrt"
    m = read_metrics(run_dir)
    assert list(m.epoch) == [1, 2]
    assert m.train_ppl[1] < m.train_ppl[0] < 10_000
    assert m.test_ppl[1] < m.test_ppl[0] and m.valid_ppl[1] < m.valid_ppl[0]
    assert m.lr.tolist() == pytest.approx([1e-2, 1e-3])  # divided before epoch 2
    assert m.lm_scale.between(0, 1).all() and m.lm_U.gt(0).all()


def _interrupt_second_epoch(monkeypatch):
    """Make the next run stop with Ctrl-C at the start of its second epoch."""
    real_epoch, calls = train_mod.train_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", interrupted)
    return real_epoch


@pytest.mark.parametrize("c_reset", ["epoch", "never"])  # never: the running minimum crosses the resume
def test_resume_after_interruption_gives_identical_numbers(tmp_path, tiny_corpus, monkeypatch, c_reset):
    straight = read_metrics(train(_tiny(tmp_path / "a", tiny_corpus, c_reset=c_reset, trace=True)))
    real_epoch = _interrupt_second_epoch(monkeypatch)
    config = _tiny(tmp_path / "b", tiny_corpus, c_reset=c_reset, trace=True)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    assert read_status(config.run_dir)["status"] == "interrupted"
    assert len(read_metrics(config.run_dir)) == 1
    monkeypatch.setattr(train_mod, "train_epoch", real_epoch)
    resumed = read_metrics(train(config))
    pd.testing.assert_frame_equal(straight.drop(columns=TIMING), resumed.drop(columns=TIMING),
                                  check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "run" / "batches.csv"),
                                  pd.read_csv(tmp_path / "b" / "run" / "batches.csv"), check_exact=True)
    a = torch.load(tmp_path / "a" / "run" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "run" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_write_that_dies_midway_leaves_the_old_file(tmp_path, tiny_corpus, monkeypatch):
    config = _tiny(tmp_path, tiny_corpus, epochs=1)
    run_dir = train(config)
    before = (run_dir / "config.json").read_text()

    def dies_midway(self, path):
        with open(path, "w") as handle:
            handle.write("{")
        raise OSError("disk gone")

    monkeypatch.setattr(type(config), "to_json", dies_midway)
    (run_dir / "status.json").unlink()  # not finished: train() rewrites its config.json
    with pytest.raises(OSError, match="disk gone"):
        train(config)
    assert (run_dir / "config.json").read_text() == before
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_finished_run_is_not_retrained(tmp_path, tiny_corpus):
    config = _tiny(tmp_path, tiny_corpus, epochs=1)
    run_dir = train(config)
    stamp = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    assert train(config) == run_dir
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_run_dir_with_other_settings_is_refused(tmp_path, tiny_corpus):
    train(_tiny(tmp_path, tiny_corpus, epochs=1))
    with pytest.raises(ValueError, match=r"holds a different run \(seed: 141 there, 6 here\); choose another"):
        train(_tiny(tmp_path, tiny_corpus, epochs=1, seed=6))
    with pytest.raises(ValueError, match=r"holds a different run \(differs in bptt, eps, layers, seed\)"):
        train(_tiny(tmp_path, tiny_corpus, epochs=1, seed=6, layers=1, bptt=10))
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    for broken in ('{"seed": 1,', "[1, 2]", json.dumps({**stored, "wdrop_mode": "sometimes"})):
        (tmp_path / "run" / "config.json").write_text(broken)
        with pytest.raises(ValueError, match=r"run/config.json is not a run's config.json \(.+\); choose another"):
            train(_tiny(tmp_path, tiny_corpus, epochs=1))


def test_divergence_ends_run_with_metrics_intact(tmp_path, tiny_corpus, monkeypatch):
    real_epoch, calls = train_mod.train_epoch, []

    def poison_second_epoch(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                model.decoder.bias.fill_(float("nan"))
        return real_epoch(model, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", poison_second_epoch)
    run_dir = train(_tiny(tmp_path, tiny_corpus))
    status = read_status(run_dir)
    assert status["status"] == "diverged" and "nan" in status["error"]
    assert list(read_metrics(run_dir).epoch) == [1]
    assert len(calls) == 2  # stopped, did not go on to epoch 3


def test_a_loss_too_large_for_a_perplexity_is_a_divergence_not_a_crash(tmp_path, tiny_corpus, monkeypatch):
    assert train_mod.perplexity(709.0, "test") == pytest.approx(math.exp(709.0))
    with pytest.raises(train_mod.Diverged, match="training loss 710.0"):
        train_mod.perplexity(710.0, "training")  # exp would overflow
    monkeypatch.setattr(train_mod, "evaluate", lambda *args, **kwargs: 1e4)
    run_dir = train(_tiny(tmp_path, tiny_corpus))
    status = read_status(run_dir)
    assert status["status"] == "diverged" and status["error"] == "validation loss 10000.0"


def test_failure_is_recorded(tmp_path, tiny_corpus, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(train_mod, "evaluate", broken)
    with pytest.raises(RuntimeError):
        train(_tiny(tmp_path, tiny_corpus, epochs=1))
    status = read_status(tmp_path / "run")
    assert status["status"] == "failed" and "disk on fire" in status["error"]


@pytest.mark.parametrize("mode", ["frozen", "trained"])
def test_weight_drop_modes_in_a_real_run(tmp_path, tiny_corpus, mode):
    run_dir = train(_tiny(tmp_path, tiny_corpus, epochs=1, wdrop_mode=mode, save_best=False))
    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)  # GPU runs too
    torch.manual_seed(ckpt["config"]["seed"])  # 40 words + <eos> in the tiny corpus
    initial = train_mod.build_model(make_config("smoke", **{k: v for k, v in ckpt["config"].items()
                                                            if k != "profile"}), 41)
    for l in range(2):
        key = f"rnns.{l}.weight_hh_l0"
        same = torch.equal(ckpt["model"][key], initial.state_dict()[key])
        assert same == (mode == "frozen")


def test_trace_records_every_batch_and_the_running_minimum(tmp_path, tiny_corpus):
    run_dir = train(_tiny(tmp_path, tiny_corpus, epochs=2, trace=True, save_best=False))
    batches = pd.read_csv(run_dir / "batches.csv")
    metrics = read_metrics(run_dir)
    assert batches.groupby("epoch").size().tolist() == metrics.batches.tolist()
    assert (batches.U >= batches.ce).all()  # U = CE + AR + TAR
    for _, epoch in batches.groupby("epoch"):
        assert epoch.c.tolist() == pytest.approx(epoch.U.cummin().tolist())  # restarted per epoch
    rows = load_corpus(tiny_corpus, download=False).train.numel() // 4
    for (_, epoch), ppl in zip(batches.groupby("epoch"), metrics.train_ppl):
        # the published training perplexity, recomputed from the per-batch record
        assert math.exp((epoch.seq_len * epoch.ce).sum() / rows) == pytest.approx(ppl, rel=1e-5)


def test_a_failed_flush_keeps_the_old_file(tmp_path, monkeypatch):
    import errno
    import os

    from lmreport.files import atomic_write

    target = tmp_path / "metrics.csv"
    target.write_text("old\n")

    def disk_error(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", disk_error)
    with pytest.raises(OSError, match="I/O error"):
        atomic_write(target, lambda tmp: open(tmp, "w").write("new\n"))
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_a_file_system_without_locks_warns_and_runs(tmp_path, monkeypatch):
    import errno

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(train_mod.fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="has no locks"):
        with train_mod.run_lock(tmp_path):
            ran = True
    assert ran


def test_a_run_being_trained_elsewhere_is_locked(tmp_path):
    from lmreport.train import run_lock
    with run_lock(tmp_path):
        with pytest.raises(RuntimeError, match="being trained by another process"):
            with run_lock(tmp_path, wait=0.6):
                pass
    with run_lock(tmp_path, wait=0.1):  # released again
        pass


def test_resume_false_refuses_an_unfinished_run(tmp_path, tiny_corpus, monkeypatch):
    config = _tiny(tmp_path, tiny_corpus, epochs=2)
    _interrupt_second_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    with pytest.raises(ValueError, match="unfinished run"):
        train(config, resume=False)


def test_allocator_tuning_leaves_numbers_bit_identical(tmp_path, tiny_corpus):
    import subprocess
    import sys
    runs = {}
    for flag in ("--fast-malloc", "--no-fast-malloc"):
        run_dir = tmp_path / flag
        subprocess.run([sys.executable, "-m", "lmreport", "train", "--profile", "smoke", "--layers", "2",
                        "--optimizer", "adabelief-lm", "--f", "sqrt", "--data-dir", str(tiny_corpus),
                        "--bptt", "12", "--batch-size", "4", "--max-train-tokens", "2000", "--epochs", "2",
                        "--run-dir", str(run_dir), "--no-progress", flag], check=True, capture_output=True)
        runs[flag] = read_metrics(run_dir).drop(columns=TIMING)
    pd.testing.assert_frame_equal(runs["--fast-malloc"], runs["--no-fast-malloc"], check_exact=True)


NEW_TF32_API = hasattr(torch.backends.cuda.matmul, "fp32_precision")  # torch >= 2.9; 2.4-2.8 have allow_tf32


def _tf32_switches() -> list[tuple[object, str]]:
    if NEW_TF32_API:
        return [(b, "fp32_precision") for b in (torch.backends.cuda.matmul, torch.backends.cudnn.conv,
                                                torch.backends.cudnn.rnn)]
    return [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")]


@pytest.fixture
def restore_numerics(monkeypatch):
    """configure_numerics changes process-wide switches; put them back after the test."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # recorded, so undone after the test
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    tf32 = [(obj, attr, getattr(obj, attr)) for obj, attr in _tf32_switches()]
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, torch.utils.deterministic.fill_uninitialized_memory)
    yield
    for obj, attr, value in tf32:
        setattr(obj, attr, value)
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
     torch.utils.deterministic.fill_uninitialized_memory) = saved[2:]


def test_a_cpu_run_never_touches_cuda_for_its_random_state(monkeypatch):
    """On a GPU machine, asking CUDA for its generators would start a context (GPU memory,
    and a failure on a GPU in exclusive mode) in a run that does not use the GPU."""
    def no_cuda():
        raise AssertionError("a CPU run asked CUDA for its generator states")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", no_cuda)
    state = train_mod.rng_state(torch.device("cpu"))
    assert "cuda" not in state
    train_mod.set_rng_state(state)


def test_ieee_fp32_block_restores_the_callers_tf32(restore_numerics):
    train_mod.set_tf32(True)
    with train_mod.ieee_fp32():
        assert not any(getattr(obj, attr) in (True, "tf32") for obj, attr in _tf32_switches())
    assert all(getattr(obj, attr) in (True, "tf32") for obj, attr in _tf32_switches())


def test_tf32_is_off_unless_asked(restore_numerics):
    from lmreport.train import configure_numerics

    def tf32_on():  # every switch: matmuls, and cuDNN's convolutions and RNNs
        return [getattr(obj, attr) in (True, "tf32") for obj, attr in _tf32_switches()]

    configure_numerics(False)
    assert not any(tf32_on())
    if NEW_TF32_API:
        assert torch.backends.cudnn.rnn.fp32_precision == "ieee"
    configure_numerics(True)
    assert all(tf32_on())


def test_deterministic_kernels_unless_asked_otherwise(restore_numerics):
    import os
    train_mod.configure_numerics(False)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.utils.deterministic.fill_uninitialized_memory  # no NaN fill of every dropout mask
    train_mod.configure_numerics(False, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    config = make_config("paper", layers=1)
    assert config.deterministic and "deterministic" not in config.science()  # resumable with either


@pytest.mark.parametrize("optimizer,f", [("adabelief", None), ("adabelief-lm", "x2"), ("adabelief-lm", "cbrt")])
def test_training_step_never_reads_a_tensor_back_to_the_host(monkeypatch, optimizer, f):
    """On a GPU every host read of a tensor value stalls the queue; the step (forward,
    clipping, LM scaling with its running minimum, optimizer) must not make one. The
    Python ways to read a value are made to raise for the duration of the steps."""
    config = make_config("smoke", layers=2, optimizer=optimizer, f=f, emsize=12, nhid=20)
    torch.manual_seed(0)
    model = train_mod.build_model(config, 50)
    params = list(model.parameters())
    opt, lm = train_mod.build_optimizer(config, params)
    tokens = torch.randint(50, (9, 4))
    hidden = model.init_hidden(4)
    model.train()

    def host_read(*args, **kwargs):
        raise AssertionError("host synchronisation inside the training step")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__"):
            patch.setattr(torch.Tensor, name, host_read)
        for _ in range(3):
            raw_loss, loss, hidden = train_mod.train_step(model, opt, lm, tokens[:-1], tokens[1:].reshape(-1),
                                                          train_mod.repackage_hidden(hidden), config, params)
    assert math.isfinite(float(loss)) and float(raw_loss) <= float(loss)


def test_a_run_recorded_before_embed_padding_existed_keeps_the_rule_it_trained_with(tmp_path, tiny_corpus, monkeypatch):
    """That code trained every embedding row: its runs read as "none", except where their
    slice of PTB never feeds the last word, where "last" is the same arithmetic."""
    old = {k: v for k, v in make_config("paper", layers=1).to_dict().items() if k != "embed_padding"}
    assert RunConfig.from_dict(old).embed_padding == "none"
    assert RunConfig.from_dict({**old, "max_train_tokens": 929_453}).embed_padding == "last"
    assert RunConfig.from_dict({**old, "max_train_tokens": 929_454}).embed_padding == "none"
    committed = sorted(Path(__file__).parents[1].glob("results/cpu/runs/*/config.json"))
    assert committed and all(RunConfig.from_json(p).embed_padding == "last" for p in committed)

    config = _tiny(tmp_path, tiny_corpus, epochs=2)
    _interrupt_second_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.undo()
    run = Path(config.run_dir)
    stored = json.loads((run / "config.json").read_text())
    del stored["embed_padding"]  # as the code before the field wrote it
    (run / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="embed_padding: 'none' there, 'last' here"):
        train(config)
    assert read_status(train(replace(config, embed_padding="none")))["status"] == "finished"
