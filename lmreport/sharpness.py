"""How sharp is the minimum a run ended in? Hessian and perturbation measures.

The thesis argues that landscape modification steers training toward flatter minima but
never measured flatness. These measures do, on a fixed, seeded set of K training batches
(each with a hidden state burned in on the preceding rows and detached), with the
objective = token-mean cross-entropy only (no dropout, no AR/TAR):

* top and bottom Hessian eigenvalue by Lanczos (with full reorthogonalisation), with the
  residual norm of each Ritz pair as its convergence check;
* the Hessian trace by Hutchinson's estimator (Rademacher probes), with its standard error;
* adaptive (|w|-scaled) sharpness: average case E[L(w + ρ|w|⊙ξ)] − L(w), ξ ~ N(0, I), and
  worst case max over |δ_i| ≤ ρ|w_i| of L(w + δ) − L(w) by a few signed-gradient ascent
  steps (Kwon et al. 2021; Andriushchenko et al. 2023);
* the weight norm, and filter-normalised 1-D loss slices (Li et al. 2018): a random
  direction whose every row is rescaled to the norm of the matching weight row.

Hessian-vector products are central finite differences of ordinary gradients,
H v ≈ ‖v‖ [g(w + r u) − g(w − r u)] / 2r with u = v/‖v‖, so the fused cuDNN LSTM stays
usable on a GPU (cuDNN has no double backward). cuDNN's RNN backward also refuses eval
mode, so dropout and weight drop are switched off while the LSTM modules stay in
training mode; TF32 is off. Parameters that never receive a gradient (the frozen
recurrent matrices of the published code) are held fixed: the Hessian is over the
parameters the optimizer trains.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import batchify, get_batch
from .model import AWDLSTM

# Radii declared before any result was seen (see notebook 05).
AVERAGE_RADII = (0.005, 0.01)
WORST_RADII = (0.0005, 0.001)


@dataclass
class SharpnessConfig:
    batches: int = 3            # K training batches the objective averages over
    batch_size: int = 20
    bptt: int = 70
    burn_in: int = 70           # rows read before each batch to set its hidden state
    seed: int = 0               # which batches, probes and directions
    fd_radius: float = 1e-2     # r of the finite-difference HVP
    lanczos_steps: int = 15
    hutchinson_probes: int = 20
    average_samples: int = 6
    worst_steps: int = 4
    average_radii: tuple = AVERAGE_RADII
    worst_radii: tuple = WORST_RADII
    slice_points: int = 21      # alphas in [-1, 1]

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def measurement_mode(model: AWDLSTM):
    """Dropout and weight drop off, LSTM modules in training mode (cuDNN needs it), and
    the true gradient of the embedding lookup: the published padding quirk cuts one word's
    input gradient, which leaves a gradient field that no loss has (its Jacobian is not
    symmetric), so curvature is measured on the loss itself."""
    was_training, wdrops, padding = model.training, [rnn.wdrop for rnn in model.rnns], model.padding_idx
    model.eval()
    model.padding_idx = None
    for rnn in model.rnns:
        rnn.train()
        rnn.wdrop = 0.0
    try:
        yield model
    finally:
        for rnn, p in zip(model.rnns, wdrops):
            rnn.wdrop = p
        model.padding_idx = padding
        model.train(was_training)


class Objective:
    """Token-mean CE over fixed batches, as a function of the trained parameters."""

    def __init__(self, model: AWDLSTM, train_tokens: torch.Tensor, config: SharpnessConfig,
                 trained: list[torch.nn.Parameter] | None = None):
        self.model, self.config = model, config
        self.params = trained if trained is not None else [
            p for name, p in model.named_parameters() if not _frozen(model, name)]
        self.origin = [p.detach().clone() for p in self.params]
        device = model.encoder.weight.device
        source = batchify(train_tokens, config.batch_size).to(device)
        gen = np.random.default_rng(config.seed)
        span = config.burn_in + config.bptt + 1
        starts = gen.choice(source.size(0) - span, size=config.batches, replace=False)
        self.batches = []
        with torch.no_grad(), measurement_mode(model):
            for start in sorted(int(s) for s in starts):
                hidden = model.init_hidden(config.batch_size)
                if config.burn_in:
                    warm, _ = get_batch(source, start, config.burn_in)
                    _, hidden = model(warm, hidden)
                x, y = get_batch(source, start + config.burn_in, config.bptt)
                self.batches.append((x, y, [(h.detach(), c.detach()) for h, c in hidden]))
        self.evaluations = 0

    def loss(self) -> float:
        with torch.no_grad(), measurement_mode(self.model):
            return float(sum(self._batch_loss(*b) for b in self.batches)) / len(self.batches)

    def _batch_loss(self, x, y, hidden):
        output, _ = self.model(x, hidden)
        return F.cross_entropy(self.model.logits(output).view(-1, self.model.vocab_size), y)

    def gradient(self) -> tuple[float, list[torch.Tensor]]:
        self.evaluations += 1
        with measurement_mode(self.model):
            for p in self.params:
                p.grad = None
            total = 0.0
            for batch in self.batches:
                loss = self._batch_loss(*batch) / len(self.batches)
                loss.backward()
                total += float(loss.detach())
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]
        for p in self.params:
            p.grad = None
        return total, grads

    @torch.no_grad()
    def at(self, direction: list[torch.Tensor], alpha: float) -> None:
        """Set the weights to w0 + alpha * direction (w0: the weights at construction)."""
        for p, w0, d in zip(self.params, self.origin, direction):
            p.copy_(w0).add_(d, alpha=alpha)

    @torch.no_grad()
    def reset(self) -> None:
        for p, w0 in zip(self.params, self.origin):
            p.copy_(w0)

    def hvp(self, v: list[torch.Tensor]) -> list[torch.Tensor]:
        """Central finite difference of gradients along v (see the module docstring)."""
        norm = _norm(v)
        if norm == 0:
            return [torch.zeros_like(t) for t in v]
        u = [t / norm for t in v]
        r = self.config.fd_radius
        self.at(u, r)
        _, g_plus = self.gradient()
        self.at(u, -r)
        _, g_minus = self.gradient()
        self.reset()
        return [(a - b) * (norm / (2 * r)) for a, b in zip(g_plus, g_minus)]


def _frozen(model: AWDLSTM, name: str) -> bool:
    """Raw W_hh in the published (frozen) weight-drop mode never trains."""
    if not name.endswith("weight_hh_l0"):
        return False
    layer = int(name.split(".")[1])
    return model.rnns[layer].mode == "frozen"


def _dot(a, b) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b)))


def _norm(a) -> float:
    return math.sqrt(_dot(a, a))


def lanczos(hvp, like: list[torch.Tensor], steps: int, gen: torch.Generator) -> dict:
    """Extreme eigenvalues of the Hessian from ``steps`` Lanczos iterations.

    Returns the top and bottom Ritz values and their residual norms |β_k s_k| (small
    residual = converged Ritz pair)."""
    q = [torch.randn(t.shape, generator=gen).to(t) for t in like]
    q = [t / _norm(q) for t in q]
    basis, alphas, betas = [q], [], []
    for k in range(steps):
        w = hvp(basis[-1])
        alpha = _dot(w, basis[-1])
        alphas.append(alpha)
        for b in basis:  # full reorthogonalisation
            coef = _dot(w, b)
            w = [x - coef * y for x, y in zip(w, b)]
        beta = _norm(w)
        if k == steps - 1 or beta < 1e-10:
            betas.append(beta)
            break
        betas.append(beta)
        basis.append([x / beta for x in w])
    n = len(alphas)
    tri = np.diag(alphas) + np.diag(betas[: n - 1], 1) + np.diag(betas[: n - 1], -1)
    values, vectors = np.linalg.eigh(tri)
    residual = np.abs(betas[n - 1] * vectors[-1, :])
    return {"lambda_max": float(values[-1]), "lambda_max_residual": float(residual[-1]),
            "lambda_min": float(values[0]), "lambda_min_residual": float(residual[0]),
            "lanczos_steps": n}


def hutchinson(hvp, like: list[torch.Tensor], probes: int, gen: torch.Generator) -> dict:
    samples = []
    for _ in range(probes):
        v = [(torch.randint(0, 2, t.shape, generator=gen) * 2 - 1).to(t) for t in like]
        samples.append(_dot(v, hvp(v)))
    samples = np.array(samples)
    return {"trace": float(samples.mean()),
            "trace_stderr": float(samples.std(ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else math.nan,
            "trace_probes": len(samples)}


def adaptive_sharpness(obj: Objective, base: float, config: SharpnessConfig, gen: torch.Generator) -> dict:
    out = {}
    scale = [w0.abs() for w0 in obj.origin]
    for rho in config.average_radii:
        rises = []
        for _ in range(config.average_samples):
            delta = [rho * s * torch.randn(s.shape, generator=gen).to(s) for s in scale]
            obj.at(delta, 1.0)
            rises.append(obj.loss() - base)
        obj.reset()
        out[f"avg_sharpness_{rho:g}"] = float(np.mean(rises))
    for rho in config.worst_radii:
        delta = [torch.zeros_like(s) for s in scale]
        step = rho / max(config.worst_steps, 1) * 2
        for _ in range(config.worst_steps):
            obj.at(delta, 1.0)
            _, grads = obj.gradient()
            delta = [torch.clamp(d + step * s * torch.sign(g), -rho * s, rho * s)
                     for d, s, g in zip(delta, scale, grads)]
        obj.at(delta, 1.0)
        out[f"worst_sharpness_{rho:g}"] = obj.loss() - base
        obj.reset()
    return out


def filter_normalized_direction(params: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
    """Random direction, each row rescaled to its weight row's norm; 1-D tensors zeroed."""
    direction = []
    for p in params:
        if p.dim() < 2:
            direction.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=gen).to(p)
        d = d * (p.detach().norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True).clamp_min(1e-12))
        direction.append(d)
    return direction


