"""Triggered campaigns and journeys on the segment tests' base: the abandoned-cart flow end
to end, each step exactly once across repeated and rolled-back passes, re-entry rules,
birthdays, segment entry, score crossings, cascades, branches, splits and updates."""

from __future__ import annotations

import time
import zlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.groups import control_mask, unit_hash
from patron.campaigns.service import CampaignService
from patron.channels.base import MemoryTransport
from patron.customers.schemas import ConsentIn
from patron.customers.service import CustomerService
from patron.dispatch.tasks import run_worker
from patron.events.schemas import EventIn, OrderIn
from patron.events.service import EventService, OrderService
from patron.journeys.service import JourneyService, PassTally
from patron.journeys.tasks import Growth, run_pass
from patron.kit.errors import InvalidInput
from patron.kit.settings import Settings
from patron.measure.service import MeasureService
from patron.models import (
    AnalysisRun,
    Campaign,
    CampaignRecipient,
    Channel,
    ConsentStatus,
    Customer,
    CustomerScore,
    EntryStatus,
    Event,
    JourneyEntry,
    JourneyStep,
    Message,
    MessageStatus,
    RunStatus,
    TriggerCursor,
)
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.fixtures.segments import store_base

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
SETTINGS = Settings(
    public_url="https://crm.example.com", secret_key="a-test-secret-of-enough-length"
)
EMAIL = {"subject": "{{ customer.first_name }}, your cart", "html": "<p>{{ trigger.sku }}</p>",
         "text": "{{ trigger.sku }} is waiting"}  # fmt: skip
CART_JOURNEY: dict[str, Any] = {
    "goal": "purchase",
    "steps": [
        {"id": "hold", "type": "wait", "hours": 2},
        {"id": "remind", "type": "send", "message": EMAIL},
        {"id": "later", "type": "wait", "days": 1},
        {"id": "coupon", "type": "send", "offer": {"kind": "coupon", "coupon_prefix": "CART",
                                                   "discount_percent": "10"},
         "message": EMAIL | {"subject": "{{ customer.first_name }}: {{ coupon }}"}},
    ],
}  # fmt: skip


def _campaign(factory: sessionmaker[Session], *, trigger: dict[str, Any],
              journey: dict[str, Any] | None = None, at: datetime = T0, **changes: Any) -> int:  # fmt: skip
    with factory() as session:
        if session.get(Customer, 1) is None:
            store_base(session)
            SegmentService(session).create(
                SegmentIn(name="moscow", rule=parse_rule(
                    {"kind": "profile", "field": "city", "value": "Moscow"})), actor="test",
            )  # fmt: skip
        service = CampaignService(session)
        fields = {"name": "cart", "control_share": 0.0, "trigger": trigger, "journey": journey,
                  "schedule": {}} | changes  # fmt: skip
        campaign = service.create(plan(**fields), actor="maria")
        service.launch(campaign.id, actor="maria", at=at)
        session.commit()
        return campaign.id


def _event(factory: sessionmaker[Session], customer: int, type_: str, at: datetime,
           **properties: Any) -> None:  # fmt: skip
    with factory() as session:
        EventService(session).create(EventIn(customer_id=customer, type=type_, occurred_at=at,
                                             properties=properties))  # fmt: skip
        session.commit()


def _buy(factory: sessionmaker[Session], customer: int, at: datetime, ref: str) -> None:
    with factory() as session:
        OrderService(session).create(OrderIn.model_validate({
            "customer_id": customer, "source": "shop", "external_id": ref,
            "placed_at": at.isoformat(), "currency": "RUB",
            "lines": [{"sku": "TOY-1", "quantity": 1, "unit_price": "500.00"}],
        }))  # fmt: skip
        session.commit()


def _entries(factory: sessionmaker[Session]) -> dict[int, list[JourneyEntry]]:
    with factory() as session:
        found: dict[int, list[JourneyEntry]] = {}
        for entry in session.scalars(select(JourneyEntry).order_by(JourneyEntry.id)):
            found.setdefault(entry.customer_id, []).append(entry)
        return found


def _messages(factory: sessionmaker[Session]) -> list[tuple[int, str, str]]:
    with factory() as session:
        rows = session.scalars(select(Message).order_by(Message.id))
        return [(m.customer_id, m.channel.value, m.step_key.split(":")[1]) for m in rows]


