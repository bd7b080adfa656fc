"""The report build: execute the report notebooks with papermill, convert with nbconvert.

``python -m lmreport report --profile P [--train]`` runs (with ``--train``) the profile's
missing grid runs, executes the report notebooks (01, 02, 04, 05, 06 and 07; 03 is the
per-run notebook the grid executes) into ``results/<P>/notebooks/``, joins
them into one notebook and writes ``results/<P>/report.html`` (code hidden, figures
embedded) and, where Chromium and Playwright are installed, ``results/<P>/report.pdf``:
that HTML, printed (``lmreport.pdf``), so the two always carry the same numbers and the
same build stamp; where they are not, an older PDF is removed rather than left stale.
"""
from __future__ import annotations

import copy
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import papermill as pm
from nbconvert import HTMLExporter
from tqdm.auto import tqdm

from .data import CommandFailed
from .document import add_alt_text, build_stamp, maths_as_mathml, number_document
from .files import make_folder, write_text
from .grid import notebooks_dir, results_root, run_grid
from .inprocess import executor_named
from .report import figures_dir

REPORT_NOTEBOOKS = ("01_landscape_modification.ipynb", "02_adabelief_derivation.ipynb", "04_report.ipynb",
                    "05_sharpness.ipynb", "06_published_audit.ipynb", "07_generation.ipynb")
# Per-profile papermill settings: the smoke report measures two of the three seeds (enough
# for every paired statistic) with the fewest iterations each measure allows, so that the
# whole smoke report builds in minutes (issue #20); its numbers mean nothing anyway.
PROFILE_PARAMS = {
    "smoke": {"05_sharpness.ipynb": dict(batches=1, lanczos_steps=3, hutchinson_probes=2, seeds=[141, 6],
                                          average_samples=1, worst_steps=1, slice_points=3),
              # notebook 02's traced training run: one short epoch instead of 2 x 120k tokens
              "02_adabelief_derivation.ipynb": dict(trace_tokens=30_000, trace_epochs=1)},
}
# How report --train runs a profile's grid: a smoke run trains in about as long as a
# notebook kernel takes to start, so the smoke grid skips the kernels (issue #20); the
# other profiles keep an executed notebook 03 per run.
REPORT_EXECUTOR = {"smoke": "inprocess"}
HIDDEN_TAGS = {"parameters", "injected-parameters"}


HEARTBEAT_S = 5.0  # a bar is redrawn at least this often, so a long cell never looks like a hang


@contextmanager
def heartbeat(bar: tqdm, every: float = HEARTBEAT_S):
    """Redraw ``bar`` (its elapsed time) every ``every`` seconds while the block runs."""
    stop = threading.Event()

    def tick():
        while not stop.wait(every):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield bar
    finally:
        stop.set()
        thread.join()


def format_phases(phases: dict) -> str:
    """{"grid": 126.0, "notebooks": 114.2, "html": 4.1} -> 'grid 2.1 min, notebooks 1.9 min, html 4 s'."""
    return ", ".join(f"{name} {s / 60:.1f} min" if s >= 60 else f"{name} {s:.0f} s" for name, s in phases.items())


class GridFailed(CommandFailed):
    """report --train trained, and not one run of the profile finished."""


class NotebookFailed(CommandFailed):
    """A report notebook raised; the executed copy shows where."""


