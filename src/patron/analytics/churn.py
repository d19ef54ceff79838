r"""Churn: the probability that a customer makes no purchase in the next ``horizon`` days.

A supervised classifier (scikit-learn's ``HistGradientBoostingClassifier``, a gradient-boosted
tree ensemble on binned features after Ke et al. 2017) learns from the past of the same base:

* **features** describe each customer at a cut-off date ``c`` from the transactions before
  ``c`` only (:func:`churn_features`), plus the BG/NBD probability that the customer is still
  alive, ``P(alive)`` (Fader, Hardie & Lee 2005), from a BG/NBD model fitted on the summary at
  ``c`` (``patron.analytics.clv``);
* **labels** say whether the customer bought in ``[c, c + h)`` (:func:`churn_labels`).

The split is by time. A model trained at ``c`` is scored at a later ``c' >= c + h``, whose
features use data up to ``c'`` and whose labels come from ``[c', c' + h)``: the training
labels end before the test features begin, so nothing about the test window leaks into the
model. :func:`churn_scores`, what ``patron analyze`` calls, trains at ``as_of - h`` (labels
end at ``as_of``) and scores every customer at ``as_of``. :func:`evaluate` trains at one
cut-off, tests at a later one and compares the model with ``P(alive)`` alone (churn risk
``1 - P(alive)``), the baseline of the buy-till-you-die literature.

Measured on the real data sets (``tests/analytics/test_churn.py``) with the default
:class:`ChurnSettings` (``h = 90`` days, BG/NBD in whole weeks, 50 trees of 7 leaves). Each
test window is the last 90 days of the data; the training window is the one before it::

    data set             train cut-off  test cut-off  n_train  n_test  churn train  churn test
    CDNOW master         1998-01-01     1998-04-02     23,502  23,502        0.838       0.860
    Online Retail (UCI)  2011-06-01     2011-09-10      2,715   3,367        0.509       0.430

    data set             churn risk     ROC AUC  PR AUC  Brier
    CDNOW master         model            0.836   0.958  0.089
                         1 - P(alive)     0.344   0.861  0.643
    Online Retail (UCI)  model            0.736   0.620  0.212
                         1 - P(alive)     0.356   0.409  0.430

PR AUC is the average precision; a constant forecast of the test churn rate scores Brier
0.121 on CDNOW and 0.245 on Online Retail. BG/NBD gives ``P(alive) = 1`` to every customer
without a repeat purchase (53% of the CDNOW test customers, 42% of Online Retail's), though
they are the likeliest to leave, so ranked by ``1 - P(alive)`` the base is worse than chance.
Among repeat buyers alone ``1 - P(alive)`` reaches ROC AUC 0.735 on CDNOW (the model 0.766).
On Online Retail the BG/NBD fit at 2011-06-01 puts the drop-out probability near zero
(``a`` = 8e-7, ``b`` = 1.4e4), so ``P(alive)`` is about 1 for everyone. The model is well
calibrated on CDNOW; on Online Retail it over-forecasts churn, having learned a churn rate of
0.509 in the summer when fewer customers leave before Christmas (see the calibration bins of
:class:`ChurnReport`). In a simulation where half the customers stop at known days, the
model tells those who had stopped from the rest with ROC AUC 0.945 (``1 - P(alive)`` 0.939).

Time: features are Ibis expressions (one scan of the transactions and two group-bys per
cut-off, portable operations only). The per-customer feature rows are pulled to pandas, since
the classifier scores row by row; BG/NBD is fitted on the distinct ``(x, t_x, T)`` rows with
their counts as weights; the classifier learns from at most ``max_train_rows`` customers, a
uniform sample drawn with ``random_state`` from the rows ordered by customer id, so its fit
costs the same on a base of ten million customers as on one of a hundred thousand.
:func:`churn_scores` aggregates the transactions by customer and day once for both of its
cut-offs. When the training cut-off falls at a midnight (any whole-day ``as_of``), its
features and labels are one more pass over those days; inside ``patron analyze`` the
features at ``as_of`` are read from the per-customer totals that RFM and the BG/NBD summary
share (:func:`patron.analytics.rfm.customer_totals`). On DuckDB, 2 cores, 1,000,000
customers with 9.9 million orders (``benchmarks/analytics_bench.py``), churn scoring took
3.4-3.7 s in all: the training pass and its pull 0.7-1.2 s, the BG/NBD and classifier fits
0.9-1.0 s, pulling the features at ``as_of`` 0.2 s and scoring with 50 trees 1.6 s. Before
the shared totals and the single training pass it took 5.1-6.3 s on the same machine.

References
----------
.. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers" the easy
   way: an alternative to the Pareto/NBD model. *Marketing Science* 24(2), 275-284.
.. [2] Ke, G. et al. (2017). LightGBM: a highly efficient gradient boosting decision tree.
   *Advances in Neural Information Processing Systems* 30, 3146-3154.
.. [3] Friedman, J. H. (2001). Greedy function approximation: a gradient boosting machine.
   *Annals of Statistics* 29(5), 1189-1232.
.. [4] Brier, G. W. (1950). Verification of forecasts expressed in terms of probability.
   *Monthly Weather Review* 78(1), 1-3.
.. [5] Niculescu-Mizil, A. and Caruana, R. (2005). Predicting good probabilities with
   supervised learning. *Proceedings of ICML*, 625-632.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, Self

import ibis
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.calibration import calibration_curve
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from threadpoolctl import threadpool_limits

from patron.analytics.clv import BetaGeo, ModelNotFitted
from patron.analytics.rfm import as_timestamp, as_utc, customer_days
from patron.analytics.schemas import InvalidData, require_columns

__all__ = [
    "CalibrationBin",
    "ChurnMetrics",
    "ChurnModel",
    "ChurnReport",
    "ChurnSettings",
    "churn_features",
    "churn_labels",
    "churn_scores",
    "evaluate",
]

Moment = date | datetime
FloatArray = NDArray[np.float64]

_UNIT_DAYS: dict[str, int] = {"D": 1, "W": 7}
_CALIBRATION_BINS = 10


class ChurnSettings(BaseModel):
    """How churn is defined and the model trained; the defaults suit a retail base.

    Attributes
    ----------
    horizon_days : int
        A customer has churned at a cut-off ``c`` when they make no purchase in
        ``[c, c + horizon_days)``.
    unit : {"W", "D"}
        Time unit of the BG/NBD summary that gives ``P(alive)``: whole weeks (``t_x`` and
        ``T`` rounded to the nearest week, fewer distinct rows to fit) or days.
    windows : tuple of int
        Lengths in days of the recent windows whose spend and purchase days are features.
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization
        Passed to ``HistGradientBoostingClassifier`` (log loss, no early stopping, so the
        fit is deterministic).
    max_train_rows : int
        The classifier learns from a uniform sample of at most this many customers.
    threads : int or None
        Threads of the OpenMP (classifier) and BLAS (BG/NBD likelihood) pools while fitting;
        None leaves every core to them. The result does not depend on it. On a machine
        whose cores are busy with other work, their spin-waiting made the classifier's fit
        ten times and the BG/NBD fit forty times slower than one thread, hence the default.
    scoring_threads : int or None
        Threads of the OpenMP pool while the classifier scores; None leaves every core to
        it. The result does not depend on it. Scoring makes one long parallel loop per
        tree, not the fit's many short ones: on two cores, 950,000 customers took 0.59 s
        with both against 1.08 s with one, and 1.27 s against 1.05 s with the other core
        busy, hence this default.
    random_state : int
        Seed of the training sample and of the classifier.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon_days: int = Field(default=90, ge=1, le=3660)
    unit: Literal["D", "W"] = "W"
    windows: tuple[int, ...] = (30, 90, 365)
    max_iter: int = Field(default=50, ge=1)
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    max_leaf_nodes: int = Field(default=7, ge=2)
    min_samples_leaf: int = Field(default=100, ge=1)
    l2_regularization: float = Field(default=1.0, ge=0)
    max_train_rows: int = Field(default=100_000, ge=100)
    threads: int | None = Field(default=1, ge=1)
    scoring_threads: int | None = Field(default=None, ge=1)
    random_state: int = 0

    @field_validator("windows")
    @classmethod
    def _distinct_positive(cls, windows: tuple[int, ...]) -> tuple[int, ...]:
        if any(days < 1 for days in windows) or len(set(windows)) != len(windows):
            raise ValueError(f"windows must be distinct positive numbers of days, not {windows}")
        return windows

    def classifier(self) -> HistGradientBoostingClassifier:
        """The configured, unfitted classifier (log loss, no early stopping: deterministic)."""
        return HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=False,
            random_state=self.random_state,
        )


