"""A finished run without weights is replayed, checked equal to its metrics, and measured."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from lmreport.config import make_config
from lmreport.data import load_corpus
from lmreport.replay import ReplayMismatch, needs_replay, replay_and_measure, replay_dir
from lmreport.sharpness import SharpnessConfig, measure_run
from lmreport.train import train

CFG = SharpnessConfig(batches=1, lanczos_steps=3, hutchinson_probes=2, average_samples=1, worst_steps=1,
                      slice_points=3)


def _finished_run_without_weights(root, tiny_corpus, seed=141, name=None):
    run_dir = root / "smoke" / "runs" / (name or f"L1-adabelief-s{seed}")
    config = make_config("smoke", layers=1, epochs=2, when=[], data_dir=str(tiny_corpus), seed=seed,
                         run_dir=str(run_dir), progress=False, max_train_tokens=None, max_eval_tokens=None,
                         bptt=12, batch_size=4, threads=1)
    train(config)
    return run_dir


def test_replay_reproduces_the_run_and_measures_what_the_lost_weights_give(tmp_path, tiny_corpus):
    run_dir = _finished_run_without_weights(tmp_path, tiny_corpus)
    corpus = load_corpus(str(tiny_corpus), progress=False)
    original = measure_run(run_dir, config=CFG, corpus=corpus)  # from the weights training left
    for path in [*run_dir.glob("*.pt"), run_dir / "sharpness.json"]:
        path.unlink()
    assert needs_replay(run_dir, config=CFG)

    result = replay_and_measure(run_dir, config=CFG, corpus=corpus)

    assert result["lambda_max"] == original["lambda_max"] and result["trace"] == original["trace"]
    stored = json.loads((run_dir / "sharpness.json").read_text())
    assert stored["replayed"]["metrics_identical"] is True and stored["lambda_max"] == original["lambda_max"]
    assert not list(run_dir.glob("*.pt"))  # the weights stay in the git-ignored replay folder
    assert (replay_dir(run_dir) / "best_test.pt").is_file()
    assert replay_dir(run_dir) == tmp_path / "smoke" / "replay" / run_dir.name
    assert not needs_replay(run_dir, config=CFG)


def test_a_replay_that_differs_from_the_committed_metrics_writes_nothing(tmp_path, tiny_corpus):
    run_dir = _finished_run_without_weights(tmp_path, tiny_corpus, seed=6)
    for path in run_dir.glob("*.pt"):
        path.unlink()
    metrics = pd.read_csv(run_dir / "metrics.csv")
    metrics.loc[1, "test_ppl"] += 1e-9  # one committed number no longer what the code computes
    metrics.to_csv(run_dir / "metrics.csv", index=False)

    with pytest.raises(ReplayMismatch, match=r"L1-adabelief-s6 does not reproduce its metrics\.csv "
                                             r"\(epoch 2, test_ppl: .* instead of .*\); nothing was written"):
        replay_and_measure(run_dir, config=CFG, corpus=load_corpus(str(tiny_corpus), progress=False))
    assert not (run_dir / "sharpness.json").exists()


def test_sharpness_cli_replays_only_the_runs_that_need_it(tmp_path, tiny_corpus, capsys):
    from lmreport.cli import main

    # not the smoke grid's settings, so not a grid run's name: collect_runs lists it as a custom run
    run_dir = _finished_run_without_weights(tmp_path, tiny_corpus, name="tiny-adabelief")
    for path in run_dir.glob("*.pt"):
        path.unlink()
    argv = ["sharpness", "--profile", "smoke", "--layers", "1", "--variants", "adabelief", "--seeds", "141",
            "--results-dir", str(tmp_path), "--data-dir", str(tiny_corpus), "--no-progress", "--replay"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 finished run(s) to replay before measuring" in out and "replay 1/1: tiny-adabelief" in out
    assert "1 run(s) measured, 1 of them already stored; 0 skipped" in out
    assert main(argv) == 0  # the second time there is nothing to replay
    assert "0 finished run(s) to replay" in capsys.readouterr().out


def test_sharpness_cli_variants_leave_out_the_other_grid_variants(tmp_path, tiny_corpus, capsys):
    """collect_runs adds every variant on disk; --variants lm-cbrt must not replay another grid variant."""
    from lmreport.cli import main

    run_dir = _finished_run_without_weights(tmp_path, tiny_corpus, name="tiny-adabelief")
    for path in run_dir.glob("*.pt"):
        path.unlink()
    other = tmp_path / "smoke" / "runs" / "L1-adabelief-whh-trained-s141"  # a grid variant's folder, finished, no weights
    other.mkdir(parents=True)
    for name in ("config.json", "metrics.csv", "status.json"):
        (other / name).write_bytes((run_dir / name).read_bytes())
    from lmreport.grid import Job
    Job("smoke", 1, "adabelief-whh-trained", 141).config(tmp_path).to_json(other / "config.json")
    argv = ["sharpness", "--profile", "smoke", "--layers", "1", "--seeds", "141", "--results-dir", str(tmp_path),
            "--data-dir", str(tiny_corpus), "--no-progress", "--replay"]
    assert main([*argv, "--variants", "lm-cbrt"]) == 0
    out = capsys.readouterr().out  # the custom run is no grid variant and stays; the other was not asked for
    assert "1 finished run(s) to replay before measuring" in out and "whh-trained" not in out