def execute_notebooks(profile: str, root: Path, out_dir: Path, figures: Path,
                      data_dir: str | None = None, notebook_params: dict | None = None,
                      progress: bool = True, seconds: dict | None = None) -> list[Path]:
    """Run the ``REPORT_NOTEBOOKS`` headless; executed copies go to ``out_dir``. A bar over
    the notebooks names the one running and its cell; ``seconds`` (if given) receives each
    notebook's wall time."""
    out_dir.mkdir(parents=True, exist_ok=True)

    def where(path: Path) -> str:
        # relative to the notebooks (their working directory) when inside the checkout, so
        # the executed copies that are committed read the same on every clone
        path = Path(path).resolve()
        inside = path.is_relative_to(notebooks_dir().parent.resolve())
        return os.path.relpath(path, notebooks_dir().resolve()) if inside else str(path)

    results, figs = where(root), where(figures)
    data = where(Path(data_dir).expanduser()) if data_dir else ""
    params = {
        "01_landscape_modification.ipynb": {"figures_dir": figs},
        "02_adabelief_derivation.ipynb": {"figures_dir": figs, "data_dir": data,
                                          "trace_dir": where(root / "tmp" / "02_loss_trace")},
        "04_report.ipynb": {"profile": profile, "results_root": results, "figures_dir": where(figures / profile)},
        "05_sharpness.ipynb": {"profile": profile, "results_root": results, "figures_dir": where(figures / profile),
                               "data_dir": data},
        "06_published_audit.ipynb": {"profile": profile, "results_root": results, "figures_dir": figs},
        "07_generation.ipynb": {"profile": profile, "results_root": results, "data_dir": data},
    }
    for name, extra in PROFILE_PARAMS.get(profile, {}).items():
        params[name].update(extra)
    paths = []
    bar = tqdm(total=len(REPORT_NOTEBOOKS), desc="notebooks", unit="nb", disable=not progress)
    with heartbeat(bar):
        for name in REPORT_NOTEBOOKS:
            target = out_dir / name
            cells = len(nbformat.read(notebooks_dir() / name, as_version=4).cells) + 1  # + injected parameters
            bar.set_postfix_str(name)

            def on_cell_start(cell, cell_index, name=name, cells=cells, **_):
                bar.set_postfix_str(f"{name}, cell {cell_index + 1}/{cells}")

            start = time.perf_counter()
            try:
                pm.execute_notebook(notebooks_dir() / name, target,
                                    parameters={**params[name], **(notebook_params or {}).get(name, {})},
                                    kernel_name="python3", progress_bar=False, cwd=str(notebooks_dir()),
                                    # the kernel's own warning about TCP on this machine's loopback is noise
                                    extra_arguments=["--IPKernelApp.log_level=ERROR"], on_cell_start=on_cell_start)
            except pm.PapermillExecutionError as err:  # the notebook keeps the traceback, in its cell
                bar.close()
                raise NotebookFailed(f"{name} failed in cell [{err.exec_count}]: {err.ename}: {err.evalue}; "
                                     f"the traceback is in {target}") from None
            if seconds is not None:
                seconds[name] = time.perf_counter() - start
            bar.update(1)
    bar.set_postfix_str("")
    bar.close()
    for name in REPORT_NOTEBOOKS:
        target = out_dir / name
        book = nbformat.read(target, as_version=4)
        book.metadata.papermill.update(input_path=where(notebooks_dir() / name), output_path=where(target))
        for cell in book.cells:  # papermill gives the cell it adds a random id
            if "injected-parameters" in cell.metadata.get("tags", []):
                cell["id"] = "injected-parameters"
        write_text(target, nbformat.writes(book) + "\n")
        paths.append(target)
    return paths


def combine(paths: list[Path], title: str) -> nbformat.NotebookNode:
    """One notebook from several, without their parameter cells."""
    first = nbformat.read(paths[0], as_version=4)
    book = copy.deepcopy(first)
    book.cells = []
    for i, path in enumerate(paths):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if not HIDDEN_TAGS & set(cell.metadata.get("tags", [])):
                cell["id"] = f"nb{i}-{cell.get('id', len(book.cells))}"  # ids stay unique
                book.cells.append(cell)
    book.metadata["title"] = title
    book.metadata.pop("papermill", None)
    return book


