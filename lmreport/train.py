"""The training protocol of the study (SPEC §5) as pure functions, and a resumable run.

``train_epoch`` and ``evaluate`` take everything they use as arguments; ``train(config)``
wires them into a run directory::

    <run_dir>/config.json    the RunConfig (resolved), written before training starts
    <run_dir>/metrics.csv    one row per finished epoch
    <run_dir>/status.json    running | finished | diverged | failed | interrupted
    <run_dir>/checkpoint.pt  model, optimizer, LM state, every RNG, history (atomic, per epoch)
    <run_dir>/best_valid.pt, best_test.pt   weights of the best epochs (save_best)
    <run_dir>/batches.csv    per batch: seq_len, CE, U and LM's c (only with trace=True)

Resuming restores the checkpoint of the last finished epoch, RNG states included, so an
interrupted run continues to bit-identical numbers on the same machine.
"""
from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import platform
import random
import re
import sys
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from .config import DEVICES, EVAL_MODES, PROFILES_NEEDING_PTB, RunConfig
from .data import CommandFailed, Corpus, DataError, batchify, get_batch, load_corpus, repo_root, sample_seq_len
from .files import atomic_write, make_folder, write_text
from .model import AWDLSTM, repackage_hidden
from .optim import AdaBelief, LandscapeModification
from .regularize import activation_reg, temporal_activation_reg

# cuBLAS fixes its workspace at the process's first matmul, which in a notebook may come
# before train() (loading a model, generating text); set here, deterministic runs stay
# deterministic there too. A CPU ignores it.
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)

STATUSES = ("running", "finished", "diverged", "failed", "interrupted")


class Diverged(RuntimeError):
    """The training objective became NaN or infinite."""


# ---------------------------------------------------------------- device and numerics
def select_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU), or the named device if this machine has it."""
    if not re.fullmatch(DEVICES, str(name)):
        raise ValueError(f"device={name!r} is invalid: auto, cpu, cuda, cuda:<n> or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} is invalid: CUDA is not available here (use auto or cpu)")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ValueError(f"device={name!r} is invalid: this machine has cuda:0 to "
                         f"cuda:{torch.cuda.device_count() - 1}")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device='mps' is invalid: MPS is not available here (use auto or cpu)")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """What the numbers ran on: the GPU's or CPU's model (an H100 and a Colab T4 both say
    "cuda"; Python's platform module names only the architecture on Linux)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def configure_numerics(tf32: bool, deterministic: bool = True) -> None:
    """CUDA settings that decide the bits of a run; call before the first CUDA operation.

    TF32 off (IEEE fp32) unless asked: the published runs used a GPU without TF32, and
    PyTorch enables TF32 for cuDNN RNNs by default on Ampere and later GPUs, which would
    silently change the numbers; this sets matmuls, convolutions and RNNs explicitly.

    ``deterministic``: cuDNN and cuBLAS pick reproducible algorithms (and cuBLAS a fixed
    workspace), so a run resumed from its checkpoint, or trained beside others on the same
    GPU, repeats its numbers bit for bit. The arithmetic is the same fp32 arithmetic in a
    fixed order, so this changes reproducibility, not what is computed (the last bits may
    differ from a run without it, as they do between CPU thread counts). An operation with
    no deterministic kernel warns instead of stopping the run (``bench --concurrent``
    checks the outcome: each run's numbers against the same run alone). The switches are
    process-wide and stay set after the run.
    """
    set_tf32(tf32)
    if deterministic:
        # also set on import (above); a caller may have removed it since
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    # Deterministic mode would also fill every torch.empty with NaN (one extra kernel per
    # dropout mask); the package never reads memory it has not written.
    torch.utils.deterministic.fill_uninitialized_memory = False


def _tf32_switches() -> list[tuple[object, str, object, object]]:
    """(object, attribute, value for TF32, value for IEEE fp32) of every switch: matmuls,
    cuDNN convolutions and RNNs. torch >= 2.9 has fp32_precision and refuses to mix it
    with the older allow_tf32 in one process."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return [(b, "fp32_precision", "tf32", "ieee")
                for b in (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)]
    return [(torch.backends.cuda.matmul, "allow_tf32", True, False), (torch.backends.cudnn, "allow_tf32", True, False)]


def set_tf32(tf32: bool) -> None:
    for obj, attr, on, off in _tf32_switches():
        setattr(obj, attr, on if tf32 else off)


@contextmanager
def ieee_fp32():
    """IEEE fp32 (no TF32) inside the block; the caller's switches are put back after it."""
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _, _ in _tf32_switches()]
    set_tf32(False)
    try:
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


