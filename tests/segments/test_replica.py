"""The segment replica: counts there equal the store's for every kind of condition, on
SQLite and PostgreSQL, and a replica the store has moved past is not used until refreshed."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from patron.customers.service import CustomerService
from patron.kit.clock import utcnow
from patron.models import Customer, CustomerScore, Order, OrderKind, OrderLine
from patron.segments.replica import SegmentReplica
from patron.segments.schemas import parse_rule
from patron.segments.service import SegmentService
from tests.fixtures.segments import AS_OF, at
from tests.segments.test_service import CASES, stored

__all__ = ["stored"]

BOOKS = {"kind": "orders", "measure": "spend", "categories": ["books"], "op": "ge", "value": 200}


@pytest.fixture
def replica(tmp_path: Path) -> SegmentReplica:
    return SegmentReplica(tmp_path / "replica.duckdb")


def refreshed(factory: sessionmaker[Session], replica: SegmentReplica) -> None:
    with factory() as session:
        SegmentService(session, replica=replica).refresh_replica()


def test_every_condition_counts_the_same_in_the_replica_as_in_the_store(
    stored: sessionmaker[Session], replica: SegmentReplica
) -> None:
    # given a fresh replica of the hand-made base
    refreshed(stored, replica)
    with stored() as session:
        service = SegmentService(session, replica=replica)
        for case, rule, expected in CASES:
            for tested in (rule, {"not": rule}):
                parsed = parse_rule(tested)
                # when the rule is counted on both routes
                fast = service.count(parsed, as_of=AS_OF)
                slow = service.count(parsed, as_of=AS_OF, store=True)
                # then the numbers are the same and the replica route was taken
                assert (fast.route, slow.route) == ("replica", "store"), case
                assert fast.customers == slow.customers, case
            assert service.count(parse_rule(rule), as_of=AS_OF).customers == len(expected)


def test_the_replica_says_what_it_holds(
    stored: sessionmaker[Session], replica: SegmentReplica
) -> None:
    with stored() as session:
        service = SegmentService(session, replica=replica)
        assert service.replica_state() == (None, False)
        before = utcnow()
        state = service.refresh_replica()
        assert before <= state.refreshed_at <= utcnow()
        assert state.score_run == 2  # the newest completed run; run 3 failed
        assert state.rows == {
            "customers": 8,
            "identities": 8,
            "consents": 7,
            "orders": 9,
            "order_lines": 10,
            "events": 4,
            "customer_scores": 6,
        }
        assert service.replica_state() == (state, True)
        counted = service.count(parse_rule(BOOKS), as_of=AS_OF)
        assert (counted.customers, counted.data_as_of) == (2, state.refreshed_at)


def test_without_a_replica_counts_run_on_the_store(
    stored: sessionmaker[Session], replica: SegmentReplica
) -> None:
    with stored() as session:
        counted = SegmentService(session, replica=replica).count(parse_rule(BOOKS), as_of=AS_OF)
        assert (counted.route, counted.customers) == ("store", 2)
        assert counted.data_as_of >= counted.as_of  # read now, for a past moment


def test_a_new_order_makes_the_replica_stale_until_it_is_refreshed(
    stored: sessionmaker[Session], replica: SegmentReplica
) -> None:
    # given a fresh replica, where Vera (3) has not bought books
    refreshed(stored, replica)
    # when she buys books for 300 after it was copied
    with stored() as session:
        order = Order(
            customer_id=3, source="pos", external_id="late", kind=OrderKind.PURCHASE,
            placed_at=at("2026-05-31 12:00"), total=Decimal("300.00"), currency="RUB",
        )  # fmt: skip
        order.lines = [
            OrderLine(line_no=1, category="books", quantity=Decimal(1),
                      unit_price=Decimal(300), amount=Decimal("300.00")),
        ]  # fmt: skip
        session.add(order)
        session.commit()
    # then the count reads the store, which has her, until the replica is refreshed
    with stored() as session:
        service = SegmentService(session, replica=replica)
        counted = service.count(parse_rule(BOOKS), as_of=AS_OF)
        assert (counted.route, counted.customers) == ("store", 3)
        assert service.replica_state()[1] is False
    refreshed(stored, replica)
    with stored() as session:
        counted = SegmentService(session, replica=replica).count(parse_rule(BOOKS), as_of=AS_OF)
        assert (counted.route, counted.customers) == ("replica", 3)


def test_a_profile_edit_or_a_merge_makes_the_replica_stale(
    stored: sessionmaker[Session], replica: SegmentReplica
) -> None:
    moscow = parse_rule({"kind": "profile", "field": "city", "value": "Moscow"})
    refreshed(stored, replica)
    # a profile moves to Moscow (the ORM stamps updated_at)
    with stored() as session:
        customer = session.get(Customer, 8)
        assert customer is not None
        customer.city = "Moscow"
        session.commit()
    with stored() as session:
        counted = SegmentService(session, replica=replica).count(moscow, as_of=AS_OF)
        assert (counted.route, counted.customers) == ("store", 4)
    refreshed(stored, replica)
    # two profiles are merged: the one merged away is no longer counted
    with stored() as session:
        CustomerService(session, region="RU").merge(7, 3, actor="test", reason="same person")
        session.commit()
    with stored() as session:
        service = SegmentService(session, replica=replica)
        counted = service.count(moscow, as_of=utcnow() + timedelta(days=1))
        assert (counted.route, counted.customers) == ("store", 3)
    refreshed(stored, replica)
    with stored() as session:
        counted = SegmentService(session, replica=replica).count(moscow, as_of=AS_OF)
        assert (counted.route, counted.customers) == ("replica", 3)


def test_a_rule_reading_an_older_analysis_run_is_counted_on_the_store(
    stored: sessionmaker[Session], replica: SegmentReplica
) -> None:
    # the replica holds run 2's scores; as of mid-May, run 1 (05-01) is in force
    refreshed(stored, replica)
    risky = parse_rule({"kind": "score", "field": "churn_risk", "op": "ge", "value": 0.5})
    with stored() as session:
        service = SegmentService(session, replica=replica)
        assert service.count(risky, as_of=AS_OF).route == "replica"
        older = service.count(risky, as_of=at("2026-05-15 00:00"))
        assert older.route == "store"
        assert older.customers == service.count(risky, as_of=older.as_of, store=True).customers


def test_a_replica_of_another_store_is_not_used(
    stored: sessionmaker[Session], replica: SegmentReplica, tmp_path: Path
) -> None:
    from patron.kit.db import make_engine, make_sessionmaker, migrate

    # given a replica copied from a second, empty store
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    migrate(other)
    refreshed(make_sessionmaker(other), replica)
    other.dispose()
    # then counts on the first store do not read it
    with stored() as session:
        counted = SegmentService(session, replica=replica).count(parse_rule(BOOKS), as_of=AS_OF)
        assert (counted.route, counted.customers) == ("store", 2)


def test_scores_next_to_a_threshold_compare_exactly_as_in_the_store(
    stored: sessionmaker[Session], replica: SegmentReplica
) -> None:
    # given churn risks on and one step either side of 0.3, and ones needing 17 digits
    risks = {1: 0.3, 2: 0.1 + 0.2, 3: 0.29999999999999993, 4: 1 / 3, 5: 0.30000000000000004}
    with stored() as session:
        for customer, risk in risks.items():
            score = session.get(CustomerScore, (2, customer))
            assert score is not None
            score.churn_risk = risk
        session.commit()
    refreshed(stored, replica)
    with stored() as session:
        service = SegmentService(session, replica=replica)
        for op in ("eq", "ge", "gt", "le", "lt"):
            rule = parse_rule({"kind": "score", "field": "churn_risk", "op": op, "value": 0.3})
            fast = service.count(rule, as_of=AS_OF)
            slow = service.count(rule, as_of=AS_OF, store=True)
            assert (fast.route, fast.customers) == ("replica", slow.customers), op
        exactly = parse_rule({"kind": "score", "field": "churn_risk", "value": 0.3})
        assert service.count(exactly, as_of=AS_OF).customers == 1
