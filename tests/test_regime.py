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


def test_the_converged_profile_is_the_chosen_candidate():
    """The profile's values are typed in config.py; they must train what the pilot scored."""
    from lmreport.config import make_config
    from lmreport.regime import PROFILE_CANDIDATE, acting_settings, candidate_config

    for layers in (1, 2, 3):
        for seed in (141, 6):
            profile = make_config("converged", layers=layers, seed=seed)
            assert acting_settings(profile) == acting_settings(candidate_config(PROFILE_CANDIDATE, layers, seed, "."))


def test_the_committed_converged_baselines_meet_the_regime_criteria():
    """Issue #17's acceptance on the committed runs: every finished AdaBelief run of the
    chosen candidate (pilot folders and the grid's runs) is converged, has the study's
    generalisation gap and lr drops that act, at every depth, and the depth means are in
    the study's order. Fails as soon as a committed run breaks a criterion."""
    from pathlib import Path

    from lmreport.regime import PROFILE_CANDIDATE

    root = Path(__file__).resolve().parents[1] / "results" / "converged" / "pilot"
    table = pilot_table(root)
    chosen = table[(table.candidate == PROFILE_CANDIDATE) & (table.status == "finished")]
    assert set(chosen.layers) == {1, 2, 3}, "a depth has no finished baseline run"
    bad = chosen[~(chosen.converged & chosen.gap & chosen.drops).astype(bool)]
    assert bad.empty, bad[["layers", "seed", "converged", "gap", "drops"]].to_string()
    means = chosen.groupby("layers")["min test"].mean()
    assert means[3] < means[2] < means[1], means.to_dict()


def test_readme_converged_grid_block_is_what_the_committed_runs_say():
    from pathlib import Path

    from lmreport.regime import GRID_END, GRID_START, grid_markdown

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text(encoding="utf-8")
    block = text.split(GRID_START + "\n")[1].split("\n" + GRID_END)[0]
    assert block == grid_markdown(root / "results")


def test_grid_progress_counts_finished_runs_per_variant_and_depth(tmp_path):
    import json

    from lmreport.regime import GRID_VARIANTS, grid_markdown, grid_progress

    run = tmp_path / "converged" / "runs" / "L2-lm-x-s6"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"status": "finished", "epoch": 45}))
    (tmp_path / "converged" / "grid_sittings.csv").write_text(
        "started,wall_minutes,ran,skipped,failed,jobs,threads_per_job,host,variants,outcome\n"
        "2026-12-03T16:00:00+0000,90.0,1,0,0,2,1,vm,x,interrupted\n"
        "2026-12-04T10:00:00+0000,30.0,0,1,0,2,1,vm,x,complete\n")
    progress = grid_progress(tmp_path)
    # the 72 runs, then seeds for the study's five: one more at one layer, five at three
    assert len(progress) == len(GRID_VARIANTS) * 3 * 3 + 5 * 1 + 5 * 5 and progress.finished.sum() == 1
    text = grid_markdown(tmp_path)
    assert "| `lm-x` | 0/4 | 1/3 | 0/8 |" in text and "| `lm-cbrt-czero` | 0/3 | 0/3 | 0/3 |" in text
    assert "1 of 102 planned runs finished; 2 grid sitting(s) so far, 2.0 h of wall time in all" in text
    assert "Interim paired" not in text  # one seed of one variant: no depth is complete


def test_seeds_from_spread_pools_the_paired_variances_of_a_depth(monkeypatch):
    import pandas as pd

    from lmreport import regime

    rows = [("adabelief", s, v) for s, v in zip((1, 2, 3), (100.0, 101.0, 102.0))]
    rows += [("lm-x", s, v) for s, v in zip((1, 2, 3), (100.5, 101.5, 103.0))]  # d = .5 .5 1: var 1/12
    rows += [("lm-x2", s, v) for s, v in zip((1, 2, 3), (101.0, 103.0, 105.0))]  # d = 1 2 3: var 1
    runs = pd.DataFrame([{"layers": 2, "variant": v, "seed": s, "min_test": m, "status": "finished"}
                         for v, s, m in rows])
    monkeypatch.setattr(regime, "_complete_runs", lambda results, profile: runs)
    table = regime.seeds_from_spread("unused")
    assert table.to_dict("records") == [{
        "layers": 2, "variants pooled": 2, "seeds each": 3, "AdaBelief mean": "101.00",
        "paired sd": "0.74",  # sqrt((1/12 + 1) / 2)
        "seeds for a 1% interval": "5",  # t(.975, 4) * 0.736 / sqrt(5) = 0.91 <= 1.01; at 4 seeds 1.17
        "planned seeds": "3",  # the converged grid's count at two layers
        "half-width at planned seeds": "1.83 (1.8%)"}]  # t(.975, 2) * 0.736 / sqrt(3)


