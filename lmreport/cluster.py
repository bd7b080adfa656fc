"""Grids through submitit: one SLURM job per run (a job array), or submitit's local executor.

Layout, beside the runs of a profile::

    results/<profile>/cluster/jobs.json     run name -> the job that was last submitted for it
    results/<profile>/cluster/logs/         submitit's pickles and each job's stdout/stderr

A job trains its run in-process with ``train.train`` (no notebook, no papermill: a SLURM
signal reaches one Python process, and its handler is submitit's). When SLURM preempts a
job or its time limit comes near, SLURM sends SIGUSR2, submitit calls ``RunJob.checkpoint``
and requeues the same job; the requeued job starts ``train`` again, which resumes from the
checkpoint of the last finished epoch, so the run ends with the numbers of a run trained
without a break (``train``'s resume is bit-identical on one machine).

``status.json`` of the run stays the truth about the run; the scheduler's state only says
whether a job for it is still queued or running. Re-submitting a grid submits the runs that
are neither done nor held by a live job.

Two jobs never train one folder. ``train`` holds an ``flock`` on the run folder, but on NFS
``flock`` is node-local under the ``local_lock=flock|all`` and ``nolock`` mounts (it is
cluster-wide only where NLM/NFSv4 locking works), so two nodes could both get it. The job
therefore also claims the folder by creating ``.owner`` with ``O_CREAT | O_EXCL``, which is
atomic across NFSv3+ clients: the owner file names the job id, and only that job (requeues
keep their id) may train there. The job removes it when it ends for good; the submitter
removes an owner file left by a job the scheduler says is over (killed, node failure).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from tqdm.auto import tqdm

from .config import RunConfig
from .files import make_folder, write_text
from .grid import Job, check_before_running, plan, results_root
from .train import DONE, read_status, train

EXECUTORS = ("local", "slurm")
OWNER_FILE = ".owner"
# Scheduler states in which a job may still train its run (SLURM's names; local: RUNNING).
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED",
               "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "SIGNALING", "STAGE_OUT"}


@dataclass
class ClusterOptions:
    """What every job of a grid asks the scheduler for (a lab keeps these in a YAML file)."""

    partition: str | None = None    # SLURM partition (None: the cluster's default)
    gpus_per_job: int = 1           # GPUs of the job's one task (0: a CPU job)
    cpus_per_job: int = 4           # --cpus-per-task; also the run's torch threads
    time: int = 24 * 60             # minutes before the job is stopped and requeued
    mem: str | None = None          # --mem, e.g. 32G or 500M (None: the partition's default)
    account: str | None = None      # account the jobs are charged to
    qos: str | None = None          # quality of service
    sbatch: list[str] = field(default_factory=list)  # extra sbatch options, e.g. --constraint=h100
    max_requeues: int = 20          # submitit's timeout budget per run (preemptions do not count)

    @classmethod
    def from_file(cls, path: str | Path) -> "ClusterOptions":
        """Read a YAML (or JSON) mapping of these fields; unknown keys are refused."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as err:
            raise ValueError(f"cluster_config={str(path)!r} is invalid: cannot read it ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise ValueError(f"cluster_config={str(path)!r} is invalid: not YAML or JSON "
                             f"({str(err).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ValueError(f"cluster_config={str(path)!r} is invalid: a mapping of "
                             f"{', '.join(f.name for f in fields(cls))}")
        return cls().updated(**{k.replace("-", "_"): v for k, v in data.items()})

    def updated(self, **values) -> "ClusterOptions":
        """A copy with the given (non-None) values, checked: flags override the file."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"cluster option {unknown[0]!r} is unknown: one of {', '.join(sorted(known))}")
        values = {k: v for k, v in values.items() if v is not None}
        if "time" in values:
            values["time"] = parse_minutes(values["time"])
        if isinstance(values.get("sbatch"), str):
            values["sbatch"] = [values["sbatch"]]
        return replace(self, **values).validate()

    def validate(self) -> "ClusterOptions":
        def bad(name, value, allowed):
            raise ValueError(f"{name}={value!r} is invalid: {allowed}")

        for name in ("gpus_per_job", "cpus_per_job", "max_requeues"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name != "cpus_per_job" else 1):
                bad(name, value, "an integer >= " + ("1" if name == "cpus_per_job" else "0"))
        if self.mem is not None and not re.fullmatch(r"\d+(\.\d+)?[KMGT]B?", str(self.mem), flags=re.I):
            bad("mem", self.mem, "a size such as 32G, 64GB or 500M")
        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not re.fullmatch(r"[\w.,:@+-]+", value)):
                bad(name, value, "a SLURM name (letters, digits, . , : @ + - _)")
        if not isinstance(self.sbatch, list) or not all(isinstance(s, str) for s in self.sbatch):
            bad("sbatch", self.sbatch, "a list of sbatch options such as --constraint=h100")
        for line in self.sbatch:
            sbatch_option(line)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def slurm_parameters(self) -> dict:
        """submitit ``SlurmExecutor.update_parameters`` keywords for these options."""
        extra = dict(sbatch_option(line) for line in self.sbatch)
        params = dict(time=self.time, nodes=1, ntasks_per_node=1, cpus_per_task=self.cpus_per_job,
                      partition=self.partition, account=self.account, qos=self.qos,
                      additional_parameters=extra, signal_delay_s=120, stderr_to_stdout=True)
        if self.gpus_per_job:
            params["gpus_per_node"] = self.gpus_per_job
        if self.mem is not None:
            params["mem"] = slurm_size(self.mem)
        return {k: v for k, v in params.items() if v is not None}


def parse_minutes(value) -> int:
    """Minutes from an int, '90', 'HH:MM:SS', 'MM:SS' or 'D-HH:MM:SS' (sbatch --time forms)."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if isinstance(value, bool) or not match:
        raise ValueError(f"time={value!r} is invalid: minutes, or HH:MM:SS, or D-HH:MM:SS")
    days, a, b, c = match.groups()
    if c is not None:                       # [D-]HH:MM:SS
        minutes = int(a) * 60 + int(b) + int(c) / 60
    elif b is not None:                     # D-HH:MM, else MM:SS
        minutes = int(a) * 60 + int(b) if days else int(a) + int(b) / 60
    else:                                   # D-HH, else minutes
        minutes = int(a) * 60 if days else int(a)
    minutes = int(minutes + 24 * 60 * int(days or 0) + 0.999)
    if minutes < 1:
        raise ValueError(f"time={value!r} is invalid: at least one minute")
    return minutes


