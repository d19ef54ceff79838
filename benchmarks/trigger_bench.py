"""Event to outbox: how long a triggered message takes to be queued, at 1,000 events a second.

Set-up (not timed): a fresh store with ``--customers`` customers, each with an email address
and a granted consent, ``--history`` older events (so the events table is not empty, as in a
shop that has run for a while) and a running triggered campaign: ``cart_abandoned`` fires a
single email, re-entry every time.

Timed: ``uvicorn`` serves the API with ``--workers`` processes and no background sender;
``--runners`` trigger runners (1) run in processes of their own. An open-loop client makes
events come due at ``--rate`` a second for ``--seconds``, paced to a schedule (a slow answer
does not hold the next event back). Without ``--batch`` each event is a ``POST
/api/v1/events`` over one of ``--connections`` kept-alive connections; with ``--batch N``
the client is a shop's event collector: every ``--flush-ms`` it posts what came due, N
events at most a request, to ``POST /api/v1/events/batch``. Each event carries its number
and its due time in ``properties``; the entry keeps them in ``journey_entries.context``. An
observer in the client process polls the outbox every 10 ms and stamps each message when it
first sees it, i.e. when a sender could claim it. Latency per event = that stamp minus the
due time (the collector's wait included). It is split into the API part (the event's
``created_at`` minus the due time) and the trigger part (the rest). Events without a
message ``--drain`` seconds after the last one count as slower than anything measured.

**Baseline**, in the same run, on a fresh store, with the same events at the same rate: a
full-rescan evaluator, as tools without cursors work. Each poll it reads every event of the
trigger's type since the launch and every entry the campaign has made, and queues a message
(an entry and an outbox row, address and consent checked in bulk) for each event not yet
entered.

Usage: ``python benchmarks/trigger_bench.py [--sqlite] [--postgres URL] [--rate 1000]
[--seconds 6] [--workers 2] [--batch 500 --connections 4] [--runners 1] [--quick]``.
PostgreSQL gets databases of its own, ``patron_bench_trigger``, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from _wire import cpu_seconds, read_answer, tree_cpu
from patron.api.keys import create_api_key
from patron.campaigns.schemas import CampaignIn
from patron.campaigns.service import CampaignService
from patron.dispatch.repository import DispatchRepository
from patron.journeys.tasks import run_journeys, run_pass
from patron.kit.clock import utcnow
from patron.kit.db import (
    bulk_insert_columns,
    drop_postgres_database,
    make_engine,
    make_sessionmaker,
    migrate,
    recreate_postgres_database,
    refresh_statistics,
    table_of,
)
from patron.models import (
    Consent,
    Customer,
    EntryStatus,
    Event,
    Identity,
    JourneyEntry,
    Message,
    MessageStatus,
    Role,
)
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService

TRIGGER = "cart_abandoned"
POSTGRES_DATABASE = "patron_bench_trigger"
PAST = datetime(2026, 1, 1, tzinfo=UTC)


# -- the store --------------------------------------------------------------------------------


def prepare(url: str, *, customers: int, history: int) -> tuple[str, int, datetime]:
    """Migrate and fill the store; returns an API key, the campaign's id and its launch."""
    engine = make_engine(url)
    migrate(engine)
    factory = make_sessionmaker(engine)
    ids = list(range(1, customers + 1))
    n = customers
    with factory() as session:
        bulk_insert_columns(session, table_of(Customer), {
            "id": ids, "first_name": ["Анна"] * n, "attributes": [{}] * n,
            "created_at": [PAST] * n, "updated_at": [PAST] * n,
        })  # fmt: skip
        bulk_insert_columns(session, table_of(Identity), {
            "customer_id": ids, "kind": ["email"] * n, "namespace": [""] * n,
            "value": [f"c{i}@example.com" for i in ids], "raw_value": [""] * n,
            "verified": [False] * n, "source": ["bench"] * n, "created_at": [PAST] * n,
        })  # fmt: skip
        bulk_insert_columns(session, table_of(Consent), {
            "customer_id": ids, "origin_customer_id": ids, "channel": ["email"] * n,
            "purpose": ["marketing"] * n, "status": ["granted"] * n, "source": ["bench"] * n,
            "text_version": [None] * n, "decided_at": [PAST] * n, "recorded_at": [PAST] * n,
        })  # fmt: skip
        kinds = ("page_viewed", "page_viewed", "product_viewed", TRIGGER)
        at = [PAST + timedelta(seconds=30 * i) for i in range(history)]
        bulk_insert_columns(session, table_of(Event), {
            "customer_id": [i % n + 1 for i in range(history)],
            "type": [kinds[i % len(kinds)] for i in range(history)],
            "occurred_at": at, "properties": [{"sku": f"S{i % 500}"} for i in range(history)],
            "source": ["history"] * history, "external_id": [None] * history, "created_at": at,
        })  # fmt: skip
        # as an import does: the planner sees the grown tables at once, not a minute later
        refresh_statistics(session, [table_of(m) for m in (Customer, Identity, Consent, Event)])
        SegmentService(session).create(
            SegmentIn(name="subscribers", rule=parse_rule({"kind": "consent", "channel": "email"})),
            actor="bench",
        )
        _, key = create_api_key(session, name="shop", role=Role.MARKETER)
        service = CampaignService(session)
        campaign = service.create(CampaignIn.model_validate({
            "name": "abandoned cart", "goal": "Bring carts back", "kind": "retention",
            "content_type": "bonus", "segment": "subscribers", "channel": "email",
            "control_share": 0.0, "schedule": {},
            "message": {"subject": "{{ customer.first_name }}, your cart",
                        "html": "<p>{{ trigger.sku }}</p>", "text": "{{ trigger.sku }}"},
            "budget": "1000", "kpi": {"metric": "incremental_revenue", "expected": "1000"},
            "trigger": {"on": {"kind": "event", "event_type": TRIGGER},
                        "reentry": {"mode": "every_time"}},
        }), actor="bench")  # fmt: skip
        launched = utcnow()
        service.launch(campaign.id, actor="bench", at=launched)
        session.commit()
        campaign_id = campaign.id
    engine.dispose()
    return key, campaign_id, launched


