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
    assert (tmp_path / "lm_factor_on_a_loss_trajectory.png").stat().st_size > 0