def loss_slice(obj: Objective, config: SharpnessConfig, gen: torch.Generator) -> dict:
    direction = filter_normalized_direction(obj.params, gen)
    alphas = np.linspace(-1, 1, config.slice_points)
    losses = []
    for a in alphas:
        obj.at(direction, float(a))
        losses.append(obj.loss())
    obj.reset()
    return {"slice_alpha": alphas.tolist(), "slice_loss": losses}


def measure(model: AWDLSTM, train_tokens: torch.Tensor, config: SharpnessConfig | None = None) -> dict:
    """All measures for one model; returns a JSON-ready dict (with timings)."""
    from .train import ieee_fp32

    # cuDNN RNNs default to TF32 on recent GPUs, far too coarse for finite differences at
    # radius 1e-2: measured in IEEE fp32 whatever the caller set, which is restored after
    with ieee_fp32():
        return _measure(model, train_tokens, config or SharpnessConfig())


def _measure(model: AWDLSTM, train_tokens: torch.Tensor, config: SharpnessConfig) -> dict:
    device = next(model.parameters()).device
    start = time.perf_counter()
    obj = Objective(model, train_tokens, config)
    gen = torch.Generator().manual_seed(config.seed)
    base = obj.loss()
    t0 = time.perf_counter()
    obj.hvp([torch.ones_like(p) for p in obj.params])
    hvp_seconds = time.perf_counter() - t0
    like = [p.detach() for p in obj.params]
    result = {"loss": base, "weight_norm": _norm(like), "hvp_seconds": hvp_seconds,
              "n_parameters": sum(p.numel() for p in obj.params), "config": config.to_dict(),
              "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__}
    result.update(lanczos(obj.hvp, like, config.lanczos_steps, gen))
    result.update(hutchinson(obj.hvp, like, config.hutchinson_probes, gen))
    result.update(adaptive_sharpness(obj, base, config, gen))
    result.update(loss_slice(obj, config, gen))
    result["seconds"] = time.perf_counter() - start
    return result


def measure_run(run_dir, checkpoint: str = "best_test", config: SharpnessConfig | None = None,
                corpus=None, device: str = "cpu", force: bool = False, fast_malloc: bool = True) -> dict:
    """Measure one run's saved weights; the result is cached in ``<run_dir>/sharpness.json``.

    ``checkpoint``: ``best_test`` (the epoch the study's metric reports), ``best_valid``
    or ``checkpoint`` (the last epoch). ``fast_malloc``: on a CPU, tune the process's
    allocator as training does (``train.tune_cpu_allocator``; the same numbers): every
    gradient allocates ~56 MB blocks of logits, and without it over half of a smoke-size
    measurement went to page faults.
    """
    from .config import RunConfig
    from .data import load_corpus
    from .files import write_text
    from .train import build_model, configure_numerics, tune_cpu_allocator

    run_dir, config = Path(run_dir), config or SharpnessConfig()
    cached = cached_result(run_dir, checkpoint, config)
    if cached is not None and not force:
        return cached
    weights = run_dir / f"{checkpoint}.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing and {run_dir / 'sharpness.json'} holds no result for "
                                f"checkpoint={checkpoint!r} with these settings: retrain the run or restore its weights")
    run = RunConfig.from_json(run_dir / "config.json")
    corpus = corpus or load_corpus(run.data_dir, progress=False)
    state = torch.load(weights, map_location=device, weights_only=False)
    if torch.device(device).type == "cuda":
        configure_numerics(False)  # and deterministic kernels, so a cached result can be repeated
    elif fast_malloc and torch.device(device).type == "cpu":
        tune_cpu_allocator()
    torch.manual_seed(run.seed)
    model = build_model(run, len(corpus.dictionary)).to(device)
    model.load_state_dict(state["model"])
    result = measure(model, corpus.train[: run.max_train_tokens], config)
    result.update(checkpoint=checkpoint, epoch=int(state["epoch"]))
    write_text(run_dir / "sharpness.json", json.dumps(result, indent=1) + "\n")
    return result