def build_report(profile: str, train: bool = False, jobs: int | None = None, pdf: bool = True,
                 root: str | Path | None = None, data_dir: str | None = None, progress: bool = True,
                 figures_root: str | Path | None = None, notebook_params: dict | None = None,
                 threads: int | None = None, executor: str | None = None) -> dict:
    """Build the report of a profile; returns what was written (and any grid failures).

    ``root`` holds ``<profile>/runs`` (default: the checkout's results/); figures go to
    ``figures_root`` (default: the checkout's figures/, profile figures in a subfolder).
    ``notebook_params`` adds papermill parameters per notebook file name (e.g. fewer toy
    runs for a quick build). ``executor`` runs the grid with ``--train``: papermill or
    inprocess (default: ``REPORT_EXECUTOR`` of the profile, else papermill).
    """
    from .config import PROFILES
    from .data import load_corpus
    from .report import collect_runs

    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is invalid: one of {', '.join(PROFILES)}")
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs={jobs} is invalid: an integer >= 1")
    if threads is not None and threads < 1:
        raise ValueError(f"threads={threads} is invalid: an integer >= 1")
    run_grid_with = executor_named(executor or REPORT_EXECUTOR.get(profile, "papermill"))
    root = Path(root) if root else results_root()
    figures = Path(figures_root) if figures_root else figures_dir()
    for var in ("LMREPORT_DATA_DIR", "LMREPORT_PUBLISHED_LOGS"):
        # the notebooks run in notebooks/: a relative setting means what it meant here
        if os.environ.get(var) and not Path(os.environ[var]).expanduser().is_absolute():
            os.environ[var] = str(Path(os.environ[var]).expanduser().resolve())
    load_corpus(data_dir, progress=progress)  # notebooks 02, 05 and 07 read PTB: fail before the first
    result = {"failed": [], "held": [], "phases": {}, "notebook_seconds": {}}
    phases = result["phases"]
    if train:
        make_folder(root / profile / "runs", "results_dir")
        start = time.perf_counter()
        summary = run_grid(profile, jobs=PROFILES[profile].grid_jobs if jobs is None else jobs, data_dir=data_dir,
                           root=root, progress=progress, threads=threads, executor=run_grid_with)
        phases["grid"] = time.perf_counter() - start
        result["failed"], result["held"], result["trained"] = summary["failed"], summary["held"], summary.get("ran")
    runs, _ = collect_runs(profile, root)
    if not (runs["status"] == "finished").any():
        if result["failed"]:
            raise GridFailed(f"no run of profile {profile!r} finished; {len(result['failed'])} failed, the "
                               f"first: {result['failed'][0][0]}: {result['failed'][0][1]}")
        raise ValueError(f"profile={profile!r} has no finished runs in {root / profile / 'runs'}: train them "
                         f"first (python -m lmreport grid --profile {profile}) or add --train")
    start = time.perf_counter()
    paths = execute_notebooks(profile, root, root / profile / "notebooks", figures, data_dir,
                              notebook_params, progress, result["notebook_seconds"])
    phases["notebooks"] = time.perf_counter() - start
    book = combine(paths, f"lmreport: AdaBelief-LM on Penn Treebank ({profile} profile)")
    result["stamp"] = build_stamp()
    result["numbered"] = number_document(book, stamp=result["stamp"])
    start = time.perf_counter()
    with _step("HTML", progress):
        html, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                               exclude_output_prompt=True).from_notebook_node(maths_as_mathml(book))
        html = add_alt_text(html, result["numbered"]["figures"])
        result["html"] = root / profile / "report.html"
        write_text(result["html"], html)
    phases["HTML"] = time.perf_counter() - start
    if pdf:
        from .pdf import pdf_unavailable, print_pdf

        target = root / profile / "report.pdf"
        result["pdf_hint"] = pdf_unavailable()
        if result["pdf_hint"] is None:
            del result["pdf_hint"]
            start = time.perf_counter()
            with _step("PDF (Chromium)", progress):
                result["pdf_info"] = print_pdf(result["html"], target, result["stamp"])
                result["pdf"] = target
            phases["PDF"] = time.perf_counter() - start
        elif target.is_file():  # a PDF of an earlier build would disagree with this HTML
            target.unlink()
            result["pdf_hint"] += f"; removed the older {target.name}"
    return result


@contextmanager
def _step(what: str, progress: bool):
    """A one-step bar whose elapsed time keeps moving while ``what`` is written."""
    bar = tqdm(total=1, desc=what, unit="file", disable=not progress)
    with heartbeat(bar):
        yield
    bar.update(1)
    bar.close()


QUICKSTART_START, QUICKSTART_END = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"


def timing_markers(record: dict) -> tuple[str, str]:
    """The README block a timing record renders into: the quick start for a smoke build that
    trains, else the rebuild timing of its profile (``<!-- rebuild:<profile>:begin -->``)."""
    if record["profile"] == "smoke" and record["train"]:
        return QUICKSTART_START, QUICKSTART_END
    return f"<!-- rebuild:{record['profile']}:begin -->", f"<!-- rebuild:{record['profile']}:end -->"


def process_wall_seconds() -> float | None:
    """Seconds since this process started (what ``time`` calls real), from /proc on Linux."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def timing_record(result: dict, argv: list[str], profile: str, train: bool) -> dict:
    """What a report build took, where: the record the README's quick-start timing cites."""
    import platform
    import subprocess

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() \
        else platform.processor()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or None
    return {"date": time.strftime("%Y-%m-%d"), "command": "python -m lmreport " + " ".join(argv),
            "profile": profile, "train": train, "commit": commit, "cpu": cpu, "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(),
            "wall_s": process_wall_seconds(), "phases_s": result["phases"],
            "notebooks_s": result["notebook_seconds"], "grid_runs_trained": result.get("trained")}


def render_quickstart(record: dict, record_path: str) -> str:
    """The README's quick-start timing sentence, from a timing record."""
    minutes = record["wall_s"] / 60
    slowest = max(record["notebooks_s"], key=record["notebooks_s"].get)
    return (f"On {record['date']}, `{record['command']}` took **{minutes:.1f} minutes** on the "
            f"{record['cores']}-core development machine ({record['cpu']}, torch {record['torch']}; "
            f"wall time of the process, commit {record['commit']}): "
            f"{format_phases(record['phases_s'])}; the slowest notebook was {slowest.split('_')[0]} "
            f"({record['notebooks_s'][slowest]:.0f} s). Recorded in `{record_path}`.")


def update_readme_timing(readme: Path, record_path: Path) -> bool:
    """Re-render the README block the record belongs to (``timing_markers``) from it."""
    import json

    from .files import replace_block

    record = json.loads(record_path.read_text(encoding="utf-8"))
    shown = os.path.relpath(record_path.resolve(), readme.resolve().parent)
    return replace_block(readme, *timing_markers(record), lambda: render_quickstart(record, shown))
