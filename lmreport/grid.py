"""Grids of runs: notebook 03 executed with papermill once per (layers, variant, seed).

Layout, one folder per run::

    results/<profile>/runs/L<layers>-<variant>-s<seed>/
        config.json  metrics.csv  status.json      written by lmreport.train
        03_train_lstm.ipynb                        the executed notebook (curves, summary)
        papermill.log                              what the notebook run printed
        checkpoint.pt  best_*.pt                   weights (git-ignored)

``grid --executor inprocess`` (lmreport.inprocess) trains the same runs without a kernel
each, so its folders have no executed notebook and no papermill.log; executing notebook 03
on a finished folder draws its curves without training it.

A run is finished only when its own ``status.json`` says so; papermill's exit code is not
enough (a killed kernel can leave a notebook with every cell marked as run). Finished and
diverged runs are skipped, anything else is (re)started and resumes from its checkpoint.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from .children import die_with_parent, log_tail
from .config import PROFILES, STUDY_LAYERS, STUDY_SEEDS, STUDY_VARIANTS, make_config
from .data import project_dir
from .files import make_folder
from .sittings import Sitting, mark_lost
from .train import DONE, RunBusy, mark_interrupted, read_status, run_lock

_LIVE: set[subprocess.Popen] = set()   # notebook runs in flight, for a clean interrupt
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()          # set (under _LIVE_LOCK) once the grid is stopping
BAR_REDRAW_S = 5.0                     # the grid's bar shows its elapsed time at least this often

# Every variant is a set of RunConfig overrides; adding an ablation is one line.
VARIANTS: dict[str, dict] = {
    "adabelief": dict(optimizer="adabelief"),
    "lm-x2": dict(optimizer="adabelief-lm", f="x2"),
    "lm-x": dict(optimizer="adabelief-lm", f="x"),
    "lm-sqrt": dict(optimizer="adabelief-lm", f="sqrt"),
    "lm-cbrt": dict(optimizer="adabelief-lm", f="cbrt"),
    # the repository notebook's c = 0, and a running minimum that never restarts
    "lm-cbrt-czero": dict(optimizer="adabelief-lm", f="cbrt", c_mode="zero"),
    "lm-x2-czero": dict(optimizer="adabelief-lm", f="x2", c_mode="zero"),
    "lm-cbrt-cglobal": dict(optimizer="adabelief-lm", f="cbrt", c_reset="never"),
    # the recurrent matrices trained, as the published code meant to
    "adabelief-whh-trained": dict(optimizer="adabelief", wdrop_mode="trained"),
    "lm-cbrt-whh-trained": dict(optimizer="adabelief-lm", f="cbrt", wdrop_mode="trained"),
    # other optimizers, with and without LM
    "adam": dict(optimizer="adam"),
    "adam-lm-cbrt": dict(optimizer="adam-lm", f="cbrt"),
    "sgd": dict(optimizer="sgd"),
}


def _decay_times_x2_factor(profile: str, layers: int, seed: int, root: Path) -> dict:
    """AdaBelief whose L2 decay is multiplied by the LM factor the matching x² run saw.

    AdaBelief ignores a constant factor on the gradient, so LM with denominator d acts like
    AdaBelief with its decay multiplied by d (notebook 02). The factor is taken from the
    finished ``lm-x2`` run of the same profile, depth and seed: D = 1 / mean over epochs of
    the epoch's mean LM scale, i.e. the harmonic mean of d = f((U − c)_+) + 1 over the run's
    batches (epochs have nearly equal batch counts). The harmonic mean is below the
    arithmetic one by about mean·CV², negligible for x² under the running minimum.
    """
    run = x2_source_run(profile, layers, seed, root)
    if read_status(run)["status"] != "finished":
        raise ValueError(f"variant adabelief-wdx2 needs the finished run {run.name} of profile "
                         f"{profile}; run the study grid first")
    return dict(optimizer="adabelief", wdecay=make_config(profile, layers=layers).wdecay * x2_decay_factor(run))


def x2_source_run(profile: str, layers: int, seed: int, root: Path) -> Path:
    """The ``lm-x2`` run whose LM factor the ``adabelief-wdx2`` run of (layers, seed) uses."""
    return root / profile / "runs" / f"L{layers}-lm-x2-s{seed}"


def x2_decay_factor(run: Path) -> float:
    """D = 1 / (mean over epochs of the epoch's mean LM scale) of a recorded run."""
    from .train import read_metrics

    return 1.0 / float(read_metrics(run)["lm_scale"].mean())


# Variants whose settings are derived from other runs: name -> f(profile, layers, seed, root).
DERIVED_VARIANTS = {"adabelief-wdx2": _decay_times_x2_factor}


def variant_overrides(variant: str, profile: str, layers: int, seed: int, root: Path | None = None) -> dict:
    """The RunConfig overrides of a named variant for one (profile, layers, seed)."""
    if variant in DERIVED_VARIANTS:
        return DERIVED_VARIANTS[variant](profile, layers, seed, root or results_root())
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is unknown: one of {', '.join(list(VARIANTS) + list(DERIVED_VARIANTS))}")
    return dict(VARIANTS[variant])
GRID_RUNS_PER_DEPTH = len(STUDY_VARIANTS) * len(STUDY_SEEDS)        # 15
NOTEBOOK = "03_train_lstm.ipynb"


@dataclass(frozen=True)
class Job:
    profile: str
    layers: int
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"L{self.layers}-{self.variant}-s{self.seed}"

    def run_dir(self, root: Path) -> Path:
        return root / self.profile / "runs" / self.name

    def config(self, root: Path | None = None, **runtime):
        """The run's resolved RunConfig (raises ValueError naming a bad setting); ``runtime``
        sets where and how it trains (run_dir, threads, ...; None keeps the default)."""
        return make_config(self.profile, layers=self.layers, seed=self.seed, **runtime,
                           **variant_overrides(self.variant, self.profile, self.layers, self.seed, root))

    def parameters(self, root: Path, **runtime) -> dict:
        """Papermill parameters of notebook 03 for this run (absolute paths)."""
        overrides = variant_overrides(self.variant, self.profile, self.layers, self.seed, root)
        params = {"profile": self.profile, "layers": self.layers, "seed": self.seed,
                  "variant": self.variant, "optimizer": overrides.pop("optimizer"),
                  "f": overrides.pop("f", None), "c_mode": overrides.pop("c_mode", "running_min"),
                  "overrides": overrides, "run_dir": str(self.run_dir(root).resolve()),
                  "progress": False}
        params.update({k: v for k, v in runtime.items() if v is not None})
        return params


def settled(run_dir: Path) -> bool:
    """Nothing left to do for the run: finished (and measured, where its profile measures
    sharpness and the weights are still here to measure) or diverged."""
    from .sharpness import unmeasured

    return read_status(run_dir)["status"] in DONE and not unmeasured(run_dir)


def results_root() -> Path:
    return project_dir() / "results"


def notebooks_dir() -> Path:
    return project_dir() / "notebooks"


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/n' (1 <= i <= n) -> (i, n)."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise ValueError(f"shard={text!r} is invalid: i/n with 1 <= i <= n, e.g. 2/3")
    return i, n


def plan_blocks(profile: str) -> tuple:
    """``Profile.grid_plan``, or the study's 45 runs as one block where it plans nothing."""
    return PROFILES[profile].grid_plan or ((STUDY_LAYERS, STUDY_VARIANTS, STUDY_SEEDS),)


def planned_jobs(profile: str) -> list[Job]:
    """The profile's whole grid (``plan_blocks``) in its training order, each run once."""
    jobs = [Job(profile, n, v, s) for layers, variants, seeds in plan_blocks(profile)
            for n in layers for v in variants for s in seeds]
    return list(dict.fromkeys(jobs))


def describe_plan(profile: str) -> str:
    """One line naming the planned grid's run count and its blocks, as ``profiles`` prints it."""
    parts = [f"layers {' '.join(map(str, n))} x {' '.join(v)} x seed{'s' * (len(s) > 1)} {' '.join(map(str, s))}"
             for n, v, s in plan_blocks(profile)]
    return f"{len(planned_jobs(profile))} runs: " + "; then ".join(parts)


def plan(profile: str, layers=None, variants=None, seeds=None, shard: str | None = None,
         root: Path | None = None, check: bool = True, planned: bool = False) -> list[Job]:
    """The grid's runs in a fixed order (shard i/n takes every n-th from the i-th).

    Without ``planned``: every depth x variant x seed asked for (default: the study's 45
    runs). With it: the profile's planned grid (``planned_jobs``), of which ``layers``,
    ``variants`` and ``seeds`` keep only the runs they name.
    With ``check`` every run's config is built first, so an invalid combination (or a
    derived variant whose source runs are missing) fails before anything runs.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is invalid: one of {', '.join(PROFILES)}")
    known = list(VARIANTS) + list(DERIVED_VARIANTS)
    unknown = [v for v in variants or () if v not in known]
    if unknown:
        raise ValueError(f"variant {unknown[0]!r} is unknown: one of {', '.join(known)}")
    if any(not isinstance(n, int) or n < 1 for n in layers or ()):
        raise ValueError(f"layers={list(layers)} is invalid: integers >= 1")
    if planned:
        every = planned_jobs(profile)
        for name, asked in (("layers", layers), ("variant", variants), ("seed", seeds)):
            have = {getattr(j, name) for j in every}
            missing = [x for x in asked or () if x not in have]
            if missing:
                raise ValueError(f"{name}={missing[0]!r} is not in the {profile} profile's planned grid: "
                                 f"one of {', '.join(map(str, dict.fromkeys(getattr(j, name) for j in every)))}")
        jobs = [j for j in every if (not layers or j.layers in layers)
                and (not variants or j.variant in variants) and (not seeds or j.seed in seeds)]
        if not jobs:
            asked = ", ".join(f"{k}={list(v)}" for k, v in
                              (("layers", layers), ("variants", variants), ("seeds", seeds)) if v)
            raise ValueError(f"{asked} selects no run of the {profile} profile's planned grid")
    else:
        variants = list(dict.fromkeys(variants or STUDY_VARIANTS))  # a repeated name is one run, not two
        layers = list(dict.fromkeys(layers or STUDY_LAYERS))
        seeds = list(dict.fromkeys(seeds or STUDY_SEEDS))
        jobs = [Job(profile, n, v, s) for n in layers for v in variants for s in seeds]
    for job in jobs if check else []:
        job.config(root)
    cut = parse_shard(shard)
    return jobs[cut[0] - 1::cut[1]] if cut else jobs


def check_before_running(jobs: list[Job], root: Path, data_dir: str | None = None, device: str | None = None,
                         progress: bool = True) -> None:
    """What would make every notebook run fail, found before any starts: the device (its
    name, and whether this machine has it) and the data (present, PTB where the profile
    needs it, long enough for each run's settings)."""
    from .data import load_corpus
    from .train import check_data, select_device

    if not jobs:
        return
    select_device(make_config(jobs[0].profile, device=device).device)
    corpus = load_corpus(data_dir, progress=progress)
    for job in jobs:
        check_data(corpus, job.config(root))


def run_job(job: Job, root: Path, threads: int | None = None, data_dir: str | None = None,
            device: str | None = None) -> tuple[Job, str, str]:
    """Execute notebook 03 for one job; return (job, final status, error text).

    A run another grid holds comes back as ``held`` and is left to it. Any error of this
    job (a notebook that fails, a file that cannot be read) comes back as status ``failed``
    with its text, so the other jobs carry on; only an interrupt of the grid itself
    propagates.
    """
    run_dir = job.run_dir(root)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # Held from before papermill.log and the executed notebook are rewritten until the
        # notebook run ends, so two grids over the same results never share a run folder.
        with run_lock(run_dir, wait=0, name=".grid.lock", holder="run by another grid"):
            return _run_notebook(job, root, run_dir, threads, data_dir, device)
    except RunBusy as err:
        return job, "held", str(err)
    except Exception as err:  # noqa: BLE001 - recorded as this job's failure
        return job, "failed", f"{type(err).__name__}: {err}"


KERNEL_START_TRIES = 3
KERNEL_START_FAILURES = ("Kernel died before replying to kernel_info", "Kernel didn't respond in")


def _run_notebook(job: Job, root: Path, run_dir: Path, threads, data_dir, device) -> tuple[Job, str, str]:
    params = job.parameters(root, threads=threads, data_dir=data_dir, device=device)
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "papermill", str(notebooks_dir() / NOTEBOOK), str(run_dir / NOTEBOOK),
           "-k", "python3", "--no-progress-bar", "-y", yaml_parameters(params)]
    if _STOPPING.is_set():  # before the log is emptied; checked again where the run starts
        return job, "interrupted", ""
    for attempt in range(KERNEL_START_TRIES):
        with open(run_dir / "papermill.log", "w") as log:
            with _LIVE_LOCK:  # a run started after the grid began stopping would escape the stop
                if _STOPPING.is_set():
                    return job, "interrupted", ""
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=die_with_parent if os.name == "posix" else None)
                _LIVE.add(proc)
            try:
                proc.wait()
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(proc)
        # Kernels started at the same moment can race for their ZMQ ports, and the loser
        # dies before it runs a cell (jupyter_client); nothing of the run has happened, so
        # starting it again is safe.
        log_text = (run_dir / "papermill.log").read_text(errors="replace")
        if proc.returncode == 0 or not any(m in log_text for m in KERNEL_START_FAILURES):
            break
    status = read_status(run_dir)
    if status["status"] in DONE:
        return job, status["status"], ""
    if _STOPPING.is_set() and status["status"] in ("running", "interrupted"):
        mark_interrupted(run_dir)
        return job, "interrupted", ""
    error = status.get("error") or log_tail(run_dir / "papermill.log") or f"papermill exit {proc.returncode}"
    return job, "failed", error


