"""The fast step and evaluation against the reference-structured ones (the oracle)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmreport.bench import ReferenceAdaBeliefLM, kernel_shares, reference_evaluate, reference_train_step
from lmreport.config import make_config
from lmreport.model import repackage_hidden
from lmreport.train import build_model, build_optimizer, evaluate, train_step

STEPS = 60


def _run(f, fast: bool):
    config = make_config("smoke", layers=2, optimizer="adabelief-lm", f=f, emsize=12, nhid=20)
    torch.manual_seed(5)
    model = build_model(config, 300)
    params = list(model.parameters())
    if fast:
        optimizer, lm = build_optimizer(config, params)
    else:
        optimizer = ReferenceAdaBeliefLM(params, lr=config.lr, betas=config.betas, eps=config.eps,
                                         weight_decay=config.wdecay, f=f)
    gen = torch.Generator().manual_seed(7)
    hidden, c, losses = model.init_hidden(4), None, []
    model.train()
    for step in range(STEPS):
        tokens = torch.randint(300, (1 + 8 + step % 5, 4), generator=gen)  # varying lengths
        data, targets = tokens[:-1], tokens[1:].reshape(-1)
        if fast:
            _, loss, hidden = train_step(model, optimizer, lm, data, targets, repackage_hidden(hidden),
                                         config, params)
        else:
            loss, c, hidden = reference_train_step(model, optimizer, c, data, targets,
                                                   repackage_hidden(hidden), config, params)
        losses.append(float(loss))
    return [p.detach().clone() for p in params], losses


@pytest.mark.parametrize("f", ["x2", "x", "sqrt"])
def test_fast_step_equals_reference_step_bit_for_bit(f):
    fast, fast_losses = _run(f, fast=True)
    ref, ref_losses = _run(f, fast=False)
    assert fast_losses == ref_losses
    for a, b in zip(fast, ref):
        assert torch.equal(a, b)


def test_cube_root_differs_only_by_vectorised_pow_ulps():
    """x^(1/3) of a 0-dim tensor and of a full tensor may round differently (SIMD pow):
    show the size of that difference and that it stays at rounding level in training."""
    x = torch.rand(10_000) * 2
    full = x.pow(1.0 / 3.0)
    scalar = torch.stack([v.pow(1.0 / 3.0) for v in x[:2000]])
    ulps = ((full[:2000] - scalar).abs() / torch.finfo(torch.float32).eps / full[:2000].abs().clamp_min(1e-30))
    assert ulps.max() <= 1.0
    fast, _ = _run("cbrt", fast=True)
    ref, _ = _run("cbrt", fast=False)
    rel = max(float(((a - b).abs().max() / b.abs().max())) for a, b in zip(fast, ref))
    assert rel < 1e-4


def test_fast_evaluation_matches_the_published_windows():
    config = make_config("smoke", layers=2, optimizer="adabelief", emsize=12, nhid=20)
    torch.manual_seed(0)
    model = build_model(config, 300)
    data = torch.randint(300, (3001, 1))
    for chunk in (None, 70, 1000):
        fast = evaluate(model, data, 70, chunk_rows=chunk)
        ref = reference_evaluate(model, data, 70)
        assert fast == pytest.approx(ref, rel=1e-6)
    assert np.isfinite(ref) and ref > 0


def test_projection_counts_each_split_at_its_own_rate():
    from lmreport.bench import project

    rates = {"train_tokens_per_s": 929_589.0, "valid_eval_tokens_per_s": 73_760.0,
             "test_eval_tokens_per_s": 82_430.0 / 2}
    paper = project(rates, make_config("paper", layers=1))
    assert paper["projected_epoch_s"] == pytest.approx(1 + 1 + 2)
    assert paper["projected_run_hours"] == pytest.approx(4 * 200 / 3600)
    assert paper["projected_grid_hours_this_depth"] == pytest.approx(15 * 4 * 200 / 3600)
    cpu = project(rates, make_config("cpu", layers=1))   # a 200k-token slice of train, 8 epochs
    assert cpu["projected_epoch_s"] == pytest.approx(200_000 / 929_589 + 1 + 2)


def test_kernel_shares_put_each_op_in_its_group():
    a, b = torch.randn(300, 300), torch.randn(300, 300)
    logits = torch.randn(64, 1000)
    shares = kernel_shares(lambda: (a @ b, torch.log_softmax(logits, 1), torch.empty(10_000).bernoulli_(0.5)),
                           torch.device("cpu"))
    assert set(shares) == {"lstm_forward", "lstm_backward", "matmul", "softmax_ce", "dropout_rng", "other"}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["matmul"] > 0 and shares["softmax_ce"] > 0 and shares["dropout_rng"] > 0
    assert shares["lstm_forward"] == shares["lstm_backward"] == 0


def test_concurrent_runs_repeat_the_run_alone_and_project_the_grid(tiny_corpus):
    from lmreport.bench import concurrent_runs

    rows = concurrent_runs("smoke", 1, [2], epochs=2, device="cpu", data_dir=str(tiny_corpus))
    (row,) = rows
    assert (row["layers"], row["runs_at_once"], row["epochs"], row["full_epochs"]) == (1, 2, 2, 2)
    assert row["identical_to_alone"] and row["max_relative_difference_vs_alone"] == 0.0
    assert len(row["alone_test_ppl"]) == 2 and row["runs_test_ppl"] == [row["alone_test_ppl"]] * 2
    assert row["max_relative_difference_vs_all_cores"] is None  # no run with every core was asked for
    assert row["epoch_s"] <= row["epoch_s_slowest_run"] < row["wall_s"]
    assert row["projected_grid_hours_this_depth"] == pytest.approx(15 * 2 * row["epoch_s"] / 2 / 3600)
    assert row["aggregate_epochs_per_hour"] == pytest.approx(2 * 3600 / row["epoch_s"])


def test_concurrent_runs_report_a_failing_run_and_refuse_bad_counts(tiny_corpus, tmp_path, capsys):
    from lmreport.bench import concurrent_runs
    from lmreport.cli import main

    with pytest.raises(RuntimeError, match="(?s)training process failed .exit 2.*needs the canonical PTB files"):
        concurrent_runs("cpu", 1, [1], epochs=1, device="cpu", data_dir=str(tiny_corpus))
    assert main(["bench", "--profile", "smoke", "--concurrent", "0", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "concurrent=[0] is invalid" in err
    assert main(["bench", "--profile", "smoke", "--concurrent", "2", "--threads", "1"]) == 2
    assert "drop --jobs and --threads" in capsys.readouterr().err
    assert main(["bench", "--profile", "cpu", "--layers", "1", "--concurrent", "1", "--epochs", "1",
                 "--data-dir", str(tiny_corpus), "--out", str(tmp_path / "b.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the canonical PTB files" in err
    assert not (tmp_path / "b.json").exists()


def test_readme_concurrency_table_is_the_committed_bench_record():
    """The README's real-epoch table is read off results/bench/concurrent-cpu-*.json, not typed."""
    import json
    import re

    from lmreport.data import repo_root

    root = repo_root()
    text = (root / "README.md").read_text()
    name = re.search(r"\*\*Real epochs, alone and two at once\*\*.*?`(results/bench/concurrent-cpu-[\d-]+\.json)`",
                     text, flags=re.S).group(1)
    rows = {(r["layers"], r["runs_at_once"]): r for r in json.loads((root / name).read_text())["concurrent"]}
    table = re.findall(r"^\| (\d) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)× \| (yes|no) \| ([\d.]+) × 10⁻(\S+) \| ([\d.]+) h \|$",
                       text, flags=re.M)
    assert [int(t[0]) for t in table] == [1, 2, 3]
    superscript = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")
    for layers, alone_s, both_s, gain, same, mant, exp, hours in table:
        alone, two = rows[(int(layers), 1)], rows[(int(layers), 2)]
        assert (alone_s, both_s) == (f"{alone['epoch_s']:.1f}", f"{two['epoch_s']:.1f}")
        assert gain == f"{2 * alone['epoch_s'] / two['epoch_s']:.2f}"
        assert (same == "yes") == two["identical_to_alone"]
        assert f"{mant}e-0{exp.translate(superscript)}" == f"{two['max_relative_difference_vs_all_cores']:.1e}"
        assert hours == f"{two['projected_grid_hours_this_depth']:.2f}"