def tune_cpu_allocator() -> bool:
    """Linux/glibc: serve large blocks from the heap and keep freed memory for reuse.

    Every training step allocates and frees several ~56 MB blocks (logits, their
    log-softmax and its gradient for 1,400 tokens × 10,000 words). glibc hands blocks that
    large back to the OS at once and maps fresh zeroed pages the next time, so about 30% of
    a CPU step went to page faults. With mmap off and a high trim threshold the blocks are
    reused. Arithmetic is untouched (results are bit-identical; a test checks); the process
    keeps its peak memory. Returns whether the setting took effect.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state(device: torch.device) -> dict:
    """Every random stream a run draws from. CUDA's only for a CUDA run: asking for it
    would start a CUDA context (memory on the GPU) in a CPU run on a GPU machine."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    # torch takes generator states only as CPU byte tensors, wherever the checkpoint was mapped
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        # a checkpoint from a machine with more GPUs restores the devices this one has
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"][: torch.cuda.device_count()]])


# ---------------------------------------------------------------- building blocks
def build_optimizer(config: RunConfig, params) -> tuple[torch.optim.Optimizer, LandscapeModification | None]:
    """The base optimizer and, for ``*-lm``, the landscape-modification component."""
    params = list(params)
    if config.base_optimizer == "adabelief":
        opt = AdaBelief(params, lr=config.lr, betas=config.betas, eps=config.eps,
                        weight_decay=config.wdecay)
    elif config.base_optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, betas=config.betas, eps=config.eps,
                               weight_decay=config.wdecay)
    else:
        opt = torch.optim.SGD(params, lr=config.lr, weight_decay=config.wdecay)
    lm = (LandscapeModification(config.f, config.eps_lm, config.c_mode, config.c_reset)
          if config.uses_lm else None)
    return opt, lm


def build_model(config: RunConfig, vocab_size: int) -> AWDLSTM:
    return AWDLSTM(vocab_size, config.layers, config.emsize, config.nhid, config.dropout,
                   config.dropouth, config.dropouti, config.dropoute, config.wdrop,
                   config.wdrop_mode, config.embed_padding)


def _splits(corpus: Corpus, config: RunConfig) -> dict[str, tuple[torch.Tensor, int, str, str]]:
    """split -> (tokens used, batch size, its batch-size field, its token-cap field)."""
    return {"train": (corpus.train[: config.max_train_tokens], config.batch_size, "batch_size", "max_train_tokens"),
            "valid": (corpus.valid[: config.max_eval_tokens], config.eval_batch_size, "eval_batch_size",
                      "max_eval_tokens"),
            "test": (corpus.test[: config.max_eval_tokens], config.test_batch_size, "test_batch_size",
                     "max_eval_tokens")}


def check_data(corpus: Corpus, config: RunConfig) -> None:
    """Everything about the data that would stop the run, checked before anything is written."""
    if config.profile in PROFILES_NEEDING_PTB and not corpus.is_ptb:
        raise DataError(f"profile {config.profile} needs the canonical PTB files, but {corpus.data_dir} "
                        f"holds others (md5 {corpus.md5}); point LMREPORT_DATA_DIR at PTB")
    check_split_sizes(corpus, config)


def check_split_sizes(corpus: Corpus, config: RunConfig) -> None:
    """Refuse settings that leave a split too short to train on (3 rows) or evaluate (2 rows)."""
    for split, (tokens, batch, batch_field, cap_field) in _splits(corpus, config).items():
        need = 3 if split == "train" else 2
        if len(tokens) // batch < need:
            cap = getattr(config, cap_field)
            why = f"{cap_field}={cap} leaves" if cap is not None and cap < len(getattr(corpus, split)) \
                else f"{corpus.data_dir} has"
            raise DataError(f"{why} {len(tokens)} {split} tokens, {len(tokens) // batch} rows at "
                            f"{batch_field}={batch}: at least {need * batch} tokens ({need} rows) are needed")