def measure_after_training(run_dir, wanted: bool | None = None) -> dict | None:
    """Measure a run that just finished, with the default settings, when ``wanted`` says so
    (None: when its profile's ``measure_sharpness`` does); None when nothing was measured.

    Called by notebook 03 and the in-process executor at the end of a run, so the result is
    on disk (and committable) while the weights still are; a run that did not finish, or
    whose weights are gone, is left alone.
    """
    from .config import PROFILES, RunConfig
    from .train import read_status

    run_dir = Path(run_dir)
    if wanted is None:
        wanted = PROFILES[RunConfig.from_json(run_dir / "config.json").profile].measure_sharpness
    if not wanted or read_status(run_dir)["status"] != "finished" or not (run_dir / "best_test.pt").is_file():
        return None
    return measure_run(run_dir)


def unmeasured(run_dir) -> bool:
    """A finished run that its profile measures, whose weights are still on disk but whose
    measurement is not: its process was stopped between the last epoch and the measurement
    (a grid stopped at that moment). Running notebook 03 on it again trains nothing and
    measures it; once the weights are gone only ``replay`` can."""
    from .config import PROFILES, RunConfig
    from .train import read_status

    run_dir = Path(run_dir)
    if read_status(run_dir)["status"] != "finished" or not (run_dir / "best_test.pt").is_file():
        return False
    if not PROFILES[RunConfig.from_json(run_dir / "config.json").profile].measure_sharpness:
        return False
    return not (run_dir / "sharpness.json").is_file()


