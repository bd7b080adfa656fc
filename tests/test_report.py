"""Generated conclusions: the sentences notebook 04 writes follow the numbers."""
from __future__ import annotations

import pandas as pd
import pytest

from lmreport.report import conclusions


def _runs(means: dict[str, float], spread: float = 0.5) -> pd.DataFrame:
    rows = []
    for variant, mean in means.items():
        for k, seed in enumerate((141, 6, 42)):
            value = mean + (k - 1) * spread
            rows.append({"layers": 1, "variant": variant, "seed": seed, "status": "finished",
                         "min_train": value + 100, "min_test": value, "test_at_best_valid": value + 1})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("means, trend", [
    ({"adabelief": 394, "lm-x2": 395, "lm-x": 398, "lm-sqrt": 401, "lm-cbrt": 403}, "the worse"),
    ({"adabelief": 394, "lm-x2": 399, "lm-x": 398, "lm-sqrt": 397, "lm-cbrt": 390}, "the better"),
    ({"adabelief": 394, "lm-x2": 399, "lm-x": 401, "lm-sqrt": 397, "lm-cbrt": 396}, None),
])
def test_ordering_sentence_states_the_trend_only_when_monotone(means, trend):
    lines = conclusions(_runs(means), "test_at_best_valid")
    order = next(line for line in lines if "Ordering of f" in line)
    if trend:
        assert f"the stronger the modification, {trend}, monotonically in f" in order
    else:
        assert "monotonically" not in order


def test_verdict_compares_the_best_variant_with_the_seed_spread():
    best_lm = conclusions(_runs({"adabelief": 394, "lm-x2": 390, "lm-x": 398, "lm-sqrt": 401, "lm-cbrt": 403}))
    assert "AdaBelief 394.00 (std 0.50)" in best_lm[0]
    assert "AdaBelief-LM x² is the best of the study's variants, 4.00 below AdaBelief (-1.0%)" in best_lm[0]
    assert "larger than the largest seed standard deviation among them (0.50)" in best_lm[0]
    assert "published order" in best_lm[1]
    baseline = conclusions(_runs({"adabelief": 394, "lm-x2": 394.2, "lm-x": 398, "lm-sqrt": 401, "lm-cbrt": 403}))
    assert "AdaBelief itself is the best of the study's variants" in baseline[0]
