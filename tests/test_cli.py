"""The command line: bad input exits 2 with one line and writes nothing; runs and resumes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmreport.cli import main
from lmreport.train import read_metrics, read_status


@pytest.fixture(autouse=True)
def _keep_pytests_signal_handlers(monkeypatch):
    """main() installs a SIGTERM handler for train and grid; not in the test process."""
    import signal
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)


@pytest.mark.parametrize("args,needle", [
    (["--optimizer", "adabelief-lm", "--f", "x3"], "f='x3'"),
    (["--optimizer", "nadam"], "invalid choice: 'nadam'"),
    (["--lr", "0"], "lr=0.0"),
    (["--lr", "-0.1"], "lr=-0.1"),
    (["--layers", "0"], "layers=0"),
    (["--optimizer", "adabelief", "--f", "sqrt"], "-lm optimizers only"),
    (["--c-mode", "median", "--optimizer", "adabelief-lm", "--f", "x"], "c_mode='median'"),
    (["--wdrop-mode", "half"], "wdrop_mode='half'"),
    (["--epochs", "many"], "invalid int value: 'many'"),
    (["--seed", "-1"], "seed=-1 is invalid"),
    (["--lr", "inf"], "lr=inf is invalid"),
    (["--when", "2", "2"], "when=[2, 2] is invalid"),
    (["--optimizer", "adabelief-lm", "--f", "x", "--c-mode", "constant:nan"], "c_mode='constant:nan'"),
    (["--device", "tpu"], "device='tpu' is invalid"),
    (["--eval-mode", "windows"], "eval_mode='windows' is invalid"),
])
def test_bad_values_exit_2_with_one_line_and_write_nothing(args, needle, tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        code = main(["train", "--profile", "smoke", "--run-dir", str(run_dir), *args])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not run_dir.exists()


def test_unreadable_data_dir_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lmreport.data.PTB_URL", "http://127.0.0.1:9/")
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    run_dir = tmp_path / "run"
    code = main(["train", "--profile", "smoke", "--data-dir", str(tmp_path / "nope"),
                 "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "ptb.train.txt" in err
    assert not run_dir.exists() and not (tmp_path / "nope").exists()


def test_data_too_short_for_the_settings_exits_2(tmp_path, tiny_corpus, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "--profile", "smoke", "--data-dir", str(tiny_corpus), "--max-train-tokens", "5",
                 "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "max_train_tokens=5 leaves 5 train tokens, 0 rows at batch_size=20: at least 60 tokens" in err
    assert not run_dir.exists()


def test_an_interrupted_or_diverged_train_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    import lmreport.train as train_mod

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "train", interrupted)
    assert main(["train", "--profile", "smoke"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted; the run keeps its last finished epoch's checkpoint, if it finished one" in err
    (tmp_path / "status.json").write_text('{"status": "diverged", "epoch": 3, "error": "objective nan at batch 7"}')
    monkeypatch.setattr(train_mod, "train", lambda config: tmp_path)
    assert main(["train", "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged after epoch 3: objective nan at batch 7" in err


@pytest.mark.parametrize("args,needle", [
    (["--layers", "0"], "layers=[0] is invalid"), (["--steps", "0"], "steps=0 is invalid"),
    (["--jobs", "0"], "jobs=[0] is invalid"), (["--threads", "0"], "threads=0 is invalid"),
    (["--device", "tpu"], "device='tpu' is invalid"), (["--eval-tokens", "5"], "eval_tokens=5 is invalid"),
])
def test_bad_bench_requests_exit_2_before_measuring_or_writing(args, needle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--profile", "smoke", "--out", str(out), *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and needle in captured.err and captured.out == ""
    assert not out.exists()


def test_grid_jobs_zero_is_refused(tmp_path, capsys):
    assert main(["grid", "--profile", "smoke", "--jobs", "0", "--results-dir", str(tmp_path)]) == 2
    assert "jobs=0 is invalid" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_train_and_resume_from_the_command_line(tmp_path, tiny_corpus, capsys):
    run_dir = tmp_path / "run"
    common = ["--data-dir", str(tiny_corpus), "--no-progress"]
    code = main(["train", "--profile", "smoke", "--layers", "1", "--optimizer", "sgd-lm",
                 "--f", "x2", "--c-mode", "zero", "--bptt", "10", "--batch-size", "4",
                 "--max-train-tokens", "800", "--epochs", "1", "--when", "--run-dir",
                 str(run_dir), *common])
    assert code == 0 and capsys.readouterr().out.strip() == str(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["optimizer"], config["f"], config["c_mode"], config["lr"], config["when"]) == \
        ("sgd-lm", "x2", "zero", 30.0, [])
    assert read_status(run_dir)["status"] == "finished" and len(read_metrics(run_dir)) == 1
    assert main(["train", "--resume", str(run_dir), "--seed", "6"]) == 2
    assert "drop --seed" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), *common]) == 0


def test_a_busy_an_uncreatable_or_a_hand_edited_run_dir_gives_one_line(tmp_path, tiny_corpus, capsys, monkeypatch):
    import lmreport.train as train_mod

    common = ["--profile", "smoke", "--data-dir", str(tiny_corpus), "--no-progress", "--max-train-tokens", "800",
              "--batch-size", "4", "--bptt", "10", "--epochs", "1", "--when"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setattr(train_mod, "LOCK_WAIT_S", 0.2)
    with train_mod.run_lock(run_dir):
        assert main(["train", *common, "--run-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"run dir {run_dir} is being trained by another process" in err
    (tmp_path / "file").write_text("")
    assert main(["train", *common, "--run-dir", str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be created (Not a directory)" in err
    assert main(["train", *common, "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "dropout": "0.4"}))
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dropout='0.4' is invalid: a value of type float" in err


def test_report_and_grid_refuse_what_would_fail_before_writing(tmp_path, tiny_corpus, capsys):
    (tmp_path / "file").write_text("")
    cases = [
        (["report", "--profile", "smoke", "--no-pdf", "--data-dir", str(tiny_corpus), "--results-dir",
          str(tmp_path / "empty")], "profile='smoke' has no finished runs in"),
        (["report", "--profile", "smoke", "--no-pdf", "--data-dir", str(tmp_path / "nodata"), "--results-dir",
          str(tmp_path / "empty")], "ptb.train.txt"),
        (["report", "--profile", "smoke", "--jobs", "0", "--results-dir", str(tmp_path / "empty")], "jobs=0 is invalid"),
        (["grid", "--profile", "smoke", "--layers", "1", "--variants", "adabelief", "--seeds", "141", "--data-dir",
          str(tiny_corpus), "--results-dir", str(tmp_path / "file")], "cannot be created (Not a directory)"),
        (["grid", "--profile", "smoke", "--threads", "0", "--results-dir", str(tmp_path / "empty")],
         "threads=0 is invalid"),
        (["report", "--profile", "cpu", "--no-pdf", "--record", str(tmp_path / "rec" / "r.json"), "--update-readme",
          "--results-dir", str(tmp_path / "empty")], "has no <!-- rebuild:cpu:begin --> ... <!-- rebuild:cpu:end -->"),
    ]
    for args, needle in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_bad_bench_paths_and_resume_folders_give_one_line(tmp_path, tiny_corpus, capsys):
    (tmp_path / "out").mkdir()
    assert main(["bench", "--profile", "smoke", "--layers", "1", "--steps", "1", "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "is invalid: a folder; give a file name" in captured.err and captured.out == ""
    if Path("/proc/self").is_dir():  # Linux: a folder that exists but takes no files
        assert main(["bench", "--profile", "smoke", "--layers", "1", "--steps", "1", "--out", "/proc/b.json"]) == 2
        captured = capsys.readouterr()
        assert "out='/proc' is invalid: files cannot be written in it" in captured.err and captured.out == ""
    assert main(["bench", "--summarize", str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[1, 2]")
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run / 'config.json'} is not a run's config.json: a config is a JSON object" in err
    assert main(["train", "--resume", str(run), "--run-dir", str(tmp_path / "x")]) == 2
    assert "drop --run-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own exit
        main(["train", "--betas", "a,b"])
    assert exit_info.value.code == 2
    assert "'a,b' is not two comma-separated numbers, e.g. 0.9,0.999" in capsys.readouterr().err


def test_profiles_are_printed(capsys):
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "paper:" in out and "smoke:" in out and "emsize=16" in out


def test_module_entry_point_and_bench(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "lmreport", "bench", "--layers", "1", "--steps", "1",
                           "--warmup", "0", "--eval-tokens", "140", "--compare", "--breakdown", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["results"][0]["layers"] == 1 and record["results"][0]["train_tokens_per_s"] > 0
    assert "train tok/s" in proc.stdout and "speed-up vs reference" in proc.stdout
    row = record["results"][0]
    for tag in ("reference", "reference_tuned_allocator"):   # untuned first, then as the package runs
        assert row[f"speedup_train_step_vs_{tag}"] > 0 and row[f"{tag}_test_eval_tokens_per_s"] > 0
    # --breakdown: kernel shares of the step and the evaluation, and the ceiling they imply
    assert "share of self time per kernel group" in proc.stdout
    for kind in ("step", "eval"):
        shares = row[f"{kind}_kernel_shares"]
        assert sum(shares.values()) == pytest.approx(1.0)
        assert shares["lstm_forward"] > 0 and shares["matmul"] > 0
    assert row["step_kernel_shares"]["lstm_backward"] > 0
    assert row["step_kernel_shares"]["dropout_rng"] > 0   # profiled in training mode: masks are drawn
    fixed = 1 - row["step_kernel_shares"]["other"] - row["step_kernel_shares"]["idle"]
    assert row["ceiling_train_step_vs_reference"] == pytest.approx(row["speedup_train_step_vs_reference"] / fixed)
    assert record["complete"] is True
    assert row["ceiling_test_eval_vs_reference"] >= row["speedup_test_eval_vs_reference"]


def test_report_train_where_every_run_failed_names_the_failure(tmp_path, tiny_corpus, capsys, monkeypatch):
    import lmreport.build as build_mod

    monkeypatch.setattr(build_mod, "run_grid", lambda *a, **k: {"failed": [("L1-adabelief-s141", "disk on fire")], "held": []})
    code = main(["report", "--profile", "smoke", "--train", "--no-pdf", "--data-dir", str(tiny_corpus),
                 "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "no run of profile 'smoke' finished; 1 failed, the first: L1-adabelief-s141: disk on fire" in err


def test_a_system_error_mid_work_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    import lmreport.bench as bench

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(bench, "write_text", full_disk)
    out = tmp_path / "b.json"
    assert main(["bench", "--profile", "smoke", "--layers", "1", "--steps", "1", "--warmup", "0",
                 "--eval-tokens", "70", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"lmreport bench: error: [Errno 28] No space left on device: '{out}'\n"


def test_tf32_off_a_gpu_would_do_nothing_and_is_refused(tmp_path, capsys):
    assert main(["train", "--profile", "smoke", "--tf32", "--device", "cpu", "--run-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == ("lmreport train: error: tf32=True is invalid on cpu: TF32 exists only on "
                                       "CUDA GPUs (drop --tf32, or run on one)\n")
    for flag in ("--tf32", "--tf32-effect"):
        assert main(["bench", "--profile", "smoke", flag, "--device", "cpu", "--out", str(tmp_path / "b.json")]) == 2
        assert f"{flag} needs a CUDA device (TF32 does not exist on cpu)" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_sharpness_measures_finished_runs_once_and_refuses_an_empty_profile(tmp_path, ptb_dir, capsys):
    results = str(tmp_path / "results")
    assert main(["sharpness", "--profile", "smoke", "--results-dir", results]) == 2
    assert capsys.readouterr().err.strip().endswith("--profile smoke: no finished runs to measure")
    pick = ["--profile", "smoke", "--layers", "1", "--variants", "adabelief", "--seeds", "141",
            "--results-dir", results, "--data-dir", str(ptb_dir)]
    assert main(["grid", *pick, "--jobs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sharpness", *pick, "--threads", "1", "--no-progress"]) == 0
    first = capsys.readouterr().out
    assert "L1-adabelief-s141" in first and "1 run(s) measured, 0 of them already stored; 0 skipped" in first
    stored = (tmp_path / "results" / "smoke" / "runs" / "L1-adabelief-s141" / "sharpness.json").read_text()
    assert main(["sharpness", *pick, "--no-progress"]) == 0     # read back, not measured again
    assert "1 run(s) measured, 1 of them already stored" in capsys.readouterr().out
    assert (tmp_path / "results" / "smoke" / "runs" / "L1-adabelief-s141" / "sharpness.json").read_text() == stored
