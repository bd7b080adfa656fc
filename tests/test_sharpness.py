"""Sharpness measures: the finite-difference HVP against exact double backward, and the rest."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmreport.model import AWDLSTM
from lmreport.sharpness import (Objective, SharpnessConfig, filter_normalized_direction, hutchinson,
                                lanczos, measure, measurement_mode)

CFG = SharpnessConfig(batches=2, batch_size=3, bptt=6, burn_in=4, lanczos_steps=8, hutchinson_probes=6,
                      average_samples=3, worst_steps=2, slice_points=5)


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    model = AWDLSTM(30, 2, emsize=6, nhid=8)
    tokens = torch.randint(30, (600,), generator=torch.Generator().manual_seed(1))
    return model, tokens


def exact_hvp(obj: Objective, v):
    with measurement_mode(obj.model):
        loss = sum(obj._batch_loss(*b) for b in obj.batches) / len(obj.batches)
        grads = torch.autograd.grad(loss, obj.params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, v))
        return [h.detach() for h in torch.autograd.grad(dot, obj.params)]


def test_finite_difference_hvp_matches_double_backward(tiny):
    model, tokens = tiny
    obj = Objective(model, tokens, CFG)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        v = [torch.randn(p.shape, generator=gen) for p in obj.params]
        fd, exact = obj.hvp(v), exact_hvp(obj, v)
        num = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(fd, exact)))
        den = torch.sqrt(sum((b ** 2).sum() for b in exact))
        assert float(num / den) < 1e-2
    assert all(torch.equal(p, w0) for p, w0 in zip(obj.params, obj.origin))  # weights restored
    # the stream holds the last word, whose input gradient the published lookup cuts: the
    # measurement uses the true gradient (the cut one has no symmetric Hessian) and restores it
    assert (tokens == 29).any() and model.padding_idx == 29


def test_frozen_recurrent_matrices_are_not_measured(tiny):
    model, tokens = tiny
    names = [n for n, p in model.named_parameters() if any(p is q for q in Objective(model, tokens, CFG).params)]
    assert not any(n.endswith("weight_hh_l0") for n in names)
    model.rnns[0].mode = "trained"
    names = [n for n, p in model.named_parameters() if any(p is q for q in Objective(model, tokens, CFG).params)]
    assert "rnns.0.weight_hh_l0" in names


def test_lanczos_and_hutchinson_on_a_known_matrix():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(40, 40, dtype=torch.float64))
    eig = torch.linspace(-2, 5, 40, dtype=torch.float64)
    H = q @ torch.diag(eig) @ q.T
    hvp = lambda v: [H @ v[0]]  # noqa: E731
    like = [torch.zeros(40, dtype=torch.float64)]
    out = lanczos(hvp, like, 40, torch.Generator().manual_seed(0))
    assert out["lambda_max"] == pytest.approx(5.0, abs=1e-6) and out["lambda_min"] == pytest.approx(-2.0, abs=1e-6)
    tr = hutchinson(hvp, like, 400, torch.Generator().manual_seed(0))
    assert abs(tr["trace"] - float(eig.sum())) < 4 * tr["trace_stderr"]


def test_filter_normalised_direction_rows_match_weight_rows():
    w = [torch.randn(5, 3), torch.randn(4)]
    d = filter_normalized_direction(w, torch.Generator().manual_seed(0))
    assert torch.allclose(d[0].norm(dim=1), w[0].norm(dim=1)) and torch.equal(d[1], torch.zeros(4))


def test_measure_returns_every_measure_and_leaves_the_model_as_it_was(tiny):
    model, tokens = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    out = measure(model, tokens, CFG)
    for key in ("loss", "weight_norm", "lambda_max", "lambda_min", "trace", "trace_stderr",
                "avg_sharpness_0.01", "worst_sharpness_0.001", "slice_loss", "hvp_seconds"):
        assert key in out and np.all(np.isfinite(out[key])), key
    assert out["lambda_max"] >= out["lambda_min"]
    assert out["slice_loss"][len(out["slice_loss"]) // 2] == pytest.approx(out["loss"], rel=1e-5)
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_measure_runs_caches_and_skips_runs_without_weights(tmp_path, tiny_corpus):
    import pandas as pd

    from lmreport.config import make_config
    from lmreport.data import load_corpus
    from lmreport.sharpness import measure_run, measure_runs
    from lmreport.train import train

    runs = []
    for name in ("a", "b"):
        config = make_config("smoke", layers=1, epochs=1, when=[], data_dir=str(tiny_corpus),
                             run_dir=str(tmp_path / name), progress=False, max_train_tokens=None,
                             max_eval_tokens=None, bptt=12, batch_size=4)
        runs.append(train(config))
    corpus = load_corpus(str(tiny_corpus), progress=False)
    first = measure_run(runs[0], config=CFG, corpus=corpus)
    assert (runs[0] / "sharpness.json").is_file() and not list(runs[0].glob(".*.tmp"))
    for weights in ("best_test.pt", "best_valid.pt", "checkpoint.pt"):
        (runs[0] / weights).unlink()   # a fresh clone: the stored result, no weights
        (runs[1] / weights).unlink()
    table, skipped = measure_runs(pd.DataFrame({"run_dir": runs}), config=CFG, corpus=corpus)
    assert skipped == [str(runs[1])]
    assert list(table.run_dir) == [runs[0]] and table.lambda_max[0] == first["lambda_max"]
    with pytest.raises(FileNotFoundError, match=r"best_test\.pt is missing"):
        measure_run(runs[1], config=CFG, corpus=corpus)


MEASURE_ONE = """
import json, sys
from lmreport.sharpness import SharpnessConfig, measure_run
config = SharpnessConfig(batches=1, lanczos_steps=3, hutchinson_probes=2, average_samples=1, worst_steps=1,
                         slice_points=3)
