"""Command line: ``python -m lmreport {train,grid,report,pilot,sharpness,bench,gpu-check,profiles,variants} ...``.

The ``train`` flags are generated from the fields of ``RunConfig`` (``--emsize``,
``--dropouth``, ``--c-mode`` ...), with the field's comment as help, so the CLI cannot
drift from the config. Bad input exits with status 2 and one line on stderr, before
anything is written.
"""
from __future__ import annotations

import argparse
import inspect
import re
import signal
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from .config import OPTIMIZERS, PROFILES, RUNTIME_FIELDS, RunConfig, make_config
from .data import CommandFailed, DataError


RESULTS_HELP = ("folder holding <profile>/runs (default: results/ of the checkout), e.g. a "
                "mounted Google Drive folder so a disconnected Colab runtime resumes")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def _field_help(cls=RunConfig) -> dict[str, str]:
    """The trailing comment of each field of a dataclass (RunConfig), used as its --help text."""
    source = inspect.getsource(cls)
    return dict(re.findall(r"^\s{4}(\w+):[^#\n]*#\s*(.+)$", source, flags=re.M))


def _float_pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not two comma-separated numbers, e.g. 0.9,0.999")
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not two comma-separated numbers, e.g. 0.9,0.999") from None


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    helps = _field_help()
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        default = f.default if f.default is not MISSING else f.default_factory()
        by_profile = ", ".join(f"{name}: {p.overrides[f.name]}" for name, p in PROFILES.items()
                               if f.name in p.overrides)
        if f.name == "lr":  # a profile's learning rates are per optimizer
            by_profile = ", ".join(f"{name}: " + ", ".join(f"{opt} {lr}" for opt, lr in p.lr.items())
                                   for name, p in PROFILES.items() if p.lr)
        help_text = f"{helps.get(f.name, '')} [default: {default}" + (f"; {by_profile}]" if by_profile else "]")
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif kind == "list[int]":
            parser.add_argument(flag, type=int, nargs="*", metavar="EPOCH", **kwargs)
        elif kind.startswith("tuple"):
            parser.add_argument(flag, type=_float_pair, metavar="B1,B2", **kwargs)
        else:
            base = kind.split("|")[0].strip()
            typ = {"int": int, "float": float}.get(base, str)
            extra = {"choices": OPTIMIZERS} if f.name == "optimizer" else {}
            extra = {"choices": list(PROFILES)} if f.name == "profile" else extra
            parser.add_argument(flag, type=typ, **extra, **kwargs)
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR with its own config.json "
                             f"(only {', '.join(f for f in RUNTIME_FIELDS if f != 'run_dir')} may be changed)")


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    given = {k: v for k, v in vars(args).items() if k not in ("command", "resume")}
    if args.resume:
        from pathlib import Path
        path = Path(args.resume) / "config.json"
        if not path.is_file():
            raise ValueError(f"--resume {args.resume}: no config.json there (is it a run directory?)")
        science = sorted(k for k in given if k not in RUNTIME_FIELDS)
        if science:
            raise ValueError(f"--resume takes the run's own settings; drop "
                             f"{', '.join('--' + k.replace('_', '-') for k in science)}")
        if "run_dir" in given:
            raise ValueError("--resume continues the run in its own folder; drop --run-dir")
        try:
            config = RunConfig.from_json(path)
        except ValueError as err:
            raise ValueError(f"{path} is not a run's config.json: {err}") from None
        data = config.to_dict()
        data.update(given, run_dir=str(Path(args.resume)))
        return RunConfig.from_dict(data).resolved()
    return make_config(**given)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lmreport", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_train = sub.add_parser("train", help="train one run (resumes an unfinished run directory)")
    _add_config_flags(p_train)

    p_bench = sub.add_parser("bench", help="speed of the paper-size models on this machine")
    p_bench.add_argument("--profile", default="paper", choices=list(PROFILES), help="whose model sizes")
    p_bench.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3])
    p_bench.add_argument("--compare", action="store_true",
                         help="also time the reference-structured step and evaluation; print speed-ups")
    p_bench.add_argument("--jobs", type=int, nargs="+", default=None, metavar="N",
                         help="instead: aggregate training tokens/s of N concurrent processes")
    p_bench.add_argument("--concurrent", type=int, nargs="+", default=None, metavar="N",
                         help="instead: train one study run of the profile on PTB, alone and N copies at "
                              "once (one process each, as grid --jobs N); epoch seconds, projected grid "
                              "hours, and whether every copy's numbers equal the run alone")
    p_bench.add_argument("--batch-bound", type=int, default=None, metavar="K",
                         help="instead: the most that training K runs of one depth as one batched model "
                              "could gain, from the step time at K times the batch (lmreport/batchbound.py)")
    p_bench.add_argument("--epochs", type=int, default=2, help="epochs per run with --concurrent")
    p_bench.add_argument("--data-dir", default=None, help="PTB folder for --concurrent")
    p_bench.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                         help="CUDA: reproducible kernels, as training uses by default")
    p_bench.add_argument("--breakdown", action="store_true",
                         help="also profile where the time goes (kernel groups) and, with --compare, "
                              "the most any change that keeps the numerics could gain")
    p_bench.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 (default: IEEE fp32)")
    p_bench.add_argument("--tf32-effect", action="store_true",
                         help="CUDA: train and evaluate with and without TF32, print the perplexity difference")
    p_bench.add_argument("--steps", type=int, default=8, help="timed training steps per model")
    p_bench.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p_bench.add_argument("--eval-tokens", type=int, default=5600,
                         help="test tokens evaluated at batch size 1")
    p_bench.add_argument("--device", default="auto")
    p_bench.add_argument("--threads", type=int, default=None)
    p_bench.add_argument("--out", default=None, help="JSON file (default: results/bench/...)")
    p_bench.add_argument("--summarize", nargs="+", default=None, metavar="FILE",
                         help="instead: print the README tables of these bench records (one block per "
                              "set of records that combine; e.g. results/bench/*.json)")
    p_bench.add_argument("--update-readme", action="store_true",
                         help="instead: re-render README.md's bench blocks from the records they name")
    p_bench.add_argument("--eval-accuracy", metavar="RUN_DIR", default=None,
                         help="instead: evaluate a trained run's last weights chunked, published and in "
                              "float64, and print how far each lands from the float64 value")

    p_grid = sub.add_parser("grid", help="run a grid of runs through notebook 03 with papermill")
    _add_grid_flags(p_grid)
    p_grid.add_argument("--shard", default=None, metavar="I/N", help="run every N-th job from the I-th")
    _add_cluster_flags(p_grid)

    p_report = sub.add_parser("report", help="build results/<profile>/report.html (and .pdf)")
    p_report.add_argument("--profile", required=True, choices=list(PROFILES))
    p_report.add_argument("--train", action="store_true", help="first run the missing grid runs")
    p_report.add_argument("--jobs", type=int, default=None, help="runs at once with --train")
    p_report.add_argument("--threads", type=int, default=None,
                          help="torch threads per run with --train (default: the cores divided by --jobs)")
    p_report.add_argument("--executor", default=None, choices=("papermill", "inprocess"),
                          help="how --train runs the grid (see grid --executor); default: inprocess for "
                               "the smoke profile, papermill (an executed notebook 03 per run) otherwise")
    p_report.add_argument("--data-dir", default=None)
    p_report.add_argument("--results-dir", default=None, help=RESULTS_HELP)
    p_report.add_argument("--no-pdf", dest="pdf", action="store_false")
    p_report.add_argument("--update-readme", action="store_true",
                          help="rewrite the README's results block of this profile from the new tables")
    p_report.add_argument("--no-progress", dest="progress", action="store_false")
    p_report.add_argument("--record", metavar="FILE", default=None,
                          help="write what the build took (phases, notebooks, process wall time, machine) "
                               "as JSON; with --update-readme, rewrite the README's timing block from it (the quick "
                               "start for smoke --train, <!-- rebuild:<profile>:begin/end --> otherwise) instead of "
                               "the profile's results block")

    p_pilot = sub.add_parser("pilot", help="score the converged profile's pilot runs against the study's regime")
    p_pilot.add_argument("--root", default=None, help="pilot folder (default: results/converged/pilot)")
    p_pilot.add_argument("--run", metavar="CANDIDATE", default=None,
                         help="first train this candidate's baseline runs that are not finished")
    p_pilot.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3])
    p_pilot.add_argument("--seeds", type=int, nargs="+", default=[141])
    p_pilot.add_argument("--threads", type=int, default=None)
    p_pilot.add_argument("--update-readme", action="store_true",
                         help="rewrite the README's pilot and converged-grid blocks (<!-- pilot:begin/end -->, "
                              "<!-- converged-grid:begin/end -->) from the runs")
    p_sharp = sub.add_parser("sharpness", help="measure the finished runs' sharpness now, while their weights "
                             "are on disk (stored in each run's sharpness.json, which notebook 05 reads)")
    p_sharp.add_argument("--profile", required=True, choices=list(PROFILES))
    p_sharp.add_argument("--layers", type=int, nargs="+", default=None, help="default: every depth")
    p_sharp.add_argument("--variants", nargs="+", default=None,
                         help="default: the study's five and every other variant on disk")
    p_sharp.add_argument("--seeds", type=int, nargs="+", default=None, help="default: every seed on disk")
    p_sharp.add_argument("--checkpoint", default="best_test", choices=("best_test", "best_valid", "checkpoint"),
                         help="which weights (notebook 05's default: best_test)")
    p_sharp.add_argument("--device", default="cpu")
    p_sharp.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p_sharp.add_argument("--data-dir", default=None)
    p_sharp.add_argument("--results-dir", default=None, help=RESULTS_HELP)
    p_sharp.add_argument("--no-progress", dest="progress", action="store_false")
    p_sharp.add_argument("--replay", action="store_true",
                         help="first retrain each finished run whose weights and measurement are both gone into "
                         "results/<profile>/replay/ (resumable), require its metrics.csv to equal the committed "
                         "one, then measure it (about as long as the run took to train)")
    p_gpu = sub.add_parser("gpu-check", help="one prepared check of a GPU: CUDA tests, speed, concurrency, TF32")
    p_gpu.add_argument("--out", default=None, metavar="DIR", help="folder of the JSON record (default: results/bench)")
    p_gpu.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    p_gpu.add_argument("--tiny", action="store_true",
                       help="the smoke model, 2 processes at most, a few steps: seconds (CI runs it on the CPU)")
    sub.add_parser("profiles", help="print the run profiles and what they change")
    sub.add_parser("variants", help="print the named variants a grid can run")
    return parser


