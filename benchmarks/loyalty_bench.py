"""Confirmed purchases per second through the HTTP API, with p50 and p99 latency.

A fresh store gets ``--accounts`` enrolled members. ``uvicorn`` serves the app with
``--workers`` processes, and ``--clients`` tills, each keeping one connection and waiting
for each answer before the next call, send purchases as a till would:
``POST /api/v1/loyalty/pos/confirm`` with a new receipt and ``Idempotency-Key``, a
two-line basket, points redeemed on every fourth. Each call burns and earns under the
account's lock, writes the ledger, the lot uses, the transaction, the operation record,
the points event and a tier check. The tills run in ``--client-processes`` processes and
speak HTTP/1.1 on the bare socket, so that they take little CPU from the server.

Besides calls per second and latency, the script reads the CPU time the server's
processes, PostgreSQL's and the clients' used during each run (from ``/proc``) and prints
it per call: on a machine with few cores, the server's and database's CPU per call bound
the throughput the machine can reach at all.

**Baseline**, in the same run and through the same server: ``POST /api/v1/orders`` with
the same basket, i.e. recording the sale in the customer hub without the loyalty program.
The ratio says what the loyalty accounting costs on top of a plain write.

**Floor**, last: the same confirm calls to the same app served the same way, but with the
service's ``confirm`` stubbed to a fixed answer (``_till_floor.py``, no table touched). Its
server CPU per call is what the web stack alone costs (parsing, key check, session,
validation, thread-pool trip, answer), and its rate bounds what the machine could reach
if the loyalty work were free.

Usage: ``python benchmarks/loyalty_bench.py [--postgres URL] [--workers 4] [--clients 8]
[--client-processes 2] [--purchases 20000] [--accounts 2000]``. Without ``--postgres``
the store is SQLite (one writer at a time, so the figure there is for a single till
server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from _wire import cpu_of, read_answer
from patron.api.keys import create_api_key
from patron.kit.db import (
    bulk_insert_columns,
    make_engine,
    make_sessionmaker,
    migrate,
    recreate_postgres_database,
    table_of,
    unit_of_work,
)
from patron.loyalty.schemas import EnrolIn, ProgramRules
from patron.loyalty.service import LoyaltyService
from patron.models import Customer, Role

RULES: dict[str, Any] = {
    "pending_days": 0,
    "earning": {"base_rate": "0.05", "categories": {"electronics": "0.5"}},
    "tiers": [
        {"name": "Basic", "threshold": "0"},
        {"name": "Silver", "threshold": "20000", "earn_multiplier": "1.5",
         "discount_percent": "3"},
    ],
}  # fmt: skip


def prepare(url: str, accounts: int) -> str:
    """Migrate, add the members, and return a till's API key."""
    engine = make_engine(url)
    migrate(engine)
    factory = make_sessionmaker(engine)
    now = datetime.now(UTC)
    with unit_of_work(factory) as session:
        bulk_insert_columns(
            session,
            table_of(Customer),
            {
                "first_name": [f"member {n}" for n in range(accounts)],
                "attributes": [{} for _ in range(accounts)],
                "created_at": [now] * accounts,
                "updated_at": [now] * accounts,
            },
        )
    with unit_of_work(factory) as session:
        service = LoyaltyService(session)
        service.configure(ProgramRules.model_validate(RULES), actor="bench")
        for number in range(accounts):
            service.enrol(
                EnrolIn(customer_id=number + 1, card_number=f"{700000000 + number}"),
                actor="bench",
            )
        _, key = create_api_key(session, name="till", role=Role.POS)
    engine.dispose()
    return key


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(
    url: str, workers: int, app: str = "patron.api.app:create_app"
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    here = str(Path(__file__).resolve().parent)  # for the floor's app, _till_floor
    path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PATRON_DATABASE_URL": url, "PYTHONPATH": path}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning", "--no-access-log"],
        env=env, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/openapi.json", timeout=2)
            return server, base
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def _basket(n: int) -> list[dict[str, str]]:
    return [
        {"sku": f"B{n % 50}", "category": "books", "quantity": "2", "unit_price": "450.00"},
        {"sku": f"E{n % 20}", "category": "electronics", "quantity": "1", "unit_price": "2990.00"},
    ]


def _body(route: str, n: int, step: int, accounts: int, at: str) -> tuple[str, bytes]:
    if route == "loyalty":
        body: dict[str, Any] = {
            "card": f"{700000000 + n % accounts}", "receipt": f"r{n}", "lines": _basket(n),
            "redeem_points": 50 if step % 4 == 3 else 0, "at": at,
        }  # fmt: skip
        return "/api/v1/loyalty/pos/confirm", json.dumps(body).encode()
    body = {
        "source": "till", "external_id": f"o{n}", "placed_at": at,
        "currency": "RUB", "lines": _basket(n),
    }  # fmt: skip
    return "/api/v1/orders", json.dumps(body).encode()


