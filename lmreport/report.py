"""Report helpers: where figures and tables go, and how they are written."""
from __future__ import annotations

from pathlib import Path

from .data import repo_root


def project_dir() -> Path:
    """The checkout (editable install), else the current folder."""
    return repo_root() or Path.cwd()


def figures_dir(profile: str | None = None) -> Path:
    folder = project_dir() / "figures"
    return folder / profile if profile else folder


def save_figure(fig, name: str, folder: str | Path | None = None) -> list[Path]:
    """Write ``fig`` as PNG (for the HTML report) and PDF (vector, for print)."""
    folder = Path(folder) if folder else figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None})
    return paths