# -- the two evaluators, each in a process of its own -----------------------------------------


def patron_runner(url: str, poll: float, stop: Any, ready: Any) -> None:
    """Patron's trigger runner: the loop ``patron serve`` and ``patron worker`` start."""
    factory = make_sessionmaker(make_engine(url))
    run_pass(factory)  # connected and warm, as a server's runner is long before an event
    ready.set()
    run_journeys(factory, stop=stop, poll_seconds=poll)


def rescan_runner(  # noqa: PLR0917 - a process target takes its arguments by position
    url: str, poll: float, stop: Any, ready: Any, campaign_id: int, launched: datetime
) -> None:
    """The baseline: every poll, every trigger event since the launch against every entry."""
    factory = make_sessionmaker(make_engine(url))
    with factory() as session:
        rescan_once(session, campaign_id, launched)
        session.commit()
    ready.set()
    while not stop.is_set():
        with factory() as session:
            rescan_once(session, campaign_id, launched)
            session.commit()
        stop.wait(poll)


def rescan_once(session: Session, campaign_id: int, launched: datetime) -> int:
    """One full re-evaluation; returns the messages it queued."""
    since = (Event.type == TRIGGER, Event.occurred_at >= launched)
    fired = session.execute(select(Event.id, Event.customer_id).where(*since)).all()
    made = set(session.scalars(select(JourneyEntry.source_ref).where(
        JourneyEntry.campaign_id == campaign_id)))  # fmt: skip
    new = [(i, c) for i, c in fired if f"event:{i}" not in made and c is not None]
    if not new:
        return 0
    now = utcnow()
    people = sorted({c for _, c in new})
    outbox = DispatchRepository(session)
    contacts = outbox.contacts(people)
    allowed = outbox.consenting(people, "email", now=now) - outbox.suppressed(people, "email")
    read = select(Event.id, Event.properties).where(Event.id.in_([i for i, _ in new]))
    properties: dict[int, Any] = {int(i): p for i, p in session.execute(read)}
    entered = insert(JourneyEntry).returning(JourneyEntry.id, JourneyEntry.customer_id)
    entries = session.execute(entered, [
        {"campaign_id": campaign_id, "customer_id": c, "source_ref": f"event:{i}", "fired_at": now,
         "entered_at": now, "status": EntryStatus.COMPLETED, "context": properties[i],
         "ended_at": now, "outcome": "journey completed"} for i, c in new
    ]).all()  # fmt: skip
    rows = [
        {"campaign_id": campaign_id, "customer_id": c, "channel": "email", "wave": 1,
         "address": contacts[c]["email"], "status": MessageStatus.QUEUED, "attempts": 0,
         "next_attempt_at": now, "created_at": now, "step_key": f"{e}:send", "entry_id": e}
        for e, c in entries if c in allowed and "email" in contacts.get(c, {})
    ]  # fmt: skip
    if rows:
        session.execute(insert(Message), rows)
    return len(rows)


