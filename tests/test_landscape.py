"""The toy landscape of Figure 2.1 and the escape experiment."""
from __future__ import annotations

import numpy as np
import pytest

from lmreport import landscape as toy


def test_stationary_points_match_the_spec():
    minima = [p for p in toy.stationary_points() if p.kind == "minimum"]
    assert [round(p.z, 4) for p in minima] == [0.3085, 1.872]
    assert [round(p.U, 4) for p in minima] == [0.2703, 0.8882]
    assert toy.global_minimum().U == pytest.approx(0.270317, abs=1e-6)


@pytest.mark.parametrize("c,eps", [(0.4, 1.0), (0.8, 0.5)])
def test_numerical_h_matches_closed_form_for_linear_f(c, eps):
    z = np.linspace(-0.5, 2.4, 301)
    assert np.allclose(toy.modified_landscape(z, c=c, f="x", eps=eps),
                       toy.modified_landscape_linear(z, c=c, eps=eps), atol=1e-6)


def test_h_equals_u_below_threshold_and_is_flatter_above():
    z = np.linspace(0.0, 2.2, 200)
    u, h = toy.U(z), toy.modified_landscape(z, c=0.4, f="sqrt")
    below = u <= 0.4
    assert np.allclose(h[below], u[below] - toy.global_minimum().U, atol=1e-6)
    assert (np.diff(h)[~below[1:]] * np.diff(u)[~below[1:]] >= 0).all()  # same monotonicity
    assert (h[~below] < u[~below] - toy.global_minimum().U).all()


def test_escape_experiment_is_seeded_and_lm_helps_only_with_injected_noise():
    kw = dict(n_runs=200, steps=1500, seed=1)
    a = toy.escape_times("langevin", **kw)
    assert np.array_equal(a, toy.escape_times("langevin", **kw))
    assert np.isfinite(toy.escape_times("langevin-lm", **kw)).mean() > np.isfinite(a).mean()
    with pytest.raises(ValueError, match="method='newton'"):
        toy.escape_times("newton")
