"""Writing files so that a crash, a kill or a full disk leaves the old file or the new one.

Every result the project writes (run folders, tables, figures, the report, README blocks,
bench records) goes through ``atomic_write``: the content is written to a temporary name
in the same folder, flushed to disk, then renamed over the target.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    The data is flushed to disk before the rename and the rename before returning, so a
    machine that dies at any moment leaves either the old file or the new one, never an
    empty or partial one (a plain rename only orders the two in the page cache).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        fd = os.open(tmp, os.O_RDWR)  # write access: Windows refuses fsync on a read-only handle
        try:
            os.fsync(fd)  # a failure here (EIO, ENOSPC) stops the write: the old file stays
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the system allows (Windows cannot open folders, some
    file systems refuse fsync on them; the file's own data is already on disk)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> Path:
    """``Path.write_text`` (UTF-8), atomically."""
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def make_folder(path: str | Path, setting: str) -> Path:
    """Create ``path`` (and its parents) for a setting the user gave and check that files
    can be made in it, before any work whose results would go there; a path that cannot
    be such a folder (under a file, on a read-only or virtual file system) is a one-line
    ``ValueError`` naming the setting."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{setting}={str(path)!r} is invalid: it cannot be created ({err.strerror})") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{setting}={str(path)!r} is invalid: files cannot be written in it "
                         f"({err.strerror})") from None
    return path


def replace_block(path: str | Path, start: str, end: str, body) -> bool:
    """Rewrite the text between the marker lines ``start`` and ``end`` of a file (a README's
    generated block), atomically; whether it changed. ``body`` is the text or a function
    that makes it (called only once the markers are found). A file without both markers is
    a one-line error."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} block")
    body = body() if callable(body) else body
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{body}\n{end}{tail}"
    if new != text:
        write_text(path, new)
    return new != text
