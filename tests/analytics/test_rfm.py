"""RFM values, scores and segments on a hand-worked example (tests/fixtures/analytics.py)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import duckdb
import ibis
import pandas as pd
import pyarrow as pa
import pytest

from patron.analytics.rfm import (
    customer_days,
    customer_totals,
    quantile_cut_points,
    rfm_scores,
    rfm_table,
    segment,
    segment_summary,
)
from patron.analytics.schemas import (
    DEFAULT_SEGMENTS,
    InvalidData,
    RFMSegmentMap,
)
from tests.fixtures.analytics import (
    RFM_AS_OF,
    RFM_CUTS,
    RFM_EXPECTED,
    RFM_SCORED,
    rfm_transactions,
    transactions,
    utc,
)


def _by_customer(table: Any) -> pd.DataFrame:
    return table.to_pandas().set_index("customer_id").sort_index()


def test_rfm_table_gives_hand_computed_values() -> None:
    # given the example transactions, with returns and rows after as_of
    tx = rfm_transactions()

    # when
    frame = _by_customer(rfm_table(tx, as_of=RFM_AS_OF))

    # then: c6 (only after as_of) and c7 (only a return) have no purchase day
    assert list(frame.index) == sorted(RFM_EXPECTED)
    got = {
        customer: (
            int(row["recency"]),
            int(row["frequency"]),
            int(row["T"]),
            row["monetary_total"],
            float(row["monetary_mean"]),
        )
        for customer, row in frame.iterrows()
    }
    assert got == RFM_EXPECTED


def test_rfm_table_keeps_purchase_times_and_skips_returns_in_them() -> None:
    frame = _by_customer(rfm_table(rfm_transactions(), as_of=RFM_AS_OF))

    assert frame.loc["c1", "first_purchase"] == pd.Timestamp("2024-01-10 09:30", tz="UTC")
    assert frame.loc["c1", "last_purchase"] == pd.Timestamp("2024-02-28 10:00", tz="UTC")
    # c2's only purchase day is Feb 1: Feb 25 nets to zero
    assert frame.loc["c2", "last_purchase"] == pd.Timestamp("2024-02-01 08:00", tz="UTC")
    # c9's day holds a return at 16:00; the purchase is the line at 10:00
    assert frame.loc["c9", "last_purchase"] == pd.Timestamp("2024-02-05 10:00", tz="UTC")
    # c4's last row before as_of is one second before midnight
    assert frame.loc["c4", "last_purchase"] == pd.Timestamp("2024-02-29 23:59:59", tz="UTC")


def test_as_of_excludes_later_rows() -> None:
    # given as_of a day earlier, c4's Feb 29 row no longer counts and c8's Feb 27 row does
    frame = _by_customer(rfm_table(rfm_transactions(), as_of=utc("2024-02-28 00:00")))

    assert "c4" not in frame.index
    assert (frame.loc["c8", "recency"], frame.loc["c8", "frequency"]) == (1, 5)
    # c1's Feb 28 purchase is now in the future: recency from Feb 20
    assert (frame.loc["c1", "recency"], frame.loc["c1", "frequency"]) == (8, 2)
    assert frame.loc["c1", "monetary_total"] == 80


def test_as_of_given_as_a_date_means_its_midnight_utc() -> None:
    by_date = _by_customer(rfm_table(rfm_transactions(), as_of=date(2024, 3, 1)))
    by_time = _by_customer(rfm_table(rfm_transactions(), as_of=RFM_AS_OF))

    pd.testing.assert_frame_equal(by_date, by_time)


def test_as_of_mid_day_counts_that_day_as_day_zero() -> None:
    tx = transactions([("x", "2024-03-01 08:00", "5"), ("x", "2024-03-01 13:00", "7")])

    frame = _by_customer(rfm_table(tx, as_of=utc("2024-03-01 12:00")))

    assert frame.loc["x"][["recency", "frequency", "T"]].tolist() == [0, 1, 0]
    assert frame.loc["x", "monetary_total"] == 5


def test_weekly_unit_counts_weeks_back_from_as_of() -> None:
    # days -1 and -6 share the week before as_of; day -8 is in the week before that
    tx = transactions(
        [
            ("w", "2024-02-29 10:00", "10"),
            ("w", "2024-02-24 10:00", "10"),
            ("w", "2024-02-22 10:00", "10"),
        ]
    )

    daily = _by_customer(rfm_table(tx, as_of=RFM_AS_OF))
    weekly = _by_customer(rfm_table(tx, as_of=RFM_AS_OF, unit="W"))

    assert daily.loc["w"][["recency", "frequency", "T"]].tolist() == [1, 3, 8]
    assert weekly.loc["w"][["recency", "frequency", "T"]].tolist() == [0, 2, 1]


def test_cut_points_are_the_interpolated_quintiles() -> None:
    rfm = rfm_table(rfm_transactions(), as_of=RFM_AS_OF)

    cuts = quantile_cut_points(rfm, list(RFM_CUTS), bins=5).to_pandas().iloc[0]

    for column, expected in RFM_CUTS.items():
        got = [cuts[f"_cut_{column}_{k}"] for k in range(1, 5)]
        assert got == pytest.approx(expected)


def test_scores_and_segments_match_the_hand_worked_grid() -> None:
    rfm = rfm_table(rfm_transactions(), as_of=RFM_AS_OF)

    frame = _by_customer(segment(rfm_scores(rfm)))

    got = {
        customer: (int(row["r_score"]), int(row["f_score"]), int(row["m_score"]), row["segment"])
        for customer, row in frame.iterrows()
    }
    assert got == RFM_SCORED


def test_scores_can_use_mean_spend_and_approximate_quantiles() -> None:
    rfm = rfm_table(rfm_transactions(), as_of=RFM_AS_OF)

    exact = _by_customer(rfm_scores(rfm, monetary="monetary_mean"))
    approximate = _by_customer(rfm_scores(rfm, exact=False))

    # mean spend 10 40 10 150 37.5 60 100 300 -> cuts 21, 39.5, 68, 130 (position 7p)
    assert exact["m_score"].to_dict() == {
        "c1": 3, "c10": 5, "c2": 3, "c3": 5, "c4": 1, "c5": 2, "c8": 1, "c9": 4,
    }  # fmt: skip
    assert approximate["r_score"].between(1, 5).all()
    assert approximate["f_score"].between(1, 5).all()


def test_equal_values_get_equal_scores() -> None:
    # given six customers who all bought once, for 10, on the same day
    rows = [(f"t{i}", "2024-02-01 10:00", "10") for i in range(6)]

    frame = _by_customer(rfm_scores(rfm_table(transactions(rows), as_of=RFM_AS_OF)))

    # then every cut point equals the common value, and each tie takes the lower score
    assert set(frame["r_score"]) == {1}
    assert set(frame["f_score"]) == {1}
    assert set(frame["m_score"]) == {1}


def test_default_segment_map_covers_every_cell_exactly_once() -> None:
    counts = {
        (r, f): len(DEFAULT_SEGMENTS.matching_rules(r, f)) for r, f, _ in DEFAULT_SEGMENTS.cells()
    }

    assert len(counts) == 25
    assert set(counts.values()) == {1}
    assert len(DEFAULT_SEGMENTS.names) == 11


@pytest.mark.parametrize(
    ("r", "f", "name"),
    [
        (5, 5, "Champions"),
        (5, 4, "Champions"),
        (4, 5, "Loyal"),
        (3, 4, "Loyal"),
        (5, 2, "Potential loyalist"),
        (4, 3, "Potential loyalist"),
        (5, 1, "New"),
        (4, 1, "Promising"),
        (3, 3, "Need attention"),
        (3, 1, "About to sleep"),
        (2, 3, "At risk"),
        (1, 4, "At risk"),
        (1, 5, "Can't lose them"),
        (2, 2, "Hibernating"),
        (1, 1, "Lost"),
        (1, 2, "Lost"),
    ],
)
def test_default_segment_of_a_cell(r: int, f: int, name: str) -> None:
    assert DEFAULT_SEGMENTS.segment_of(r, f) == name


def test_segment_map_is_data_read_from_config() -> None:
    # given a map written as config, with overlaps resolved by order and an M range
    config = {
        "bins": 3,
        "rules": [
            {"name": "Best", "recency": 3, "frequency": 3, "monetary": [2, 3]},
            {"name": "Active", "recency": [2, 3], "frequency": [1, 3]},
            {"name": "Gone", "recency": 1, "frequency": [1, 3]},
        ],
    }

    segment_map = RFMSegmentMap.model_validate(config)

    assert segment_map.uses_monetary
    assert segment_map.segment_of(3, 3, 3) == "Best"
    assert segment_map.segment_of(3, 3, 1) == "Active"
    assert segment_map.matching_rules(3, 3, 2) == ["Best", "Active"]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [{"name": "A", "recency": [1, 4], "frequency": [1, 5]}],
            "no rule covers the cell r=5, f=1",
        ),
        (
            [
                {"name": "All", "recency": [1, 5], "frequency": [1, 5]},
                {"name": "Dead", "recency": 5, "frequency": 5},
            ],
            "rule 'Dead' is hidden",
        ),
        ([{"name": "A", "recency": [1, 6], "frequency": [1, 5]}], "exceeds 5 bins"),
        ([{"name": "A", "recency": [3, 1], "frequency": [1, 5]}], "is empty"),
    ],
)
def test_bad_segment_maps_are_rejected(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RFMSegmentMap.model_validate({"rules": rules})


def test_segment_compiles_a_custom_map_with_monetary() -> None:
    segment_map = RFMSegmentMap.model_validate(
        {
            "rules": [
                {"name": "Big", "recency": [1, 5], "frequency": [1, 5], "monetary": 5},
                {"name": "Rest", "recency": [1, 5], "frequency": [1, 5]},
            ]
        }
    )
    scored = rfm_scores(rfm_table(rfm_transactions(), as_of=RFM_AS_OF))

    frame = _by_customer(segment(scored, segment_map, name="tier"))

    assert frame["tier"].to_dict() == {
        "c1": "Big", "c10": "Big", "c2": "Rest", "c3": "Rest",
        "c4": "Rest", "c5": "Rest", "c8": "Rest", "c9": "Rest",
    }  # fmt: skip


def test_segment_summary_counts_and_shares() -> None:
    scored = rfm_scores(rfm_table(rfm_transactions(), as_of=RFM_AS_OF))

    summary = segment_summary(segment(scored)).to_pandas()

    # one customer in each of eight segments, in the map's order; total spend 1205
    assert summary["segment"].tolist() == [
        "Champions", "Loyal", "New", "Need attention", "About to sleep",
        "At risk", "Hibernating", "Lost",
    ]  # fmt: skip
    assert summary["customers"].tolist() == [1] * 8
    assert summary["share_of_customers"].tolist() == [0.125] * 8
    champions = summary.set_index("segment").loc["Champions"]
    assert champions["share_of_monetary"] == pytest.approx(180 / 1205)
    assert summary["share_of_monetary"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("missing", ["customer_id", "ts", "amount"])
def test_missing_column_is_named(missing: str) -> None:
    tx = rfm_transactions().drop(missing)

    with pytest.raises(InvalidData, match=f"lack column '{missing}'"):
        rfm_table(tx, as_of=RFM_AS_OF)


def test_renamed_columns_are_read_by_keyword() -> None:
    tx = rfm_transactions().rename(client="customer_id", placed_at="ts", total="amount")

    frame = rfm_table(tx, as_of=RFM_AS_OF, customer="client", ts="placed_at", amount="total")

    assert frame.to_pandas().set_index("client")["frequency"].to_dict()["c8"] == 5


def test_wrong_column_types_are_named() -> None:
    tx = rfm_transactions()

    with pytest.raises(ValueError, match="'ts' of transactions must be a timestamp"):
        rfm_table(tx.mutate(ts=tx["ts"].cast("string")), as_of=RFM_AS_OF)
    with pytest.raises(ValueError, match="'amount' of transactions must be numeric"):
        rfm_table(tx.mutate(amount=tx["amount"].cast("string")), as_of=RFM_AS_OF)
    with pytest.raises(ValueError, match="lack column 'recency'"):
        rfm_scores(tx)
    with pytest.raises(ValueError, match="unit must be one of"):
        rfm_table(tx, as_of=RFM_AS_OF, unit="M")  # type: ignore[arg-type]


def test_same_rfm_expression_on_duckdb_and_sqlite() -> None:
    # given one expression; SQLite stores no decimals, so the amounts are floats here
    rfm = rfm_table(rfm_transactions(as_float=True), as_of=RFM_AS_OF)
    duck = ibis.duckdb.connect()
    lite = ibis.sqlite.connect()

    # when each backend runs it
    on_duckdb = duck.to_pandas(rfm).set_index("customer_id").sort_index()
    on_sqlite = lite.to_pandas(rfm).set_index("customer_id").sort_index()

    # then the results agree to the value (scores need quantiles, which SQLite lacks)
    pd.testing.assert_frame_equal(on_duckdb, on_sqlite, check_dtype=False)
    assert on_sqlite["frequency"].to_dict() == {c: v[1] for c, v in RFM_EXPECTED.items()}


def test_day_sums_are_exact_and_a_day_beyond_18_digits_is_refused() -> None:
    # given two orders of 9 * 10^15 each, the largest a decimal(18, 2) day keeps
    big = Decimal("9000000000000000.00")

    def orders(*days: int) -> Any:
        return ibis.memtable(
            pa.table(
                {
                    "customer_id": pa.array([1] * len(days), pa.int64()),
                    "ts": pa.array(
                        [utc(f"2024-01-0{day} 10:00") for day in days],
                        pa.timestamp("us", tz="UTC"),
                    ),
                    "amount": pa.array([big] * len(days), pa.decimal128(18, 2)),
                }
            )
        )

    # when they fall on two days, each day fits and the customer's total is exact
    two_days = orders(1, 2)
    frame = rfm_table(two_days, as_of=RFM_AS_OF, days=customer_days(two_days, as_of=RFM_AS_OF))
    assert frame.to_pandas()["monetary_total"].tolist() == [Decimal("18000000000000000.00")]

    # when they fall on one day, the engine refuses the day rather than round it
    with pytest.raises(duckdb.ConversionException, match="out of range"):
        customer_days(orders(1, 1), as_of=RFM_AS_OF).to_pandas()


def test_customer_days_net_each_day_exactly_in_the_amounts_64_bit_decimal() -> None:
    # given the example's transactions in exact decimals and as floats
    for as_float, money in ((False, Decimal), (True, float)):
        days = customer_days(rfm_transactions(as_float=as_float), as_of=RFM_AS_OF)

        # when the days of c3 (a purchase, a later return), c7 (a return alone) and c9 (a
        # partial return the same day) are read, with the engine's own type of each sum
        frame = days.mutate(
            net_type=days["net"].typeof(), gross_type=days["gross"].typeof()
        ).to_pandas()
        frame = frame[frame["customer_id"].isin(["c3", "c7", "c9"])]
        got = sorted(
            (row.customer_id, row.day, money(row.net),
             None if pd.isna(row.gross) else money(row.gross),
             None if pd.isna(row.returned) else money(row.returned))
            for row in frame.itertuples()
        )  # fmt: skip

        # then each day nets its rows, a day of returns alone has no gross
        assert got == [
            ("c3", -46, money("200.00"), money("200.00"), None),
            ("c3", -41, money("-50.00"), None, money("50.00")),
            ("c7", -15, money("-30.00"), None, money("30.00")),
            ("c9", -25, money("100.00"), money("120.00"), money("20.00")),
        ], as_float
        # and the money of exact amounts stays in 18 digits (64 bits), which every later
        # pass by customer reads faster than the 128 bits a difference of sums widens to
        kind = "DOUBLE" if as_float else "DECIMAL(18,2)"
        assert set(frame["net_type"]) == set(frame["gross_type"]) == {kind}
        # and the totals made from them, kept in the engine as the pipeline keeps them,
        # leave c7, who has no purchase day, without a first purchase day or its net
        totals = customer_totals(days).cache().to_pandas().set_index("customer_id")
        assert totals.loc["c7", ["purchase_days", "net"]].tolist() == [0, money("-30.00")]
        assert totals.loc["c7", ["first_day", "first_net"]].isna().all()


def test_customer_totals_are_the_hand_worked_sums() -> None:
    # given the example's customer days as of Mar 1, with 30- and 90-day windows
    tx = rfm_transactions()
    totals = customer_totals(customer_days(tx, as_of=RFM_AS_OF), windows=(30, 90))

    # when
    frame = totals.to_pandas().set_index("customer_id").sort_index()

    # then c7 (only a return) has no purchase day, and c6 (only after as_of) no row
    assert list(frame.index) == sorted([*RFM_EXPECTED, "c7"])
    columns = [
        "first_day", "last_day", "purchase_days", "net", "purchase_net", "first_net",
        "gross", "returned", "spend_30d", "purchase_days_30d", "spend_90d", "purchase_days_90d",
    ]  # fmt: skip
    got = {
        customer: [None if pd.isna(value) else value for value in frame.loc[customer, columns]]
        for customer in ("c3", "c5", "c7", "c9")
    }
    money = Decimal
    assert got == {
        # a purchase on day -46 and a return of 50 on day -41
        "c3": [-46, -46, 1, money("150.00"), money("200.00"), money("200.00"),
               money("200.00"), money("50.00"), None, 0, money("150.00"), 1],
        # two rows on day -91 make one purchase day of 50; day -20 is inside 30 days
        "c5": [-91, -20, 2, money("75.00"), money("75.00"), money("50.00"),
               money("75.00"), None, money("25.00"), 1, money("25.00"), 1],
        # a return alone is no purchase day but counts in the nets
        "c7": [None, None, 0, money("-30.00"), None, None,
               None, money("30.00"), money("-30.00"), 0, money("-30.00"), 0],
        # a partial return the same day: the day nets 100 and is a purchase day
        "c9": [-25, -25, 1, money("100.00"), money("100.00"), money("100.00"),
               money("120.00"), money("20.00"), money("100.00"), 1, money("100.00"), 1],
    }  # fmt: skip
    assert frame.loc["c1", "first_purchase"] == pd.Timestamp("2024-01-10 09:30", tz="UTC")
    assert frame.loc["c1", "last_purchase"] == pd.Timestamp("2024-02-28 10:00", tz="UTC")


def test_rfm_table_from_customer_totals_is_the_table_from_the_transactions() -> None:
    # given the example and its customer totals
    tx = rfm_transactions()
    totals = customer_totals(customer_days(tx, as_of=RFM_AS_OF))

    # when RFM is read from the totals, then it is RFM from the transactions
    pd.testing.assert_frame_equal(
        _by_customer(rfm_table(tx, as_of=RFM_AS_OF, totals=totals)),
        _by_customer(rfm_table(tx, as_of=RFM_AS_OF)),
    )
    # and totals, which count days, cannot give weeks
    with pytest.raises(InvalidData, match="RFM in days only"):
        rfm_table(tx, as_of=RFM_AS_OF, unit="W", totals=totals)
