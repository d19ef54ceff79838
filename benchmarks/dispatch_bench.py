"""Sending a 100,000-recipient email campaign: messages rendered and delivered per second.

Set-up (not timed): a fresh SQLite store with 100,000 customers, each with an email
address, a granted consent and analysis-style fields; a segment of all of them; a
campaign whose HTML template has ten variables and a three-product loop (about 2.5 KB
rendered, like the template of BENCHMARKS.md).

Timed:

* **launch**: ``CampaignService.launch``: the audience frozen (control group 10%) and the
  outbox rows written, in one transaction;
* **render**: ``DispatchService.render`` over every queued message in batches (context
  from the store, sandboxed Jinja2, tracked links) and ``build_mime``;
* **deliver**: ``run_worker`` until the outbox is empty: claim, render, send over N SMTP
  connections with the sent state committed before each final dot, record; for each N
  of ``--connections`` on a fresh launch of the same campaign. With ``--workers W``,
  W worker processes share the outbox, each with N connections (PostgreSQL's claim
  skips rows another worker holds; on SQLite the claim is one statement under the write
  lock). The CPU time the workers used per delivered message is printed beside the rate:
  it says what the rate would be on idle cores when the machine is shared;
* **baseline**: the straightforward way, measured in the same run on ``--baseline``
  messages: for each message, render, build an ``EmailMessage`` (default policy),
  ``smtplib.send_message`` over one connection, then update its row and commit.

The SMTP server is Postfix's ``smtp-sink`` (C) when installed (``apt-get install
postfix``): the aiosmtpd server of the tests accepts only about 500 messages a second on
this machine and would measure itself (BENCHMARKS.md). Without ``smtp-sink`` the bench
falls back to aiosmtpd and says so.

Usage: ``python benchmarks/dispatch_bench.py [--recipients 100000] [--connections 1 4 8]
[--baseline 3000] [--workers 1] [--postgres [URL]]``; PostgreSQL gets a database of its
own, ``patron_bench_dispatch``, dropped at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.schemas import CampaignIn, MessageTemplate
from patron.campaigns.service import CampaignService
from patron.channels.email import SmtpSettings, SmtpTransport, build_mime
from patron.dispatch.service import DispatchService
from patron.dispatch.tasks import run_worker
from patron.kit.db import (
    bulk_insert_columns,
    drop_postgres_database,
    make_engine,
    make_sessionmaker,
    migrate,
    recreate_postgres_database,
    table_of,
)
from patron.kit.settings import Settings
from patron.models import Consent, Customer, Identity, Message, MessageStatus
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService

NOW = datetime(2026, 11, 1, tzinfo=UTC)
HTML = (
    """<html><body><h1>Hello, {{ customer.first_name }} {{ customer.last_name }}!</h1>
