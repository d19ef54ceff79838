r"""Buy-till-you-die customer-lifetime-value models, fitted by maximum likelihood.

The path from transactions to a value per customer is::

    s = summarize(tx, calibration_end="1997-09-30", observation_end="1998-06-30")
    purchases = BetaGeo().fit(s)               # or ParetoNBD().fit(s)
    spend = GammaGamma().fit(s[s.x > 0])
    value = discounted_clv(purchases, spend, s, horizon=52, unit_rate=0.0019)
    profit = profit_clv(s.assign(discounted_revenue=value), horizon_months=12, settings=...)

``summarize`` turns transactions into the sufficient statistics of the models: ``x`` (repeat
purchases), ``t_x`` (time of the last repeat purchase), ``T`` (time observed) and ``monetary``
(mean value of the repeat purchases). The models never look at a customer one by one: a fit
groups identical rows of those statistics and weights each distinct row by the number of
customers that share it, so its cost grows with the number of distinct rows. Parameters are
estimated in log space with L-BFGS-B, each likelihood with its analytic gradient (for the
Pareto/NBD, derivatives of the hypergeometric terms in their parameters are summed as series or
integrated numerically; see :class:`ParetoNBD`).

Time resolution decides the number of distinct rows. Dates are days, so ``t_x`` and ``T`` in
weeks are multiples of 1/7 and a base of a million customers over two years still has about
0.6 distinct ``(x, t_x, T)`` per customer; rounding ``t_x`` and ``T`` to whole weeks before the
fit cuts that about six-fold, at the cost of half a week of precision.

References
----------
.. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers" the easy
   way: an alternative to the Pareto/NBD model. *Marketing Science* 24(2), 275-284.
.. [2] Schmittlein, D. C., Morrison, D. G. and Colombo, R. (1987). Counting your customers: who
   are they and what will they do next? *Management Science* 33(1), 1-24.
.. [3] Fader, P. S. and Hardie, B. G. S. (2005). A note on deriving the Pareto/NBD model and
   related expressions. http://brucehardie.com/notes/009/
.. [4] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). RFM and CLV: using iso-value curves
   for customer base analysis. *Journal of Marketing Research* 42(4), 415-430.
.. [5] Fader, P. S. and Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary value.
   http://brucehardie.com/notes/025/
.. [6] Takahashi, H. and Mori, M. (1974). Double exponential formulas for numerical integration.
   *Publications of the Research Institute for Mathematical Sciences* 9(3), 721-741.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Protocol, Self

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from scipy import optimize
from scipy.special import digamma, expit, gammaln, hyp2f1, log_expit

from patron.analytics.schemas import InvalidData, ModelNotFitted

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
Objective = Callable[[FloatArray], tuple[float, FloatArray | None]]

__all__ = [
    "BetaGeo",
    "GammaGamma",
    "InvalidData",
    "ModelNotFitted",
    "ParetoNBD",
    "ProfitSettings",
    "PurchaseModel",
    "discounted_clv",
    "profit_clv",
    "summarize",
]

# Log-parameters stay in [-30, 30]: wide enough for any real base, narrow enough that exp()
# never overflows while the line search explores.
_LOG_BOUND = 30.0
_DAY = pd.Timedelta(days=1)


# --------------------------------------------------------------------------------------------
# Transactions -> summary
# --------------------------------------------------------------------------------------------


def summarize(
    tx: pd.DataFrame,
    *,
    customer: str = "customer_id",
    date: str = "date",
    amount: str | None = "amount",
    calibration_end: Any = None,
    observation_end: Any = None,
    unit: Literal["W", "D"] = "W",
) -> pd.DataFrame:
    """Summarise transactions into the statistics the models need, one row per customer.

    This is the standard preparation of the CLV literature [1]_ [4]_:

    - the transactions of one customer on one day merge into one, with the amounts summed;
    - a customer's first purchase starts their clock and is not a repeat purchase;
    - ``x`` is the number of repeat purchases up to ``calibration_end`` (inclusive), ``t_x`` the
      time from the first purchase to the last repeat purchase (0 when ``x == 0``) and ``T``
      the time from the first purchase to ``calibration_end``;
    - ``monetary`` is the mean value of the repeat purchases in calibration (0 when ``x == 0``);
      the first purchase is left out because the Gamma-Gamma model describes repeat spend;
    - ``x_holdout`` (only when ``observation_end`` is given) counts the purchases after
      ``calibration_end`` up to ``observation_end`` (inclusive).

    Customers whose first purchase comes after ``calibration_end`` are left out.

    Parameters
    ----------
    tx
        Transactions, one row each.
    customer, date, amount
        Names of the customer id, date and amount columns. Dates are datetimes or date strings;
        the time of day is ignored. ``amount=None`` skips ``monetary``.
    calibration_end
        Last day of the calibration period; defaults to the last transaction date.
    observation_end
        Last day of the hold-out period, if any.
    unit
        Time unit of ``t_x`` and ``T``: ``"W"`` for weeks (days / 7) or ``"D"`` for days.

    Returns
    -------
    pandas.DataFrame
        Indexed by customer id (sorted), with columns ``x``, ``t_x``, ``T``, ``monetary``
        (unless ``amount=None``) and ``x_holdout`` (when ``observation_end`` is given).

    Raises
    ------
    InvalidData
        A required column is missing, an id or a date is missing or unreadable, an amount is
        not a number, or the period ends are out of order. The message names the column.
    """
    if unit not in ("W", "D"):
        raise InvalidData(f"unit must be 'W' (weeks) or 'D' (days), got {unit!r}")
    days_per_unit = 7.0 if unit == "W" else 1.0
    frame = _checked_transactions(tx, customer=customer, date=date, amount=amount)
    day = frame["day"]
    cal_end = (
        _day_boundary(calibration_end, day, "calibration_end")
        if calibration_end is not None
        else day.max()
    )
    obs_end = None
    if observation_end is not None:
        obs_end = _day_boundary(observation_end, day, "observation_end")
        if obs_end < cal_end:
            raise InvalidData(
                f"observation_end {obs_end.date()} is before calibration_end {cal_end.date()}"
            )

    daily = frame.groupby(["customer", "day"], sort=False, observed=True, as_index=False)[
        "amount"
    ].sum()
    first = daily.groupby("customer", sort=False, observed=True)["day"].transform("min")
    daily = daily[first <= cal_end]
    first = first[first <= cal_end]
    elapsed = (daily["day"] - first) / _DAY

    customers = daily.groupby("customer", sort=True, observed=True)
    first_day = customers["day"].min()
    out = pd.DataFrame(index=first_day.index.rename(customer))
    calibration = daily["day"] <= cal_end
    repeats = daily[calibration & (elapsed > 0)].assign(elapsed=elapsed)
    by_customer = repeats.groupby("customer", observed=True)
    out["x"] = by_customer.size().reindex(out.index, fill_value=0).astype(np.int64)
    out["t_x"] = by_customer["elapsed"].max().reindex(out.index, fill_value=0.0) / days_per_unit
    out["T"] = ((cal_end - first_day) / _DAY).to_numpy(np.float64) / days_per_unit
    if amount is not None:
        out["monetary"] = by_customer["amount"].mean().reindex(out.index, fill_value=0.0)
    if obs_end is not None:
        holdout = daily[(daily["day"] > cal_end) & (daily["day"] <= obs_end)]
        counts = holdout.groupby("customer", observed=True).size()
        out["x_holdout"] = counts.reindex(out.index, fill_value=0).astype(np.int64)
    return out


def _checked_transactions(
    tx: pd.DataFrame, *, customer: str, date: str, amount: str | None
) -> pd.DataFrame:
    """Validate the transaction columns; return them as ``customer, day, amount``."""
    if not isinstance(tx, pd.DataFrame):
        raise InvalidData(f"transactions must be a pandas DataFrame, got {type(tx).__name__}")
    required = [customer, date] + ([amount] if amount is not None else [])
    missing = [name for name in required if name not in tx.columns]
    if missing:
        raise InvalidData(f"transactions lack column(s): {', '.join(map(repr, missing))}")
    ids = tx[customer]
    if ids.isna().any():
        raise InvalidData(f"column {customer!r} has {int(ids.isna().sum())} missing customer ids")
    day = _as_days(tx[date], date)
    if amount is None:
        values = pd.Series(np.zeros(len(tx)), index=tx.index)
    else:
        values = tx[amount]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            raise InvalidData(f"column {amount!r} must be numeric, got dtype {values.dtype}")
        if values.isna().any():
            raise InvalidData(f"column {amount!r} has {int(values.isna().sum())} missing amounts")
    return pd.DataFrame({"customer": ids, "day": day, "amount": values})


def _as_days(column: pd.Series, name: str) -> pd.Series:
    """Dates at day resolution; numbers are refused because pandas would read them as epochs."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise InvalidData(
            f"column {name!r} must hold dates (datetimes or date strings), got dtype {column.dtype}"
        )
    try:
        parsed = pd.to_datetime(column)
    except (ValueError, TypeError) as exc:
        raise InvalidData(f"column {name!r} has values that are not dates: {exc}") from exc
    if parsed.isna().any():
        raise InvalidData(f"column {name!r} has {int(parsed.isna().sum())} missing dates")
    return parsed.dt.normalize()


