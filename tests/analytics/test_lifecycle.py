"""Lifecycle stages on hand-made customers whose purchase days and gaps are worked by hand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import ibis
import pandas as pd
import pytest
from pydantic import ValidationError

from patron.analytics.lifecycle import STAGES, LifecycleSettings, lifecycle_stages
from patron.analytics.schemas import InvalidData
from tests.fixtures.analytics import Row, transactions, utc

AS_OF = utc("2024-03-01 00:00")


def on_day(day: int, clock: str = "10:00") -> str:
    """ISO time on day ``day`` counted from the day of AS_OF (day 0; -1 is Feb 29, 2024)."""
    moment = AS_OF + timedelta(days=day)
    return f"{moment.date().isoformat()} {clock}"


def bought(customer: str, *days: int, amount: str = "10.00") -> list[Row]:
    return [(customer, on_day(day), amount) for day in days]


ROWS: list[Row] = [
    # gaps 10, 10, 10; usual 10; 5 days since the last purchase
    *bought("active", -35, -25, -15, -5),
    # gaps 12, 10, 20: median 12; 28 days silent, past 1.5 x 12 = 18, not 3 x 12 = 36
    *bought("at_risk", -70, -58, -48, -28),
    # gaps 8, 8; 84 days silent, past 3 x 8 = 24
    *bought("lapsed", -100, -92, -84),
    # one purchase day: the base's median usual gap (10, below) applies
    *bought("new", -3),
    *bought("one_timer", -40),  # 40 > 3 x 10
    # gaps 10, 10, 10, then 168 days until the return two days ago: 168 > 3 x 10
    *bought("won_back", -200, -190, -180, -170, -2),
    # one gap of 146 days: usual 146; no earlier gap, so the base's 10 judges it
    *bought("came_back", -150, -4),
    # consecutive days: gap 1, floored to 7; 11 days silent > 1.5 x 7 but not 3 x 7
    *bought("floor", -12, -11),
    # a purchase returned the same day is no purchase day, nor is a return on a later day
    *bought("returns", -20),
    ("returns", on_day(-5, "09:00"), "30.00"),
    ("returns", on_day(-5, "17:00"), "-30.00"),
    ("returns", on_day(-1), "-5.00"),
    # only at or after as_of: not a buyer yet
    ("future", on_day(0, "00:00"), "99.00"),
    ("future", on_day(3), "99.00"),
]

# The usual gaps of the customers with two or more purchase days are 10, 12, 8, 10, 146 and 7;
# their median, 10, is the usual gap of the one-day customers.
# customer: (stage, usual_gap_days, days_since_last, purchase_days)
EXPECTED: dict[str, tuple[str, float, float, int]] = {
    "active": ("active", 10.0, 5, 4),
    "at_risk": ("at_risk", 12.0, 28, 4),
    "lapsed": ("lapsed", 8.0, 84, 3),
    "new": ("new", 10.0, 3, 1),
    "one_timer": ("lapsed", 10.0, 40, 1),
    "won_back": ("won_back", 10.0, 2, 5),
    "came_back": ("won_back", 146.0, 4, 2),
    "floor": ("at_risk", 7.0, 11, 2),
    "returns": ("at_risk", 10.0, 20, 1),
}


def stages(table: Any) -> dict[str, tuple[str, float, float, int]]:
    frame = table.to_pandas().set_index("customer_id").sort_index()
    assert list(frame.columns) == ["stage", "usual_gap_days", "days_since_last", "purchase_days"]
    return {
        str(name): (
            str(row.stage),
            float(row.usual_gap_days),
            float(row.days_since_last),
            int(row.purchase_days),
        )
        for name, row in frame.iterrows()
    }


def test_every_stage_from_hand_computed_gaps() -> None:
    # given the example transactions and no customer list
    tx = transactions(ROWS)
    # when the stages are taken at AS_OF
    result = stages(lifecycle_stages(tx, as_of=AS_OF))
    # then each buyer gets the hand-worked stage, gap and recency, and "future" is absent
    assert result == EXPECTED
    assert {stage for stage, *_ in result.values()} == set(STAGES) - {"prospect"}


def test_known_customers_without_purchases_are_prospects() -> None:
    # given a customer list with a duplicate, a buyer, a buyer after as_of and a non-buyer
    tx = transactions(ROWS)
    known = ibis.memtable(pd.DataFrame({"customer_id": ["active", "future", "p1", "p1"]}))
    # when the stages are taken with that list
    frame = lifecycle_stages(tx, as_of=AS_OF, customers=known).to_pandas()
    frame = frame.set_index("customer_id").sort_index()
    # then the buyers keep their stages and the others are prospects, once each
    assert len(frame) == len(EXPECTED) + 2
    assert frame.loc["active", "stage"] == "active"
    for name in ("future", "p1"):
        row = frame.loc[name]
        assert row["stage"] == "prospect"
        assert row["purchase_days"] == 0
        assert pd.isna(row["usual_gap_days"])
        assert pd.isna(row["days_since_last"])


def test_a_past_as_of_gives_the_stages_at_that_time() -> None:
    # given the same transactions, seen on the morning of Feb 20 (day -10 of AS_OF)
    tx = transactions(ROWS)
    # when the stages are taken then
    result = stages(lifecycle_stages(tx, as_of=AS_OF - timedelta(days=10)))
    # then only earlier days count: "won_back" had lapsed and not yet returned, "came_back"
    # had bought once; the usual gaps of repeat buyers (10, 12, 8, 10, 7) have median 10
    assert result == {
        "active": ("active", 10.0, 5, 3),
        # 18 days silent is exactly 1.5 x 12: at risk only beyond it
        "at_risk": ("active", 12.0, 18, 4),
        "lapsed": ("lapsed", 8.0, 74, 3),
        "one_timer": ("at_risk", 10.0, 30, 1),
        "won_back": ("lapsed", 10.0, 160, 4),
        "came_back": ("lapsed", 10.0, 140, 1),
        "floor": ("active", 7.0, 1, 2),
        "returns": ("new", 10.0, 10, 1),
    }


def test_settings_move_the_thresholds() -> None:
    # given a fixed 30-day gap for one-day customers and a 1-day floor
    tx = transactions(ROWS)
    settings = LifecycleSettings(fallback_gap_days=30.0, min_gap_days=1.0)
    # when the stages are taken with them
    result = stages(lifecycle_stages(tx, as_of=AS_OF, settings=settings))
    # then one-day customers are judged against 30 days and the floor no longer hides the
    # one-day gap; "came_back" is judged against 3 x 30 < 146
    assert result["one_timer"] == ("new", 30.0, 40, 1)
    assert result["returns"] == ("new", 30.0, 20, 1)
    assert result["floor"] == ("lapsed", 1.0, 11, 2)
    assert result["came_back"] == ("won_back", 146.0, 4, 2)
    assert result["active"] == EXPECTED["active"]


def test_a_base_without_repeat_buyers_falls_back_to_the_floor() -> None:
    # given only one-day customers, so the base has no usual gap of its own
    tx = transactions([*bought("a", -3), *bought("b", -9), *bought("c", -30)])
    # when the stages are taken, then the 7-day floor is the usual gap
    assert stages(lifecycle_stages(tx, as_of=AS_OF)) == {
        "a": ("new", 7.0, 3, 1),
        "b": ("new", 7.0, 9, 1),  # 9 <= 1.5 x 7
        "c": ("lapsed", 7.0, 30, 1),
    }


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="lapsed_after"):
        LifecycleSettings(at_risk_after=3.0, lapsed_after=2.0)
    with pytest.raises(ValidationError, match="extra"):
        LifecycleSettings(hiatus_days=270)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        LifecycleSettings(min_gap_days=0)


def test_missing_columns_are_named() -> None:
    tx = transactions(ROWS)
    with pytest.raises(InvalidData, match="'amount'"):
        lifecycle_stages(tx.drop("amount"), as_of=AS_OF)
    known = ibis.memtable(pd.DataFrame({"id": ["x"]}))
    with pytest.raises(InvalidData, match="'customer_id'"):
        lifecycle_stages(tx, as_of=AS_OF, customers=known)
