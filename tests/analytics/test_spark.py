"""The analytics run unchanged on PySpark in local mode: the same Python builds every
expression from a DuckDB table and from a Spark table of the same rows, and both engines
give the same RFM, segments, spend bands, Lorenz curve, Gini and band migration, and the
same lifecycle stages, churn features and next best offers.

The rows are the simulator's orders (3,000 persons, two years, returns included, amounts
``Decimal``) plus three hand-made customers whose answers are worked out below, so the
comparison can never pass on two empty results.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import ibis
import numpy as np
import pandas as pd
import pytest

from patron.analytics.churn import ChurnSettings, churn_features, churn_labels, churn_scores
from patron.analytics.lifecycle import STAGES, lifecycle_stages
from patron.analytics.recommend import OfferSettings, co_occurrence, next_best_offers, popularity
from patron.analytics.rfm import (
    customer_days,
    customer_totals,
    rfm_scores,
    rfm_table,
    segment,
    segment_summary,
)
from patron.analytics.spend_groups import (
    band_migration,
    band_table,
    best_customers,
    gini,
    lorenz_curve,
    migration_matrix,
    spend_bands,
    spend_per_period,
)
from patron.ingest.synthetic import Truth, generate

pytestmark = [
    pytest.mark.spark,
    # pyspark 4.0's toPandas passes copy= to pandas 3's astype; nothing of ours to fix
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
"""The simulator's history ends at Moscow midnight, 2026-10-31 21:00 UTC."""

HISTORY = (datetime(2024, 10, 31, tzinfo=UTC), AS_OF)
"""A window holding every simulated order (the first Moscow midnight is 21:00 UTC)."""

LABEL_CUTOFF = datetime(2026, 8, 1, tzinfo=UTC)
"""A churn cut-off with 90 days of data after it."""

HALF_YEARS = ((date(2025, 11, 1), date(2026, 5, 1)), (date(2026, 5, 1), date(2026, 11, 1)))

TX_SCHEMA = ibis.schema(
    {"customer_id": "string", "ts": "timestamp('UTC')", "amount": "decimal(18, 2)"}
)

LINE_SCHEMA = ibis.schema(
    {
        "customer_id": "string",
        "ts": "timestamp('UTC')",
        "sku": "string",
        "category": "string",
        "quantity": "int64",
        "unit_price": "decimal(18, 2)",
    }
)

# Hand-made customers after the simulated history. Z1 buys on days -1 and -15 (the first
# one second before as_of midnight, where a wrong session time zone would move it) and
# returns goods on day -12; its purchase at as_of itself is outside the window. Z2's
# purchase is returned the same day, Z3 only returns: neither has a purchase day.
HAND_ROWS = [
    ("Z1", "2026-10-31 23:59:59", "10.05"),
    ("Z1", "2026-10-17 00:00:00", "20.10"),
    ("Z1", "2026-10-20 12:00:00", "-5.15"),
    ("Z1", "2026-11-01 00:00:00", "999.99"),
    ("Z2", "2026-10-25 10:00:00", "30.00"),
    ("Z2", "2026-10-25 18:00:00", "-30.00"),
    ("Z3", "2026-10-28 09:30:00", "-12.34"),
]
HAND_TURNOVER = Decimal("12.66")
"""Net of the hand rows before as_of: 10.05 + 20.10 - 5.15 + 30 - 30 - 12.34."""

Engines = dict[str, Any]
"""Engine name ("duckdb", "spark") to that engine's backend, or to a table on it holding
the same rows as on the other."""


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    """The simulator's files (3,000 persons, two years to 2026-11-01) and its truth."""
    folder = tmp_path_factory.mktemp("synthetic")
    return folder, generate(folder, customers=3000, seed=5)


@pytest.fixture(scope="module")
def engines(spark: Any) -> Engines:
    """One in-process DuckDB and the shared Spark session, as Ibis backends."""
    return {"duckdb": ibis.duckdb.connect(), "spark": spark}


def _on_both(engines: Engines, name: str, frame: pd.DataFrame, schema: ibis.Schema) -> Engines:
    rows = ibis.memtable(frame, schema=schema)
    return {
        "duckdb": engines["duckdb"].create_table(name, rows),
        # names are unique in the test run: the Spark session is shared by every module
        "spark": engines["spark"].create_table(f"test_spark_{name}", rows),
    }