def test_abandoned_cart_waits_reminds_offers_a_coupon_and_stops_for_a_buyer(
    session_factory: sessionmaker[Session],
) -> None:
    campaign = _campaign(session_factory, trigger={"on": {"kind": "event", "event_type": "cart_abandoned"}},
                         journey=CART_JOURNEY)  # fmt: skip
    _event(session_factory, 1, "cart_abandoned", T0 + timedelta(minutes=1), sku="TOY-1")
    _event(session_factory, 5, "cart_abandoned", T0 + timedelta(minutes=2), sku="BOOK-9")
    _event(session_factory, 5, "page_viewed", T0 + timedelta(minutes=3))
    tally = run_pass(session_factory, now=T0 + timedelta(minutes=5))
    assert (tally.facts, tally.entered, tally.messages) == (3, 2, 0)
    assert {c: [e.step for e in es] for c, es in _entries(session_factory).items()} == {
        1: ["hold"], 5: ["hold"]}  # fmt: skip
    # Dina buys within the two hours: the goal ends her entry, she gets nothing
    _buy(session_factory, 5, T0 + timedelta(minutes=40), "o-1")
    assert run_pass(session_factory, now=T0 + timedelta(minutes=41)).converted == 1
    assert run_pass(session_factory, now=T0 + timedelta(minutes=100)).messages == 0
    assert run_pass(session_factory, now=T0 + timedelta(hours=2, minutes=6)).messages == 1
    assert run_pass(session_factory, now=T0 + timedelta(hours=3)).messages == 0
    assert run_pass(session_factory, now=T0 + timedelta(days=1, hours=2, minutes=7)).messages == 1
    entries = _entries(session_factory)
    assert (entries[1][0].status, entries[1][0].outcome) == (EntryStatus.COMPLETED,
                                                             "journey completed")  # fmt: skip
    assert (entries[5][0].status, entries[5][0].outcome) == (
        EntryStatus.CONVERTED,
        f"goal: purchase (order:{_order_id(session_factory, 'o-1')})",
    )
    assert _messages(session_factory) == [(1, "email", "remind"), (1, "email", "coupon")]
    transport = MemoryTransport()
    stats = run_worker(session_factory, transport, settings=SETTINGS, until_idle=True)
    assert stats.sent == 2
    assert transport.delivered[0].subject == "Anna, your cart"
    assert transport.delivered[0].text.startswith("TOY-1 is waiting")
    with session_factory() as session:
        coupon = session.scalars(select(Message.coupon).where(Message.coupon.is_not(None))).one()
        assert transport.delivered[1].subject == f"Anna: {coupon}"
        assert coupon is not None and coupon.startswith("CART")
        report = JourneyService(session).report(CampaignService(session).get(campaign))
    assert report["entries"] == {"completed": 1, "converted": 1}
    assert report["goal"] == {"converted": 1}
    assert [(s["id"], s["outcomes"]) for s in report["steps"]] == [
        ("hold", {"waiting": 2, "end elapsed": 1}),
        ("remind", {"queued": 1}),
        ("later", {"waiting": 1, "end elapsed": 1}),
        ("coupon", {"queued": 1}),
    ]


def _order_id(factory: sessionmaker[Session], ref: str) -> int:
    from patron.models import Order

    with factory() as session:
        return int(session.scalars(select(Order.id).where(Order.external_id == ref)).one())


def test_each_step_runs_once_across_repeated_and_rolled_back_passes(
    session_factory: sessionmaker[Session],
) -> None:
    _campaign(session_factory, trigger={"on": {"kind": "event", "event_type": "cart_abandoned"}},
              journey={"steps": [{"id": "now", "type": "send"}, {"id": "w", "type": "wait",
                                  "minutes": 10}, {"id": "again", "type": "send"}]})  # fmt: skip
    _event(session_factory, 1, "cart_abandoned", T0 + timedelta(minutes=1))
    moment = T0 + timedelta(minutes=2)
    # a pass that dies before its commit leaves nothing behind
    with session_factory() as session:
        JourneyService(session).take_facts(now=moment)
        JourneyService(session).advance(now=moment)
        session.rollback()
    assert _entries(session_factory) == {}
    for _ in range(3):
        run_pass(session_factory, now=moment)
    later = moment + timedelta(minutes=11)
    with session_factory() as session:
        JourneyService(session).advance(now=later)
        session.rollback()
    for _ in range(3):
        run_pass(session_factory, now=later)
    assert _messages(session_factory) == [(1, "email", "now"), (1, "email", "again")]
    with session_factory() as session:
        steps = session.scalars(select(JourneyStep.step).order_by(JourneyStep.id)).all()
    assert steps == ["now", "w", "w/end", "again"]