def slurm_size(text: str) -> str:
    """'64gb' -> '64G', '1.5G' -> '1536M': sbatch --mem takes whole numbers with K/M/G/T."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT])B?", text, flags=re.I).groups()
    units = "KMGT"
    value, k = float(number), units.index(unit.upper())
    while value != int(value) and k > 0:
        value, k = value * 1024, k - 1
    return f"{int(value)}{units[k]}"


def sbatch_option(line: str) -> tuple[str, object]:
    """'--constraint=h100' or '#SBATCH --exclusive' -> (option, value or True)."""
    text = line.strip().removeprefix("#SBATCH").strip()
    match = re.fullmatch(r"--([a-z][a-z0-9-]*)(?:[= ](.+))?", text)
    if not match:
        raise ValueError(f"sbatch={line!r} is invalid: one sbatch option such as --constraint=h100 "
                         f"or --exclusive")
    return match.group(1), match.group(2).strip() if match.group(2) else True


def load_submitit():
    """submitit, or a one-line error saying how to install it (an optional extra)."""
    try:
        import submitit
    except ImportError:
        raise ValueError('the local and slurm executors need submitit: pip install -e ".[cluster]"') from None
    return submitit


class RunJob:
    """The callable a job runs: train one run from its resolved config (a dict, pickled).

    Steps, in the job:
    1. claim the run folder (``.owner``, see the module docstring), or refuse;
    2. ``train`` the run, resuming from its checkpoint if an earlier job trained part of it;
    3. on SIGUSR2 (preemption, time limit) submitit calls ``checkpoint``: the same call is
       requeued, and the folder stays claimed by this job id;
    4. when the job ends otherwise (finished, diverged, failed, cancelled), release the claim.
    """

    def __init__(self, config: dict):
        self.config = config

    def __call__(self) -> str:
        submitit = load_submitit()
        config = RunConfig.from_dict(self.config)
        run_dir = Path(config.run_dir)
        make_folder(run_dir, "run_dir")
        job_id = submitit.JobEnvironment().job_id
        claim(run_dir, job_id)
        status = read_status(run_dir)
        print(f"job {job_id}: {run_dir.name}, from epoch {status.get('epoch', 0) + 1} of {config.epochs}"
              f" ({status['status']})", flush=True)
        requeued = False
        try:
            train(config)
        except SystemExit:  # submitit's exit after requeueing this job: it comes back
            requeued = True
            raise
        finally:
            if not requeued:
                release(run_dir, job_id)
        status = read_status(run_dir)
        print(f"job {job_id}: {run_dir.name} {status['status']} at epoch {status.get('epoch')}", flush=True)
        return status["status"]

    def checkpoint(self):
        submitit = load_submitit()
        # train() checkpoints after every epoch; the requeued call resumes from there
        return submitit.helpers.DelayedSubmission(RunJob(self.config))


def claim(run_dir: Path, job_id: str) -> None:
    """Own ``run_dir`` for ``job_id``: create the owner file exclusively, or find it ours."""
    path = run_dir / OWNER_FILE
    record = {"job_id": str(job_id), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        owner = read_owner(run_dir)
        if owner.get("job_id") != str(job_id):
            raise ValueError(f"run dir {run_dir} is owned by job {owner.get('job_id')} on "
                             f"{owner.get('host')} since {owner.get('since')}; grid --executor "
                             f"clears the claim once the scheduler says that job is over") from None
        return  # a requeue of the owning job
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)


def read_owner(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def release(run_dir: Path, job_id: str) -> None:
    if read_owner(run_dir).get("job_id") == str(job_id):
        (run_dir / OWNER_FILE).unlink(missing_ok=True)


def cluster_dir(root: Path, profile: str) -> Path:
    return root / profile / "cluster"


def read_ledger(root: Path, profile: str) -> dict:
    path = cluster_dir(root, profile) / "jobs.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_ledger(root: Path, profile: str, ledger: dict) -> None:
    write_text(cluster_dir(root, profile) / "jobs.json", json.dumps(ledger, indent=1, sort_keys=True) + "\n")


def job_states(executor: str, job_ids) -> dict[str, str]:
    """The scheduler's state of each job: SLURM's (one ``sacct`` call through submitit's
    watcher), or, for the local executor, RUNNING while its controller process lives, else
    ENDED. A job SLURM does not know (yet) is UNKNOWN."""
    job_ids = sorted({str(j) for j in job_ids})
    if executor == "slurm":
        submitit = load_submitit()
        watcher = submitit.SlurmJob.watcher
        for job_id in job_ids:
            watcher.register_job(job_id)
        watcher.update()
        return {j: watcher.get_state(j, mode="cache").split()[0].rstrip("+") for j in job_ids}
    states = {}
    for job_id in job_ids:
        try:
            cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
        except (OSError, ValueError):
            cmdline = b""
        states[job_id] = "RUNNING" if b"submitit.local._local" in cmdline else "ENDED"
    return states


def live_jobs(ledger: dict, names) -> set[str]:
    """The runs among ``names`` whose last submitted job is queued or running."""
    entries = {n: ledger[n] for n in names if n in ledger}
    states = {}
    for executor in {e["executor"] for e in entries.values()}:
        states[executor] = job_states(executor, [e["job_id"] for e in entries.values() if e["executor"] == executor])
    return {n for n, e in entries.items() if states[e["executor"]][e["job_id"]] in LIVE_STATES}


def make_executor(executor: str, folder: Path, options: ClusterOptions):
    submitit = load_submitit()
    if executor == "slurm":
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=options.max_requeues)
        ex.update_parameters(**options.slurm_parameters())
    elif executor == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=options.max_requeues)
        ex.update_parameters(timeout_min=options.time, signal_delay_s=30, stderr_to_stdout=True)
    else:
        raise ValueError(f"executor={executor!r} is invalid: one of {', '.join(EXECUTORS)}")
    return ex


def job_configs(jobs: list[Job], root: Path, threads: int | None, data_dir: str | None,
                device: str | None, **overrides) -> dict[str, RunConfig]:
    """Run name -> the resolved config a job trains (absolute paths: jobs start elsewhere)."""
    out = {}
    for job in jobs:
        config = replace(job.config(root), run_dir=str(job.run_dir(root).resolve()), progress=False,
                         threads=threads, data_dir=str(Path(data_dir).resolve()) if data_dir else None,
                         **({"device": device} if device else {}), **overrides)
        out[job.name] = config.validate()
    return out


def grid_status(profile: str, executor: str, root: Path, names: list[str]) -> list[dict]:
    """Per run: its status.json and epoch, and the job last submitted for it and its state."""
    ledger = read_ledger(root, profile)
    states = {}
    for kind in {e["executor"] for n, e in ledger.items() if n in names}:
        states[kind] = job_states(kind, [e["job_id"] for n, e in ledger.items() if n in names and e["executor"] == kind])
    rows = []
    for name in names:
        status = read_status(root / profile / "runs" / name)
        entry = ledger.get(name, {})
        rows.append({"run": name, "status": status["status"], "epoch": status.get("epoch", 0),
                     "job": entry.get("job_id", "-"), "executor": entry.get("executor", "-"),
                     "job state": states[entry["executor"]][entry["job_id"]] if entry else "-"})
    return rows


def submit_configs(profile: str, executor: str, configs: dict[str, RunConfig], root: Path,
                   options: ClusterOptions, parallel: int | None = None) -> dict[str, str]:
    """Submit a job for each run that is neither done nor held by a live job; return
    run name -> new job id. Owner files of jobs that are over are cleared first."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r} is invalid: one of {', '.join(EXECUTORS)}")
    folder = make_folder(cluster_dir(root, profile) / "logs", "results_dir")
    ledger = read_ledger(root, profile)
    live = live_jobs(ledger, configs)
    todo = []
    for name, config in configs.items():
        run_dir = Path(config.run_dir)
        if read_status(run_dir)["status"] in DONE or name in live:
            continue
        owner = read_owner(run_dir).get("job_id")
        if owner:
            if job_states(executor, [owner])[owner] in LIVE_STATES:
                continue  # trained by a job submitted from elsewhere (another ledger)
            (run_dir / OWNER_FILE).unlink()  # left by a job that is over (killed, node failure)
        todo.append((name, config))
    if not todo:
        return {}
    ex = make_executor(executor, folder, options)
    if executor == "slurm":
        ex.update_parameters(job_name=f"lmreport-{profile}",
                             **({"array_parallelism": parallel} if parallel else {}))
        with ex.batch():  # one job array
            submitted = [(name, ex.submit(RunJob(config.to_dict()))) for name, config in todo]
    else:
        submitted = [(name, ex.submit(RunJob(config.to_dict()))) for name, config in todo]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    ledger.update({name: {"job_id": str(job.job_id), "executor": executor, "submitted": stamp}
                   for name, job in submitted})
    write_ledger(root, profile, ledger)
    return {name: str(job.job_id) for name, job in submitted}


