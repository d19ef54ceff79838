"""Email end to end: the outbox written at launch, a worker delivering to a real SMTP
server (aiosmtpd), MIME read back, bounces, retries, tracking and unsubscribe."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from patron.api.app import create_app
from patron.campaigns.service import CampaignService
from patron.channels.base import Envelope, HandingOver, MemoryTransport, Outcome
from patron.channels.email import SmtpSettings, SmtpTransport
from patron.customers.service import CustomerService
from patron.dispatch import tasks
from patron.dispatch.repository import DispatchRepository
from patron.dispatch.tasks import WorkerStats, claim_and_render, deliver_and_settle, run_worker
from patron.kit.settings import Settings
from patron.models import (
    CampaignStatus,
    Channel,
    ConsentStatus,
    Identity,
    IdentityKind,
    Message,
    MessageStatus,
    Suppression,
)
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.fixtures.segments import store_base
from tests.fixtures.smtp import Inbox, smtp_server

__all__ = ["smtp_server"]

SETTINGS = Settings(
    public_url="https://crm.example.com",
    secret_key="a-test-secret-of-enough-length",
    worker_batch=50,
    retry_base_seconds=60,
    max_attempts=3,
)


@pytest.fixture
def launched(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """The small base, Zhanna with a malformed email, and a campaign to the subscribers
    (Anna, Dina, Zhanna) launched with no control group."""
    with session_factory() as session:
        store_base(session)
        session.add(
            Identity(
                customer_id=8, kind=IdentityKind.EMAIL, value="zhanna@@example", raw_value="x",
                source="test",
            )
        )  # fmt: skip
        SegmentService(session).create(
            SegmentIn(name="subscribers", rule=parse_rule({"kind": "consent", "channel": "email"})),
            actor="test",
        )
        service = CampaignService(session)
        campaign = service.create(
            plan(
                segment="subscribers", control_share=0.0,
                offer={"kind": "coupon", "coupon_prefix": "KEEP", "cost": "100.00"},
                message={
                    "subject": "{{ customer.first_name }}, a gift for you",
                    "html": '<html><body><p>Hi {{ customer.first_name }}</p><a href='
                            '"https://shop.example.com/sale?x=1">Shop</a> <a href='
                            '"{{ unsubscribe_url }}">Unsubscribe</a></body></html>',
                    "text": "Hi {{ customer.first_name }}, your code is {{ coupon }}.",
                    "sender": "Магазин <news@shop.example.com>",
                },
            ),
            actor="maria",
        )  # fmt: skip
        service.launch(campaign.id, actor="maria")
        session.commit()
    return session_factory


def transport(port: int) -> SmtpTransport:
    return SmtpTransport(SmtpSettings(host="127.0.0.1", port=port, connections=2, timeout=10))


def messages(factory: sessionmaker[Session]) -> dict[int, Message]:
    with factory() as session:
        return {m.customer_id: m for m in session.scalars(select(Message))}


def test_a_campaign_is_delivered_as_proper_mime_and_completes(
    launched: sessionmaker[Session], smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    # the outbox was written at launch: one row per treated customer
    queued = messages(launched)
    assert sorted(queued) == [1, 5, 8]
    assert all(m.status is MessageStatus.QUEUED for m in queued.values())
    assert re.fullmatch(r"KEEP-[A-HJ-NP-Z2-9]{10}", queued[1].coupon or "")
    assert len({m.coupon for m in queued.values()}) == 3

    stats = run_worker(launched, transport(port), settings=SETTINGS, until_idle=True)
    assert (stats.sent, stats.skipped, stats.failed) == (2, 1, 0)
    assert stats.completed == [1]

    done = messages(launched)
    assert done[8].status is MessageStatus.SKIPPED
    assert (done[8].reason or "").startswith("malformed address 'zhanna@@example'")
    assert {done[1].status, done[5].status} == {MessageStatus.SENT}
    assert sorted(r.recipients[0] for r in inbox.received) == [
        "anna@example.ru", "dina@example.ru"
    ]  # fmt: skip
    anna = next(r for r in inbox.received if r.recipients == ["anna@example.ru"]).parsed()
    assert anna["Subject"] == "Anna, a gift for you"
    assert anna["From"] == "Магазин <news@shop.example.com>"
    assert anna["Message-ID"] == f"<patron.c1.m{done[1].id}@shop.example.com>"
    assert anna.get_content_type() == "multipart/alternative"
    text, html = (part.get_content() for part in anna.iter_parts())
    assert text.startswith(f"Hi Anna, your code is {done[1].coupon}.")
    unsubscribe = anna["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith(f"https://crm.example.com/u/{done[1].id}-")
    assert anna["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f'href="{unsubscribe}"' in html
    assert f'<img src="https://crm.example.com/t/o/{done[1].id}-' in html
    assert "https://crm.example.com/t/c/" in html

    with launched() as session:
        campaign = CampaignService(session).get(1)
        assert campaign.status is CampaignStatus.COMPLETED
        trail = [c.action for c in CampaignService(session).trail(campaign)]
        assert trail == ["created", "launch", "complete"]


def test_a_hard_bounce_fails_and_suppresses_a_temporary_one_retries(
    launched: sessionmaker[Session], smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    inbox.refuse = {
        "dina@example.ru": "550 5.1.1 no such mailbox",
        "anna@example.ru": "451 4.3.0 try again later",
    }
    run_worker(launched, transport(port), settings=SETTINGS, until_idle=False, stop=_after_one())
    found = messages(launched)
    assert found[5].status is MessageStatus.FAILED
    assert found[5].reason == "RCPT TO: 550 5.1.1 no such mailbox"
    assert found[5].bounced_at is not None
    assert found[1].status is MessageStatus.QUEUED and found[1].attempts == 1
    assert found[1].reason == "RCPT TO: 451 4.3.0 try again later"
    waited = found[1].next_attempt_at - (found[1].lease_until or found[1].created_at)
    assert waited >= timedelta(seconds=0)
    with launched() as session:
        suppressed = session.scalars(select(Suppression)).all()
        assert [(s.customer_id, s.channel, s.reason) for s in suppressed] == [
            (5, Channel.EMAIL, "hard_bounce")
        ]
        # the campaign waits for Anna's retry before it can complete
        assert CampaignService(session).get(1).status is CampaignStatus.RUNNING
    assert inbox.received == []


def test_retries_back_off_and_give_up_with_the_reason(
    launched: sessionmaker[Session], smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    inbox.refuse = {"anna@example.ru": "451 4.3.0 try again later"}
    quick = SETTINGS.model_copy(update={"retry_base_seconds": 1, "max_attempts": 2})
    stats = run_worker(launched, transport(port), settings=quick, until_idle=True, poll_seconds=0.2)
    assert stats.retried == 1 and stats.failed == 1
    anna = messages(launched)[1]
    assert anna.status is MessageStatus.FAILED and anna.attempts == 2
    assert anna.reason == "gave up after 2 attempts: RCPT TO: 451 4.3.0 try again later"
    assert stats.completed == [1]


def test_opens_clicks_and_one_click_unsubscribe(
    launched: sessionmaker[Session],
    smtp_server: tuple[Inbox, int],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox, port = smtp_server
    run_worker(launched, transport(port), settings=SETTINGS, until_idle=True)
    anna = next(r for r in inbox.received if r.recipients == ["anna@example.ru"]).parsed()
    html = anna.get_body(("html",)).get_content()  # type: ignore[union-attr]
    pixel = re.search(r'<img src="https://crm.example.com(/t/o/[^"]+)"', html)
    link = re.search(r'href="https://crm.example.com(/t/c/[^"]+)"', html)
    assert pixel is not None and link is not None
    monkeypatch.setenv("PATRON_SECRET_KEY", SETTINGS.secret_key)
    from patron.kit.settings import get_settings

    get_settings.cache_clear()
    with TestClient(create_app(engine), base_url="http://testserver") as web:
        assert web.get(pixel.group(1)).headers["content-type"] == "image/gif"
        target = link.group(1).replace("&amp;", "&")
        followed = web.get(target, follow_redirects=False)
        assert followed.status_code == 302
        assert followed.headers["location"] == "https://shop.example.com/sale?x=1"
        assert parse_qs(urlsplit(target).query)["u"] == ["https://shop.example.com/sale?x=1"]
        forged = target.replace("u=https%3A%2F%2Fshop.", "u=https%3A%2F%2Fevil.")
        assert web.get(forged, follow_redirects=False).status_code == 404
        path = urlsplit(anna["List-Unsubscribe"].strip("<>")).path
        assert "Unsubscribe from these messages?" in web.get(path).text
        done = web.post(path, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        assert web.post("/u/1-0000", data={}).status_code == 404
    get_settings.cache_clear()
    with launched() as session:
        message = session.scalars(select(Message).where(Message.customer_id == 1)).one()
        assert message.opened_at is not None and message.clicked_at is not None
        assert message.unsubscribed_at is not None
        consents = CustomerService(session).effective_consents(1)
        email = next(c for c in consents if c.channel is Channel.EMAIL)
        assert (email.status, email.source) == (ConsentStatus.WITHDRAWN, "unsubscribe")
        reasons = [s.reason for s in session.scalars(select(Suppression))]
        assert reasons == ["unsubscribed"]


def _after_one() -> threading.Event:
    """A stop event that is set once the worker has done one batch."""

    class Once(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            self.set()
            return True

    return Once()


def test_suppressed_after_launch_or_cancelled_is_skipped_with_the_reason(
    launched: sessionmaker[Session], smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    with launched() as session:
        from patron.campaigns.repository import CampaignRepository

        CampaignRepository(session).suppress(5, Channel.EMAIL, reason="unsubscribed")
        session.commit()
    run_worker(launched, transport(port), settings=SETTINGS, until_idle=True)
    found = messages(launched)
    assert found[5].status is MessageStatus.SKIPPED
    assert found[5].reason == "suppressed on email since the launch"
    assert [r.recipients for r in inbox.received] == [["anna@example.ru"]]


def test_a_cancelled_campaign_sends_nothing_more(
    launched: sessionmaker[Session], smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    with launched() as session:
        CampaignService(session).cancel(1, actor="maria", reason="wrong offer")
        session.commit()
    run_worker(launched, transport(port), settings=SETTINGS, until_idle=True)
    assert {m.reason for m in messages(launched).values()} == {"campaign cancelled"}
    assert inbox.received == []


def _taken_over(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> tuple[tasks.Claim, tasks.Claim, Settings]:
    """A slow worker's claim, and the claim that takes its messages over once its lease
    has run out (the clock moved 61 s on a 60 s lease)."""
    settings = SETTINGS.model_copy(update={"worker_lease_seconds": 60})
    clock = [datetime.now(UTC)]
    monkeypatch.setattr(tasks, "utcnow", lambda: clock[0])
    slow = claim_and_render(factory, settings=settings, name="h:1:slow", stats=WorkerStats())
    clock[0] += timedelta(seconds=61)
    fresh = claim_and_render(factory, settings=settings, name="h:2:fresh", stats=WorkerStats())
    assert slow is not None and fresh is not None
    return slow, fresh, settings


def test_a_claim_whose_lease_ran_out_in_flight_sends_nothing_the_next_claim_sends_once(
    launched: sessionmaker[Session], smtp_server: tuple[Inbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    inbox, port = smtp_server
    slow, fresh, settings = _taken_over(launched, monkeypatch)
    # Zhanna's malformed address was settled by the slow claim before its lease ran out
    assert len(slow.lease.ids) == 3
    assert list(fresh.lease.ids) == [e.message_id for e in slow.rendered.envelopes]
    assert [e.to for e in fresh.rendered.envelopes] == ["anna@example.ru", "dina@example.ru"]

    # the slow worker gets to its handover only now: the marks are refused, and both SMTP
    # sessions end before the final dot, so the server keeps nothing
    late = WorkerStats()
    deliver_and_settle(launched, transport(port), slow, settings=settings, stats=late)
    assert (late.sent, late.retried, late.failed, late.withdrawn) == (0, 0, 0, 2)
    assert inbox.received == []
    held = messages(launched)
    assert {(held[c].status, held[c].worker, held[c].attempts) for c in (1, 5)} == {
        (MessageStatus.SENDING, "h:2:fresh", 2)
    }

    done = WorkerStats()
    deliver_and_settle(launched, transport(port), fresh, settings=settings, stats=done)
    assert (done.sent, done.withdrawn) == (2, 0)
    assert sorted(r.recipients[0] for r in inbox.received) == [
        "anna@example.ru", "dina@example.ru"
    ]  # fmt: skip
    sent = messages(launched)
    assert {sent[c].status for c in (1, 5)} == {MessageStatus.SENT}
    assert sent[8].status is MessageStatus.SKIPPED


def test_a_late_outcome_of_a_claim_taken_over_changes_nothing(
    launched: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    slow, fresh, settings = _taken_over(launched, monkeypatch)
    # the slow claim's provider refused Anna for now: a retry that must not requeue a
    # message the fresh claim holds (and may have sent by then)
    refusing = MemoryTransport(fail={"anna@example.ru": ("retry", "421 busy", False)})
    late = WorkerStats()
    deliver_and_settle(launched, refusing, slow, settings=settings, stats=late)
    assert (refusing.delivered, late.retried, late.withdrawn) == ([], 0, 1)
    anna = messages(launched)[1]
    assert (anna.status, anna.worker, anna.reason) == (MessageStatus.SENDING, "h:2:fresh", None)

    clean = MemoryTransport()
    deliver_and_settle(launched, clean, fresh, settings=settings, stats=WorkerStats())
    assert sorted(e.to for e in clean.delivered) == ["anna@example.ru", "dina@example.ru"]
    assert {messages(launched)[c].status for c in (1, 5)} == {MessageStatus.SENT}


def test_smtp_ends_a_refused_message_before_its_dot_and_sends_the_rest(
    smtp_server: tuple[Inbox, int],
) -> None:
    inbox, port = smtp_server
    envelopes = [
        Envelope(message_id=i, key=f"<m{i}@shop.example.com>", to=f"p{i}@example.ru",
                 sender="news@shop.example.com", subject=f"Hello {i}", text="Hi")
        for i in (1, 2, 3)
    ]  # fmt: skip
    handed: list[int] = []

    def handing_over(group: Sequence[Envelope]) -> set[int]:
        handed.extend(e.message_id for e in group)
        return {2} & {e.message_id for e in group}

    smtp = SmtpTransport(SmtpSettings(host="127.0.0.1", port=port, connections=1, timeout=10))
    try:
        outcomes = smtp.deliver(envelopes, handing_over=handing_over)
    finally:
        smtp.close()
    assert [(o.message_id, o.result) for o in outcomes] == [
        (1, "sent"), (2, "withdrawn"), (3, "sent")
    ]  # fmt: skip
    assert handed == [1, 2, 3]
    # the one session was closed mid-DATA for message 2, and a new one took message 3
    assert [r.recipients for r in inbox.received] == [["p1@example.ru"], ["p3@example.ru"]]


def test_the_sent_mark_takes_effect_only_on_the_messages_still_under_the_claim(
    launched: sessionmaker[Session],
) -> None:
    now = datetime.now(UTC)
    with launched() as session:
        repo = DispatchRepository(session)
        lease = repo.claim(worker="h:1:a", limit=10, now=now, lease=timedelta(seconds=60))
        first, second, third = lease.ids
        # the first was taken over by a later claim, the third already sent by it
        repo.mark([first], worker="h:2:b", lease_until=now + timedelta(seconds=90))
        repo.mark([third], status=MessageStatus.SENT, worker="h:2:b", lease_until=None)
        at = now + timedelta(seconds=1)
        marked = repo.mark_sent({i: f"S{i}" for i in lease.ids}, lease=lease, at=at)
        assert marked == {second}
        rows = {m.id: m for m in repo.messages(lease.ids)}
        assert (rows[first].status, rows[first].subject) == (MessageStatus.SENDING, None)
        assert (rows[second].status, rows[second].subject) == (MessageStatus.SENT, f"S{second}")
        assert (rows[second].sent_at, rows[second].lease_until) == (at, None)
        assert (rows[third].status, rows[third].subject) == (MessageStatus.SENT, None)


class _Paced:
    """Hands the envelopes over one at a time at the given moments, letting a rival
    worker try to claim just before each."""

    def __init__(self, clock: list[datetime], moments: list[datetime], rival: Any) -> None:
        self.clock, self.moments, self.rival = clock, moments, rival
        self.rivals: list[tasks.Claim | None] = []

    def deliver(self, envelopes: Sequence[Envelope], *, handing_over: HandingOver) -> list[Outcome]:
        outcomes = []
        for envelope, moment in zip(envelopes, self.moments, strict=True):
            self.clock[0] = moment
            self.rivals.append(self.rival())
            refused = handing_over([envelope]) or ()
            result = "withdrawn" if envelope.message_id in refused else "sent"
            outcomes.append(Outcome(envelope.message_id, result))  # type: ignore[arg-type]
        return outcomes

    def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("start", "first", "second"),
    [
        # waited 50 s of a 60 s lease for the batch before it: renewed as delivery starts
        (50, 61, 100),
        # a slow provider: renewed at the first handover, with less than half left
        (10, 40, 70),
    ],
)
def test_a_batch_still_being_worked_on_keeps_its_lease(
    launched: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
    start: int, first: int, second: int,
) -> None:  # fmt: skip
    settings = SETTINGS.model_copy(update={"worker_lease_seconds": 60})
    t0 = datetime.now(UTC)
    clock = [t0]
    monkeypatch.setattr(tasks, "utcnow", lambda: clock[0])
    claim = claim_and_render(launched, settings=settings, name="h:1:a", stats=WorkerStats())
    assert claim is not None and len(claim.rendered.envelopes) == 2

    def rival() -> tasks.Claim | None:
        return claim_and_render(launched, settings=settings, name="h:2:b", stats=WorkerStats())

    paced = _Paced(clock, [t0 + timedelta(seconds=s) for s in (first, second)], rival)
    clock[0] = t0 + timedelta(seconds=start)
    stats = WorkerStats()
    deliver_and_settle(launched, paced, claim, settings=settings, stats=stats)
    # past the claim's first 60 s, and the rival still found nothing to take
    assert paced.rivals == [None, None]
    assert (stats.sent, stats.withdrawn) == (2, 0)
    done = messages(launched)
    assert {(done[c].status, done[c].worker) for c in (1, 5)} == {(MessageStatus.SENT, "h:1:a")}


def test_a_long_host_name_still_fits_the_worker_column_and_stays_distinct(
    launched: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = "patron-worker-deployment-7d9f8c6b5d-x2x4k.mail.eu-west-1.compute.internal"
    names = []
    for host in (pod, pod.replace("x2x4k", "q8v1z"), "box"):
        monkeypatch.setattr("socket.gethostname", lambda host=host: host)
        names.append(tasks.worker_name())
    first, second, short = (name.split(":")[0] for name in names)
    assert (first[:22], len(first)) == ("patron-worker-deploym~", 30)
    assert second[:22] == first[:22] and second != first
    assert short == "box"
    # the claim stores it: PostgreSQL enforces the column's 64 characters
    assert max(len(name) for name in names) <= 64
    monkeypatch.setattr("socket.gethostname", lambda: pod)
    stats = run_worker(launched, MemoryTransport(), settings=SETTINGS, until_idle=True)
    assert stats.sent == 2
    assert {m.worker for m in messages(launched).values()} == {tasks.worker_name()}