def _orders(folder: Path) -> pd.DataFrame:
    orders = pd.read_csv(
        folder / "orders.csv",
        dtype={"customer_id": "string", "unit_price": "string", "category": "string"},
    )
    orders = orders[orders["customer_id"].fillna("").str.len() > 0]  # guests have no id
    return orders.assign(ts=pd.to_datetime(orders["placed_at"], utc=True))


@pytest.fixture(scope="module")
def tx(engines: Engines, simulated: tuple[Path, Truth]) -> Engines:
    """Transactions ``customer_id, ts, amount`` (Decimal, returns negative), hand rows added."""
    orders = _orders(simulated[0])
    amounts = [
        Decimal(price) * quantity
        for price, quantity in zip(orders["unit_price"], orders["quantity"], strict=True)
    ]
    rows = pd.DataFrame(
        {"customer_id": orders["customer_id"], "ts": orders["ts"], "amount": amounts}
    )
    hand = pd.DataFrame(HAND_ROWS, columns=["customer_id", "ts", "amount"])
    hand["ts"] = pd.to_datetime(hand["ts"], utc=True)
    hand["amount"] = hand["amount"].map(Decimal)
    frame = pd.concat([rows, hand], ignore_index=True)
    return _on_both(engines, "transactions", frame, TX_SCHEMA)


@pytest.fixture(scope="module")
def known(engines: Engines, simulated: tuple[Path, Truth]) -> Engines:
    """Every customer id: the simulator's customer rows and the hand-made Z1..Z3."""
    ids = pd.read_csv(simulated[0] / "customers.csv", dtype="string", usecols=["customer_id"])
    frame = pd.concat([ids, pd.DataFrame({"customer_id": ["Z1", "Z2", "Z3"]})])
    return _on_both(engines, "customers", frame, ibis.schema({"customer_id": "string"}))


@pytest.fixture(scope="module")
def lines(engines: Engines, simulated: tuple[Path, Truth]) -> Engines:
    """Order lines ``customer_id, ts, sku, category, quantity, unit_price`` (Decimal)."""
    orders = _orders(simulated[0])
    frame = orders[["customer_id", "ts", "sku", "category", "quantity"]].assign(
        unit_price=orders["unit_price"].map(Decimal)
    )
    return _on_both(engines, "lines", frame, LINE_SCHEMA)


def _frame(table: Any, sort: list[str] | None) -> pd.DataFrame:
    frame = table.to_pandas()
    for name in frame.columns:
        # Spark's TIMESTAMP is an instant that Ibis reports without a zone; the session
        # zone is UTC, so naive values are UTC
        if pd.api.types.is_datetime64_any_dtype(frame[name]):
            column = frame[name]
            if column.dt.tz is None:
                column = column.dt.tz_localize(UTC)
            frame[name] = column.dt.tz_convert(UTC).astype("datetime64[us, UTC]")
    if sort is not None:
        frame = frame.sort_values(sort).reset_index(drop=True)
    return frame


def _kind(column: pd.Series) -> str:
    if pd.api.types.is_string_dtype(column) and column.dtype != object:
        return "string"
    return str(column.dtype.kind)


def _same_on_both(
    build: Callable[..., Any], *inputs: Engines, sort: list[str] | None
) -> pd.DataFrame:
    """Run ``build`` on each engine's tables and assert equal results; return DuckDB's.

    ``sort`` orders rows whose order the expression leaves open (None: the expression
    orders them). Integers, strings, booleans, decimals and times must be equal, floats
    within 1e-9 relative (engines sum floats in different orders).
    """
    on_duckdb = _frame(build(*(tables["duckdb"] for tables in inputs)), sort)
    on_spark = _frame(build(*(tables["spark"] for tables in inputs)), sort)

    assert list(on_spark.columns) == list(on_duckdb.columns)
    assert {c: _kind(on_spark[c]) for c in on_spark} == {c: _kind(on_duckdb[c]) for c in on_duckdb}
    for name in on_duckdb.columns:
        left, right = on_duckdb[name], on_spark[name]
        if left.dtype.kind == "f":
            np.testing.assert_allclose(right, left, rtol=1e-9, atol=1e-12, err_msg=name)
        else:
            assert right.tolist() == left.tolist(), name
    assert len(on_duckdb) > 0
    return on_duckdb


def _weekly(tx: Any) -> Any:
    return spend_per_period(tx, start=HISTORY[0], end=HISTORY[1])