# -- the server and the open-loop client ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(url: str, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    """The API alone (the app factory starts no sender, scheduler or runner)."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "patron.api.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning", "--no-access-log"],
        env={**os.environ, "PATRON_DATABASE_URL": url}, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                time.sleep(1.0)  # every worker process up, not only the first
                return server, port
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


class Load:
    """What the client sent: per event, its scheduled and actual send time and the answer."""

    def __init__(self, total: int) -> None:
        self.scheduled = [math.nan] * total
        self.sent = [math.nan] * total
        self.answered = [math.nan] * total
        self.failures: list[str] = []


def _event(number: int, scheduled: float, customers: int) -> dict[str, Any]:
    return {
        "customer_id": number * 7919 % customers + 1, "type": TRIGGER,
        "occurred_at": datetime.fromtimestamp(scheduled, UTC).isoformat(),
        "properties": {"n": number, "t": scheduled, "sku": f"S{number % 500}"},
    }  # fmt: skip


Due = list[tuple[int, float]]
"""Events to send in one request: ``(number, scheduled time)`` each."""


async def _connection(port: int, key: str, queue: asyncio.Queue[Due | None], load: Load, *,
                      customers: int, batch: bool) -> None:  # fmt: skip
    """One kept-alive connection: posts each item of ``queue``, one event to ``/events``
    or, with ``batch``, a list to ``/events/batch``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    path = "/api/v1/events/batch" if batch else "/api/v1/events"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
            "Content-Type: application/json\r\n")  # fmt: skip
    while (items := await queue.get()) is not None:
        events = [_event(number, scheduled, customers) for number, scheduled in items]
        body = json.dumps({"events": events} if batch else events[0]).encode()
        now = time.time()
        for number, _ in items:
            load.sent[number] = now
        writer.write(f"{head}Idempotency-Key: ev-{items[0][0]}\r\nContent-Length: {len(body)}"
                     "\r\n\r\n".encode() + body)  # fmt: skip
        status, answer = await read_answer(reader)
        now = time.time()
        ok = status == (200 if batch else 201)
        if ok and batch and json.loads(answer)["created"] != len(items):
            ok = False
        for number, _ in items:
            load.answered[number] = now
            if not ok:
                load.failures.append(f"{status} {answer[:200]!r}")
    writer.close()


async def _collect(events: asyncio.Queue[tuple[int, float] | None],
                   requests: asyncio.Queue[Due | None], *, every: float, most: int,
                   connections: int) -> None:  # fmt: skip
    """A shop's event collector: every ``every`` seconds, what has come due goes out in
    batches of at most ``most``, whether or not the last request was answered."""
    finished = False
    while not finished:
        await asyncio.sleep(every)
        due: Due = []
        while not events.empty():
            item = events.get_nowait()
            if item is None:
                finished = True
                break
            due.append(item)
        for first in range(0, len(due), most):
            requests.put_nowait(due[first : first + most])
    for _ in range(connections):
        requests.put_nowait(None)


async def _drive(port: int, key: str, *, rate: float, total: int, connections: int,
                 customers: int, batch: int, flush: float) -> Load:  # fmt: skip
    load = Load(total)
    events: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    requests: asyncio.Queue[Due | None] = asyncio.Queue()
    tasks = [asyncio.create_task(_connection(port, key, requests, load, customers=customers,
                                             batch=batch > 0))
             for _ in range(connections)]  # fmt: skip
    if batch:
        collector = _collect(events, requests, every=flush, most=batch, connections=connections)
        tasks.append(asyncio.create_task(collector))
    start = time.time() + 0.2
    for number in range(total):
        scheduled = start + number / rate
        ahead = scheduled - time.time()
        if ahead > 0:
            await asyncio.sleep(ahead)
        load.scheduled[number] = scheduled
        if batch:
            events.put_nowait((number, scheduled))
        else:
            requests.put_nowait([(number, scheduled)])
    if batch:
        events.put_nowait(None)
    else:
        for _ in range(connections):
            requests.put_nowait(None)
    await asyncio.gather(*tasks)
    return load


class Observer(threading.Thread):
    """Stamps each outbox row with the time it first became visible."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.factory = make_sessionmaker(make_engine(url))
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        last = 0
        while not self.stop.is_set():
            with self.factory() as session:
                ids = session.scalars(select(Message.id).where(Message.id > last)).all()
            now = time.time()
            for message in ids:
                self.seen[message] = now
            last = max(ids, default=last)
            self.stop.wait(0.01)


