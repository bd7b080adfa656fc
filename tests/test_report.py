"""Generated conclusions: the sentences notebook 04 writes follow the numbers."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from lmreport.report import conclusions


def _runs(means: dict[str, float], spread: float = 0.5) -> pd.DataFrame:
    rows = []
    for variant, mean in means.items():
        for k, seed in enumerate((141, 6, 42)):
            value = mean + (k - 1) * spread
            rows.append({"layers": 1, "variant": variant, "seed": seed, "status": "finished",
                         "min_train": value + 100, "min_test": value, "test_at_best_valid": value + 1})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("means, trend", [
    ({"adabelief": 394, "lm-x2": 395, "lm-x": 398, "lm-sqrt": 401, "lm-cbrt": 403}, "the worse"),
    ({"adabelief": 394, "lm-x2": 399, "lm-x": 398, "lm-sqrt": 397, "lm-cbrt": 390}, "the better"),
    ({"adabelief": 394, "lm-x2": 399, "lm-x": 401, "lm-sqrt": 397, "lm-cbrt": 396}, None),
])
def test_ordering_sentence_states_the_trend_only_when_monotone(means, trend):
    lines = conclusions(_runs(means), "test_at_best_valid")
    order = next(line for line in lines if "Ordering of f" in line)
    if trend:
        assert f"the stronger the modification, {trend}, monotonically in f" in order
    else:
        assert "monotonically" not in order


def test_verdict_compares_the_best_variant_with_the_seed_spread():
    best_lm = conclusions(_runs({"adabelief": 394, "lm-x2": 390, "lm-x": 398, "lm-sqrt": 401, "lm-cbrt": 403}))
    assert "AdaBelief 394.00 (std 0.50)" in best_lm[0]
    assert "AdaBelief-LM x² is the best of the study's variants, 4.00 below AdaBelief (-1.0%)" in best_lm[0]
    assert "larger than the largest seed standard deviation among them (0.50)" in best_lm[0]
    assert "published order" in best_lm[1]
    baseline = conclusions(_runs({"adabelief": 394, "lm-x2": 394.2, "lm-x": 398, "lm-sqrt": 401, "lm-cbrt": 403}))
    assert "AdaBelief itself is the best of the study's variants" in baseline[0]


def test_a_depth_with_only_the_baseline_finished_claims_no_winner():
    alone = conclusions(_runs({"adabelief": 394}))
    assert alone[0] == ("1 layer(s), min test PPL (study's \"valid\"): AdaBelief 394.00 (std 0.50); "
                        "no other study variant has finished at this depth yet.")


def test_decay_factor_of_the_wdx2_ablation_traces_to_the_x2_run(tmp_path):
    import json

    from lmreport.config import make_config
    from lmreport.grid import variant_overrides
    from lmreport.report import decay_factors

    runs_dir = tmp_path / "smoke" / "runs"
    source = runs_dir / "L2-lm-x2-s6"
    source.mkdir(parents=True)
    (source / "status.json").write_text(json.dumps({"status": "finished"}))
    pd.DataFrame({"epoch": [1, 2], "lm_scale": [0.9, 0.7]}).to_csv(source / "metrics.csv", index=False)
    config = make_config("smoke", layers=2, seed=6, **variant_overrides("adabelief-wdx2", "smoke", 2, 6, tmp_path))
    ablation = runs_dir / "L2-adabelief-wdx2-s6"
    ablation.mkdir()
    config.to_json(ablation / "config.json")
    runs = pd.DataFrame([{"layers": 2, "variant": "adabelief-wdx2", "seed": 6, "status": "finished",
                          "run_dir": str(ablation)}])
    row = decay_factors(runs, "smoke").iloc[0]
    assert row["source run"] == "L2-lm-x2-s6"
    assert row["factor D = 1/scale"] == pytest.approx(1 / 0.8)
    assert row["decay used / profile decay"] == pytest.approx(1 / 0.8)


def test_ablation_pair_is_compared_with_its_own_baseline():
    from lmreport.report import paired_comparisons, paired_lines

    runs = _runs({"adabelief": 394, "lm-cbrt": 403, "adabelief-whh-trained": 380, "lm-cbrt-whh-trained": 385})
    runs.loc[runs.variant == "lm-cbrt-whh-trained", "min_test"] += [0.0, 1.0, 2.0]   # not a constant shift
    paired = paired_comparisons(runs, metrics=("min_test",))
    own = paired[paired["variant"].eq("lm-cbrt-whh-trained") & paired["baseline"].str.contains("trained")]
    assert len(own) == 1 and own["mean difference"].iloc[0] == pytest.approx(6.0)
    vs_adabelief = paired[paired["variant"].eq("lm-cbrt-whh-trained") & paired["baseline"].eq("AdaBelief")]
    assert vs_adabelief["mean difference"].iloc[0] == pytest.approx(-8.0)
    lines = paired_lines(paired, "min_test")
    assert any("AdaBelief-LM ∛x wdrop_mode=trained − AdaBelief wdrop_mode=trained" in line and "+6.00" in line
               for line in lines)
    assert all("the interval" in line for line in lines)


def test_models_without_committed_weights_are_listed_not_fatal(tmp_path):
    import torch

    from lmreport.config import make_config
    from lmreport.report import load_models, read_table, save_table
    from lmreport.train import build_model

    config = make_config("smoke", layers=1, seed=6)
    rows = []
    for name, with_weights in (("L1-adabelief-s6", True), ("L1-lm-cbrt-s6", False)):
        folder = tmp_path / name
        folder.mkdir()
        config.to_json(folder / "config.json")
        if with_weights:
            torch.save({"model": build_model(config, 40).state_dict()}, folder / "best_test.pt")
        rows.append({"layers": 1, "variant": name.split("-", 1)[1].rsplit("-", 1)[0], "run_dir": str(folder)})
    models, missing = load_models(pd.DataFrame(rows), 40)
    assert list(models) == [(1, "adabelief")] and not models[(1, "adabelief")].training
    assert missing == ["L1-lm-cbrt-s6"]
    assert read_table("nothing", tmp_path) is None
    save_table(pd.DataFrame({"a": [1.5, 393.7612], "p": [0.003622, 8.26e-12], "n": [3, 4]}), "t", tmp_path)
    assert read_table("t", tmp_path)["p"].tolist() == [0.003622, 8.26e-12]
    md = (tmp_path / "t.md").read_text().splitlines()
    assert [line.replace(" ", "") for line in md[2:]] == ["|1.5|0.003622|3|", "|393.761|8.26e-12|4|"]


def test_models_of_two_seeds_under_one_key_are_refused(tmp_path):
    from lmreport.report import load_models

    runs = pd.DataFrame([{"layers": 1, "variant": "adabelief", "run_dir": str(tmp_path / f"L1-adabelief-s{s}")}
                         for s in (141, 6)])
    with pytest.raises(ValueError, match="L1-adabelief-s141, L1-adabelief-s6 share"):
        load_models(runs, 40)


def test_a_copy_of_a_grid_run_never_replaces_it_and_other_runs_are_custom(tmp_path):
    from lmreport.config import make_config
    from lmreport.report import collect_runs

    runs_dir = tmp_path / "smoke" / "runs"
    for folder, config, ppl in (("L1-adabelief-s6", make_config("smoke", layers=1, seed=6), 50.0),
                                ("1layer-adabelief-seed6", make_config("smoke", layers=1, seed=6), 60.0),
                                ("zz-copy", make_config("smoke", layers=1, seed=6), 70.0),
                                ("lr-0.5", make_config("smoke", layers=1, seed=6, lr=0.5), 80.0),
                                ("wdecay-0", make_config("smoke", layers=1, seed=6, wdecay=0.0), 90.0)):
        (runs_dir / folder).mkdir(parents=True)
        config.to_json(runs_dir / folder / "config.json")
        (runs_dir / folder / "status.json").write_text('{"status": "finished"}')
        pd.DataFrame({"epoch": [1], "train_ppl": [ppl], "valid_ppl": [ppl], "test_ppl": [ppl],
                      "seconds": [1.0]}).to_csv(runs_dir / folder / "metrics.csv", index=False)
    runs, _ = collect_runs("smoke", tmp_path, layers=[1], variants=["adabelief"], seeds=[6])
    # runs of other settings keep their folder's name: these two would share a run name
    assert runs[["variant", "min_test"]].values.tolist() == [["adabelief", 50.0], ["custom:lr-0.5", 80.0],
                                                            ["custom:wdecay-0", 90.0]]


def test_runs_on_disk_of_other_seeds_and_depths_are_left_out_when_some_are_asked_for(tmp_path):
    from lmreport.config import make_config
    from lmreport.report import collect_runs

    for layers, seed, spec in ((1, 141, {}), (1, 6, {}), (2, 141, {}), (1, 141, {"wdecay": 0.0})):
        folder = tmp_path / "smoke" / "runs" / f"L{layers}-s{seed}{'-custom' if spec else ''}"
        folder.mkdir(parents=True)
        make_config("smoke", layers=layers, seed=seed, **spec).to_json(folder / "config.json")
        (folder / "status.json").write_text('{"status": "finished"}')
    everything, _ = collect_runs("smoke", tmp_path, variants=["adabelief"])
    assert sorted(everything.loc[everything.status == "finished", ["layers", "seed"]].values.tolist()) == \
        [[1, 6], [1, 141], [1, 141], [2, 141]]
    asked, _ = collect_runs("smoke", tmp_path, layers=[1], variants=["adabelief"], seeds=[141])
    # the custom run of that depth and seed stays: a variant nobody asked to drop
    assert asked[["layers", "variant", "seed", "status"]].values.tolist() == [
        [1, "adabelief", 141, "finished"], [1, "custom:L1-s141-custom", 141, "finished"]]


def test_an_extra_seed_counts_once_every_study_variant_of_its_depth_has_finished_it(tmp_path):
    from lmreport.grid import STUDY_VARIANTS, Job
    from lmreport.report import PARTIAL_SEED, collect_runs, hold_back_partial_seeds

    def run(layers, variant, seed, ppl, status="finished"):
        job = Job("smoke", layers, variant, seed)
        folder = job.run_dir(tmp_path)
        folder.mkdir(parents=True)
        job.config(tmp_path).to_json(folder / "config.json")
        (folder / "status.json").write_text(json.dumps({"status": status}))
        pd.DataFrame({"epoch": [1], "train_ppl": [ppl], "valid_ppl": [ppl], "test_ppl": [ppl],
                      "seconds": [1.0]}).to_csv(folder / "metrics.csv", index=False)

    for variant in STUDY_VARIANTS:
        run(1, variant, 141, 100.0)
        run(1, variant, 1, 90.0, "diverged" if variant == "lm-x2" else "finished")  # seed 1 settled
        run(2, variant, 141, 100.0)
    run(2, "adabelief", 1, 80.0)                 # seed 1 begun at two layers
    run(2, "lm-cbrt-czero", 1, 85.0)
    run(2, "lm-x", 1, 85.0, "interrupted")
    run(4, "adabelief", 9, 70.0)                 # a depth the study has no variants at: nothing to wait for
    runs, epochs = collect_runs("smoke", tmp_path)
    status = {(n, v, s): st for n, v, s, st in zip(runs.layers, runs.variant, runs.seed, runs.status)}
    assert all(status[(1, v, 1)] in ("finished", "diverged") for v in STUDY_VARIANTS)
    assert status[(2, "adabelief", 1)] == status[(2, "lm-cbrt-czero", 1)] == PARTIAL_SEED
    assert status[(2, "lm-x", 1)] == "interrupted" and status[(4, "adabelief", 9)] == "finished"
    assert status[(2, "adabelief", 141)] == "finished"  # the grid's own seeds never wait for others
    # no epoch of the held-back seed, finished or not: the curves average the same seeds
    assert not ((epochs.layers == 2) & (epochs.seed == 1)).any() and ((epochs.layers == 1) & (epochs.seed == 1)).any()
    asked, _ = collect_runs("smoke", tmp_path, layers=[2], seeds=[141, 1])  # naming the seed changes nothing
    assert asked.loc[(asked.variant == "adabelief") & (asked.seed == 1), "status"].tolist() == [PARTIAL_SEED]
    every, _ = collect_runs("smoke", tmp_path, whole_seeds=False)  # the sharpness command's view
    assert (every.status == "finished").sum() == 4 + 5 + 5 + 2 + 1
    assert hold_back_partial_seeds(pd.DataFrame()).empty


def test_markdown_tables_keep_integers_and_mark_missing_values():
    from lmreport.report import markdown_table

    table = pd.DataFrame({"layers": [1, 2], "runs": [27, 3], "tau": [0.1234, float("nan")],
                          "p": ["0.012", "0.500"], "mean difference": ["+1.26", "-0.30"], "variant": ["a", "b"]})
    lines = markdown_table(table, ".3f").splitlines()
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["1", "27", "0.123", "0.012", "+1.26", "a"]
    assert [c.strip() for c in lines[3].split("|")[1:-1]] == ["2", "3", "–", "0.500", "-0.30", "b"]
    assert lines[1].count("---:") == 5 and lines[1].count(":---") == 1  # numbers right, text left
    odd = markdown_table(pd.DataFrame({"n": pd.array([1, None], dtype="Int64"), "text": ["a|b", "c"]}))
    assert [line.replace(" ", "") for line in odd.splitlines()[2:]] == ["|1|a\\|b|", "|–|c|"]


def test_readme_faithfulness_table_is_what_the_committed_calibration_runs_say():
    """Each row of the README's one-epoch calibration table, against its run's metrics.csv."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    folders = {"`--optimizer adabelief`": "adabelief", "`--optimizer adabelief-lm --f x2`": "lm-x2",
               "`... --f x2 --c-mode zero`": "lm-x2-czero",
               "`--optimizer adabelief --wdrop-mode trained`": "adabelief-whh-trained",
               "`--optimizer adabelief --embed-padding none`": "adabelief-pad-none",
               "`--optimizer adabelief --eval-mode published`": "adabelief-eval-published"}
    readme = (root / "README.md").read_text()
    rows = re.findall(r"^\| [^|]+ \| (`[^|]+`) \| ([\d.]+) \| \*\*([\d.]+)\*\* \|", readme, flags=re.M)
    assert sorted(flags for flags, _, _ in rows) == sorted(folders)
    for flags, train_ppl, test_ppl in rows:
        metrics = pd.read_csv(root / "results" / "paper" / "calibration" / folders[flags] / "metrics.csv").iloc[0]
        assert (f"{metrics.train_ppl:.2f}", f"{metrics.test_ppl:.2f}") == (train_ppl, test_ppl), flags