@pytest.mark.parametrize("unit", ["D", "W"])
def test_rfm_table_is_the_same_on_spark(tx: Engines, unit: Literal["D", "W"]) -> None:
    # when the RFM table is built on both engines
    rfm = _same_on_both(
        lambda rows: rfm_table(rows, as_of=AS_OF, unit=unit), tx, sort=["customer_id"]
    )

    # then it is equal and holds the hand-worked Z1; Z2 and Z3 have no purchase day
    z1 = rfm.set_index("customer_id").loc["Z1"]
    expected = {"D": (1, 2, 15), "W": (0, 2, 2)}[unit]  # days -1, -15; weeks -1, -3
    assert (z1["recency"], z1["frequency"], z1["T"]) == expected
    assert z1["monetary_total"] == Decimal("25.00")
    assert z1["monetary_mean"] == 12.5
    assert z1["first_purchase"] == pd.Timestamp("2026-10-17 00:00:00", tz=UTC)
    assert z1["last_purchase"] == pd.Timestamp("2026-10-31 23:59:59", tz=UTC)
    assert not {"Z2", "Z3"} & set(rfm["customer_id"])
    assert len(rfm) > 2000


def test_customer_totals_are_the_same_on_spark(tx: Engines) -> None:
    # when the per-customer totals that analyze() shares among RFM, the BG/NBD summary and
    # the churn features are built on both engines
    def totals(rows: Any) -> Any:
        return customer_totals(customer_days(rows, as_of=AS_OF), windows=(30,))

    table = _same_on_both(totals, tx, sort=["customer_id"]).set_index("customer_id")

    # then they agree and hold the hand-worked Z1: 20.10 on day -15, a return of 5.15 on
    # day -12, 10.05 on day -1; Z2's day nets to nothing and Z3 only returns
    z1 = table.loc["Z1"]
    assert (z1["first_day"], z1["last_day"], z1["purchase_days"]) == (-15, -1, 2)
    money = ("net", "purchase_net", "first_net", "gross", "returned", "spend_30d")
    assert [z1[name] for name in money] == [
        Decimal(v) for v in ("25.00", "30.15", "20.10", "30.15", "5.15", "25.00")
    ]
    assert (table.loc["Z2", "purchase_days"], table.loc["Z2", "net"]) == (0, Decimal("0.00"))
    assert (table.loc["Z3", "purchase_days"], table.loc["Z3", "net"]) == (0, Decimal("-12.34"))
    # and RFM read from them on Spark is RFM from the transactions
    spark = tx["spark"]
    pd.testing.assert_frame_equal(
        _frame(rfm_table(spark, as_of=AS_OF, totals=totals(spark)), ["customer_id"]),
        _frame(rfm_table(spark, as_of=AS_OF), ["customer_id"]),
    )


@pytest.mark.parametrize("monetary", ["monetary_total", "monetary_mean"])
def test_scores_and_segments_are_the_same_on_spark(tx: Engines, monetary: str) -> None:
    def scored(rows: Any) -> Any:
        return segment(rfm_scores(rfm_table(rows, as_of=AS_OF), monetary=monetary))

    # when customers are scored on quintiles and named by the default map on both engines
    segmented = _same_on_both(scored, tx, sort=["customer_id"])
    summary = _same_on_both(
        lambda rows: segment_summary(scored(rows), monetary=monetary), tx, sort=None
    )

    # then scores and names agree, every score 1..5 is used and every customer is named
    for score in ("r_score", "f_score", "m_score"):
        assert sorted(set(segmented[score])) == [1, 2, 3, 4, 5]
    assert segmented["segment"].notna().all()
    assert summary["customers"].sum() == len(segmented)
    assert summary["share_of_customers"].sum() == pytest.approx(1.0, abs=1e-12)


def test_approximate_scores_run_on_spark(tx: Engines) -> None:
    # approximate quantiles differ by engine (t-digest on DuckDB, Greenwald-Khanna on
    # Spark), so only their sense is compared: within one score of the exact one
    rfm = rfm_table(tx["spark"], as_of=AS_OF)

    exact = _frame(rfm_scores(rfm), ["customer_id"])
    approximate = _frame(rfm_scores(rfm, exact=False), ["customer_id"])

    for score in ("r_score", "f_score", "m_score"):
        assert (exact[score] - approximate[score]).abs().max() <= 1
        assert sorted(set(approximate[score])) == [1, 2, 3, 4, 5]