# -- one measured route ----------------------------------------------------------------------


def measure(route: str, args: argparse.Namespace, url: str) -> dict[str, Any]:
    """Prepare a fresh store, serve it, run one evaluator, drive the load; the figures."""
    key, campaign_id, launched = prepare(url, customers=args.customers, history=args.history)
    server, port = serve(url, args.workers)
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    target: Callable[..., None] = patron_runner if route == "patron" else rescan_runner
    extra = () if route == "patron" else (campaign_id, launched)
    # the rescan baseline is one process; Patron's runners share the work on PostgreSQL
    count = args.runners if route == "patron" else 1
    runners = []
    for _ in range(count):
        ready = context.Event()
        runner = context.Process(target=target, args=(url, args.poll, stop, ready, *extra),
                                 daemon=True)  # fmt: skip
        runner.start()
        # the load starts once the evaluator runs: its start-up is not a trigger's delay
        if not ready.wait(timeout=120):
            raise RuntimeError(f"the {route} evaluator did not start")
        runners.append(runner)
    observer = Observer(url)
    observer.start()
    total = int(args.rate * args.seconds)
    load_before = os.getloadavg()[0]
    cpu_before = sum(cpu_seconds(r.pid) for r in runners), tree_cpu(server.pid)
    try:
        drive = _drive(port, key, rate=args.rate, total=total, connections=args.connections,
                       customers=args.customers, batch=args.batch,
                       flush=args.flush_ms / 1000)  # fmt: skip
        load = asyncio.run(drive)
        last_answer = max(load.answered)
        accepted = total - len(load.failures)
        deadline = time.time() + args.drain
        while len(observer.seen) < accepted and time.time() < deadline:
            time.sleep(0.05)
        drained = len(observer.seen)
        load_after = os.getloadavg()[0]
        runner_cpu = sum(cpu_seconds(r.pid) for r in runners) - cpu_before[0]
        server_cpu = tree_cpu(server.pid) - cpu_before[1]
    finally:
        stop.set()
        for runner in runners:
            runner.join(timeout=60)
            if runner.is_alive():
                runner.terminate()
        observer.stop.set()
        observer.join(timeout=5)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    factory = observer.factory
    with factory() as session:
        rows = session.execute(
            select(Message.id, Message.created_at, JourneyEntry.context).join(
                JourneyEntry, JourneyEntry.id == Message.entry_id
            )
        ).all()
        numbered = select(Event.properties["n"].as_integer(), Event.created_at)
        stored: dict[int, datetime] = {
            int(n): at for n, at in session.execute(numbered.where(Event.source == "api"))
        }
        by_events = session.scalar(select(func.count()).select_from(Event))
    factory.kw["bind"].dispose()
    total_ms, trigger_ms, created_ms = [math.inf] * total, [], []
    for message, created, context_ in rows:
        number = int(context_["n"])
        seen = observer.seen.get(message)
        if seen is None:
            continue
        total_ms[number] = (seen - load.scheduled[number]) * 1000
        trigger_ms.append((seen - _epoch(stored[number])) * 1000)
        created_ms.append((_epoch(created) - load.scheduled[number]) * 1000)
    api_ms = [(_epoch(at) - load.scheduled[n]) * 1000 for n, at in stored.items()]
    lag_ms = [(s - d) * 1000 for s, d in zip(load.sent, load.scheduled, strict=True)]
    first, last_sent = min(load.sent), max(load.sent)
    return {
        "route": route, "events": total, "accepted": accepted, "failures": load.failures[:3],
        "messages": drained, "rows": by_events,
        "sent_rate": total / (last_sent - first), "answered_rate": accepted / (last_answer - first),
        "total": total_ms, "api": api_ms, "trigger": trigger_ms, "created": created_ms,
        "lag": lag_ms, "load": (load_before, load_after), "runner_cpu": runner_cpu,
        "server_cpu": server_cpu,
        "seconds": last_answer - first,
    }  # fmt: skip


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def _ms(value: float, drain: float) -> str:
    return f"> {drain:.0f} s (fell behind)" if math.isinf(value) else f"{value:,.0f} ms"


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                if line.startswith("model name")), platform.machine())  # fmt: skip
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, load average {load}; Python {platform.python_version()}"


