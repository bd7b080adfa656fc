"""The ledger of grid sittings: ``results/<profile>/grid_sittings.csv``, one line per grid
invocation that trained something.

A sitting writes its line when it starts, rewrites it after every run it completes and at
least every ``HEARTBEAT_S`` seconds (outcome ``running``), and gives it its final outcome
(``complete`` or ``interrupted``) when it ends. A sitting whose machine is lost never ends,
so the next sitting to start turns every ``running`` line whose last heartbeat is older than
``STALE_S`` into ``lost``, keeping the counts and wall time as of that heartbeat: the ledger
then says what a lost sitting did without anyone rebuilding its line by hand.

The file is rewritten whole (atomically) under a lock, so a crash cannot leave half a line
and grids over the same results (shards started or stopped together) keep every line.
"""
from __future__ import annotations

import csv
import io
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from .files import write_text
from .train import run_lock

COLUMNS = ("started", "wall_minutes", "ran", "skipped", "failed", "jobs", "threads_per_job", "host",
           "variants", "outcome")
STARTED_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
HEARTBEAT_S = 300
STALE_S = 3 * HEARTBEAT_S  # a live sitting rewrites its line well within this


def _line(values) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def _rewrite(path: Path, edit) -> None:
    """``edit(lines) -> lines`` on the ledger's data lines, under the lock, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with run_lock(path.parent, name=".grid_sittings.lock", holder="logged by another grid"):
        text = path.read_text(encoding="utf-8") if path.is_file() else _line(COLUMNS)
        header, *lines = text.splitlines(keepends=True)
        write_text(path, header + "".join(edit(lines)))


def mark_lost(path: str | Path, now: float | None = None) -> int:
    """Turn every ``running`` line whose heartbeat is older than ``STALE_S`` into ``lost``;
    how many it turned."""
    path = Path(path)
    if not path.is_file():
        return 0
    now = time.time() if now is None else now
    turned = 0

    def edit(lines):
        nonlocal turned
        out = []
        for line in lines:
            row = next(csv.reader([line]))
            if len(row) == len(COLUMNS) and row[-1] == "running":
                beat = datetime.strptime(row[0], STARTED_FORMAT).timestamp() + 60 * float(row[1])
                if now - beat > STALE_S:
                    row[-1], turned = "lost", turned + 1
                    line = _line(row)
            out.append(line)
        return out

    _rewrite(path, edit)
    return turned


class Sitting:
    """This grid invocation's line in the ledger. ``update`` rewrites it (at most every
    ``HEARTBEAT_S`` seconds unless ``force``), ``end`` gives it its outcome."""

    def __init__(self, path: str | Path, variants, jobs: int, threads: int, now: float | None = None):
        self.path = Path(path)
        self.variants, self.jobs, self.threads = " ".join(variants), jobs, threads
        self.t0 = time.time() if now is None else now
        self.started = datetime.fromtimestamp(self.t0, timezone.utc).strftime(STARTED_FORMAT)
        self.written: str | None = None
        self.last_write = float("-inf")

    def update(self, ran: int, skipped: int, failed: int, outcome: str = "running", force: bool = False,
               now: float | None = None) -> None:
        now = time.time() if now is None else now
        if not force and now - self.last_write < HEARTBEAT_S:
            return
        line = _line([self.started, f"{(now - self.t0) / 60:.1f}", ran, skipped, failed, self.jobs, self.threads,
                      platform.node(), self.variants, outcome])
        old = self.written

        def edit(lines):
            # our previous line, or an identical one (shards that started in the same second
            # write the same text, and which of two identical lines each rewrites is immaterial)
            if old in lines:
                lines[lines.index(old)] = line
            else:
                lines.append(line)
            return lines

        _rewrite(self.path, edit)
        self.written, self.last_write = line, now

    def end(self, ran: int, skipped: int, failed: int, outcome: str, now: float | None = None) -> None:
        self.update(ran, skipped, failed, outcome, force=True, now=now)