def test_interim_statistics_pair_over_the_seeds_every_study_variant_has_finished(monkeypatch):
    """A seed counts at a depth once all five study variants have finished it; an ablation
    once all its own seeds have; a depth with fewer than three such seeds shows nothing."""
    import pandas as pd

    from lmreport import regime
    from lmreport.grid import STUDY_VARIANTS

    done = {(3, v, s) for v in STUDY_VARIANTS for s in (141, 6, 42, 1)}   # seed 1 complete
    done |= {(3, "lm-x", 2), (3, "adabelief", 2)}                          # seed 2 begun
    done |= {(3, "lm-cbrt-czero", s) for s in (141, 6, 42)}               # an ablation complete
    done |= {(3, "adabelief-whh-trained", s) for s in (141, 6)}           # one not
    done |= {(1, v, s) for v in STUDY_VARIANTS for s in (141, 6)}          # two seeds only
    planned = regime.grid_progress("unused")
    progress = planned.assign(finished=[k in done for k in zip(planned.layers, planned.variant, planned.seed)])
    monkeypatch.setattr(regime, "grid_progress", lambda results, profile="converged", variants=None: progress)
    runs = pd.DataFrame([{"layers": n, "variant": v, "seed": s, "status": "finished", "min_test": 1.0}
                         for n, v, s in sorted(done)])
    monkeypatch.setattr("lmreport.report.collect_runs", lambda profile, root, variants=None: (
        runs[runs.variant.isin(variants)], None))
    study = regime._complete_runs("unused", "converged")
    assert set(study.layers) == {3} and len(study) == 5 * 4
    assert set(study.seed) == {141, 6, 42, 1}
    every = regime._complete_runs("unused", "converged", variants=regime.GRID_VARIANTS)
    assert set(every.variant) == set(STUDY_VARIANTS) | {"lm-cbrt-czero"} and len(every) == 5 * 4 + 3


def test_interim_ablations_pair_each_ablation_with_adabelief_and_its_own_reference(monkeypatch):
    import pandas as pd

    from lmreport import regime

    rows = [("adabelief", (100.0, 101.0, 102.0)), ("lm-x", (100.5, 101.5, 103.0)),
            ("lm-cbrt", (99.0, 101.0, 101.5)), ("lm-cbrt-czero", (97.0, 98.0, 100.0)),
            ("adabelief-whh-trained", (96.0, 98.0, 98.5))]  # its LM partner is not complete: no own pair
    runs = pd.DataFrame([{"layers": 1, "variant": v, "seed": s, "min_test": m, "status": "finished"}
                         for v, values in rows for s, m in zip((1, 2, 3), values)])
    monkeypatch.setattr(regime, "_complete_runs", lambda results, profile, variants=None: runs)
    table = regime.interim_ablations("unused")
    got = table[["variant", "against", "seeds", "mean difference", "better on"]].to_dict("records")
    assert got == [
        {"variant": "AdaBelief-LM ∛x c_mode=zero", "against": "AdaBelief", "seeds": 3,
         "mean difference": "-2.67", "better on": "3 of 3"},  # d = -3 -3 -2
        {"variant": "AdaBelief wdrop_mode=trained", "against": "AdaBelief", "seeds": 3,
         "mean difference": "-3.50", "better on": "3 of 3"},  # d = -4 -3 -3.5
        {"variant": "AdaBelief-LM ∛x c_mode=zero", "against": "AdaBelief-LM ∛x", "seeds": 3,
         "mean difference": "-2.17", "better on": "3 of 3"}]  # d = -2 -3 -1.5
    assert "published %" in table and set(table["published %"]) == {"–"}


def test_profile_regime_calls_the_cpu_profile_a_proxy_and_the_converged_one_in_the_regime():
    import re
    from pathlib import Path

    from lmreport.regime import profile_regime
    from lmreport.report import collect_runs

    results = Path(__file__).resolve().parents[1] / "results"
    runs, epochs = collect_runs("cpu", results)
    table, lines = profile_regime(runs, epochs, "cpu")
    assert len(table) == 9 and not table.gap.any() and table.converged.sum() == 6  # 3 layers still gain >1%
    assert lines == ["Depth order (criterion 4): mean min test PPL 393.76 at 1 layer, 228.27 at 2 layers, "
                     "250.01 at 3 layers; not the study's 3 < 2 < 1.",
                     "0 of 9 finished adabelief runs meet criteria 1-3 (failed: converged in 3, gap in 9).",
                     "Test minimum at the last epoch in 81 of 81 finished runs (every variant)."]
    runs, epochs = collect_runs("converged", results)
    table, lines = profile_regime(runs, epochs, "converged")
    assert len(table) >= 9 and (table.converged & table.gap & table.drops).all()
    assert lines[0].endswith("3 < 2 < 1 layers, as in the study.")
    assert re.fullmatch(r"(\d+) of \1 finished adabelief runs meet criteria 1-3\.", lines[1])
    assert re.fullmatch(r"Test minimum at the last epoch in \d+ of \d+ finished runs \(every variant\)\.", lines[2])
