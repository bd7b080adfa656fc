"""The notebooks: committed without outputs, and executed headless with their assertions."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            parts.append(out.get("text", "") or str(data.get("text/markdown", data.get("text/plain", ""))))
    return "\n".join(parts)


def test_notebooks_are_committed_without_outputs():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert paths
    proc = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", *map(str, paths)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata.kernelspec.name == "python3"
        assert "parameters" in nb.cells[1].metadata.get("tags", []), path.name


def test_no_notebook_cell_defines_a_function_or_a_class():
    # reusable code lives in lmreport/, where it is tested and importable; cells call it
    import ast

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for number, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type != "code":
                continue
            defined = [node.name for node in ast.walk(ast.parse(cell.source))
                       if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
            assert not defined, f"{path.name} cell {number} defines {', '.join(defined)}"


def test_01_landscape_modification_executes(tmp_path):
    out = tmp_path / "01.ipynb"
    pm.execute_notebook(NOTEBOOKS / "01_landscape_modification.ipynb", out, kernel_name="python3",
                        parameters={"figures_dir": str(tmp_path), "n_runs": 200, "steps": 1500},
                        progress_bar=False)
    text = _outputs_text(nbformat.read(out, as_version=4))
    assert "numerical vs closed-form H" in text and "langevin-lm:" in text
    for name in ("fig2_1_landscape_modification", "fig4_1_gradient_factor",
                 "toy_escape_from_local_minimum"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        assert (tmp_path / f"{name}.pdf").stat().st_size > 0


def test_02_adabelief_derivation_executes(tmp_path, ptb_dir):
    out = tmp_path / "02.ipynb"
    pm.execute_notebook(NOTEBOOKS / "02_adabelief_derivation.ipynb", out, kernel_name="python3",
                        parameters={"figures_dir": str(tmp_path), "trace_dir": str(tmp_path / "trace"),
                                    "data_dir": str(ptb_dir), "trace_tokens": 60_000},
                        progress_bar=False)
    text = _outputs_text(nbformat.read(out, as_version=4))
    assert "max |lmreport - numpy|" in text and "(the same run)" in text
    assert "def adabelief_numpy" in text  # the oracle's code is shown, from lmreport/derivation.py
    assert (tmp_path / "lm_factor_on_a_loss_trajectory.png").stat().st_size > 0
    # the algebra checks' float64 must not leak into the traced LSTM run, which trains as runs do
    import torch
    state = torch.load(tmp_path / "trace" / "checkpoint.pt", weights_only=False)
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float32}