def cached_result(run_dir, checkpoint: str, config: SharpnessConfig) -> dict | None:
    """The run's stored measurement if it was taken on ``checkpoint`` with ``config``."""
    cache = Path(run_dir) / "sharpness.json"
    if not cache.is_file():
        return None
    cached = json.loads(cache.read_text(encoding="utf-8"))
    same = cached.get("config") == json.loads(json.dumps(config.to_dict())) and cached.get("checkpoint") == checkpoint
    return cached if same else None


def measure_runs(runs, checkpoint: str = "best_test", config: SharpnessConfig | None = None,
                 corpus=None, device: str = "cpu", progress: bool = False):
    """Measure every run of a ``report.collect_runs`` table that can be measured.

    A run is measurable when its cached result matches or its weights are on disk (a fresh
    clone has the cached results but no weights). Returns the table joined with the
    measures, and the run directories that were skipped.
    """
    import pandas as pd

    config = config or SharpnessConfig()
    ok = [cached_result(d, checkpoint, config) is not None or (Path(d) / f"{checkpoint}.pt").is_file()
          for d in runs.run_dir]
    keep = runs.loc[ok].reset_index(drop=True)  # .loc: an empty list selects no rows, not no columns
    from tqdm.auto import tqdm

    results = [measure_run(d, checkpoint, config, corpus, device)
               for d in tqdm(keep.run_dir, desc="sharpness", unit="run", disable=not progress)]
    measured = pd.concat([keep, pd.DataFrame(results).drop(columns=["config"], errors="ignore")], axis=1)
    return measured, [str(d) for d, good in zip(runs.run_dir, ok) if not good]