# --------------------------------------------------------------------------------------------
# Features and labels (Ibis)
# --------------------------------------------------------------------------------------------


def _between(tx: Any, start: Moment | None, end: Moment, *, ts: str) -> Any:
    """The rows of ``tx`` in ``[start, end)``, from the first when ``start`` is None."""
    stamp = tx[ts]
    keep = stamp < as_timestamp(end, stamp)
    if start is not None:
        keep &= stamp >= as_timestamp(start, stamp)
    return tx.filter(keep)


def _daily(rows: Any, *, as_of: Moment, customer: str, ts: str, amount: str) -> Any:
    """Customer days of ``rows`` (all before ``as_of``): ``_day`` (from the day of
    ``as_of``), ``_net`` amount, ``_gross`` (positive rows) and ``_returned`` (negative rows,
    negated)."""
    # customer_days sums money exactly, so every engine (and summing order) gives the same
    # features and the classifier the same splits; its one wide type keeps unions aligned
    days = customer_days(rows, as_of=as_of, customer=customer, ts=ts, amount=amount)
    return _renamed(days, customer=customer)


def _renamed(days: Any, *, customer: str) -> Any:
    """The columns of :func:`patron.analytics.rfm.customer_days` that the features use."""
    return days.select(customer, _day="day", _net="net", _gross="gross", _returned="returned")


