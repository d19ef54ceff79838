"""The analytics run unchanged on PySpark in local mode: the same Python builds every
expression from a DuckDB table and from a Spark table of the same rows, and both engines
give the same RFM, segments, spend bands, Lorenz curve, Gini and band migration.

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

from patron.analytics.rfm import rfm_scores, rfm_table, segment, segment_summary
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
from tests.fixtures.spark import spark  # noqa: F401

pytestmark = [
    pytest.mark.spark,
    # pyspark 4.0's toPandas passes copy= to pandas 3's astype; nothing of ours to fix
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
"""The simulator's history ends at Moscow midnight, 2026-10-31 21:00 UTC."""

HISTORY = (datetime(2024, 10, 31, tzinfo=UTC), AS_OF)
"""A window holding every simulated order (the first Moscow midnight is 21:00 UTC)."""

HALF_YEARS = ((date(2025, 11, 1), date(2026, 5, 1)), (date(2026, 5, 1), date(2026, 11, 1)))

SCHEMA = ibis.schema(
    {"customer_id": "string", "ts": "timestamp('UTC')", "amount": "decimal(18, 2)"}
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
"""Engine name to the transactions table on that engine."""


def _transactions(folder: Path) -> tuple[pd.DataFrame, Truth]:
    truth = generate(folder, customers=3000, seed=5)
    orders = pd.read_csv(
        folder / "orders.csv", dtype={"customer_id": "string", "unit_price": "string"}
    )
    orders = orders[orders["customer_id"].fillna("").str.len() > 0]  # guests have no id
    simulated = pd.DataFrame(
        {
            "customer_id": orders["customer_id"],
            "ts": pd.to_datetime(orders["placed_at"], utc=True),
            "amount": [
                Decimal(price) * quantity
                for price, quantity in zip(orders["unit_price"], orders["quantity"], strict=True)
            ],
        }
    )
    hand = pd.DataFrame(HAND_ROWS, columns=["customer_id", "ts", "amount"])
    hand["ts"] = pd.to_datetime(hand["ts"], utc=True)
    hand["amount"] = hand["amount"].map(Decimal)
    return pd.concat([simulated, hand], ignore_index=True), truth


@pytest.fixture(scope="module")
def data(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Engines, Truth]:  # noqa: F811
    """The same rows as a table on DuckDB and on Spark, and the simulator's truth."""
    frame, truth = _transactions(tmp_path_factory.mktemp("synthetic"))
    rows = ibis.memtable(frame, schema=SCHEMA)
    engines = {
        "duckdb": ibis.duckdb.connect().create_table("transactions", rows),
        "spark": spark.create_table("test_spark_transactions", rows),
    }
    return engines, truth


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
    data: tuple[Engines, Truth], build: Callable[[Any], Any], *, sort: list[str] | None
) -> pd.DataFrame:
    """Run ``build`` on each engine's table and assert equal results; return DuckDB's.

    ``sort`` orders rows whose order the expression leaves open (None: the expression
    orders them). Integers, strings, decimals and times must be equal, floats within
    1e-9 relative (engines sum floats in different orders).
    """
    engines, _ = data
    on_duckdb = _frame(build(engines["duckdb"]), sort)
    on_spark = _frame(build(engines["spark"]), sort)

    assert list(on_spark.columns) == list(on_duckdb.columns)
    assert {c: _kind(on_spark[c]) for c in on_spark} == {c: _kind(on_duckdb[c]) for c in on_duckdb}
    for name in on_duckdb.columns:
        left, right = on_duckdb[name], on_spark[name]
        if left.dtype.kind == "f":
            np.testing.assert_allclose(right, left, rtol=1e-9, atol=1e-12, err_msg=name)
        else:
            assert right.tolist() == left.tolist(), name
    return on_duckdb


@pytest.mark.parametrize("unit", ["D", "W"])
def test_rfm_table_is_the_same_on_spark(
    data: tuple[Engines, Truth], unit: Literal["D", "W"]
) -> None:
    # when the RFM table is built on both engines
    rfm = _same_on_both(
        data, lambda tx: rfm_table(tx, as_of=AS_OF, unit=unit), sort=["customer_id"]
    )

    # then it is equal and holds the hand-worked Z1; Z2 and Z3 have no purchase day
    z1 = rfm.set_index("customer_id").loc["Z1"]
    expected = {"D": (1, 2, 15), "W": (0, 2, 2)}[unit]  # days -1, -15; weeks -1, -3
    assert (z1["recency"], z1["frequency"], z1["T"]) == expected
    assert z1["monetary_total"] == Decimal("25.00")
    assert z1["first_purchase"] == pd.Timestamp("2026-10-17 00:00:00", tz=UTC)
    assert z1["last_purchase"] == pd.Timestamp("2026-10-31 23:59:59", tz=UTC)
    assert not {"Z2", "Z3"} & set(rfm["customer_id"])
    assert len(rfm) > 2000


@pytest.mark.parametrize("monetary", ["monetary_total", "monetary_mean"])
def test_scores_and_segments_are_the_same_on_spark(
    data: tuple[Engines, Truth], monetary: str
) -> None:
    def scored(tx: Any) -> Any:
        return segment(rfm_scores(rfm_table(tx, as_of=AS_OF), monetary=monetary))

    # when customers are scored on quintiles and named by the default map on both engines
    segmented = _same_on_both(data, scored, sort=["customer_id"])
    summary = _same_on_both(
        data, lambda tx: segment_summary(scored(tx), monetary=monetary), sort=None
    )

    # then scores and names agree, every score 1..5 is used and every customer is named
    for score in ("r_score", "f_score", "m_score"):
        assert sorted(set(segmented[score])) == [1, 2, 3, 4, 5]
    assert segmented["segment"].notna().all()
    assert summary["customers"].sum() == len(segmented)
    assert summary["share_of_customers"].sum() == pytest.approx(1.0, abs=1e-12)


