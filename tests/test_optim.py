"""AdaBelief against the oracle, the foreach path against the reference, and LM's scale."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmreport.model import AWDLSTM
from lmreport.optim import AdaBelief, AdaBeliefLM, LandscapeModification

adabelief_pytorch = pytest.importorskip("adabelief_pytorch")


def _train(make_opt, steps=60, seed=0, lm_step=False):
    """A small AWD-LSTM (frozen weight drop: one parameter never gets a gradient)."""
    torch.manual_seed(seed)
    model = AWDLSTM(40, 2, emsize=8, nhid=12)
    opt = make_opt(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    hidden = model.init_hidden(4)
    model.train()
    for _ in range(steps):
        tokens = torch.randint(40, (9, 4), generator=gen)
        hidden = [(h.detach(), c.detach()) for h, c in hidden]
        opt.zero_grad()
        out, hidden = model(tokens[:-1], hidden)
        loss = F.cross_entropy(model.logits(out).view(-1, 40), tokens[1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 0.25)
        opt.step(loss) if lm_step else opt.step()
    return model


@pytest.mark.parametrize("eps,lr", [(1e-16, 1e-3), (1e-12, 1e-2)])
def test_adabelief_matches_adabelief_pytorch(eps, lr):
    ours = _train(lambda p: AdaBelief(p, lr=lr, eps=eps, weight_decay=1.2e-6))
    oracle = _train(lambda p: adabelief_pytorch.AdaBelief(
        p, lr=lr, eps=eps, weight_decay=1.2e-6, weight_decouple=False, rectify=False,
        print_change_log=False))
    for (name, a), b in zip(ours.named_parameters(), oracle.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8), name
    # the run was long enough to move every trainable parameter
    torch.manual_seed(0)
    start = AWDLSTM(40, 2, emsize=8, nhid=12)
    moved = [not torch.equal(a, b) for a, b in zip(ours.parameters(), start.parameters())]
    assert sum(moved) == len(moved) - 2  # only the two frozen W_hh stay put


def test_foreach_path_equals_single_tensor_reference_in_float64():
    def run(foreach):
        torch.manual_seed(3)
        params = [torch.randn(5, 4, dtype=torch.float64, requires_grad=True),
                  torch.randn(7, dtype=torch.float64, requires_grad=True)]
        opt = AdaBelief(params, lr=1e-2, eps=1e-12, weight_decay=1e-3, foreach=foreach)
        for step in range(25):
            for p in params:
                p.grad = torch.sin(p.detach() * (step + 1)) + 0.1 * step
            opt.step()
        return params
    for a, b in zip(run(True), run(False)):
        assert torch.equal(a, b)


def _scales(lm, losses):
    return [lm.scale(u) for u in losses]


def test_lm_scale_running_min_updates_c_before_use():
    lm = LandscapeModification("x", c_mode="running_min")
    losses = [5.0, 4.0, 4.5, 3.0, 3.5]
    assert _scales(lm, losses) == pytest.approx([1, 1, 1 / 1.5, 1, 1 / 1.5])
    assert float(lm.c) == 3.0


@pytest.mark.parametrize("f,fn", [("x2", lambda x: x * x), ("x", lambda x: x),
                                  ("sqrt", math.sqrt), ("cbrt", lambda x: x ** (1 / 3))])
def test_lm_scale_for_each_noise_function_and_c_mode(f, fn):
    lm = LandscapeModification(f, eps=1.0, c_mode="running_min")
    assert _scales(lm, [6.0, 6.64]) == pytest.approx([1.0, 1 / (fn(0.64) + 1)], rel=1e-6)
    zero = LandscapeModification(f, c_mode="zero")
    assert _scales(zero, [4.0, 9.0]) == pytest.approx([1 / (fn(4.0) + 1), 1 / (fn(9.0) + 1)], rel=1e-6)
    const = LandscapeModification(f, eps=0.5, c_mode="constant:2.5")
    assert _scales(const, [2.0, 4.0]) == pytest.approx([1 / 0.5, 1 / (fn(1.5) + 0.5)], rel=1e-6)


def test_running_min_restarts_each_epoch_unless_told_not_to():
    per_epoch = LandscapeModification("x", c_reset="epoch")
    glob = LandscapeModification("x", c_reset="never")
    for lm in (per_epoch, glob):
        lm.scale(3.0)
        lm.start_epoch()
    assert per_epoch.scale(4.0) == 1.0          # new epoch: c restarts at +inf, so c = U
    assert glob.scale(4.0) == pytest.approx(0.5)  # c stays 3


def test_lm_epoch_means_and_state_roundtrip():
    lm = LandscapeModification("x")
    _scales(lm, [2.0, 3.0])
    means = lm.epoch_means()
    assert means == pytest.approx({"lm_scale": 0.75, "lm_c": 2.0, "lm_U": 2.5})
    copy = LandscapeModification("x")
    copy.load_state_dict(lm.state_dict())
    assert copy.scale(4.0) == lm.scale(4.0) == pytest.approx(1 / 3)
    # a checkpoint read onto the CPU puts c and the statistics where the losses will be
    placed = LandscapeModification("x")
    placed.load_state_dict(lm.state_dict(), device="meta")
    assert placed.c.device.type == "meta"
    assert all(v.device.type == "meta" for v in placed.stats.values() if torch.is_tensor(v))
    assert placed.stats["n"] == lm.stats["n"]


def test_f_identically_zero_reproduces_adabelief_exactly():
    plain = _train(lambda p: AdaBelief(p, lr=1e-2, eps=1e-12, weight_decay=1e-4))
    lm = _train(lambda p: AdaBeliefLM(p, lr=1e-2, eps=1e-12, weight_decay=1e-4,
                                      f=lambda x: x * 0.0, eps_lm=1.0), lm_step=True)
    for a, b in zip(plain.parameters(), lm.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("f,power", [("cbrt", 1 / 3), ("x", 1.0)])
def test_adabelief_lm_equals_the_oracle_fed_hand_scaled_gradients(f, power):
    """AdaBeliefLM against adabelief-pytorch stepping on gradients divided by a factor
    computed here from the thesis formula: c = min(c, U) before use, 1/((U - c)^p + 1)."""
    ours = _train(lambda p: AdaBeliefLM(p, lr=1e-2, eps=1e-12, weight_decay=1e-4, f=f), lm_step=True)

    class HandScaled(adabelief_pytorch.AdaBelief):
        c, factors = math.inf, []

        def step(self, loss):
            u = float(loss.detach())
            self.c = min(self.c, u)
            factor = 1.0 / (max(u - self.c, 0.0) ** power + 1.0)
            self.factors.append(factor)
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(factor)
            super().step()

    oracle = _train(lambda p: HandScaled(p, lr=1e-2, eps=1e-12, weight_decay=1e-4, weight_decouple=False,
                                         rectify=False, print_change_log=False), lm_step=True)
    assert min(HandScaled.factors) < 0.99 and max(HandScaled.factors) == 1.0  # LM was active
    for (name, a), b in zip(ours.named_parameters(), oracle.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7), name


def test_weight_decay_is_not_scaled_by_lm():
    """SGD(lr=1, wd=w) after LM: theta' = theta - (g / d + w * theta), d = f(U - c) + eps."""
    theta = torch.tensor([2.0, -1.0], requires_grad=True)
    g = torch.tensor([0.5, 0.25])
    theta.grad = g.clone()
    lm = LandscapeModification("x", c_mode="constant:1.0")
    opt = torch.optim.SGD([theta], lr=1.0, weight_decay=0.1)
    denom = lm.apply_([theta], torch.tensor(4.0))
    opt.step()
    assert float(denom) == 4.0
    assert torch.allclose(theta.detach(), torch.tensor([2.0, -1.0]) - (g / 4.0 + 0.1 * torch.tensor([2.0, -1.0])))


