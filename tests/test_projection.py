"""The grid's time projection from measured epochs."""
import pandas as pd
import pytest

from lmreport.grid import plan
from lmreport.projection import describe, project_grid


def test_projection_uses_the_measured_epochs_of_runs_like_it_and_skips_epochs_done(tmp_path):
    jobs = plan("smoke", layers=[1, 2], variants=["adabelief", "lm-cbrt"], seeds=[1])
    measured = jobs[0]  # L1 adabelief: 1 of its 2 epochs trained, 10 s each
    run = measured.run_dir(tmp_path)
    run.mkdir(parents=True)
    measured.config(tmp_path).to_json(run / "config.json")
    pd.DataFrame({"epoch": [1], "seconds": [10.0]}).to_csv(run / "metrics.csv", index=False)
    p = project_grid(jobs, tmp_path, parallel=2)
    one, two = p["depths"][1], p["depths"][2]
    assert (one["runs"], one["epochs left"], one["epoch s"]) == (2, 3, 10.0)  # lm-cbrt costs the same
    assert two["epoch s"] is None and p["runs_without_measurement"] == 2
    assert p["hours"] == 30 / 3600 and p["wall_hours"] == 20 / 3600  # the 2-epoch run decides
    assert "no epoch measured yet" in describe(p) and "with 2 at once" in describe(p)


def test_projected_wall_time_hands_each_run_to_the_first_free_worker(tmp_path):
    jobs = plan("smoke", layers=[1], variants=["adabelief", "lm-x", "lm-cbrt"], seeds=[1])
    run = jobs[0].run_dir(tmp_path)
    run.mkdir(parents=True)
    jobs[0].config(tmp_path).to_json(run / "config.json")
    pd.DataFrame({"epoch": [1], "seconds": [60.0]}).to_csv(run / "metrics.csv", index=False)
    p = project_grid(jobs, tmp_path, parallel=2)  # runs of 1, 2 and 2 epochs left, 60 s each
    assert p["hours"] == pytest.approx(300 / 3600)
    assert p["wall_hours"] == pytest.approx(180 / 3600)  # 60 s then 120 s on one worker, 120 s on the other
    assert project_grid(jobs, tmp_path, parallel=1)["wall_hours"] == pytest.approx(300 / 3600)
