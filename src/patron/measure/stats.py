"""Differences between a treated group and its control, with confidence intervals.

Revenue per customer is heavy-tailed (most customers spend nothing in a campaign's
window, a few spend a lot), and the two groups differ in size and variance. Welch's
unequal-variances t interval (Welch 1947, "The generalization of 'Student's' problem when
several different population variances are involved") suits that: it does not pool the
variances, and at campaign sizes the t statistic of a mean is close to normal even for
skewed spend (the central limit theorem on thousands of customers). A conversion is the
mean of a 0/1 variable, so the same interval gives the unpooled (Wald) interval of a
difference of two proportions. The tests check the interval's coverage on simulated
campaigns whose true effect is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats


@dataclass(frozen=True)
class Difference:
    """``treated`` mean minus ``control`` mean, its interval and Welch's two-sided p."""

    estimate: float
    low: float | None
    high: float | None
    p_value: float | None
    method: str = "welch"


def welch(treated: npt.ArrayLike, control: npt.ArrayLike, *, level: float = 0.95) -> Difference:
    """Welch's interval for ``mean(treated) - mean(control)``.

    Parameters
    ----------
    treated, control : array-like of float
        One value per customer (revenue, or 1.0 for a conversion and 0.0 otherwise).
    level : float
        Confidence level of the interval.

    Returns
    -------
    Difference
        The estimate; the interval and p-value are None when a group has fewer than two
        customers, or when neither group varies (the difference is then exact).
    """
    a = np.asarray(treated, dtype=np.float64)
    b = np.asarray(control, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return Difference(float("nan"), None, None, None)
    estimate = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Difference(estimate, None, None, None)
    if a.var() == 0 and b.var() == 0:
        return Difference(estimate, estimate, estimate, None)
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence_level=level)
    return Difference(estimate, float(interval.low), float(interval.high), float(result.pvalue))
