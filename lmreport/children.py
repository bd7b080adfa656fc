"""Child processes the grid and the benchmarks start.

A child must not outlive its parent: a grid restarted after its parent was killed would
otherwise find an orphan still training a run it wants (Linux's PR_SET_PDEATHSIG sends the
child SIGTERM when the parent dies). And a child that fails is reported by the last lines
of its log, which is where papermill and ``train`` write the reason.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask the kernel for SIGTERM when the parent process dies (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def log_tail(path: Path, lines: int = 3) -> str:
    """The last ``lines`` non-empty lines of a log joined with " | ", or "" when it is missing."""
    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return " | ".join(line.strip() for line in text[-lines:])
