"""Spend per period, spend bands, Lorenz curve, Gini, best customers and band migration on
hand-worked examples (tests/fixtures/analytics.py), and the simulator's spend mix."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import ibis
import pandas as pd
import pytest

from patron.analytics.schemas import InvalidData
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
from patron.ingest.synthetic import generate
from tests.fixtures.analytics import (
    EDGES,
    SPEND_A,
    SPEND_ROWS,
    WINDOW_A,
    WINDOW_B,
    per_customer,
    spend_transactions,
    transactions,
)


def _weekly_a() -> Any:
    return spend_per_period(spend_transactions(), start=WINDOW_A[0], end=WINDOW_A[1])


def _column(table: Any, column: str) -> dict[str, Any]:
    frame = table.to_pandas()
    return dict(zip(frame["customer_id"], frame[column].tolist(), strict=True))


def test_weekly_spend_nets_returns_and_keeps_to_the_window() -> None:
    # given four weeks of transactions, with returns and rows just outside the window
    table = _weekly_a()

    # then s7 (only outside) is absent, s6 nets to zero and s9 to 24 over 4 weeks
    assert _column(table, "spend") == SPEND_A
    assert _column(table, "turnover")["s9"] == 24


def test_monthly_spend_counts_calendar_months() -> None:
    table = spend_per_period(
        spend_transactions(), start=date(2024, 1, 1), end=date(2024, 3, 1), period="month"
    )

    # s5 spent 150 + 250 + 400 over January and February
    assert _column(table, "spend")["s5"] == 400.0


def test_monthly_window_must_start_on_the_first() -> None:
    with pytest.raises(InvalidData, match="first of a month"):
        spend_per_period(
            spend_transactions(), start=date(2024, 1, 2), end=date(2024, 3, 1), period="month"
        )
    with pytest.raises(InvalidData, match="must end after it starts"):
        spend_per_period(spend_transactions(), start=WINDOW_A[1], end=WINDOW_A[0])


def test_fixed_edges_make_left_closed_bands() -> None:
    banded = spend_bands(_weekly_a(), edges=EDGES)

    # [.., 2) [2, 5) [5, 10) [10, ..): an edge value (2, 5, 10) opens the band above it
    assert _column(banded, "band") == {
        "s6": 1, "s2": 1, "s3": 2, "s8": 2, "s4": 3, "s9": 3, "s10": 3, "s1": 4, "s5": 4,
    }  # fmt: skip


def test_band_table_counts_and_shares() -> None:
    table = band_table(spend_bands(_weekly_a(), edges=EDGES)).to_pandas()

    # turnover per week 1, 5, 20, 110 of 136; customers 2, 2, 3, 2 of 9
    assert table["band"].tolist() == [1, 2, 3, 4]
    assert table["customers"].tolist() == [2, 2, 3, 2]
    assert table["turnover"].tolist() == [1.0, 5.0, 20.0, 110.0]
    assert table["share_of_customers"].tolist() == pytest.approx([2 / 9, 2 / 9, 3 / 9, 2 / 9])
    assert table["share_of_turnover"].tolist() == pytest.approx(
        [1 / 136, 5 / 136, 20 / 136, 110 / 136]
    )
    assert table["share_of_customers"].sum() == pytest.approx(1.0)
    assert table["share_of_turnover"].sum() == pytest.approx(1.0)
    assert table[["min_spend", "max_spend"]].iloc[3].tolist() == [10.0, 100.0]


def test_quantile_bands_keep_ties_on_a_cut_in_the_lower_band() -> None:
    # spend 0 1 2 3 5 6 9 10 100: tertile cuts at 8/3 (2.67) and 7 (position 8p)
    table = band_table(spend_bands(_weekly_a(), bands=3)).to_pandas()

    assert table["customers"].tolist() == [3, 3, 3]
    assert table["turnover"].tolist() == [3.0, 14.0, 119.0]

    # a cut point that equals a run of values: 0 0 0 0 1 -> halves cut at 0
    ties = band_table(spend_bands(per_customer(dict.fromkeys("abcd", 0.0) | {"e": 1.0}), bands=2))
    assert ties.to_pandas()["customers"].tolist() == [4, 1]


def test_eleven_quantile_bands_by_default() -> None:
    spend = {f"c{i:02d}": float(i) for i in range(1, 23)}

    table = band_table(spend_bands(per_customer(spend))).to_pandas()

    assert table["band"].tolist() == list(range(1, 12))
    assert table["customers"].tolist() == [2] * 11


def test_bad_band_settings_are_rejected() -> None:
    with pytest.raises(InvalidData, match="increase strictly"):
        spend_bands(_weekly_a(), edges=[5, 2])
    with pytest.raises(InvalidData, match="3 edges make 4 bands, not 11"):
        spend_bands(_weekly_a(), edges=EDGES, bands=11)
    with pytest.raises(ValueError, match="lack column 'spend'"):
        spend_bands(_weekly_a().drop("spend"))


@pytest.mark.parametrize(
    ("spend", "expected"),
    [
        ([5.0, 5.0, 5.0, 5.0], 0.0),  # equal spend
        ([0.0, 0.0, 0.0, 12.0], 0.75),  # one has all: (n - 1) / n
        ([0.0, 7.0], 0.5),
        ([1.0, 2.0, 3.0, 4.0], 0.25),  # mean absolute difference 20 / (2 * 16 * 2.5)
        ([4.0, 1.0, 3.0, 2.0], 0.25),  # the order rows come in does not matter
    ],
)
def test_gini_hand_examples(spend: list[float], expected: float) -> None:
    table = per_customer({f"c{i}": value for i, value in enumerate(spend)})

    assert gini(table) == pytest.approx(expected, abs=1e-12)


def test_gini_of_the_weekly_spend() -> None:
    # sorted 0 1 2 3 5 6 9 10 100: sum i*s = 1124, n = 9, S = 136 -> 2248/1224 - 10/9 = 37/51
    assert gini(_weekly_a()) == pytest.approx(37 / 51, abs=1e-12)


def test_gini_needs_positive_spend() -> None:
    with pytest.raises(InvalidData, match="positive total spend"):
        gini(per_customer({"a": 0.0, "b": 0.0}))


def test_lorenz_curve_runs_from_origin_to_one() -> None:
    curve = lorenz_curve(_weekly_a()).to_pandas()

    # nine customers, fewer than 100 points: every customer is a point, plus the origin
    assert curve["customers_share"].tolist() == pytest.approx([k / 9 for k in range(10)])
    running = [0, 0, 1, 3, 6, 11, 17, 26, 36, 136]
    assert curve["turnover_share"].tolist() == pytest.approx([r / 136 for r in running])
    assert curve.iloc[0].tolist() == [0.0, 0.0]
    assert curve.iloc[-1].tolist() == pytest.approx([1.0, 1.0])


def test_lorenz_curve_keeps_one_point_per_step() -> None:
    curve = lorenz_curve(_weekly_a(), points=3).to_pandas()

    assert curve["customers_share"].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert curve["turnover_share"].tolist() == pytest.approx([0, 3 / 136, 17 / 136, 1])


def test_best_customers_by_count_and_share() -> None:
    table = _weekly_a()

    top_two = best_customers(table, top_n=2).to_pandas()
    quarter = best_customers(table, top_share=0.25).to_pandas()
    default = best_customers(table).to_pandas()

    assert top_two.to_dict("list") == {
        "customer_id": ["s5", "s1"], "spend": [100.0, 10.0], "rank": [1, 2],
    }  # fmt: skip
    # 25% of 9 is 2.25, rounded down
    assert quarter["customer_id"].tolist() == ["s5", "s1"]
    # 2% of 9 customers is nobody
    assert default.empty


def test_best_customers_break_ties_by_id_and_read_any_column() -> None:
    table = per_customer({"b": 5.0, "a": 5.0, "c": 1.0}).rename(clv="spend")

    top = best_customers(table, by="clv", top_n=1).to_pandas()

    assert top[["customer_id", "clv"]].values.tolist() == [["a", 5.0]]
    # 0.29 * 100 is 28.999999999999996 in floating point; the 29th customer still counts
    hundred = per_customer({f"c{i:03d}": float(i) for i in range(100)})
    assert len(best_customers(hundred, top_share=0.29).to_pandas()) == 29
    with pytest.raises(InvalidData, match="not both"):
        best_customers(table, by="clv", top_n=1, top_share=0.1)


def test_band_migration_with_fixed_edges() -> None:
    migration = band_migration(
        spend_transactions(), period_a=WINDOW_A, period_b=WINDOW_B, edges=EDGES
    )

    cells = {(a, b): n for a, b, n in migration.to_pandas().itertuples(index=False)}

    # s11 is new in B; s3 and s6 bought nothing in B; s7 bought in neither
    assert cells == {
        ("none", "1"): 1,  # s11
        ("1", "3"): 1,  # s2: 1 -> 5 a week
        ("1", "none"): 1,  # s6
        ("2", "2"): 1,  # s8
        ("2", "none"): 1,  # s3
        ("3", "2"): 1,  # s4: 5 -> 2
        ("3", "3"): 1,  # s9
        ("3", "4"): 1,  # s10: 9 -> 11
        ("4", "4"): 2,  # s1, s5
    }
    assert list(cells) == sorted(
        cells, key=lambda c: tuple(-1 if x == "none" else int(x) for x in c)
    )


def test_band_migration_quantile_bands_use_window_a_cuts() -> None:
    # window A's tertile cuts (2.67 and 7) band window B's spend too
    migration = band_migration(spend_transactions(), period_a=WINDOW_A, period_b=WINDOW_B, bands=3)

    matrix = migration_matrix(migration)

    assert matrix.index.tolist() == ["none", "1", "2", "3"]
    assert matrix.columns.tolist() == ["none", "1", "2", "3"]
    assert matrix.values.tolist() == [
        [0, 1, 0, 0],  # s11 new
        [2, 0, 1, 0],  # s3, s6 gone; s2 up
        [0, 1, 2, 0],  # s4 down; s8, s9 stay
        [0, 0, 0, 3],  # s1, s5, s10 stay
    ]


def test_same_spend_expressions_on_duckdb_and_sqlite() -> None:
    # given float amounts (SQLite stores no decimals) and fixed edges (it has no quantiles)
    tx = transactions(SPEND_ROWS, as_float=True)
    weekly = spend_per_period(tx, start=WINDOW_A[0], end=WINDOW_A[1])
    expressions = {
        "bands": band_table(spend_bands(weekly, edges=EDGES)),
        "lorenz": lorenz_curve(weekly, points=3),
        "best": best_customers(weekly, top_n=3),
        "migration": band_migration(tx, period_a=WINDOW_A, period_b=WINDOW_B, edges=EDGES),
    }
    duck = ibis.duckdb.connect()
    lite = ibis.sqlite.connect()

    for name, expression in expressions.items():
        on_duckdb = duck.to_pandas(expression)
        on_sqlite = lite.to_pandas(expression)

        pd.testing.assert_frame_equal(on_duckdb, on_sqlite, check_dtype=False, obj=name)


def test_spend_mix_of_the_simulator(tmp_path: Path) -> None:
    # given the simulator's orders, one row per line, returns negative
    generate(tmp_path, customers=3000, seed=5)
    orders = pd.read_csv(tmp_path / "orders.csv", dtype={"customer_id": "string"})
    orders = orders[orders["customer_id"].fillna("").str.len() > 0]
    frame = pd.DataFrame(
        {
            "customer_id": orders["customer_id"],
            "ts": pd.to_datetime(orders["placed_at"], utc=True),
            "amount": orders["quantity"] * orders["unit_price"],
        }
    )
    tx = ibis.memtable(frame)
    start = datetime(2024, 10, 31, tzinfo=UTC)  # before the first Moscow midnight
    end = datetime(2026, 11, 1, tzinfo=UTC)

    # when weekly spend is banded and the top 2% are picked
    weekly = spend_per_period(tx, start=start, end=end)
    print(band_table(spend_bands(weekly)).to_pandas().to_string())
    top = best_customers(weekly, top_share=0.02).to_pandas()
    total = weekly.to_pandas()["spend"].sum()
    share = top["spend"].sum() / total
    print(f"top 2%: {len(top)} customers, {share:.1%} of turnover")

    # then they hold about what the articles report (10.3%)
    assert 0.07 <= share <= 0.15