async def _till(
    base: str, key: str, route: str, number: int, *, count: int, accounts: int, clients: int
) -> list[float]:
    """One till on one kept-alive connection: ``count`` calls, one after the other."""
    address = urlsplit(base)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    at = datetime.now(UTC).isoformat()
    latencies: list[float] = []
    try:
        for step in range(count):
            n = step * clients + number
            path, body = _body(route, n, step, accounts, at)
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {key}\r\n"
                f"Idempotency-Key: {route}-{n}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            started = time.perf_counter()
            writer.write(head.encode() + body)
            status, answer = await read_answer(reader)
            latencies.append((time.perf_counter() - started) * 1000)
            # points may run short for a redemption; anything else is a failure
            if status not in (200, 201) and not (status == 422 and b"redeem_points" in answer):
                raise SystemExit(f"{path}: {status} {answer[:300]!r}")
    finally:
        writer.close()
    return latencies


def client(
    args: tuple[str, str, str, list[int], int, int, int],
) -> tuple[float, float, float, list[float]]:
    """Some tills, each on its own connection, in one process's event loop.

    Returns when they began and ended (wall clock, so that the pool's start-up is not
    timed), the CPU this process used meanwhile, and each call's latency in ms. The
    client speaks HTTP/1.1 on the bare socket: on a shared 2-core machine a heavier
    client library would take CPU from the server it measures."""
    base, key, route, numbers, count, accounts, clients = args

    async def tills() -> list[list[float]]:
        jobs = [
            _till(base, key, route, n, count=count, accounts=accounts, clients=clients)
            for n in numbers
        ]
        return await asyncio.gather(*jobs)

    began, cpu = time.time(), time.process_time()
    latencies = [x for till in asyncio.run(tills()) for x in till]
    return began, time.time(), time.process_time() - cpu, latencies


def run(
    base: str, key: str, route: str, *, total: int, accounts: int, clients: int,
    processes: int, server: int,
) -> dict[str, float]:  # fmt: skip
    per = total // clients
    jobs = [
        (base, key, route, list(range(p, clients, processes)), per, accounts, clients)
        for p in range(processes)
    ]

    def in_server(pid: int, _command: str) -> bool:
        try:
            return os.getpgid(pid) == server
        except OSError:
            return False

    def in_database(_pid: int, command: str) -> bool:
        return command.startswith("postgres: ")

    before = cpu_of(in_server), cpu_of(in_database)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(client, jobs)
    after = cpu_of(in_server), cpu_of(in_database)
    seconds = max(end for _, end, _, _ in results) - min(began for began, _, _, _ in results)
    latencies = sorted(x for _, _, _, r in results for x in r)
    calls = len(latencies)
    return {
        "calls": calls,
        "seconds": seconds,
        "rate": calls / seconds,
        "p50": statistics.median(latencies),
        "p99": latencies[int(calls * 0.99) - 1],
        "server_ms": (after[0] - before[0]) / calls * 1000,
        "database_ms": (after[1] - before[1]) / calls * 1000,
        "client_ms": sum(cpu for _, _, cpu, _ in results) / calls * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="PostgreSQL server URL (default: SQLite)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--purchases", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=2_000)
    args = parser.parse_args()
    if args.postgres:
        url = recreate_postgres_database(args.postgres, "patron_loyalty_bench")
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'loyalty.db'}"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"store: {url.split('@')[-1]}; {args.workers} server workers, {args.clients} tills, "
          f"{args.accounts:,} members")  # fmt: skip
    key = prepare(url, args.accounts)
    server, base = serve(url, args.workers)
    try:
        figures = {}
        for route in ("loyalty", "orders"):
            figures[route] = run(
                base,
                key,
                route,
                total=args.purchases,
                accounts=args.accounts,
                clients=args.clients,
                processes=args.client_processes,
                server=server.pid,
            )
            f = figures[route]
            print(f"{route:8s} {f['calls']:,} calls in {f['seconds']:.1f} s: {f['rate']:,.0f}/s, "
                  f"p50 {f['p50']:.1f} ms, p99 {f['p99']:.1f} ms; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
            store = f["server_ms"] + f["database_ms"]
            print(f"         CPU per call: server {f['server_ms']:.2f} ms, database "
                  f"{f['database_ms']:.2f} ms, clients {f['client_ms']:.2f} ms; "
                  f"server and database together: {1000 / store:,.0f} calls/s per core",
                  flush=True)  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    ratio = figures["loyalty"]["rate"] / figures["orders"]["rate"]
    print(f"loyalty confirm {figures['loyalty']['rate']:,.0f}/s against plain order post "
          f"{figures['orders']['rate']:,.0f}/s: {ratio:.2f}x", flush=True)  # fmt: skip
    floor = _floor(url, key, args)
    share = floor["server_ms"] / figures["loyalty"]["server_ms"]
    print(f"floor    {floor['calls']:,} calls in {floor['seconds']:.1f} s: {floor['rate']:,.0f}/s, "
          f"p50 {floor['p50']:.1f} ms, p99 {floor['p99']:.1f} ms; server CPU per call "
          f"{floor['server_ms']:.2f} ms, {share:.0%} of a real confirm's (confirm stubbed: "
          f"the web stack alone)")  # fmt: skip


def _floor(url: str, key: str, args: argparse.Namespace) -> dict[str, float]:
    """The confirm calls against the app with its confirm stubbed (``_till_floor``)."""
    server, base = serve(url, args.workers, app="_till_floor:make")
    try:
        return run(
            base, key, "loyalty", total=args.purchases, accounts=args.accounts,
            clients=args.clients, processes=args.client_processes, server=server.pid,
        )  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
