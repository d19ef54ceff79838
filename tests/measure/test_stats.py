"""Welch's intervals, and their coverage of the effect the response simulator put in."""

from __future__ import annotations

import numpy as np
import pytest

from patron.measure.simulate import ResponseModel, simulate
from patron.measure.stats import welch


def test_welch_matches_the_textbook_formula() -> None:
    treated = np.array([0.0, 0.0, 120.0, 0.0, 40.0, 0.0, 0.0, 300.0])
    control = np.array([0.0, 50.0, 0.0, 0.0, 0.0, 0.0])
    found = welch(treated, control)
    # by hand: means 57.5 and 8.333; variances (ddof 1) 11078.57 and 416.67
    va, vb = treated.var(ddof=1) / 8, control.var(ddof=1) / 6
    df = (va + vb) ** 2 / (va**2 / 7 + vb**2 / 5)
    from scipy.stats import t

    half = t.ppf(0.975, df) * np.sqrt(va + vb)
    assert found.estimate == pytest.approx(57.5 - 50 / 6, abs=1e-12)
    assert found.low == pytest.approx(found.estimate - half, abs=1e-9)
    assert found.high == pytest.approx(found.estimate + half, abs=1e-9)
    assert found.method == "welch"


def test_degenerate_groups_give_no_interval() -> None:
    assert welch([], [1.0]).low is None
    assert welch([1.0], [0.0, 1.0]).low is None
    exact = welch([1.0, 1.0], [0.0, 0.0])
    assert (exact.estimate, exact.low, exact.high) == (1.0, 1.0, 1.0)


def test_intervals_cover_the_simulated_true_effect_about_95_times_in_100() -> None:
    # a campaign of 4,000 customers with 10% held out, simulated 300 times
    rng = np.random.default_rng(11)
    n = 4_000
    treated = rng.random(n) >= 0.10
    p_alive = rng.beta(4, 2, n)
    yearly = rng.gamma(2.0, 3.0, n)
    spend = rng.gamma(2.0, 1_500.0, n)
    covered_revenue = covered_conversion = 0
    runs = 300
    for seed in range(runs):
        model = ResponseModel(lift=0.3, seed=seed)
        sim = simulate(treated, p_alive=p_alive, yearly_purchases=yearly, mean_spend=spend,
                       model=model)  # fmt: skip
        revenue = welch(sim.spend[treated], sim.spend[~treated])
        conversion = welch(sim.bought[treated], sim.bought[~treated])
        assert revenue.low is not None and revenue.high is not None
        assert conversion.low is not None and conversion.high is not None
        # the truth to cover: the treated group's expected gain over its own baseline
        covered_revenue += revenue.low <= sim.true_incremental_revenue_per_customer <= revenue.high
        covered_conversion += conversion.low <= sim.true_incremental_conversion <= conversion.high
    # a 95% interval covers ~285 of 300; 2.5 standard errors either side is 273..296
    assert 273 <= covered_revenue <= 297
    assert 273 <= covered_conversion <= 297