def yaml_parameters(params: dict) -> str:
    """Notebook parameters for papermill's ``-y``, which reads YAML: there JSON's 1e-06 is
    a string, while PyYAML's own dump writes 1.0e-06 (tuples go as lists)."""
    return yaml.safe_dump(json.loads(json.dumps(params)))


class NotebookRuns:
    """The papermill executor: each job is a notebook-03 run in a kernel of its own, ``jobs``
    at once, each waited on by a thread. ``run_grid`` drives any executor with this shape:
    ``submit(job) -> Future of (job, status, error)``, ``stop()`` on an interrupt (the runs in
    flight end as interrupted, nothing new starts), ``close()`` at the end."""

    def __init__(self, jobs: int, root: Path, threads: int, data_dir: str | None, device: str | None):
        self._pool = ThreadPoolExecutor(max_workers=jobs)
        self._args = (root, threads, data_dir, device)
        _STOPPING.clear()

    def submit(self, job: Job):
        return self._pool.submit(run_job, job, *self._args)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with _LIVE_LOCK:
            _STOPPING.set()
            for proc in _LIVE:
                proc.terminate()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def run_grid(profile: str, layers=None, variants=None, seeds=None, jobs: int = 1,
             shard: str | None = None, data_dir: str | None = None, device: str | None = None,
             root: str | Path | None = None, progress: bool = True, threads: int | None = None,
             executor=NotebookRuns, planned: bool = False) -> dict:
    """Run every unfinished job of the grid (``plan``'s runs, ``planned`` as there); returns
    counts, the failures, and the runs left to another grid that was running them (``held``).

    Each of the ``jobs`` runs at once gets ``threads`` torch threads (default: the cores
    divided by ``jobs``, so the runs never oversubscribe the machine). ``executor`` is
    called as ``executor(jobs, root, threads, data_dir, device)`` and runs the jobs
    (``NotebookRuns``; ``lmreport.inprocess.TrainingWorkers`` without a kernel per run)."""
    if jobs < 1:
        raise ValueError(f"jobs={jobs} is invalid: an integer >= 1")
    if threads is not None and threads < 1:
        raise ValueError(f"threads={threads} is invalid: an integer >= 1")
    root = Path(root) if root else results_root()
    todo_all = plan(profile, layers, variants, seeds, shard, root, planned=planned)
    done = [j for j in todo_all if settled(j.run_dir(root))]
    todo = [j for j in todo_all if j not in done]
    check_before_running(todo, root, data_dir, device, progress)
    if todo:
        make_folder(root / profile / "runs", "results_dir")
        if progress:
            from .projection import describe, project_grid
            tqdm.write(f"grid {profile}: {len(todo)} runs to train; from epochs measured on this kind of machine:\n"
                       + describe(project_grid(todo, root, jobs)))
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    failures: list[tuple[Job, str]] = []
    held: list[Job] = []
    start = time.monotonic()
    sitting = None
    if todo:
        ledger = root / profile / "grid_sittings.csv"
        mark_lost(ledger)
        sitting = Sitting(ledger, list(dict.fromkeys(j.variant for j in todo_all)), jobs, threads)
        sitting.update(0, len(done), 0, force=True)
    bar = tqdm(total=len(todo_all), initial=len(done), desc=f"grid {profile}", unit="run",
               disable=not progress)
    completed, outcome = 0, "complete"
    pool = executor(jobs, root, threads, data_dir, device)
    try:
        pending = {pool.submit(j) for j in todo}
        while pending:
            # redrawn at least every few seconds, so a long run never looks like a hang
            finished, pending = wait(pending, timeout=BAR_REDRAW_S, return_when=FIRST_COMPLETED)
            bar.refresh()
            for fut in finished:
                job, status, error = fut.result()
                if status == "held":
                    held.append(job)
                else:
                    completed += 1
                if status == "failed":
                    failures.append((job, error))
                    bar.write(f"failed: {job.name}: {error}")
                bar.update(1)
            if sitting:  # skipped: finished before this sitting, or left to another grid that held them
                sitting.update(completed, len(done) + len(held), len(failures), force=bool(finished))
    except BaseException:
        # Ctrl-C or SIGTERM: stop the runs (each keeps its last checkpoint and resumes
        # from it next time) and still log the sitting.
        outcome = "interrupted"
        pool.stop()
        raise
    finally:
        pool.close()
        bar.close()
        summary = {"profile": profile, "total": len(todo_all), "skipped": len(done),
                   "ran": completed, "failed": [(j.name, e) for j, e in failures],
                   "held": [j.name for j in held],
                   "seconds": time.monotonic() - start, "jobs": jobs, "threads_per_job": threads,
                   "outcome": outcome}
        if sitting:
            sitting.end(completed, len(done) + len(held), len(failures), outcome)
    return summary
