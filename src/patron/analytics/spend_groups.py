"""Spend groups as Ibis expressions: average spend per week or month, spend bands, the
Lorenz curve and Gini coefficient of turnover, the best customers, and moves between bands.

The source articles (after *The Loyalty Guide*, vol. II) describe a European retailer
whose customers were split into 11 bands by what they spent a week: 38% of customers spent
under €4 a week and made 6.51% of turnover together, while the top band, 2% of customers,
made 10.34%. Comparing the bands before and after a best-customer campaign shows the
customers moving from the low-spending bands to the high ones. This module computes
those tables. How unequal spend is, in one curve and one number, is the Lorenz curve
(Lorenz, M. O. 1905, "Methods of measuring the concentration of wealth", *Publications of
the American Statistical Association* 9(70), 209–219) and the Gini coefficient (Gini, C.
1912, *Variabilità e mutabilità*, Bologna).

Inputs follow the contract of ``patron.analytics.rfm``: transactions with a customer id,
a timestamp and a numeric amount, returns being negative rows that net off. Every function
returns a lazy ``ibis.Table`` (``gini`` a float, ``migration_matrix`` a pandas DataFrame for
display) built from portable Ibis operations only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import reduce
from operator import add
from typing import Any, Literal

import ibis

from patron.analytics.rfm import as_timestamp, as_utc, cut_name, quantile_cut_points
from patron.analytics.schemas import InvalidData, SpendBanding, require_columns

__all__ = [
    "band_migration",
    "band_table",
    "best_customers",
    "gini",
    "lorenz_curve",
    "migration_matrix",
    "spend_bands",
    "spend_per_period",
]

Period = Literal["week", "month"]
Moment = date | datetime

# A share such as 0.29 times 100 customers is 28.999999999999996 in binary floating point;
# the slack keeps "the top 29%" from losing its last customer.
_SHARE_SLACK = 1e-9

NO_BAND = "none"
"""Band label of a customer who bought nothing in one of the two periods of a migration."""


def _periods(start: Moment, end: Moment, period: Period) -> float:
    """Number of weeks or calendar months in ``[start, end)``."""
    begin, finish = as_utc(start), as_utc(end)
    if finish <= begin:
        raise InvalidData(f"the window must end after it starts: [{begin}, {finish})")
    if period == "week":
        return (finish - begin).total_seconds() / (7 * 86_400)
    if period == "month":
        for moment in (begin, finish):
            if moment != moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0):
                raise InvalidData(
                    f"a monthly window starts and ends on the first of a month, not {moment}"
                )
        return float(12 * (finish.year - begin.year) + finish.month - begin.month)
    raise InvalidData(f"period must be 'week' or 'month', not {period!r}")


def spend_per_period(
    tx: Any,
    *,
    start: Moment,
    end: Moment,
    period: Period = "week",
    customer: str = "customer_id",
    ts: str = "ts",
    amount: str = "amount",
) -> Any:
    """Average net spend per week or month of each customer over ``[start, end)``.

    .. math::

        \\text{spend}_i = \\frac{1}{P} \\sum_{t \\in [\\text{start}, \\text{end})} a_{i,t},

    where ``a`` are the customer's amounts (returns negative) and ``P`` the number of
    periods in the window: its length in days over 7 for weeks (fractions allowed), or
    the number of calendar months, in which case both ends must fall on the first of a
    month at midnight UTC. Naive timestamps and bounds are read as UTC.

    Parameters
    ----------
    tx : ibis.Table
        Transactions.
    start, end : date or datetime
        The window, start included, end excluded.
    period : {"week", "month"}
        The period spend is averaged over; the articles use weeks.
    customer, ts, amount : str
        Column names in ``tx``.

    Returns
    -------
    ibis.Table
        ``customer``, ``turnover`` (net total in the window, the amount type) and
        ``spend`` (float64) for every customer with a transaction in the window. Spend
        may be zero or negative when a customer only returned goods in the window.
    """
    require_columns(tx, {customer: "any", ts: "timestamp", amount: "numeric"}, what="transactions")
    count = _periods(start, end, period)
    stamp = tx[ts]
    window = tx.filter((stamp >= as_timestamp(start, stamp)) & (stamp < as_timestamp(end, stamp)))
    totals = window.group_by(customer).aggregate(turnover=window[amount].sum())
    return totals.mutate(spend=totals["turnover"].cast("float64") / count)


def spend_bands(
    per_customer: Any,
    *,
    edges: Sequence[Decimal | float] | None = None,
    bands: int | None = None,
    column: str = "spend",
    exact: bool = True,
) -> Any:
    """Put each customer in a spend band, by fixed money edges or by quantiles.

    With ``edges`` ``e_1 < … < e_{k-1}`` (in money per period, like the articles'
    "under €4 a week") there are ``k`` bands, left-closed like the way spend is read:

    .. math:: \\text{band} = 1 + \\#\\{j : \\text{spend} \\ge e_j\\}.

    Without edges there are ``bands`` (default 11) bands cut at the quantiles
    ``c_j = q(j / bands)`` of spend (see :func:`patron.analytics.rfm.quantile_cut_points`)
    and, as RFM scores are, right-closed so that a run of equal spend on a cut point stays
    in the lower band: ``band = 1 + #{j : spend > c_j}``.

    Parameters
    ----------
    per_customer : ibis.Table
        One row per customer, e.g. from :func:`spend_per_period`.
    edges : sequence of Decimal or float, optional
        Inner band boundaries, strictly increasing.
    bands : int, optional
        Number of bands; with ``edges`` it must equal ``len(edges) + 1``.
    column : str
        The spend column.
    exact : bool
        Exact or the backend's approximate quantiles, for quantile bands.

    Returns
    -------
    ibis.Table
        ``per_customer`` with ``band`` (int64, 1 = lowest) added.
    """
    require_columns(per_customer, {column: "numeric"}, what="per-customer table")
    banding = _banding(edges, bands)
    return _assign_bands(per_customer, column, banding, cuts_from=per_customer, exact=exact)


def _banding(edges: Sequence[Decimal | float] | None, bands: int | None) -> SpendBanding:
    try:
        return SpendBanding(
            edges=None if edges is None else tuple(Decimal(str(edge)) for edge in edges),
            bands=bands,
        )
    except ValueError as exc:
        raise InvalidData(str(exc)) from exc


def _assign_bands(
    table: Any, column: str, banding: SpendBanding, *, cuts_from: Any, exact: bool
) -> Any:
    """Add ``band`` to ``table``; quantile cut points come from ``cuts_from`` (the table
    itself, or the earlier period of a migration so that both periods share the bands)."""
    value = table[column]
    if banding.edges is not None:
        as_decimal = value.type().is_decimal()
        steps = [
            ibis.ifelse(value >= (ibis.literal(edge) if as_decimal else float(edge)), 1, 0)
            for edge in banding.edges
        ]
        return table.mutate(band=reduce(add, steps, ibis.literal(1)).cast("int64"))
    cuts = quantile_cut_points(cuts_from, [column], bins=banding.count, exact=exact)
    joined = table.cross_join(cuts)
    steps = [
        ibis.ifelse(joined[column] > joined[cut_name(column, k)], 1, 0)
        for k in range(1, banding.count)
    ]
    return joined.select(*table.columns, band=reduce(add, steps, ibis.literal(1)).cast("int64"))


def band_table(banded: Any, *, column: str = "spend") -> Any:
    """Customers and turnover per spend band, and their shares.

    For band ``b`` holding customers ``C_b`` of ``C``:

    .. math::

        \\text{share\\_of\\_customers}_b = |C_b| / |C|, \\qquad
        \\text{share\\_of\\_turnover}_b = \\sum_{i \\in C_b} s_i \\Big/ \\sum_{i \\in C} s_i,

    with ``s`` the spend column; as spend is turnover over a fixed number of periods,
    the second is also the band's share of turnover in the window. Both sum to 1.

    Parameters
    ----------
    banded : ibis.Table
        The output of :func:`spend_bands`.
    column : str
        The spend column.

    Returns
    -------
    ibis.Table
        ``band``, ``customers``, ``share_of_customers``, ``turnover`` (summed spend per
        period, float64), ``share_of_turnover``, ``min_spend`` and ``max_spend``; one row
        per non-empty band, in band order.
    """
    require_columns(banded, {"band": "numeric", column: "numeric"}, what="banded table")
    value = banded[column].cast("float64")
    groups = banded.group_by("band").aggregate(
        customers=banded.count(),
        turnover=value.sum(),
        min_spend=value.min(),
        max_spend=value.max(),
    )
    return groups.mutate(
        share_of_customers=groups["customers"] / groups["customers"].sum(),
        share_of_turnover=groups["turnover"] / groups["turnover"].sum(),
    ).order_by("band")[
        [
            "band",
            "customers",
            "share_of_customers",
            "turnover",
            "share_of_turnover",
            "min_spend",
            "max_spend",
        ]
    ]


def lorenz_curve(
    per_customer: Any, *, points: int = 100, column: str = "spend", customer: str = "customer_id"
) -> Any:
    """The Lorenz curve of spend: who makes what share of turnover (Lorenz 1905).

    With spend sorted ascending ``s_(1) ≤ … ≤ s_(n)``, the curve passes through

    .. math::

        \\left( \\frac{k}{n}, \\;
        \\frac{\\sum_{i \\le k} s_{(i)}}{\\sum_{i \\le n} s_{(i)}} \\right),
        \\qquad k = 0, \\dots, n.

    Only ``min(n, points)`` of the ``n`` points are kept, the first at or past each
    ``j / points``, plus the origin; the last is always ``(1, 1)``. Ties in spend are
    broken by customer id so that the engine's sort order cannot change the points.
    Negative spend (returns only) bends the curve below zero; it is kept as it is.

    Parameters
    ----------
    per_customer : ibis.Table
        One row per customer.
    points : int
        Resolution of the curve.
    column, customer : str
        The spend and customer id columns.

    Returns
    -------
    ibis.Table
        ``customers_share`` and ``turnover_share`` (float64), ascending, from ``(0, 0)``.
    """
    require_columns(per_customer, {column: "numeric", customer: "any"}, what="per-customer table")
    if points < 1:
        raise InvalidData(f"points must be at least 1, not {points}")
    table = per_customer.select(
        _value=per_customer[column].cast("float64"), _id=per_customer[customer]
    )
    order = [table["_value"], table["_id"]]
    whole = ibis.window()
    ranked = table.mutate(
        _rank=ibis.row_number().over(order_by=order) + 1,
        _running=table["_value"].sum().over(ibis.cumulative_window(order_by=order)),
        _n=table["_value"].count().over(whole),
        _total=table["_value"].sum().over(whole),
    )
    # keep the first customer at or past each 1/points step of the customer share
    step = (ranked["_rank"] * points) // ranked["_n"]
    crossed = ranked.filter(step > ((ranked["_rank"] - 1) * points) // ranked["_n"])
    curve = crossed.select(
        customers_share=crossed["_rank"].cast("float64") / crossed["_n"],
        turnover_share=crossed["_running"] / crossed["_total"],
    )
    origin = crossed.filter(crossed["_rank"] == crossed["_rank"].min()).select(
        customers_share=ibis.literal(0.0), turnover_share=ibis.literal(0.0)
    )
    return origin.union(curve).order_by(["customers_share", "turnover_share"])


def gini(per_customer: Any, *, column: str = "spend") -> float:
    """The Gini coefficient of spend (Gini 1912): 0 when all spend alike, towards 1 when
    one customer makes all turnover.

    With spend sorted ascending ``s_(1) ≤ … ≤ s_(n)`` and total ``S``,

    .. math:: G = \\frac{2 \\sum_{i=1}^{n} i \\, s_{(i)}}{n S} - \\frac{n + 1}{n},

    which equals one minus twice the area under the Lorenz curve, and the mean absolute
    difference ``Σ_i Σ_j |s_i − s_j| / (2 n² μ)``. Equal spend gives 0; one customer
    holding everything gives ``(n − 1) / n``. The engine ranks and sums; only three
    numbers come back to Python.

    Parameters
    ----------
    per_customer : ibis.Table
        One row per customer; spend should be non-negative for ``G`` to lie in [0, 1).
    column : str
        The spend column.

    Returns
    -------
    float
        The Gini coefficient.

    Raises
    ------
    InvalidData
        If there are no customers or the total spend is not positive.
    """
    require_columns(per_customer, {column: "numeric"}, what="per-customer table")
    table = per_customer.select(_value=per_customer[column].cast("float64"))
    table = table.filter(table["_value"].notnull())
    # the order within a run of ties does not change Σ i·s_(i): tied s are equal
    ranked = table.mutate(_rank=ibis.row_number().over(order_by=table["_value"]) + 1)
    stats = ranked.aggregate(
        n=ranked.count(),
        total=ranked["_value"].sum(),
        weighted=(ranked["_rank"] * ranked["_value"]).sum(),
    ).execute()
    n = int(stats["n"].iloc[0])
    total = float(stats["total"].iloc[0]) if n else 0.0
    if n == 0 or not total > 0:
        raise InvalidData(f"the Gini coefficient needs positive total spend; got {n} customers")
    weighted = float(stats["weighted"].iloc[0])
    return 2 * weighted / (n * total) - (n + 1) / n


def best_customers(
    per_customer: Any,
    *,
    by: str = "spend",
    top_share: float | None = None,
    top_n: int | None = None,
    customer: str = "customer_id",
) -> Any:
    """The best customers: the top ``top_share`` (default 2%, as in the articles) or the
    top ``top_n`` customers by ``by`` (spend, or e.g. CLV).

    Customers are ranked by ``by`` descending, ties by customer id so that the slice is
    reproducible; rows with a null ``by`` are never among the best. ``top_share`` keeps
    ranks ``k ≤ top_share · n`` (rounded down), so 2% of 120 customers is 2.

    Parameters
    ----------
    per_customer : ibis.Table
        One row per customer.
    by : str
        The column the customers are ranked on.
    top_share, top_n : float or int, optional
        At most one; without either, ``top_share=0.02``.
    customer : str
        The customer id column.

    Returns
    -------
    ibis.Table
        ``customer``, ``by`` and ``rank`` (1 = best), ordered by rank.
    """
    require_columns(per_customer, {customer: "any", by: "numeric"}, what="per-customer table")
    if top_share is not None and top_n is not None:
        raise InvalidData("give top_share or top_n, not both")
    if top_n is not None and top_n < 1:
        raise InvalidData(f"top_n must be at least 1, not {top_n}")
    share = 0.02 if top_share is None and top_n is None else top_share
    if share is not None and not 0 < share <= 1:
        raise InvalidData(f"top_share must be in (0, 1], not {share}")
    table = per_customer.filter(per_customer[by].notnull()).select(customer, by)
    ranked = table.mutate(
        rank=ibis.row_number().over(order_by=[ibis.desc(table[by]), table[customer]]) + 1,
        # a column, not a window inside the filter: Ibis 12 compiles a windowed filter
        # for Spark into SQL that cannot resolve `rank` (UNRESOLVED_COLUMN)
        _size=table.count().over(ibis.window()),
    )
    if share is None:
        keep = ranked["rank"] <= top_n
    else:
        keep = ranked["rank"] <= ranked["_size"] * share + _SHARE_SLACK
    return ranked.filter(keep).order_by("rank")[[customer, by, "rank"]]


def band_migration(
    tx: Any,
    *,
    period_a: tuple[Moment, Moment],
    period_b: tuple[Moment, Moment],
    edges: Sequence[Decimal | float] | None = None,
    bands: int | None = None,
    period: Period = "week",
    customer: str = "customer_id",
    ts: str = "ts",
    amount: str = "amount",
    exact: bool = True,
) -> Any:
    """How customers moved between spend bands from one window to another.

    Each customer's average spend per period is banded in window A (before, say, a
    campaign) and in window B (after it), with the same bands: fixed ``edges``, or
    quantile cut points of window A's spend applied to both windows (cut per window,
    quantile bands would hold equal numbers of customers by construction and hide any
    movement). A customer with no transaction in one window falls in band ``"none"``
    there.

    Parameters
    ----------
    tx : ibis.Table
        Transactions.
    period_a, period_b : (start, end)
        The two windows, each start included and end excluded.
    edges, bands, exact
        As in :func:`spend_bands`.
    period : {"week", "month"}
        As in :func:`spend_per_period`.
    customer, ts, amount : str
        Column names in ``tx``.

    Returns
    -------
    ibis.Table
        ``band_from``, ``band_to`` (strings: ``"1"`` … or ``"none"``) and ``customers``,
        one row per non-empty cell, ordered by band (``"none"`` first). See
        :func:`migration_matrix` for the square display.
    """
    columns = {"customer": customer, "ts": ts, "amount": amount}
    before = spend_per_period(tx, start=period_a[0], end=period_a[1], period=period, **columns)
    after = spend_per_period(tx, start=period_b[0], end=period_b[1], period=period, **columns)
    banding = _banding(edges, bands)
    before = _assign_bands(before, "spend", banding, cuts_from=before, exact=exact)
    after = _assign_bands(after, "spend", banding, cuts_from=before, exact=exact)
    left = before.select(_id_from=before[customer], _from=before["band"])
    right = after.select(_id_to=after[customer], _to=after["band"])
    joined = left.outer_join(right, left["_id_from"] == right["_id_to"])
    cells = joined.select(
        # band 0 sorts "none" first; the labels are what a reader sees
        _from_order=joined["_from"].fill_null(0),
        _to_order=joined["_to"].fill_null(0),
        band_from=joined["_from"].cast("string").fill_null(NO_BAND),
        band_to=joined["_to"].cast("string").fill_null(NO_BAND),
    )
    counts = cells.group_by(["_from_order", "_to_order", "band_from", "band_to"]).aggregate(
        customers=cells.count()
    )
    return counts.order_by(["_from_order", "_to_order"])[["band_from", "band_to", "customers"]]


def migration_matrix(migration: Any) -> Any:
    """Execute a :func:`band_migration` table and pivot it for display.

    Returns
    -------
    pandas.DataFrame
        Customers with rows ``band_from`` and columns ``band_to``, both ordered
        ``"none", "1", "2", …``, every band seen in either window on both axes, and 0 in
        the empty cells.
    """
    frame = migration.execute()
    labels = sorted(
        set(frame["band_from"]) | set(frame["band_to"]),
        key=lambda label: -1 if label == NO_BAND else int(label),
    )
    matrix = frame.pivot_table(
        index="band_from", columns="band_to", values="customers", aggfunc="sum", fill_value=0
    )
    return matrix.reindex(index=labels, columns=labels, fill_value=0).astype("int64")
