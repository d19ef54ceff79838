"""The worker: claim due messages, render, deliver, record; the boundary that commits.

Each step commits on its own, so that a crash at any point leaves the outbox in a state
the next worker can carry on from: a claim holds a lease that runs out; messages become
"sent" in the transaction the transport's ``handing_over`` runs, before they are
released; outcomes and housekeeping commit after. Every write between the claim and the
handover is a compare-and-set on the claim's lease, which the worker renews as the batch
goes: a worker that hung until its lease ran out and another claim took its messages over
marks none of them sent, and its transport lets none of them go.
``patron worker`` runs this loop, and ``patron serve`` runs it in a thread beside the API.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from patron.channels.base import Delivery, Envelope
from patron.channels.calls import CallList
from patron.channels.config import load_channels
from patron.channels.email import SmtpSettings, SmtpTransport
from patron.channels.router import Router
from patron.dispatch.schemas import Lease
from patron.dispatch.service import DispatchService, Rendered
from patron.kit.clock import utcnow
from patron.kit.db import unit_of_work
from patron.kit.settings import Settings, get_settings
from patron.models.consent import Channel


@dataclass
class WorkerStats:
    """What a worker did, for its log line and for tests."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    withdrawn: int = 0
    """Claimed, then taken over by a later claim before they were handed over: not sent."""
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


def transports(settings: Settings) -> Router:
    """Email through SMTP, calls to the operators' list, and every channel the channels
    file configures."""
    config = load_channels(settings.channels_file)
    return Router(
        {
            Channel.EMAIL: smtp_transport(settings),
            Channel.PHONE: CallList(region=settings.default_region),
            **config.transports(region=settings.default_region),
        }
    )


def worker_name() -> str:
    """``host:pid:thread``, which names a claim's worker in its 64-character column."""
    host = socket.gethostname()
    if len(host) > 30:
        # a long host name (a cluster's pod or an FQDN) keeps its start and a digest of
        # the whole, so that two such hosts still differ; pid and thread take at most 29
        host = host[:21] + "~" + hashlib.blake2b(host.encode(), digest_size=4).hexdigest()
    return f"{host}:{os.getpid()}:{threading.get_ident()}"


@dataclass(frozen=True)
class Claim:
    """A claimed batch, rendered: what goes to the transport."""

    claimed: int
    rendered: Rendered
    lease: Lease


def claim_and_render(
    factory: sessionmaker[Session], *, settings: Settings, name: str, stats: WorkerStats
) -> Claim | None:
    """Claim one batch and render it; skipped rows are settled at once. ``None`` when
    nothing is due."""
    now = utcnow()
    with unit_of_work(factory) as session:
        service = DispatchService(session, settings=settings)
        lease = service.repo.claim(
            worker=name,
            limit=settings.worker_batch,
            now=now,
            lease=timedelta(seconds=settings.worker_lease_seconds),
        )
    if not lease.ids:
        return None
    with unit_of_work(factory) as session:
        service = DispatchService(session, settings=settings)
        messages = service.repo.messages(lease.ids, lease=lease)
        rendered = service.render(messages, now=now, lease=lease)
    if rendered.skipped:
        # skipped rows are final at once: a bad address must not wait for the batch
        with unit_of_work(factory) as session:
            service = DispatchService(session, settings=settings)
            tally = service.settle([], rendered.skipped, lease=lease, now=now)
        stats.skipped += tally["skipped"]
    stats.claimed += len(lease.ids)
    return Claim(claimed=len(lease.ids), rendered=rendered, lease=lease)


