"""Delivery rules at send time, whatever the channel: consent read again, quiet hours in
the customer's own zone, a router per channel, the provider's id and Retry-After kept,
and a campaign paused when its complaints pass the limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.service import CampaignService
from patron.channels.base import Envelope, HandingOver, MemoryTransport, Outcome
from patron.channels.router import Router
from patron.customers.schemas import ConsentIn
from patron.customers.service import CustomerService
from patron.dispatch.service import DispatchService
from patron.dispatch.tasks import WorkerStats, run_once, run_worker
from patron.kit.errors import InvalidInput
from patron.kit.settings import Settings, get_settings
from patron.models import (
    Campaign,
    CampaignStatus,
    Channel,
    ConsentStatus,
    Customer,
    Message,
    MessageStatus,
)
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.fixtures.segments import store_base

SETTINGS = Settings(
    public_url="https://crm.example.com",
    secret_key="a-test-secret-of-enough-length",
    retry_base_seconds=60,
    max_attempts=3,
    complaint_min_sent=2,
    complaint_rate_limit=0.3,
)
SMS_TEXT = {"text": "{{ customer.first_name }}, -15% until Sunday", "sender": "SHOP"}


def _launch(factory: sessionmaker[Session], channel: str, rule: dict[str, Any]) -> int:
    with factory() as session:
        store_base(session)
        SegmentService(session).create(SegmentIn(name="them", rule=parse_rule(rule)), actor="test")
        service = CampaignService(session)
        message = SMS_TEXT if channel != "email" else plan().message.model_dump()
        campaign = service.create(
            plan(segment="them", control_share=0.0, channel=channel, message=message),
            actor="maria",
        )
        service.launch(campaign.id, actor="maria")
        session.commit()
        return campaign.id


def _messages(factory: sessionmaker[Session]) -> dict[int, Message]:
    with factory() as session:
        return {m.customer_id: m for m in session.scalars(select(Message))}


def test_consent_withdrawn_after_the_launch_stops_the_message(
    session_factory: sessionmaker[Session],
) -> None:
    _launch(session_factory, "email", {"kind": "consent", "channel": "email"})
    assert sorted(_messages(session_factory)) == [1, 5]
    with session_factory() as session:
        # withdrawn through a form, not through an unsubscribe link: no suppression row
        CustomerService(session).record_consent(
            1, ConsentIn(channel=Channel.EMAIL, status=ConsentStatus.WITHDRAWN,
                         decided_at=datetime(2026, 7, 1, tzinfo=UTC)),
            source="form",
        )  # fmt: skip
        session.commit()
    stats = run_worker(session_factory, MemoryTransport(), settings=SETTINGS, until_idle=True)
    done = _messages(session_factory)
    assert (stats.sent, stats.skipped) == (1, 1)
    assert done[1].status is MessageStatus.SKIPPED
    assert done[1].reason == "no marketing consent on email at send time"


@pytest.mark.parametrize(
    ("zone", "now", "waits_until"),
    [
        # 23:30 in Moscow: waits until 09:00 there, the next morning
        (None, datetime(2027, 7, 1, 20, 30, tzinfo=UTC), datetime(2027, 7, 2, 6, 0, tzinfo=UTC)),
        # 03:00 on 2 July in Vladivostok (UTC+10): waits until 09:00 there that day
        ("Asia/Vladivostok", datetime(2027, 7, 1, 17, 0, tzinfo=UTC),
         datetime(2027, 7, 1, 23, 0, tzinfo=UTC)),
        # noon in Moscow: goes at once
        (None, datetime(2027, 7, 1, 9, 0, tzinfo=UTC), None),
    ],
)  # fmt: skip
def test_quiet_hours_in_the_customers_own_zone(
    session_factory: sessionmaker[Session],
    zone: str | None,
    now: datetime,
    waits_until: datetime | None,
) -> None:
    _launch(session_factory, "sms", {"kind": "consent", "channel": "sms"})
    with session_factory() as session:
        vera = session.get(Customer, 3)
        assert vera is not None
        vera.timezone = zone
        session.commit()
    with session_factory() as session:
        service = DispatchService(session, settings=SETTINGS)
        lease = service.repo.claim(worker="w", limit=10, now=now, lease=timedelta(seconds=120))
        rendered = service.render(service.repo.messages(lease.ids), now=now, lease=lease)
        session.commit()
    message = _messages(session_factory)[3]
    if waits_until is None:
        assert [e.to for e in rendered.envelopes] == ["+79161234503"]
        envelope = rendered.envelopes[0]
        assert (envelope.channel, envelope.text, envelope.html) == (
            Channel.SMS, "Vera, -15% until Sunday", None
        )  # fmt: skip
        return
    assert rendered.envelopes == [] and rendered.skipped == {}
    assert (message.status, message.attempts, message.lease_until) == (
        MessageStatus.QUEUED, 0, None
    )  # fmt: skip
    assert message.next_attempt_at == waits_until
    local = "2027-07-02 09:00 Europe/Moscow" if zone is None else "2027-07-02 09:00 " + zone
    assert message.reason == f"quiet hours: waits until {local}"


class _Provider:
    """A transport that answers as a provider would: an id for one, a 429 for another."""

    channel = Channel.SMS

    def __init__(self) -> None:
        self.handed: list[int] = []

    def deliver(self, envelopes: Any, *, handing_over: HandingOver) -> list[Outcome]:
        handing_over(envelopes)
        self.handed += [e.message_id for e in envelopes]
        return [
            Outcome(e.message_id, "retry", "429 Too Many Requests", retry_after=600)
            if e.to.endswith("03")
            else Outcome(e.message_id, "sent", provider_ref=f"SM{e.message_id}")
            for e in envelopes
        ]

    def close(self) -> None:
        return None


def test_the_router_sends_each_channel_through_its_transport(
    session_factory: sessionmaker[Session],
) -> None:
    provider = _Provider()
    router = Router({Channel.SMS: provider})
    envelopes = [
        Envelope(1, "k1", "+79161234501", "SHOP", "", "hi", channel=Channel.SMS),
        Envelope(2, "k2", "anna@example.ru", "x@y.z", "s", "hi"),
        Envelope(3, "k3", "+79161234503", "SHOP", "", "hi", channel=Channel.SMS),
    ]
    handed: list[list[int]] = []
    out = router.deliver(envelopes, handing_over=lambda e: handed.append([x.message_id for x in e]))
    assert [(o.message_id, o.result, o.reason, o.provider_ref) for o in out] == [
        (1, "sent", None, "SM1"),
        (2, "failed", "no transport is configured for the email channel", None),
        (3, "retry", "429 Too Many Requests", None),
    ]
    assert handed == [[1, 3]]


def test_provider_ids_are_kept_and_retry_after_is_honoured(
    session_factory: sessionmaker[Session],
) -> None:
    # Vera has an SMS consent and a phone; Anna gets one too, for two messages
    with session_factory() as session:
        store_base(session)
        session.commit()
    with session_factory() as session:
        CustomerService(session).record_consent(
            1, ConsentIn(channel=Channel.SMS, status=ConsentStatus.GRANTED,
                         decided_at=datetime(2026, 1, 1, tzinfo=UTC)),
            source="form",
        )  # fmt: skip
        SegmentService(session).create(
            SegmentIn(name="them", rule=parse_rule({"kind": "consent", "channel": "sms"})),
            actor="test",
        )
        service = CampaignService(session)
        campaign = service.create(
            plan(segment="them", control_share=0.0, channel="sms", message=SMS_TEXT), actor="m"
        )
        service.launch(campaign.id, actor="m")
        session.commit()
    quiet_off = SETTINGS.model_copy(update={"quiet_hours_start": 0, "quiet_hours_end": 0})
    provider = _Provider()
    before = datetime.now(UTC)
    stats = WorkerStats()
    claimed = run_once(
        session_factory, Router({Channel.SMS: provider}), settings=quiet_off, stats=stats
    )
    assert (claimed, stats.sent, stats.retried) == (2, 1, 1)
    done = _messages(session_factory)
    assert (done[1].status, done[1].provider_ref) == (MessageStatus.SENT, f"SM{done[1].id}")
    assert done[3].status is MessageStatus.QUEUED
    # the provider asked for 600 s, more than the first backoff of 60 s
    assert (done[3].next_attempt_at - before).total_seconds() >= 600
    assert done[3].reason == "429 Too Many Requests"
    with session_factory() as session:
        assert DispatchService(session).repo.by_provider_ref(f"SM{done[1].id}") is not None


def test_complaints_past_the_limit_pause_the_campaign(
    session_factory: sessionmaker[Session],
) -> None:
    guard = SETTINGS.model_copy(update={"complaint_min_sent": 1})
    campaign_id = _launch(session_factory, "email", {"kind": "consent", "channel": "email"})
    # one batch of one goes out (Anna); Dina's message is still queued
    run_once(session_factory, MemoryTransport(), settings=SETTINGS.model_copy(
        update={"worker_batch": 1}))  # fmt: skip
    done = _messages(session_factory)
    assert [done[c].status for c in (1, 5)] == [MessageStatus.SENT, MessageStatus.QUEUED]
    with session_factory() as session:
        # 1 complaint on 1 sent is 100%, past the 30% limit (checked from 1 sent on)
        DispatchService(session, settings=guard).complained(done[1].id, now=datetime.now(UTC))
        session.commit()
    with session_factory() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None and campaign.status is CampaignStatus.PAUSED
        assert session.get(Message, done[5].id).status is MessageStatus.HELD  # type: ignore[union-attr]
        trail = CampaignService(session).repo.trail(campaign_id)
        paused = [t for t in trail if t.action == "pause"]
        assert paused[0].actor == "complaint-guard"
        assert paused[0].changes["reason"] == (
            "1 complaints on 1 sent messages (100.00%) passed the limit of 30.00%"
        )


def test_the_cross_channel_cap_counts_every_channel(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATRON_FREQUENCY_CAP_ALL_CHANNELS", "2")
    get_settings.cache_clear()
    with session_factory() as session:
        store_base(session)
        CustomerService(session).record_consent(
            1, ConsentIn(channel=Channel.SMS, status=ConsentStatus.GRANTED,
                         decided_at=datetime(2026, 1, 1, tzinfo=UTC)),
            source="form",
        )  # fmt: skip
        segments = SegmentService(session)
        segments.create(SegmentIn(name="anna", rule=parse_rule(
            {"kind": "profile", "field": "first_name", "value": "Anna"})), actor="t")  # fmt: skip
        service = CampaignService(session)
        for number, channel in enumerate(("sms", "sms", "email"), start=1):
            message = SMS_TEXT if channel == "sms" else plan().message.model_dump()
            campaign = service.create(
                plan(name=f"c{number}", segment="anna", control_share=0.0, channel=channel,
                     message=message),
                actor="m",
            )  # fmt: skip
            if number < 3:
                service.launch(campaign.id, actor="m")
                assert campaign.audience["treatment"] == 1
                continue
            # two SMS in the week reach the cross-channel cap of 2: the email, the first on
            # its own channel, leaves her out
            with pytest.raises(InvalidInput, match=r"\(frequency_cap 1; mostly frequency_cap"):
                service.launch(campaign.id, actor="m")
    get_settings.cache_clear()
