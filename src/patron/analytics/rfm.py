"""RFM analysis as Ibis expressions: recency, frequency and monetary value per customer,
scored 1..bins from quantile cut points and mapped to named segments.

RFM goes back to direct marketing: the customers who bought most recently, most often and
for the most money are the likeliest to answer the next offer (Hughes, A. M. 1994,
*Strategic Database Marketing*, Probus, ch. on RFM; Hughes scores each of the three on a
1..5 scale and reads the 125 cells as segments). Fader, Hardie and Lee (2005, "RFM and
CLV: using iso-value curves for customer base analysis", *Journal of Marketing Research*
42(4), 415–430) show that the same three statistics, with recency measured from the first
purchase, are sufficient for the BG/NBD and Gamma-Gamma models of ``patron.analytics.clv``.

Every function takes and returns a lazy ``ibis.Table``; call ``.to_pandas()`` or
``.execute()`` on the result. Only portable Ibis operations are used (epoch seconds,
integer floor division, filtered aggregates, scalar quantiles, a cross join with a one-row
table, CASE expressions), so the same expressions run on DuckDB, PostgreSQL, Spark,
ClickHouse or BigQuery. Nothing loops over customers in Python.

Time is counted in whole UTC days (naive timestamps are read as UTC). Day ``d`` of a
transaction at time ``t`` is ``floor((t - midnight(as_of)) / 1 day)``, so the day holding
``as_of`` is 0 and the day before it is -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from functools import reduce
from operator import add
from typing import Any, Literal

import ibis
import ibis.expr.datatypes as dt

from patron.analytics.schemas import (
    DEFAULT_SEGMENTS,
    InvalidData,
    RFMSegmentMap,
    SegmentRule,
    require_columns,
)

__all__ = [
    "as_timestamp",
    "as_utc",
    "customer_days",
    "customer_totals",
    "cut_name",
    "quantile_cut_points",
    "rfm_scores",
    "rfm_table",
    "segment",
    "segment_summary",
]

_DAY_SECONDS = 86_400
_UNIT_DAYS: dict[str, int] = {"D": 1, "W": 7}


def as_timestamp(value: date | datetime, column: Any) -> Any:
    """An Ibis timestamp literal for ``value`` of the same type as ``column``.

    An aware ``value`` is converted to UTC; a naive one, or a ``date`` (taken as its
    midnight), is read as UTC. The literal carries the column's time zone so that the
    comparison means the same instant on every backend, rather than depending on a
    session time zone.
    """
    moment = as_utc(value)
    dtype = column.type()
    if dtype.timezone is None:
        moment = moment.replace(tzinfo=None)
    return ibis.literal(moment, type=dtype)


def as_utc(value: date | datetime) -> datetime:
    """``value`` as an aware UTC datetime; naive values and dates (their midnight) are UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return datetime.combine(value, time(), tzinfo=UTC)