def wait_for(profile: str, executor: str, root: Path, names: list[str], poll: float = 30.0,
             progress: bool = True) -> list[dict]:
    """Block until no run of ``names`` has a live job; a bar counts the runs done."""
    bar = tqdm(total=len(names), desc=f"{executor} {profile}", unit="run", disable=not progress)
    while True:
        rows = grid_status(profile, executor, root, names)
        done = sum(r["status"] in DONE for r in rows)
        if done != bar.n:
            bar.update(done - bar.n)
        if not any(r["job state"] in LIVE_STATES for r in rows):
            bar.close()
            return rows
        time.sleep(poll)


def run_cluster_grid(profile: str, executor: str, layers=None, variants=None, seeds=None,
                     options: ClusterOptions | None = None, jobs: int | None = None,
                     shard: str | None = None, data_dir: str | None = None, device: str | None = None,
                     root: str | Path | None = None, threads: int | None = None, wait: bool = False,
                     progress: bool = True, planned: bool = False) -> dict:
    """Submit the unfinished runs of ``grid.plan`` (``planned`` as there): ``slurm``, one
    array; ``local``, submitit's local executor, ``jobs`` at a time, waiting for them. Returns
    what was submitted and the state of every run."""
    options = options or ClusterOptions()
    root = Path(root) if root else results_root()
    asked = plan(profile, layers, variants, seeds, shard, root, planned=planned)
    names = [j.name for j in asked]
    todo = [j for j in asked if read_status(j.run_dir(root))["status"] not in DONE]
    check_before_running(todo, root, data_dir, device if executor == "local" else "cpu", progress)
    if executor == "slurm":
        configs = job_configs(todo, root, threads or options.cpus_per_job, data_dir, device)
        submitted = submit_configs(profile, executor, configs, root, options, parallel=jobs)
        rows = wait_for(profile, executor, root, names, progress=progress) if wait else \
            grid_status(profile, executor, root, names)
        return {"submitted": submitted, "runs": rows}
    jobs = jobs or 1
    configs = job_configs(todo, root, threads or max(1, (os.cpu_count() or 1) // jobs), data_dir, device)
    submitted: dict[str, str] = {}
    pending = list(configs)
    bar = tqdm(total=len(names), initial=len(names) - len(todo), desc=f"local {profile}", unit="run",
               disable=not progress)
    try:
        while True:
            rows = {r["run"]: r for r in grid_status(profile, executor, root, names)}
            live = [n for n in configs if rows[n]["job state"] in LIVE_STATES]
            start = [n for n in pending if n not in live][:max(0, jobs - len(live))]
            if start:
                submitted.update(submit_configs(profile, executor, {n: configs[n] for n in start}, root, options))
                pending = [n for n in pending if n not in start]
            done = sum(r["status"] in DONE for r in rows.values())
            if done != bar.n:
                bar.update(done - bar.n)
            if not pending and not live and not start:
                break
            time.sleep(1.0)
    except BaseException:
        cancel_live(profile, executor, root, list(configs))
        raise
    finally:
        bar.close()
    return {"submitted": submitted, "runs": grid_status(profile, executor, root, names)}


def cancel_live(profile: str, executor: str, root: Path, names: list[str]) -> None:
    """Stop the live local jobs of these runs (SIGINT: each run records itself interrupted)."""
    for name in names:
        entry = read_ledger(root, profile).get(name)
        if entry and entry["executor"] == "local" and name in live_jobs({name: entry}, [name]):
            try:
                # the controller's Ctrl-C: it stops its task with SIGINT (the run records
                # itself interrupted), then SIGKILL if it lingers
                os.kill(int(entry["job_id"]), signal.SIGINT)
            except ProcessLookupError:
                pass