def _per_customer(days: Any, *, customer: str, windows: tuple[int, ...]) -> Any:
    """The features of :func:`churn_features` from the customer days before a cut-off."""
    per = days.group_by(customer).aggregate(**_aggregates(days, windows=windows))
    per = per.filter(per["_count"] > 0)
    return per.select(customer, **_features(per, windows=windows))


def _aggregates(days: Any, *, windows: tuple[int, ...], shift: int = 0) -> dict[str, Any]:
    """The per-customer sums behind the features.

    Days count from the cut-off; with ``shift`` > 0 the cut-off is ``shift`` days before the
    one the days count from, and only the days before it are summed, so that the days after
    it can be counted for the labels in the same pass.
    """
    day = days["_day"] + shift if shift else days["_day"]
    before = day < 0 if shift else None

    def only(condition: Any) -> Any:
        return condition if before is None else condition & before

    purchase = only(days["_net"] > 0)
    sums: dict[str, Any] = {
        "_first": day.min(where=purchase),
        "_last": day.max(where=purchase),
        "_count": days["_net"].count(where=purchase),
        "_net": days["_net"].sum(where=before),
        "_gross": days["_gross"].sum(where=before),
        "_returned": days["_returned"].sum(where=before),
    }
    for width in windows:
        inside = day >= -width
        sums[f"spend_{width}d"] = days["_net"].sum(where=only(inside))
        sums[f"purchase_days_{width}d"] = days["_net"].count(where=inside & purchase)
    return sums


def _features(per: Any, *, windows: tuple[int, ...]) -> dict[str, Any]:
    """The features of :func:`churn_features` from the sums of :func:`_aggregates` of the
    customers with a purchase day."""
    count = per["_count"].cast("float64")
    span = (per["_last"] - per["_first"]).cast("float64")
    return {
        "recency_days": (0 - per["_last"]).cast("float64"),
        "age_days": (0 - per["_first"]).cast("float64"),
        "purchase_days": count,
        "net_spend": per["_net"].cast("float64"),
        "mean_spend": per["_net"].cast("float64") / count,
        "mean_gap_days": ibis.ifelse(count > 1, span / (count - 1), ibis.null("float64")),
        "return_share": per["_returned"].cast("float64").fill_null(0.0)
        / per["_gross"].cast("float64"),
        **{name: per[name].fill_null(0).cast("float64") for name in _window_columns(windows)},
    }


def _window_columns(windows: tuple[int, ...]) -> list[str]:
    """The names of the recent-window features, in order."""
    return [f"{kind}_{width}d" for width in windows for kind in ("spend", "purchase_days")]


def churn_features(
    tx: Any,
    *,
    as_of: Moment,
    customer: str = "customer_id",
    ts: str = "ts",
    amount: str = "amount",
    windows: tuple[int, ...] = (30, 90, 365),
) -> Any:
    r"""What each customer did before ``as_of``, as numbers a classifier can learn from.

    Only rows with ``ts < as_of`` are read. As in ``patron.analytics.rfm``, a customer's
    *day* is a (customer, UTC day) pair with net amount :math:`n_d` (returns are negative
    rows), and a *purchase day* a day with :math:`n_d > 0`. Days are numbered from the day
    holding ``as_of`` (day 0, the day before is -1). With :math:`D` the purchase days,
    :math:`g_d` and :math:`r_d` the positive and the returned (negated negative) amounts of
    day :math:`d`:

    .. math::

        \text{recency\_days} = -\max D, \quad \text{age\_days} = -\min D, \quad
        \text{purchase\_days} = |D|, \quad \text{net\_spend} = \sum_d n_d,

        \text{mean\_spend} = \text{net\_spend} / |D|, \quad
        \text{mean\_gap\_days} = \frac{\max D - \min D}{|D| - 1}\ (\text{null if } |D| = 1),

        \text{return\_share} = \sum_d r_d \Big/ \sum_d g_d, \quad
        \text{spend\_}w\text{d} = \sum_{d \ge -w} n_d, \quad
        \text{purchase\_days\_}w\text{d} = |\{d \in D : d \ge -w\}|.

    With ``as_of`` at midnight the window ``d >= -w`` is exactly ``[as_of - w days, as_of)``.
    ``recency_days``, ``purchase_days``, ``age_days`` and ``net_spend`` equal the
    ``recency``, ``frequency``, ``T`` and ``monetary_total`` of ``rfm_table(unit="D")``.

    Parameters
    ----------
    tx : ibis.Table
        Transactions: one row per order or order line.
    as_of : date or datetime
        The cut-off, exclusive; a date means its midnight, naive values are UTC.
    customer, ts, amount : str
        Names of the customer id, timestamp and numeric amount columns.
    windows : tuple of int
        Lengths in days of the recent windows.

    Returns
    -------
    ibis.Table
        One row per customer with at least one purchase day before ``as_of``: ``customer``
        and the float64 features above, ``spend_{w}d`` and ``purchase_days_{w}d`` for each
        window in order.

    Raises
    ------
    InvalidData
        A column is missing or of the wrong type, or a window is not a positive number of days.
    """
    require_columns(tx, {customer: "any", ts: "timestamp", amount: "numeric"}, what="transactions")
    if any(days < 1 for days in windows) or len(set(windows)) != len(windows):
        raise InvalidData(f"windows must be distinct positive numbers of days, not {windows}")
    days = _daily(
        _between(tx, None, as_of, ts=ts), as_of=as_of, customer=customer, ts=ts, amount=amount
    )
    return _per_customer(days, customer=customer, windows=windows)


