"""The whole analysis of a customer base as of one date, as one pure function.

:func:`analyze` takes Ibis tables (transactions, order lines, customers) on any backend
and returns one row of scores per customer plus the report tables. It chains the
analytics modules: RFM (:mod:`~patron.analytics.rfm`), spend groups
(:mod:`~patron.analytics.spend_groups`), lifecycle stages
(:mod:`~patron.analytics.lifecycle`), BG/NBD and Gamma-Gamma CLV with profit CLTV
(:mod:`~patron.analytics.clv`), churn risk (:mod:`~patron.analytics.churn`) and the next
best offers (:mod:`~patron.analytics.recommend`).

Per-customer work stays in the engine. The only things pulled into Python are compact
aggregates: the distinct ``(x, t_x, T)`` triples with their counts for the BG/NBD fit
(Fader, Hardie & Lee 2005), whose predictions are joined back by triple, and the report
tables. The store is not touched here; :mod:`patron.analytics.service` reads and writes it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from patron import __version__
from patron.analytics import clv, rfm, spend_groups
from patron.analytics.churn import ChurnSettings, churn_scores
from patron.analytics.clv import ProfitSettings, profit_clv
from patron.analytics.lifecycle import STAGES, LifecycleSettings, lifecycle_stages
from patron.analytics.recommend import OfferSettings, next_best_offers
from patron.analytics.schemas import (
    DEFAULT_SEGMENTS,
    InvalidData,
    RFMSegmentMap,
    SpendGroupSettings,
    require_columns,
)

_DAY_SECONDS = 86_400
_WEEK_DAYS = 7.0
_WEEKS_PER_MONTH = 365.25 / 12 / 7


class CLVSettings(BaseModel):
    """How far ahead customer value is predicted and how it is discounted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon_months: int = Field(default=12, ge=1, le=120)
    annual_discount_rate: float = Field(default=0.10, ge=0, lt=1)
    deciles: int = Field(default=10, ge=2, le=100)


class AnalysisSettings(BaseModel):
    """Everything ``patron analyze`` can be told, as data (YAML or JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rfm_bins: int = Field(default=5, ge=2, le=10)
    rfm_segments: RFMSegmentMap = DEFAULT_SEGMENTS
    spend: SpendGroupSettings = SpendGroupSettings()
    spend_window_days: int = Field(default=364, ge=7)
    best_by: Literal["spend", "clv"] = "spend"
    clv: CLVSettings = CLVSettings()
    profit: ProfitSettings = ProfitSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    churn: ChurnSettings = ChurnSettings()
    # summed lift x confidence beat plain lift and popularity on Online Retail (README)
    offers: OfferSettings = OfferSettings(scoring="sum_lift_confidence")

    def fingerprint(self) -> str:
        """A short hash of the settings, part of the model version of every score."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    @property
    def model_version(self) -> str:
        return f"{__version__}+{self.fingerprint()}"


STEPS = (
    "RFM",
    "spend groups",
    "lifecycle",
    "CLV models",
    "churn",
    "next best offer",
    "scores",
)
"""The steps :func:`analyze` reports to its ``progress`` callback, in order."""


@dataclass
class AnalysisResult:
    """What one analysis found.

    ``scores`` has one row per customer (prospects included) with the columns of
    :data:`SCORE_COLUMNS`; ``tables`` holds the report tables as lists of plain dicts,
    ready for JSON; ``models`` the fitted parameters and validation figures.
    """

    as_of: datetime
    model_version: str
    scores: pd.DataFrame
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)


SCORE_COLUMNS = (
    "customer_id",
    "first_purchase_at",
    "last_purchase_at",
    "recency_days",
    "frequency",
    "monetary",
    "r_score",
    "f_score",
    "m_score",
    "rfm_segment",
    "spend_band",
    "best_customer",
    "lifecycle_stage",
    "p_alive",
    "expected_purchases",
    "expected_spend",
    "clv",
    "profit_clv",
    "churn_risk",
    "offers",
)


