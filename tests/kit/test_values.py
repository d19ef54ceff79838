"""Money and clock parsing."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from patron.kit.clock import parse_date, parse_datetime
from patron.kit.money import parse_money, round_money


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1234.5", "1234.5"),
        ("1 234,50", "1234.50"),
        ("1,234.50", "1234.50"),
        (0.1, "0.1"),
        (7, "7"),
    ],
)
def test_parse_money(raw: str | float, expected: str) -> None:
    assert parse_money(raw) == Decimal(expected)


@pytest.mark.parametrize("raw", ["abc", "NaN", "inf", ""])
def test_parse_money_refuses_non_amounts(raw: str) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        parse_money(raw)


def test_round_money_is_half_up() -> None:
    assert round_money(Decimal("0.125")) == Decimal("0.13")
    assert round_money(Decimal("-0.125")) == Decimal("-0.13")


def test_parse_datetime_forms() -> None:
    london = ZoneInfo("Europe/London")
    assert parse_datetime("2011-06-01 08:26:00", assume=london) == datetime(
        2011, 6, 1, 7, 26, tzinfo=UTC
    )
    assert parse_datetime("2025-03-01T10:00:00+03:00") == datetime(2025, 3, 1, 7, 0, tzinfo=UTC)
    assert parse_datetime("19970101") == datetime(1997, 1, 1, tzinfo=UTC)
    assert parse_date("03.04.1990") == date(1990, 4, 3)
    with pytest.raises(ValueError, match="not a date or time: 'soon'"):
        parse_datetime("soon")