def _buyers(
    tx: Any, *, start: Moment | None, end: Moment, customer: str, ts: str, amount: str
) -> Any:
    """Customers with a purchase day (net amount > 0) in ``[start, end)``, from the first row
    when ``start`` is None."""
    days = _daily(
        _between(tx, start, end, ts=ts), as_of=end, customer=customer, ts=ts, amount=amount
    )
    return _purchasers(days, customer=customer)


def _purchasers(days: Any, *, customer: str) -> Any:
    """The distinct customers of the purchase days (net amount > 0) among ``days``."""
    bought = days.filter(days["_net"] > 0)
    return bought.select(_buyer=bought[customer]).distinct()


def _with_labels(population: Any, buyers: Any, *, customer: str) -> Any:
    """``population`` with ``churned``: the customer is not among ``buyers``."""
    marks = buyers.mutate(_bought=ibis.literal(True))
    joined = population.left_join(marks, population[customer] == marks["_buyer"])
    return joined.select(*population.columns, churned=joined["_bought"].isnull())


def churn_labels(
    tx: Any,
    *,
    as_of: Moment,
    horizon_days: int,
    customer: str = "customer_id",
    ts: str = "ts",
    amount: str = "amount",
) -> Any:
    """Whether each customer known at ``as_of`` made no purchase in the next ``horizon_days``.

    The customers are those of :func:`churn_features` (a purchase day before ``as_of``);
    ``churned`` is true when they have no purchase day (a UTC day whose net amount is
    positive) with a row in ``[as_of, as_of + horizon_days)``. A return in the window is no
    purchase.

    Parameters
    ----------
    tx : ibis.Table
        Transactions.
    as_of : date or datetime
        The cut-off; a date means its midnight, naive values are UTC.
    horizon_days : int
        Length of the label window in days.
    customer, ts, amount : str
        Column names.

    Returns
    -------
    ibis.Table
        ``customer`` and ``churned`` (boolean), one row per customer.

    Raises
    ------
    InvalidData
        A column is missing or of the wrong type, or the horizon is not positive.
    """
    require_columns(tx, {customer: "any", ts: "timestamp", amount: "numeric"}, what="transactions")
    if horizon_days < 1:
        raise InvalidData(f"horizon_days must be at least 1, not {horizon_days}")
    columns = {"customer": customer, "ts": ts, "amount": amount}
    known = _buyers(tx, start=None, end=as_of, **columns)
    known = known.select(**{customer: known["_buyer"]})
    end = as_utc(as_of) + timedelta(days=horizon_days)
    return _with_labels(known, _buyers(tx, start=as_of, end=end, **columns), customer=customer)


def _require_data_until(tx: Any, end: datetime, *, ts: str, what: str) -> None:
    """Refuse a label window the transactions do not reach: labels there would all say churned.

    The data must reach the last day of the window, ``[end - 1 day, end)``; a data set that
    stops at noon of its last day still labels a window that ends at the next midnight.
    """
    last = tx[ts].max().execute()
    if last is None or pd.isna(last):
        raise InvalidData("there are no transactions")
    reached = as_utc(pd.Timestamp(last).to_pydatetime())
    if reached < end - timedelta(days=1):
        raise InvalidData(
            f"the {what} label window ends {end:%Y-%m-%d %H:%M} UTC but the transactions end "
            f"{reached:%Y-%m-%d %H:%M} UTC: move the cut-off back or shorten horizon_days"
        )


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def _beta_geo_summary(frame: pd.DataFrame, unit: str) -> pd.DataFrame:
    """BG/NBD statistics from the features: ``x`` repeat purchase days, ``t_x`` and ``T``.

    ``T`` counts from the first purchase day to the day of the cut-off and ``t_x`` to the
    last purchase day; in weeks both are rounded to the nearest whole week (``k/7`` is never
    a half), which leaves few distinct rows to fit (see ``patron.analytics.clv``).
    """
    age = frame["age_days"].to_numpy(np.float64)
    t_x = age - frame["recency_days"].to_numpy(np.float64)
    big_t = age
    length = _UNIT_DAYS[unit]
    if length != 1:
        t_x, big_t = np.round(t_x / length), np.round(big_t / length)
    x = frame["purchase_days"].to_numpy(np.float64) - 1.0
    return pd.DataFrame({"x": x, "t_x": t_x, "T": big_t}, index=frame.index)


