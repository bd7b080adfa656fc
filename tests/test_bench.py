"""The fast step and evaluation against the reference-structured ones (the oracle)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmreport.bench import (ReferenceAdaBeliefLM, fixed_share, kernel_shares, reference_evaluate, reference_train_step,
                            shares_of)
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


@pytest.mark.parametrize("batch", [1, 10])
def test_fast_evaluation_matches_the_published_windows(batch):
    config = make_config("smoke", layers=2, optimizer="adabelief", emsize=12, nhid=20)
    torch.manual_seed(0)
    model = build_model(config, 300)
    data = torch.randint(300, (20_001 // batch, batch))  # several 8k-token chunks, a short last window
    ref = reference_evaluate(model, data, 70)
    assert np.isfinite(ref) and ref > 0
    assert evaluate(model, data, 70, "published") == ref  # bit for bit
    assert evaluate(model, data, 70) == pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="eval_mode='windows' is invalid: one of chunked, published"):
        evaluate(model, data, 70, "windows")


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
    assert set(shares) == {"lstm_forward", "lstm_backward", "matmul", "softmax_ce", "dropout_rng", "other", "idle"}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["matmul"] > 0 and shares["softmax_ce"] > 0 and shares["dropout_rng"] > 0
    assert shares["lstm_forward"] == shares["lstm_backward"] == 0
    assert shares["idle"] == 0  # the host's self time covers its wall time


def test_gpu_shares_count_the_time_without_kernels_as_idle():
    """On CUDA the groups are device time and the wall time (measured unprofiled) may be longer."""
    times_us = {"lstm_forward": 300.0, "lstm_backward": 0.0, "matmul": 200.0, "softmax_ce": 0.0,
                "dropout_rng": 100.0, "other": 200.0}
    shares = shares_of(times_us, wall_s=0.002)     # 0.8 ms of kernels in 2 ms
    assert shares["idle"] == pytest.approx(0.6) and shares["matmul"] == pytest.approx(0.1)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert fixed_share(shares) == pytest.approx(0.3)  # the ceiling divides by this, not by 1 - other
    noisy = shares_of(times_us, wall_s=0.0005)      # profiler noise above the wall time: no negative idle
    assert noisy["idle"] == 0 and sum(noisy.values()) == pytest.approx(1.0)
    assert shares_of(times_us) == {**{g: t / 800.0 for g, t in times_us.items()}, "idle": 0.0}


def test_bench_saves_each_depth_as_it_finishes(tmp_path, monkeypatch):
    """A bench stopped part-way (a time limit, a crash) keeps the depths it measured."""
    from lmreport import bench

    real_fast = bench._Bench.fast

    def fast(self, steps, warmup):
        if self.layers == 2:
            raise KeyboardInterrupt
        return real_fast(self, steps, warmup)

    monkeypatch.setattr(bench._Bench, "fast", fast)
    out = tmp_path / "b.json"
    with pytest.raises(KeyboardInterrupt):
        bench.run_bench(layers=(1, 2), steps=1, warmup=0, eval_tokens=70, device="cpu", out=str(out),
                        profile="smoke")
    record = json.loads(out.read_text())
    assert record["complete"] is False and [r["layers"] for r in record["results"]] == [1]
    assert not list(tmp_path.glob(".*.tmp"))
    monkeypatch.setattr(bench._Bench, "fast", real_fast)
    record = bench.run_bench(layers=(1, 2), steps=1, warmup=0, eval_tokens=70, device="cpu", out=str(out),
                             profile="smoke")
    assert json.loads(out.read_text()) == record and record["complete"] is True
    assert [r["layers"] for r in record["results"]] == [1, 2]


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
    # the CLI finds what would fail every process before it starts one
    assert main(["bench", "--profile", "cpu", "--layers", "1", "--concurrent", "1", "--epochs", "1",
                 "--data-dir", str(tiny_corpus), "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the canonical PTB files" in err
    assert not (tmp_path / "b.json").exists() and "device" not in capsys.readouterr().out
    (tmp_path / "a-file").write_text("")
    assert main(["bench", "--profile", "smoke", "--concurrent", "1", "--data-dir", str(tmp_path / "a-file"),
                 "--out", str(tmp_path / "b.json")]) == 2
    assert "is not a folder" in capsys.readouterr().err and not (tmp_path / "b.json").exists()


def test_readme_bench_tables_are_rendered_from_their_records():
    """Every README performance table is what its named results/bench records give, not typed."""
    from lmreport import benchtables
    from lmreport.data import repo_root

    readme = repo_root() / "README.md"
    assert readme.read_text().count(benchtables.START) == 3
    assert benchtables.update_readme(readme, check=True) is False, "run: python -m lmreport bench --update-readme"


def test_bench_table_cells_show_the_range_only_where_records_disagree():
    from lmreport.benchtables import cell

    assert cell([1.0, 1.02, 1.04], ".2f", "×") == "1.02×"                  # within 5% of the median
    assert cell([1.396, 1.496, 1.546], ".2f", "×") == "1.50× (1.40–1.55)"
    assert cell([6314.0], ",.0f") == "6,314"


def _jobs_record(rates: dict) -> dict:
    return {"profile": "cpu", "device": "cpu", "device_name": "cpu0",
            "throughput": [{"layers": layers, "jobs": jobs, "threads_per_job": 2 // jobs,
                            "aggregate_train_tokens_per_s": rate} for (layers, jobs), rate in rates.items()]}


def _concurrent_record(epoch_s: dict) -> dict:
    return {"profile": "cpu", "device": "cpu", "device_name": "cpu0", "concurrent": [
        {"layers": layers, "runs_at_once": n, "threads_per_run": 2 // n, "epoch_s": e,
         "aggregate_epochs_per_hour": n * 3600 / e, "identical_to_alone": True,
         "max_relative_difference_vs_alone": 0.0, "max_relative_difference_vs_all_cores": 1e-7 if n > 1 else 0.0,
         "projected_grid_hours_this_depth": 15 * 8 * e / n / 3600} for (layers, n), e in epoch_s.items()]}


def test_bench_summary_takes_ratios_within_each_record(tmp_path):
    """Gains are per record (this record's N jobs over its own 1 job), then the median."""
    from lmreport.benchtables import summarize

    for name, rates in (("a", {(1, 1): 100.0, (1, 2): 110.0}), ("b", {(1, 1): 200.0, (1, 2): 240.0}),
                        ("c", {(1, 1): 150.0, (1, 2): 150.0})):
        (tmp_path / f"{name}.json").write_text(json.dumps(_jobs_record(rates)))
    text = summarize(["a.json", "b.json", "c.json"], tmp_path)
    # 1 job: 100/200/150 -> 150 (100-200); gains 1.10, 1.20, 1.00 -> 1.10 (1.00-1.20)
    assert "| 1 | 150 (100–200) | 150 (110–240) (1.10× (1.00–1.20)) |" in text
    for name, epochs in (("a", {(1, 1): 30.0, (1, 2): 50.0}), ("b", {(1, 1): 30.0, (1, 2): 40.0})):
        (tmp_path / f"c{name}.json").write_text(json.dumps(_concurrent_record(epochs)))
    text = summarize(["ca.json", "cb.json"], tmp_path)
    # gains 2*30/50 = 1.2 and 2*30/40 = 1.5 -> median 1.35 (1.20-1.50); grid 8 epochs x 15 runs
    row = "| 1 | 2 | 1 | 45.0 (40.0–50.0) | 1.35× (1.20–1.50) | yes | 1.0 × 10⁻⁷ | 0.75 h (0.67–0.83) |"
    assert row in text
    assert "1.0 h running 1 at a time, 0.8 h (0.7–0.8) running 2 at a time" in text


def test_bench_summary_refuses_records_that_cannot_be_summarized(tmp_path, capsys):
    from lmreport.cli import main

    files = {"a": _jobs_record({(1, 1): 1.0, (1, 2): 2.0}), "b": _concurrent_record({(1, 1): 30.0}),
             "c": {**_jobs_record({(1, 1): 1.0}), "complete": False},
             "f": _jobs_record({(1, 1): 1.0}), "g": {**_jobs_record({(1, 1): 1.0}), "device_name": "gpu0"},
             "h": {"profile": "paper", "device": "cuda", "tf32_effect": [{"layers": 1}]}}
    for name, record in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    (tmp_path / "d.json").write_text("not json")
    for names, needle in ((["c"], "incomplete"), (["d"], "not a JSON bench record"), (["e"], "no such file"),
                          (["h"], "--tf32-effect"), (["c", "h"], "incomplete record (its bench was stopped); ")):
        assert main(["bench", "--summarize", *(str(tmp_path / f"{n}.json") for n in names)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    # records that cannot share a table are rendered in separate blocks, whatever cannot be is named
    from lmreport.benchtables import summarize
    for names, needle in ((["a", "b"], "one kind"), (["a", "f"], "same shape"), (["f", "g"], "differ in device_name")):
        with pytest.raises(ValueError, match=needle):
            summarize([f"{n}.json" for n in names], tmp_path)
    assert main(["bench", "--summarize", *(str(tmp_path / f"{n}.json") for n in "abcdfgh")]) == 0
    out = capsys.readouterr().out
    assert out.count("Rendered by") == 4   # a | b | f | g: each alone
    assert out.split("Not rendered:")[1].count("\n- ") == 3 and "d.json: not a JSON bench record" in out


def test_training_cross_entropy_is_the_published_criterion_to_the_last_bits():
    """F.cross_entropy (our step) against Σ −log p / N (the published criterion): the same
    gradient bit for bit, a loss value equal or a few ulps apart."""
    from lmreport.train import window_nll

    gen = torch.Generator().manual_seed(0)
    differ = 0
    for _ in range(10):
        logits = torch.randn(1400, 10_000, generator=gen) * 3  # batch 20 x bptt 70, PTB's vocabulary
        y = torch.randint(10_000, (1400,), generator=gen)
        a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        ours, published = F.cross_entropy(a, y), window_nll(b, y) / len(y)
        ours.backward()
        published.backward()
        assert torch.equal(a.grad, b.grad)
        ours, published = ours.detach(), published.detach()
        ulp = torch.finfo(torch.float32).eps * 2.0 ** torch.floor(torch.log2(published))
        assert abs(float(ours) - float(published)) <= 4 * float(ulp)
        differ += bool(ours != published)
    assert differ  # the values are not simply identical: the README's caveat is needed


def test_eval_accuracy_compares_both_evaluations_with_float64(tmp_path, tiny_corpus, capsys):
    from lmreport.bench import eval_accuracy
    from lmreport.train import train

    run = train(make_config("smoke", layers=1, epochs=1, when=[], data_dir=str(tiny_corpus), progress=False,
                            run_dir=str(tmp_path / "run"), max_train_tokens=None, max_eval_tokens=None,
                            bptt=12, batch_size=4, threads=1, save_best=False))
    record = eval_accuracy(run, out=str(tmp_path / "acc.json"))
    rows = {r["evaluation"]: r for r in record["eval_accuracy"]}
    assert set(rows) == {"chunked", "published", "float64 windows"}
    assert rows["float64 windows"]["ppl_relative_to_float64"] == 0.0
    for mode in ("chunked", "published"):
        assert abs(rows[mode]["nll_relative_to_float64"]) < 1e-6  # float32 arithmetic, not the bit
    assert json.loads((tmp_path / "acc.json").read_text())["eval_accuracy"] == record["eval_accuracy"]
    assert "float64 windows" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no best_valid.pt there"):
        eval_accuracy(run, checkpoint="best_valid", out=str(tmp_path / "no.json"))
    with pytest.raises(ValueError, match="is invalid: a folder; give a file name"):
        eval_accuracy(run, out=str(tmp_path))
    (run / "config.json").rename(run / "moved.json")
    with pytest.raises(ValueError, match="no config.json there"):
        eval_accuracy(run, out=str(tmp_path / "no.json"))
    assert not (tmp_path / "no.json").exists()


def test_differences_print_as_powers_of_ten_and_zero_as_zero():
    from lmreport.benchtables import _power_of_ten

    assert (_power_of_ten(7.8e-7), _power_of_ten(1.3e-07), _power_of_ten(0.0)) == ("7.8 × 10⁻⁷", "1.3 × 10⁻⁷", "0")


def test_batch_bound_measures_both_batches_and_states_the_bound(tmp_path, capsys):
    import json

    import pytest

    from lmreport.batchbound import run

    out = tmp_path / "bound.json"
    record = run("smoke", layers=[1], factor=2, steps=1, warmup=0, device="cpu", out=str(out))
    row = record["rows"][0]
    assert row["batch_size"] == 20 and row["factor"] == 2
    assert row["cost_ratio"] == pytest.approx(row["step_ms_at_factor_batch"] / row["step_ms"])
    assert row["max_gain_of_batching"] == pytest.approx(max(0.0, 1 - row["cost_ratio"] / 2))
    assert json.loads(out.read_text())["rows"] == record["rows"]
    assert "batching gains at most" in capsys.readouterr().out
    with pytest.raises(ValueError, match="factor=1 is invalid: an integer >= 2"):
        run("smoke", factor=1, out=str(tmp_path / "x.json"))
    with pytest.raises(ValueError, match="profile='big' is invalid"):
        run("big", out=str(tmp_path / "x.json"))