print(json.dumps(measure_run(sys.argv[1], config=config, force=True, fast_malloc=sys.argv[2] == "on")))
"""


def test_allocator_tuning_leaves_the_sharpness_numbers_bit_identical(tmp_path, ptb_dir):
    import json
    import os
    import subprocess
    import sys

    from lmreport.config import make_config
    from lmreport.train import train

    # the smoke model on PTB: 10,000-word logits, the blocks the tuning is for
    run = train(make_config("smoke", layers=1, epochs=1, when=[], data_dir=str(ptb_dir),
                            run_dir=str(tmp_path / "run"), progress=False, threads=1, fast_malloc=False))
    out = {}
    for mode in ("off", "on"):  # each in a process of its own: the tuning holds for the whole process
        proc = subprocess.run([sys.executable, "-c", MEASURE_ONE, str(run), mode], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
        out[mode] = json.loads(proc.stdout)
        for timing in ("hvp_seconds", "seconds"):
            out[mode].pop(timing)
    assert out["on"] == out["off"] and out["on"]["lambda_max"] > out["on"]["lambda_min"]


def test_a_run_is_measured_at_its_end_only_when_asked_and_finished(tmp_path, tiny_corpus):
    import json

    from lmreport.config import PROFILES, make_config
    from lmreport.sharpness import measure_after_training
    from lmreport.train import train

    assert PROFILES["converged"].measure_sharpness and not PROFILES["smoke"].measure_sharpness
    config = make_config("smoke", layers=1, epochs=1, when=[], data_dir=str(tiny_corpus),
                         run_dir=str(tmp_path / "run"), progress=False, max_train_tokens=None,
                         max_eval_tokens=None, bptt=12, batch_size=4)
    run = train(config)
    assert measure_after_training(run) is None            # the smoke profile does not ask
    assert measure_after_training(run, wanted=False) is None
    assert not (run / "sharpness.json").exists()
    result = measure_after_training(run, wanted=True)
    assert result["lambda_max"] > 0 and json.loads((run / "sharpness.json").read_text())["lambda_max"] == result["lambda_max"]
    (run / "best_test.pt").unlink()                       # weights gone: left alone, no error
    (run / "sharpness.json").unlink()
    assert measure_after_training(run, wanted=True) is None and not (run / "sharpness.json").exists()


def test_a_finished_run_stopped_before_its_measurement_is_not_settled(tmp_path):
    """A grid stopped between a run's last epoch and its sharpness leaves it finished but
    unmeasured; while its weights are here the next grid sitting runs it again to measure it."""
    import json as _json

    from lmreport.config import make_config
    from lmreport.grid import settled
    from lmreport.sharpness import unmeasured

    def folder(profile, status="finished", weights=True, measured=False):
        run = tmp_path / f"{profile}-{status}-{weights}-{measured}"
        run.mkdir()
        make_config(profile, layers=1).to_json(run / "config.json")
        (run / "status.json").write_text(_json.dumps({"status": status}))
        if weights:
            (run / "best_test.pt").write_bytes(b"")
        if measured:
            (run / "sharpness.json").write_text("{}")
        return run

    stopped = folder("converged")
    assert unmeasured(stopped) and not settled(stopped)
    assert settled(folder("converged", measured=True))
    assert settled(folder("converged", weights=False))      # only a replay can measure it now
    assert settled(folder("smoke"))                          # its profile measures nothing
    assert not unmeasured(folder("converged", status="interrupted"))
    assert settled(folder("converged", status="diverged"))