def customer_days(
    tx: Any,
    *,
    as_of: date | datetime,
    customer: str = "customer_id",
    ts: str = "ts",
    amount: str = "amount",
) -> Any:
    r"""One row per customer and UTC day with a transaction before ``as_of``: the day-level
    table that RFM, lifecycle stages, the BG/NBD summary and the churn features all start
    from.

    Day ``d`` counts from the day holding ``as_of`` (day 0, see the module docstring). With
    :math:`a_j` the amounts of the customer's rows that day (returns negative):

    .. math::

        \text{net} = \sum_j a_j, \qquad \text{gross} = \sum_{a_j > 0} a_j, \qquad
        \text{returned} = \sum_{a_j < 0} -a_j,

    ``first_ts`` and ``last_ts`` the first and last timestamps of the positive rows. A
    *purchase day* is a day with ``net > 0``. Decimal amounts are summed exactly, and a
    day's sums kept in a decimal of the amounts' scale and width (at least 18 digits), so
    every engine and summing order gives the same totals; other amounts as float64.
    Aggregating the transactions is the costly part of each of those analyses, so
    :func:`patron.analytics.pipeline.analyze` computes this table once, caches it and hands
    it to each as ``days=``.

    Returns
    -------
    ibis.Table
        ``customer``, ``day`` (int64), ``net``, ``gross``, ``returned`` (null when the day
        has no such rows), ``first_ts``, ``last_ts``.
    """
    require_columns(tx, {customer: "any", ts: "timestamp", amount: "numeric"}, what="transactions")
    stamp = tx[ts]
    midnight = as_timestamp(as_utc(as_of).date(), stamp)
    rows = tx.filter(stamp < as_timestamp(as_of, stamp))
    rows = rows.mutate(_day=(rows[ts].epoch_seconds() - midnight.epoch_seconds()) // _DAY_SECONDS)
    value = rows[amount]
    kind = value.type()
    # A day's sums are kept in 64 bits: every analysis sums this table again by customer,
    # and 128-bit decimals, in and out of the engine's hash tables, cost a quarter more
    # there and a third more here. The engines sum them exactly into wide decimals, and
    # refuse (DuckDB, Spark's ANSI mode) rather than round a day beyond 18 digits.
    if kind.is_decimal():
        kept: dt.DataType = dt.Decimal(max(18, kind.precision or 18), kind.scale or 0)
    else:
        value, kept = value.cast("float64"), dt.float64
    positive = value > 0
    # a day of returns only has no first purchase: nullable, whatever the input column is
    stamp = rows[ts].cast(rows[ts].type().copy(nullable=True))
    sums = {
        "gross": value.sum(where=positive).cast(kept),
        "returned": (-value).sum(where=value < 0).cast(kept),
        "first_ts": stamp.min(where=positive),
        "last_ts": stamp.max(where=positive),
    }
    if not kind.is_decimal():
        # floats: the difference of two rounded sums may miss the sum by a bit, so sum it
        days = rows.group_by([customer, "_day"]).aggregate(net=value.sum().cast(kept), **sums)
        return days.rename(day="_day")
    # Exact decimals: the net is the gross less the returned, so it is not summed too. The
    # pass groups about as many days as there are orders and its cost grows with its sums:
    # one fewer saves 0.2-0.3 s of its 2.5 s at a million customers (README, Analytics).
    days = rows.group_by([customer, "_day"]).aggregate(**sums)
    net = days["gross"].fill_null(0) - days["returned"].fill_null(0)
    # The engines widen a difference of decimals by a digit (DuckDB past 18, to 128 bits)
    # where Ibis types it as its operands, so Ibis would leave out a cast to their type:
    # cast to the wider type first, which the engine already has, then back.
    wider = dt.Decimal(min(38, (kept.precision or 18) + 1), kept.scale)
    net = net.cast(wider).cast(kept)
    return days.select(
        customer, day="_day", net=net, gross="gross", returned="returned",
        first_ts="first_ts", last_ts="last_ts",
    )  # fmt: skip


def customer_totals(
    days: Any, *, customer: str = "customer_id", windows: Sequence[int] = ()
) -> Any:
    r"""One row per customer of :func:`customer_days`: the sums that RFM
    (:func:`rfm_table`), the BG/NBD summary (:func:`patron.analytics.pipeline.summary_table`)
    and the churn features at ``as_of`` (:func:`patron.analytics.churn.churn_features`) are
    all made from.

    With :math:`D` the customer's purchase days (net > 0), numbered from the day of
    ``as_of`` as in :func:`customer_days`:

    ==================  =====================================================================
    first_purchase      the earliest ``first_ts`` of the purchase days
    last_purchase       the latest ``last_ts`` of the purchase days
    first_day           :math:`\min D`
    last_day            :math:`\max D`
    purchase_days       :math:`|D|` (int64; 0 for a customer whose days all net to 0 or less)
    net                 the net of all days (returns included)
    purchase_net        the net of the purchase days
    first_net           the net of the first purchase day
    gross, returned     the positive and the returned (negated) amounts of all days
    spend_{w}d          the net of the days :math:`d \ge -w`, for each ``w`` of ``windows``
    purchase_days_{w}d  the purchase days :math:`d \ge -w` (int64)
    ==================  =====================================================================

    Each of those analyses would otherwise sum the customer days again: on DuckDB the cost
    of such a pass grows with the number of sums in it, so one pass with the union of the
    sums saves the shared ones (first and last day, counts, nets) two or three times.
    Money keeps the type of ``days`` (exact decimals).
    """
    purchase = days["net"] > 0
    sums: dict[str, Any] = {
        "first_purchase": days["first_ts"].min(where=purchase),
        "last_purchase": days["last_ts"].max(where=purchase),
        "first_day": days["day"].min(where=purchase),
        "last_day": days["day"].max(where=purchase),
        "purchase_days": days["net"].count(where=purchase).cast("int64"),
        "net": days["net"].sum(),
        "purchase_net": days["net"].sum(where=purchase),
        "first_net": days["net"].argmin(days["day"], where=purchase),
        "gross": days["gross"].sum(),
        "returned": days["returned"].sum(),
    }
    for width in windows:
        inside = days["day"] >= -width
        sums[f"spend_{width}d"] = days["net"].sum(where=inside)
        sums[f"purchase_days_{width}d"] = days["net"].count(where=inside & purchase).cast("int64")
    return days.group_by(customer).aggregate(**sums)


def rfm_table(
    tx: Any,
    *,
    as_of: date | datetime,
    customer: str = "customer_id",
    ts: str = "ts",
    amount: str = "amount",
    unit: Literal["D", "W"] = "D",
    days: Any = None,
    totals: Any = None,
) -> Any:
    """Recency, frequency and monetary value per customer from transactions before ``as_of``.

    Returns are negative ``amount`` rows. They are netted off by calendar day: a
    customer's *day* is a (customer, UTC day) pair, its net spend ``n_d`` the sum of the
    amounts that day, and a *purchase day* a day with ``n_d > 0``. A purchase returned
    the same day is therefore no purchase at all; a return on a later day lowers
    ``monetary_total`` but is not a purchase occasion.

    With ``D`` the set of purchase days of a customer, ``a`` the day holding ``as_of``
    (day 0) and ``L`` the length of ``unit`` in days (1 for ``"D"``, 7 for ``"W"``):

    .. math::

        \\text{recency} = \\lfloor (a - \\max D) / L \\rfloor, \\qquad
        T = \\lfloor (a - \\min D) / L \\rfloor,

        \\text{frequency} = |\\{\\lfloor d / L \\rfloor : d \\in D\\}|, \\qquad
        \\text{monetary\\_total} = \\sum_{\\text{all days}} n_d, \\qquad
        \\text{monetary\\_mean} = \\text{monetary\\_total} / \\text{frequency}.

    ``recency`` is the marketing recency of Hughes (1994): time *since* the last purchase,
    smaller is better. The BG/NBD recency of Fader, Hardie and Lee (2005) is the time
    from the first to the last purchase, ``T - recency`` here, and their frequency counts
    *repeat* purchases, ``frequency - 1`` here (``patron.analytics.clv.summarize``
    computes those).

    Parameters
    ----------
    tx : ibis.Table
        Transactions: one row per order or order line.
    as_of : date or datetime
        End of the observation window, exclusive: only rows with ``ts < as_of`` count.
        A date means its midnight; naive values and columns are read as UTC.
    customer, ts, amount : str
        Names of the customer id, timestamp and (numeric, possibly decimal) amount columns.
    unit : {"D", "W"}
        Unit of ``recency`` and ``T``, and the period ``frequency`` counts: days, or
        7-day weeks counted back from the day of ``as_of``.
    days : ibis.Table, optional
        :func:`customer_days` of ``tx`` at the same ``as_of``, when the caller has it
        already; the transactions are then not aggregated again.
    totals : ibis.Table, optional
        :func:`customer_totals` of those days, for ``unit="D"`` only: the table is then
        read from it, with no aggregation at all.

    Returns
    -------
    ibis.Table
        One row per customer with at least one purchase day before ``as_of``:
        ``customer`` (same name as in ``tx``), ``first_purchase`` and ``last_purchase``
        (timestamps of the first and last positive line on the first and last purchase
        day), ``recency``, ``frequency``, ``T`` (int64), ``monetary_total`` (the amount
        type) and ``monetary_mean`` (float64). Customers whose days all net to zero or
        less are left out: they have no purchase to measure recency from.

    Raises
    ------
    InvalidData
        A ``ValueError`` naming a missing or mistyped column, or an unknown ``unit``.

    References
    ----------
    Hughes, A. M. (1994). *Strategic Database Marketing*. Chicago: Probus.
    Fader, P. S., Hardie, B. G. S., & Lee, K. L. (2005). RFM and CLV: Using iso-value
    curves for customer base analysis. *Journal of Marketing Research*, 42(4), 415–430.
    """
    require_columns(tx, {customer: "any", ts: "timestamp", amount: "numeric"}, what="transactions")
    if unit not in _UNIT_DAYS:
        raise InvalidData(f"unit must be one of {sorted(_UNIT_DAYS)}, not {unit!r}")
    length = _UNIT_DAYS[unit]
    if totals is not None:
        if length != 1:
            raise InvalidData("customer totals count purchase days: they give RFM in days only")
        per = totals.select(
            customer,
            "first_purchase",
            "last_purchase",
            _first_day="first_day",
            _last_day="last_day",
            frequency="purchase_days",
            monetary_total="net",
        )
        return _rfm_columns(per.filter(per["frequency"] > 0), customer=customer, length=length)
    if days is not None:
        days = days.select(customer, _day="day", _net="net", _first="first_ts", _last="last_ts")
    else:
        stamp = tx[ts]
        midnight = as_timestamp(as_utc(as_of).date(), stamp)
        rows = tx.filter(stamp < as_timestamp(as_of, stamp))
        # Differences of epoch seconds computed in the engine, both sides alike, so any
        # backend offset cancels; floor division keeps days before as_of negative. (On
        # DuckDB Ibis casts a zoned timestamp to a naive one first, about 0.7 s per 10M
        # rows; a naive UTC column skips that.)
        rows = rows.mutate(
            _day=(rows[ts].epoch_seconds() - midnight.epoch_seconds()) // _DAY_SECONDS
        )
        positive = rows[amount] > 0
        days = rows.group_by([customer, "_day"]).aggregate(
            _net=rows[amount].sum(),
            _first=rows[ts].min(where=positive),
            _last=rows[ts].max(where=positive),
        )
    purchase = days["_net"] > 0
    if length == 1:
        frequency = days["_net"].count(where=purchase)
    else:
        frequency = (days["_day"] // length).nunique(where=purchase)
    per = days.group_by(customer).aggregate(
        first_purchase=days["_first"].min(where=purchase),
        last_purchase=days["_last"].max(where=purchase),
        _first_day=days["_day"].min(where=purchase),
        _last_day=days["_day"].max(where=purchase),
        frequency=frequency.cast("int64"),
        monetary_total=days["_net"].sum(),
    )
    return _rfm_columns(per.filter(per["frequency"] > 0), customer=customer, length=length)


def _rfm_columns(per: Any, *, customer: str, length: int) -> Any:
    """The columns of :func:`rfm_table` from the per-customer sums."""
    since_last = 0 - per["_last_day"]
    since_first = 0 - per["_first_day"]
    if length != 1:
        since_last, since_first = since_last // length, since_first // length
    return per.select(
        customer,
        "first_purchase",
        "last_purchase",
        recency=since_last.cast("int64"),
        frequency="frequency",
        T=since_first.cast("int64"),
        monetary_total="monetary_total",
        # float division on every engine: Spark divides decimals to a scale of 6 digits
        monetary_mean=per["monetary_total"].cast("float64") / per["frequency"],
    )


def quantile_cut_points(
    table: Any, columns: Sequence[str], *, bins: int, exact: bool = True
) -> Any:
    """The ``bins - 1`` inner quantile cut points of each column, in one aggregate row.

    Column ``c`` gets cut points ``q_c(k / bins)`` for ``k = 1..bins-1``, named
    ``_cut_{c}_{k}``. Exact quantiles interpolate linearly between order statistics
    (``percentile_cont``, the same rule as ``numpy.quantile``); ``exact=False`` uses the
    backend's approximate quantile (a t-digest on DuckDB, ``percentile_approx`` on Spark),
    worth it on bases that do not fit one machine. Each is one aggregate over the table,
    with no window sort: that is what makes scoring cheap (BENCHMARKS.md, RFM).
    """
    if bins < 2:
        raise InvalidData(f"bins must be at least 2, not {bins}")
    cuts: dict[str, Any] = {}
    for name in columns:
        column = table[name]
        for k in range(1, bins):
            share = k / bins
            cut = column.quantile(share) if exact else column.approx_quantile(share)
            cuts[cut_name(name, k)] = cut.cast("float64")
    return table.aggregate(**cuts)


def cut_name(column: str, k: int) -> str:
    """Name of the ``k``-th cut point of ``column`` in :func:`quantile_cut_points`."""
    return f"_cut_{column}_{k}"


def rfm_scores(
    rfm: Any, *, bins: int = 5, monetary: str = "monetary_total", exact: bool = True
) -> Any:
    """Score recency, frequency and monetary value ``1..bins`` from quantile cut points.

    The cut points ``c_1 ≤ … ≤ c_{bins-1}`` of each statistic are its quantiles at
    ``k / bins`` over all customers (:func:`quantile_cut_points`), computed once in one
    aggregate and joined to every row; each score is then a sum of comparisons:

    .. math::

        F = 1 + \\#\\{k : \\text{frequency} > c^F_k\\}, \\qquad
        M = 1 + \\#\\{k : \\text{monetary} > c^M_k\\}, \\qquad
        R = 1 + \\#\\{k : \\text{recency} < c^R_k\\}.

    Recency is reversed (fewer days since the last purchase scores higher), as in Hughes
    (1994). This gives the quintiles of NTILE(5) without three window sorts.

    Ties: customers with equal values always get equal scores (NTILE splits a run of ties
    across scores arbitrarily), and a value lying on a cut point takes the less
    favourable score. With heavy ties the scores are unbalanced: when more than 60% of
    customers bought once, ``c^F_1 = c^F_2 = c^F_3 = 1`` and every one-time buyer has
    F = 1 while two purchases already earn F = 4. That is the honest reading of the data.

    Parameters
    ----------
    rfm : ibis.Table
        The output of :func:`rfm_table` (needs ``recency``, ``frequency`` and ``monetary``).
    bins : int
        Number of scores, 5 in Hughes (1994); a segment map must use the same number.
    monetary : str
        The column M is scored on: ``monetary_total`` (default) or ``monetary_mean``.
    exact : bool
        Exact quantiles (default; cheap on one machine) or the backend's approximate ones.

    Returns
    -------
    ibis.Table
        ``rfm`` with ``r_score``, ``f_score`` and ``m_score`` (int64) added.
    """
    require_columns(
        rfm,
        {"recency": "numeric", "frequency": "numeric", monetary: "numeric"},
        what="RFM table",
    )
    cuts = quantile_cut_points(rfm, ["recency", "frequency", monetary], bins=bins, exact=exact)
    joined = rfm.cross_join(cuts)

    def score(column: str, *, higher_is_better: bool) -> Any:
        value = joined[column]
        steps = [
            ibis.ifelse(
                value > joined[cut_name(column, k)]
                if higher_is_better
                else value < joined[cut_name(column, k)],
                1,
                0,
            )
            for k in range(1, bins)
        ]
        return reduce(add, steps, ibis.literal(1)).cast("int64")

    return joined.select(
        *rfm.columns,
        r_score=score("recency", higher_is_better=False),
        f_score=score("frequency", higher_is_better=True),
        m_score=score(monetary, higher_is_better=True),
    )


def segment(
    rfm_scored: Any, segment_map: RFMSegmentMap = DEFAULT_SEGMENTS, *, name: str = "segment"
) -> Any:
    """Name each customer's segment from the scores, by the rules of ``segment_map``.

    The map is compiled to one CASE expression, rules in order, so the first rule whose
    ranges hold ``(r_score, f_score[, m_score])`` wins (Hughes 1994 reads the score cells
    as segments; the default map is the common eleven-segment R×F grid, see
    :data:`patron.analytics.schemas.DEFAULT_SEGMENTS`). A customer whose scores fall
    outside the map's ``1..bins`` grid (scored with another ``bins``) gets null.

    Parameters
    ----------
    rfm_scored : ibis.Table
        The output of :func:`rfm_scores`.
    segment_map : RFMSegmentMap
        Validated rules; ``DEFAULT_SEGMENTS`` unless given.
    name : str
        Name of the added string column.

    Returns
    -------
    ibis.Table
        ``rfm_scored`` with the segment name added.
    """
    needed: dict[str, Literal["numeric"]] = {"r_score": "numeric", "f_score": "numeric"}
    if segment_map.uses_monetary:
        needed["m_score"] = "numeric"
    require_columns(rfm_scored, needed, what="scored RFM table")
    branches = [(_matches(rfm_scored, rule), rule.name) for rule in segment_map.rules]
    return rfm_scored.mutate(**{name: ibis.cases(*branches, else_=ibis.null("string"))})


def _matches(table: Any, rule: SegmentRule) -> Any:
    condition = table["r_score"].between(rule.recency.low, rule.recency.high) & table[
        "f_score"
    ].between(rule.frequency.low, rule.frequency.high)
    if rule.monetary is not None:
        condition &= table["m_score"].between(rule.monetary.low, rule.monetary.high)
    return condition


def segment_summary(
    segmented: Any,
    *,
    segment_map: RFMSegmentMap = DEFAULT_SEGMENTS,
    segment_column: str = "segment",
    monetary: str = "monetary_total",
) -> Any:
    """Size and value of each segment.

    For segment ``s`` with customers ``C_s`` out of all customers ``C``:

    .. math::

        \\text{share\\_of\\_customers}_s = |C_s| / |C|, \\qquad
        \\text{share\\_of\\_monetary}_s = \\sum_{i \\in C_s} m_i / \\sum_{i \\in C} m_i.

    Parameters
    ----------
    segmented : ibis.Table
        The output of :func:`segment`.
    segment_map : RFMSegmentMap
        Used only to order the rows as the map lists its segments.
    segment_column, monetary : str
        The segment name column and the money column summed.

    Returns
    -------
    ibis.Table
        ``segment``, ``customers``, ``share_of_customers``, ``monetary``,
        ``share_of_monetary``, one row per non-empty segment, in map order.
    """
    require_columns(
        segmented, {segment_column: "any", monetary: "numeric"}, what="segmented RFM table"
    )
    groups = segmented.group_by(segment_column).aggregate(
        customers=segmented.count(), monetary=segmented[monetary].sum()
    )
    value = groups["monetary"].cast("float64")
    names = segment_map.names
    order = ibis.cases(
        *((groups[segment_column] == label, index) for index, label in enumerate(names)),
        else_=len(names),
    )
    return groups.mutate(
        share_of_customers=groups["customers"] / groups["customers"].sum(),
        share_of_monetary=value / value.sum(),
    ).order_by([order, segment_column])[
        [segment_column, "customers", "share_of_customers", "monetary", "share_of_monetary"]
    ]