def test_readme_quickstart_timing_is_the_committed_timing_record():
    """The quick-start timing in the README is rendered from a committed record
    (report --record FILE --update-readme), so it cannot drift from what was measured."""
    import json
    import re
    from pathlib import Path

    from lmreport.build import QUICKSTART_END, QUICKSTART_START, render_quickstart

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text(encoding="utf-8")
    block = text.split(QUICKSTART_START + "\n")[1].split("\n" + QUICKSTART_END)[0]
    path = re.search(r"Recorded in `([^`]+)`", block)
    assert path, "the README's quick-start block names no timing record"
    record = json.loads((root / path.group(1)).read_text(encoding="utf-8"))
    assert block == render_quickstart(record, path.group(1))
    assert record["profile"] == "smoke" and record["train"] and record["wall_s"] > 0


def test_readme_rebuild_timings_are_their_committed_records():
    import json
    import re
    from pathlib import Path

    from lmreport.build import render_quickstart, timing_markers

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- rebuild:(\w+):begin -->\n(.*?)\n<!-- rebuild:\1:end -->", text, flags=re.S)
    assert [profile for profile, _ in blocks] == ["converged"]
    for profile, block in blocks:
        if block == "Not measured yet.":
            continue
        path = re.search(r"Recorded in `([^`]+)`", block).group(1)
        record = json.loads((root / path).read_text(encoding="utf-8"))
        assert record["profile"] == profile and not record["train"]
        assert timing_markers(record)[0] == f"<!-- rebuild:{profile}:begin -->"
        assert block == render_quickstart(record, path)