@pytest.mark.parametrize(
    ("reentry", "entries"),
    [({"mode": "once"}, 1), ({"mode": "once_per", "days": 7}, 2), ({"mode": "every_time"}, 3)],
)
def test_reentry_once_once_per_period_or_every_time(
    session_factory: sessionmaker[Session], reentry: dict[str, Any], entries: int
) -> None:
    _campaign(session_factory, trigger={"on": {"kind": "event", "event_type": "form_submitted",
                                               "where": {"form": "survey"}}, "reentry": reentry})  # fmt: skip
    for day in (0, 1, 8):
        moment = T0 + timedelta(days=day)
        _event(session_factory, 1, "form_submitted", moment, form="survey")
        _event(session_factory, 5, "form_submitted", moment, form="other")
        run_pass(session_factory, now=moment + timedelta(minutes=1))
    assert len(_entries(session_factory).get(1, [])) == entries
    assert 5 not in _entries(session_factory)
    assert len(_messages(session_factory)) == entries


def test_birthday_trigger_fires_once_on_the_day_in_the_campaign_zone(
    session_factory: sessionmaker[Session],
) -> None:
    # Anna was born on 10 March; the campaign reads days in Moscow (UTC+3)
    _campaign(session_factory, trigger={"on": {"kind": "date", "field": "birth_date"},
                                        "reentry": {"mode": "once_per", "days": 300}},
              content_type="emotional", at=datetime(2027, 3, 8, 12, 0, tzinfo=UTC))  # fmt: skip
    run_pass(session_factory, now=datetime(2027, 3, 9, 20, 0, tzinfo=UTC))  # 23:00 on the 9th
    assert _entries(session_factory) == {}
    run_pass(session_factory, now=datetime(2027, 3, 9, 21, 30, tzinfo=UTC))  # 00:30 on the 10th
    run_pass(session_factory, now=datetime(2027, 3, 10, 12, 0, tzinfo=UTC))
    run_pass(session_factory, now=datetime(2027, 3, 11, 12, 0, tzinfo=UTC))
    assert {c: [e.source_ref for e in es] for c, es in _entries(session_factory).items()} == {
        1: ["date:2027-03-10:1"]}  # fmt: skip
    assert _messages(session_factory) == [(1, "email", "send")]


def test_a_date_held_in_the_attributes_with_an_offset(
    session_factory: sessionmaker[Session],
) -> None:
    _campaign(session_factory, trigger={"on": {"kind": "date", "field": "wedding_date",
                                               "offset_days": -3}},
              at=datetime(2027, 6, 1, tzinfo=UTC))  # fmt: skip
    with session_factory() as session:
        dina = session.get(Customer, 5)
        assert dina is not None
        dina.attributes = {**dina.attributes, "wedding_date": "2015-06-12"}
        session.commit()
    for day in range(2, 13):
        run_pass(session_factory, now=datetime(2027, 6, day, 10, 0, tzinfo=UTC))
    assert [e.source_ref for e in _entries(session_factory)[5]] == ["date:2027-06-09:5"]