def test_lm_works_with_adam_and_sgd():
    for make in (lambda p: torch.optim.Adam(p, lr=1e-2), lambda p: torch.optim.SGD(p, lr=0.5)):
        torch.manual_seed(0)
        w = torch.randn(3, requires_grad=True)
        opt, lm = make([w]), LandscapeModification("sqrt", c_mode="zero")
        before = w.detach().clone()
        (w ** 2).sum().backward()
        lm.apply_([w], torch.tensor(4.0))
        assert torch.allclose(w.grad, 2 * before / 3)
        opt.step()
        assert not torch.equal(w.detach(), before)


@pytest.mark.parametrize("kwargs,match", [
    (dict(f="x3"), "f='x3'"), (dict(c_mode="median"), "c_mode='median'"),
    (dict(c_mode="constant:abc"), "constant"), (dict(eps=0), "eps_lm=0"),
    (dict(c_reset="sometimes"), "c_reset"),
])
def test_lm_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LandscapeModification(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=0), "lr=0"), (dict(lr=-1), "lr=-1"), (dict(betas=(1.0, 0.9)), r"betas\[0\]"),
    (dict(eps=-1), "eps=-1"), (dict(weight_decay=-1), "weight_decay=-1"),
])
def test_adabelief_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaBelief([torch.zeros(1, requires_grad=True)], **kwargs)


def test_adabelief_lm_state_dict_carries_the_running_minimum():
    w = torch.zeros(2, requires_grad=True)
    opt = AdaBeliefLM([w], lr=0.1, f="x")
    w.grad = torch.ones(2)
    opt.step(torch.tensor(3.0))
    other = AdaBeliefLM([torch.zeros(2, requires_grad=True)], lr=0.1, f="x")
    other.load_state_dict(opt.state_dict())
    assert float(other.lm.c) == 3.0
    # a state read onto the CPU goes where the parameters are (meta stands in for a GPU)
    on_meta = AdaBeliefLM([torch.zeros(2, device="meta", requires_grad=True)], lr=0.1, f="x")
    on_meta.load_state_dict(opt.state_dict())
    assert on_meta.lm.c.device.type == "meta"
    with pytest.raises(ValueError, match="batch objective"):
        opt.step()