def deliver_and_settle(
    factory: sessionmaker[Session],
    transport: Delivery,
    claim: Claim,
    *,
    settings: Settings,
    stats: WorkerStats,
) -> None:
    """Hand a rendered batch to the transport, committing each group's sent state in
    ``handing_over``, then record the outcomes."""

    handed: set[int] = set()
    period = timedelta(seconds=settings.worker_lease_seconds)
    # the claim's lease, renewed as the batch goes: a batch that waited for the one
    # before it, or that a slow provider (a low rate limit) keeps longer than the lease,
    # must not be taken over while it is still being worked on
    current = [claim.lease]

    def renewed(service: DispatchService) -> None:
        now = utcnow()
        if current[0].until - now < period / 2:
            current[0] = service.repo.renew(current[0], until=now + period)

    with unit_of_work(factory) as session:
        renewed(DispatchService(session, settings=settings))

    def handing_over(envelopes: Sequence[Envelope]) -> set[int]:
        with unit_of_work(factory) as session:
            service = DispatchService(session, settings=settings)
            refused = service.handed_over(envelopes, lease=current[0], now=utcnow())
            renewed(service)
        handed.update(e.message_id for e in envelopes if e.message_id not in refused)
        return refused

    outcomes = transport.deliver(claim.rendered.envelopes, handing_over=handing_over)
    with unit_of_work(factory) as session:
        service = DispatchService(session, settings=settings)
        tally = service.settle(outcomes, {}, lease=current[0], handed=handed, now=utcnow())
    stats.sent += tally["sent"]
    stats.retried += tally["retry"]
    stats.failed += tally["failed"]
    stats.withdrawn += tally["withdrawn"]


def run_once(
    factory: sessionmaker[Session],
    transport: Delivery,
    *,
    settings: Settings | None = None,
    name: str | None = None,
    stats: WorkerStats | None = None,
) -> int:
    """Claim one batch and see it through; returns how many messages were claimed. With
    nothing due, housekeeping runs instead."""
    settings = settings or get_settings()
    stats = stats if stats is not None else WorkerStats()
    claim = claim_and_render(factory, settings=settings, name=name or worker_name(), stats=stats)
    if claim is None:
        with unit_of_work(factory) as session:
            stats.completed += DispatchService(session, settings=settings).housekeeping(
                now=utcnow()
            )
        return 0
    deliver_and_settle(factory, transport, claim, settings=settings, stats=stats)
    return claim.claimed


def run_worker(
    factory: sessionmaker[Session],
    transport: Delivery,
    *,
    settings: Settings | None = None,
    until_idle: bool = False,
    poll_seconds: float = 1.0,
    stop: threading.Event | None = None,
    report: Callable[[WorkerStats], None] | None = None,
) -> WorkerStats:
    """Work until stopped, or with ``until_idle`` until nothing is queued or in flight
    (messages waiting for a retry or a lease count as in flight).

    Two batches are under way at a time: while one is with the transport, in a thread of
    its own, the next is claimed and rendered. Rendering is Python work and delivery
    mostly socket system calls and commits, which release the GIL, so on two cores the
    two overlap instead of taking turns. Every message still follows the handing-over
    protocol of :mod:`patron.channels.base`; the next batch's lease starts at its claim.
    """
    settings = settings or get_settings()
    stats = WorkerStats()
    name = worker_name()
    halt = stop or threading.Event()
    sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patron-deliver")
    in_flight: Future[None] | None = None

    def landed() -> None:
        nonlocal in_flight
        if in_flight is not None:
            done, in_flight = in_flight, None
            done.result()  # a failed delivery stops the worker, as it would unpipelined
            if report is not None:
                report(stats)

    try:
        while not halt.is_set():
            claim = claim_and_render(factory, settings=settings, name=name, stats=stats)
            landed()
            if claim is not None:
                in_flight = sender.submit(
                    deliver_and_settle, factory, transport, claim, settings=settings,
                    stats=stats,
                )  # fmt: skip
                continue
            with unit_of_work(factory) as session:
                service = DispatchService(session, settings=settings)
                stats.completed += service.housekeeping(now=utcnow())
            if until_idle:
                with unit_of_work(factory) as session:
                    repo = DispatchService(session, settings=settings).repo
                    if repo.due_count(now=utcnow()) == 0:
                        break
            halt.wait(poll_seconds)
    finally:
        try:
            landed()
        finally:
            sender.shutdown(wait=True)
            transport.close()
    return stats
