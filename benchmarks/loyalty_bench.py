"""Confirmed purchases per second through the HTTP API, with p50 and p99 latency.

A fresh store gets ``--accounts`` enrolled members. ``uvicorn`` serves the app with
``--workers`` processes, and ``--clients`` client processes, each keeping one connection,
send purchases as a till would: ``POST /api/v1/loyalty/pos/confirm`` with a new receipt
and ``Idempotency-Key``, a two-line basket, points redeemed on every fourth. Each call
burns and earns under the account's lock, writes the ledger, the lot uses, the
transaction, the operation record, the points event and a tier check.

**Baseline**, in the same run and through the same server: ``POST /api/v1/orders`` with
the same basket, i.e. recording the sale in the customer hub without the loyalty program.
The ratio says what the loyalty accounting costs on top of a plain write.

Usage: ``python benchmarks/loyalty_bench.py [--postgres URL] [--workers 4] [--clients 16]
[--purchases 20000] [--accounts 2000]``. Without ``--postgres`` the store is SQLite (one
writer at a time, so the figure there is for a single till server).
"""

from __future__ import annotations

import argparse
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

import httpx

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


def serve(url: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "PATRON_DATABASE_URL": url}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "patron.api.app:create_app", "--factory",
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


def client(args: tuple[str, str, str, int, int, int, int]) -> tuple[float, float, list[float]]:
    """One till: ``count`` calls; returns when it began and ended (wall clock, so that the
    pool's start-up is not timed) and each call's latency in ms."""
    base, key, route, number, count, accounts, clients = args
    latencies: list[float] = []
    at = datetime.now(UTC).isoformat()
    with httpx.Client(base_url=f"{base}/api/v1", headers={"X-API-Key": key}, timeout=60) as web:
        began = time.time()
        for step in range(count):
            n = step * clients + number
            card = f"{700000000 + n % accounts}"
            if route == "loyalty":
                body: dict[str, Any] = {
                    "card": card, "receipt": f"r{n}", "lines": _basket(n),
                    "redeem_points": 50 if step % 4 == 3 else 0, "at": at,
                }  # fmt: skip
                path = "/loyalty/pos/confirm"
            else:
                body = {
                    "source": "till", "external_id": f"o{n}", "placed_at": at,
                    "currency": "RUB", "lines": _basket(n),
                }  # fmt: skip
                path = "/orders"
            started = time.perf_counter()
            answer = web.post(path, json=body, headers={"Idempotency-Key": f"{route}-{n}"})
            latencies.append((time.perf_counter() - started) * 1000)
            # points may run short for a redemption; anything else is a failure
            if answer.status_code not in (200, 201) and not (
                answer.status_code == 422 and "redeem_points" in answer.text
            ):
                raise SystemExit(f"{path}: {answer.status_code} {answer.text[:300]}")
    return began, time.time(), latencies


def run(
    base: str, key: str, route: str, *, total: int, accounts: int, clients: int
) -> dict[str, float]:
    per = total // clients
    jobs = [(base, key, route, c, per, accounts, clients) for c in range(clients)]
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        results = pool.map(client, jobs)
    seconds = max(end for _, end, _ in results) - min(began for began, _, _ in results)
    latencies = sorted(x for _, _, r in results for x in r)
    return {
        "calls": len(latencies),
        "seconds": seconds,
        "rate": len(latencies) / seconds,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="PostgreSQL server URL (default: SQLite)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=16)
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
            )
            f = figures[route]
            print(f"{route:8s} {f['calls']:,} calls in {f['seconds']:.1f} s: {f['rate']:,.0f}/s, "
                  f"p50 {f['p50']:.1f} ms, p99 {f['p99']:.1f} ms; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    ratio = figures["loyalty"]["rate"] / figures["orders"]["rate"]
    print(f"loyalty confirm {figures['loyalty']['rate']:,.0f}/s against plain order post "
          f"{figures['orders']['rate']:,.0f}/s: {ratio:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