def test_approximate_scores_run_on_spark(data: tuple[Engines, Truth]) -> None:
    # approximate quantiles differ by engine (t-digest on DuckDB, Greenwald-Khanna on
    # Spark), so only their sense is compared: within one score of the exact one
    engines, _ = data
    rfm = rfm_table(engines["spark"], as_of=AS_OF)

    exact = _frame(rfm_scores(rfm), ["customer_id"])
    approximate = _frame(rfm_scores(rfm, exact=False), ["customer_id"])

    for score in ("r_score", "f_score", "m_score"):
        assert (exact[score] - approximate[score]).abs().max() <= 1
        assert sorted(set(approximate[score])) == [1, 2, 3, 4, 5]


def test_spend_per_period_and_bands_are_the_same_on_spark(data: tuple[Engines, Truth]) -> None:
    _, truth = data

    def weekly(tx: Any) -> Any:
        return spend_per_period(tx, start=HISTORY[0], end=HISTORY[1])

    def monthly(tx: Any) -> Any:
        return spend_per_period(tx, start=date(2025, 11, 1), end=date(2026, 11, 1), period="month")

    # when weekly spend is banded on 11 quantiles and monthly spend on money edges
    spend = _same_on_both(data, weekly, sort=["customer_id"])
    _same_on_both(data, lambda tx: spend_bands(weekly(tx)), sort=["customer_id"])
    edged = _same_on_both(
        data,
        lambda tx: spend_bands(monthly(tx), edges=[Decimal("100"), Decimal("500.50")]),
        sort=["customer_id"],
    )
    table = _same_on_both(data, lambda tx: band_table(spend_bands(weekly(tx))), sort=None)

    # then the turnover is the simulator's, to the kopeck, plus the hand rows
    assert spend["turnover"].sum() == truth.revenue - truth.guest_revenue + HAND_TURNOVER
    by_id = spend.set_index("customer_id")
    assert by_id.loc["Z2", "turnover"] == Decimal("0.00")
    assert by_id.loc["Z3", "turnover"] == Decimal("-12.34")
    assert by_id.loc["Z3", "spend"] == pytest.approx(-12.34 * 7 / 731, rel=1e-12)
    assert table["band"].tolist() == list(range(1, 12))
    assert table["customers"].sum() == len(spend)
    assert sorted(set(edged["band"])) == [1, 2, 3]


def test_lorenz_gini_and_best_customers_are_the_same_on_spark(
    data: tuple[Engines, Truth],
) -> None:
    engines, _ = data

    def weekly(tx: Any) -> Any:
        return spend_per_period(tx, start=HISTORY[0], end=HISTORY[1])

    # when the spend inequality and the best customers are computed on both engines
    curve = _same_on_both(data, lambda tx: lorenz_curve(weekly(tx)), sort=None)
    best = _same_on_both(data, lambda tx: best_customers(weekly(tx)), sort=None)
    top_ten = _same_on_both(
        data, lambda tx: best_customers(weekly(tx), by="turnover", top_n=10), sort=None
    )
    on_duckdb, on_spark = (gini(weekly(engines[name])) for name in ("duckdb", "spark"))

    # then they agree, and have the shape the definitions give
    assert on_spark == pytest.approx(on_duckdb, rel=1e-12)
    assert 0.3 < on_duckdb < 0.8
    assert len(curve) == 101
    assert curve.iloc[0].tolist() == [0.0, 0.0]
    assert curve.iloc[-1].tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    customers = weekly(engines["duckdb"]).count().execute()
    assert len(best) == int(customers * 0.02)
    assert best["rank"].tolist() == list(range(1, len(best) + 1))
    assert top_ten["rank"].tolist() == list(range(1, 11))


@pytest.mark.parametrize(
    "banding",
    [{"bands": 5}, {"edges": [Decimal("500"), Decimal("2000")]}],
    ids=["quantile", "edges"],
)
def test_band_migration_is_the_same_on_spark(
    data: tuple[Engines, Truth], banding: dict[str, Any]
) -> None:
    engines, _ = data
    period_a, period_b = HALF_YEARS

    def migration(tx: Any) -> Any:
        return band_migration(tx, period_a=period_a, period_b=period_b, period="month", **banding)

    # when customers' monthly spend is banded in two half-years on both engines
    cells = _same_on_both(data, migration, sort=None)
    matrices = [migration_matrix(migration(engines[name])) for name in ("duckdb", "spark")]

    # then the cells and the pivoted matrix agree, and count everyone active in either
    pd.testing.assert_frame_equal(matrices[1], matrices[0])
    active = {
        customer
        for start, end in HALF_YEARS
        for customer in spend_per_period(
            engines["duckdb"], start=start, end=end, period="month"
        ).to_pandas()["customer_id"]
    }
    assert cells["customers"].sum() == len(active)
    assert matrices[0].index.tolist()[0] == "none"
    assert matrices[0].loc["none", "none"] == 0
