"""The one-dimensional toy landscape of the thesis's Figure 2.1, and escape experiments.

U(z) = (z − 1)^6 + 2z^2 − z^3 has a global minimum U ≈ 0.2703 at z ≈ 0.3085, a barrier
U ≈ 1.1866 at z ≈ 1.3401 and a local minimum U ≈ 0.8882 at z ≈ 1.8720. Landscape
modification replaces U by

    H(z) = ∫_{U_min}^{U(z)} du / (f((u − c)_+) + ε),

which leaves U below c untouched and compresses it above c, so barriers above the
threshold shrink. Notebook 01 plots both and measures what that does to escapes from the
local minimum, with each optimizer of ``lmreport.optim``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar

from .optim import NOISE_FUNCTIONS, AdaBelief, LandscapeModification, resolve_f


def U(z):
    """Thesis Figure 2.1 landscape; works on floats, numpy arrays and torch tensors."""
    return (z - 1) ** 6 + 2 * z ** 2 - z ** 3


def dU(z):
    return 6 * (z - 1) ** 5 + 4 * z - 3 * z ** 2


@dataclass(frozen=True)
class StationaryPoint:
    z: float
    U: float
    kind: str  # "minimum" or "maximum"


def stationary_points(lo: float = -1.0, hi: float = 3.0, n: int = 40_001) -> list[StationaryPoint]:
    """Roots of U' on [lo, hi], refined with Brent's method from sign changes on a grid."""
    grid = np.linspace(lo, hi, n)
    slope = dU(grid)
    points = []
    for i in np.nonzero(np.sign(slope[:-1]) != np.sign(slope[1:]))[0]:
        z = brentq(dU, grid[i], grid[i + 1], xtol=1e-14)
        points.append(StationaryPoint(z, U(z), "minimum" if slope[i] < 0 else "maximum"))
    return points


def global_minimum(lo: float = -1.0, hi: float = 3.0) -> StationaryPoint:
    """U_min, found numerically: the best grid point, then a bounded scalar minimisation."""
    grid = np.linspace(lo, hi, 4001)
    i = int(np.argmin(U(grid)))
    res = minimize_scalar(U, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]),
                          method="bounded", options={"xatol": 1e-12})
    return StationaryPoint(float(res.x), float(res.fun), "minimum")


def _numpy_f(f: str | Callable) -> Callable[[np.ndarray], np.ndarray]:
    _, fn = resolve_f(f)
    return lambda x: fn(torch.as_tensor(x, dtype=torch.float64)).numpy()


def modified_landscape(z, c: float = 0.4, f: str | Callable = "x", eps: float = 1.0,
                       u_min: float | None = None, n_grid: int = 200_001) -> np.ndarray:
    """H(z) for any noise function f, by cumulative trapezoid integration over u.

    The integrand is evaluated on a fine grid from U_min to max U(z) (with u = c on the
    grid, where the integrand has its kink) and the running integral is interpolated at
    U(z).
    """
    z = np.asarray(z, dtype=np.float64)
    u_min = global_minimum().U if u_min is None else u_min
    u_top = float(np.max(U(z)))
    u = np.union1d(np.linspace(u_min, u_top, n_grid), [c] if u_min < c < u_top else [])
    integrand = 1.0 / (_numpy_f(f)(np.clip(u - c, 0.0, None)) + eps)
    running = np.concatenate([[0.0], np.cumsum(np.diff(u) * (integrand[1:] + integrand[:-1]) / 2)])
    return np.interp(U(z), u, running)


def modified_landscape_linear(z, c: float = 0.4, eps: float = 1.0, u_min: float | None = None) -> np.ndarray:
    """Closed form of H for f(x) = x: (U − U_min)/ε below c; above c,
    (c − U_min)/ε + ln((U − c + ε)/ε). Assumes U_min ≤ c."""
    u = U(np.asarray(z, dtype=np.float64))
    u_min = global_minimum().U if u_min is None else u_min
    below = (np.minimum(u, c) - u_min) / eps
    return below + np.log((np.clip(u - c, 0.0, None) + eps) / eps)


def gradient_factor(x, f: str | Callable, eps: float = 1.0) -> np.ndarray:
    """1 / (f(x) + ε): what LM multiplies the gradient by at excess loss x = (U − c)_+."""
    return 1.0 / (_numpy_f(f)(np.clip(np.asarray(x, dtype=np.float64), 0.0, None)) + eps)


def strongest_factor(x: float, eps: float = 1.0) -> tuple[str, dict[str, float]]:
    """The noise function whose LM factor is smallest (smooths most) at excess loss ``x``,
    and every function's factor there."""
    factors = {name: float(gradient_factor(x, name, eps)) for name in NOISE_FUNCTIONS}
    return min(factors, key=factors.get), factors


# ------------------------------------------------------------------ escape experiments
METHODS = {
    "gd": "gradient descent, noisy gradient g + σξ",
    "gd-lm": "same, gradient (noise included) scaled by LM",
    "adabelief": "AdaBelief on the noisy gradient",
    "adabelief-lm": "AdaBelief-LM on the noisy gradient",
    "langevin": "overdamped Langevin on U, temperature T",
    "langevin-lm": "overdamped Langevin on H (LM drift, injected noise)",
    "isa": "improved SA: drift on U, noise f((U − c)_+) + T",
}


def escape_times(method: str, n_runs: int = 500, steps: int = 4000, lr: float = 1e-2,
                 sigma: float = 3.0, temperature: float = 0.05, z0: float = 1.872,
                 c: float = 0.4, f: str | Callable = "x", eps: float = 1.0, seed: int = 0,
                 barrier_z: float | None = None) -> np.ndarray:
    """First step at which each of ``n_runs`` independent runs crosses the barrier.

    All runs start at the local minimum ``z0`` and advance together as one vector (the
    optimizers are elementwise, and LM takes one objective per run). Returns an array of
    first-passage steps, ``inf`` where a run never crossed within ``steps``.

    Gradient methods see g = U'(z) + σξ (a stand-in for minibatch noise); Langevin
    methods take z ← z − lr·drift + sqrt(2·lr·T(z))·ξ.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    if barrier_z is None:
        barrier_z = next(p.z for p in stationary_points() if p.kind == "maximum")
    gen = torch.Generator().manual_seed(seed)
    z = torch.full((n_runs,), float(z0), dtype=torch.float64, requires_grad=True)
    lm = LandscapeModification(f, eps, c_mode=f"constant:{c}") if method.endswith("-lm") else None
    _, f_fn = resolve_f(f)
    opt = AdaBelief([z], lr=lr, eps=1e-16) if method.startswith("adabelief") else None
    first = torch.full((n_runs,), math.inf, dtype=torch.float64)
    for step in range(1, steps + 1):
        noise = torch.randn(n_runs, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            u = U(z)
            if method.startswith(("gd", "adabelief")):
                z.grad = dU(z) + sigma * noise
                if lm is not None:
                    lm.apply_([z], u)
                if opt is not None:
                    opt.step()
                else:
                    z -= lr * z.grad
            else:
                drift = dU(z)
                temp = torch.full_like(z, temperature)
                if method == "langevin-lm":
                    drift = drift / (f_fn((u - c).clamp_min(0)) + eps)
                elif method == "isa":
                    temp = f_fn((u - c).clamp_min(0)) + temperature
                z -= lr * drift - torch.sqrt(2 * lr * temp) * noise
            crossed = (z.detach() < barrier_z) & torch.isinf(first)
            first[crossed] = step
    return first.numpy()
