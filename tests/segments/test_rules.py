"""The rule language: what it accepts, how it types values, and how it names mistakes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from patron.kit.errors import InvalidInput
from patron.segments.repository import passes
from patron.segments.schemas import (
    AllOf,
    NotOf,
    OrderCondition,
    ProfileCondition,
    parse_rule,
    rule_json,
)


def test_short_forms_nest_and_values_take_the_fields_type() -> None:
    # given a rule written with the short group forms, as a YAML user would
    rule = parse_rule(
        {
            "all": [
                {"kind": "profile", "field": "birth_date", "op": "between",
                 "value": ["1980-01-01", "1989-12-31"]},
                {"kind": "orders", "measure": "spend", "days": 365, "op": "ge", "value": "100.50"},
                {"not": {"kind": "category", "categories": ["toys"]}},
                {"kind": "profile", "field": "created_at", "op": "lt",
                 "value": "2026-01-01T00:00:00+03:00"},
            ]
        }
    )  # fmt: skip
    # then the tree is typed: dates are dates, money is Decimal, times are aware
    assert isinstance(rule, AllOf)
    born, spend, negated, created = rule.conditions
    assert isinstance(born, ProfileCondition)
    assert born.value == [date(1980, 1, 1), date(1989, 12, 31)]
    assert isinstance(spend, OrderCondition)
    assert spend.value == Decimal("100.50")
    assert isinstance(negated, NotOf)
    assert isinstance(created, ProfileCondition)
    assert created.value == datetime(2025, 12, 31, 21, 0, tzinfo=UTC)


def test_stored_json_is_compact_and_reads_back_to_the_same_rule() -> None:
    rule = parse_rule(
        {"any": [{"kind": "consent", "channel": "email"},
                 {"kind": "score", "field": "clv", "op": "gt", "value": 1000}]}
    )  # fmt: skip
    stored = rule_json(rule)
    assert stored == {
        "kind": "any",
        "conditions": [
            {"kind": "consent", "channel": "email"},
            {"kind": "score", "op": "gt", "value": "1000", "field": "clv"},
        ],
    }
    assert parse_rule(stored) == rule


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"kind": "profile", "field": "cty", "value": "Moscow"},
            "rule: unknown profile field 'cty'; known: birth_date, city,",
        ),
        (
            {"all": [{"kind": "consent", "channel": "email"},
                     {"kind": "score", "field": "clv", "op": "ge", "value": "lots"}]},
            "rule.conditions.1: 'lots' is not a valid Decimal for 'clv'",
        ),
        (
            {"kind": "score", "field": "churn", "op": "ge", "value": 0.5},
            "rule: unknown score 'churn'; known: recency_days,",
        ),
        (
            {"kind": "orders", "measure": "days_since_last", "op": "in", "value": [1, 2]},
            "rule: operator 'in' does not apply to 'days_since_last'",
        ),
        (
            {"kind": "profile", "field": "city", "op": "in", "value": "Moscow"},
            "rule: operator 'in' needs a list of values",
        ),
        (
            {"kind": "profile", "field": "city", "op": "between", "value": ["a"]},
            "rule: operator 'between' needs [low, high]",
        ),
        (
            {"kind": "profile", "field": "city", "op": "is_null", "value": "x"},
            "rule: operator 'is_null' takes no value",
        ),
        (
            {"kind": "profile", "field": "birth_date", "op": "contains", "value": "19"},
            "rule: operator 'contains' needs a text field; 'birth_date' is not one",
        ),
        (
            {"kind": "profile", "field": "city", "value": 5},
            "rule: 5 is not a valid str for 'city'",
        ),
        (
            {"kind": "orders", "measure": "spend", "op": "ge", "value": 1,
             "since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "rule: 'since' must be before 'until'",
        ),
        ({"kind": "fax"}, "rule: each condition needs a 'kind': profile, identity,"),
        ({"any": []}, "rule.conditions: List should have at least 1 item"),
        (
            {"not": {"kind": "consent", "channel": "pigeon"}},
            "rule.condition.channel: Input should be 'email', 'sms',",
        ),
    ],
)  # fmt: skip
def test_a_bad_rule_is_refused_with_the_place_and_the_reason(data: object, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rule(data)
    assert caught.value.status == 422
    assert caught.value.message.startswith(f"invalid segment rule: {message}")


@pytest.mark.parametrize(
    ("op", "value", "zero_passes"),
    [
        ("lt", Decimal(100), True),
        ("ge", Decimal(100), False),
        ("eq", 0, True),
        ("ne", 0, False),
        ("between", [0, 5], True),
        ("between", [1, 5], False),
        ("in", [0, 1], True),
        ("not_in", [0, 1], False),
        ("not_null", None, True),
        ("is_null", None, False),
    ],
)
def test_whether_a_customer_without_rows_passes_is_decided_once(
    op: str, value: object, zero_passes: bool
) -> None:
    # a customer absent from the grouped orders has a spend of zero
    assert passes(op, value, Decimal(0)) is zero_passes
