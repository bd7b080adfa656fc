"""AdaBelief, landscape modification, and AdaBelief-LM (SPEC §2).

Landscape modification (LM) is one optimizer-agnostic component: it divides every
gradient of the step by one scalar computed from the batch objective, and any optimizer
(AdaBelief, Adam, SGD) then proceeds as usual. ``AdaBeliefLM`` is AdaBelief with that
component built in. Notebook 02 derives both algorithms step by step.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer

# Noise-injection functions f with f(0) = 0 (thesis §4.1.2). They act on 0-dim tensors.
NOISE_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "x2": lambda x: x.pow(2),
    "x": lambda x: x,
    "sqrt": lambda x: x.pow(0.5),
    "cbrt": lambda x: x.pow(1.0 / 3.0),
}
F_LABELS = {"x2": "x²", "x": "x", "sqrt": "√x", "cbrt": "∛x"}
C_MODES = ("running_min", "zero", "constant:<finite value>")
C_RESETS = ("epoch", "never")


def resolve_f(f: str | Callable) -> tuple[str, Callable]:
    if callable(f):
        return getattr(f, "__name__", "custom"), f
    if f not in NOISE_FUNCTIONS:
        raise ValueError(f"f={f!r} is not one of {', '.join(NOISE_FUNCTIONS)} (or a callable)")
    return f, NOISE_FUNCTIONS[f]


def parse_c_mode(c_mode: str) -> tuple[str, float | None]:
    """'running_min' | 'zero' | 'constant:<value>' -> (kind, constant)."""
    if c_mode in ("running_min", "zero"):
        return c_mode, None
    if isinstance(c_mode, str) and c_mode.startswith("constant:"):
        try:
            value = float(c_mode.split(":", 1)[1])
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return "constant", value
    raise ValueError(f"c_mode={c_mode!r} is not one of {', '.join(C_MODES)}")


class LandscapeModification:
    """Scale gradients by 1 / (f((U - c)_+) + eps), one scalar per step.

    U is the batch objective the gradient came from (in the study: cross-entropy + AR +
    TAR). c is chosen by ``c_mode``:

    * ``running_min`` (default, reproduces the published logs): the running minimum of U,
      initialised to +inf and updated *before* it is used, c_t = min(c_{t-1}, U_t), so a
      batch that sets a new minimum gets scale 1. With ``c_reset="epoch"`` (default) the
      minimum restarts with every epoch, as the published loop's structure did;
      ``"never"`` keeps one minimum for the whole run.
    * ``zero``: c = 0, what the study's repository notebook computes (its running minimum
      starts at 0, and U > 0 never lowers it). Then x = U is 4–9 nats, where the ordering
      of f reverses (x² smooths most); replayed, it does not match the published logs.
    * ``constant:<value>``: a fixed threshold.

    c, the scale and the epoch statistics stay on the loss's device as tensors, so a
    step needs no host synchronisation. A 1-D ``loss`` holds one objective per element of
    a 1-D parameter (independent runs advanced together, as in the toy of notebook 01):
    c and the scale are then elementwise.
    """

    def __init__(self, f: str | Callable = "sqrt", eps: float = 1.0, c_mode: str = "running_min",
                 c_reset: str = "epoch") -> None:
        self.f_name, self.f = resolve_f(f)
        if not eps > 0:
            raise ValueError(f"eps_lm={eps} must be > 0 (it bounds the scale by 1/eps)")
        if c_reset not in C_RESETS:
            raise ValueError(f"c_reset={c_reset!r} is not one of {', '.join(C_RESETS)}")
        self.eps, self.c_reset = float(eps), c_reset
        self.c_kind, self.c_const = parse_c_mode(c_mode)
        self.c: torch.Tensor | None = None
        self.stats: dict[str, torch.Tensor | int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget c (running minimum back to +inf) and the accumulated statistics."""
        self.c = None
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = {"scale": 0.0, "c": 0.0, "U": 0.0, "n": 0}

    def start_epoch(self) -> None:
        if self.c_kind == "running_min" and self.c_reset == "epoch":
            self.c = None
        self.reset_stats()

    def denominator(self, loss: torch.Tensor) -> torch.Tensor:
        """Consume one batch objective: update c, return f((U - c)_+) + eps as a 0-dim tensor."""
        u = loss.detach()
        if self.c_kind == "running_min":
            self.c = u.clone() if self.c is None else torch.minimum(self.c, u)
        elif self.c is None:
            self.c = torch.full_like(u, 0.0 if self.c_kind == "zero" else self.c_const)
        denom = self.f((u - self.c).clamp_min(0)) + self.eps
        self.stats["scale"] = self.stats["scale"] + 1.0 / denom
        self.stats["c"] = self.stats["c"] + self.c
        self.stats["U"] = self.stats["U"] + u
        self.stats["n"] += 1
        return denom

    def scale(self, loss: torch.Tensor | float) -> float:
        """The step's gradient factor for batch objective ``loss`` (updates c)."""
        return float(1.0 / self.denominator(torch.as_tensor(loss, dtype=torch.float32)))

    @torch.no_grad()
    def apply_(self, params: Iterable[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        """Divide the gradients of ``params`` in place; returns the denominator."""
        denom = self.denominator(loss)
        grads = [p.grad for p in params if p.grad is not None]
        if grads and denom.dim() == 0:
            torch._foreach_div_(grads, denom)
        else:
            for g in grads:
                g.div_(denom)
        return denom

    def epoch_means(self) -> dict[str, float]:
        n = self.stats["n"]
        if not n:
            return {"lm_scale": math.nan, "lm_c": math.nan, "lm_U": math.nan}
        return {f"lm_{k}": float(torch.as_tensor(self.stats[k]).mean()) / n
                for k in ("scale", "c", "U")}

    def state_dict(self) -> dict:
        return {"c": self.c, "stats": dict(self.stats)}

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        """``device``: where the losses will be (c and the statistics follow them there)."""
        def place(value):
            return value.to(device) if device is not None and torch.is_tensor(value) else value
        self.c = place(state["c"])
        self.stats = {k: place(v) for k, v in state["stats"].items()}


def _check_hparams(lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    if not lr > 0:
        raise ValueError(f"lr={lr} must be > 0")
    if not 0.0 <= eps:
        raise ValueError(f"eps={eps} must be >= 0")
    for i, b in enumerate(betas):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"betas[{i}]={b} must be in [0, 1)")
    if not 0.0 <= weight_decay:
        raise ValueError(f"weight_decay={weight_decay} must be >= 0")


class AdaBelief(Optimizer):
    r"""AdaBelief (Zhuang et al. 2020) with plain L2 decay, no rectification, no AMSGrad.

    The configuration the study used (``adabelief-pytorch`` with ``weight_decouple=False,
    rectify=False``). Per parameter θ with gradient g, at step t = 1, 2, ..., from m = s = 0:

    1. g ← g + wd·θ                                  (L2, added to the gradient in place)
    2. m ← β1·m + (1 − β1)·g
    3. s ← β2·s + (1 − β2)·(g − m)²;  s ← s + eps    (eps accumulates in the state)
    4. denom ← sqrt(s) / sqrt(1 − β2^t) + eps
    5. θ ← θ − lr / (1 − β1^t) · m / denom

    Parameters whose ``.grad`` is None are skipped entirely (no state, no decay).
    ``foreach=True`` (default) runs each step as a few multi-tensor kernels;
    ``foreach=False`` is the readable per-tensor reference, op for op the same.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-16, weight_decay: float = 0.0, foreach: bool = True) -> None:
        _check_hparams(lr, betas, eps, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_vars, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdaBelief does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_var"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_vars.append(state["exp_avg_var"])
                steps.append(state["step"])
            if params:
                fn = _multi_tensor_adabelief if group["foreach"] else _single_tensor_adabelief
                fn(params, grads, exp_avgs, exp_avg_vars, steps, lr=group["lr"],
                   beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"],
                   weight_decay=group["weight_decay"])
        return loss


def _single_tensor_adabelief(params, grads, exp_avgs, exp_avg_vars, steps, *, lr, beta1,
                             beta2, eps, weight_decay) -> None:
    for p, g, m, s, t in zip(params, grads, exp_avgs, exp_avg_vars, steps):
        if weight_decay:
            g.add_(p, alpha=weight_decay)                                   # 1
        m.mul_(beta1).add_(g, alpha=1 - beta1)                              # 2
        r = g - m
        s.mul_(beta2).addcmul_(r, r, value=1 - beta2).add_(eps)             # 3
        denom = (s.sqrt() / math.sqrt(1 - beta2 ** t)).add_(eps)            # 4
        p.addcdiv_(m, denom, value=-lr / (1 - beta1 ** t))                  # 5


def _multi_tensor_adabelief(params, grads, exp_avgs, exp_avg_vars, steps, *, lr, beta1,
                            beta2, eps, weight_decay) -> None:
    if weight_decay:
        torch._foreach_add_(grads, params, alpha=weight_decay)              # 1
    torch._foreach_mul_(exp_avgs, beta1)                                    # 2
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    r = torch._foreach_sub(grads, exp_avgs)                                 # 3
    torch._foreach_mul_(exp_avg_vars, beta2)
    torch._foreach_addcmul_(exp_avg_vars, r, r, value=1 - beta2)
    torch._foreach_add_(exp_avg_vars, eps)
    del r
    denom = torch._foreach_sqrt(exp_avg_vars)                               # 4
    torch._foreach_div_(denom, [math.sqrt(1 - beta2 ** t) for t in steps])
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom,                        # 5
                            [-lr / (1 - beta1 ** t) for t in steps])


class AdaBeliefLM(AdaBelief):
    r"""AdaBelief fed with landscape-modified gradients (thesis Algorithm, SPEC §2).

    0. k ← g / (f((U − c)_+) + eps_lm)   (one scalar for the whole model; c per ``c_mode``)
    1–5. AdaBelief on k — so the L2 term of step 1 is *not* scaled, as in the study.

    ``step(loss)`` takes the batch objective U the gradients came from. Gradient clipping,
    if any, belongs before ``step`` (the study clipped the raw gradient, then scaled).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-16, weight_decay: float = 0.0, f: str | Callable = "sqrt",
                 eps_lm: float = 1.0, c_mode: str = "running_min", c_reset: str = "epoch",
                 foreach: bool = True) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, foreach)
        self.lm = LandscapeModification(f, eps_lm, c_mode, c_reset)

    @torch.no_grad()
    def step(self, loss: torch.Tensor | None = None, closure=None):  # type: ignore[override]
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if loss is None:
            raise ValueError("AdaBeliefLM.step needs the batch objective: step(loss)")
        self.lm.apply_((p for group in self.param_groups for p in group["params"]), loss)
        super().step()
        return loss

    def state_dict(self):
        return {**super().state_dict(), "landscape": self.lm.state_dict()}

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        # beside the parameters, as torch.optim places the moments
        device = next((p.device for g in self.param_groups for p in g["params"]), None)
        self.lm.load_state_dict(state_dict.pop("landscape"), device)
        super().load_state_dict(state_dict)