def test_spend_per_period_and_bands_are_the_same_on_spark(
    tx: Engines, simulated: tuple[Path, Truth]
) -> None:
    def monthly(rows: Any) -> Any:
        return spend_per_period(
            rows, start=date(2025, 11, 1), end=date(2026, 11, 1), period="month"
        )

    # when weekly spend is banded on 11 quantiles and monthly spend on money edges
    spend = _same_on_both(_weekly, tx, sort=["customer_id"])
    _same_on_both(lambda rows: spend_bands(_weekly(rows)), tx, sort=["customer_id"])
    edged = _same_on_both(
        lambda rows: spend_bands(monthly(rows), edges=[Decimal("100"), Decimal("500.50")]),
        tx,
        sort=["customer_id"],
    )
    table = _same_on_both(lambda rows: band_table(spend_bands(_weekly(rows))), tx, sort=None)

    # then the turnover is the simulator's, to the kopeck, plus the hand rows
    truth = simulated[1]
    assert spend["turnover"].sum() == truth.revenue - truth.guest_revenue + HAND_TURNOVER
    by_id = spend.set_index("customer_id")
    assert by_id.loc["Z2", "turnover"] == Decimal("0.00")
    assert by_id.loc["Z3", "turnover"] == Decimal("-12.34")
    assert by_id.loc["Z3", "spend"] == pytest.approx(-12.34 * 7 / 731, rel=1e-12)
    assert table["band"].tolist() == list(range(1, 12))
    assert table["customers"].sum() == len(spend)
    assert sorted(set(edged["band"])) == [1, 2, 3]


def test_lorenz_gini_and_best_customers_are_the_same_on_spark(tx: Engines) -> None:
    # when the spend inequality and the best customers are computed on both engines
    curve = _same_on_both(lambda rows: lorenz_curve(_weekly(rows)), tx, sort=None)
    best = _same_on_both(lambda rows: best_customers(_weekly(rows)), tx, sort=None)
    top_ten = _same_on_both(
        lambda rows: best_customers(_weekly(rows), by="turnover", top_n=10), tx, sort=None
    )
    on_duckdb, on_spark = (gini(_weekly(tx[name])) for name in ("duckdb", "spark"))

    # then they agree, and have the shape the definitions give
    assert on_spark == pytest.approx(on_duckdb, rel=1e-12)
    assert 0.3 < on_duckdb < 0.8
    assert len(curve) == 101
    assert curve.iloc[0].tolist() == [0.0, 0.0]
    assert curve.iloc[-1].tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    customers = _weekly(tx["duckdb"]).count().execute()
    assert len(best) == int(customers * 0.02)
    assert best["rank"].tolist() == list(range(1, len(best) + 1))
    assert top_ten["rank"].tolist() == list(range(1, 11))


@pytest.mark.parametrize(
    "banding",
    [{"bands": 5}, {"edges": [Decimal("500"), Decimal("2000")]}],
    ids=["quantile", "edges"],
)
def test_band_migration_is_the_same_on_spark(tx: Engines, banding: dict[str, Any]) -> None:
    period_a, period_b = HALF_YEARS

    def migration(rows: Any) -> Any:
        return band_migration(rows, period_a=period_a, period_b=period_b, period="month", **banding)

    # when customers' monthly spend is banded in two half-years on both engines
    cells = _same_on_both(migration, tx, sort=None)
    matrices = [migration_matrix(migration(tx[name])) for name in ("duckdb", "spark")]

    # then the cells and the pivoted matrix agree, and count everyone active in either
    pd.testing.assert_frame_equal(matrices[1], matrices[0])
    active = {
        customer
        for start, end in HALF_YEARS
        for customer in spend_per_period(
            tx["duckdb"], start=start, end=end, period="month"
        ).to_pandas()["customer_id"]
    }
    assert cells["customers"].sum() == len(active)
    assert matrices[0].index.tolist()[0] == "none"
    assert matrices[0].loc["none", "none"] == 0


# ---------------------------------------------------------------------------------------
# The analyses built on the same contract: lifecycle, churn, next best offer
# ---------------------------------------------------------------------------------------


