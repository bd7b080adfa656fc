"""Notebook 02's NumPy statement of AdaBelief(-LM) against lmreport.optim, and its helpers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmreport import derivation
from lmreport.optim import NOISE_FUNCTIONS, AdaBelief, AdaBeliefLM, LandscapeModification

SETTINGS = dict(lr=3e-2, eps=1e-12, wd=1e-2)
TORCH = dict(lr=3e-2, eps=1e-12, weight_decay=1e-2)


@pytest.fixture
def problem():
    return derivation.RippledBowl.draw(seed=3, n_steps=200)


def test_lmreport_optim_follows_the_numpy_steps_to_rounding(problem):
    ours = derivation.torch_path(problem, AdaBelief, **TORCH)
    reference = derivation.adabelief_numpy(problem.theta0, problem.gradients, **SETTINGS)
    assert ours.shape == reference.shape == (200, 6)
    assert np.abs(ours - reference).max() < 1e-12
    assert np.abs(ours[-1] - problem.theta0).max() > 0.1  # it moved: the comparison means something


@pytest.mark.parametrize("f", ["x2", "x", "sqrt", "cbrt"])
def test_adabelief_lm_follows_step_zero_in_numpy(problem, f):
    numpy_f = {"x2": np.square, "x": lambda x: x, "sqrt": np.sqrt, "cbrt": np.cbrt}[f]
    ours = derivation.torch_path(problem, AdaBeliefLM, f=f, **TORCH)
    reference = derivation.adabelief_lm_numpy(problem.theta0, problem.gradients, [problem.loss] * 200,
                                              f=numpy_f, **SETTINGS)
    plain = derivation.adabelief_numpy(problem.theta0, problem.gradients, **SETTINGS)
    assert np.abs(ours - reference).max() < 1e-12
    assert np.abs(reference - plain).max() > 1e-6  # step 0 changed the path (least for x², whose f(x) is smallest near 0)


def test_a_constant_gradient_factor_leaves_adabelief_where_it_was(problem):
    base = derivation.torch_path(problem, AdaBelief, 3e-2, eps=1e-16)
    assert np.abs(derivation.torch_path(problem, AdaBelief, 3e-2, scale=10.0, eps=1e-16) - base).max() < 1e-9
    varying = np.linspace(0.5, 2.0, problem.n_steps)
    assert np.abs(derivation.torch_path(problem, AdaBelief, 3e-2, scale=varying, eps=1e-16) - base).max() > 1e-3
    with pytest.raises(ValueError):  # one factor per step, or one for all
        derivation.torch_path(problem, AdaBelief, 3e-2, scale=[1.0, 2.0], eps=1e-16)


def test_the_problem_is_drawn_from_its_seed():
    a, b = derivation.RippledBowl.draw(5, 10), derivation.RippledBowl.draw(5, 10)
    assert np.array_equal(a.A, b.A) and np.array_equal(a.noise, b.noise) and a.n_steps == 10
    assert np.allclose(a.A, a.A.T) and np.linalg.eigvalsh(a.A).min() >= 1.0 - 1e-12
    assert not np.array_equal(a.theta0, derivation.RippledBowl.draw(6, 10).theta0)


def test_the_trace_is_scored_per_rule_with_the_threshold_restarting_each_epoch():
    batches = pd.DataFrame({"epoch": [1, 1, 1, 2, 2], "batch": [1, 2, 3, 1, 2], "U": [5.0, 4.0, 4.5, 4.2, 3.0]})
    scored = derivation.score_trace(batches)
    assert len(scored) == 2 * len(NOISE_FUNCTIONS) * 5
    one = scored[(scored.c_mode == "running_min") & (scored.f == scored.f.iloc[0])]
    assert one.step.tolist() == [1, 2, 3, 4, 5]
    # at the first batch of each epoch U is its own minimum: the factor is exactly 1
    assert one.scale.iloc[0] == one.scale.iloc[3] == 1.0 and one.scale.iloc[2] < 1.0
    lm = LandscapeModification("x", c_mode="zero")
    x_zero = scored[(scored.c_mode == "zero") & (scored.f == "x")]
    assert x_zero.scale.tolist() == pytest.approx([lm.scale(u) for u in batches.U])
    stats = derivation.factor_statistics(scored)
    assert len(stats) == 2 * len(NOISE_FUNCTIONS)
    row = stats[(stats.c_mode == "zero") & (stats.f == "x")].iloc[0]
    assert row["mean decay multiplier d"] == pytest.approx(np.mean([1 / lm.scale(u) for u in batches.U]))
