"""Lifecycle stage of each customer, measured against the customer's own buying rhythm.

A customer is a *prospect* (known, never bought), *new*, *active*, *at risk*, *lapsed* or
*won back*. The stage rests on one question, the one of the hiatus heuristic: has this customer
been silent for longer than a threshold? Wübben and von Wangenheim (2008) show that such a
managerial rule (a customer is inactive after, say, nine months without a purchase) tells active
from inactive customers about as well as the Pareto/NBD and BG/NBD models. Their hiatus is one
number of months for a whole base; here it is a multiple of each customer's *usual gap* between
purchase days, because one number cannot fit a base that mixes weekly shoppers and yearly
buyers: six weeks of silence mean a weekly shopper has gone and a yearly buyer is on schedule.
The buy-till-you-die models reach the same end through each customer's own purchase rate
(``patron.analytics.clv``); the usual gap is its model-free counterpart.

Like :mod:`patron.analytics.rfm`, everything is a lazy Ibis expression built from portable
operations (a ``lag`` window over purchase days, filtered medians, a cross join with a one-row
table, CASE), so it runs unchanged on DuckDB or Spark, with no Python loop over customers.

References
----------
Wübben, M. and von Wangenheim, F. (2008). Instant customer base analysis: managerial heuristics
often "get it right". *Journal of Marketing* 72(3), 82-93.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Self

import ibis
from pydantic import BaseModel, ConfigDict, Field, model_validator

from patron.analytics.rfm import as_timestamp, as_utc
from patron.analytics.schemas import require_columns

__all__ = ["STAGES", "LifecycleSettings", "lifecycle_stages"]

STAGES = ("prospect", "new", "active", "at_risk", "lapsed", "won_back")
"""Every stage :func:`lifecycle_stages` gives, from the first contact on."""

_DAY_SECONDS = 86_400


class LifecycleSettings(BaseModel):
    """Thresholds of the lifecycle stages, as multiples of each customer's usual gap.

    The usual gap of a customer is the median number of days between consecutive purchase
    days, floored at ``min_gap_days``. A customer with one purchase day has no gap of their
    own and is given ``fallback_gap_days`` or, when that is ``None`` (the default), the
    median of the usual gaps of the customers who have one, so a first-time buyer is judged
    by the rhythm of the base.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    at_risk_after: float = Field(default=1.5, gt=0)
    """At risk once the days since the last purchase exceed this many usual gaps."""
    lapsed_after: float = Field(default=3.0, gt=0)
    """Lapsed beyond this many usual gaps; also the silence a won-back customer broke."""
    new_until_purchase_days: int = Field(default=1, ge=1)
    """New while the customer has at most this many purchase days (and is not at risk)."""
    fallback_gap_days: float | None = Field(default=None, gt=0)
    """Usual gap for customers with one purchase day; ``None``: the base's median."""
    min_gap_days: float = Field(default=7.0, gt=0)
    """Floor of the usual gap, so two purchases a day apart do not make a week of silence
    look like a lapse."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.lapsed_after <= self.at_risk_after:
            raise ValueError(
                f"lapsed_after ({self.lapsed_after}) must exceed at_risk_after "
                f"({self.at_risk_after})"
            )
        return self


def lifecycle_stages(
    tx: Any,
    *,
    as_of: date | datetime,
    customers: Any = None,
    customer: str = "customer_id",
    ts: str = "ts",
    amount: str = "amount",
    settings: LifecycleSettings | None = None,
    days: Any = None,
) -> Any:
    """The lifecycle stage of each customer at ``as_of``.

    Transactions count when ``ts < as_of``. As in :func:`patron.analytics.rfm.rfm_table`,
    amounts are netted per customer and UTC day (returns are negative rows) and a *purchase
    day* is a day whose net is positive; day ``d`` is counted from the day of ``as_of``
    (day 0), so a purchase yesterday is one day ago.

    With the purchase days :math:`d_1 < \\dots < d_n` of a customer, their gaps
    :math:`g_i = d_i - d_{i-1}`, the floor :math:`f` (``min_gap_days``) and the fallback
    :math:`F` (``fallback_gap_days`` or the median usual gap of the customers with
    :math:`n \\ge 2`):

    .. math::

        u = \\max(f, \\operatorname{median}(g_2, \\dots, g_n)), \\qquad
        u' = \\max(f, \\operatorname{median}(g_2, \\dots, g_{n-1})), \\qquad
        s = 0 - d_n,

    :math:`u = \\max(f, F)` when :math:`n = 1` and :math:`u' = \\max(f, F)` when
    :math:`n \\le 2`. The first rule that holds gives the stage:

    ===========  ================================================================
    prospect     in ``customers`` with no purchase day before ``as_of``
    lapsed       :math:`s > \\text{lapsed\\_after} \\cdot u`
    at_risk      :math:`s > \\text{at\\_risk\\_after} \\cdot u`
    new          :math:`n \\le` ``new_until_purchase_days``
    won_back     :math:`g_n > \\text{lapsed\\_after} \\cdot u'`: the customer had lapsed
                 by the measure of their earlier rhythm before this last purchase
    active       otherwise
    ===========  ================================================================

    The median keeps one long pause (the one a won-back customer broke) from stretching the
    usual gap. A customer stays won back until their next purchase comes at their usual pace.

    Parameters
    ----------
    tx : ibis.Table
        Transactions, one row per order or order line.
    as_of : date or datetime
        The moment the stages describe; a date means its midnight, naive values are UTC. A
        past ``as_of`` gives the stages as they were then.
    customers : ibis.Table, optional
        Known customers, with a ``customer`` column; those with no purchase day before
        ``as_of`` are returned as prospects (every row is taken as known at ``as_of``).
    customer, ts, amount : str
        Names of the customer id, timestamp and numeric amount columns.
    settings : LifecycleSettings
        The thresholds; the defaults when not given.
    days : ibis.Table, optional
        :func:`patron.analytics.rfm.customer_days` of ``tx`` at the same ``as_of``, when
        the caller has it already; the transactions are then not aggregated again.

    Returns
    -------
    ibis.Table
        One row per customer with a purchase day before ``as_of`` (and per prospect):
        ``customer``, ``stage`` (one of :data:`STAGES`), ``usual_gap_days`` (float64, the
        :math:`u` above), ``days_since_last`` (int64) and ``purchase_days`` (int64). Prospects
        have 0 purchase days and null gap and recency.

    Raises
    ------
    InvalidData
        A missing or mistyped column of ``tx`` or ``customers``.
    """
    rules = settings if settings is not None else LifecycleSettings()
    require_columns(tx, {customer: "any", ts: "timestamp", amount: "numeric"}, what="transactions")
    if customers is not None:
        require_columns(customers, {customer: "any"}, what="customers")

    if days is not None:
        days = days.select(customer, _day="day", _net="net")
    else:
        stamp = tx[ts]
        midnight = as_timestamp(as_utc(as_of).date(), stamp)
        rows = tx.filter(stamp < as_timestamp(as_of, stamp))
        # the day arithmetic of rfm_table: engine-side epoch seconds, floor division
        rows = rows.mutate(
            _day=(rows[ts].epoch_seconds() - midnight.epoch_seconds()) // _DAY_SECONDS
        )
        days = rows.group_by([customer, "_day"]).aggregate(_net=rows[amount].sum())
    days = days.filter(days["_net"] > 0)
    by_day = ibis.window(group_by=days[customer], order_by=days["_day"])
    whole = ibis.window(group_by=days[customer])
    days = days.mutate(
        _gap=(days["_day"] - days["_day"].lag().over(by_day)).cast("float64"),
        _last=days["_day"].max().over(whole),
    )
    latest = days["_day"] == days["_last"]
    # the gaps before the latest one as a column of its own: Ibis compiles a filtered median
    # to a Spark percentile with a non-constant percentage, which Spark refuses
    days = days.mutate(_earlier=ibis.ifelse(latest, ibis.null("float64"), days["_gap"]))
    per = days.group_by(customer).aggregate(
        purchase_days=days.count().cast("int64"),
        days_since_last=(0 - days["_day"].max()).cast("int64"),
        _median_gap=days["_gap"].median(),
        _earlier_gap=days["_earlier"].median(),
        _latest_gap=days["_gap"].max(where=days["_day"] == days["_last"]),
    )

    floor = ibis.literal(rules.min_gap_days, type="float64")
    if rules.fallback_gap_days is not None:
        fallback = ibis.literal(rules.fallback_gap_days, type="float64")
        base = per
    else:
        repeat = per.filter(per["purchase_days"] >= 2)
        base = per.cross_join(
            repeat.aggregate(_base_gap=ibis.greatest(repeat["_median_gap"], floor).median())
        )
        fallback = base["_base_gap"].cast("float64")
    usual = ibis.greatest(base["_median_gap"].coalesce(fallback, floor), floor)
    earlier = ibis.greatest(base["_earlier_gap"].coalesce(fallback, floor), floor)
    since = base["days_since_last"]
    stage = ibis.cases(
        (since > rules.lapsed_after * usual, "lapsed"),
        (since > rules.at_risk_after * usual, "at_risk"),
        (base["purchase_days"] <= rules.new_until_purchase_days, "new"),
        (base["_latest_gap"] > rules.lapsed_after * earlier, "won_back"),
        else_="active",
    )
    buyers = base.select(
        customer,
        stage=stage,
        usual_gap_days=usual.cast("float64"),
        days_since_last=since,
        purchase_days="purchase_days",
    )
    if customers is None:
        return buyers
    known = customers.select(customer).distinct()
    prospects = known.anti_join(buyers, customer).select(
        customer,
        stage=ibis.literal("prospect"),
        usual_gap_days=ibis.null("float64"),
        days_since_last=ibis.null("int64"),
        purchase_days=ibis.literal(0, type="int64"),
    )
    return buyers.union(prospects)
