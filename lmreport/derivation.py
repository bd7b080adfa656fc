"""Notebook 02's checks: AdaBelief and AdaBelief-LM in NumPy from the numbered steps, the
small noisy problem they are compared on, and the LM factor scored along a recorded run.

The NumPy versions are an independent statement of the algorithm (they share no code with
``lmreport.optim``), so that notebook 02 can show ``lmreport.optim`` following them to
rounding level; ``tests/test_optim.py`` holds the oracle comparisons against the reference
package. Everything here runs in float64 without touching torch's default dtype, which
would otherwise leak into any model a notebook trains afterwards.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .optim import F_LABELS, NOISE_FUNCTIONS, AdaBeliefLM, LandscapeModification

Gradient = Callable[[np.ndarray], np.ndarray]


def adabelief_numpy(theta: np.ndarray, grads: Sequence[Gradient], lr: float, b1: float = 0.9,
                    b2: float = 0.999, eps: float = 1e-16, wd: float = 0.0) -> np.ndarray:
    """AdaBelief's steps 1-5 (notebook 02) on gradient callables ``g(theta)``; the path.

    1. L2 decay enters the gradient: g <- g + wd * theta.
    2. First moment: m <- b1 m + (1 - b1) g.
    3. Belief: s <- b2 s + (1 - b2) (g - m)^2 + eps (eps accumulates in the state).
    4. Bias correction: m / (1 - b1^t), s / (1 - b2^t).
    5. Update: theta <- theta - lr m_hat / (sqrt(s_hat) + eps).
    """
    theta, m, s = theta.copy(), np.zeros_like(theta), np.zeros_like(theta)
    path = []
    for t, grad in enumerate(grads, start=1):
        g = grad(theta) + wd * theta
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps
        m_hat, s_hat = m / (1 - b1 ** t), s / (1 - b2 ** t)
        theta = theta - lr * m_hat / (np.sqrt(s_hat) + eps)
        path.append(theta)
    return np.array(path)


def adabelief_lm_numpy(theta: np.ndarray, grads: Sequence[Gradient], losses: Sequence[Callable],
                       lr: float, f: Callable[[float], float], eps_lm: float = 1.0, **kw) -> np.ndarray:
    """Step 0 in front of AdaBelief: the gradient divided by f((U - c)_+) + eps_lm, with c the
    running minimum of U updated before it is used (c_t = min(c_{t-1}, U_t)); the path.

    The L2 term of step 1 is added after step 0, as in the study's code, so it is not scaled.
    """
    c = np.inf

    def modified(grad: Gradient, loss: Callable) -> Gradient:
        def scaled(theta):
            nonlocal c
            u = loss(theta)
            c = min(c, u)
            return grad(theta) / (f(max(u - c, 0.0)) + eps_lm)
        return scaled

    return adabelief_numpy(theta, [modified(g, u) for g, u in zip(grads, losses)], lr, **kw)


@dataclass
class RippledBowl:
    """A 6-dimensional quadratic bowl with sinusoidal ripples, and a fixed noise draw per step."""
    A: np.ndarray
    shift: np.ndarray
    noise: np.ndarray
    theta0: np.ndarray

    @classmethod
    def draw(cls, seed: int, n_steps: int, dim: int = 6) -> "RippledBowl":
        rng = np.random.default_rng(seed)
        a = rng.normal(size=(dim, dim))
        A = a @ a.T / dim + np.eye(dim)
        shift = rng.normal(size=dim)
        noise = rng.normal(scale=0.3, size=(n_steps, dim))
        return cls(A, shift, noise, rng.normal(size=dim))

    @property
    def n_steps(self) -> int:
        return len(self.noise)

    def loss(self, theta: np.ndarray) -> float:
        d = theta - self.shift
        return float(0.5 * d @ self.A @ d + 0.3 * np.sin(3 * theta).sum())

    def gradient(self, step: int) -> Gradient:
        """The noisy gradient of step ``step`` (0-based)."""
        return lambda theta: self.A @ (theta - self.shift) + 0.9 * np.cos(3 * theta) + self.noise[step]

    @property
    def gradients(self) -> list[Gradient]:
        return [self.gradient(t) for t in range(self.n_steps)]


def torch_path(problem: RippledBowl, opt_cls, lr: float, scale: float | Sequence[float] = 1.0,
               decay_inside: float = 0.0, **opt_kw) -> np.ndarray:
    """Run a ``torch.optim`` optimizer of ``lmreport.optim`` on ``problem`` in float64; the path.

    The gradient of step t is ``scale_t * g_t(theta) + decay_inside * theta``, with ``scale``
    one constant or one factor per step: the two transformations notebook 02's properties
    are about. ``AdaBeliefLM`` is given the problem's loss at each step as its objective U.
    """
    factors = np.broadcast_to(np.asarray(scale, dtype=np.float64), (problem.n_steps,))
    theta = torch.tensor(problem.theta0, dtype=torch.float64, requires_grad=True)
    opt = opt_cls([theta], lr=lr, **opt_kw)
    path = []
    for t in range(problem.n_steps):
        x = theta.detach().numpy()
        theta.grad = torch.tensor(factors[t] * problem.gradient(t)(x) + decay_inside * x, dtype=torch.float64)
        if isinstance(opt, AdaBeliefLM):
            opt.step(torch.tensor(problem.loss(x), dtype=torch.float64))
        else:
            opt.step()
        path.append(theta.detach().numpy().copy())
    return np.array(path)


def score_trace(batches: pd.DataFrame, c_modes: Sequence[str] = ("running_min", "zero")) -> pd.DataFrame:
    """The factor each LM rule would put on each recorded batch objective U of a run.

    ``batches``: a run's ``batches.csv`` (columns epoch, batch, U). One row per rule (c_mode,
    f) and batch, with ``step`` counting batches from 1 over the whole run; the threshold
    restarts each epoch, as in the published code.
    """
    rows = []
    for c_mode in c_modes:
        for name in NOISE_FUNCTIONS:
            lm = LandscapeModification(name, c_mode=c_mode)
            step = 0
            for epoch, group in batches.groupby("epoch"):
                lm.start_epoch()
                for u in group.U:
                    step += 1
                    rows.append({"c_mode": c_mode, "f": F_LABELS[name], "epoch": epoch, "step": step,
                                 "scale": lm.scale(u)})
    return pd.DataFrame(rows)


def factor_statistics(scored: pd.DataFrame) -> pd.DataFrame:
    """Per rule: the factor's mean, std, range, coefficient of variation, and the mean
    multiplier ``d = 1 / factor`` that the unscaled L2 decay effectively receives."""
    scored = scored.assign(d=1 / scored.scale)
    groups = scored.groupby(["c_mode", "f"], sort=False)
    stats = groups["scale"].agg(mean="mean", std="std", min="min", max="max").reset_index()
    stats["coefficient of variation"] = stats["std"] / stats["mean"]
    stats["mean decay multiplier d"] = groups["d"].mean().values
    return stats
