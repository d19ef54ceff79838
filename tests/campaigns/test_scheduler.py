"""The scheduler launches one-off campaigns at their time and recurring campaigns as runs
of their own; campaigns pause and resume without losing or repeating a message."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.service import CampaignService
from patron.campaigns.tasks import run_due
from patron.channels.base import MemoryTransport
from patron.cli.main import background_threads
from patron.dispatch.service import DispatchService
from patron.dispatch.tasks import run_worker
from patron.kit.errors import Conflict, InvalidInput
from patron.kit.settings import Settings, get_settings
from patron.models import CampaignStatus, Message, MessageStatus
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.fixtures.segments import store_base
from tests.fixtures.smtp import Inbox, smtp_server

__all__ = ["smtp_server"]

SETTINGS = Settings(secret_key="a-test-secret-of-enough-length", worker_batch=50)
MONDAY_10_MSK = {"cron": "0 10 * * 1", "timezone": "Europe/Moscow"}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def stored(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """The small base with a segment of the email subscribers (Anna 1, Dina 5; Zhanna 8
    has consent but no address)."""
    with session_factory() as session:
        store_base(session)
        for name, rule in {
            "subscribers": {"kind": "consent", "channel": "email"},
            "nobody": {"kind": "profile", "field": "city", "value": "Atlantis"},
        }.items():
            SegmentService(session).create(SegmentIn(name=name, rule=parse_rule(rule)), actor="t")
        session.commit()
    return session_factory


def scheduled(factory: sessionmaker[Session], **changes: object) -> int:
    with factory() as session:
        service = CampaignService(session)
        given = {"segment": "subscribers", "control_share": 0.0} | changes
        campaign = service.create(plan(**given), actor="maria")
        service.schedule(campaign.id, actor="maria")
        session.commit()
        return campaign.id


def statuses(factory: sessionmaker[Session], campaign_id: int) -> dict[int, MessageStatus]:
    with factory() as session:
        rows = session.scalars(select(Message).where(Message.campaign_id == campaign_id))
        return {m.customer_id: m.status for m in rows}


def test_a_one_off_campaign_launches_at_its_time_once(stored: sessionmaker[Session]) -> None:
    campaign_id = scheduled(stored, schedule={"start_at": "2027-01-15T09:00:00+03:00"})
    with stored() as session:
        assert CampaignService(session).get(campaign_id).next_run_at == utc("2027-01-15 06:00")

    assert run_due(stored, now=utc("2027-01-15 05:59")) == []
    assert run_due(stored, now=utc("2027-01-15 06:00")) == [campaign_id]
    assert run_due(stored, now=utc("2027-01-15 06:01")) == []  # taken once, not again

    with stored() as session:
        service = CampaignService(session)
        campaign = service.get(campaign_id)
        assert campaign.status is CampaignStatus.RUNNING and campaign.next_run_at is None
        assert campaign.launched_at == utc("2027-01-15 06:00")
        assert [(c.actor, c.action) for c in service.trail(campaign)] == [
            ("maria", "created"), ("maria", "schedule"), ("scheduler", "launch"),
        ]  # fmt: skip
    assert statuses(stored, campaign_id) == {1: MessageStatus.QUEUED, 5: MessageStatus.QUEUED}


def test_a_recurring_campaign_runs_each_time_as_a_campaign_of_its_own(
    stored: sessionmaker[Session],
) -> None:
    # Mondays 10:00 Moscow (07:00 UTC) from 2027-01-01 to 2027-01-20: the 4th, 11th, 18th
    schedule = {**MONDAY_10_MSK, "start_at": "2027-01-01T00:00:00+03:00",
                "end_at": "2027-01-20T00:00:00+03:00"}  # fmt: skip
    parent = scheduled(stored, name="weekly", schedule=schedule)
    with stored() as session, pytest.raises(InvalidInput, match="is recurring: schedule it"):
        CampaignService(session).launch(parent, actor="maria")

    launched = []
    for day in ("2027-01-04", "2027-01-11", "2027-01-18"):
        assert run_due(stored, now=utc(f"{day} 06:59")) == []
        launched += run_due(stored, now=utc(f"{day} 07:00"))
    assert launched == [2, 3, 4]

    with stored() as session:
        service = CampaignService(session)
        weekly = service.get(parent)
        assert weekly.status is CampaignStatus.COMPLETED and weekly.next_run_at is None
        runs = service.runs(weekly)
        assert [r.name for r in runs] == [
            "weekly · 2027-01-04 10:00", "weekly · 2027-01-11 10:00", "weekly · 2027-01-18 10:00",
        ]  # fmt: skip
        assert {(r.status, r.parent_id, r.audience["treatment"]) for r in runs} == {
            (CampaignStatus.RUNNING, parent, 2)
        }
        assert runs[1].launched_at == utc("2027-01-11 07:00")
        assert runs[1].schedule["cron"] is None
        assert [c.action for c in service.trail(weekly)] == [
            "created", "schedule", "run", "run", "run", "complete",
        ]  # fmt: skip
    for run in launched:
        assert statuses(stored, run) == {1: MessageStatus.QUEUED, 5: MessageStatus.QUEUED}


def test_a_run_with_no_one_to_send_to_is_cancelled_with_the_reason(
    stored: sessionmaker[Session],
) -> None:
    parent = scheduled(
        stored, name="weekly", segment="nobody",
        schedule={**MONDAY_10_MSK, "start_at": "2027-01-01T00:00:00+03:00"},
    )  # fmt: skip
    assert run_due(stored, now=utc("2027-01-04 07:00")) == []
    one_off = scheduled(stored, name="once", segment="nobody", schedule={})
    assert run_due(stored, now=utc("2027-01-04 07:01")) == []
    with stored() as session:
        service = CampaignService(session)
        weekly = service.get(parent)
        # the recurring campaign goes on to next Monday; its empty run is cancelled
        assert weekly.status is CampaignStatus.SCHEDULED
        assert weekly.next_run_at == utc("2027-01-11 07:00")
        (run,) = service.runs(weekly)
        assert run.status is CampaignStatus.CANCELLED
        assert service.trail(run)[-1].changes["reason"] == (
            f"campaign {run.id}: segment 'nobody' selects no one: nothing sent"
        )
        once = service.get(one_off)
        assert once.status is CampaignStatus.CANCELLED
        assert service.trail(once)[-1].changes["reason"] == (
            f"launch failed: campaign {one_off}: segment 'nobody' selects no one: nothing sent"
        )


def test_a_run_is_taken_by_one_scheduler_only(stored: sessionmaker[Session]) -> None:
    campaign_id = scheduled(stored, schedule={"start_at": "2027-01-15T09:00:00+03:00"})
    now = utc("2027-01-15 06:00")
    with stored() as first, stored() as second:
        # both saw the run due; the second's claim finds it moved on and launches nothing
        assert CampaignService(first).due(now=now) == CampaignService(second).due(now=now)
        assert CampaignService(first).run_due(campaign_id, now=now) is not None
        first.commit()
        assert CampaignService(second).run_due(campaign_id, now=now) is None


def launched_now(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        service = CampaignService(session)
        campaign = service.create(plan(segment="subscribers", control_share=0.0), actor="m")
        service.launch(campaign.id, actor="m")
        session.commit()
        return campaign.id


def test_a_paused_campaign_holds_its_messages_until_resumed(
    stored: sessionmaker[Session],
) -> None:
    campaign_id = launched_now(stored)
    with stored() as session:
        CampaignService(session).pause(campaign_id, actor="maria", reason="wrong price")
        session.commit()
    assert statuses(stored, campaign_id) == {1: MessageStatus.HELD, 5: MessageStatus.HELD}

    transport = MemoryTransport()
    stats = run_worker(stored, transport, settings=SETTINGS, until_idle=True)
    assert (stats.claimed, transport.delivered, stats.completed) == (0, [], [])
    with stored() as session:
        service = CampaignService(session)
        assert service.get(campaign_id).status is CampaignStatus.PAUSED
        with pytest.raises(Conflict, match="is paused: it cannot launch"):
            service.launch(campaign_id, actor="maria")
        service.resume(campaign_id, actor="maria")
        session.commit()

    stats = run_worker(stored, transport, settings=SETTINGS, until_idle=True)
    assert sorted(e.to for e in transport.delivered) == ["anna@example.ru", "dina@example.ru"]
    assert stats.completed == [campaign_id]
    with stored() as session:
        service = CampaignService(session)
        trail = [(c.action, c.changes) for c in service.trail(service.get(campaign_id))]
        assert [a for a, _ in trail] == [
            "created", "launch", "pause", "hold", "resume", "requeue", "complete",
        ]  # fmt: skip
        assert trail[2][1]["reason"] == "wrong price"
        assert trail[3][1] == {"messages": 2} and trail[5][1] == {"messages": 2}


def test_a_message_claimed_as_the_pause_comes_waits_with_the_rest(
    stored: sessionmaker[Session],
) -> None:
    campaign_id = launched_now(stored)
    now = datetime.now(UTC)
    with stored() as session:
        dispatch = DispatchService(session, settings=SETTINGS)
        claimed = dispatch.repo.claim(worker="w", limit=1, now=now, lease=timedelta(minutes=2))
        session.commit()
    with stored() as session:
        CampaignService(session).pause(campaign_id, actor="maria")
        session.commit()
    assert sorted(statuses(stored, campaign_id).values()) == [
        MessageStatus.HELD, MessageStatus.SENDING,
    ]  # fmt: skip
    with stored() as session:
        dispatch = DispatchService(session, settings=SETTINGS)
        rendered = dispatch.render(dispatch.repo.messages(claimed.ids), now=now, lease=claimed)
        session.commit()
    assert (rendered.envelopes, rendered.skipped) == ([], {})
    with stored() as session:
        rows = session.scalars(select(Message).where(Message.campaign_id == campaign_id)).all()
        # given back without counting the attempt, and without a worker's lease
        assert {(m.status, m.attempts, m.lease_until, m.worker) for m in rows} == {
            (MessageStatus.HELD, 0, None, None)
        }


def test_cancelling_a_paused_campaign_skips_its_waiting_messages(
    stored: sessionmaker[Session],
) -> None:
    campaign_id = launched_now(stored)
    with stored() as session:
        service = CampaignService(session)
        service.pause(campaign_id, actor="maria")
        service.cancel(campaign_id, actor="maria", reason="season over")
        session.commit()
    with stored() as session:
        rows = session.scalars(select(Message).where(Message.campaign_id == campaign_id)).all()
        assert {(m.status, m.reason) for m in rows} == {
            (MessageStatus.SKIPPED, "campaign cancelled")
        }
        assert CampaignService(session).get(campaign_id).status is CampaignStatus.CANCELLED


def test_the_server_process_launches_and_sends_a_due_campaign(
    stored: sessionmaker[Session],
    smtp_server: tuple[Inbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``patron serve`` starts beside the API: the scheduler launches the campaign
    whose time has come, and the worker delivers it to the SMTP server."""
    inbox, port = smtp_server
    monkeypatch.setenv("PATRON_SMTP_PORT", str(port))
    monkeypatch.setenv("PATRON_SCHEDULER_POLL_SECONDS", "0.2")
    get_settings.cache_clear()
    campaign_id = scheduled(stored, schedule={})  # due at once
    stop = threading.Event()
    threads = background_threads(stored, stop=stop, sender=True, scheduler=True, poll=0.2)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with stored() as session:
                if CampaignService(session).get(campaign_id).status is CampaignStatus.COMPLETED:
                    break
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        get_settings.cache_clear()
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(r.recipients[0] for r in inbox.received) == [
        "anna@example.ru", "dina@example.ru",
    ]  # fmt: skip
    with stored() as session:
        service = CampaignService(session)
        campaign = service.get(campaign_id)
        assert campaign.status is CampaignStatus.COMPLETED
        assert [(c.actor, c.action) for c in service.trail(campaign)] == [
            ("maria", "created"), ("maria", "schedule"), ("scheduler", "launch"),
            ("dispatch", "complete"),
        ]  # fmt: skip
