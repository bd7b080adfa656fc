"""The regime criteria of issue #17 on hand-made curves, and the lr-drop scaling."""
import pandas as pd

from lmreport.regime import pilot_table, run_checks, scaled_when


def curves(train, test):
    n = len(train)
    return pd.DataFrame({"epoch": range(1, n + 1), "train_ppl": train, "test_ppl": test,
                         "seconds": [10.0] * n})


def test_scaled_when_keeps_the_study_split():
    assert scaled_when(200) == [100, 145]
    assert scaled_when(8) == [5, 7]  # the cpu profile
    assert scaled_when(16) == [9, 13]


def test_a_run_still_improving_is_not_converged():
    m = curves([300, 200, 150, 120, 100], [300, 250, 200, 180, 160])
    checks = run_checks(m, [3, 4])
    assert checks["best epoch"] == 5 and not checks["converged"]
    assert checks["last-fifth gain"] == 1 - 160 / 180


def test_a_flat_or_overfitting_end_is_converged_with_its_gap():
    flat = run_checks(curves([300, 200, 100, 80, 79.9], [300, 200, 120, 100, 99.5]), [3, 4])
    assert flat["converged"] and flat["gap"] and flat["train/test"] == 79.9 / 99.5
    over = run_checks(curves([300, 200, 100, 60, 50], [300, 200, 110, 105, 108]), [3, 4])
    assert over["converged"] and over["best epoch"] == 4


def test_no_gap_and_a_drop_after_the_best_epoch_that_moves_nothing_fail():
    m = curves([300, 200, 150, 149, 149], [290, 190, 140, 145, 150])
    checks = run_checks(m, [4, 5])
    assert not checks["gap"]             # 150/140 > 0.9
    assert not checks["drops"]           # best at 3, drops at 4 and 5 barely move train
    moved = run_checks(curves([300, 200, 180, 120, 119], [290, 190, 140, 145, 150]), [4])
    assert moved["drops"]                # train falls 33% in the drop epoch, 10% the epoch before


def test_pilot_table_scores_runs_and_the_depth_order(tmp_path):
    from lmreport.regime import candidate_config

    for layers, test in ((1, 200), (2, 150), (3, 140)):
        run = tmp_path / "A" / f"L{layers}"
        run.mkdir(parents=True)
        candidate_config("A", layers, 141, tmp_path).to_json(run / "config.json")
        curves([300, 100, 90], [300, test + 1, test]).to_csv(run / "metrics.csv", index=False)
        (run / "status.json").write_text('{"status": "finished"}')
    table = pilot_table(tmp_path)
    a = table[table.candidate == "A"]
    assert list(a.layers) == [1, 2, 3] and a["depth order"].all()
    assert list(a["min test"]) == [200, 150, 140]
    # Alr shares A's 2- and 3-layer runs (same settings) and has no 1-layer run of its own
    alr = table[table.candidate == "Alr"]
    assert list(alr.layers) == [2, 3] and list(alr.folder) == ["A/L2", "A/L3"] and alr["depth order"].isna().all()


def test_committed_pilot_runs_are_their_candidates_settings():
    """Every committed pilot folder holds exactly what its candidate defines, so the
    README's pilot table traces to CANDIDATES."""
    from pathlib import Path

    from lmreport.config import RunConfig
    from lmreport.regime import candidate_config

    root = Path(__file__).resolve().parents[1] / "results" / "converged" / "pilot"
    paths = sorted(root.glob("*/*/config.json"))
    assert paths, "no committed pilot runs"
    for path in paths:
        got = RunConfig.from_json(path)
        want = candidate_config(path.parent.parent.name, got.layers, got.seed, root)
        assert got.science() == want.science(), path


def test_an_unknown_candidate_is_named():
    import pytest

    from lmreport.regime import candidate_config

    with pytest.raises(ValueError, match="candidate='Z' is invalid: one of A, Alr, B, Blr"):
        candidate_config("Z", 1, 141, ".")


def test_readme_pilot_block_is_what_the_committed_runs_say():
    """The README's pilot block is generated (pilot --update-readme); it must equal what the
    committed pilot runs render today."""
    from pathlib import Path

    from lmreport.regime import README_END, README_START, pilot_markdown

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text(encoding="utf-8")
    block = text.split(README_START + "\n")[1].split("\n" + README_END)[0]
    assert block == pilot_markdown(root / "results" / "converged" / "pilot")


def test_a_one_layer_run_is_shared_by_candidates_that_differ_only_between_layers(tmp_path):
    from lmreport.regime import candidate_config, shared_run

    run = tmp_path / "Blr" / "L1"
    run.mkdir(parents=True)
    candidate_config("Blr", 1, 141, tmp_path).to_json(run / "config.json")
    curves([300, 100, 90], [300, 201, 200]).to_csv(run / "metrics.csv", index=False)
    (run / "status.json").write_text('{"status": "finished"}')
    table = pilot_table(tmp_path)
    assert list(table.candidate) == ["Blr", "C"] and set(table.folder) == {"Blr/L1"}
    from lmreport.regime import pilot_runs
    assert shared_run(candidate_config("C", 1, 141, tmp_path), pilot_runs(tmp_path)) == run
    assert shared_run(candidate_config("C", 2, 141, tmp_path), pilot_runs(tmp_path)) is None


def test_seeds_needed_for_a_one_percent_interval():
    from lmreport.regime import seeds_needed

    # sd 1 PPL at baseline 200: 2 PPL allowed; n=3 gives 4.30/1.73 = 2.48, n=4 3.18/2 = 1.59
    assert seeds_needed(1.0, 200) == 4
    assert seeds_needed(0.1, 200) == 2
    assert seeds_needed(50.0, 200) is None