def test_entering_a_segment_at_a_build_admits_the_newcomers(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        store_base(session)
        segment = SegmentService(session).create(
            SegmentIn(name="kazan", rule=parse_rule(
                {"kind": "profile", "field": "city", "value": "Kazan"})), actor="test",
        )  # fmt: skip
        SegmentService(session).build(segment, at=T0)
        SegmentService(session).create(SegmentIn(name="moscow", rule=parse_rule(
            {"kind": "profile", "field": "city", "value": "Moscow"})), actor="test")  # fmt: skip
        session.commit()
    _campaign(session_factory, trigger={"on": {"kind": "segment", "segment": "kazan"}},
              at=T0 + timedelta(hours=1))  # fmt: skip
    run_pass(session_factory, now=T0 + timedelta(hours=2))
    assert _entries(session_factory) == {}  # members before the launch are not newcomers
    with session_factory() as session:
        anna = session.get(Customer, 1)
        assert anna is not None
        anna.city = "Kazan"
        session.commit()
        SegmentService(session).build(SegmentService(session).find("kazan"),
                                      at=T0 + timedelta(hours=3))  # fmt: skip
        session.commit()
    run_pass(session_factory, now=T0 + timedelta(hours=3, minutes=1))
    assert list(_entries(session_factory)) == [1]


def test_lapsing_at_an_analysis_run_admits_those_who_crossed(
    session_factory: sessionmaker[Session],
) -> None:
    _campaign(session_factory, trigger={"on": {"kind": "score", "stage": "lapsed"}})
    with session_factory() as session:
        before = session.scalar(select(func.max(AnalysisRun.id)))
        previous = {s.customer_id: s.lifecycle_stage for s in session.scalars(
            select(CustomerScore).where(CustomerScore.run_id == 2))}  # fmt: skip
        run = AnalysisRun(id=4, as_of=T0, model_version="t", status=RunStatus.COMPLETED,
                          finished_at=T0, customers=3)  # fmt: skip
        session.add(run)
        session.flush()
        for customer, stage in [(1, "lapsed"), (5, "lapsed"), (3, "active")]:
            session.add(CustomerScore(run_id=run.id, customer_id=customer, as_of=T0,
                                      lifecycle_stage=stage))  # fmt: skip
        session.commit()
    assert before == 3
    crossed = sorted(c for c in (1, 5) if previous.get(c) != "lapsed")
    run_pass(session_factory, now=T0 + timedelta(minutes=1))
    assert sorted(_entries(session_factory)) == crossed


def test_a_cascade_falls_back_when_the_first_channel_is_not_delivered(
    session_factory: sessionmaker[Session],
) -> None:
    journey = {"steps": [{"id": "reach", "type": "send", "channels": ["push", "email", "sms"],
                          "fallback_minutes": 30, "message": {"subject": "Hi", "html": "<p>Hi</p>",
                                                              "text": "Hi"}}]}  # fmt: skip
    _campaign(
        session_factory,
        trigger={"on": {"kind": "event", "event_type": "cart_abandoned"}},
        journey=journey,
    )
    with session_factory() as session:
        CustomerService(session).record_consent(1, ConsentIn(
            channel=Channel.SMS, status=ConsentStatus.GRANTED, decided_at=T0), source="form")  # fmt: skip
        session.commit()
    _event(session_factory, 1, "cart_abandoned", T0 + timedelta(minutes=1))
    _event(session_factory, 5, "cart_abandoned", T0 + timedelta(minutes=1))
    run_pass(session_factory, now=T0 + timedelta(minutes=2))
    # nobody has a push subscription: both start on email
    assert _messages(session_factory) == [(1, "email", "reach#1"), (5, "email", "reach#1")]
    run_pass(session_factory, now=T0 + timedelta(minutes=40))
    assert len(_messages(session_factory)) == 2  # not sent yet: no second channel
    _sent(session_factory, at=T0 + timedelta(minutes=41))
    with session_factory() as session:
        dina = session.scalars(select(Message).where(Message.customer_id == 5)).one()
        dina.opened_at = T0 + timedelta(minutes=50)
        session.commit()
    run_pass(session_factory, now=T0 + timedelta(minutes=60))
    assert len(_messages(session_factory)) == 2  # Anna's half hour is not over
    run_pass(session_factory, now=T0 + timedelta(minutes=72))
    # Dina opened hers; Anna's fell back to SMS, where she has a phone and consent
    assert _messages(session_factory)[2:] == [(1, "sms", "reach#2")]
    _sent(session_factory, at=T0 + timedelta(minutes=73))
    run_pass(session_factory, now=T0 + timedelta(minutes=104))
    entries = _entries(session_factory)
    with session_factory() as session:
        outcomes = dict(session.execute(select(JourneyEntry.customer_id, JourneyStep.outcome)
                        .join(JourneyEntry, JourneyEntry.id == JourneyStep.entry_id)
                        .where(JourneyStep.step == "reach")).all())  # fmt: skip
    assert outcomes == {5: "delivered: email", 1: "undelivered"}
    assert [entries[c][0].status for c in (1, 5)] == [EntryStatus.COMPLETED] * 2


def _sent(factory: sessionmaker[Session], *, at: datetime) -> None:
    """What the worker does to queued messages, at a simulated time."""
    with factory() as session:
        for message in session.scalars(select(Message).where(Message.sent_at.is_(None))):
            message.status, message.sent_at = MessageStatus.SENT, at
        session.commit()


def test_branches_splits_and_updates(session_factory: sessionmaker[Session]) -> None:
    journey = {
        "steps": [
            {
                "id": "phone",
                "type": "branch",
                "when": {"has": "phone"},
                "then": "tag",
                "otherwise": "ab",
            },
            {"id": "tag", "type": "update", "set": {"caller": True}, "tags": ["vip"], "next": None},
            {
                "id": "ab",
                "type": "split",
                "paths": [{"share": 0.5, "next": "a"}, {"share": 0.5, "next": "b"}],
            },
            {"id": "a", "type": "send", "next": None},
            {"id": "b", "type": "exit"},
        ],
        "frequency_cap": False,
    }  # twelve sends to one customer at once: the split is counted
    campaign = _campaign(
        session_factory, trigger={"on": {"kind": "event", "event_type": "cart_abandoned"},
                                  "reentry": {"mode": "every_time"}}, journey=journey,
    )  # fmt: skip
    for n in range(12):
        for customer in (1, 5):
            _event(session_factory, customer, "cart_abandoned", T0 + timedelta(seconds=n))
    run_pass(session_factory, now=T0 + timedelta(minutes=1))
    entries = _entries(session_factory)
    with session_factory() as session:
        anna = session.get(Customer, 1)
        assert anna is not None
        attributes = anna.attributes
    # Anna has a phone: every entry tags her; the tags are not repeated
    assert attributes["caller"] is True and attributes["tags"] == ["vip"]
    assert [e.status for e in entries[1]] == [EntryStatus.COMPLETED] * 12
    # Dina has none: each entry is split by its own hash, computed here independently
    ids = np.array([e.id for e in entries[5]], dtype=np.int64)
    to_a = unit_hash(ids, salt=zlib.crc32(f"{campaign}:ab".encode())) < 0.5
    sent = sorted(m for m in _messages(session_factory) if m[0] == 5)
    assert len(sent) == int(to_a.sum())
    assert [e.status for e in entries[5]] == [
        EntryStatus.COMPLETED if a else EntryStatus.EXITED for a in to_a
    ]


def test_a_customers_control_group_is_the_same_on_every_entry(
    session_factory: sessionmaker[Session],
) -> None:
    campaign = _campaign(
        session_factory, trigger={"on": {"kind": "event", "event_type": "cart_abandoned"},
                                  "reentry": {"mode": "every_time"}}, control_share=0.5,
    )  # fmt: skip
    people = [1, 2, 3, 4, 5, 7, 8]  # the active profiles (6 is merged away)
    for n in range(2):
        for customer in people:
            _event(session_factory, customer, "cart_abandoned", T0 + timedelta(seconds=n))
    run_pass(session_factory, now=T0 + timedelta(minutes=1))
    held = control_mask(np.array(people, dtype=np.int64), campaign_id=campaign, share=0.5)
    expected = {c: bool(h) for c, h in zip(people, held, strict=True)}
    entries = _entries(session_factory)
    with session_factory() as session:
        groups = dict(session.execute(select(CampaignRecipient.customer_id,
                                             CampaignRecipient.group)).all())  # fmt: skip
    assert {c: g.value == "control" for c, g in groups.items()} == expected
    for customer, rows in entries.items():
        assert [e.status is EntryStatus.CONTROL for e in rows] == [expected[customer]] * 2
    messaged = {m[0] for m in _messages(session_factory)}
    assert messaged.isdisjoint({c for c, h in expected.items() if h})


def test_a_journey_refuses_a_loop_and_a_message_its_channel_cannot_carry(
    session_factory: sessionmaker[Session],
) -> None:
    with pytest.raises(ValueError, match="loops back to step 'a'"):
        plan(trigger={"on": {"kind": "event", "event_type": "x"}}, journey={"steps": [
            {"id": "a", "type": "wait", "minutes": 1}, {"id": "b", "type": "send", "next": "a"}]})  # fmt: skip
    with pytest.raises(ValueError, match="a journey needs a 'trigger'"):
        plan(journey={"steps": [{"id": "a", "type": "send"}]})
    with pytest.raises(InvalidInput, match="journey step 'b'"):
        _campaign(session_factory, trigger={"on": {"kind": "event", "event_type": "x"}}, journey={"steps": [
            {"id": "b", "type": "send", "message": {"text": "no subject for email"}}]})  # fmt: skip


def test_money_in_the_order_fact_is_exact(session_factory: sessionmaker[Session]) -> None:
    _campaign(session_factory, trigger={"on": {"kind": "event", "event_type": "first_purchase"}})
    _buy(session_factory, 4, T0 + timedelta(minutes=1), "first-gleb")
    _buy(session_factory, 1, T0 + timedelta(minutes=1), "not-first-anna")
    run_pass(session_factory, now=T0 + timedelta(minutes=2))
    entries = _entries(session_factory)
    assert list(entries) == [4]
    assert Decimal(entries[4][0].context["total"]) == Decimal("500.00")
    assert date(2026, 9, 1) == entries[4][0].fired_at.date()
    assert entries[4][0].context["order_id"] == _order_id(session_factory, "first-gleb")


def test_p_alive_falling_below_a_threshold_admits_at_the_next_run(
    session_factory: sessionmaker[Session],
) -> None:
    _campaign(session_factory, trigger={"on": {"kind": "score", "p_alive_below": 0.3}})
    with session_factory() as session:
        for run_id, as_of, p_alive in [
            (4, T0, {1: 0.5, 5: 0.2, 3: 0.9}),
            (5, T0 + timedelta(days=7), {1: 0.25, 5: 0.1, 3: 0.4}),
        ]:
            session.add(
                AnalysisRun(
                    id=run_id,
                    as_of=as_of,
                    model_version="t",
                    status=RunStatus.COMPLETED,
                    finished_at=as_of,
                )
            )
            session.flush()
            for customer, value in p_alive.items():
                session.add(
                    CustomerScore(
                        run_id=run_id,
                        customer_id=customer,
                        as_of=as_of,
                        lifecycle_stage="active",
                        p_alive=value,
                    )
                )
        session.commit()  # fmt: skip
    run_pass(session_factory, now=T0 + timedelta(days=8))
    # run 4 puts Dina under 0.3; run 5 adds Anna, while Dina was under already
    refs = {c: [e.source_ref for e in es] for c, es in _entries(session_factory).items()}
    assert refs == {5: ["run:4:5"], 1: ["run:5:1"]}


def test_pause_holds_entries_cancel_ends_them_and_an_end_date_completes_the_campaign(
    session_factory: sessionmaker[Session],
) -> None:
    end = T0 + timedelta(days=2)
    campaign = _campaign(
        session_factory, trigger={"on": {"kind": "event", "event_type": "cart_abandoned"}},
        journey={"steps": [{"id": "w", "type": "wait", "hours": 1}, {"id": "s", "type": "send"}]},
        schedule={"end_at": end.isoformat()},
    )  # fmt: skip
    _event(session_factory, 1, "cart_abandoned", T0 + timedelta(minutes=1))
    run_pass(session_factory, now=T0 + timedelta(minutes=2))
    with session_factory() as session:
        CampaignService(session).pause(campaign, actor="maria")
        session.commit()
    run_pass(session_factory, now=T0 + timedelta(hours=2))
    assert _messages(session_factory) == []  # paused: the entry waits at its step
    with session_factory() as session:
        CampaignService(session).resume(campaign, actor="maria")
        session.commit()
    run_pass(session_factory, now=T0 + timedelta(hours=3))
    assert _messages(session_factory) == [(1, "email", "s")]
    # after the end no one enters; the campaign completes once its messages are final
    _event(session_factory, 5, "cart_abandoned", end + timedelta(minutes=1))
    run_pass(session_factory, now=end + timedelta(minutes=2))
    assert list(_entries(session_factory)) == [1]
    with session_factory() as session:
        assert CampaignService(session).get(campaign).status.value == "running"
    run_worker(session_factory, MemoryTransport(), settings=SETTINGS, until_idle=True)
    run_pass(session_factory, now=end + timedelta(minutes=3))
    with session_factory() as session:
        assert CampaignService(session).get(campaign).status.value == "completed"


def test_an_event_committed_after_a_later_one_is_still_read(
    session_factory: sessionmaker[Session],
) -> None:
    _campaign(session_factory, trigger={"on": {"kind": "event", "event_type": "cart_abandoned"}})

    def stored(event_id: int, customer: int) -> None:
        with session_factory() as session:
            session.add(Event(id=event_id, customer_id=customer, type="cart_abandoned",
                              occurred_at=T0, source="shop"))  # fmt: skip
            session.commit()

    # the base holds events 1 to 4; ids are handed out at insert, so 6 may commit after 7
    stored(5, 1)
    stored(7, 5)
    run_pass(session_factory, now=T0 + timedelta(minutes=1))
    assert sorted(_entries(session_factory)) == [1, 5]
    with session_factory() as session:
        assert session.get(TriggerCursor, "events").gaps.keys() == {"6"}  # type: ignore[union-attr]
    stored(6, 3)
    run_pass(session_factory, now=T0 + timedelta(minutes=2))
    assert sorted(_entries(session_factory)) == [1, 3, 5]
    with session_factory() as session:
        assert session.get(TriggerCursor, "events").gaps == {}  # type: ignore[union-attr]


def test_goals_and_conditions_do_not_count_the_fact_that_fired_the_entry(
    session_factory: sessionmaker[Session],
) -> None:
    # a welcome journey for first buyers ends when they buy again, and has a step named goal
    _campaign(session_factory, trigger={"on": {"kind": "event", "event_type": "first_purchase"}},
              journey={"goal": "purchase", "steps": [
                  {"id": "goal", "type": "wait", "days": 1},
                  {"id": "again", "type": "branch", "when": {"event": "purchase"},
                   "then": "thanks", "otherwise": "nudge"},
                  {"id": "thanks", "type": "exit"},
                  {"id": "nudge", "type": "send"}]})  # fmt: skip
    _buy(session_factory, 4, T0 + timedelta(minutes=1), "first-gleb")
    _buy(session_factory, 2, T0 + timedelta(minutes=1), "first-boris-again")
    run_pass(session_factory, now=T0 + timedelta(minutes=2))
    entries = _entries(session_factory)
    assert [e.status for e in entries[4]] == [EntryStatus.ACTIVE]  # its own order is no goal
    run_pass(session_factory, now=T0 + timedelta(days=1, minutes=3))
    with session_factory() as session:
        steps = session.scalars(select(JourneyStep.step).order_by(JourneyStep.id)).all()
        # the branch did not count the first order either: Gleb gets the nudge
        nudge = session.scalars(
            select(JourneyStep.outcome).where(JourneyStep.step == "nudge")
        ).one()
    assert steps == ["goal", "goal/end", "again", "nudge"]
    assert nudge == "unreachable: email: no consent"  # Gleb's double opt-in is pending


def test_cancelling_ends_entries_that_wait_for_an_event_without_a_timeout(
    session_factory: sessionmaker[Session],
) -> None:
    campaign = _campaign(
        session_factory, trigger={"on": {"kind": "event", "event_type": "cart_abandoned"}},
        journey={"steps": [{"id": "w", "type": "wait", "until_event": "purchase"},
                           {"id": "s", "type": "send"}]},
    )  # fmt: skip
    _event(session_factory, 1, "cart_abandoned", T0 + timedelta(minutes=1))
    run_pass(session_factory, now=T0 + timedelta(minutes=2))
    with session_factory() as session:
        CampaignService(session).cancel(campaign, actor="maria")
        session.commit()
    run_pass(session_factory, now=T0 + timedelta(minutes=3))
    [entry] = _entries(session_factory)[1]
    assert (entry.status, entry.outcome) == (EntryStatus.EXITED, "campaign cancelled")


@pytest.mark.parametrize("capped", [True, False])
def test_journey_sends_obey_the_frequency_cap_unless_told_not_to(
    session_factory: sessionmaker[Session], capped: bool
) -> None:
    """The default cap is 3 messages a channel in 7 days (5 on all channels): the fourth
    cart reminder within the week is not made, and the step says why; a week after the
    first, there is room again. A journey for service messages opts out."""
    journey = {"frequency_cap": capped, "steps": [{"id": "remind", "type": "send"}]}
    _campaign(session_factory, journey=journey, trigger={
        "on": {"kind": "event", "event_type": "cart_abandoned"},
        "reentry": {"mode": "every_time"}})  # fmt: skip
    for day in (0, 1, 2, 3, 7.5):
        moment = T0 + timedelta(days=day)
        _event(session_factory, 1, "cart_abandoned", moment)
        run_pass(session_factory, now=moment + timedelta(minutes=1))
    with session_factory() as session:
        outcomes = session.scalars(select(JourneyStep.outcome).order_by(JourneyStep.id)).all()
    if capped:
        assert outcomes == ["queued: email"] * 3 + [
            "unreachable: email: frequency cap", "queued: email"]  # fmt: skip
        assert len(_messages(session_factory)) == 4
    else:
        assert outcomes == ["queued: email"] * 5
        assert len(_messages(session_factory)) == 5


def test_a_triggered_campaign_is_measured_from_each_entry(
    session_factory: sessionmaker[Session],
) -> None:
    """Each entry opens its own attribution window (2 days here), the control group's as
    well: an order counts for the campaign only inside one of its customer's windows."""
    campaign = _campaign(session_factory, journey={"steps": [{"id": "remind", "type": "send"}]},
                         trigger={"on": {"kind": "event", "event_type": "cart_abandoned"},
                                  "reentry": {"mode": "every_time"}},
                         control_share=0.5, attribution_days=2)  # fmt: skip
    fired = {1: [0, 5], 2: [0], 3: [1], 5: [1], 7: [2], 8: [2]}  # customer: days of entries
    for day in range(6):
        for customer, days in fired.items():
            if day in days:
                _event(session_factory, customer, "cart_abandoned", T0 + timedelta(days=day))
        run_pass(session_factory, now=T0 + timedelta(days=day, minutes=1))
    inside = dict.fromkeys(fired, 0)
    for customer, days in fired.items():
        first = T0 + timedelta(days=days[0], minutes=1)
        _buy(session_factory, customer, first - timedelta(hours=1), f"before-{customer}")
        _buy(session_factory, customer, first + timedelta(days=1), f"in-{customer}")
        _buy(session_factory, customer, first + timedelta(days=2, hours=1), f"after-{customer}")
        inside[customer] += 1
    # Anna's second entry (day 5) opens a window of its own; her day-3 order is in neither
    _buy(session_factory, 1, T0 + timedelta(days=5, hours=12), "in-again-1")
    inside[1] += 1
    customers = sorted(fired)
    held = control_mask(np.array(customers, dtype=np.int64), campaign_id=campaign, share=0.5)
    control = {c for c, h in zip(customers, held.tolist(), strict=True) if h}
    assert 0 < len(control) < len(customers)  # both groups have someone to compare
    with session_factory() as session:
        stored = session.get_one(Campaign, campaign)
        report = MeasureService(session).report(stored, now=T0 + timedelta(days=6))
    groups = {g.group: g for g in report.groups}
    for label, members in (("control", control), ("treatment", set(customers) - control)):
        assert groups[label].customers == len(members)
        assert groups[label].revenue == Decimal(500) * sum(inside[c] for c in members)
        assert groups[label].converted == len(members)
    assert report.window_basis == "from each entry, 2 days"
    assert report.window_end == T0 + timedelta(days=7, minutes=1)
    assert report.window_closed is False  # the campaign still admits customers
    assert report.cost.messages == 0  # nothing was sent yet: the outbox waits for a worker


def test_the_runner_has_its_growing_tables_analysed_as_they_grow(
    session_factory: sessionmaker[Session],
) -> None:
    def analysed() -> int:
        with session_factory() as session:
            if session.get_bind().dialect.name != "postgresql":
                return 0
            return int(session.execute(text(
                "SELECT analyze_count FROM pg_stat_user_tables "
                "WHERE relname = 'journey_entries'")).scalar_one())  # fmt: skip

    growth = Growth(least=3, share=0.5)
    before = analysed()
    growth.note(session_factory, PassTally(entered=2))
    assert (growth.written, growth.known) == (2, 0)
    growth.note(session_factory, PassTally(entered=1, messages=1))  # 4 rows: past the least
    assert (growth.written, growth.known) == (0, 4)
    growth.note(session_factory, PassTally(entered=2))  # 2 < max(3, 0.5 x 4)
    assert (growth.written, growth.known) == (2, 4)
    if session_factory.kw["bind"].dialect.name == "postgresql":
        # the statistics collector reports asynchronously: wait for it
        deadline = time.monotonic() + 10
        while analysed() == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert analysed() == before + 1


def test_service_messages_neither_obey_nor_use_up_the_frequency_cap(
    session_factory: sessionmaker[Session],
) -> None:
    service = {"frequency_cap": False, "steps": [{"id": "receipt", "type": "send"}]}
    _campaign(session_factory, journey=service, name="receipts", trigger={
        "on": {"kind": "event", "event_type": "points_statement"},
        "reentry": {"mode": "every_time"}})  # fmt: skip
    _campaign(session_factory, journey={"steps": [{"id": "remind", "type": "send"}]},
              trigger={"on": {"kind": "event", "event_type": "cart_abandoned"}})  # fmt: skip
    for minute in range(4):
        _event(session_factory, 1, "points_statement", T0 + timedelta(minutes=minute))
    _event(session_factory, 1, "cart_abandoned", T0 + timedelta(minutes=5))
    run_pass(session_factory, now=T0 + timedelta(minutes=6))
    with session_factory() as session:
        rows = session.execute(select(Message.step_key, Message.capped).order_by(Message.id))
        made = [(key.split(":")[1], capped) for key, capped in rows]
    # four statements over the cap of three, and the cart reminder still goes
    assert made == [("receipt", False)] * 4 + [("remind", True)]