def _add_grid_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", required=True, choices=list(PROFILES))
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="default: 1 2 3")
    parser.add_argument("--variants", nargs="+", default=None, help="default: the study's five")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 141 6 42")
    parser.add_argument("--planned", action="store_true",
                        help="the profile's whole planned grid in its order (`profiles` lists it; converged: "
                             "issue #17's 102 runs); --layers, --variants and --seeds then select from it")
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: the profile's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: the cores divided by --jobs)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--results-dir", default=None, help=RESULTS_HELP)
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    from .cluster import ClusterOptions, EXECUTORS

    helps = _field_help(ClusterOptions)
    group = parser.add_argument_group("executor (pip install -e \".[cluster]\" for local and slurm)")
    group.add_argument("--executor", default="papermill", choices=("papermill", "inprocess") + EXECUTORS,
                       help="papermill: --jobs notebook runs here (default); inprocess: --jobs worker "
                            "processes here that each train run after run, no notebook per run (same "
                            "numbers, seconds less per run); local: submitit's local executor; slurm: "
                            "one SLURM job per run, as a job array")
    group.add_argument("--status", action="store_true",
                       help="with --executor local|slurm: list each run's status, job id and job state; submit nothing")
    group.add_argument("--wait", action="store_true", help="with --executor slurm: wait until no job is queued or running")
    group.add_argument("--cluster-config", metavar="FILE", default=None,
                       help="YAML/JSON file of the options below (the flags override it)")
    for f in fields(ClusterOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "sbatch":
            group.add_argument(flag, action="append", default=None, metavar="OPTION",
                               help=helps.get(f.name, "") + " (repeatable)")
        else:
            typ = int if str(f.type) == "int" and f.name != "time" else str
            group.add_argument(flag, dest="cluster_" + f.name, type=typ, default=None, metavar=f.name.upper(),
                               help=f"{helps.get(f.name, '')} [default: {f.default}]")


def _cluster_grid(args) -> int:
    from .cluster import ClusterOptions, cluster_dir, grid_status, run_cluster_grid
    from .grid import plan, results_root
    from pathlib import Path

    options = ClusterOptions.from_file(args.cluster_config) if args.cluster_config else ClusterOptions()
    flags = {k.removeprefix("cluster_"): v for k, v in vars(args).items() if k.startswith("cluster_")
             and k != "cluster_config"}
    options = options.updated(**flags, sbatch=args.sbatch)
    root = Path(args.results_dir) if args.results_dir else results_root()
    if args.status:
        names = [j.name for j in plan(args.profile, args.layers, args.variants, args.seeds, args.shard, root,
                                      planned=args.planned)]
        rows = grid_status(args.profile, args.executor, root, names)
    else:
        if args.executor == "local":
            signal.signal(signal.SIGTERM, _interrupt)
        result = run_cluster_grid(args.profile, args.executor, args.layers, args.variants, args.seeds,
                                  options=options, jobs=args.jobs, shard=args.shard, data_dir=args.data_dir,
                                  device=args.device, root=root, threads=args.threads, wait=args.wait,
                                  progress=args.progress, planned=args.planned)
        rows = result["runs"]
        print(f"grid {args.profile} ({args.executor}): {_count(len(result['submitted']), 'job')} submitted; "
              f"logs in {cluster_dir(root, args.profile) / 'logs'}")
    import pandas as pd
    print(pd.DataFrame(rows).to_string(index=False))
    return 1 if any(r["status"] in ("failed", "diverged") for r in rows) and not args.status else 0


def _held_and_failed(outcome: dict, held_note: str) -> int:
    """List the runs another grid held and the runs that failed; the exit status."""
    for name in outcome["held"]:
        print(f"  {held_note}: {name}")
    for name, error in outcome["failed"]:
        print(f"  failed {name}: {error}")
    return 1 if outcome["failed"] else 0


def _sharpness(args) -> int:
    import torch

    from .data import load_corpus
    from .report import collect_runs
    from .sharpness import SharpnessConfig, cached_result, measure_runs

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads {args.threads} is invalid: a positive number of threads")
        torch.set_num_threads(args.threads)
    # every finished run is measured, also one whose seed the report still holds back
    runs, _ = collect_runs(args.profile, args.results_dir, args.layers, args.variants, args.seeds,
                           whole_seeds=False)
    # --variants names the grid variants to measure: collect_runs adds every other named variant
    # on disk, left out here; runs of no named variant (custom:<folder>) stay
    unasked = ~runs.variant.isin(args.variants) & ~runs.variant.str.startswith("custom:") if args.variants else False
    runs = runs[(runs.status == "finished") & ~unasked].reset_index(drop=True)
    if runs.empty:
        raise ValueError(f"--profile {args.profile}: no finished runs to measure")
    config = SharpnessConfig()
    corpus = load_corpus(args.data_dir, progress=False)
    if args.replay:
        from .replay import needs_replay, replay_and_measure

        todo = [d for d in runs.run_dir if needs_replay(d, args.checkpoint, config)]
        print(f"sharpness {args.profile}: {len(todo)} finished run(s) to replay before measuring")
        for k, run_dir in enumerate(todo, 1):
            print(f"replay {k}/{len(todo)}: {Path(run_dir).name}", flush=True)
            replay_and_measure(run_dir, args.checkpoint, config, corpus, progress=args.progress)
    stored = sum(cached_result(d, args.checkpoint, config) is not None for d in runs.run_dir)
    measured, skipped = measure_runs(runs, args.checkpoint, config, corpus, args.device, progress=args.progress)
    if not measured.empty:
        measured["run"] = [Path(d).name for d in measured.run_dir]
        print(measured[["run", "epoch", "lambda_max", "trace", "seconds"]].to_string(index=False, float_format="%.4g"))
    print(f"sharpness {args.profile}: {len(measured)} run(s) measured, {stored} of them already stored; "
          f"{len(skipped)} skipped (no {args.checkpoint}.pt and no stored result)")
    for name in skipped:
        print(f"  skipped {name}")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            from .train import read_status, train
            signal.signal(signal.SIGTERM, _interrupt)  # as Ctrl-C: status "interrupted", checkpoint kept
            config = _config_from_args(args)
            run_dir = train(config)
            print(run_dir)
            status = read_status(run_dir)
            if status["status"] == "diverged":
                print(f"lmreport train: the run diverged after epoch {status.get('epoch')}: "
                      f"{status.get('error')} ({run_dir / 'status.json'})", file=sys.stderr)
                return 1
        elif args.command == "bench" and (args.summarize or args.update_readme):
            from . import benchtables
            if args.summarize and args.update_readme:
                raise ValueError("--summarize prints one block, --update-readme rewrites the README's: choose one")
            if args.summarize:
                print(benchtables.summarize_groups(args.summarize))
            else:
                from pathlib import Path

                from .data import repo_root
                readme = (repo_root() or Path.cwd()) / "README.md"
                changed = benchtables.update_readme(readme)
                print(f"{'updated' if changed else 'unchanged'}: {readme}")
        elif args.command == "bench" and args.eval_accuracy:
            from .bench import eval_accuracy
            eval_accuracy(args.eval_accuracy, out=args.out, threads=args.threads, data_dir=args.data_dir)
        elif args.command == "bench" and args.batch_bound is not None:
            from .batchbound import run as run_batch_bound
            run_batch_bound(args.profile, args.layers, args.batch_bound, args.steps, args.warmup,
                            args.device, args.threads, args.out)
        elif args.command == "bench":
            from .bench import run_bench
            run_bench(layers=args.layers, steps=args.steps, warmup=args.warmup,
                      eval_tokens=args.eval_tokens, device=args.device, threads=args.threads,
                      out=args.out, profile=args.profile, compare=args.compare, jobs=args.jobs,
                      tf32="effect" if args.tf32_effect else args.tf32, breakdown=args.breakdown,
                      concurrent=args.concurrent, epochs=args.epochs, deterministic=args.deterministic,
                      data_dir=args.data_dir)
        elif args.command == "grid" and (args.executor not in ("papermill", "inprocess") or args.status):
            if args.executor in ("papermill", "inprocess"):
                raise ValueError("--status lists the jobs of --executor local or slurm")
            return _cluster_grid(args)
        elif args.command == "grid":
            from .grid import run_grid
            from .inprocess import executor_named
            signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop: log the sitting, keep checkpoints
            summary = run_grid(args.profile, args.layers, args.variants, args.seeds,
                               jobs=PROFILES[args.profile].grid_jobs if args.jobs is None else args.jobs,
                               shard=args.shard,
                               data_dir=args.data_dir, device=args.device, root=args.results_dir,
                               progress=args.progress, threads=args.threads,
                               executor=executor_named(args.executor), planned=args.planned)
            print(f"grid {summary['profile']}: {_count(summary['total'], 'run')}, {summary['skipped']} already "
                  f"done, {summary['ran']} run now in {summary['seconds'] / 60:.1f} min "
                  f"({summary['jobs']} at once, {_count(summary['threads_per_job'], 'thread')} each), "
                  f"{len(summary['failed'])} failed"
                  + (f", {len(summary['held'])} left to another grid running them" if summary["held"] else ""))
            return _held_and_failed(summary, "held by another grid")
        elif args.command == "report":
            from .build import build_report
            if args.record:
                from pathlib import Path

                from .files import make_folder
                if args.update_readme:  # before hours of work, not after
                    from .build import timing_markers
                    from .report import project_dir
                    readme, (start, end) = project_dir() / "README.md", timing_markers(
                        {"profile": args.profile, "train": args.train})
                    if start not in readme.read_text(encoding="utf-8"):
                        raise ValueError(f"--update-readme with --record: {readme} has no {start} ... {end} block "
                                         "for the timing of this build")
                make_folder(Path(args.record).resolve().parent, "record")
            result = build_report(args.profile, train=args.train, jobs=args.jobs, pdf=args.pdf,
                                  root=args.results_dir, data_dir=args.data_dir, progress=args.progress,
                                  threads=args.threads, executor=args.executor)
            for key in ("html", "pdf"):
                if key in result:
                    print(f"wrote {result[key]}")
            from .build import format_phases
            print(f"phases: {format_phases(result['phases'])} (notebooks: "
                  + ", ".join(f"{n.split('_')[0]} {s:.0f} s" for n, s in result["notebook_seconds"].items()) + ")")
            if args.record:
                import json
                from pathlib import Path

                from .build import timing_record
                from .files import write_text
                record = timing_record(result, (argv if argv is not None else sys.argv[1:]), args.profile, args.train)
                write_text(Path(args.record), json.dumps(record, indent=2) + "\n")
                print(f"wrote {args.record} (the process took {record['wall_s'] / 60:.1f} min)")
            if args.update_readme:
                from pathlib import Path

                from .report import project_dir, update_readme
                readme = project_dir() / "README.md"
                if args.record:
                    from .build import update_readme_timing
                    changed = update_readme_timing(readme, Path(args.record))
                else:
                    changed = update_readme(args.profile, readme, root=args.results_dir)
                print(f"{'updated' if changed else 'unchanged'}: {readme}")
            if "pdf_hint" in result:
                print(result["pdf_hint"])
            return _held_and_failed(result, "held by another grid (not finished in this report)")
        elif args.command == "variants":
            from .grid import DERIVED_VARIANTS, STUDY_VARIANTS, VARIANTS
            for name, spec in VARIANTS.items():
                mark = "*" if name in STUDY_VARIANTS else " "
                print(f"{mark} {name:24s} " + ", ".join(f"{k}={v}" for k, v in spec.items()))
            for name, fn in DERIVED_VARIANTS.items():
                print(f"  {name:24s} " + fn.__doc__.strip().splitlines()[0])
            print("* the study's variants (the default of grid and report)")
        elif args.command == "pilot":
            from .grid import results_root
            from .regime import pilot_table, run_pilot
            root = args.root or results_root() / "converged" / "pilot"
            if args.run:
                signal.signal(signal.SIGTERM, _interrupt)
                run_pilot(args.run, args.layers, args.seeds, root, threads=args.threads)
            table = pilot_table(root)
            if table.empty:
                raise ValueError(f"--root {root}: no pilot runs there (folders <candidate>/<run>/config.json)")
            print(table.to_markdown(index=False, floatfmt=".3g"))
            if args.update_readme:
                from .regime import update_grid_readme, update_readme
                from .report import project_dir
                readme = project_dir() / "README.md"
                changed = update_readme(readme, root)
                changed = update_grid_readme(readme, root.parent.parent) or changed
                print(f"{'updated' if changed else 'unchanged'}: {readme} (pilot and converged-grid blocks)")
        elif args.command == "sharpness":
            return _sharpness(args)
        elif args.command == "gpu-check":
            from .gpucheck import gpu_check
            record = gpu_check(args.out, device=args.device, tiny=args.tiny)
            tests = record["tests"]
            return 1 if tests.get("run") and (tests["failed"] or tests["exit_code"] not in (0, 5)) else 0
        elif args.command == "profiles":
            from .grid import describe_plan
            for name, profile in PROFILES.items():
                changes = ", ".join(f"{k}={v}" for k, v in profile.overrides.items()) or "none"
                lrs = ", ".join(f"{k} lr={v}" for k, v in profile.lr.items())
                print(f"{name}: {profile.description}\n  changes: {changes}"
                      + (f"; {lrs}" if lrs else "") + f"; grid jobs: {profile.grid_jobs}")
                print(f"  planned grid (grid --planned): {describe_plan(name)}")
    except (ValueError, DataError) as err:
        print(f"lmreport {args.command}: error: {err}", file=sys.stderr)
        return 2
    except CommandFailed as err:
        print(f"lmreport {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # mid-work: a full disk, a folder removed or made read-only meanwhile
        print(f"lmreport {args.command}: error: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        if args.command != "bench":
            raise
        print(f"lmreport bench: error: {err}", file=sys.stderr)  # a benchmark process failed
        return 1
    except KeyboardInterrupt:
        runs = "; unfinished runs keep their last checkpoint and the same command resumes them"
        after = {"grid": runs, "report": runs,
                 "train": "; the run keeps its last finished epoch's checkpoint, if it finished one, "
                          "and the same command resumes it"}
        print(f"lmreport {args.command}: interrupted{after.get(args.command, '')}", file=sys.stderr)
        return 130
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


if __name__ == "__main__":
    sys.exit(main())
