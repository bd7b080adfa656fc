"""Grids through submitit: options, the sbatch script SLURM would get, and the local executor
killed and requeued mid-run ending with the numbers of the runs trained alone."""
from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import submitit

from lmreport.cli import main
from lmreport.cluster import (OWNER_FILE, ClusterOptions, RunJob, claim, grid_status, job_configs, live_jobs,
                              parse_minutes, read_ledger, slurm_size, submit_configs)
from lmreport.grid import plan
from lmreport.train import read_metrics, read_status, train

TIMING = ["train_seconds", "tokens_per_s", "eval_seconds", "seconds", "threads", "device"]


def test_options_come_from_a_lab_file_and_flags_override_them(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text("partition: gpu\ngpus-per-job: 1\ncpus_per_job: 8\ntime: '1-00:00:00'\nmem: 64G\n"
                    "account: mylab\nqos: normal\nsbatch: ['--constraint=h100', '#SBATCH --exclusive']\n")
    options = ClusterOptions.from_file(path).updated(time="02:30:00", qos=None)
    assert (options.partition, options.cpus_per_job, options.time, options.qos) == ("gpu", 8, 150, "normal")
    params = options.slurm_parameters()
    assert params["mem"] == "64G" and params["gpus_per_node"] == 1 and params["time"] == 150
    assert params["additional_parameters"] == {"constraint": "h100", "exclusive": True}
    assert [parse_minutes(t) for t in (90, "90", "1:30:00", "45:30", "2-00:00:00", "1-12")] == \
        [90, 90, 90, 46, 2880, 2160]
    assert [slurm_size(m) for m in ("64gb", "1.5G", "500M", "2T")] == ["64G", "1536M", "500M", "2T"]


@pytest.mark.parametrize("values,match", [
    (dict(mem="lots"), "mem='lots' is invalid: a size such as 32G"),
    (dict(time="soon"), "time='soon' is invalid: minutes, or HH:MM:SS"),
    (dict(cpus_per_job=0), "cpus_per_job=0 is invalid: an integer >= 1"),
    (dict(partition="gpu; rm -rf"), "partition='gpu; rm -rf' is invalid"),
    (dict(sbatch=["constraint=h100"]), "sbatch='constraint=h100' is invalid: one sbatch option"),
    (dict(nodes=2), "cluster option 'nodes' is unknown"),
])
def test_bad_cluster_options_are_one_line_errors(values, match):
    with pytest.raises(ValueError, match=match):
        ClusterOptions().updated(**values)


def test_a_bad_cluster_file_is_refused_before_anything_is_submitted(tmp_path, capsys):
    path = tmp_path / "lab.yaml"
    path.write_text("partition: [gpu\n")
    code = main(["grid", "--profile", "smoke", "--executor", "slurm", "--cluster-config", str(path),
                 "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("lmreport grid: error: cluster_config=") and "not YAML" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "results").exists()


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, srun and sacct stand-ins on PATH: sbatch keeps each script it is given and
    answers job 4242, 4243, ...; sacct prints the states written to ``states.txt``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": '#!/bin/sh\nn=$(ls "$FAKE_SLURM"/script_* 2>/dev/null | wc -l)\n'
                  'cp "$1" "$FAKE_SLURM/script_$n"\necho "Submitted batch job $((4242 + n))"\n',
        "srun": "#!/bin/sh\nexit 0\n",
        "sacct": '#!/bin/sh\necho "JobID|State|NodeList"\ncat "$FAKE_SLURM/states.txt" 2>/dev/null || true\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    state = tmp_path / "slurm"
    state.mkdir()
    monkeypatch.setenv("FAKE_SLURM", str(state))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    submitit.SlurmJob.watcher.clear()
    yield state
    submitit.SlurmJob.watcher.clear()


def test_slurm_grid_submits_one_array_with_the_lab_options_and_only_what_is_not_queued(
        tmp_path, tiny_corpus, fake_slurm, capsys):
    root = tmp_path / "results"
    args = ["grid", "--profile", "smoke", "--executor", "slurm", "--layers", "1",
            "--variants", "adabelief", "lm-cbrt", "--seeds", "1", "--data-dir", str(tiny_corpus),
            "--results-dir", str(root), "--partition", "gpu", "--time", "01:30:00", "--mem", "32G",
            "--account", "mylab", "--qos", "high", "--sbatch=--constraint=h100", "--jobs", "2",
            "--no-progress"]
    assert main(args) == 0
    script = (fake_slurm / "script_0").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --mem=32G", "#SBATCH --account=mylab",
                 "#SBATCH --qos=high", "#SBATCH --constraint=h100", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@120",
                 "#SBATCH --array=0-1%2", "#SBATCH --job-name=lmreport-smoke"):
        assert line in script.splitlines(), line
    assert "-m submitit.core._submit" in script and str(root / "smoke" / "cluster" / "logs") in script
    ledger = read_ledger(root, "smoke")
    assert {n: e["job_id"] for n, e in ledger.items()} == {"L1-adabelief-s1": "4242_0", "L1-lm-cbrt-s1": "4242_1"}
    # the pickled job is this run's resolved config, trained in-process by RunJob
    submission = submitit.SlurmJob(root / "smoke" / "cluster" / "logs", "4242_0").submission()
    assert isinstance(submission.function, RunJob)
    assert submission.function.config["run_dir"] == str((root / "smoke" / "runs" / "L1-adabelief-s1").resolve())
    assert submission.function.config["threads"] == 4

    # one job still running, one cancelled: only the cancelled run is submitted again
    (fake_slurm / "states.txt").write_text("4242_0|RUNNING|node1\n4242_1|CANCELLED by 1000|\n")
    submitit.SlurmJob.watcher.clear()
    capsys.readouterr()
    assert main(args) == 0
    assert "1 job submitted" in capsys.readouterr().out
    assert read_ledger(root, "smoke")["L1-lm-cbrt-s1"]["job_id"] == "4243"  # one job: no array
    assert not (fake_slurm / "script_2").exists()

    (fake_slurm / "states.txt").write_text("4242_0|RUNNING|node1\n4243|PENDING|\n")
    submitit.SlurmJob.watcher.clear()
    assert main(args[:12] + ["--results-dir", str(root), "--status"]) == 0
    out = capsys.readouterr().out
    assert "L1-adabelief-s1" in out and "4242_0" in out and "RUNNING" in out and "4243 " in out and "PENDING" in out
    assert not (fake_slurm / "script_2").exists()


def test_a_folder_claimed_by_another_job_is_refused(tmp_path):
    claim(tmp_path, "100_1")
    claim(tmp_path, "100_1")  # a requeue of the owner
    with pytest.raises(ValueError, match=r"owned by job 100_1 on .* grid --executor clears the claim"):
        claim(tmp_path, "200_0")
    assert json.loads((tmp_path / OWNER_FILE).read_text())["job_id"] == "100_1"


def _task_pid(controller: int) -> int:
    """The training process a local job's controller started (its only child)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError(f"local job {controller} started no task")


def _wait_for_epochs(run_dir: Path, n: int) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run_dir / "metrics.csv").is_file() and len(read_metrics(run_dir)) >= n:
            return len(read_metrics(run_dir))
        time.sleep(0.05)
    raise AssertionError(f"{run_dir.name} did not reach epoch {n}")


def _wait_until_over(root: Path, names: list[str]) -> None:
    deadline = time.monotonic() + 180
    while live_jobs(read_ledger(root, "smoke"), names):
        assert time.monotonic() < deadline, "local jobs did not end"
        time.sleep(0.2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the job's task through /proc (Linux)")
def test_local_jobs_preempted_or_killed_mid_run_end_with_the_numbers_of_the_runs_alone(tmp_path, tiny_corpus):
    root = tmp_path / "results"
    jobs = plan("smoke", layers=[1], variants=["adabelief", "lm-cbrt"], seeds=[3])
    # long enough (in epochs) to be caught mid-run; the lr drop comes after the interruptions
    configs = job_configs(jobs, root, threads=1, data_dir=str(tiny_corpus), device="cpu",
                          epochs=60, when=[50], max_train_tokens=None, max_eval_tokens=None)
    names = list(configs)
    preempted, killed = names
    ids = submit_configs("smoke", "local", configs, root, ClusterOptions())
    assert set(ids) == set(names)

    # SLURM's preemption signal to one task: submitit checkpoints the call and requeues the job
    run_a = Path(configs[preempted].run_dir)
    _wait_for_epochs(run_a, 2)
    os.kill(_task_pid(int(ids[preempted])), signal.SIGUSR2)
    # a node failure for the other: the task dies at once, nothing is requeued
    run_b = Path(configs[killed].run_dir)
    _wait_for_epochs(run_b, 2)
    os.kill(_task_pid(int(ids[killed])), signal.SIGKILL)
    _wait_until_over(root, names)

    log_a = (root / "smoke" / "cluster" / "logs" / f"{ids[preempted]}_0_log.out").read_text()
    assert "Requeued job" in log_a and "Job completed successfully" in log_a
    assert read_status(run_a)["status"] == "finished" and not (run_a / OWNER_FILE).exists()
    epochs_b = len(read_metrics(run_b))
    assert read_status(run_b)["status"] == "running" and 2 <= epochs_b < 60
    assert (run_b / OWNER_FILE).exists()  # the killed job could not release its claim

    # the grid command again: the killed run (its job is over) is submitted, the finished one not
    again = submit_configs("smoke", "local", configs, root, ClusterOptions())
    assert list(again) == [killed] and again[killed] != ids[killed]
    _wait_until_over(root, names)
    rows = {r["run"]: r for r in grid_status("smoke", "local", root, names)}
    assert {r["status"] for r in rows.values()} == {"finished"}

    for name, config in configs.items():
        alone = train(replace(config, run_dir=str(tmp_path / "alone" / name)))
        got = read_metrics(Path(config.run_dir)).drop(columns=TIMING)
        want = read_metrics(alone).drop(columns=TIMING)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