def test_a_timing_record_renders_into_its_profiles_block(tmp_path):
    import json

    from lmreport.build import update_readme_timing

    record = {"date": "2026-12-04", "command": "python -m lmreport report --profile converged", "profile": "converged",
              "train": False, "commit": "abc1234", "cpu": "AMD EPYC", "cores": 2, "torch": "2.13.0+cpu",
              "wall_s": 150.0, "phases_s": {"notebooks": 140.0, "HTML": 2.0, "PDF": 4.0},
              "notebooks_s": {"04_report.ipynb": 30.0, "05_sharpness.ipynb": 20.0}}
    (tmp_path / "rec.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- quickstart:begin -->\nq\n<!-- quickstart:end -->\n"
                      "<!-- rebuild:converged:begin -->\nNot measured yet.\n<!-- rebuild:converged:end -->\n")
    assert update_readme_timing(readme, tmp_path / "rec.json") is True
    text = readme.read_text()
    assert "<!-- quickstart:begin -->\nq\n" in text  # a converged rebuild leaves the quick start alone
    assert "took **2.5 minutes**" in text and "the slowest notebook was 04 (30 s). Recorded in `rec.json`." in text
    record["profile"] = "cpu"
    (tmp_path / "rec.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="has no <!-- rebuild:cpu:begin -->"):
        update_readme_timing(readme, tmp_path / "rec.json")


def test_kendall_table_gives_no_tau_for_fewer_than_three_runs():
    import math

    from lmreport.report import kendall_by_depth

    measured = pd.DataFrame({"layers": [1, 1, 1, 1, 3], "variant": ["adabelief"] * 3 + ["lm-x"] * 2,
                             "lambda_max": [0.1, 0.2, 0.3, 0.4, 0.5], "min_test": [10, 12, 11, 13, 9]})
    table = kendall_by_depth(measured).set_index("layers")
    assert table.loc[1, "runs"] == 4 and math.isclose(table.loc[1, "τ (all runs)"], 2 / 3)
    assert math.isclose(table.loc[1, "mean τ within variant"], 1 / 3)  # adabelief's 3 runs; lm-x's 2 give none
    assert table.loc[3, "runs"] == 1 and math.isnan(table.loc[3, "τ (all runs)"]) and math.isnan(table.loc[3, "p"])


def test_paired_lines_give_percent_of_the_baseline_and_place_the_published_difference():
    from lmreport.report import format_paired, paired_against_baseline, paired_lines

    runs = _runs({"adabelief": 200.0, "lm-cbrt": 199.0, "lm-x2": 204.0})
    runs.loc[runs.variant == "lm-cbrt", "min_test"] += [0.0, -1.0, -2.0]  # d = -1, -2, -3
    runs.loc[runs.variant == "lm-x2", "min_test"] += [0.0, 0.5, 1.0]      # d = 4, 4.5, 5: 4.5 +- 1.24
    paired = paired_against_baseline(runs)
    cbrt, x2 = paired_lines(paired)
    # t(.975, 2) * 1 / sqrt(3) = 2.484 (sd 1): -2 [-4.48, +0.48] PPL, at a baseline of 200 that is -1% [-2.24%, +0.24%]
    assert cbrt.startswith("1 layer(s), AdaBelief-LM ∛x − AdaBelief (min test PPL (study's \"valid\"), 3 seeds): "
                           "-2.00 [-4.48, +0.48] PPL, -1.00% [-2.24%, +0.24%] of the baseline; better on 3 of 3")
    # the study at one layer: 84.0 / 84.3 - 1 = -0.36%, inside; x2: 84.7 / 84.3 - 1 = +0.47%, outside [+1.63%, +2.87%]
    assert cbrt.endswith("includes 0: not resolved with these seeds; the published difference, -0.36%, lies inside it.")
    assert "excludes 0: worse than AdaBelief; the published difference, +0.47%, lies outside it." in x2
    table = format_paired(paired)
    assert table["% of baseline (95% CI)"].tolist() == ["-1.00 [-2.24, +0.24]", "+2.25 [+1.63, +2.87]"]
    assert table["published %"].tolist() == ["-0.36", "+0.47"]


def test_published_differences_are_the_study_tables_in_percent_of_adabelief():
    from lmreport.report import PUBLISHED, published_differences

    differences = published_differences()
    # one per published LM variant and depth, never the baseline against itself
    assert sorted(differences) == sorted(k for k in PUBLISHED if k[1] != "adabelief")
    # Table 4.2: 64.0 / 66.5 - 1; Table 4.3 ∛x and √x; Table 4.1 x² (the one published loss)
    assert round(differences[(2, "lm-cbrt")], 2) == -3.76
    assert round(differences[(3, "lm-cbrt")], 2) == -2.94
    assert round(differences[(3, "lm-sqrt")], 2) == -3.10
    assert round(differences[(1, "lm-x2")], 2) == +0.47


def test_sharpness_is_compared_with_adabelief_by_seed_on_both_measures_and_tau_by_measure():
    from lmreport.report import kendall_by_measure, sharpness_paired

    # three seeds at one layer; lm-cbrt's lambda_max is above AdaBelief's by 1.5, 2.5, 3.5 (in 1e-3),
    # its worst-case sharpness below by 0.5 on each seed; one seed at three layers pairs with nothing
    measured = pd.DataFrame({
        "layers": [1] * 6 + [3, 3], "variant": ["adabelief"] * 3 + ["lm-cbrt"] * 3 + ["adabelief", "lm-cbrt"],
        "seed": [141, 6, 42] * 2 + [141, 141], "status": "finished",
        "lambda_max": [0.100, 0.101, 0.102, 0.1015, 0.1035, 0.1055, 0.2, 0.1],
        "worst_sharpness_0.001": [1.0, 2.0, 3.0, 0.5, 1.5, 2.5, 1.0, 1.0],
        "min_test": [180.0, 181.0, 183.0, 181.5, 182.5, 183.5, 170.0, 171.0]})
    table = sharpness_paired(measured)
    assert table["measure"].tolist() == ["λ_max", "worst-case sharpness (ρ = 0.001)"]  # no 3-layer row
    # d = 1.5, 2.5, 3.5 e-3: mean 2.5e-3, half-width t(.975, 2) * 1e-3 / sqrt(3) = 2.484e-3; 2.5e-3 of 0.101 is 2.5%
    assert table.loc[0, "difference (95% CI)"] == "+0.0025 [+1.6e-05, +0.005]"
    assert table.loc[0, "% of AdaBelief (95% CI)"] == "+2.5 [+0.0, +4.9]" and table.loc[0, "lower on"] == "0 of 3"
    # a constant -0.5 has a zero-width interval: 25% of AdaBelief's mean worst-case sharpness, 2.0
    assert table.loc[1, "difference (95% CI)"] == "-0.5 [-0.5, -0.5]" and table.loc[1, "lower on"] == "3 of 3"
    assert table.loc[1, "% of AdaBelief (95% CI)"] == "-25.0 [-25.0, -25.0]"
    tau = kendall_by_measure(measured).set_index(["measure", "layers"])
    # by lambda_max the one-layer test PPLs run 180, 181, 181.5, 183, 182.5, 183.5: one discordant pair of 15
    assert round(tau.loc[("λ_max", 1), "τ (all runs)"], 6) == round(13 / 15, 6)
    # by worst-case sharpness: 181.5, 180, 182.5, 181, 183.5, 183: four discordant pairs
    assert round(tau.loc[("worst-case sharpness (ρ = 0.001)", 1), "τ (all runs)"], 6) == round(7 / 15, 6)
    assert tau.loc[("λ_max", 3), "runs"] == 2