<p>As one of our {{ scores.rfm_segment or 'valued' }} customers in {{ customer.city }}, you get
{{ offer.discount_percent }}% off until the end of the month with code {{ coupon }}.</p>
<p>Your lifetime value with us: {{ scores.clv or 0 }}; member since {{ customer.birth_date }}.</p>
<ul>{% for product in offers[:3] %}<li>{{ product.item }} ({{ product.kind }})</li>{% endfor %}
</ul><p>{{ campaign.goal }}</p>
<p><a href="https://shop.example.com/sale?c={{ campaign.id }}">Open the sale</a></p>
<p style="color:#888">{{ customer.email }} &middot; <a href="{{ unsubscribe_url }}">Unsubscribe</a>
</p>"""
    + "<p>"
    + "Our stores are open every day from nine to nine. " * 25
    + "</p></body></html>"
)
TEXT = "Hello {{ customer.first_name }}, {{ offer.discount_percent }}% off: {{ coupon }}."
# a sink that stops answering fails the run quickly instead of retrying for minutes
SETTINGS = Settings(
    worker_batch=1000, public_url="https://crm.example.com", retry_base_seconds=1, max_attempts=2
)


POSTGRES_DATABASE = "patron_bench_dispatch"


def build_store(url: str, recipients: int) -> sessionmaker[Session]:
    engine = make_engine(url)
    migrate(engine)
    factory = make_sessionmaker(engine)
    ids = list(range(1, recipients + 1))
    with factory() as session:
        bulk_insert_columns(session, table_of(Customer), {
            "id": ids, "first_name": ["Анна"] * recipients, "last_name": [f"K{i}" for i in ids],
            "city": ["Москва"] * recipients, "birth_date": [None] * recipients,
            "attributes": [{}] * recipients, "created_at": [NOW] * recipients,
            "updated_at": [NOW] * recipients,
        })  # fmt: skip
        bulk_insert_columns(session, table_of(Identity), {
            "customer_id": ids, "kind": ["email"] * recipients, "namespace": [""] * recipients,
            "value": [f"c{i}@example.com" for i in ids], "raw_value": [""] * recipients,
            "verified": [False] * recipients, "source": ["bench"] * recipients,
            "created_at": [NOW] * recipients,
        })  # fmt: skip
        bulk_insert_columns(session, table_of(Consent), {
            "customer_id": ids, "origin_customer_id": ids, "channel": ["email"] * recipients,
            "purpose": ["marketing"] * recipients, "status": ["granted"] * recipients,
            "source": ["bench"] * recipients, "text_version": [None] * recipients,
            "decided_at": [NOW] * recipients, "recorded_at": [NOW] * recipients,
        })  # fmt: skip
        SegmentService(session).create(
            SegmentIn(name="all", rule=parse_rule({"kind": "consent", "channel": "email"})),
            actor="bench",
        )
        session.commit()
    return factory


def plan(number: int) -> CampaignIn:
    return CampaignIn.model_validate({
        "name": f"bench {number}", "goal": "Sell the autumn collection", "kind": "up_sell",
        "content_type": "bonus", "segment": "all",
        "offer": {"kind": "coupon", "coupon_prefix": "AUT", "discount_percent": "15"},
        "message": {"subject": "{{ customer.first_name }}, {{ offer.discount_percent }}% off",
                    "html": HTML, "text": TEXT},
        "budget": "100000", "kpi": {"metric": "roi", "expected": "2"},
        "control_share": 0.10,
    })  # fmt: skip


def launch(factory: sessionmaker[Session], number: int) -> tuple[int, int, float]:
    """A fresh campaign launched: (campaign id, messages queued, seconds)."""
    with factory() as session:
        # each launch needs the outbox to itself, and no frequency cap from the last one
        session.execute(text("DELETE FROM messages"))
        session.execute(text("DELETE FROM campaign_recipients"))
        session.commit()
        service = CampaignService(session)
        campaign = service.create(plan(number), actor="bench")
        started = time.perf_counter()
        service.launch(campaign.id, actor="bench", at=NOW)
        session.commit()
        return campaign.id, campaign.audience["treatment"], time.perf_counter() - started


def render_rate(factory: sessionmaker[Session]) -> tuple[float, float, int]:
    """Messages rendered per second (context, Jinja2, links) and MIME builds per second."""
    with factory() as session:
        service = DispatchService(session, settings=SETTINGS)
        ids = list(session.scalars(select(Message.id).order_by(Message.id)))
        envelopes = []
        started = time.perf_counter()
        for start in range(0, len(ids), 1000):
            rendered = service.render(service.repo.messages(ids[start : start + 1000]), now=NOW)
            envelopes += rendered.envelopes
        rendering = time.perf_counter() - started
        started = time.perf_counter()
        size = sum(len(build_mime(e)) for e in envelopes)
        building = time.perf_counter() - started
    return len(ids) / rendering, len(envelopes) / building, size // max(1, len(envelopes))


def deliver(url: str, port: int, connections: int, workers: int) -> tuple[int, float, float]:
    """``run_worker`` in ``workers`` processes until the outbox is empty: (messages sent,
    seconds, CPU seconds the workers used)."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    go = context.Event()
    processes = [
        context.Process(
            target=_worker,
            args=(url, port, connections),
            kwargs={"ready": ready, "go": go, "results": results},
        )
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)  # imports and engines are not timed
    started = time.perf_counter()
    go.set()
    outcomes = [results.get() for _ in processes]
    seconds = time.perf_counter() - started
    for process in processes:
        process.join()
    return sum(sent for sent, _ in outcomes), seconds, sum(cpu for _, cpu in outcomes)


def _worker(url: str, port: int, connections: int, *, ready: Any, go: Any, results: Any) -> None:
    factory = make_sessionmaker(make_engine(url))
    transport = SmtpTransport(
        SmtpSettings(host="127.0.0.1", port=port, connections=connections, timeout=60)
    )
    ready.put(True)
    go.wait()
    before = resource.getrusage(resource.RUSAGE_SELF)
    stats = run_worker(factory, transport, settings=SETTINGS, until_idle=True, poll_seconds=0.05)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    results.put((stats.sent, cpu))