def split_data(corpus: Corpus, config: RunConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """Batchified train (B=20), valid (B=10) and test (B=1) streams, optionally truncated."""
    return {split: batchify(tokens, batch).to(device)
            for split, (tokens, batch, _, _) in _splits(corpus, config).items()}


def train_step(model: AWDLSTM, optimizer: torch.optim.Optimizer, lm: LandscapeModification | None,
               data: torch.Tensor, targets: torch.Tensor, hidden, config: RunConfig,
               params: list[torch.Tensor]):
    """One update: forward, U = CE + AR + TAR, backward, clip, LM scaling, optimizer step.

    Returns (CE, U, new hidden) with CE and U as detached 0-dim tensors (no host sync).
    The order is the published one: LM divides the clipped gradient, and the optimizer
    adds L2 decay afterwards, so the decay is not scaled.
    """
    optimizer.zero_grad(set_to_none=True)
    output, hidden, raw_outputs, dropped_outputs = model(data, hidden, return_h=True)
    raw_loss = F.cross_entropy(model.logits(output).view(-1, model.vocab_size), targets)
    loss = raw_loss
    if config.alpha:
        loss = loss + activation_reg(dropped_outputs[-1], config.alpha)
    if config.beta:
        loss = loss + temporal_activation_reg(raw_outputs[-1], config.beta)
    loss.backward()
    if config.clip:
        torch.nn.utils.clip_grad_norm_(params, config.clip)
    if lm is not None:
        lm.apply_(params, loss)
    optimizer.step()
    return raw_loss.detach(), loss.detach(), hidden


def train_epoch(model: AWDLSTM, optimizer: torch.optim.Optimizer, lm: LandscapeModification | None,
                train_data: torch.Tensor, config: RunConfig, params: list[torch.Tensor],
                progress: bool = False, desc: str = "train", trace: list | None = None) -> dict:
    """One pass over the training stream with the published loop's semantics.

    Per batch: draw seq_len (variable BPTT), scale the lr by seq_len/bptt, ``train_step``,
    restore the lr. The hidden state starts at zero and is detached between batches.
    Training perplexity is exp(sum(len*CE) / rows), with dropout on, as published.
    With a ``trace`` list, one dict per batch (seq_len, CE, U and, for LM, c) is appended
    to it at the end of the epoch (values stay on the device until then).
    """
    rows = train_data.size(0)
    model.train()
    if lm is not None:
        lm.start_epoch()
    if config.epoch_permutation:
        np.random.permutation(rows - 2)
    hidden = model.init_hidden(config.batch_size)
    total = torch.zeros((), device=train_data.device)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    i, batches, tokens, start = 0, 0, 0, time.perf_counter()
    batch_log: list[tuple[int, torch.Tensor]] = []
    bar = tqdm(total=rows - 2, desc=desc, unit="row", leave=False, disable=not progress,
               mininterval=1.0)
    try:  # the bar is cleared however the epoch ends (Ctrl-C included), so messages start a line
        while i < rows - 2:
            seq_len = sample_seq_len(config.bptt)
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * seq_len / config.bptt
            data, targets = get_batch(train_data, i, seq_len)  # (T, B), (T*B,)
            raw_loss, loss, hidden = train_step(model, optimizer, lm, data, targets,
                                                repackage_hidden(hidden), config, params)
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr
            # weighted by the rows this batch really had, as the published loop did (the last
            # batch of an epoch is cut short of its drawn seq_len at the end of the stream)
            total += len(data) * raw_loss
            if trace is not None:
                c = lm.c if lm is not None else torch.full_like(loss, math.nan)
                batch_log.append((len(data), torch.stack([raw_loss, loss, c])))
            i += seq_len
            batches += 1
            tokens += data.numel()
            if batches % 50 == 0 or i >= rows - 2:
                # One host sync every 50 batches: divergence check and progress display.
                value = float(loss)
                if not math.isfinite(value):
                    raise Diverged(f"objective {value} at batch {batches} (row {i})")
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            bar.update(min(seq_len, rows - 2 - bar.n))
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    metrics = {"train_ppl": perplexity(float(total) / rows, "training"), "train_seconds": seconds,
               "tokens_per_s": tokens / seconds, "batches": batches}
    if lm is not None:
        metrics.update(lm.epoch_means())
    if trace is not None and batch_log:
        values = torch.stack([v for _, v in batch_log]).cpu().tolist()
        trace.extend({"batch": b + 1, "seq_len": n, "ce": ce, "U": u, "c": c}
                     for b, ((n, _), (ce, u, c)) in enumerate(zip(batch_log, values)))
    return metrics


LARGEST_LOSS = math.log(sys.float_info.max)  # ≈ 709.78 nats: exp overflows beyond


def perplexity(loss: float, split: str) -> float:
    """exp(mean CE). A loss that is not finite, or so large that its perplexity is not a
    float (a uniform guess over PTB's 10k words is 9.2 nats), is a diverged run."""
    if not math.isfinite(loss) or loss > LARGEST_LOSS:
        raise Diverged(f"{split} loss {loss}")
    return math.exp(loss)


EVAL_TOKENS_PER_CHUNK = 8192


def window_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ −log p(target) as the published criterion summed it (gathered log-probabilities,
    then one float32 sum). F.cross_entropy's mean can differ from it in the last bit."""
    return (-F.log_softmax(logits, dim=-1).gather(1, targets.view(-1, 1))).float().sum()


@torch.inference_mode()
def evaluate(model: AWDLSTM, data: torch.Tensor, bptt: int, mode: str = "chunked") -> float:
    """Mean loss of a split with the published denominator: sum of per-token CE divided by
    the number of *rows* of the batchified split (not by the number of targets).

    The published loop walked the split in windows of ``bptt`` rows with the hidden state
    carried from zeros, took each window's mean CE the way its criterion (AWD-LSTM's
    SplitCrossEntropyLoss with one split) computes it — the float32 sum of −log p(target)
    over the window divided by its length — and summed window_len x mean in float32;
    ``mode="published"`` does exactly that. Carrying the state makes the window length
    irrelevant to the result, so ``"chunked"`` (default) reads about 8k tokens per chunk,
    which turns the decoder into a few large matrix products instead of ~1,200 small ones
    at batch 1; each chunk's Σ −log p is taken in float32 (by cross_entropy) and the
    ~10 chunk sums are added in float64 (float32 on MPS). Not the same bits: on the paper-size
    1-layer test split the published float32 running sum lands 5.5e-6 (relative, in
    perplexity) from the float64 value and the chunked one 4e-8 (``bench --eval-accuracy``).
    """
    if mode not in EVAL_MODES:
        raise ValueError(f"eval_mode={mode!r} is invalid: one of {', '.join(EVAL_MODES)}")
    model.eval()
    rows, batch, vocab = data.size(0), data.size(1), model.vocab_size
    published = mode == "published"
    step = bptt if published else max(bptt, EVAL_TOKENS_PER_CHUNK // batch)
    hidden = model.init_hidden(batch)
    wide = torch.float32 if published or data.device.type == "mps" else torch.float64  # MPS: no float64
    total = torch.zeros((), dtype=wide, device=data.device)
    for i in range(0, rows - 1, step):
        x, y = get_batch(data, i, step)
        output, hidden = model(x, hidden)
        logits = model.logits(output).view(-1, vocab)
        if published:
            total += len(x) * (window_nll(logits, y) / len(y))
        else:
            total += F.cross_entropy(logits, y, reduction="sum") / batch
    return float(total) / rows


# ---------------------------------------------------------------- run directory
def default_run_dir(config: RunConfig) -> Path:
    root = repo_root() or Path.cwd()
    return root / "results" / config.profile / "runs" / config.name


def read_status(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "status.json"
    if not path.is_file():
        return {"status": "missing"}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_status(run_dir: Path, status: str, **extra) -> None:
    record = {"status": status, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              **extra}
    write_text(run_dir / "status.json", json.dumps(record, indent=2) + "\n")


def mark_interrupted(run_dir: Path, wait: float = 10.0) -> bool:
    """Record a run whose process was killed mid-epoch (a grid stopping its notebook runs:
    the kernel dies without the KeyboardInterrupt that ``train`` records) as interrupted
    instead of running. Waits for the dying process's lock; False if it never came free."""
    try:
        with run_lock(run_dir, wait=wait):
            status = read_status(run_dir)
            if status["status"] != "running":
                return False
            _write_status(run_dir, "interrupted", **{k: v for k, v in status.items()
                                                     if k not in ("status", "updated")})
            return True
    except RunBusy:
        return False


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    atomic_write(run_dir / "metrics.csv", lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))


def _append_trace(run_dir: Path, epoch: int, rows: list[dict]) -> None:
    """Keep batches.csv to epochs before ``epoch`` (<= when ``rows`` is empty), add ``rows``."""
    path = run_dir / "batches.csv"
    parts = []
    if path.is_file() and path.stat().st_size:
        old = pd.read_csv(path)
        parts.append(old[old.epoch < epoch] if rows else old[old.epoch <= epoch])
    if rows:
        new = pd.DataFrame(rows)
        new.insert(0, "epoch", epoch)
        parts.append(new)
    if parts:
        table = pd.concat(parts, ignore_index=True)
        atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The finished epochs of a run (an empty table while the first epoch trains)."""
    try:
        return pd.read_csv(Path(run_dir) / "metrics.csv")
    except pd.errors.EmptyDataError:  # written with no epoch yet
        return pd.DataFrame()


def _check_same_run(run_dir: Path, config: RunConfig) -> None:
    """Refuse a run folder that holds another run, naming each setting that differs."""
    path = run_dir / "config.json"
    if not path.is_file():
        return
    try:
        old = RunConfig.from_json(path).validate().science()
    except ValueError as err:  # JSON, UTF-8 and field errors are all ValueErrors
        raise ValueError(f"{path} is not a run's config.json ({err}); choose another run_dir or delete it") from None
    new = config.science()
    diff = [k for k in sorted(new) if old.get(k) != new[k]]
    if diff:
        what = (", ".join(f"{k}: {old.get(k)!r} there, {new[k]!r} here" for k in diff) if len(diff) <= 3
                else "differs in " + ", ".join(diff))
        raise ValueError(f"run dir {run_dir} holds a different run ({what}); choose another run_dir or delete it")


DONE = ("finished", "diverged")


_NO_LOCKS = {getattr(errno, name) for name in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS") if hasattr(errno, name)}


LOCK_WAIT_S = 60.0  # how long a second process waits for a run directory's lock


class RunBusy(CommandFailed):
    """The run directory is locked by another process (training it, or a grid running it)."""


@contextmanager
def run_lock(run_dir: Path, wait: float | None = None, name: str = ".lock", holder: str = "trained by another process"):
    """Hold an exclusive lock on a run directory while training it.

    A second process that wants the same run waits up to ``wait`` seconds (default
    ``LOCK_WAIT_S``: the kernel of a killed notebook run needs a moment to notice and
    exit), then gives up with ``RunBusy``.
    The lock dies with its process, however that process ends. The grid holds a second
    lock (another ``name``) around the notebook run that trains under the first.
    """
    if fcntl is None:  # Windows: no advisory locks; runs are not guarded
        yield
        return
    try:
        handle = open(run_dir / name, "a")
    except OSError as err:
        raise ValueError(f"run_dir={str(run_dir)!r} is invalid: cannot write in it ({err.strerror})") from None
    with handle:
        deadline, locked = time.monotonic() + (LOCK_WAIT_S if wait is None else wait), True
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunBusy(f"run dir {run_dir} is being {holder}") from None
                time.sleep(0.5)
            except OSError as err:
                if err.errno not in _NO_LOCKS:
                    raise
                # e.g. some network or FUSE mounts (a Google Drive folder): run unguarded
                warnings.warn(f"{run_dir}: the file system has no locks ({err.strerror}); "
                              f"nothing keeps two processes from training this run at once")
                locked = False
                break
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


def train(config: RunConfig, resume: bool = True, corpus: Corpus | None = None) -> Path:
    """Train (or resume, or skip if done) the run described by ``config``; return its folder.

    With ``resume=False`` a run directory that already holds a checkpoint is refused
    instead of continued. ``corpus``, if given, is used instead of reading
    ``config.data_dir`` again (a process training many runs reads PTB once); it must be
    what ``load_corpus(config.data_dir)`` returns.
    """
    config = config.resolved()
    device = select_device(config.device)
    if config.tf32 and device.type != "cuda":
        raise ValueError(f"tf32=True is invalid on {device.type}: TF32 exists only on CUDA GPUs "
                         f"(drop --tf32, or run on one)")
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
    _check_same_run(run_dir, config)
    if read_status(run_dir)["status"] in DONE:
        return run_dir
    if not resume and (run_dir / "checkpoint.pt").is_file():
        raise ValueError(f"run dir {run_dir} holds an unfinished run; resume it or choose another run_dir")
    corpus = corpus if corpus is not None else load_corpus(config.data_dir, progress=config.progress)
    check_data(corpus, config)
    make_folder(run_dir, "run_dir")
    with run_lock(run_dir):
        if read_status(run_dir)["status"] in DONE:  # finished by the process we waited for
            return run_dir
        for stale in run_dir.glob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink()
        return _train_locked(config, run_dir, corpus, device)


def _train_locked(config: RunConfig, run_dir: Path, corpus: Corpus, device: torch.device) -> Path:
    if device.type == "cuda":
        configure_numerics(config.tf32, config.deterministic)
    if config.fast_malloc and device.type == "cpu":  # a GPU run's large blocks live on the device
        tune_cpu_allocator()
    if config.threads:
        torch.set_num_threads(config.threads)

    seed_everything(config.seed)
    data = split_data(corpus, config, device)
    model = build_model(config, len(corpus.dictionary)).to(device)
    # As published: optimizer and clipping see the parameter list built before the first
    # forward (in frozen mode the raw W_hh is in it but never gets a gradient).
    params = list(model.parameters())
    optimizer, lm = build_optimizer(config, params)

    ckpt_path = run_dir / "checkpoint.pt"
    history: list[dict] = []
    best = {"valid_ppl": math.inf, "test_ppl": math.inf}
    if ckpt_path.is_file():
        # Read onto the CPU, then let each owner place its state: load_state_dict copies the
        # weights and moments to the parameters' device, while torch.optim keeps a
        # non-capturable optimizer's step counts on the CPU, where reading them needs no sync.
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if lm is not None:
            lm.load_state_dict(ckpt["lm"], device)
        set_rng_state(ckpt["rng"])
        history, best = ckpt["history"], ckpt["best"]
    atomic_write(run_dir / "config.json", config.to_json)
    _write_metrics(run_dir, history)  # the checkpoint is the source of truth for history
    if config.trace:
        _append_trace(run_dir, len(history), [])  # drop rows of an epoch that did not finish
    # the thread count actually used: on a CPU it moves the last bits (README), and
    # config.threads is None when torch's default was taken
    meta = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "host": platform.node(), "threads": torch.get_num_threads(), "data_md5": corpus.md5}
    _write_status(run_dir, "running", epoch=len(history), **meta)

    try:
        for epoch in range(len(history) + 1, config.epochs + 1):
            if epoch in config.when:
                for group in optimizer.param_groups:
                    group["lr"] /= 10.0
            start = time.perf_counter()
            row, trace = {"epoch": epoch}, [] if config.trace else None
            row.update(train_epoch(model, optimizer, lm, data["train"], config, params,
                                   progress=config.progress, desc=f"epoch {epoch}/{config.epochs}",
                                   trace=trace))
            eval_start = time.perf_counter()
            row["valid_ppl"] = perplexity(evaluate(model, data["valid"], config.bptt, config.eval_mode), "validation")
            row["test_ppl"] = perplexity(evaluate(model, data["test"], config.bptt, config.eval_mode), "test")
            row["eval_seconds"] = time.perf_counter() - eval_start
            row["seconds"] = time.perf_counter() - start
            row["lr"] = optimizer.param_groups[0]["lr"]
            # per epoch, because a resumed run may continue elsewhere (status.json keeps only the last)
            row["threads"], row["device"] = meta["threads"], meta["device"]
            history.append(row)
            if config.save_best:
                for key in ("valid_ppl", "test_ppl"):
                    if row[key] < best[key]:
                        best[key] = row[key]
                        atomic_write(run_dir / f"best_{key.removesuffix('_ppl')}.pt",
                                      lambda tmp: torch.save({"epoch": epoch, "model": model.state_dict()}, tmp))
            state = {"config": config.to_dict(), "epoch": epoch, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "lm": lm.state_dict() if lm else None,
                     "rng": rng_state(device), "history": history, "best": best}
            if trace:
                _append_trace(run_dir, epoch, trace)
            atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
            _write_metrics(run_dir, history)
            _write_status(run_dir, "running", epoch=epoch, **meta)
            if config.progress:
                tqdm.write(f"epoch {epoch:3d} | train {row['train_ppl']:8.2f} | valid {row['valid_ppl']:8.2f}"
                           f" | test {row['test_ppl']:8.2f} | {row['seconds']:6.1f}s")
    except Diverged as err:
        _write_status(run_dir, "diverged", epoch=len(history), error=str(err), **meta)
        return run_dir
    except KeyboardInterrupt:
        _write_status(run_dir, "interrupted", epoch=len(history), **meta)
        raise
    except Exception as err:
        _write_status(run_dir, "failed", epoch=len(history), error=f"{type(err).__name__}: {err}", **meta)
        raise
    _write_status(run_dir, "finished", epoch=len(history), **meta)
    return run_dir
