"""The report build: execute the report notebooks with papermill, convert with nbconvert.

``python -m lmreport report --profile P [--train]`` runs (with ``--train``) the profile's
missing grid runs, executes the report notebooks (01, 02, 04, 05, 06 and 07; 03 is the
per-run notebook the grid executes) into ``results/<P>/notebooks/``, joins
them into one notebook and writes ``results/<P>/report.html`` (code hidden, figures
embedded) and, where xelatex is installed, ``results/<P>/report.pdf``.
"""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import nbformat
import papermill as pm
from nbconvert import HTMLExporter, PDFExporter

from .data import CommandFailed
from .files import make_folder, write_bytes, write_text
from .grid import notebooks_dir, results_root, run_grid
from .report import figures_dir

REPORT_NOTEBOOKS = ("01_landscape_modification.ipynb", "02_adabelief_derivation.ipynb", "04_report.ipynb",
                    "05_sharpness.ipynb", "06_published_audit.ipynb", "07_generation.ipynb")
# Per-profile papermill settings: smoke models are measured with few iterations so the
# whole smoke report builds in minutes.
PROFILE_PARAMS = {
    "smoke": {"05_sharpness.ipynb": dict(batches=1, lanczos_steps=5, hutchinson_probes=4,
                                          average_samples=2, worst_steps=1, slice_points=5)},
}
HIDDEN_TAGS = {"parameters", "injected-parameters"}
LATEX_TEMPLATE = Path(__file__).parent / "templates" / "latex_unicode"
PDF_HINT = ("no PDF: xelatex not found (Debian/Ubuntu: apt-get install texlive-xetex "
            "texlive-fonts-recommended texlive-plain-generic pandoc fonts-dejavu)")


class GridFailed(CommandFailed):
    """report --train trained, and not one run of the profile finished."""


class NotebookFailed(CommandFailed):
    """A report notebook raised; the executed copy shows where."""


def execute_notebooks(profile: str, root: Path, out_dir: Path, figures: Path,
                      data_dir: str | None = None, notebook_params: dict | None = None) -> list[Path]:
    """Run the ``REPORT_NOTEBOOKS`` headless; executed copies go to ``out_dir``."""
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
    for name in REPORT_NOTEBOOKS:
        target = out_dir / name
        try:
            pm.execute_notebook(notebooks_dir() / name, target,
                                parameters={**params[name], **(notebook_params or {}).get(name, {})},
                                kernel_name="python3", progress_bar=False, cwd=str(notebooks_dir()),
                                # the kernel's own warning about TCP on this machine's loopback is noise
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
        except pm.PapermillExecutionError as err:  # the notebook keeps the traceback, in its cell
            raise NotebookFailed(f"{name} failed in cell [{err.exec_count}]: {err.ename}: {err.evalue}; "
                                 f"the traceback is in {target}") from None
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
                 threads: int | None = None) -> dict:
    """Build the report of a profile; returns what was written (and any grid failures).

    ``root`` holds ``<profile>/runs`` (default: the checkout's results/); figures go to
    ``figures_root`` (default: the checkout's figures/, profile figures in a subfolder).
    ``notebook_params`` adds papermill parameters per notebook file name (e.g. fewer toy
    runs for a quick build).
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
    root = Path(root) if root else results_root()
    figures = Path(figures_root) if figures_root else figures_dir()
    for var in ("LMREPORT_DATA_DIR", "LMREPORT_PUBLISHED_LOGS"):
        # the notebooks run in notebooks/: a relative setting means what it meant here
        if os.environ.get(var) and not Path(os.environ[var]).expanduser().is_absolute():
            os.environ[var] = str(Path(os.environ[var]).expanduser().resolve())
    load_corpus(data_dir, progress=progress)  # notebooks 02, 05 and 07 read PTB: fail before the first
    result = {"failed": [], "held": []}
    if train:
        make_folder(root / profile / "runs", "results_dir")
        summary = run_grid(profile, jobs=PROFILES[profile].grid_jobs if jobs is None else jobs, data_dir=data_dir,
                           root=root, progress=progress, threads=threads)
        result["failed"], result["held"] = summary["failed"], summary["held"]
    runs, _ = collect_runs(profile, root)
    if not (runs["status"] == "finished").any():
        if result["failed"]:
            raise GridFailed(f"no run of profile {profile!r} finished; {len(result['failed'])} failed, the "
                               f"first: {result['failed'][0][0]}: {result['failed'][0][1]}")
        raise ValueError(f"profile={profile!r} has no finished runs in {root / profile / 'runs'}: train them "
                         f"first (python -m lmreport grid --profile {profile}) or add --train")
    paths = execute_notebooks(profile, root, root / profile / "notebooks", figures, data_dir,
                              notebook_params)
    book = combine(paths, f"lmreport: AdaBelief-LM on Penn Treebank ({profile} profile)")
    html, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                           exclude_output_prompt=True).from_notebook_node(book)
    result["html"] = root / profile / "report.html"
    write_text(result["html"], html)
    if pdf and shutil.which("xelatex"):
        exporter = PDFExporter(extra_template_paths=[str(LATEX_TEMPLATE)], template_file="lmreport.tex.j2",
                               exclude_input=True,
                               exclude_input_prompt=True, exclude_output_prompt=True)
        body, _ = exporter.from_notebook_node(book, resources={"metadata": {"path": str(root / profile)}})
        result["pdf"] = root / profile / "report.pdf"
        write_bytes(result["pdf"], body)
    elif pdf:
        result["pdf_hint"] = PDF_HINT
    return result