def analyze(
    tx: Any,
    lines: Any,
    customers: Any,
    *,
    as_of: date | datetime,
    settings: AnalysisSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> AnalysisResult:
    """Score every customer as of ``as_of`` and build the report tables.

    Parameters
    ----------
    tx : ibis.Table
        Orders: ``customer_id``, ``ts`` (timestamp), ``amount`` (returns negative).
    lines : ibis.Table
        Order lines: ``customer_id, ts, sku, category, quantity, unit_price``.
    customers : ibis.Table
        Every customer profile (``customer_id``), buyers or not, so prospects count.
    as_of : date or datetime
        Only rows before this instant are used; a date means its midnight UTC.
    settings : AnalysisSettings
        Segment map, bands, horizons, margins, model options.
    progress : callable
        Called with the name of each step of :data:`STEPS` once it has finished.

    Returns
    -------
    AnalysisResult
    """
    settings = settings or AnalysisSettings()
    moment = rfm.as_utc(as_of)
    require_columns(tx, {"customer_id": "any", "ts": "timestamp", "amount": "numeric"})
    require_columns(customers, {"customer_id": "any"}, what="customers")
    done = progress or (lambda _step: None)
    tables: dict[str, list[dict[str, Any]]] = {}
    models: dict[str, Any] = {}

    # one row per customer and day, which RFM, lifecycle, the BG/NBD summary and the churn
    # features all start from: aggregating the transactions once saves three passes
    # (kept in customer order: DuckDB's later passes by customer over it then take about
    # 40% less time, which more than pays for the sort at 1M customers in
    # benchmarks/analytics_bench.py)
    days = rfm.customer_days(tx, as_of=moment).order_by(["customer_id", "day"]).cache()
    # and one row per customer with the sums those analyses share, for the same reason
    totals = rfm.customer_totals(days, windows=settings.churn.windows).cache()
    # RFM: days since the last purchase, purchase days, net spend; scores and segments
    base = rfm.rfm_table(tx, as_of=moment, unit="D", totals=totals)
    # each step's table is read by several later ones: materialise it once (a temporary
    # table on DuckDB, a cached frame on Spark) instead of recomputing it per reader
    scored = rfm.segment(
        rfm.rfm_scores(base, bins=settings.rfm_bins), settings.rfm_segments, name="rfm_segment"
    ).cache()
    tables["rfm_segments"] = _records(
        rfm.segment_summary(scored, segment_map=settings.rfm_segments, segment_column="rfm_segment")
    )
    tables["rfm_grid"] = _records(
        scored.group_by(["r_score", "f_score"])
        .aggregate(customers=scored.count())
        .order_by(["r_score", "f_score"])
    )
    done("RFM")

    # spend groups over the trailing window
    start = moment - timedelta(days=settings.spend_window_days)
    spend = spend_groups.spend_per_period(
        tx, start=start, end=moment, period=settings.spend.period
    ).cache()
    banded = spend_groups.spend_bands(
        spend,
        edges=settings.spend.edges,
        bands=None if settings.spend.edges else settings.spend.count,
    ).cache()
    tables["spend_groups"] = _records(spend_groups.band_table(banded))
    tables["lorenz"] = _records(spend_groups.lorenz_curve(spend, points=50))
    models["gini"] = round(spend_groups.gini(spend), 6)
    done("spend groups")

    # lifecycle stages against each customer's own usual gap
    stages = lifecycle_stages(
        tx,
        as_of=moment,
        customers=customers.select("customer_id"),
        settings=settings.lifecycle,
        days=days,
    )
    done("lifecycle")

    # BG/NBD + Gamma-Gamma on the distinct triples, predictions joined back by triple
    summary = summary_table(tx, as_of=moment, totals=totals).cache()
    value, clv_models = _customer_value(summary, settings.clv)
    models.update(clv_models)
    done("CLV models")

    churn = churn_scores(tx, as_of=moment, settings=settings.churn, days=days, totals=totals)
    models["churn"] = {"horizon_days": settings.churn.horizon_days, "scored": len(churn)}
    done("churn")

    offers = next_best_offers(lines, as_of=moment, settings=settings.offers).cache()
    done("next best offer")

    scores = _assemble(
        customers.select("customer_id"),
        scored=scored,
        banded=banded,
        stages=stages,
        value=value,
        churn=churn,
        offers=offers,
    )
    scores = _profit(scores, lines, as_of=moment, settings=settings)
    scores = _best(scores, settings)
    tables["clv_deciles"] = _clv_deciles(scores, settings.clv.deciles)
    tables["lifecycle"] = _lifecycle_counts(scores)
    tables["best_customers"] = [
        {
            "customers": int(scores["best_customer"].sum()),
            "share_of_customers": _share(scores["best_customer"].sum(), len(scores)),
            "by": settings.best_by,
        }
    ]
    done("scores")
    return AnalysisResult(
        as_of=moment,
        model_version=settings.model_version,
        scores=scores,
        tables=tables,
        models=models,
    )


def summary_table(tx: Any, *, as_of: datetime, days: Any = None, totals: Any = None) -> Any:
    """The BG/NBD and Gamma-Gamma statistics per customer, in weeks, as an Ibis table.

    The engine-side twin of :func:`patron.analytics.clv.summarize` with the same
    preparation (one purchase occasion per customer-day, the first one starting the
    clock): ``x`` repeat purchase days, ``t_x`` weeks from the first purchase day to the
    last, ``T`` weeks from the first purchase day to the day before ``as_of`` (so
    ``as_of = 1997-10-01`` reproduces the published CDNOW calibration ending on
    1997-09-30), ``monetary`` the mean net value of the repeat purchase days, and
    ``t_x_days``, ``T_days`` the same spans in whole days. ``days``, when given, is
    :func:`patron.analytics.rfm.customer_days` of ``tx`` at the same ``as_of``, so the
    transactions are not aggregated again; ``totals``, its
    :func:`patron.analytics.rfm.customer_totals`, saves aggregating those days as well.
    """
    if totals is not None:
        per = totals.filter(totals["purchase_days"] > 0).select(
            "customer_id",
            _first="first_day",
            _last="last_day",
            _days="purchase_days",
            _total=totals["purchase_net"].cast("float64"),
            _first_net=totals["first_net"].cast("float64"),
        )
        return _summary_columns(per)
    if days is not None:
        days = days.select("customer_id", _day="day", _net="net")
    else:
        stamp = tx["ts"]
        midnight = rfm.as_timestamp(as_of.date(), stamp)
        rows = tx.filter(stamp < rfm.as_timestamp(as_of, stamp))
        rows = rows.mutate(
            _day=(rows["ts"].epoch_seconds() - midnight.epoch_seconds()) // _DAY_SECONDS
        )
        days = rows.group_by(["customer_id", "_day"]).aggregate(_net=rows["amount"].sum())
    days = days.filter(days["_net"] > 0)
    per = days.group_by("customer_id").aggregate(
        _first=days["_day"].min(),
        _last=days["_day"].max(),
        _days=days.count(),
        _total=days["_net"].sum().cast("float64"),
        _first_net=days["_net"].argmin(days["_day"]).cast("float64"),
    )
    return _summary_columns(per)


def _summary_columns(per: Any) -> Any:
    """The columns of :func:`summary_table` from the per-customer sums of the purchase days."""
    x = per["_days"] - 1
    t_x_days = per["_last"] - per["_first"]
    # a purchase earlier on the as-of day itself would otherwise make t_x > T
    t_days = ibis.greatest(-1 - per["_first"], t_x_days)
    return per.select(
        customer_id="customer_id",
        x=x.cast("int64"),
        t_x=t_x_days.cast("float64") / _WEEK_DAYS,
        T=t_days.cast("float64") / _WEEK_DAYS,
        monetary=ibis.ifelse(x > 0, (per["_total"] - per["_first_net"]) / x.cast("float64"), 0.0),
        t_x_days=t_x_days.cast("int64"),
        T_days=t_days.cast("int64"),
    )


def _customer_value(summary: Any, settings: CLVSettings) -> tuple[Any, dict[str, Any]]:
    # The models run in whole weeks, the unit of the literature: at a million customers
    # day-exact spans leave ~0.7 distinct (x, t_x, T) per customer, whole weeks ~0.06, and
    # fitting and prediction cost grows with that count. Integer keys keep the join exact
    # on every backend.
    summary = summary.mutate(
        _t_x_weeks=(summary["t_x_days"].cast("float64") / _WEEK_DAYS).round().cast("int64"),
        _T_weeks=(summary["T_days"].cast("float64") / _WEEK_DAYS).round().cast("int64"),
    )
    key = ["x", "_t_x_weeks", "_T_weeks"]
    # in a fixed order: the engine's hash aggregate returns its groups in any order, and
    # the likelihood summed in another order moves the fit in the last digits
    triples = (
        summary.group_by(key)
        .aggregate(customers=summary.count())
        .order_by(key)
        .to_pyarrow()
        .to_pandas()
    )
    triples["t_x"] = triples["_t_x_weeks"].astype("float64")
    triples["T"] = triples["_T_weeks"].astype("float64")
    if triples.empty:
        raise InvalidData("no customer has a purchase before the as-of date: nothing to analyse")
    bg = clv.BetaGeo().fit(triples, weights="customers")
    # ordered for the same reason as the triples: the Gamma-Gamma likelihood is a sum too
    repeaters = (
        summary.filter(summary["x"] > 0)
        .select("x", "monetary")
        .order_by(["x", "monetary"])
        .to_pyarrow()
        .to_pandas()
    )
    models: dict[str, Any] = {
        "bg_nbd": {
            **{k: round(v, 6) for k, v in bg.params.items()},
            "log_likelihood": round(bg.log_likelihood, 3),
            "distinct_triples": len(triples),
        }
    }
    triples["p_alive"] = bg.p_alive(triples).to_numpy()
    # discounted purchases: monthly increments of the conditional expectation, each
    # discounted from the end of its month (Fader, Hardie & Lee 2005, discrete time)
    months = range(1, settings.horizon_months + 1)
    path = bg.expected_purchases_over([month * _WEEKS_PER_MONTH for month in months], triples)
    # the last month ends the horizon
    triples["expected_purchases"] = path[:, -1]
    monthly = (1 + settings.annual_discount_rate) ** (1 / 12) - 1
    previous = np.zeros(len(triples))
    discounted = np.zeros(len(triples))
    for month in months:
        current = path[:, month - 1]
        discounted += (current - previous) / (1 + monthly) ** month
        previous = current
    triples["discounted_purchases"] = discounted
    predictions = ibis.memtable(
        triples[[*key, "p_alive", "expected_purchases", "discounted_purchases"]]
    )
    joined = summary.join(predictions, key)

    spend_column: Any
    if len(repeaters) >= 2 and repeaters["monetary"].gt(0).all():
        gg = clv.GammaGamma().fit(repeaters)
        p, q, gamma = gg.params["p"], gg.params["q"], gg.params["gamma"]
        models["gamma_gamma"] = {
            "p": round(p, 6),
            "q": round(q, 6),
            "gamma": round(gamma, 6),
            "log_likelihood": round(gg.log_likelihood, 3),
        }
        # E[Z | x, mean] (Fader & Hardie 2013): a weighted average of the population mean
        # spend and the customer's own, written in the engine so scoring stays there
        px = joined["x"].cast("float64") * p
        population = gamma * p / (q - 1) if q > 1 else 0.0
        spend_column = ((q - 1) / (px + q - 1)) * population + (px / (px + q - 1)) * joined[
            "monetary"
        ]
    else:
        spend_column = joined["monetary"]
    value = joined.select(
        "customer_id",
        "p_alive",
        "expected_purchases",
        expected_spend=spend_column,
        clv=spend_column * joined["discounted_purchases"],
    )
    return value, models


def _assemble(
    customers: Any,
    *,
    scored: Any,
    banded: Any,
    stages: Any,
    value: Any,
    churn: pd.DataFrame,
    offers: Any,
) -> pd.DataFrame:
    """One row per customer from every step, joined in the engine, then fetched once."""
    risk = ibis.memtable(churn[["customer_id", "churn_risk"]])
    table = customers.left_join(
        scored.select(
            "customer_id",
            first_purchase_at="first_purchase",
            last_purchase_at="last_purchase",
            recency_days="recency",
            frequency="frequency",
            monetary="monetary_total",
            r_score="r_score",
            f_score="f_score",
            m_score="m_score",
            rfm_segment="rfm_segment",
        ),
        "customer_id",
    ).drop("customer_id_right")
    table = table.left_join(
        banded.select("customer_id", spend_band="band", period_spend="spend"), "customer_id"
    ).drop("customer_id_right")
    table = table.left_join(
        stages.select("customer_id", lifecycle_stage="stage"), "customer_id"
    ).drop("customer_id_right")
    table = table.left_join(value, "customer_id").drop("customer_id_right")
    table = table.left_join(risk, "customer_id").drop("customer_id_right")
    # Arrow's own conversion: Ibis's to_pandas is several times slower on a million rows
    fetched = table.order_by("customer_id").to_pyarrow()
    frame = fetched.to_pandas()
    frame["offers"] = pd.array(_offer_lists(frame["customer_id"], offers), dtype=_OFFERS)
    return frame


_ITEM = pa.struct([("item", pa.string()), ("kind", pa.string()), ("score", pa.float64())])
_OFFERS = pd.ArrowDtype(pa.struct([("items", pa.list_(_ITEM))]))
"""Each customer's offers as ``{"items": [{"item", "kind", "score"}, ...]}`` in rank order,
held by Arrow: a million customers' lists as Python objects cost seconds to build."""


def _offer_lists(customer_ids: pd.Series, offers: Any) -> pa.StructArray:
    """The offers of each of ``customer_ids`` (unique) as one list, in rank order.

    The offers arrive sorted by customer and rank and are cut into lists at the
    customers' boundaries; a customer without offers gets an empty list.
    """
    ranked = (
        offers.select("customer_id", "rank", "item", "kind", score=offers["score"].round(6))
        .order_by(["customer_id", "rank"])
        .to_pyarrow()
    )
    # the row of each offer's customer; offers of customers not in the list are dropped
    owner = pd.Index(customer_ids).get_indexer(ranked.column("customer_id").to_pandas())
    keep = owner >= 0
    order = np.flatnonzero(keep)
    if np.any(np.diff(owner[order]) < 0):  # the engine sorted ids differently from pandas
        order = order[np.lexsort((ranked.column("rank").to_numpy()[order], owner[order]))]
    owner = owner[order]
    items = pa.StructArray.from_arrays(
        [ranked.column(f.name).combine_chunks().take(order).cast(f.type) for f in _ITEM],
        fields=list(_ITEM),
    )
    offsets = np.searchsorted(owner, np.arange(len(customer_ids) + 1)).astype(np.int32)
    return pa.StructArray.from_arrays(
        [pa.ListArray.from_arrays(pa.array(offsets), items)], names=["items"]
    )


def _profit(
    scores: pd.DataFrame, lines: Any, *, as_of: datetime, settings: AnalysisSettings
) -> pd.DataFrame:
    """Profit CLTV of the customers with a predicted value; margins by category only when
    the settings give category rates, since the default rate needs no category mix."""
    valued = scores["clv"].notna()
    frame = pd.DataFrame(
        {"discounted_revenue": scores.loc[valued, "clv"].astype("float64").to_numpy()},
        index=scores.loc[valued, "customer_id"].to_numpy(),
    )
    mix = None
    if settings.profit.margin_rate_by_category:
        before = lines.filter(lines["ts"] < rfm.as_timestamp(as_of, lines["ts"]))
        revenue = (
            before.group_by(["customer_id", "category"])
            .aggregate(revenue=(before["quantity"] * before["unit_price"]).sum().cast("float64"))
            .to_pandas()
        )
        mix = revenue.pivot_table(
            index="customer_id", columns="category", values="revenue", fill_value=0.0
        ).clip(lower=0.0)
    profit = profit_clv(
        frame,
        horizon_months=settings.clv.horizon_months,
        settings=settings.profit,
        category_revenue=mix,
    )
    scores["profit_clv"] = pd.Series(
        profit["profit_clv"].to_numpy(), index=scores.index[valued.to_numpy()]
    ).reindex(scores.index)
    return scores


def _best(scores: pd.DataFrame, settings: AnalysisSettings) -> pd.DataFrame:
    """Flag the top share of customers by period spend or by CLV, ties by customer id."""
    column = "period_spend" if settings.best_by == "spend" else "clv"
    values = pd.to_numeric(scores[column], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    ranked = ~np.isnan(values)
    # sorting the two columns alone: reordering the whole frame took a second at 1M rows
    ids, values = scores["customer_id"].to_numpy()[ranked], values[ranked]
    count = math.ceil(settings.spend.top_share * len(ids)) if len(ids) else 0
    top = ids[np.lexsort((ids, -values))[:count]]
    scores["best_customer"] = scores["customer_id"].isin(top)
    return scores


def _clv_deciles(scores: pd.DataFrame, deciles: int) -> list[dict[str, Any]]:
    """Customers with a CLV, cut into equal-count groups from the most valuable down."""
    values = pd.to_numeric(scores["clv"], errors="coerce").dropna().sort_values(ascending=False)
    if values.empty:
        return []
    total = float(values.sum())
    groups = np.array_split(values.to_numpy(dtype=float), min(deciles, len(values)))
    return [
        {
            "decile": index + 1,
            "customers": len(group),
            "mean_clv": round(float(group.mean()), 2),
            "min_clv": round(float(group.min()), 2),
            "max_clv": round(float(group.max()), 2),
            "share_of_clv": _share(float(group.sum()), total),
        }
        for index, group in enumerate(groups)
    ]


def _lifecycle_counts(scores: pd.DataFrame) -> list[dict[str, Any]]:
    counts = scores["lifecycle_stage"].value_counts()
    total = len(scores)
    return [
        {
            "stage": stage,
            "customers": int(counts.get(stage, 0)),
            "share_of_customers": _share(int(counts.get(stage, 0)), total),
        }
        for stage in STAGES
    ]


def _share(part: float, whole: float) -> float:
    return round(float(part) / float(whole), 6) if whole else 0.0


def _records(table: Any) -> list[dict[str, Any]]:
    frame = table.to_pandas()
    return [
        {key: _plain(value) for key, value in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _plain(value: Any) -> Any:
    """JSON-ready scalars: report tables end up in a JSON column and in API answers."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return None if math.isnan(value) else round(float(value), 6)
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    return value