def _day_boundary(value: Any, day: pd.Series, name: str) -> pd.Timestamp:
    """A period end as a day, in the time zone of the transaction dates."""
    try:
        boundary = pd.Timestamp(value).normalize()
    except (ValueError, TypeError) as exc:
        raise InvalidData(f"{name} is not a date: {value!r}") from exc
    tz = day.dt.tz
    if tz is not None and boundary.tzinfo is None:
        boundary = boundary.tz_localize(tz)
    elif tz is None and boundary.tzinfo is not None:
        boundary = boundary.tz_localize(None)
    return boundary


# --------------------------------------------------------------------------------------------
# Summary -> grouped sufficient statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Groups:
    """Distinct rows of some columns, with the total weight of the customers in each.

    Column ``k`` of group ``g`` is ``levels[k][codes[k][g]]``: keeping the distinct levels of each
    column lets a likelihood evaluate its costly parts once per level instead of once per row.
    """

    levels: tuple[FloatArray, ...]
    codes: tuple[IntArray, ...]
    weight: FloatArray
    row_group: IntArray  # the group of each input row

    def column(self, k: int) -> FloatArray:
        return self.levels[k][self.codes[k]]

    @property
    def size(self) -> int:
        return len(self.weight)


def _group_rows(columns: Sequence[FloatArray], weight: FloatArray, *, group: bool) -> _Groups:
    """Group identical rows of ``columns``, summing their weights.

    Each column is factorised into levels (hashing, linear time); the level codes combine into
    one integer key per row, and an integer sort of the keys finds the groups.
    """
    levels: list[FloatArray] = []
    codes: list[IntArray] = []
    for values in columns:
        code, level = pd.factorize(values)
        codes.append(np.asarray(code, dtype=np.intp))
        levels.append(np.asarray(level, dtype=np.float64))
    if not group:
        return _Groups(tuple(levels), tuple(codes), weight, np.arange(len(weight)))

    key = np.zeros(len(weight), dtype=np.int64)
    bound = 1
    for code, level in zip(codes, levels, strict=True):
        if bound * len(level) >= 2**62:  # keep the combined key inside int64
            key = np.asarray(pd.factorize(key)[0], dtype=np.int64)
            bound = int(key.max()) + 1
        key = key * len(level) + code
        bound *= len(level)
    order = np.argsort(key)
    sorted_key = key[order]
    opens = np.concatenate(([True], sorted_key[1:] != sorted_key[:-1]))
    starts = np.flatnonzero(opens)
    row_group = np.empty(len(key), dtype=np.intp)
    row_group[order] = np.cumsum(opens) - 1
    first_rows = order[starts]
    return _Groups(
        levels=tuple(levels),
        codes=tuple(code[first_rows] for code in codes),
        weight=np.add.reduceat(weight[order], starts),
        row_group=row_group,
    )


def _weight_sums(code: IntArray, weight: FloatArray, size: int) -> FloatArray:
    """Sum of ``weight`` per code ``0 .. size - 1``."""
    return np.asarray(np.bincount(code, weights=weight, minlength=size), dtype=np.float64)


# The likelihoods sum with einsum, not ``@``: OpenBLAS spreads a long dot or matrix-vector
# product over threads whose spin-waiting, on a busy machine, costs several times the sum
# (a 1M-customer BG/NBD fit took 2.0 s instead of 0.46 s with two cores shared).


def _dot(u: FloatArray, v: FloatArray) -> float:
    """``u @ v`` for 1-d arrays, without BLAS."""
    return float(np.einsum("i,i->", u, v))


def _apply(matrix: FloatArray, vector: FloatArray) -> FloatArray:
    """``matrix @ vector``, without BLAS."""
    return np.asarray(np.einsum("ij,j->i", matrix, vector), dtype=np.float64)


def _column_values(summary: pd.DataFrame, name: str) -> FloatArray:
    column = summary[name]
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise InvalidData(f"column {name!r} must be numeric, got dtype {column.dtype}")
    values = np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InvalidData(f"column {name!r} has {int(bad.sum())} missing or infinite values")
    return values


def _summary_arrays(
    summary: pd.DataFrame, names: Sequence[str], weights: str | None = None
) -> tuple[list[FloatArray], FloatArray]:
    """Check a summary frame; return its columns and the customer weights (1 unless given)."""
    if not isinstance(summary, pd.DataFrame):
        raise InvalidData(f"summary must be a pandas DataFrame, got {type(summary).__name__}")
    wanted = [*names, *([weights] if weights is not None else [])]
    missing = [name for name in wanted if name not in summary.columns]
    if missing:
        raise InvalidData(f"summary lacks column(s): {', '.join(map(repr, missing))}")
    if len(summary) == 0:
        raise InvalidData("summary has no rows")
    if not summary.index.is_unique:
        raise InvalidData("summary index must hold unique customer ids")
    arrays = [_column_values(summary, name) for name in names]
    if weights is None:
        return arrays, np.ones(len(summary))
    weight = _column_values(summary, weights)
    if (weight < 0).any() or weight.sum() <= 0:
        raise InvalidData(f"column {weights!r} must hold non-negative weights with a positive sum")
    return arrays, weight


def _recency_frequency(
    summary: pd.DataFrame, weights: str | None = None
) -> tuple[list[FloatArray], FloatArray]:
    """``x``, ``t_x``, ``T`` checked for consistency, with the weights."""
    (x, t_x, big_t), weight = _summary_arrays(summary, ("x", "t_x", "T"), weights)
    if (x < 0).any() or (x != np.round(x)).any():
        raise InvalidData("column 'x' must hold non-negative whole numbers of repeat purchases")
    if (big_t < 0).any():
        raise InvalidData("column 'T' must be non-negative")
    if (t_x < 0).any() or (t_x > big_t).any():
        raise InvalidData("column 't_x' must lie between 0 and T")
    if (t_x[x == 0] != 0).any():
        raise InvalidData("column 't_x' must be 0 where x is 0")
    return [x, t_x, big_t], weight


def _log_sub(u: FloatArray, v: FloatArray) -> FloatArray:
    """``log(exp(u) - exp(v))`` for ``u >= v``; ``-inf`` where they are equal."""
    with np.errstate(divide="ignore"):
        return np.asarray(u + np.log(-np.expm1(np.minimum(v - u, 0.0))), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class _MaximumLikelihoodModel:
    """Fitting machinery shared by the models: log-parameter space, L-BFGS-B, fitted state."""

    param_names: ClassVar[tuple[str, ...]]
    _analytic_gradient: ClassVar[bool]

    def __init__(self) -> None:
        self._params: FloatArray | None = None
        self._log_likelihood: float | None = None
        self.n_groups: int | None = None
        """Distinct rows of sufficient statistics in the last fit."""

    @classmethod
    def from_params(cls, params: Mapping[str, float]) -> Self:
        """A model with given parameters (published ones, say) instead of fitted ones."""
        if set(params) != set(cls.param_names):
            raise InvalidData(
                f"{cls.__name__} takes parameters {', '.join(cls.param_names)}, "
                f"got {sorted(params)}"
            )
        values = np.array([float(params[name]) for name in cls.param_names])
        if not (np.isfinite(values).all() and (values > 0).all()):
            raise InvalidData(f"{cls.__name__} parameters must be positive and finite")
        model = cls()
        model._params = values
        return model

    # -- state ---------------------------------------------------------------------------------

    @property
    def params(self) -> dict[str, float]:
        """The parameters, by name."""
        values = self._fitted()
        return {name: float(value) for name, value in zip(self.param_names, values, strict=True)}

    @property
    def log_likelihood(self) -> float:
        """Total log-likelihood over the customers of the last fit."""
        if self._log_likelihood is None:
            raise ModelNotFitted(
                f"{type(self).__name__} has no log-likelihood: call .fit(summary) first"
            )
        return self._log_likelihood

    def _fitted(self) -> FloatArray:
        if self._params is None:
            raise ModelNotFitted(f"{type(self).__name__} is not fitted: call .fit(summary) first")
        return self._params

    # -- fitting -------------------------------------------------------------------------------

    def _statistics(self, summary: pd.DataFrame, weights: str | None, group: bool) -> Any:
        raise NotImplementedError

    def _initial(self, stats: Any) -> FloatArray:
        raise NotImplementedError

    def _negative_log_likelihood(
        self, theta: FloatArray, stats: Any
    ) -> tuple[float, FloatArray | None]:
        raise NotImplementedError

    def objective(
        self, summary: pd.DataFrame, *, weights: str | None = None, group: bool = True
    ) -> Objective:
        """The function ``fit`` minimises, for inspection and gradient checks.

        It maps the log-parameters (in the order of ``param_names``) to the mean negative
        log-likelihood per customer and its analytic gradient (``None`` where the model has
        none).
        """
        stats = self._statistics(summary, weights, group)

        def function(theta: FloatArray) -> tuple[float, FloatArray | None]:
            return self._negative_log_likelihood(np.asarray(theta, dtype=np.float64), stats)

        return function

    def fit(self, summary: pd.DataFrame, *, weights: str | None = None, group: bool = True) -> Self:
        """Estimate the parameters by maximum likelihood.

        Parameters
        ----------
        summary
            One row per customer, as from :func:`summarize`, or one row per distinct set of
            statistics with a ``weights`` column counting the customers that share it.
        weights
            Name of a column of customer counts (or other non-negative weights).
        group
            Group identical rows before fitting (the default). ``False`` evaluates every row
            on its own; the estimate is the same, only slower.

        Returns
        -------
        Self
            The fitted model.
        """
        stats = self._statistics(summary, weights, group)
        theta0 = self._initial(stats)
        start, _ = self._negative_log_likelihood(theta0, stats)
        if not np.isfinite(start):
            raise RuntimeError(f"{type(self).__name__}: the likelihood is not finite at the start")
        # L-BFGS-B stops for good at the first non-finite value, which a long trial step into
        # extreme parameters can produce; a high finite wall makes the line search step back.
        wall = start + 1e4

        def function(theta: FloatArray) -> Any:
            with np.errstate(all="ignore"):
                value, gradient = self._negative_log_likelihood(theta, stats)
            if not np.isfinite(value) or (gradient is not None and not np.isfinite(gradient).all()):
                value, gradient = wall, np.zeros_like(theta)
            return (value, gradient) if self._analytic_gradient else value

        bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(theta0)
        result = optimize.minimize(
            function,
            theta0,
            method="L-BFGS-B",
            jac=True if self._analytic_gradient else "3-point",
            bounds=bounds,
            options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-9, "maxcor": 20},
        )
        theta = np.asarray(result.x, dtype=np.float64)
        if not result.fun < wall:
            raise RuntimeError(f"{type(self).__name__} fit failed: {result.message}")
        # a parameter at its bound may keep a gradient pointing outwards; any other should be
        # flat, unless the likelihood has a ridge towards infinity (a degenerate mixing law)
        gradient = np.asarray(result.jac, dtype=np.float64)
        at_lower, at_upper = theta <= -_LOG_BOUND + 1e-9, theta >= _LOG_BOUND - 1e-9
        free = ~((at_lower & (gradient > 0)) | (at_upper & (gradient < 0)))
        steepest = float(np.abs(gradient[free]).max(initial=0.0))
        if steepest > 1e-5:
            warnings.warn(
                f"{type(self).__name__} fit stopped with gradient {steepest:.1e} "
                f"({result.message}); the estimate may lie on a flat ridge",
                RuntimeWarning,
                stacklevel=2,
            )
        self._params = np.exp(theta)
        self._log_likelihood = -float(result.fun) * float(stats.total)
        self.n_groups = int(stats.n_groups)
        return self

    def log_likelihood_of(self, summary: pd.DataFrame, *, weights: str | None = None) -> float:
        """Total log-likelihood of ``summary`` under the current parameters."""
        stats = self._statistics(summary, weights, True)
        value, _ = self._negative_log_likelihood(np.log(self._fitted()), stats)
        return -value * float(stats.total)


