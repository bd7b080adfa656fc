"""Grid runner and report build: planning, skipping, kill-and-restart, tables, HTML."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

from lmreport.build import build_report
from lmreport.grid import VARIANTS, Job, plan, run_grid
from lmreport.train import read_metrics, read_status

TIMING = ["train_seconds", "tokens_per_s", "eval_seconds", "seconds", "threads", "device"]  # where and how fast, not what
SMALL = dict(layers=[1], variants=["adabelief", "lm-cbrt"], seeds=[141, 6])


def test_default_plan_is_the_study_grid_and_shards_partition_it():
    jobs = plan("paper")
    assert len(jobs) == 45
    assert {j.variant for j in jobs} == {"adabelief", "lm-x2", "lm-x", "lm-sqrt", "lm-cbrt"}
    assert {j.seed for j in jobs} == {141, 6, 42} and {j.layers for j in jobs} == {1, 2, 3}
    parts = [plan("paper", shard=f"{i}/3") for i in (1, 2, 3)]
    assert sorted(sum(parts, []), key=jobs.index) == jobs and all(len(p) == 15 for p in parts)


def test_the_planned_converged_grid_is_the_issues_runs_then_seeds_one_at_a_time():
    from lmreport.grid import describe_plan, planned_jobs

    jobs = planned_jobs("converged")
    assert len(jobs) == len(set(jobs)) == 102
    base = plan("converged", variants=["adabelief", "lm-x2", "lm-x", "lm-sqrt", "lm-cbrt", "lm-cbrt-czero",
                                       "adabelief-whh-trained", "lm-cbrt-whh-trained"], check=False)
    assert jobs[:72] == base  # the issue's grid first, in the order the grid always trained it
    extra = [(j.layers, j.seed) for j in jobs[72:]]
    assert extra == [(3, 1)] * 5 + [(3, 2)] * 5 + [(1, 1)] * 5 + [(3, 3)] * 5 + [(3, 4)] * 5 + [(3, 5)] * 5
    assert {j.variant for j in jobs[72:]} == {"adabelief", "lm-x2", "lm-x", "lm-sqrt", "lm-cbrt"}
    # flags select from the plan, keeping its order; a profile without a plan plans the study
    assert plan("converged", layers=[3], seeds=[2], planned=True, check=False) == jobs[77:82]
    assert [j.name for j in plan("converged", variants=["lm-cbrt-whh-trained"], layers=[3], planned=True,
                                 check=False)] == [f"L3-lm-cbrt-whh-trained-s{s}" for s in (141, 6, 42)]
    assert planned_jobs("cpu") == plan("cpu", check=False)
    assert describe_plan("converged").startswith("102 runs: layers 1 2 3 x adabelief")
    with pytest.raises(ValueError, match="seed=7 is not in the converged profile's planned grid: one of "
                                         "141, 6, 42, 1, 2, 3, 4, 5"):
        plan("converged", seeds=[7], planned=True)
    with pytest.raises(ValueError, match="variant='adabelief-wdx2' is not in the converged profile's planned"):
        plan("converged", variants=["lm-x", "adabelief-wdx2"], planned=True)  # one name matching is not enough
    with pytest.raises(ValueError, match=r"layers=\[2\], seeds=\[1\] selects no run"):
        plan("converged", layers=[2], seeds=[1], planned=True)


def test_every_planned_grid_names_known_variants_and_depths():
    from lmreport.config import PROFILES
    from lmreport.grid import DERIVED_VARIANTS

    for name, profile in PROFILES.items():
        for layers, variants, seeds in profile.grid_plan:
            assert set(variants) <= set(VARIANTS) | set(DERIVED_VARIANTS), name
            assert all(n >= 1 for n in layers) and all(isinstance(s, int) for s in seeds), name


def test_grid_planned_flag_reaches_the_grid(monkeypatch, capsys):
    import lmreport.grid
    from lmreport.cli import main

    seen = {}

    def fake_run_grid(profile, layers, variants, seeds, **kwargs):
        seen.update(kwargs, todo=[j.name for j in plan(profile, layers, variants, seeds, check=False,
                                                       planned=kwargs["planned"])])
        return {"profile": profile, "total": 0, "skipped": 0, "ran": 0, "seconds": 0.0, "jobs": 1,
                "threads_per_job": 1, "failed": [], "held": []}

    monkeypatch.setattr(lmreport.grid, "run_grid", fake_run_grid)
    monkeypatch.setattr("signal.signal", lambda signum, handler: None)
    assert main(["grid", "--profile", "converged", "--planned", "--layers", "3", "--seeds", "5"]) == 0
    assert seen["planned"] is True and seen["todo"] == [f"L3-{v}-s5" for v in
                                                       ("adabelief", "lm-x2", "lm-x", "lm-sqrt", "lm-cbrt")]
    assert main(["grid", "--profile", "converged", "--layers", "3", "--seeds", "5"]) == 0
    assert seen["planned"] is False


@pytest.mark.parametrize("kwargs,match", [
    (dict(variants=["lm-x3"]), "variant 'lm-x3' is unknown"),
    (dict(shard="4/3"), "shard='4/3'"), (dict(shard="a/b"), "shard='a/b'"),
    (dict(layers=[0]), "layers"), (dict(seeds=[-1]), "seed=-1 is invalid"),
])
def test_bad_grid_requests_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan("smoke", **kwargs)


def test_repeated_names_in_a_grid_request_are_one_run():
    assert plan("smoke", layers=[1, 1], variants=["adabelief", "adabelief"], seeds=[1, 1]) == \
        [Job("smoke", 1, "adabelief", 1)]


@pytest.mark.parametrize("kwargs,match", [
    (dict(device="tpu"), "device='tpu' is invalid"),
    (dict(data_dir="EMPTY"), "cannot download ptb.train.txt|no ptb.train.txt"),
    (dict(profile="cpu", data_dir="TINY"), "profile cpu needs the canonical PTB files"),
])
def test_a_grid_that_would_fail_every_run_stops_before_the_first(tmp_path, tiny_corpus, monkeypatch, kwargs, match):
    import lmreport.data as data_mod
    monkeypatch.setattr(data_mod, "PTB_URL", "http://127.0.0.1:9/")  # nothing listens there: offline
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    (tmp_path / "empty").mkdir()
    kwargs = dict(kwargs)
    kwargs["data_dir"] = {"EMPTY": str(tmp_path / "empty"), "TINY": str(tiny_corpus)}.get(
        kwargs.get("data_dir"), str(tiny_corpus))
    profile = kwargs.pop("profile", "smoke")
    with pytest.raises((ValueError, data_mod.DataError), match=match):
        run_grid(profile, layers=[1], variants=["adabelief"], seeds=[1], root=tmp_path / "results",
                 progress=False, **kwargs)
    assert not (tmp_path / "results").exists()


def test_variant_parameters_map_onto_notebook_03(tmp_path):
    p = Job("cpu", 2, "lm-cbrt-czero", 6).parameters(tmp_path, threads=1)
    assert (p["optimizer"], p["f"], p["c_mode"], p["overrides"], p["threads"]) == \
        ("adabelief-lm", "cbrt", "zero", {}, 1)
    p = Job("cpu", 1, "adabelief-whh-trained", 42).parameters(tmp_path)
    assert (p["optimizer"], p["f"], p["overrides"]) == ("adabelief", None, {"wdrop_mode": "trained"})
    assert p["run_dir"] == str((tmp_path / "cpu" / "runs" / "L1-adabelief-whh-trained-s42").resolve())
    assert all(spec["optimizer"] for spec in VARIANTS.values())


QUICK = {"01_landscape_modification.ipynb": {"n_runs": 100, "steps": 600},
         "02_adabelief_derivation.ipynb": {"trace_tokens": 30_000, "trace_epochs": 1}}


def _metrics(root):
    out = {}
    for folder in sorted((root / "smoke" / "runs").iterdir()):
        out[folder.name] = read_metrics(folder).drop(columns=TIMING)
    return out


@pytest.fixture(scope="module")
def smoke_grid(tmp_path_factory, ptb_dir):
    """A reduced smoke grid (1 layer x 2 variants x 2 seeds), run once for this module."""
    root = tmp_path_factory.mktemp("grid")
    summary = run_grid("smoke", **SMALL, jobs=2, root=root, data_dir=str(ptb_dir), progress=False)
    assert summary["ran"] == 4 and not summary["failed"]
    return root


def test_finished_runs_are_skipped(smoke_grid, ptb_dir):
    again = run_grid("smoke", **SMALL, jobs=2, root=smoke_grid, data_dir=str(ptb_dir), progress=False)
    assert again["ran"] == 0 and again["skipped"] == 4


def test_killed_grid_restarts_to_the_same_results(smoke_grid, tmp_path, ptb_dir):
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lmreport", "grid", "--profile", "smoke", "--layers", "1",
           "--variants", "adabelief", "lm-cbrt", "--seeds", "141", "6", "--jobs", "1",
           "--results-dir", str(killed), "--data-dir", str(ptb_dir), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / "smoke" / "runs" / "L1-adabelief-s141"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (first / "checkpoint.pt").exists():
        time.sleep(0.05)
    state = read_status(first)["status"]
    proc.kill()  # the grid dies without cleaning up; its notebook run gets SIGTERM
    proc.wait()
    assert state == "running", "the first run was not caught mid-way"
    # The orphaned kernel notices within about a second that its parent is gone; it may
    # finish the epoch it is in. The run lock keeps it and the restarted grid apart.
    resumed = run_grid("smoke", **SMALL, jobs=2, root=killed, data_dir=str(ptb_dir), progress=False)
    assert resumed["ran"] + resumed["skipped"] == 4 and resumed["ran"] >= 3 and not resumed["failed"]
    a, b = _metrics(smoke_grid), _metrics(killed)
    assert a.keys() == b.keys() and len(a) == 4
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)


def _config_files(root):
    import json
    out = {}
    for folder in sorted((root / "smoke" / "runs").iterdir()):
        config = json.loads((folder / "config.json").read_text())
        assert config.pop("run_dir") == str(folder.resolve())
        out[folder.name] = config
    return out


def test_inprocess_executor_trains_what_the_notebook_runs_train_and_skips_finished_runs(smoke_grid, tmp_path, ptb_dir):
    from lmreport.inprocess import TrainingWorkers
    root = tmp_path / "inprocess"
    summary = run_grid("smoke", **SMALL, jobs=2, root=root, data_dir=str(ptb_dir), progress=False,
                       executor=TrainingWorkers)
    assert summary["ran"] == 4 and not summary["failed"] and summary["threads_per_job"] == 1
    a, b = _metrics(smoke_grid), _metrics(root)
    assert a.keys() == b.keys() and len(a) == 4
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)
    assert _config_files(smoke_grid) == _config_files(root)  # the config notebook 03 builds
    for name in a:
        status = read_status(root / "smoke" / "runs" / name)
        assert status["status"] == "finished" and status["threads"] == read_status(smoke_grid / "smoke" / "runs" / name)["threads"]
        assert not (root / "smoke" / "runs" / name / "03_train_lstm.ipynb").exists()
    stamps = {f: f.stat().st_mtime_ns for f in (root / "smoke" / "runs").glob("*/metrics.csv")}
    again = run_grid("smoke", **SMALL, jobs=2, root=root, data_dir=str(ptb_dir), progress=False,
                     executor=TrainingWorkers)
    assert again["ran"] == 0 and again["skipped"] == 4
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps
    sittings = pd.read_csv(root / "smoke" / "grid_sittings.csv")  # a sitting that trained nothing is not logged
    assert sittings[["ran", "skipped", "failed", "jobs", "outcome"]].values.tolist() == [[4, 0, 0, 2, "complete"]]


def _sigterm_once(cmd: list[str], ready) -> tuple[int, str]:
    """Start a grid command, SIGTERM it once ``ready()`` holds; (exit code, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _sigterm_at_first_checkpoint(cmd: list[str], run) -> tuple[int, str]:
    return _sigterm_once(cmd, lambda: (run / "checkpoint.pt").exists())


def test_inprocess_sigterm_interrupts_the_run_and_the_same_command_resumes_it(smoke_grid, tmp_path, ptb_dir):
    from lmreport.train import run_lock
    cmd = [sys.executable, "-m", "lmreport", "grid", "--profile", "smoke", "--layers", "1",
           "--variants", "adabelief", "--seeds", "141", "--jobs", "1", "--executor", "inprocess",
           "--results-dir", str(tmp_path), "--data-dir", str(ptb_dir), "--no-progress"]
    run = tmp_path / "smoke" / "runs" / "L1-adabelief-s141"
    returncode, err = _sigterm_at_first_checkpoint(cmd, run)
    assert returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert read_status(run)["status"] == "interrupted"  # metrics.csv may lag the checkpoint: it comes from it
    with run_lock(run, wait=0), run_lock(run, wait=0, name=".grid.lock"):
        pass  # no worker outlived the grid holding the run
    sittings = pd.read_csv(tmp_path / "smoke" / "grid_sittings.csv")
    assert sittings.outcome.tolist() == ["interrupted"] and sittings.ran.tolist() == [0]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    pd.testing.assert_frame_equal(read_metrics(run).drop(columns=TIMING),
                                  _metrics(smoke_grid)["L1-adabelief-s141"], check_exact=True)


def test_an_inprocess_job_held_or_failing_is_reported_and_bad_executors_are_refused(tmp_path, tiny_corpus):
    from lmreport.inprocess import executor_named, train_job
    from lmreport.train import run_lock
    job = Job("smoke", 1, "adabelief", 141)
    job.run_dir(tmp_path).mkdir(parents=True)
    with run_lock(job.run_dir(tmp_path), wait=0, name=".grid.lock"):  # what another grid holds
        held = train_job(job, tmp_path, 1, str(tiny_corpus), None)
    assert held[1] == "held" and "run by another grid" in held[2]
    assert read_status(job.run_dir(tmp_path))["status"] == "missing"
    (tmp_path / "ptb.txt").write_text("a file, not PTB's folder\n")
    _, status, error = train_job(job, tmp_path, 1, str(tmp_path / "ptb.txt"), None)
    assert (status, error) == ("failed", f"DataError: data dir {tmp_path / 'ptb.txt'} is not a folder")
    with pytest.raises(ValueError, match=r"^executor='kernel' is invalid: one of papermill, inprocess$"):
        executor_named("kernel")


def test_report_train_runs_the_smoke_grid_in_process_unless_told(tmp_path, tiny_corpus, monkeypatch):
    import lmreport.build as build_mod
    from lmreport.grid import NotebookRuns
    from lmreport.inprocess import TrainingWorkers
    used = []

    def fake_grid(*args, executor, **kwargs):
        used.append(executor)
        return {"failed": [("L1-adabelief-s141", "stopped here")], "held": []}

    monkeypatch.setattr(build_mod, "run_grid", fake_grid)
    for executor in (None, "papermill"):
        with pytest.raises(build_mod.GridFailed):
            build_report("smoke", train=True, root=tmp_path, data_dir=str(tiny_corpus), progress=False,
                         executor=executor)
    assert used == [TrainingWorkers, NotebookRuns]
    with pytest.raises(ValueError, match="executor='slurm' is invalid"):
        build_report("smoke", train=True, root=tmp_path, data_dir=str(tiny_corpus), executor="slurm")


def test_report_tables_and_html_and_the_hint_without_a_browser(smoke_grid, tmp_path, ptb_dir, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("LMREPORT_CHROMIUM", raising=False)
    stale = smoke_grid / "smoke" / "report.pdf"
    stale.write_bytes(b"%PDF- an earlier build")
    result = build_report("smoke", root=smoke_grid, figures_root=tmp_path / "figures",
                          data_dir=str(ptb_dir), notebook_params=QUICK)
    assert "pdf" not in result and "apt-get install chromium" in result["pdf_hint"]
    assert not stale.exists() and "removed the older report.pdf" in result["pdf_hint"]  # never a stale PDF
    from lmreport.build import REPORT_NOTEBOOKS
    assert list(result["phases"]) == ["notebooks", "HTML"] and list(result["notebook_seconds"]) == list(REPORT_NOTEBOOKS)
    assert sum(result["notebook_seconds"].values()) <= result["phases"]["notebooks"]
    tables = smoke_grid / "smoke" / "tables"
    table = pd.read_csv(tables / "table_4_1_1layer.csv")
    assert table["variant"].tolist() == ["adabelief", "lm-cbrt"] and table["n seeds"].tolist() == [2, 2]
    assert table["published min_test"].tolist() == [84.3, 84.0]
    runs = pd.read_csv(tables / "runs.csv")
    assert len(runs) == 45 and (runs.status == "finished").sum() == 4
    paired = pd.read_csv(tables / "paired_vs_adabelief.csv")
    assert set(paired.variant) == {"lm-cbrt"} and set(paired["n pairs"]) == {2}
    assert (tables / "conclusions.md").read_text().count("\n") >= 3
    html = result["html"].read_text()
    assert "Table 4.1" in html and "AdaBelief-LM ∛x" in html and "<img" in html
    assert "injected-parameters" not in html and "Parameters (papermill)" not in html
    # a document: contents first, sections numbered without gaps, figures numbered and captioned
    numbered = result["numbered"]
    tops = [s["number"] for s in numbered["sections"] if s["level"] == 1]
    assert tops == [str(k) for k in range(1, len(tops) + 1)] and len(tops) == 6
    assert html.index(">Contents<") < html.index('id="sec-1"') < html.index('id="sec-2"')
    assert "**Figure 1.**" not in html and "<strong>Figure 1.</strong>" in html
    assert "No description has been provided" not in html and 'alt="Figure 1: ' in html
    assert "<math" in html  # notebook 01's formulas, as MathML: no CDN needed
    assert any(c.startswith("Each variant minus AdaBelief, paired by seed") for c in numbered["figures"])
    for name in ("fig4_2_curves_1layer", "fig4_5_spread_1layer", "sharpness_vs_test_perplexity"):
        assert (tmp_path / "figures" / "smoke" / f"{name}.png").is_file()
    # notebooks 05-07 ran on the same runs
    sharp = pd.read_csv(tables / "sharpness_runs.csv")
    assert len(sharp) == 4 and (sharp.lambda_max >= sharp.lambda_min).all()
    assert len(pd.read_csv(tables / "appendix_c_continuations.csv")) == 8
    assert "Did landscape modification find flatter minima" in html and "Appendix C" in html
    assert "An audit of the published runs" in html
    assert "in the study&#39;s regime?" in html or "in the study's regime?" in html
    assert "finished adabelief runs meet criteria 1-3" in html  # the regime check ran on the smoke runs


def test_derived_decay_variant_reads_the_matching_x2_run(tmp_path):
    from lmreport.grid import variant_overrides
    with pytest.raises(ValueError, match="needs the finished run L2-lm-x2-s6"):
        plan("smoke", layers=[2], variants=["adabelief-wdx2"], seeds=[6], root=tmp_path)
    run = tmp_path / "smoke" / "runs" / "L2-lm-x2-s6"
    run.mkdir(parents=True)
    (run / "status.json").write_text('{"status": "finished"}')
    pd.DataFrame({"epoch": [1, 2], "lm_scale": [0.8, 0.9]}).to_csv(run / "metrics.csv", index=False)
    spec = variant_overrides("adabelief-wdx2", "smoke", 2, 6, tmp_path)
    assert spec == {"optimizer": "adabelief", "wdecay": pytest.approx(1.2e-6 / 0.85)}
    assert len(plan("smoke", layers=[2], variants=["adabelief-wdx2"], seeds=[6], root=tmp_path)) == 1


def test_readme_results_block_is_regenerated_from_the_runs(smoke_grid, tmp_path):
    from lmreport.report import update_readme
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:smoke:start -->\nold\n<!-- results:smoke:end -->\nrest\n")
    assert update_readme("smoke", readme, smoke_grid) is True
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert update_readme("smoke", readme, smoke_grid) is False and readme.read_text() == text
    assert "4 finished runs" in text and "Table 4.1 at `smoke` scale" in text
    with pytest.raises(ValueError, match="no <!-- results:cpu:start -->"):
        update_readme("cpu", readme, smoke_grid)


def test_sigterm_stops_the_runs_and_logs_an_interrupted_sitting(tmp_path, ptb_dir):
    # The cpu profile, stopped as its first epoch starts: that epoch takes a minute, so the stop
    # always lands mid-epoch (a smoke run can finish in the moment the signal takes to arrive).
    cmd = [sys.executable, "-m", "lmreport", "grid", "--profile", "cpu", "--layers", "1",
           "--variants", "adabelief", "--seeds", "141", "--jobs", "1",
           "--results-dir", str(tmp_path), "--data-dir", str(ptb_dir), "--no-progress"]
    run = tmp_path / "cpu" / "runs" / "L1-adabelief-s141"
    returncode, err = _sigterm_once(cmd, lambda: read_status(run)["status"] == "running")
    assert returncode == 130 and "interrupted" in err
    assert not (run / "checkpoint.pt").exists()
    sittings = pd.read_csv(tmp_path / "cpu" / "grid_sittings.csv")
    assert sittings.outcome.tolist() == ["interrupted"] and sittings.ran.tolist() == [0]
    # its kernel died with the notebook run, mid-epoch: the grid records what train would on Ctrl-C
    assert read_status(run)["status"] == "interrupted"


def test_one_jobs_error_is_its_failure_and_the_grid_carries_on(tmp_path, tiny_corpus, monkeypatch):
    import lmreport.grid as grid_mod
    started = []

    def fake_notebook(job, root, run_dir, *args):
        started.append(job.seed)
        if job.seed == 6:
            raise OSError(f"cannot open {run_dir / 'papermill.log'}")
        (run_dir / "status.json").write_text('{"status": "finished"}')
        return job, "finished", ""

    monkeypatch.setattr(grid_mod, "_run_notebook", fake_notebook)
    summary = run_grid("smoke", layers=[1], variants=["adabelief"], seeds=[141, 6, 42], jobs=1,
                       root=tmp_path, data_dir=str(tiny_corpus), progress=False)
    assert sorted(started) == [6, 42, 141] and summary["ran"] == 3 and summary["outcome"] == "complete"
    [(name, error)] = summary["failed"]
    assert name == "L1-adabelief-s6" and error.startswith("OSError: cannot open")


def test_a_run_held_by_another_grid_is_left_alone(tmp_path, tiny_corpus, monkeypatch, capsys):
    import lmreport.grid as grid_mod
    from lmreport.cli import main
    from lmreport.train import run_lock
    monkeypatch.setattr(grid_mod, "_run_notebook", lambda *a: pytest.fail("started a run another grid holds"))
    run = Job("smoke", 1, "adabelief", 141).run_dir(tmp_path)
    run.mkdir(parents=True)
    (run / "papermill.log").write_text("the other grid's log\n")
    with run_lock(run, wait=0, name=".grid.lock"):  # what the other grid process holds
        summary = run_grid("smoke", layers=[1], variants=["adabelief"], seeds=[141], root=tmp_path,
                           data_dir=str(tiny_corpus), progress=False)
        assert main(["grid", "--profile", "smoke", "--layers", "1", "--variants", "adabelief", "--seeds", "141",
                     "--results-dir", str(tmp_path), "--data-dir", str(tiny_corpus), "--no-progress"]) == 0
    assert summary["failed"] == [] and summary["held"] == ["L1-adabelief-s141"] and summary["ran"] == 0
    out = capsys.readouterr().out.splitlines()
    assert "0 run now" in out[0] and out[0].endswith("0 failed, 1 left to another grid running them")
    assert out[1:] == ["  held by another grid: L1-adabelief-s141"]
    assert (run / "papermill.log").read_text() == "the other grid's log\n"
    sittings = pd.read_csv(tmp_path / "smoke" / "grid_sittings.csv")
    assert sittings[["ran", "skipped", "failed"]].values.tolist() == [[0, 1, 0], [0, 1, 0]]


def test_no_notebook_starts_once_the_grid_is_stopping(tmp_path, monkeypatch):
    import lmreport.grid as grid_mod
    monkeypatch.setattr(grid_mod.subprocess, "Popen", lambda *a, **k: pytest.fail("started after the stop"))
    monkeypatch.setattr(grid_mod, "_STOPPING", grid_mod.threading.Event())
    grid_mod._STOPPING.set()
    job = Job("smoke", 1, "adabelief", 141)
    job.run_dir(tmp_path).mkdir(parents=True)
    (job.run_dir(tmp_path) / "papermill.log").write_text("the last sitting's log\n")
    assert grid_mod.run_job(job, tmp_path) == (job, "interrupted", "")
    assert (job.run_dir(tmp_path) / "papermill.log").read_text() == "the last sitting's log\n"


def test_notebook_parameters_keep_their_types_through_papermill_yaml(tmp_path):
    import yaml

    from lmreport.grid import yaml_parameters
    params = Job("cpu", 1, "adabelief", 6).parameters(tmp_path)
    params["overrides"] = {"wdecay": 1e-06, "eps": 1e-16, "betas": (0.9, 0.999), "when": [5, 7]}
    back = yaml.safe_load(yaml_parameters(params))  # what papermill -y gives the notebook
    assert back["overrides"] == {"wdecay": 1e-06, "eps": 1e-16, "betas": [0.9, 0.999], "when": [5, 7]}
    assert back == {**params, "overrides": back["overrides"]}
    assert isinstance(yaml.safe_load("x: 1e-06")["x"], str)  # why JSON text is not enough


def _log_sittings(path, n):
    from lmreport.sittings import Sitting

    for _ in range(n):
        sitting = Sitting(path, ["adabelief"], jobs=1, threads=1)
        sitting.update(0, 0, 0, force=True)
        sitting.end(1, 0, 0, "ended")


def test_grids_ending_together_keep_every_sitting_line(tmp_path):
    import multiprocessing

    path = tmp_path / "smoke" / "grid_sittings.csv"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_log_sittings, args=(path, 40)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    sittings = pd.read_csv(path)
    assert len(sittings) == 120 and sittings.outcome.eq("ended").all()
    assert not list(path.parent.glob(".*.tmp"))


def test_a_report_notebook_that_raises_is_one_line_naming_its_cell(tmp_path):
    from lmreport.build import NotebookFailed, execute_notebooks

    with pytest.raises(NotebookFailed, match=r"^01_landscape_modification.ipynb failed in cell \[\d+\]: "
                                             r"ValueError: .*nonsense.*; the traceback is in .*01_landscape"):
        execute_notebooks("smoke", tmp_path, tmp_path / "notebooks", tmp_path / "figures",
                          notebook_params={"01_landscape_modification.ipynb": {"f": "nonsense", "n_runs": 2}})


def test_a_long_step_keeps_its_bar_moving_and_phases_read_as_minutes():
    import io

    from tqdm import tqdm

    from lmreport.build import format_phases, heartbeat

    out = io.StringIO()
    bar = tqdm(total=1, desc="notebooks", file=out, mininterval=0)
    with heartbeat(bar, every=0.05):
        time.sleep(0.5)  # a cell that prints nothing
    bar.close()
    assert out.getvalue().count("\r") >= 5  # redrawn with its elapsed time, not silent
    assert format_phases({"grid": 126.0, "notebooks": 114.2, "HTML": 4.1}) == "grid 2.1 min, notebooks 1.9 min, HTML 4 s"


class _FakeProcess:
    def __init__(self, returncode):
        self.returncode = returncode

    def wait(self):
        return self.returncode


class _FakePapermill:
    """Stands in for papermill's process: the first ``fail`` starts die as a kernel that lost
    the ZMQ port race does (or with another error), the next one finishes the run."""

    def __init__(self, run_dir, fail, message):
        self.run_dir, self.fail, self.message, self.calls = run_dir, fail, message, 0

    def __call__(self, cmd, stdout, **kwargs):
        self.calls += 1
        if self.calls <= self.fail:
            stdout.write(f"Traceback (most recent call last):\nRuntimeError: {self.message}\n")
            return _FakeProcess(1)
        (self.run_dir / "status.json").write_text(json.dumps({"status": "finished", "epoch": 2}))
        return _FakeProcess(0)


@pytest.mark.parametrize("fail, message, calls, outcome", [
    (1, "Kernel died before replying to kernel_info", 2, "finished"),
    (2, "Kernel didn't respond in 60 seconds", 3, "finished"),
    (3, "Kernel died before replying to kernel_info", 3, "failed"),    # gives up after 3 starts
    (1, "ZeroDivisionError in cell 4", 1, "failed"),                   # a real error: not retried
])
def test_a_kernel_that_dies_at_start_is_started_again(tmp_path, monkeypatch, fail, message, calls, outcome):
    import lmreport.grid as grid_mod
    monkeypatch.setattr(grid_mod, "_STOPPING", grid_mod.threading.Event())
    job = Job("smoke", 1, "adabelief", 141)
    fake = _FakePapermill(job.run_dir(tmp_path), fail, message)
    job.run_dir(tmp_path).mkdir(parents=True)
    monkeypatch.setattr(grid_mod.subprocess, "Popen", fake)
    done, status, error = grid_mod.run_job(job, tmp_path)
    assert (fake.calls, status) == (calls, outcome)
    if outcome == "failed":
        assert message in error


def test_appendix_c_tables_are_rebuilt_only_from_every_models_weights(smoke_grid, tmp_path, ptb_dir):
    import nbformat
    import papermill as pm

    from lmreport.grid import notebooks_dir

    root = tmp_path / "copy"
    shutil.copytree(smoke_grid, root, ignore=shutil.ignore_patterns(".lock", ".grid.lock"))
    tables = root / "smoke" / "tables"

    def execute():
        out = tmp_path / "07.ipynb"
        pm.execute_notebook(notebooks_dir() / "07_generation.ipynb", out, kernel_name="python3", progress_bar=False,
                            parameters={"profile": "smoke", "results_root": str(root), "data_dir": str(ptb_dir)})
        book = nbformat.read(out, as_version=4)
        return "\n".join(o.get("text", "") for c in book.cells for o in c.get("outputs", []))

    execute()
    full = pd.read_csv(tables / "appendix_c_continuations.csv")
    assert list(full.columns) == ["seed text", "1L AdaBelief", "1L AdaBelief-LM ∛x"]
    (root / "smoke" / "runs" / "L1-lm-cbrt-s141" / "best_test.pt").unlink()  # e.g. a fresh clone
    text = execute()
    assert "no best_test.pt in 1 run folder(s) (L1-lm-cbrt-s141); the tables below are read from" in text
    assert pd.read_csv(tables / "appendix_c_continuations.csv").equals(full)  # not overwritten by one model


def test_a_sitting_keeps_one_line_with_a_heartbeat_and_the_next_one_marks_a_dead_one_lost(tmp_path):
    from lmreport.sittings import HEARTBEAT_S, STALE_S, Sitting, mark_lost

    path = tmp_path / "grid_sittings.csv"
    t0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    dead = Sitting(path, ["adabelief", "lm-cbrt"], jobs=2, threads=1, now=t0)
    dead.update(0, 3, 0, force=True, now=t0)
    dead.update(1, 3, 0, now=t0 + 60)  # within the heartbeat: not written
    assert pd.read_csv(path).ran.tolist() == [0]
    dead.update(1, 3, 0, force=True, now=t0 + 90)  # a run completed: written at once
    dead.update(1, 3, 0, now=t0 + 90 + HEARTBEAT_S)  # the heartbeat
    row = pd.read_csv(path).iloc[0]
    assert (row.started, row.wall_minutes, row.ran, row.skipped, row.outcome) == (
        "2027-01-15T08:00:00+0000", 6.5, 1, 3, "running")
    assert row.variants == "adabelief lm-cbrt" and len(pd.read_csv(path)) == 1
    # the machine is lost: nothing ends the line; a sitting that starts later finds it stale
    beat = t0 + 90 + HEARTBEAT_S
    alive = Sitting(path, ["adabelief"], jobs=1, threads=2, now=beat + STALE_S - 30)
    alive.update(0, 0, 0, force=True, now=beat + STALE_S - 30)
    assert mark_lost(path, now=beat + STALE_S - 1) == 0  # within STALE_S of its heartbeat: maybe alive
    assert mark_lost(path, now=beat + STALE_S + 1) == 1
    table = pd.read_csv(path)
    assert table[["ran", "wall_minutes", "outcome"]].values.tolist() == [[1, 6.5, "lost"], [0, 0.0, "running"]]
    alive.end(2, 0, 0, "complete", now=beat + STALE_S + 600)
    assert pd.read_csv(path).outcome.tolist() == ["lost", "complete"]
    assert mark_lost(path, now=beat + 10 * STALE_S) == 0  # ended lines are never touched