def baseline(factory: sessionmaker[Session], port: int, count: int) -> float:
    """The straightforward loop, messages per second."""
    with factory() as session:
        service = DispatchService(session, settings=SETTINGS)
        ids = list(
            session.scalars(
                select(Message.id).where(Message.status == MessageStatus.QUEUED)
                .order_by(Message.id).limit(count)
            )
        )  # fmt: skip
        template = MessageTemplate.model_validate(plan(0).message.model_dump())
        assert template.html
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
        started = time.perf_counter()
        for message_id in ids:
            (rendered,) = service.render(service.repo.messages([message_id]), now=NOW).envelopes
            email = EmailMessage()
            email["From"], email["To"] = rendered.sender, rendered.to
            email["Subject"], email["Message-ID"] = rendered.subject, rendered.key
            email.set_content(rendered.text)
            email.add_alternative(rendered.html or "", subtype="html")
            smtp.send_message(email)
            service.repo.mark([message_id], status=MessageStatus.SENT, sent_at=NOW)
            session.commit()
        seconds = time.perf_counter() - started
        smtp.quit()
    return len(ids) / seconds


def start_sink() -> tuple[Any, int, str]:
    """smtp-sink when installed, else aiosmtpd: (handle, port, name)."""
    port = _free_port()
    binary = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin")
    if binary:
        # smtp-sink refuses to run as root unless told whom to run as
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        process = subprocess.Popen(
            [binary, *user, f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("smtp-sink did not start")
        return process, port, "Postfix smtp-sink"
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller, port, "aiosmtpd (smtp-sink not installed: this measures aiosmtpd)"


def stop_sink(handle: Any) -> None:
    if isinstance(handle, subprocess.Popen):
        handle.terminate()
        handle.wait()
    else:
        handle.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                if line.startswith("model name")), platform.machine())  # fmt: skip
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, load average {load}; Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--baseline", type=int, default=3_000)
    parser.add_argument(
        "--postgres", nargs="?", const="postgresql+psycopg://postgres@127.0.0.1:5432",
        help="run on PostgreSQL (server URL without a database) instead of SQLite",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'dispatch.db'}"
        if args.postgres:
            url = recreate_postgres_database(args.postgres, POSTGRES_DATABASE)
        print(f"building a store of {args.recipients:,} subscribers ...", flush=True)
        factory = build_store(url, args.recipients)
        handle, port, sink = start_sink()
        try:
            number = 1
            _, queued, launch_s = launch(factory, number)
            rendered, built, size = render_rate(factory)
            rates: list[tuple[int, int, float, float, float]] = []
            print(f"launched: {queued:,} queued in {launch_s:.2f} s; rendered {rendered:,.0f}/s",
                  flush=True)  # fmt: skip
            for connections in args.connections:
                expected = queued
                if rates:
                    number += 1
                    _, expected, _ = launch(factory, number)
                load = os.getloadavg()[0]
                sent, seconds, cpu = deliver(url, port, connections, args.workers)
                assert sent == expected, (sent, expected)
                rates.append((connections, sent, seconds, cpu, load))
                print(f"  {connections} connections: {sent / seconds:,.0f}/s "
                      f"(load {load:.1f})", flush=True)  # fmt: skip
            number += 1
            launch(factory, number)
            plain_load = os.getloadavg()[0]
            before = resource.getrusage(resource.RUSAGE_SELF)
            plain = baseline(factory, port, args.baseline)
            after = resource.getrusage(resource.RUSAGE_SELF)
            plain_cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        finally:
            stop_sink(handle)
            factory.kw["bind"].dispose()
            if args.postgres:
                drop_postgres_database(args.postgres, POSTGRES_DATABASE)
    store = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"\nDispatch benchmark: {args.recipients:,} subscribers, {queued:,} messages "
        f"(10% control held out), about {size:,} bytes each; store: {store}; "
        f"SMTP server: {sink}"
    )
    print(f"machine: {machine()}\n")
    print(f"launch (freeze audience + write outbox): {launch_s:.2f} s")
    print(
        f"rendered: {rendered:,.0f} messages/s (context, sandboxed Jinja2, tracked links); "
        f"MIME built: {built:,.0f} messages/s\n"
    )
    print(
        "| route | workers × connections | messages | seconds | delivered/s | CPU µs/message "
        "| load (1 min) | vs baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| baseline: render, EmailMessage, send_message, commit each | 1 × 1 | "
        f"{args.baseline:,} | {args.baseline / plain:.1f} | {plain:,.0f} | "
        f"{plain_cpu / args.baseline * 1e6:,.0f} | {plain_load:.1f} | 1.0x |"
    )
    for connections, sent, seconds, cpu, load in rates:
        rate = sent / seconds
        print(
            f"| Patron worker | {args.workers} × {connections} | {sent:,} | {seconds:.1f} | "
            f"{rate:,.0f} | {cpu / sent * 1e6:,.0f} | {load:.1f} | {rate / plain:.1f}x |"
        )
    best = max(sent / seconds for _, sent, seconds, _, _ in rates)
    print(f"\ngoal >= 2,000 delivered/s: {'met' if best >= 2000 else 'NOT met'} ({best:,.0f}/s)")


if __name__ == "__main__":
    main()