def _fit_beta_geo(summary: pd.DataFrame, *, at: Moment) -> BetaGeo:
    """BG/NBD fitted on the distinct ``(x, t_x, T)`` rows weighted by their customers."""
    if not (summary["x"] > 0).any():
        raise InvalidData(
            f"no customer made a repeat purchase before {as_utc(at):%Y-%m-%d}: "
            "P(alive) cannot be fitted"
        )
    groups = summary.groupby(["x", "t_x", "T"]).size().rename("customers").reset_index()
    return BetaGeo().fit(groups, weights="customers")


def _sample(rng: np.random.Generator, rows: int, size: int) -> NDArray[np.intp]:
    """Positions of a uniform sample of ``size`` of ``rows`` rows (all when fewer), in order."""
    if rows <= size:
        return np.arange(rows)
    return np.sort(rng.choice(rows, size=size, replace=False))


class ChurnModel:
    """Gradient-boosted trees on :func:`churn_features` and BG/NBD ``P(alive)``.

    ``fit`` builds the features at a cut-off ``c``, fits a BG/NBD model on the summary at
    ``c`` and adds each customer's ``P(alive)``, labels each customer from
    ``[c, c + horizon_days)`` and trains the classifier. ``predict`` builds the same features
    at ``as_of``, with ``P(alive)`` from the summary at ``as_of`` under the BG/NBD parameters
    fitted at ``c``, so the classifier sees the same function of ``(x, t_x, T)`` it was
    trained on, and returns the probability of churn in the next ``horizon_days``.

    Parameters
    ----------
    settings : ChurnSettings
        Horizon, windows and classifier settings.
    customer, ts, amount : str
        Column names of the transactions given to ``fit`` and ``predict``.

    Attributes
    ----------
    cutoff : datetime
        The training cut-off (UTC).
    n_train : int
        Customers at the cut-off; the classifier saw at most ``max_train_rows`` of them.
    churn_rate_train : float
        Share of them who churned in the training window.
    feature_names : tuple of str
        Columns the classifier uses, in order.
    beta_geo : BetaGeo
        The BG/NBD model fitted at the cut-off.
    """

    def __init__(
        self,
        settings: ChurnSettings | None = None,
        *,
        customer: str = "customer_id",
        ts: str = "ts",
        amount: str = "amount",
    ) -> None:
        self.settings = settings if settings is not None else ChurnSettings()
        self.customer, self.ts, self.amount = customer, ts, amount
        self._classifier: HistGradientBoostingClassifier | None = None
        self.beta_geo = BetaGeo()
        self.cutoff: datetime | None = None
        self.n_train = 0
        self.churn_rate_train = float("nan")
        self.feature_names: tuple[str, ...] = ()

    def _columns(self) -> dict[str, str]:
        return {"customer": self.customer, "ts": self.ts, "amount": self.amount}

    def _pull(self, table: Any, *, at: Moment) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Feature rows ordered by customer, and their BG/NBD summary."""
        # a fixed row order makes the training sample and the fit reproducible; Arrow's
        # own conversion to pandas is several times faster than Ibis's on a million rows
        frame = table.order_by(self.customer).to_pyarrow().to_pandas()
        if frame.empty:
            raise InvalidData(f"no customer has a purchase before {as_utc(at):%Y-%m-%d %H:%M} UTC")
        return frame, _beta_geo_summary(frame, self.settings.unit)

    def _matrix(self, frame: pd.DataFrame) -> FloatArray:
        return np.asarray(frame[list(self.feature_names)].to_numpy(np.float64, na_value=np.nan))

    def fit(self, tx: Any, *, cutoff: Moment) -> Self:
        """Train on the features at ``cutoff`` and the labels of ``[cutoff, cutoff + h)``.

        BG/NBD is fitted on every customer (grouped), the classifier on a uniform sample of
        at most ``max_train_rows`` of them.

        Raises
        ------
        InvalidData
            A column is missing, the transactions end before the label window does, no
            customer is known at ``cutoff``, none made a repeat purchase, or all of them
            churned (or none did).
        """
        columns = self._columns()
        require_columns(
            tx,
            {self.customer: "any", self.ts: "timestamp", self.amount: "numeric"},
            what="transactions",
        )
        end = as_utc(cutoff) + timedelta(days=self.settings.horizon_days)
        _require_data_until(tx, end, ts=self.ts, what="training")
        features = churn_features(tx, as_of=cutoff, windows=self.settings.windows, **columns)
        buyers = _buyers(tx, start=cutoff, end=end, **columns)
        table = _with_labels(features, buyers, customer=self.customer)
        return self._train(*self._pull(table, at=cutoff), cutoff=cutoff)

    def _train(self, frame: pd.DataFrame, summary: pd.DataFrame, *, cutoff: Moment) -> Self:
        settings = self.settings
        churned = frame.pop("churned").to_numpy(bool)
        if churned.all() or not churned.any():
            state = "churned" if churned.all() else "bought again"
            raise InvalidData(
                f"every customer known at {as_utc(cutoff):%Y-%m-%d} {state} in the next "
                f"{settings.horizon_days} days: there is nothing to learn"
            )
        with threadpool_limits(limits=settings.threads):
            self.beta_geo = _fit_beta_geo(summary, at=cutoff)
        frame["p_alive"] = self.beta_geo.p_alive(summary).to_numpy(np.float64)
        self.feature_names = tuple(name for name in frame.columns if name != self.customer)
        rng = np.random.default_rng(settings.random_state)
        rows = _sample(rng, len(frame), settings.max_train_rows)
        classifier = settings.classifier()
        with threadpool_limits(limits=settings.threads):
            classifier.fit(self._matrix(frame)[rows], churned[rows])
        self._classifier = classifier
        self.cutoff = as_utc(cutoff)
        self.n_train = len(frame)
        self.churn_rate_train = float(churned.mean())
        return self

    def predict(self, tx: Any, *, as_of: Moment) -> pd.DataFrame:
        """Churn risk of every customer with a purchase before ``as_of``.

        Returns
        -------
        pandas.DataFrame
            ``customer``, ``p_alive`` (at ``as_of``, BG/NBD parameters of the training
            cut-off) and ``churn_risk``, the probability of no purchase in
            ``[as_of, as_of + horizon_days)``; ordered by customer.
        """
        self._fitted()
        features = churn_features(tx, as_of=as_of, windows=self.settings.windows, **self._columns())
        return self._score(*self._pull(features, at=as_of))

    def _fitted(self) -> HistGradientBoostingClassifier:
        if self._classifier is None:
            raise ModelNotFitted("ChurnModel is not fitted: call .fit(tx, cutoff=...) first")
        return self._classifier

    def _score(self, frame: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
        classifier = self._fitted()
        frame["p_alive"] = self.beta_geo.p_alive(summary).to_numpy(np.float64)
        churn_class = list(classifier.classes_).index(True)
        with threadpool_limits(limits=self.settings.scoring_threads):
            risk = classifier.predict_proba(self._matrix(frame))[:, churn_class]
        return pd.DataFrame(
            {
                self.customer: frame[self.customer].to_numpy(),
                "p_alive": frame["p_alive"].to_numpy(np.float64),
                "churn_risk": np.asarray(risk, dtype=np.float64),
            }
        )


def churn_scores(
    tx: Any,
    *,
    as_of: Moment,
    settings: ChurnSettings | None = None,
    customer: str = "customer_id",
    ts: str = "ts",
    amount: str = "amount",
    days: Any = None,
    totals: Any = None,
) -> pd.DataFrame:
    """Churn risk of every customer at ``as_of``, from a model trained on the base's past.

    The model is trained at ``c = as_of - horizon_days``, so its labels come from
    ``[c, as_of)`` and it never sees a row at or after ``as_of``; it then scores the
    features at ``as_of``. The result is that of
    ``ChurnModel(settings).fit(tx, cutoff=c).predict(tx, as_of=as_of)``, computed with one
    day-level aggregation of the transactions instead of two: the customer days before
    ``as_of`` (cached in the engine) give the features at ``as_of``; those before the day of
    ``c``, with the part of that day before ``c``, give the features at ``c``; the rest give
    the labels. ``days``, when given, is :func:`patron.analytics.rfm.customer_days` of
    ``tx`` at ``as_of``, already computed by the caller, who keeps it; ``totals``, its
    :func:`patron.analytics.rfm.customer_totals` with ``settings.windows``, gives the features
    at ``as_of`` without another pass over those days.

    Returns
    -------
    pandas.DataFrame
        ``customer``, ``p_alive`` and ``churn_risk``, ordered by customer.

    Raises
    ------
    InvalidData
        As :meth:`ChurnModel.fit`.
    """
    settings = settings if settings is not None else ChurnSettings()
    model = ChurnModel(settings, customer=customer, ts=ts, amount=amount)
    columns = model._columns()
    require_columns(tx, {customer: "any", ts: "timestamp", amount: "numeric"}, what="transactions")
    horizon = settings.horizon_days
    end = as_utc(as_of)
    cutoff = end - timedelta(days=horizon)
    _require_data_until(tx, end, ts=ts, what="training")
    # days count from the day of as_of, so the day of the cut-off is -horizon
    cutoff_day = as_utc(cutoff.date())
    with _customer_days(tx, end, days, columns) as daily:
        if cutoff == cutoff_day:
            train = _labelled_history(daily, customer=customer, settings=settings)
        else:
            # the day of the cut-off is split by it: its rows before the cut-off are history
            early = _between(tx, cutoff_day, cutoff, ts=ts)
            late = _between(tx, cutoff, cutoff_day + timedelta(days=1), ts=ts)
            history = daily.filter(daily["_day"] < -horizon).union(
                _daily(early, as_of=end, **columns)
            )
            window = daily.filter(daily["_day"] > -horizon).union(
                _daily(late, as_of=end, **columns)
            )
            train = _with_labels(
                _per_customer(
                    history.mutate(_day=history["_day"] + horizon),
                    customer=customer,
                    windows=settings.windows,
                ),
                _purchasers(window, customer=customer),
                customer=customer,
            )
        model._train(*model._pull(train, at=cutoff), cutoff=cutoff)
        if totals is None:
            current = _per_customer(daily, customer=customer, windows=settings.windows)
        else:
            current = _from_totals(totals, customer=customer, windows=settings.windows)
        return model._score(*model._pull(current, at=end))


def _labelled_history(daily: Any, *, customer: str, settings: ChurnSettings) -> Any:
    """The features at the training cut-off with their labels, in one pass over the
    customer days, when the cut-off falls at a midnight (as it does for every whole-day
    ``as_of``): the day of the cut-off then lies wholly in the label window and the history
    is the days before it, so the features are sums over those days and the label a count
    over the others."""
    horizon, windows = settings.horizon_days, settings.windows
    bought = (daily["_net"] > 0) & (daily["_day"] >= -horizon)
    per = daily.group_by(customer).aggregate(
        **_aggregates(daily, windows=windows, shift=horizon),
        _bought=daily["_net"].count(where=bought),
    )
    per = per.filter(per["_count"] > 0)
    return per.select(customer, **_features(per, windows=windows), churned=per["_bought"] == 0)


def _from_totals(totals: Any, *, customer: str, windows: tuple[int, ...]) -> Any:
    """The features at ``as_of`` from :func:`patron.analytics.rfm.customer_totals`."""
    recent = _window_columns(windows)
    require_columns(
        totals,
        dict.fromkeys(recent, "numeric"),
        what="customer totals (made with the churn windows)",
    )
    per = totals.filter(totals["purchase_days"] > 0).select(
        customer,
        *recent,
        _first="first_day",
        _last="last_day",
        _count="purchase_days",
        _net="net",
        _gross="gross",
        _returned="returned",
    )
    return per.select(customer, **_features(per, windows=windows))


@contextmanager
def _customer_days(tx: Any, end: datetime, given: Any, columns: dict[str, str]) -> Iterator[Any]:
    """The customer days before ``end``: the caller's, or computed and cached for the block."""
    if given is not None:
        yield _renamed(given, customer=columns["customer"])
        return
    with _daily(_between(tx, None, end, ts=columns["ts"]), as_of=end, **columns).cache() as days:
        yield days


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationBin:
    """Customers whose predicted risk fell in ``(low, high]`` (``[0, high]`` for the first bin)."""

    low: float
    high: float
    count: int
    mean_predicted: float
    observed_rate: float