def test_lifecycle_stages_are_the_same_on_spark(tx: Engines, known: Engines) -> None:
    # when the stages, prospects included, are computed on both engines
    stages = _same_on_both(
        lambda rows, customers: lifecycle_stages(rows, as_of=AS_OF, customers=customers),
        tx,
        known,
        sort=["customer_id"],
    )

    # then they agree. Z1's one gap of 14 days is its usual gap, one day silent: active;
    # Z2 and Z3 never had a purchase day: prospects
    by_id = stages.set_index("customer_id")
    assert by_id.loc["Z1"].tolist() == ["active", 14.0, 1, 2]
    assert by_id.loc[["Z2", "Z3"], "stage"].tolist() == ["prospect", "prospect"]
    assert set(stages["stage"]) == set(STAGES)


def test_churn_features_and_labels_are_the_same_on_spark(tx: Engines) -> None:
    # when the classifier's features and the labels of a later window are built on both
    features = _same_on_both(
        lambda rows: churn_features(rows, as_of=AS_OF), tx, sort=["customer_id"]
    )
    labels = _same_on_both(
        lambda rows: churn_labels(rows, as_of=LABEL_CUTOFF, horizon_days=90),
        tx,
        sort=["customer_id"],
    )

    # then they agree; Z1 bought on days -1 and -15 (30.15 in all) and returned 5.15
    z1 = features.set_index("customer_id").loc["Z1"]
    assert z1[["recency_days", "age_days", "purchase_days", "mean_gap_days"]].tolist() == [
        1.0,
        15.0,
        2.0,
        14.0,
    ]
    assert z1[["net_spend", "mean_spend", "spend_30d"]].tolist() == pytest.approx(
        [25.0, 12.5, 25.0], rel=1e-12
    )
    assert z1["return_share"] == pytest.approx(5.15 / 30.15, rel=1e-12)
    assert sorted(set(labels["churned"])) == [False, True]


@pytest.fixture(scope="module")
def churn_risk(tx: Engines) -> dict[str, pd.DataFrame]:
    """``churn_scores`` at AS_OF from each engine's table (one OpenMP thread: shared cores)."""
    settings = ChurnSettings(threads=1)
    return {name: churn_scores(table, as_of=AS_OF, settings=settings) for name, table in tx.items()}


def test_churn_p_alive_is_the_same_on_spark(churn_risk: dict[str, pd.DataFrame]) -> None:
    # BG/NBD is fitted on whole days and purchase counts, which both engines give exactly
    on_duckdb, on_spark = churn_risk["duckdb"], churn_risk["spark"]

    assert on_spark["customer_id"].tolist() == on_duckdb["customer_id"].tolist()
    assert len(on_duckdb) > 2000
    np.testing.assert_allclose(on_spark["p_alive"], on_duckdb["p_alive"], rtol=1e-12)


def test_churn_risk_is_the_same_on_spark(churn_risk: dict[str, pd.DataFrame]) -> None:
    on_duckdb, on_spark = churn_risk["duckdb"], churn_risk["spark"]

    np.testing.assert_allclose(on_spark["churn_risk"], on_duckdb["churn_risk"], rtol=1e-9)


def test_co_occurrence_and_popularity_are_the_same_on_spark(lines: Engines) -> None:
    # when the association rules and the popular items are found on both engines
    rules = _same_on_both(
        lambda rows: co_occurrence(rows, as_of=AS_OF, item="sku", min_pair_customers=3),
        lines,
        sort=None,
    )
    popular = _same_on_both(
        lambda rows: popularity(rows, as_of=AS_OF, window_days=180), lines, sort=None
    )

    # then they agree, and the rules run from the strongest lift down
    assert rules["pair_customers"].min() == 3
    assert rules["lift"].is_monotonic_decreasing
    assert popular["rank"].tolist() == list(range(1, len(popular) + 1))


def test_next_best_offers_are_the_same_on_spark(lines: Engines) -> None:
    # largest lift (not summed scores): a maximum does not depend on the summation order
    settings = OfferSettings(item="sku", k=5, neighbours=10)

    # when five products are chosen for every customer on both engines
    offers = _same_on_both(
        lambda rows: next_best_offers(rows, as_of=AS_OF, settings=settings),
        lines,
        sort=["customer_id", "rank"],
    )

    # then the offers agree, ranked 1..k, of every kind
    assert offers.groupby("customer_id")["rank"].max().max() == 5
    assert set(offers["kind"]) == {"cross-sell", "up-sell", "popular"}