@dataclass(frozen=True)
class _RecencyFrequencyStatistics:
    """Grouped ``(x, t_x, T)`` with the level-wise weight sums the BG/NBD likelihood uses."""

    groups: _Groups
    total: float
    n_groups: int
    x_weight: FloatArray  # weight per level of x
    period_weight: FloatArray  # weight per level of T
    period_x_weight: FloatArray  # sum of weight * x per level of T
    # the groups of repeat buyers (x > 0): their level codes, x and weight
    repeat_x_code: IntArray
    repeat_tx_code: IntArray
    repeat_t_code: IntArray
    repeat_x: FloatArray
    repeat_weight: FloatArray

    @classmethod
    def build(cls, summary: pd.DataFrame, weights: str | None, group: bool) -> Self:
        columns, weight = _recency_frequency(summary, weights)
        groups = _group_rows(columns, weight, group=group)
        x_code, tx_code, t_code = groups.codes
        x = groups.column(0)
        repeat = x > 0
        return cls(
            groups=groups,
            total=float(groups.weight.sum()),
            n_groups=groups.size,
            x_weight=_weight_sums(x_code, groups.weight, len(groups.levels[0])),
            period_weight=_weight_sums(t_code, groups.weight, len(groups.levels[2])),
            period_x_weight=_weight_sums(t_code, groups.weight * x, len(groups.levels[2])),
            repeat_x_code=x_code[repeat],
            repeat_tx_code=tx_code[repeat],
            repeat_t_code=t_code[repeat],
            repeat_x=x[repeat],
            repeat_weight=groups.weight[repeat],
        )


class BetaGeo(_MaximumLikelihoodModel):
    r"""The BG/NBD model of repeat purchasing (Fader, Hardie & Lee 2005 [1]_).

    While alive, a customer buys as a Poisson process with rate :math:`\lambda`; after each
    repeat purchase they drop out with probability :math:`p`. Across customers
    :math:`\lambda \sim \mathrm{Gamma}(r, \alpha)` and :math:`p \sim \mathrm{Beta}(a, b)`.
    The likelihood of one customer with statistics :math:`(x, t_x, T)` is [1]_

    .. math::

        L(r, \alpha, a, b \mid x, t_x, T) = \frac{B(a, b + x)}{B(a, b)}
            \frac{\Gamma(r + x)\,\alpha^r}{\Gamma(r)\,(\alpha + T)^{r + x}}
          + \delta_{x > 0}\,\frac{B(a + 1, b + x - 1)}{B(a, b)}
            \frac{\Gamma(r + x)\,\alpha^r}{\Gamma(r)\,(\alpha + t_x)^{r + x}},

    evaluated in log space as :math:`A_1 + A_2 + \log(e^{A_3} + \delta_{x>0} e^{A_4})` with
    :math:`A_1 = \ln\Gamma(r+x) - \ln\Gamma(r) + r\ln\alpha`,
    :math:`A_2 = \ln\Gamma(a+b) + \ln\Gamma(b+x) - \ln\Gamma(b) - \ln\Gamma(a+b+x)`,
    :math:`A_3 = -(r+x)\ln(\alpha+T)` and
    :math:`A_4 = \ln a - \ln(b+x-1) - (r+x)\ln(\alpha+t_x)`.
    :math:`A_1 + A_2` depends on :math:`x` alone and :math:`A_3` is linear in :math:`x` for a
    given :math:`T`, so the fit evaluates them once per distinct :math:`x` and :math:`T`; only
    the softplus :math:`\log(1 + e^{A_4 - A_3})` is evaluated per distinct triple. The analytic
    gradient in :math:`\theta = \log(r, \alpha, a, b)` follows from
    :math:`\partial A_1/\partial r = \psi(r+x) - \psi(r) + \ln\alpha`,
    :math:`\partial A_1/\partial\alpha = r/\alpha`,
    :math:`\partial A_2/\partial a = \psi(a+b) - \psi(a+b+x)`,
    :math:`\partial A_2/\partial b = \psi(a+b) + \psi(b+x) - \psi(b) - \psi(a+b+x)`,
    :math:`\partial A_3/\partial r = -\ln(\alpha+T)`,
    :math:`\partial A_3/\partial\alpha = -(r+x)/(\alpha+T)`, and likewise for :math:`A_4` with
    :math:`\partial A_4/\partial a = 1/a`, :math:`\partial A_4/\partial b = -1/(b+x-1)`; the
    last two terms enter weighted by their softmax shares.

    Attributes
    ----------
    params : dict
        ``r``, ``alpha``, ``a``, ``b``.
    log_likelihood : float
        Total log-likelihood of the fit.
    """

    param_names = ("r", "alpha", "a", "b")
    _analytic_gradient = True

    def _statistics(
        self, summary: pd.DataFrame, weights: str | None, group: bool
    ) -> _RecencyFrequencyStatistics:
        return _RecencyFrequencyStatistics.build(summary, weights, group)

    def _initial(self, stats: _RecencyFrequencyStatistics) -> FloatArray:
        # the scale alpha of the purchase rate is in time units; start it at the mean T
        groups = stats.groups
        mean_t = float(groups.weight @ groups.column(2)) / stats.total
        start: FloatArray = np.log(np.array([1.0, max(mean_t, 1e-3), 1.0, 1.0]))
        return start

    def _negative_log_likelihood(
        self, theta: FloatArray, stats: _RecencyFrequencyStatistics
    ) -> tuple[float, FloatArray]:
        r, alpha, a, b = np.exp(theta)
        groups = stats.groups
        x_level, tx_level, t_level = groups.levels

        # A1 + A2, per level of x
        ab_x = a + b + x_level
        ll = stats.x_weight @ (
            gammaln(r + x_level)
            - gammaln(r)
            + gammaln(a + b)
            + gammaln(b + x_level)
            - gammaln(b)
            - gammaln(ab_x)
        ) + stats.total * r * np.log(alpha)
        d_ab = digamma(a + b) - digamma(ab_x)
        g_r = stats.x_weight @ (digamma(r + x_level) - digamma(r)) + stats.total * np.log(alpha)
        g_alpha = stats.total * r / alpha
        g_a = stats.x_weight @ d_ab
        g_b = stats.x_weight @ (d_ab + digamma(b + x_level) - digamma(b))

        # A3, per level of T: sum over groups of w (r + x) log(alpha + T)
        log_t = np.log(alpha + t_level)
        rx_t = r * stats.period_weight + stats.period_x_weight
        ll -= rx_t @ log_t
        g_r -= stats.period_weight @ log_t
        g_alpha -= rx_t @ (1.0 / (alpha + t_level))

        # softplus(A4 - A3), per group of repeat buyers
        x_code, tx_code, t_code = stats.repeat_x_code, stats.repeat_tx_code, stats.repeat_t_code
        rx = r + stats.repeat_x
        log_ratio = np.log(alpha + tx_level)[tx_code] - log_t[t_code]
        b_x1 = b + np.maximum(x_level - 1.0, 0.0)  # b + x - 1 for x >= 1
        z = (np.log(a) - np.log(b_x1))[x_code] - rx * log_ratio
        # softplus and sigmoid from one exp: np.logaddexp and expit cost several times more
        e = np.exp(-np.abs(z))
        ll += _dot(stats.repeat_weight, np.maximum(z, 0.0) + np.log1p(e))
        share = stats.repeat_weight * np.where(z >= 0.0, 1.0, e) / (1.0 + e)
        inverse_gap = (1.0 / (alpha + tx_level))[tx_code] - (1.0 / (alpha + t_level))[t_code]
        g_r -= _dot(share, log_ratio)
        g_alpha -= _dot(share * rx, inverse_gap)
        g_a += share.sum() / a
        g_b -= _dot(share, (1.0 / b_x1)[x_code])

        gradient = -np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b]) / stats.total
        return -float(ll) / stats.total, gradient

    # -- predictions ---------------------------------------------------------------------------

    def p_alive(self, summary: pd.DataFrame) -> pd.Series:
        r"""Probability that each customer is still alive at ``T`` [1]_.

        .. math::

            P(\text{alive} \mid x, t_x, T) = \Big[1 + \delta_{x>0} \frac{a}{b + x - 1}
                \Big(\frac{\alpha + T}{\alpha + t_x}\Big)^{r + x}\Big]^{-1}
        """
        (x, t_x, big_t), _ = _recency_frequency(summary)
        values = self._p_alive(x, t_x, big_t)
        return pd.Series(values, index=summary.index, name="p_alive")

    def _p_alive(self, x: FloatArray, t_x: FloatArray, big_t: FloatArray) -> FloatArray:
        r, alpha, a, b = self._fitted()
        with np.errstate(divide="ignore", invalid="ignore"):
            log_odds = (
                np.log(a)
                - np.log(b + x - 1.0)
                + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
            )
        return np.where(x > 0, expit(-log_odds), 1.0)

    def expected_purchases(self, t: float, summary: pd.DataFrame) -> pd.Series:
        r"""Expected purchases of each customer in the next ``t`` time units [1]_.

        .. math::

            E[Y(t) \mid x, t_x, T] = \frac{a + b + x - 1}{a - 1}
                \Big[1 - \Big(\frac{\alpha + T}{\alpha + T + t}\Big)^{r + x}
                {}_2F_1\Big(r + x, b + x; a + b + x - 1; \frac{t}{\alpha + T + t}\Big)\Big]
                \, P(\text{alive} \mid x, t_x, T)

        The expression is undefined at exactly ``a == 1``.
        """
        values = self.expected_purchases_over([t], summary)[:, 0]
        return pd.Series(values, index=summary.index, name="expected_purchases")

    def expected_purchases_over(self, times: Sequence[float], summary: pd.DataFrame) -> FloatArray:
        """:meth:`expected_purchases` over each of ``times`` at once: one column per time.

        The bracket depends on ``x`` and ``T`` only, so it is worked out once per distinct
        pair (a million customers summarised in whole weeks have 14,039 pairs among 312,981
        distinct rows), and ``P(alive)`` once for all the times; a discounted CLV needs a
        dozen times or more. The values are those of :meth:`expected_purchases`, to the bit.
        """
        (x, t_x, big_t), _ = _recency_frequency(summary)
        r, alpha, a, b = self._fitted()
        pairs = _Pairs.of(x, big_t)
        px, pt = pairs.x, pairs.y
        head = (a + b + x - 1.0) / (a - 1.0)
        alive = self._p_alive(x, t_x, big_t)
        values = np.empty((len(x), len(times)))
        for column, t in enumerate(times):
            z = t / (alpha + pt + t)
            power = np.exp((r + px) * np.log1p(-z))
            tail = 1.0 - power * hyp2f1(r + px, b + px, a + b + px - 1.0, z)
            values[:, column] = head * tail[pairs.code] * alive
        return values

    def expected_purchases_new(self, t: float) -> float:
        r"""Expected purchases of a new customer in their first ``t`` time units [1]_.

        .. math::

            E[X(t)] = \frac{a + b - 1}{a - 1}\Big[1 - \Big(\frac{\alpha}{\alpha + t}\Big)^r
                {}_2F_1\Big(r, b; a + b - 1; \frac{t}{\alpha + t}\Big)\Big]
        """
        r, alpha, a, b = self._fitted()
        head = (a + b - 1.0) / (a - 1.0)
        return float(
            head * (1.0 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1.0, t / (alpha + t)))
        )


