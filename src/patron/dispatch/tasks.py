"""The worker: claim due messages, render, deliver, record; the boundary that commits.

Each step commits on its own, so that a crash at any point leaves the outbox in a state
the next worker can carry on from: a claim holds a lease that runs out; messages become
"sent" in the transaction the transport's ``handing_over`` runs, before they are
released; outcomes and housekeeping commit after. ``patron worker`` runs this loop, and
``patron serve`` runs it in a thread beside the API.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from patron.channels.base import Envelope, Transport
from patron.channels.email import SmtpSettings, SmtpTransport
from patron.dispatch.service import DispatchService
from patron.kit.clock import utcnow
from patron.kit.db import unit_of_work
from patron.kit.settings import Settings, get_settings


@dataclass
class WorkerStats:
    """What a worker did, for its log line and for tests."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    completed: list[int] = field(default_factory=list)


def smtp_transport(settings: Settings) -> SmtpTransport:
    """The email transport the settings describe."""
    return SmtpTransport(
        SmtpSettings(
            host=settings.smtp_host,
            port=settings.smtp_port,
            connections=settings.smtp_connections,
            timeout=settings.smtp_timeout_seconds,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password,
        )
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def run_once(
    factory: sessionmaker[Session],
    transport: Transport,
    *,
    settings: Settings | None = None,
    name: str | None = None,
    stats: WorkerStats | None = None,
) -> int:
    """Claim one batch and see it through; returns how many messages were claimed."""
    settings = settings or get_settings()
    stats = stats if stats is not None else WorkerStats()
    who = name or worker_name()
    now = utcnow()
    with unit_of_work(factory) as session:
        service = DispatchService(session, settings=settings)
        ids = service.repo.claim(
            worker=who,
            limit=settings.worker_batch,
            now=now,
            lease=timedelta(seconds=settings.worker_lease_seconds),
        )
    if not ids:
        with unit_of_work(factory) as session:
            stats.completed += DispatchService(session, settings=settings).housekeeping(now=now)
        return 0
    stats.claimed += len(ids)
    with unit_of_work(factory) as session:
        service = DispatchService(session, settings=settings)
        rendered = service.render(service.repo.messages(ids), now=now)
        # skipped rows are final at once: a bad address must not wait for the batch
        service.settle([], rendered.skipped, now=now)
    stats.skipped += len(rendered.skipped)

    def handing_over(envelopes: Sequence[Envelope]) -> None:
        with unit_of_work(factory) as session:
            DispatchService(session, settings=settings).handed_over(envelopes, now=utcnow())

    outcomes = transport.deliver(rendered.envelopes, handing_over=handing_over)
    with unit_of_work(factory) as session:
        tally = DispatchService(session, settings=settings).settle(outcomes, {}, now=utcnow())
    stats.sent += tally["sent"]
    stats.retried += tally["retry"]
    stats.failed += tally["failed"]
    return len(ids)


def run_worker(
    factory: sessionmaker[Session],
    transport: Transport,
    *,
    settings: Settings | None = None,
    until_idle: bool = False,
    poll_seconds: float = 1.0,
    stop: threading.Event | None = None,
    report: Callable[[WorkerStats], None] | None = None,
) -> WorkerStats:
    """Work until stopped, or with ``until_idle`` until nothing is queued or in flight
    (messages waiting for a retry or a lease count as in flight)."""
    settings = settings or get_settings()
    stats = WorkerStats()
    name = worker_name()
    halt = stop or threading.Event()
    try:
        while not halt.is_set():
            claimed = run_once(factory, transport, settings=settings, name=name, stats=stats)
            if report is not None and claimed:
                report(stats)
            if claimed:
                continue
            if until_idle:
                with unit_of_work(factory) as session:
                    if (
                        DispatchService(session, settings=settings).repo.due_count(now=utcnow())
                        == 0
                    ):
                        break
            halt.wait(poll_seconds)
    finally:
        transport.close()
    return stats