def report(figures: dict[str, Any], drain: float) -> None:
    f = figures
    print(f"  {f['route']}: {f['accepted']:,} of {f['events']:,} events accepted, sent at "
          f"{f['sent_rate']:,.0f}/s, answered at {f['answered_rate']:,.0f}/s; "
          f"{f['messages']:,} messages in the outbox; client lag p99 "
          f"{_pct(f['lag'], 0.99):,.0f} ms; CPU: server {f['server_cpu']:.1f} s, runner "
          f"{f['runner_cpu']:.1f} s; load {f['load'][0]:.1f} -> {f['load'][1]:.1f}")  # fmt: skip
    if f["failures"]:
        print(f"  refused, for example: {f['failures']}")
    print(f"    event -> outbox p50 {_ms(_pct(f['total'], 0.5), drain)}, "
          f"p95 {_ms(_pct(f['total'], 0.95), drain)}, p99 {_ms(_pct(f['total'], 0.99), drain)}; "
          f"API part p95 {_pct(f['api'], 0.95):,.0f} ms, trigger part p50 "
          f"{_pct(f['trigger'], 0.5):,.0f} / p95 {_pct(f['trigger'], 0.95):,.0f} ms; "
          f"by messages.created_at p95 {_pct(f['created'], 0.95):,.0f} ms", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                        help="PostgreSQL server URL, no database (the default store)")  # fmt: skip
    parser.add_argument("--sqlite", action="store_true", help="run on SQLite instead")
    parser.add_argument("--rate", type=float, default=1000.0, help="events offered a second")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long the load lasts")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--connections", type=int, default=64, help="client connections")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--history", type=int, default=200_000, help="older events in store")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between passes")
    parser.add_argument("--drain", type=float, default=20.0,
                        help="seconds to wait for the outbox after the last event")  # fmt: skip
    parser.add_argument("--routes", nargs="+", default=["patron", "rescan"],
                        choices=["patron", "rescan"])  # fmt: skip
    parser.add_argument("--batch", type=int, default=0,
                        help="post up to N due events a request to /events/batch (0: one "
                        "event a POST /events)")  # fmt: skip
    parser.add_argument("--runners", type=int, default=1,
                        help="Patron trigger runners (processes sharing the work)")  # fmt: skip
    parser.add_argument("--flush-ms", type=float, default=100.0,
                        help="with --batch: send what came due this often")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="4 s of load, a smaller store")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.customers, args.history, args.drain = 4.0, 5_000, 50_000, 10.0
    store = "SQLite" if args.sqlite else "PostgreSQL"
    print(f"Trigger benchmark: {args.rate:,.0f} events/s offered for {args.seconds:.0f} s; "
          f"{args.customers:,} customers, {args.history:,} older events; store {store}; "
          f"{args.workers} uvicorn workers, {args.runners} trigger runner(s) "
          f"(poll {args.poll} s), "
          f"{args.connections} client connections, "
          + (f"batches of up to {args.batch} every {args.flush_ms:.0f} ms" if args.batch
             else "one event a POST"))  # fmt: skip
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for route in args.routes:
        with tempfile.TemporaryDirectory() as folder:
            if args.sqlite:
                url = f"sqlite:///{Path(folder) / 'trigger.db'}"
            else:
                url = recreate_postgres_database(args.postgres, POSTGRES_DATABASE)
            try:
                results[route] = measure(route, args, url)
            finally:
                if not args.sqlite:
                    drop_postgres_database(args.postgres, POSTGRES_DATABASE)
        report(results[route], args.drain)
    print()
    print("| route | events | accepted/s | p50 | p95 | p99 | in outbox |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    names = {"patron": "Patron trigger runner", "rescan": "baseline: full rescan each poll"}
    for route, f in results.items():
        print(f"| {names[route]} | {f['events']:,} | {f['answered_rate']:,.0f} | "
              + " | ".join(_ms(_pct(f["total"], q), args.drain) for q in (0.5, 0.95, 0.99))
              + f" | {f['messages']:,} |")  # fmt: skip
    if "patron" in results:
        p95 = _pct(results["patron"]["total"], 0.95)
        if "rescan" in results:
            base = _pct(results["rescan"]["total"], 0.95)
            ratio = "the baseline fell behind" if math.isinf(base) else f"{base / p95:.1f}x lower"
            print(f"\nPatron p95 {_ms(p95, args.drain)} against the full-rescan baseline's "
                  f"{_ms(base, args.drain)}: {ratio}")  # fmt: skip
        print(f"goal p95 <= 1 s at {args.rate:,.0f} events/s: "
              f"{'met' if p95 <= 1000 else 'NOT met'} ({_ms(p95, args.drain)})")  # fmt: skip


if __name__ == "__main__":
    main()