@dataclass(frozen=True)
class _Pairs:
    """The distinct ``(x, y)`` pairs among some rows, and for each row the index of its pair."""

    x: FloatArray
    y: FloatArray
    code: IntArray

    @classmethod
    def of(cls, x: FloatArray, y: FloatArray) -> Self:
        pairs = _group_rows([x, y], np.ones(len(x)), group=True)
        return cls(x=pairs.column(0), y=pairs.column(1), code=pairs.row_group)


@dataclass(frozen=True)
class _ParetoStatistics:
    """``(x, t_x, T)`` rows (customers or groups) as distinct ``x``, ``(x, t_x)``, ``(x, T)``."""

    x: FloatArray
    x_level: FloatArray
    x_code: IntArray
    t_x_pairs: _Pairs
    t_pairs: _Pairs
    weight: FloatArray
    total: float
    n_groups: int
    mean_t: float

    @classmethod
    def of(cls, x: FloatArray, t_x: FloatArray, big_t: FloatArray, weight: FloatArray) -> Self:
        x_code, x_level = pd.factorize(x)
        total = float(weight.sum())
        return cls(
            x=x,
            x_level=np.asarray(x_level, dtype=np.float64),
            x_code=np.asarray(x_code, dtype=np.intp),
            t_x_pairs=_Pairs.of(x, t_x),
            t_pairs=_Pairs.of(x, big_t),
            weight=weight,
            total=total,
            n_groups=len(weight),
            mean_t=float(weight @ big_t) / total,
        )