@dataclass(frozen=True)
class ChurnMetrics:
    r"""How well a churn risk :math:`\hat p_i` ranks and predicts the labels :math:`y_i`.

    ``roc_auc`` is the area under the ROC curve, the probability that a random churner is
    ranked above a random stayer; ``pr_auc`` the average precision
    :math:`\sum_k (R_k - R_{k-1}) P_k` over the thresholds (the usual estimate of the area
    under the precision-recall curve, whose chance level is the churn rate); ``brier`` the
    mean squared error :math:`\frac1n\sum_i (\hat p_i - y_i)^2` [4]_. ``calibration`` holds
    the non-empty bins of ten equal-width bins of :math:`\hat p`: a calibrated risk has mean
    prediction close to the observed churn rate in each bin [5]_.
    """

    roc_auc: float
    pr_auc: float
    brier: float
    calibration: tuple[CalibrationBin, ...]

    @classmethod
    def of(cls, churned: NDArray[np.bool_], risk: FloatArray) -> ChurnMetrics:
        """The metrics of ``risk`` against ``churned``, computed with ``sklearn.metrics``."""
        observed, predicted = calibration_curve(
            churned, risk, n_bins=_CALIBRATION_BINS, strategy="uniform"
        )
        edges = np.linspace(0.0, 1.0, _CALIBRATION_BINS + 1)
        # the binning of calibration_curve, which reports no counts
        counts = np.bincount(np.searchsorted(edges[1:-1], risk), minlength=_CALIBRATION_BINS)
        used = np.flatnonzero(counts)
        calibration = tuple(
            CalibrationBin(
                low=k / _CALIBRATION_BINS,
                high=(k + 1) / _CALIBRATION_BINS,
                count=int(counts[k]),
                mean_predicted=float(p),
                observed_rate=float(o),
            )
            for k, p, o in zip(used, predicted, observed, strict=True)
        )
        return cls(
            roc_auc=float(roc_auc_score(churned, risk)),
            pr_auc=float(average_precision_score(churned, risk)),
            brier=float(brier_score_loss(churned, risk)),
            calibration=calibration,
        )


