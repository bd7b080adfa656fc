"""Shared fixtures: a tiny corpus written by the tests, and the real PTB when reachable."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from lmreport.data import DataError, PTB_MD5, default_data_dir, md5sum


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """Three small files with a learnable pattern: 'a b c ... <eos>' cycles plus noise."""
    root = tmp_path_factory.mktemp("tiny")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    for split, n_lines in (("train", 400), ("valid", 40), ("test", 40)):
        lines = []
        for _ in range(n_lines):
            start = rng.randrange(len(words))
            length = rng.randint(4, 12)
            lines.append(" " + " ".join(words[(start + k) % len(words)] for k in range(length)) + " ")
        (root / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def ptb_dir() -> Path:
    """The canonical PTB folder ($LMREPORT_DATA_DIR or data/ptb); skip, saying why, if absent."""
    folder = default_data_dir()
    files = {s: folder / f"ptb.{s}.txt" for s in PTB_MD5}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        pytest.skip(f"PTB not reachable (missing {', '.join(missing)}); set LMREPORT_DATA_DIR")
    for split, path in files.items():
        if md5sum(path) != PTB_MD5[split]:
            raise DataError(f"{path} is not the canonical PTB file")
    return folder