def _pareto_tail(params: FloatArray, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``log[(a+y)^-(r+x) (b+y)^-s]`` and that plus ``log H(y)`` (see :class:`ParetoNBD`)."""
    r, alpha, s, beta = params
    rx = r + x
    log_prefix = -rx * np.log(alpha + y) - s * np.log(beta + y)
    c = rx + s + 1.0
    if alpha >= beta:
        log_h = np.log(hyp2f1(1.0, rx, c, (alpha - beta) / (alpha + y)))
    else:  # 1 - z = (alpha + y) / (beta + y), taken exactly
        log_h = np.log(alpha + y) - np.log(beta + y)
        log_h += np.log(hyp2f1(1.0, s + 1.0, c, (beta - alpha) / (beta + y)))
    log_tail = log_prefix + log_h
    failed = ~np.isfinite(log_tail)
    if failed.any():  # hyp2f1 gives NaN for r + x in the hundreds and z near 1: integrate
        _, shape, q_kappa, z, gap, scale = _tail_coordinates(params, x[failed], y[failed])
        log_m = _tail_quadrature(shape, q_kappa, z, gap)[0]
        log_tail[failed] = np.log(shape) - shape * np.log(scale) + log_m
    return log_prefix, log_tail


def _tail_coordinates(
    params: FloatArray, x: FloatArray, y: FloatArray
) -> tuple[bool, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """``alpha >= beta``, ``c``, ``q_kappa``, ``z``, ``1 - z`` and ``kappa + y`` of
    :func:`_pareto_tail_slopes`."""
    r, alpha, s, beta = params
    alpha_larger = bool(alpha >= beta)
    kappa, lam = (alpha, beta) if alpha_larger else (beta, alpha)
    q_kappa = r + x if alpha_larger else np.full_like(x, s + 1.0)
    scale = kappa + y
    # 1 - z is formed from lambda + y, exact when z is near 1
    return alpha_larger, r + s + x, q_kappa, (kappa - lam) / scale, (lam + y) / scale, scale


def _pareto_tail_slopes(params: FloatArray, x: FloatArray, y: FloatArray) -> FloatArray:
    r"""Partial derivatives of :math:`\log I(y)` in ``(r, alpha, s, beta)``, one column per pair.

    :math:`I(y) = \int_y^\infty (\alpha+\tau)^{-(r+x)} (\beta+\tau)^{-(s+1)}\,d\tau`
    is the tail whose difference :math:`I(t_x) - I(T)` makes the dead term of
    :class:`ParetoNBD`. With :math:`\kappa = \max(\alpha, \beta)` and
    :math:`\lambda = \min(\alpha, \beta)`, :math:`q_\kappa` and :math:`q_\lambda` the exponents
    that belong to them (:math:`r + x` and :math:`s + 1`), Euler's variable
    :math:`w = (\kappa + y)/(\kappa + \tau)` gives

    .. math::

        I(y) = (\kappa + y)^{-c} M(c, q_\kappa, z), \quad
        M = \int_0^1 w^{c-1} (1 - zw)^{-q_\lambda}\,dw, \quad
        c = r + s + x, \quad z = \frac{\kappa - \lambda}{\kappa + y} \in [0, 1),

    with :math:`q_\lambda = c + 1 - q_\kappa`. The chain rule through :math:`c`,
    :math:`q_\kappa` (which moves with :math:`r` if :math:`\kappa = \alpha`, with :math:`s`
    otherwise) and :math:`z` (:math:`\partial z/\partial\kappa = (\lambda+y)/(\kappa+y)^2`,
    :math:`\partial z/\partial\lambda = -1/(\kappa+y)`) leaves the three partial derivatives
    of :math:`\log M`, which have no closed form (SciPy has no derivatives of
    :math:`{}_2F_1` in its parameters). They are computed two ways:

    * :math:`z \le 1/2`: from Euler's transformation
      :math:`M = c^{-1} (1-z)^{1-q_\lambda} \sum_n t_n`,
      :math:`t_n = z^n \prod_{k<n} (q_\kappa + k)/(c + 1 + k)`, a series of positive terms
      with ratio below :math:`z`, differentiated term by term:
      :math:`\partial_{q_\kappa} t_n = t_n \sum_{k<n} (q_\kappa+k)^{-1}`,
      :math:`\partial_c t_n = -t_n \sum_{k<n} (c+1+k)^{-1}`,
      :math:`\partial_z t_n = n t_n / z`; it is summed to
      :math:`z^n < 10^{-18}`, at most 61 terms.
    * :math:`z > 1/2`: as expectations under the density :math:`\propto` the integrand of
      :math:`M`, :math:`\partial_c \log M = E\ln w - E\ln(1-zw)`,
      :math:`\partial_{q_\kappa} \log M = E\ln(1-zw)`,
      :math:`\partial_z \log M = q_\lambda E[w/(1-zw)]`, by the double-exponential rule of
      Takahashi & Mori [6]_ over 193 nodes; :math:`1 - zw` is formed as
      :math:`(\lambda+y)/(\kappa+y) + z(1-w)`, exact as :math:`z \to 1`.

    Both agree with adaptive (QUADPACK) quadrature of the defining integrals to a relative
    1e-12 or better, except, for the second, as :math:`(\lambda+y)/(\kappa+y)` falls below
    1e-5 (a pole of the integrand nears the end of the interval: 3e-8 at 1e-6) and for
    :math:`c < 0.06` (the mass of :math:`w^{c-1}` reaches past the smallest node).
    """
    alpha_larger, c, q_kappa, z, gap, scale = _tail_coordinates(params, x, y)
    d_log_m = np.empty((3, len(x)))  # d log M / d (c, q_kappa, z)
    by_series = z <= 0.5
    if by_series.any():
        d_log_m[:, by_series] = _tail_series(c[by_series], q_kappa[by_series], z[by_series])
    if not by_series.all():
        far = ~by_series
        d_log_m[:, far] = _tail_quadrature(c[far], q_kappa[far], z[far], gap[far])[1:]
    d_c, d_q, d_z = d_log_m
    d_shape = d_c - np.log(scale)  # through c = r + s + x, which both r and s move
    d_kappa = -c / scale + d_z * gap / scale
    d_lambda = -d_z / scale
    if alpha_larger:
        return np.array([d_shape + d_q, d_kappa, d_shape, d_lambda])
    return np.array([d_shape, d_lambda, d_shape + d_q, d_kappa])


_SERIES_TOLERANCE = 1e-18


def _tail_series(c: FloatArray, q_kappa: FloatArray, z: FloatArray) -> FloatArray:
    """``d log M / d (c, q_kappa, z)`` by the series of :func:`_pareto_tail_slopes`, z <= 1/2."""
    z_max = float(z.max())
    terms = 2 if z_max <= 0.0 else 2 + int(np.ceil(np.log(_SERIES_TOLERANCE) / np.log(z_max)))
    # one row per term n = 1 .. terms - 1 (t_0 = 1 is added by hand), one column per pair
    k = np.arange(terms - 1, dtype=np.float64)[:, None]
    inverse_q = 1.0 / (q_kappa + k)
    inverse_c = 1.0 / (c + 1.0 + k)
    t = (q_kappa + k) * inverse_c * z
    for n in range(1, terms - 1):  # cumulative products and sums over the terms, row by row
        t[n] *= t[n - 1]
        inverse_q[n] += inverse_q[n - 1]
        inverse_c[n] += inverse_c[n - 1]
    total = 1.0 + t.sum(axis=0)
    d_q = np.einsum("ij,ij->j", t, inverse_q) / total
    d_c = -np.einsum("ij,ij->j", t, inverse_c) / total
    # d total / dz = sum_n n t_n / z; its limit at z = 0 is t_1 / z = q_kappa / (c + 1)
    safe_z = np.where(z > 0.0, z, 1.0)
    weighted = np.einsum("i,ij->j", k[:, 0] + 1.0, t)
    d_z = np.where(z > 0.0, weighted / safe_z, q_kappa / (c + 1.0)) / total
    log_one_minus_z = np.log1p(-z)
    return np.array(
        [
            d_c - log_one_minus_z - 1.0 / c,
            d_q + log_one_minus_z,
            d_z + (c - q_kappa) / (1.0 - z),
        ]
    )


# Nodes of the double-exponential (tanh-sinh) rule [6]_ on (0, 1): w = expit(pi sinh t) at
# t = k/16, |t| <= 6. With the weight w^(c-1) dw = w^c (1 - w) pi cosh(t) dt the integrand
# falls double-exponentially at both ends, so the trapezoidal sum converges geometrically even
# with the endpoint singularity of w^(c-1) for c < 1; log w and 1 - w come from expit and
# log_expit, exact where w or 1 - w is tiny.
_DE_STEP = 1.0 / 16.0
_DE_T = np.arange(-96, 97) * _DE_STEP
_DE_G = np.pi * np.sinh(_DE_T)
_DE_W = np.asarray(expit(_DE_G), dtype=np.float64)
_DE_1MW = np.asarray(expit(-_DE_G), dtype=np.float64)
_DE_LOG_W = np.asarray(log_expit(_DE_G), dtype=np.float64)
_DE_LOG_JACOBIAN = np.asarray(log_expit(-_DE_G) + np.log(np.cosh(_DE_T)), dtype=np.float64)
_DE_CHUNK = 2048  # pairs per block: bounds the (pairs x 193) temporaries to a few MB


def _tail_quadrature(
    c: FloatArray, q_kappa: FloatArray, z: FloatArray, gap: FloatArray
) -> FloatArray:
    """``log M`` and ``d log M / d (c, q_kappa, z)`` by the quadrature of
    :func:`_pareto_tail_slopes`."""
    q_lambda = c + 1.0 - q_kappa
    log_m = np.empty(len(c))
    moments = np.empty((3, len(c)))  # E ln w, E ln(1 - zw), E w / (1 - zw)
    for start in range(0, len(c), _DE_CHUNK):
        part = slice(start, start + _DE_CHUNK)
        one_minus_zw = gap[part, None] + z[part, None] * _DE_1MW
        log_one_minus_zw = np.log(one_minus_zw)
        log_f = (c[part, None] - 1.0) * _DE_LOG_W
        log_f += _DE_LOG_W + _DE_LOG_JACOBIAN - q_lambda[part, None] * log_one_minus_zw
        peak = log_f.max(axis=1, keepdims=True)
        weight = np.exp(log_f - peak)
        total = weight.sum(axis=1, keepdims=True)
        log_m[part] = (peak + np.log(total))[:, 0]
        weight /= total
        moments[0, part] = np.einsum("ij,j->i", weight, _DE_LOG_W)
        moments[1, part] = np.einsum("ij,ij->i", weight, log_one_minus_zw)
        moments[2, part] = np.einsum("ij,ij->i", weight, _DE_W / one_minus_zw)
    e_log_w, e_log_u, e_ratio = moments
    # M = h sum_k exp(log_f_k) pi, the factor pi of dw/dt left out of the log Jacobian
    log_m += np.log(np.pi * _DE_STEP)
    return np.array([log_m, e_log_w - e_log_u, e_log_u, q_lambda * e_ratio])


def _log_add(u: FloatArray, v: FloatArray) -> FloatArray:
    """``log(exp(u) + exp(v))`` for finite ``u``; several times faster than ``np.logaddexp``."""
    high = np.maximum(u, v)
    return np.asarray(high + np.log1p(np.exp(np.minimum(u, v) - high)), dtype=np.float64)


class ParetoNBD(_MaximumLikelihoodModel):
    r"""The Pareto/NBD model (Schmittlein, Morrison & Colombo 1987 [2]_), in the form of [3]_.

    While alive a customer buys as a Poisson process with rate :math:`\lambda`, and lives an
    exponential lifetime with rate :math:`\mu`; across customers
    :math:`\lambda \sim \mathrm{Gamma}(r, \alpha)` and :math:`\mu \sim \mathrm{Gamma}(s, \beta)`.
    The likelihood of :math:`(x, t_x, T)` is [3]_

    .. math::

        L = \frac{\Gamma(r + x)\,\alpha^r \beta^s}{\Gamma(r)}\Big[
              \frac{1}{(\alpha + T)^{r + x} (\beta + T)^s} + \frac{s}{r + s + x} A_0\Big],

    with, for :math:`\alpha \ge \beta`,

    .. math::

        A_0 = \frac{{}_2F_1(r+s+x, s+1; r+s+x+1; \frac{\alpha-\beta}{\alpha+t_x})}
                   {(\alpha + t_x)^{r+s+x}}
            - \frac{{}_2F_1(r+s+x, s+1; r+s+x+1; \frac{\alpha-\beta}{\alpha+T})}
                   {(\alpha + T)^{r+s+x}}

    and, for :math:`\alpha < \beta`, the same with :math:`\beta` in place of :math:`\alpha` in the
    denominators and arguments and :math:`r + x` in place of :math:`s + 1` as second parameter.

    Numerics: Euler's transformation
    :math:`{}_2F_1(a, b; a+1; z) = (1-z)^{1-b}\,{}_2F_1(1, a+1-b; a+1; z)` turns both branches
    into :math:`(\alpha+y)^{-(r+x)}(\beta+y)^{-s} H(y)` for :math:`y = t_x, T`, with
    :math:`H = {}_2F_1(1, r+x; r+s+x+1; z)` for :math:`\alpha \ge \beta` and
    :math:`H = (1 - z)\,{}_2F_1(1, s+1; r+s+x+1; z)` otherwise: series of positive terms that
    do not overflow the way the original form does for large :math:`x`. The difference in
    :math:`A_0` is taken in log space. :math:`H` depends on :math:`(x, t_x)` or :math:`(x, T)`
    alone, so it is evaluated once per distinct pair.

    Gradient: analytic, in one pass with the likelihood. :math:`\log C` and the alive term
    differentiate in closed form; the dead term is :math:`s\,(I(t_x) - I(T))` with
    :math:`I(y) = \int_y^\infty (\alpha+\tau)^{-(r+x)}(\beta+\tau)^{-(s+1)}\,d\tau`, whose
    derivatives in :math:`r` and :math:`s` are derivatives of :math:`{}_2F_1` in its
    parameters, which have no closed form and which SciPy does not provide. They are summed
    as a positive series where the argument of :math:`{}_2F_1` is at most 1/2 (nearly always:
    it is :math:`|\alpha-\beta|/(\max(\alpha,\beta)+y)`) and integrated by a
    double-exponential rule [6]_ otherwise; see :func:`_pareto_tail_slopes`. One evaluation
    with the gradient costs about three without, where a central-difference gradient costs
    nine. It agrees with fourth-order finite differences to a relative 1e-10.

    Limits: SciPy's ``hyp2f1`` returns NaN when :math:`r + x` is in the hundreds and
    :math:`z` is close to 1 (:math:`\beta + y \ll \alpha`); there :math:`H` is integrated
    by the same double-exponential rule instead (relative error about 1e-12).

    Attributes
    ----------
    params : dict
        ``r``, ``alpha``, ``s``, ``beta``.
    log_likelihood : float
        Total log-likelihood of the fit.
    """

    param_names = ("r", "alpha", "s", "beta")
    _analytic_gradient = True

    def _statistics(
        self, summary: pd.DataFrame, weights: str | None, group: bool
    ) -> _ParetoStatistics:
        columns, weight = _recency_frequency(summary, weights)
        groups = _group_rows(columns, weight, group=group)
        x, t_x, big_t = (groups.column(k) for k in range(3))
        return _ParetoStatistics.of(x, t_x, big_t, groups.weight)

    def _initial(self, stats: _ParetoStatistics) -> FloatArray:
        mean_t = max(stats.mean_t, 1e-3)
        start: FloatArray = np.log(np.array([1.0, mean_t, 1.0, mean_t]))
        return start

    @staticmethod
    def _log_terms(
        params: FloatArray, stats: _ParetoStatistics
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Per row: ``log C``, the log of the alive-at-T term, and ``log s I(t_x)`` and
        ``log s I(T)``, whose difference is the dead term ``s/(r+s+x) A_0`` (see class doc).

        ``log C`` depends on ``x`` alone and the hypergeometric terms on ``(x, t_x)`` or on
        ``(x, T)`` alone, so each is evaluated once per distinct value or pair.
        """
        r, alpha, s, beta = params
        x_level = stats.x_level
        log_c = (gammaln(r + x_level) - gammaln(r))[stats.x_code] + (
            r * np.log(alpha) + s * np.log(beta)
        )
        _, upper = _pareto_tail(params, stats.t_x_pairs.x, stats.t_x_pairs.y)
        alive, lower = _pareto_tail(params, stats.t_pairs.x, stats.t_pairs.y)
        log_share = (np.log(s) - np.log(r + s + x_level))[stats.x_code]
        return (
            log_c,
            alive[stats.t_pairs.code],
            log_share + upper[stats.t_x_pairs.code],
            log_share + lower[stats.t_pairs.code],
        )

    def _negative_log_likelihood(
        self, theta: FloatArray, stats: _ParetoStatistics
    ) -> tuple[float, FloatArray]:
        r"""Mean negative log-likelihood and its gradient in the log-parameters.

        With :math:`L = C\,(A + s I(t_x) - s I(T))`, :math:`A` the alive term and
        :math:`g(y) = \nabla \log I(y)` from :func:`_pareto_tail_slopes`,

        .. math::

            \nabla \log L = \nabla \log C + \frac{A\,\nabla\log A
                + s I(t_x)\,g(t_x) - s I(T)\,g(T) + (I(t_x) - I(T))\,e_s}{A + sI(t_x) - sI(T)},

        where :math:`e_s` is the unit vector of :math:`s`,
        :math:`\nabla \log C = (\psi(r+x) - \psi(r) + \ln\alpha, r/\alpha, \ln\beta,
        s/\beta)` and :math:`\nabla \log A = (-\ln(\alpha+T), -(r+x)/(\alpha+T),
        -\ln(\beta+T), -s/(\beta+T))`. Every coefficient is a ratio to :math:`L` taken in log
        space, and each vector depends on ``x``, ``(x, t_x)`` or ``(x, T)`` alone, so the sums
        over customers are weight sums per level or pair (``bincount``) times one vector each.
        """
        params = np.exp(theta)
        r, alpha, s, beta = params
        log_c, log_alive, log_upper, log_lower = self._log_terms(params, stats)
        log_dead = _log_sub(log_upper, log_lower)
        log_l = _log_add(log_alive, log_dead)
        w = stats.weight
        ll = _dot(w, log_c + log_l)

        x_level, upper, lower = stats.x_level, stats.t_x_pairs, stats.t_pairs
        d_c = np.array(
            [
                digamma(r + x_level) - digamma(r) + np.log(alpha),
                np.full_like(x_level, r / alpha),
                np.full_like(x_level, np.log(beta)),
                np.full_like(x_level, s / beta),
            ]
        )
        d_alive = np.array(
            [
                -np.log(alpha + lower.y),
                -(r + lower.x) / (alpha + lower.y),
                -np.log(beta + lower.y),
                np.full_like(lower.y, -s) / (beta + lower.y),
            ]
        )
        dead_share = np.exp(log_dead - log_l)
        gradient = (
            _apply(d_c, _weight_sums(stats.x_code, w, len(x_level)))
            + _apply(d_alive, _weight_sums(lower.code, w * (1.0 - dead_share), len(lower.x)))
            + _apply(
                _pareto_tail_slopes(params, upper.x, upper.y),
                _weight_sums(upper.code, w * np.exp(log_upper - log_l), len(upper.x)),
            )
            - _apply(
                _pareto_tail_slopes(params, lower.x, lower.y),
                _weight_sums(lower.code, w * np.exp(log_lower - log_l), len(lower.x)),
            )
        )
        gradient[2] += _dot(w, dead_share) / s
        return -float(ll) / stats.total, -gradient * params / stats.total

    # -- predictions ---------------------------------------------------------------------------

    def p_alive(self, summary: pd.DataFrame) -> pd.Series:
        r"""Probability that each customer is still alive at ``T`` [3]_.

        .. math::

            P(\text{alive} \mid x, t_x, T) =
                \frac{(\alpha + T)^{-(r+x)} (\beta + T)^{-s}}
                     {(\alpha + T)^{-(r+x)} (\beta + T)^{-s} + \frac{s}{r+s+x} A_0}
        """
        (x, t_x, big_t), _ = _recency_frequency(summary)
        return pd.Series(self._p_alive(x, t_x, big_t), index=summary.index, name="p_alive")

    def _p_alive(self, x: FloatArray, t_x: FloatArray, big_t: FloatArray) -> FloatArray:
        stats = _ParetoStatistics.of(x, t_x, big_t, np.ones(len(x)))
        _, log_alive, log_upper, log_lower = self._log_terms(self._fitted(), stats)
        log_dead = _log_sub(log_upper, log_lower)
        return np.asarray(np.exp(log_alive - _log_add(log_alive, log_dead)), dtype=np.float64)

    def expected_purchases(self, t: float, summary: pd.DataFrame) -> pd.Series:
        r"""Expected purchases of each customer in the next ``t`` time units [3]_.

        .. math::

            E[Y(t) \mid x, t_x, T] = \frac{(r + x)(\beta + T)}{(\alpha + T)(s - 1)}
                \Big[1 - \Big(\frac{\beta + T}{\beta + T + t}\Big)^{s - 1}\Big]
                \, P(\text{alive} \mid x, t_x, T),

        with the limit :math:`\frac{(r+x)(\beta+T)}{\alpha+T}\ln\frac{\beta+T+t}{\beta+T}` at
        :math:`s = 1`.
        """
        (x, t_x, big_t), _ = _recency_frequency(summary)
        r, alpha, s, beta = self._fitted()
        rate = (
            (r + x) * (beta + big_t) / (alpha + big_t) * _lifetime_fraction(s, t / (beta + big_t))
        )
        values = rate * self._p_alive(x, t_x, big_t)
        return pd.Series(values, index=summary.index, name="expected_purchases")

    def expected_purchases_new(self, t: float) -> float:
        r"""Expected purchases of a new customer in their first ``t`` time units [3]_.

        .. math::

            E[X(t)] = \frac{r\beta}{\alpha(s - 1)}
                \Big[1 - \Big(\frac{\beta}{\beta + t}\Big)^{s - 1}\Big]
        """
        r, alpha, s, beta = self._fitted()
        return float(r * beta / alpha * _lifetime_fraction(s, np.array([t / beta]))[0])


def _lifetime_fraction(s: float, u: FloatArray) -> FloatArray:
    """``[1 - (1 + u)^{-(s-1)}] / (s - 1)``, continuous through ``s == 1`` (where it is log1p)."""
    k = s - 1.0
    log_growth = np.log1p(u)
    if abs(k) < 1e-12:
        return np.asarray(log_growth, dtype=np.float64)
    return np.asarray(-np.expm1(-k * log_growth) / k, dtype=np.float64)


@dataclass(frozen=True)
class _SpendStatistics:
    """Grouped ``(x, monetary)``, with the sums the Gamma-Gamma likelihood needs that do not
    depend on the parameters."""

    groups: _Groups
    total: float
    n_groups: int
    x_levels: FloatArray  # the distinct x
    x_weight: FloatArray  # weight per distinct x
    x: FloatArray  # x per group
    weighted_x: FloatArray  # w x per group
    spend: FloatArray  # x z per group (the total spend)
    log_spend: FloatArray  # ln(x z) per group
    sum_log_mean: float  # sum of w ln z


class GammaGamma(_MaximumLikelihoodModel):
    r"""The Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005 [4]_; [5]_).

    A customer's transaction values are Gamma(:math:`p`, :math:`\nu`) with
    :math:`\nu \sim \mathrm{Gamma}(q, \gamma)` across customers, independent of the purchase
    process. The density of the mean :math:`\bar z` of :math:`x` transactions is

    .. math::

        f(\bar z \mid p, q, \gamma; x) =
            \frac{\Gamma(px + q)}{\Gamma(px)\,\Gamma(q)}
            \frac{\gamma^q\, \bar z^{px - 1} x^{px}}{(\gamma + x\bar z)^{px + q}},

    whose logarithm has the analytic gradient
    :math:`\partial_p = x[\psi(px+q) - \psi(px) + \ln x\bar z - \ln(\gamma + x\bar z)]`,
    :math:`\partial_q = \psi(px+q) - \psi(q) + \ln\gamma - \ln(\gamma + x\bar z)`,
    :math:`\partial_\gamma = q/\gamma - (px+q)/(\gamma + x\bar z)`.
    Fit it on customers with ``x >= 1`` and ``monetary`` the mean of their repeat purchases.

    Attributes
    ----------
    params : dict
        ``p``, ``q``, ``gamma``.
    log_likelihood : float
        Total log-likelihood of the fit.
    """

    param_names = ("p", "q", "gamma")
    _analytic_gradient = True

    def _statistics(
        self, summary: pd.DataFrame, weights: str | None, group: bool
    ) -> _SpendStatistics:
        (x, monetary), weight = _summary_arrays(summary, ("x", "monetary"), weights)
        if (x < 1).any() or (x != np.round(x)).any():
            raise InvalidData(
                "column 'x' must hold whole numbers >= 1: fit GammaGamma on repeat buyers only"
            )
        if (monetary <= 0).any():
            raise InvalidData("column 'monetary' must be positive")
        groups = _group_rows([x, monetary], weight, group=group)
        x, mean, w = groups.column(0), groups.column(1), groups.weight
        x_levels = groups.levels[0]
        x_weight = np.asarray(
            np.bincount(groups.codes[0], weights=w, minlength=len(x_levels)), dtype=np.float64
        )
        spend = x * mean
        return _SpendStatistics(
            groups, float(w.sum()), groups.size, x_levels, x_weight, x, w * x, spend,
            np.log(spend), _dot(w, np.log(mean)),
        )  # fmt: skip

    def _initial(self, stats: _SpendStatistics) -> FloatArray:
        groups = stats.groups
        mean_spend = float(groups.weight @ groups.column(1)) / stats.total
        start: FloatArray = np.log(np.array([1.0, 2.0, mean_spend]))
        return start

    def _negative_log_likelihood(
        self, theta: FloatArray, stats: _SpendStatistics
    ) -> tuple[float, FloatArray]:
        # The terms in x alone are evaluated once per distinct x (a few dozen values) and
        # ln z once per fit; only ln(gamma + x z) and its reciprocal are computed per row at
        # each step. Each row's terms are added up before the sum over rows, since sums of
        # large terms that nearly cancel would leave rounding noise in the value.
        p, q, gamma = np.exp(theta)
        total = stats.total
        groups, u, weight_u = stats.groups, stats.x_levels, stats.x_weight
        pu = p * u
        psi_puq = digamma(pu + q)
        base = gamma + stats.spend
        log_base, inverse = np.log(base), 1.0 / base
        w, wx = groups.weight, stats.weighted_x
        # ln(x z) - ln(gamma + x z), and ln(gamma) - ln(gamma + x z)
        by_spend = stats.log_spend - log_base
        by_gamma = np.log(gamma) - log_base
        per_x = gammaln(pu + q) - gammaln(pu)
        rows = per_x[groups.codes[0]] + p * stats.x * by_spend + q * by_gamma
        ll = _dot(w, rows) - total * gammaln(q) - stats.sum_log_mean
        g_p = _dot(weight_u * u, psi_puq - digamma(pu)) + _dot(wx, by_spend)
        g_q = _dot(weight_u, psi_puq) - total * digamma(q) + _dot(w, by_gamma)
        g_gamma = total * q / gamma - p * _dot(wx, inverse) - q * _dot(w, inverse)
        gradient = -np.array([g_p * p, g_q * q, g_gamma * gamma])
        return -float(ll) / total, gradient / total

    def expected_spend(self, summary: pd.DataFrame) -> pd.Series:
        r"""Expected value of each customer's future transactions [5]_.

        .. math::

            E[Z \mid p, q, \gamma; x, \bar z] = \frac{p(\gamma + x\bar z)}{px + q - 1}
                = \frac{q - 1}{px + q - 1}\frac{p\gamma}{q - 1} + \frac{px}{px + q - 1}\bar z,

        a weighted mean of the population mean :math:`p\gamma/(q-1)` (which needs
        :math:`q > 1`) and the customer's own mean. Customers with ``x == 0`` get the
        population mean.
        """
        (x, monetary), _ = _summary_arrays(summary, ("x", "monetary"))
        p, q, gamma = self._fitted()
        values = p * (gamma + x * monetary) / (p * x + q - 1.0)
        return pd.Series(values, index=summary.index, name="expected_spend")


# --------------------------------------------------------------------------------------------
# Value
# --------------------------------------------------------------------------------------------


class PurchaseModel(Protocol):
    """A model of repeat purchases: :class:`BetaGeo` or :class:`ParetoNBD`."""

    def expected_purchases(self, t: float, summary: pd.DataFrame) -> pd.Series: ...


def discounted_clv(
    purchases: PurchaseModel,
    spend: GammaGamma,
    summary: pd.DataFrame,
    *,
    horizon: int,
    unit_rate: float,
    margin: float = 1.0,
) -> pd.Series:
    r"""Discounted value of each customer's purchases over the next ``horizon`` time units.

    The horizon is cut into periods of one time unit. The purchases expected in period
    :math:`k` are valued at the expected spend per transaction and discounted from the end of
    the period (after Fader, Hardie & Lee 2005 [4]_, in discrete time):

    .. math::

        \mathrm{CLV} = m\, E[Z \mid x, \bar z] \sum_{k=1}^{H}
            \frac{E[Y(k) \mid x, t_x, T] - E[Y(k-1) \mid x, t_x, T]}{(1 + d)^k},

    with :math:`m` the margin, :math:`d` the discount rate per time unit and :math:`H` the
    horizon. With :math:`d = 0` the sum telescopes to :math:`m\,E[Z]\,E[Y(H)]`.

    Parameters
    ----------
    purchases
        A fitted purchase model.
    spend
        A fitted :class:`GammaGamma`.
    summary
        Customers, as from :func:`summarize` (with ``monetary``).
    horizon
        Number of time units (weeks for a weekly summary) to value.
    unit_rate
        Discount rate per time unit, e.g. ``0.0019`` a week for about 10 % a year.
    margin
        Share of revenue that is profit.

    Returns
    -------
    pandas.Series
        Named ``clv``, aligned to ``summary.index``.
    """
    if not isinstance(horizon, int | np.integer) or horizon < 1:
        raise InvalidData(f"horizon must be a whole number of time units >= 1, got {horizon!r}")
    if not np.isfinite(unit_rate) or unit_rate < 0:
        raise InvalidData(f"unit_rate must be a non-negative rate, got {unit_rate!r}")
    value = spend.expected_spend(summary).to_numpy(dtype=np.float64)
    discounted = np.zeros(len(summary))
    previous = np.zeros(len(summary))
    for k in range(1, int(horizon) + 1):  # over periods; each step is vectorised over customers
        current = purchases.expected_purchases(float(k), summary).to_numpy(dtype=np.float64)
        discounted += (current - previous) / (1.0 + unit_rate) ** k
        previous = current
    return pd.Series(margin * value * discounted, index=summary.index, name="clv")


# --------------------------------------------------------------------------------------------
# Profit
# --------------------------------------------------------------------------------------------

Rate = Annotated[Decimal, Field(ge=0, le=1)]
Money = Annotated[Decimal, Field(ge=0)]

_REVENUE_FORMS = (
    "'expected_revenue', 'expected_purchases' and 'expected_spend', or 'discounted_revenue'"
)


class ProfitSettings(BaseModel):
    """The money side of profit CLTV, as a marketer configures it; money is ``Decimal``.

    Margin rates and ``discount_rate`` are shares of revenue in ``[0, 1]``; costs are in the
    shop's currency. A category or an acquisition source that is not listed takes the default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_margin_rate: Rate = Decimal("0.30")
    """Gross margin on revenue of categories not listed below (and when none are known)."""
    margin_rate_by_category: dict[str, Rate] = Field(default_factory=dict)
    acquisition_cost: Money = Decimal(0)
    """Cost of winning a customer whose source is unknown or not listed."""
    acquisition_cost_by_source: dict[str, Money] = Field(default_factory=dict)
    contact_cost: Money = Decimal(0)
    """Cost of one message sent (email, SMS, push)."""
    contacts_per_month: Money = Decimal(0)
    """Messages sent to a customer in a month."""
    discount_rate: Rate = Decimal(0)
    """Share of revenue given back as discounts (coupons, personal offers)."""
    point_value: Money = Decimal(0)
    """What one loyalty point costs the shop when redeemed."""
    points_per_unit: Money = Decimal(0)
    """Loyalty points earned per unit of revenue (0.05 for 5 points per 100)."""
    annual_discount_rate: float = Field(default=0.10, ge=0, lt=10)
    """Rate at which future money is discounted, per year."""


def profit_clv(
    customers: pd.DataFrame,
    *,
    horizon_months: int,
    settings: ProfitSettings | None = None,
    category_revenue: pd.DataFrame | None = None,
) -> pd.DataFrame:
    r"""Profit CLTV: predicted margin less acquisition and servicing costs, per customer.

    This is the definition of the source articles: the gross margin the customer is
    expected to bring over the horizon (at a margin rate set per category) minus what
    winning them cost and what serving them costs (messages, discounts, loyalty points).

    Over :math:`H` months, with the monthly rate :math:`d = (1 + d_{year})^{1/12} - 1`
    and, as in :func:`discounted_clv`, money of month :math:`k` discounted from the month's
    end, the value of 1 a month is :math:`a = \sum_{k=1}^{H} (1 + d)^{-k}`. For a customer
    with expected revenue :math:`R` over the horizon, spread evenly over the months,

    .. math::

        \tilde R = R\,a / H, \qquad
        \text{margin} = m\,\tilde R, \qquad
        m = \sum_c \pi_c\, m_c,

        \text{servicing} = (\delta + p\,v)\,\tilde R + k\,n\,a + P v, \qquad
        \text{profit\_clv} = \text{margin} - \text{acquisition} - \text{servicing},

    with :math:`\pi_c` the customer's share of revenue in category :math:`c` and
    :math:`m_c` its margin rate, :math:`\delta` the discount rate, :math:`p` the points
    earned per unit of revenue and :math:`v` the value of a point (so :math:`p v \tilde R`
    is the liability of the points the future revenue earns), :math:`k` the cost of a
    contact and :math:`n` the contacts a month, :math:`P` the points the customer holds
    now (a liability today, not discounted) and *acquisition* the cost of the customer's
    acquisition source (incurred at the start, not discounted).

    Parameters
    ----------
    customers
        One row per customer (unique index). Revenue in exactly one of three forms:

        ========================================  ==========================================
        ``expected_revenue``                      :math:`R`, revenue over the horizon
        ``expected_purchases``, ``expected_spend``  :math:`R` is their product (BG/NBD or
                                                  Pareto/NBD times Gamma-Gamma)
        ``discounted_revenue``                    :math:`\tilde R` itself, e.g.
                                                  ``discounted_clv(..., margin=1.0)``
        ========================================  ==========================================

        Optional: ``margin_rate`` (a blended :math:`m` per customer, instead of
        ``category_revenue``), ``acquisition_source`` (looked up in
        ``acquisition_cost_by_source``; missing or unlisted takes ``acquisition_cost``)
        and ``points_balance`` (:math:`P`; 0 when absent).
    horizon_months
        :math:`H`, whole months, at least 1.
    settings
        Rates and costs; the defaults when not given.
    category_revenue
        Revenue (or shares) by category, indexed by customer id, one column per category;
        each row is scaled to shares :math:`\pi_c`. Customers missing from it, or with no
        revenue in it, take ``default_margin_rate``.

    Returns
    -------
    pandas.DataFrame
        ``customers`` with ``margin_rate``, ``discounted_revenue``, ``margin``,
        ``acquisition_cost``, ``servicing_cost`` and ``profit_clv`` (float64, in currency)
        set.

    Raises
    ------
    InvalidData
        No revenue form or more than one, a negative or missing value, a margin rate out of
        ``[0, 1]``, both ``margin_rate`` and ``category_revenue``, a repeated customer id, or
        a horizon that is not a whole number of months >= 1.
    """
    rules = settings if settings is not None else ProfitSettings()
    if not isinstance(horizon_months, int | np.integer) or horizon_months < 1:
        raise InvalidData(f"horizon_months must be a whole number >= 1, got {horizon_months!r}")
    if not isinstance(customers, pd.DataFrame):
        raise InvalidData(f"customers must be a pandas DataFrame, got {type(customers).__name__}")
    if not customers.index.is_unique:
        raise InvalidData("customers index must hold unique customer ids")

    monthly = (1.0 + rules.annual_discount_rate) ** (1.0 / 12.0) - 1.0
    annuity = float(np.sum((1.0 + monthly) ** -np.arange(1.0, horizon_months + 1.0)))
    revenue = _discounted_revenue(customers, annuity / horizon_months)
    rate = _margin_rates(customers, rules, category_revenue)
    acquisition = _acquisition_costs(customers, rules)
    points = (
        _nonnegative(customers, "points_balance")
        if "points_balance" in customers.columns
        else np.zeros(len(customers))
    )
    give_back = float(rules.discount_rate + rules.points_per_unit * rules.point_value)
    contacts = float(rules.contact_cost * rules.contacts_per_month) * annuity
    servicing = give_back * revenue + contacts + points * float(rules.point_value)
    margin = rate * revenue
    return customers.assign(
        margin_rate=rate,
        discounted_revenue=revenue,
        margin=margin,
        acquisition_cost=acquisition,
        servicing_cost=servicing,
        profit_clv=margin - acquisition - servicing,
    )


def _nonnegative(frame: pd.DataFrame, name: str) -> FloatArray:
    values = _column_values(frame, name)
    if (values < 0).any():
        raise InvalidData(f"column {name!r} must not be negative")
    return values


def _discounted_revenue(customers: pd.DataFrame, factor: float) -> FloatArray:
    """Discounted revenue from whichever one revenue form ``customers`` has."""
    columns = set(customers.columns)
    forms = [
        {"expected_revenue"} <= columns,
        bool({"expected_purchases", "expected_spend"} & columns),
        {"discounted_revenue"} <= columns,
    ]
    if sum(forms) != 1:
        raise InvalidData(f"customers need exactly one revenue form: {_REVENUE_FORMS}")
    if forms[0]:
        return _nonnegative(customers, "expected_revenue") * factor
    if forms[2]:
        return _nonnegative(customers, "discounted_revenue")
    missing = {"expected_purchases", "expected_spend"} - columns
    if missing:
        raise InvalidData(f"customers lack column {missing.pop()!r} (revenue is purchases x spend)")
    purchases = _nonnegative(customers, "expected_purchases")
    return purchases * _nonnegative(customers, "expected_spend") * factor


def _margin_rates(
    customers: pd.DataFrame, rules: ProfitSettings, category_revenue: pd.DataFrame | None
) -> FloatArray:
    """The blended margin rate :math:`m` of each customer."""
    default = float(rules.default_margin_rate)
    if "margin_rate" in customers.columns:
        if category_revenue is not None:
            raise InvalidData("give either a 'margin_rate' column or category_revenue, not both")
        rate = _nonnegative(customers, "margin_rate")
        if (rate > 1).any():
            raise InvalidData("column 'margin_rate' must lie between 0 and 1")
        return rate
    if category_revenue is None:
        return np.full(len(customers), default)
    if not isinstance(category_revenue, pd.DataFrame):
        raise InvalidData(
            f"category_revenue must be a pandas DataFrame, got {type(category_revenue).__name__}"
        )
    if not category_revenue.index.is_unique:
        raise InvalidData("category_revenue index must hold unique customer ids")
    amounts = np.column_stack(
        [_nonnegative(category_revenue, name) for name in category_revenue.columns]
        or [np.zeros(len(category_revenue))]
    )
    rates = np.array(
        [
            float(rules.margin_rate_by_category.get(str(name), rules.default_margin_rate))
            for name in category_revenue.columns
        ]
        or [default]
    )
    total = amounts.sum(axis=1)
    blended = np.where(total > 0, amounts @ rates / np.where(total > 0, total, 1.0), default)
    aligned = pd.Series(blended, index=category_revenue.index).reindex(customers.index)
    return np.asarray(aligned.fillna(default).to_numpy(dtype=np.float64), dtype=np.float64)


def _acquisition_costs(customers: pd.DataFrame, rules: ProfitSettings) -> FloatArray:
    """The acquisition cost of each customer's source; the default where none is known."""
    default = float(rules.acquisition_cost)
    if "acquisition_source" not in customers.columns:
        return np.full(len(customers), default)
    costs = {source: float(cost) for source, cost in rules.acquisition_cost_by_source.items()}
    mapped = customers["acquisition_source"].map(costs)
    return np.asarray(mapped.fillna(default).to_numpy(dtype=np.float64), dtype=np.float64)