@dataclass(frozen=True)
class ChurnReport(ChurnMetrics):
    """The model's metrics on a later holdout window, with those of ``1 - P(alive)``.

    The inherited ``roc_auc``, ``pr_auc``, ``brier`` and ``calibration`` are the model's;
    ``baseline`` holds the same for the churn risk ``1 - P(alive)`` of BG/NBD alone.
    """

    train_cutoff: datetime
    test_cutoff: datetime
    horizon_days: int
    n_train: int
    n_test: int
    churn_rate_train: float
    churn_rate_test: float
    baseline: ChurnMetrics

    def table(self) -> pd.DataFrame:
        """ROC AUC, PR AUC and Brier score of the model and the baseline, one row each."""
        rows = {"model": self, "1 - P(alive)": self.baseline}
        return pd.DataFrame(
            {
                name: [getattr(metrics, name) for metrics in rows.values()]
                for name in ("roc_auc", "pr_auc", "brier")
            },
            index=pd.Index(list(rows), name="churn risk"),
        )


def evaluate(
    tx: Any,
    *,
    train_cutoff: Moment,
    test_cutoff: Moment,
    settings: ChurnSettings | None = None,
    customer: str = "customer_id",
    ts: str = "ts",
    amount: str = "amount",
) -> ChurnReport:
    """Train at ``train_cutoff``, test at ``test_cutoff``, against ``P(alive)`` alone.

    The test cut-off must come at or after the end of the training label window,
    ``train_cutoff + horizon_days``: otherwise the model would have learned from purchases
    that the test features also see, and its test labels would overlap its training labels.
    Both label windows must lie within the data.

    Returns
    -------
    ChurnReport
        The model's metrics over the customers known at ``test_cutoff`` and the labels of
        ``[test_cutoff, test_cutoff + horizon_days)``, with the baseline ``1 - P(alive)``:
        the model's own ``P(alive)`` feature at ``test_cutoff`` (BG/NBD fitted at
        ``train_cutoff``, as a buy-till-you-die model is used on a holdout period).

    Raises
    ------
    InvalidData
        The windows overlap or exceed the data, or a window holds only churners or only
        buyers.
    """
    settings = settings if settings is not None else ChurnSettings()
    train, test = as_utc(train_cutoff), as_utc(test_cutoff)
    train_end = train + timedelta(days=settings.horizon_days)
    if test < train_end:
        raise InvalidData(
            f"test_cutoff {test:%Y-%m-%d %H:%M} falls inside the training label window "
            f"[{train:%Y-%m-%d %H:%M}, {train_end:%Y-%m-%d %H:%M}) UTC: it must be at or after "
            f"{train_end:%Y-%m-%d %H:%M}"
        )
    test_end = test + timedelta(days=settings.horizon_days)
    _require_data_until(tx, test_end, ts=ts, what="test")
    model = ChurnModel(settings, customer=customer, ts=ts, amount=amount).fit(tx, cutoff=train)
    scored = model.predict(tx, as_of=test)
    labels = churn_labels(
        tx, as_of=test, horizon_days=settings.horizon_days, customer=customer, ts=ts, amount=amount
    ).to_pandas()
    scored = scored.merge(labels, on=customer, how="inner", validate="one_to_one")
    churned = scored["churned"].to_numpy(bool)
    if churned.all() or not churned.any():
        raise InvalidData(
            f"every customer known at {test:%Y-%m-%d} churned, or none did: no AUC to measure"
        )
    model_metrics = ChurnMetrics.of(churned, scored["churn_risk"].to_numpy(np.float64))
    baseline = ChurnMetrics.of(churned, 1.0 - scored["p_alive"].to_numpy(np.float64))
    return ChurnReport(
        roc_auc=model_metrics.roc_auc,
        pr_auc=model_metrics.pr_auc,
        brier=model_metrics.brier,
        calibration=model_metrics.calibration,
        train_cutoff=train,
        test_cutoff=test,
        horizon_days=settings.horizon_days,
        n_train=model.n_train,
        n_test=len(scored),
        churn_rate_train=model.churn_rate_train,
        churn_rate_test=float(churned.mean()),
        baseline=baseline,
    )
