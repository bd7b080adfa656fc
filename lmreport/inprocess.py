"""Grid runs trained in worker processes that live for the whole grid (``grid --executor inprocess``).

The papermill executor starts a Jupyter kernel per run, which imports torch, reads PTB,
trains, draws the curves and saves the executed notebook: about 7 s a run on the 2-core
development machine before any training, which is most of a smoke run. Here ``jobs``
worker processes each import torch and read PTB once, then call ``train.train`` for one
run after another::

    grid process (run_grid: plan, skip finished, bar, grid_sittings.csv)
      |-- worker 1: torch, PTB --> train(L1-adabelief-s141), train(L1-lm-x2-s141), ...
      '-- worker 2: torch, PTB --> train(L1-adabelief-s6), ...

A run gets the RunConfig notebook 03 would build for it (same threads, same run folder),
so its config.json, metrics.csv and status.json are the papermill executor's
(tests/test_inprocess.py); only the executed notebook and papermill.log are missing, and
the report reads neither. Locking is the papermill executor's: the worker holds the run's
``.grid.lock`` while ``train`` holds ``.lock``.

Stopping: the workers ignore Ctrl-C; the grid process catches it (or SIGTERM) and sends
each worker SIGTERM, which ``train`` turns into an interrupted run with its last
checkpoint kept, like Ctrl-C on ``lmreport train``. A worker that dies some other way ends
the pool: its run and those still queued come back as failed, and the same command
resumes them.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from .children import die_with_parent
from .grid import Job, NotebookRuns
from .train import DONE, RunBusy, mark_interrupted, read_status, run_lock

STOP_WAIT_S = 30.0  # how long a stopped worker may take to record its run as interrupted

_CORPORA: dict = {}            # in a worker: data_dir setting -> its Corpus, read once
_WORKER = {"busy": False, "stopping": False}


def _start_worker(threads: int) -> None:  # pragma: no cover - runs in the worker
    # The grid process hears Ctrl-C and stops the workers with SIGTERM; a worker that took
    # the SIGINT too would die between runs with a traceback instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    die_with_parent()  # an orphaned worker stops instead of training on
    # as the papermill executor sets them for a kernel (train sets torch's count itself)
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def _on_sigterm(signum, frame):  # pragma: no cover - runs in the worker
    _WORKER["stopping"] = True
    if _WORKER["busy"]:
        raise KeyboardInterrupt  # train records the run as interrupted and lets go of its locks
    os._exit(0)  # between runs: nothing to record


def train_job(job: Job, root: Path, threads: int, data_dir: str | None, device: str | None) -> tuple[Job, str, str]:
    """Train one job in this process; return (job, final status, error text), as ``grid.run_job``."""
    from .data import load_corpus
    from .sharpness import measure_after_training
    from .train import train

    if _WORKER["stopping"]:
        return job, "interrupted", ""
    run_dir = job.run_dir(root)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(run_dir, wait=0, name=".grid.lock", holder="run by another grid"):
            # what notebook 03 builds from the papermill executor's parameters
            config = job.config(root, run_dir=str(run_dir.resolve()), data_dir=data_dir or None,
                                device=device, threads=threads, progress=False)
            if config.data_dir not in _CORPORA:
                _CORPORA[config.data_dir] = load_corpus(config.data_dir, progress=False)
            _WORKER["busy"] = True
            try:
                train(config, corpus=_CORPORA[config.data_dir])
                measure_after_training(run_dir)  # as notebook 03 does, while the weights are here
            finally:
                _WORKER["busy"] = False
    except RunBusy as err:
        return job, "held", str(err)
    except KeyboardInterrupt:
        return job, "interrupted", ""
    except Exception as err:  # noqa: BLE001 - recorded as this job's failure
        return job, "failed", f"{type(err).__name__}: {err}"
    status = read_status(run_dir)
    if status["status"] in DONE:
        return job, status["status"], ""
    return job, "failed", status.get("error") or f"train ended with status {status['status']}"


class TrainingWorkers:
    """The in-process executor, in the shape ``grid.run_grid`` drives (see ``grid.NotebookRuns``)."""

    def __init__(self, jobs: int, root: Path, threads: int, data_dir: str | None, device: str | None):
        self._args = (root, threads, data_dir, device)
        self._others = set(multiprocessing.active_children())  # children that are not our workers
        # spawn, not fork: the grid process may already have run torch's thread pools,
        # and a forked copy of them can hang
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(threads,))
        self._submitted: list[Job] = []

    def submit(self, job: Job) -> Future:
        self._submitted.append(job)
        outer: Future = Future()

        def settle(inner: Future) -> None:
            if inner.cancelled():
                outer.cancel()
            elif inner.exception() is not None:  # the pool broke: a worker died mid-run
                outer.set_result((job, "failed", f"its worker process died ({type(inner.exception()).__name__}); "
                                                 "the same command resumes it"))
            else:
                outer.set_result(inner.result())

        self._pool.submit(train_job, job, *self._args).add_done_callback(settle)
        return outer

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        workers = [p for p in multiprocessing.active_children() if p not in self._others]
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.join(STOP_WAIT_S)
            if proc.is_alive():
                proc.kill()
                proc.join()
        root = self._args[0]
        for job in self._submitted:  # a worker killed mid-epoch could not say so itself
            run_dir = job.run_dir(root)
            if read_status(run_dir)["status"] != "running":
                continue
            try:
                with run_lock(run_dir, wait=0, name=".grid.lock"):  # not a run another grid holds
                    mark_interrupted(run_dir)
            except RunBusy:
                pass

    def close(self) -> None:
        self._pool.shutdown(wait=True)


EXECUTORS = {"papermill": NotebookRuns, "inprocess": TrainingWorkers}


def executor_named(name: str):
    """The grid executor called ``name`` (papermill: a notebook per run; inprocess: workers)."""
    if name not in EXECUTORS:
        raise ValueError(f"executor={name!r} is invalid: one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]
