"""Segments on the store: every kind of condition selects exactly the customers worked out
by hand (tests/fixtures/segments.py), on SQLite and PostgreSQL; builds keep history."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from patron.kit.errors import Conflict, InvalidInput
from patron.models import Customer
from patron.segments.schemas import MoveOut, SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.fixtures.segments import AS_OF, at, store_base


@pytest.fixture
def stored(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with session_factory() as session:
        store_base(session)
        session.commit()
    return session_factory


CITY_MOSCOW = {"kind": "profile", "field": "city", "value": "Moscow"}

CASES: list[tuple[str, Any, list[int]]] = [
    # profile fields; the merged profile 6 (Moscow) is never selected
    ("city", CITY_MOSCOW, [1, 3, 7]),
    ("not Moscow keeps the unknown city", {"kind": "profile", "field": "city", "op": "ne",
                                           "value": "Moscow"}, [2, 4, 5, 8]),
    ("city in", {"kind": "profile", "field": "city", "op": "in",
                 "value": ["Kazan", "Saint Petersburg"]}, [2, 5, 8]),
    ("city unknown", {"kind": "profile", "field": "city", "op": "is_null"}, [4]),
    ("name contains, any case", {"kind": "profile", "field": "first_name", "op": "contains",
                                 "value": "AN"}, [1, 8]),
    ("born in the 1980s", {"kind": "profile", "field": "birth_date", "op": "between",
                           "value": ["1980-01-01", "1989-12-31"]}, [1]),
    ("custom attribute text", {"kind": "profile", "field": "attributes.level",
                               "value": "gold"}, [1]),
    ("custom attribute number", {"kind": "profile", "field": "attributes.kids", "op": "ge",
                                 "value": 2}, [1]),
    # identities
    ("has an email", {"kind": "identity", "identity": "email"}, [1, 2, 4, 5]),
    ("verified email", {"kind": "identity", "identity": "email", "verified": True}, [4]),
    ("no phone", {"kind": "identity", "identity": "phone", "present": False}, [2, 4, 5, 7, 8]),
    ("external id of a system", {"kind": "identity", "identity": "external",
                                 "namespace": "shop"}, [7]),
    # consents in force on the as-of date; pending is no decision, later ones do not count
    ("email granted", {"kind": "consent", "channel": "email"}, [1, 5]),
    ("email withdrawn", {"kind": "consent", "channel": "email", "status": "withdrawn"}, [2]),
    ("email never decided", {"kind": "consent", "channel": "email", "status": "none"},
     [3, 4, 7, 8]),
    ("sms granted", {"kind": "consent", "channel": "sms"}, [3]),
    # order aggregates; Dina's July order is after the as-of date; guests never count
    ("spend in a year", {"kind": "orders", "measure": "spend", "days": 365, "op": "ge",
                         "value": 100}, [1, 5]),
    ("spend below 100 includes non-buyers", {"kind": "orders", "measure": "spend", "op": "lt",
                                             "value": 100}, [2, 3, 4, 7, 8]),
    ("net spend nets returns", {"kind": "orders", "measure": "spend", "op": "eq",
                                "value": 0}, [2, 4, 7, 8]),
    ("two purchases", {"kind": "orders", "measure": "orders", "op": "ge", "value": 2}, [1, 5]),
    ("a return", {"kind": "orders", "measure": "returns", "op": "ge", "value": 1}, [2]),
    ("no purchase in 30 days", {"kind": "orders", "measure": "orders", "days": 30,
                                "value": 0}, [2, 4, 5, 7, 8]),
    ("bought in the last week", {"kind": "orders", "measure": "days_since_last", "op": "le",
                                 "value": 7}, [3]),
    ("lapsed 60 days", {"kind": "orders", "measure": "days_since_last", "op": "ge",
                        "value": 60}, [2, 5]),
    # Dina's last purchase was 60.5 days before: 60 whole days
    ("exactly 60 days", {"kind": "orders", "measure": "days_since_last", "value": 60}, [5]),
    ("never bought", {"kind": "orders", "measure": "days_since_last", "op": "is_null"},
     [4, 7, 8]),
    ("first purchase this year", {"kind": "orders", "measure": "days_since_first",
                                  "op": "between", "value": [0, 151]}, [1, 3, 5]),
    ("average purchase", {"kind": "orders", "measure": "average_order", "op": "gt",
                          "value": 400}, [2, 5]),
    ("spend on books", {"kind": "orders", "measure": "spend", "categories": ["books"],
                        "op": "ge", "value": 200}, [1, 5]),
    ("window by dates", {"kind": "orders", "measure": "orders", "op": "ge", "value": 1,
                         "since": "2026-02-01T00:00:00Z", "until": "2026-04-01T00:00:00Z"},
     [5]),
    # categories bought or not
    ("toys this month", {"kind": "category", "categories": ["toys"], "days": 30}, [1, 3]),
    ("never electronics", {"kind": "category", "categories": ["electronics"],
                           "bought": False}, [1, 3, 4, 7, 8]),
    # analytics scores of run 2 (the newest completed by 06-01; run 3 failed)
    ("churn risk", {"kind": "score", "field": "churn_risk", "op": "ge", "value": 0.5},
     [2, 3, 5]),
    ("rfm segment", {"kind": "score", "field": "rfm_segment", "op": "in",
                     "value": ["Champions", "Loyal"]}, [1]),
    ("best customers", {"kind": "score", "field": "best_customer", "value": True}, [1, 5]),
    ("lifecycle", {"kind": "score", "field": "lifecycle_stage", "value": "prospect"}, [4, 7]),
    ("clv", {"kind": "score", "field": "clv", "op": "gt", "value": "500.00"}, [1, 5]),
    # events
    ("abandoned a cart this week", {"kind": "event", "type": "cart_abandoned", "days": 7},
     [3]),
    ("abandoned twice", {"kind": "event", "type": "cart_abandoned", "op": "ge", "value": 2},
     [3]),
    ("event property", {"kind": "event", "type": "cart_abandoned",
                        "properties": {"value": 20}}, [3]),
    ("no form", {"kind": "event", "type": "form_submitted", "op": "eq", "value": 0},
     [1, 2, 3, 4, 5, 8]),
    # nesting
    ("and not", {"all": [CITY_MOSCOW, {"not": {"kind": "consent", "channel": "email"}}]},
     [3, 7]),
    ("or", {"any": [{"kind": "consent", "channel": "sms"},
                    {"kind": "score", "field": "best_customer", "value": True}]}, [1, 3, 5]),
    ("best customers at risk", {"all": [
        {"kind": "score", "field": "best_customer", "value": True},
        {"kind": "score", "field": "churn_risk", "op": "ge", "value": 0.5},
        {"kind": "consent", "channel": "email"},
    ]}, [5]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "rule", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_condition_selects_exactly_the_customers_worked_out_by_hand(
    stored: sessionmaker[Session], case: str, rule: Any, expected: list[int]
) -> None:
    with stored() as session:
        service = SegmentService(session)
        parsed = parse_rule(rule)
        assert service.preview_ids(parsed, as_of=AS_OF) == expected, case
        assert service.count(parsed, as_of=AS_OF).customers == len(expected)
        # NOT selects exactly the rest of the base (7 active profiles)
        negated = service.preview_ids(parse_rule({"not": rule}), as_of=AS_OF)
        assert negated == sorted({1, 2, 3, 4, 5, 7, 8} - set(expected))


def test_a_saved_segment_is_a_condition_of_another(stored: sessionmaker[Session]) -> None:
    with stored() as session:
        service = SegmentService(session)
        service.create(SegmentIn(name="moscow", rule=parse_rule(CITY_MOSCOW)), actor="test")
        service.create(
            SegmentIn(
                name="moscow buyers",
                rule=parse_rule(
                    {"all": [{"kind": "segment", "segment": "moscow"},
                             {"kind": "orders", "measure": "orders", "op": "ge", "value": 1}]}
                ),
            ),
            actor="test",
        )  # fmt: skip
        outside = parse_rule({"kind": "segment", "segment": "moscow buyers", "member": False})
        assert service.preview_ids(outside, as_of=AS_OF) == [2, 4, 5, 7, 8]


def test_unknown_segments_circles_and_duplicates_are_refused(
    stored: sessionmaker[Session],
) -> None:
    with stored() as session:
        service = SegmentService(session)
        with pytest.raises(InvalidInput, match=r"rule.conditions.1: no segment named 'vip'"):
            service.create(
                SegmentIn(
                    name="a",
                    rule=parse_rule({"all": [CITY_MOSCOW, {"kind": "segment", "segment": "vip"}]}),
                ),
                actor="test",
            )
        service.create(SegmentIn(name="a", rule=parse_rule(CITY_MOSCOW)), actor="test")
        b = service.create(
            SegmentIn(name="b", rule=parse_rule({"kind": "segment", "segment": "a"})),
            actor="test",
        )
        assert b.rule == {"kind": "segment", "segment": "a"}
        with pytest.raises(InvalidInput, match=r"circle: a -> b -> a"):
            service.update(
                service.find("a").id,
                changes=_update(rule={"kind": "segment", "segment": "b"}),
            )
        with pytest.raises(Conflict, match="a segment named 'a' exists already"):
            service.create(SegmentIn(name="a", rule=parse_rule(CITY_MOSCOW)), actor="test")


def test_scores_before_any_analysis_are_a_clear_conflict(stored: sessionmaker[Session]) -> None:
    with stored() as session, pytest.raises(Conflict, match="run `patron analyze` first"):
        SegmentService(session).count(
            parse_rule({"all": [CITY_MOSCOW, {"kind": "score", "field": "clv", "op": "gt",
                                              "value": 1}]}),
            as_of=at("2026-04-01 00:00"),
        )  # fmt: skip


def test_builds_keep_who_entered_and_left_and_when(stored: sessionmaker[Session]) -> None:
    first, second = at("2026-05-10 00:00"), at("2026-05-20 00:00")
    with stored() as session:
        service = SegmentService(session)
        moscow = service.create(SegmentIn(name="moscow", rule=parse_rule(CITY_MOSCOW)), actor="t")
        built = service.build(moscow, at=first)
        assert (built.members, built.entered, built.left) == (3, 3, 0)
        # Egor moves to Kazan, a new Muscovite arrives
        customer = session.get(Customer, 7)
        assert customer is not None
        customer.city = "Kazan"
        session.add(Customer(id=9, first_name="Ilya", city="Moscow"))
        session.flush()
        rebuilt = service.build(moscow, at=second)
        assert (rebuilt.members, rebuilt.entered, rebuilt.left) == (3, 1, 1)
        # an unchanged base changes nothing, and history cannot be rewritten
        again = service.build(moscow, at=second + timedelta(days=1))
        assert (again.members, again.entered, again.left) == (3, 0, 0)
        with pytest.raises(Conflict, match="would rewrite its history"):
            service.build(moscow, at=first)
        session.commit()

        assert [c for c, _ in service.members(moscow)] == [1, 3, 9]
        assert [c for c, _ in service.members(moscow, on=at("2026-05-15 00:00"))] == [1, 3, 7]
        assert service.member_count(moscow, on=at("2026-05-01 00:00")) == 0
        changes = service.changes(moscow, since=first, until=second + timedelta(seconds=1))
        assert changes == [
            (1, "entered", first),
            (3, "entered", first),
            (7, "entered", first),
            (7, "left", second),
            (9, "entered", second),
        ]
        assert [b.members for b in service.builds(moscow)] == [3, 3, 3]


def test_moves_between_spend_bands_and_between_segments(stored: sessionmaker[Session]) -> None:
    with stored() as session:
        service = SegmentService(session)
        # spend bands of run 1 (in force on 05-15) against run 2 (06-01)
        bands = service.moves(before=at("2026-05-15 00:00"), after=AS_OF, by="spend_band")
        assert bands == [
            MoveOut(before="2", after="3", customers=1),
            MoveOut(before="3", after="1", customers=1),
            MoveOut(before="9", after="10", customers=1),
            MoveOut(before="11", after="10", customers=1),
            MoveOut(before=None, after=None, customers=2),
        ]
        moscow = service.create(SegmentIn(name="moscow", rule=parse_rule(CITY_MOSCOW)), actor="t")
        kazan = service.create(
            SegmentIn(name="kazan", rule=parse_rule({**CITY_MOSCOW, "value": "Kazan"})), actor="t"
        )
        for segment in (moscow, kazan):
            service.build(segment, at=at("2026-05-10 00:00"))
        # the bands of the customers who were in Moscow then
        within = service.moves(
            before=at("2026-05-15 00:00"), after=AS_OF, by="spend_band", within="moscow"
        )
        assert within == [
            MoveOut(before="2", after="3", customers=1),
            MoveOut(before="9", after="10", customers=1),
            MoveOut(before=None, after=None, customers=1),
        ]
        customer = session.get(Customer, 7)
        assert customer is not None
        customer.city = "Kazan"
        session.flush()
        for segment in (moscow, kazan):
            service.build(segment, at=at("2026-05-20 00:00"))
        moved = service.moves(
            before=at("2026-05-15 00:00"), after=at("2026-05-25 00:00"),
            segments=["moscow", "kazan"],
        )  # fmt: skip
        assert moved == [
            MoveOut(before="kazan", after="kazan", customers=2),
            MoveOut(before="moscow", after="kazan", customers=1),
            MoveOut(before="moscow", after="moscow", customers=2),
        ]
        with pytest.raises(InvalidInput, match="'before' must be earlier"):
            service.moves(before=AS_OF, after=AS_OF, by="spend_band")
        with pytest.raises(Conflict, match="no analysis run has completed for a date up to"):
            service.moves(before=at("2026-01-01 00:00"), after=AS_OF, by="spend_band")


def test_export_writes_the_selected_customers_with_contacts(
    stored: sessionmaker[Session],
) -> None:
    with stored() as session:
        out = io.StringIO()
        written = SegmentService(session).export(parse_rule(CITY_MOSCOW), out, as_of=AS_OF)
    assert written == 3
    assert out.getvalue().splitlines() == [
        "customer_id,first_name,last_name,city,email,phone",
        "1,Anna,,Moscow,anna@example.ru,+79161234501",
        "3,Vera,,Moscow,,+79161234503",
        "7,Egor,,Moscow,,",
    ]


def _update(**fields: Any) -> Any:
    from patron.segments.schemas import SegmentUpdate

    return SegmentUpdate.model_validate(fields)
