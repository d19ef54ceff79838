"""The till's HTTP calls and the operators' ones: roles, Idempotency-Key, clear errors; and
8 concurrent clients on shared accounts through a real HTTP server on PostgreSQL."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from patron.cli import main as cli
from patron.kit.db import make_sessionmaker
from patron.kit.settings import get_settings
from patron.loyalty.schemas import EnrolIn, ProgramRules
from patron.loyalty.service import LoyaltyService
from patron.models import LedgerEntry, LoyaltyOperation, PosTransaction, Role
from tests.campaigns.test_api_cli import run
from tests.fixtures.api import Headers, api_client, auth_headers, new_key
from tests.fixtures.segments import store_base
from tests.loyalty.test_ledger import BASKET, CARD, RULES, lines

__all__ = ["api_client", "auth_headers"]


@pytest.fixture
def enrolled(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with session_factory() as session:
        store_base(session)
        service = LoyaltyService(session)
        service.configure(ProgramRules.model_validate(RULES), actor="admin")
        service.enrol(EnrolIn(customer_id=1, card_number=CARD), actor="admin")
        session.commit()
    return session_factory


def test_the_till_quotes_confirms_and_refunds_over_http(
    enrolled: sessionmaker[Session], api: TestClient, auth: dict[Role, Headers]
) -> None:
    till, analyst, marketer = auth[Role.POS], auth[Role.ANALYST], auth[Role.MARKETER]
    quote = api.post("/loyalty/pos/quote", json={"card": CARD, "lines": BASKET}, headers=till)
    assert quote.status_code == 200, quote.text
    assert (quote.json()["points_to_earn"], quote.json()["max_redeemable"]) == (200, 100)
    body = {"card": CARD, "receipt": "R1", "lines": BASKET, "redeem_points": 100}
    missing = api.post("/loyalty/pos/confirm", json=body, headers=till)
    assert missing.status_code == 400
    assert missing.json() == {"error": "this request needs an Idempotency-Key header"}
    assert api.post("/loyalty/pos/confirm", json=body, headers=analyst).status_code == 403
    keyed = till | {"Idempotency-Key": "till-1-0001"}
    first = api.post("/loyalty/pos/confirm", json=body, headers=keyed)
    assert first.status_code == 200, first.text
    assert (first.json()["points_burned"], first.json()["points_earned"]) == (100, 193)
    again = api.post("/loyalty/pos/confirm", json=body, headers=keyed)
    assert again.json() == first.json()
    twice = api.post("/loyalty/pos/confirm", json=body, headers=till | {"Idempotency-Key": "x"})
    assert twice.status_code == 409
    assert twice.json() == {
        "error": f"receipt 'R1' is confirmed already (transaction {first.json()['transaction_id']})"
    }
    bad = api.post(
        "/loyalty/pos/confirm",
        json=body | {"receipt": "R2", "lines": lines(("B", "books", "0", "10"))},
        headers=till | {"Idempotency-Key": "till-1-0002"},
    )
    assert bad.status_code == 422
    assert bad.json()["fields"][0]["field"] == "body.lines.0.quantity"
    unknown = api.post(
        "/loyalty/pos/quote", json={"card": "42", "lines": BASKET}, headers=till
    )  # fmt: skip
    assert (unknown.status_code, unknown.json()) == (404, {"error": "card '42' is not known"})
    over = api.post(
        "/loyalty/pos/refund", json={"receipt": "R1", "amount": "3000.01"},
        headers=till | {"Idempotency-Key": "till-1-0003"},
    )  # fmt: skip
    assert over.status_code == 422
    assert over.json()["error"].startswith("amount: 3000.01 is more than the 3000.00 left")
    done = api.post(
        "/loyalty/pos/cancel", json={"receipt": "R1"},
        headers=till | {"Idempotency-Key": "till-1-0004"},
    )  # fmt: skip
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["points_returned"]) == ("cancelled", 100)
    assert done.json()["money_back"] == "2900.00"

    no_reason = api.post(
        f"/loyalty/accounts/{CARD}/adjust", json={"points": 10, "reason": ""},
        headers=marketer | {"Idempotency-Key": "op-1"},
    )  # fmt: skip
    assert no_reason.status_code == 422
    assert no_reason.json()["fields"][0]["field"] == "body.reason"
    refused = api.post(
        f"/loyalty/accounts/{CARD}/adjust", json={"points": 10, "reason": "goodwill"},
        headers=till | {"Idempotency-Key": "op-2"},
    )  # fmt: skip
    assert refused.status_code == 403
    adjusted = api.post(
        f"/loyalty/accounts/{CARD}/adjust", json={"points": 10, "reason": "goodwill"},
        headers=marketer | {"Idempotency-Key": "op-3"},
    )  # fmt: skip
    assert adjusted.json()["available_points"] == 110
    ledger = api.get(f"/loyalty/accounts/{CARD}/ledger", headers=analyst).json()
    assert [(e["kind"], e["points"]) for e in ledger][:2] == [("adjust", 10), ("reverse", -193)]
    pool = api.post(
        "/loyalty/coupon-pools",
        json={"name": "spring", "discount_amount": "300", "valid_from": "2026-01-01T00:00:00Z"},
        headers=marketer,
    )  # fmt: skip
    assert pool.status_code == 201, pool.text
    codes = api.post(
        f"/loyalty/coupon-pools/{pool.json()['id']}/codes", json={"count": 2, "prefix": "SPR"},
        headers=marketer,
    ).json()  # fmt: skip
    assert len(codes) == 2 and all(c.startswith("SPR-") for c in codes)
    with_code = api.post(
        "/loyalty/pos/quote", json={"card": CARD, "lines": BASKET, "coupon": codes[0]},
        headers=till,
    ).json()  # fmt: skip
    assert (with_code["discount"], with_code["to_pay"]) == ("300.00", "2700.00")
    listed = api.get("/loyalty/coupon-pools", headers=analyst).json()
    assert [(p["pool"]["name"], p["codes"], p["redeemed"]) for p in listed] == [("spring", 2, 0)]
    liability = api.get("/loyalty/liability", headers=analyst).json()
    assert (liability["outstanding_points"], liability["liability"]) == (110, "110.00")
    assert api.get("/loyalty/verify", headers=analyst).json()["mismatches"] == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def http_server(engine: Engine) -> Iterator[str]:
    """The app behind a real uvicorn server with two worker processes, as tills meet it:
    the server's work runs beside the clients', not under their interpreter lock."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the concurrency test runs on PostgreSQL, where tills really overlap")
    port = _free_port()
    env = {**os.environ, "PATRON_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "patron.api.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
         "--log-level", "warning", "--no-access-log"],
        env=env, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/openapi.json", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the uvicorn server did not start") from None
                time.sleep(0.2)
        yield f"{base}/api/v1"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


OPERATIONS = 10_000
CLIENTS = 8


def test_concurrent_tills_never_double_spend_or_double_apply(
    engine: Engine, http_server: str
) -> None:
    """8 clients, 10,000 mixed calls on 4 shared accounts: purchases with and without
    points, refunds and cancellations, and a retry of every fifth call with its key."""
    factory = make_sessionmaker(engine)
    cards = [f"90000000{n}" for n in range(4)]
    with factory() as session:
        store_base(session)
        service = LoyaltyService(session)
        rules = {**RULES, "pending_days": 0}
        service.configure(ProgramRules.model_validate(rules), actor="admin")
        for customer, card in zip((1, 2, 3, 5), cards, strict=True):
            service.enrol(EnrolIn(customer_id=customer, card_number=card), actor="admin")
        session.commit()
    key = {"X-API-Key": new_key(engine, Role.POS)}
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def client(number: int) -> None:
        rng = random.Random(number)
        receipts: list[str] = []
        with httpx.Client(base_url=http_server, headers=key, timeout=60) as web:
            for step in range(OPERATIONS // CLIENTS):
                call = _call(rng, number, step, cards, receipts)
                answer = _send(web, call)
                if call["path"].endswith("confirm") and answer.status_code == 200:
                    receipts.append(call["body"]["receipt"])
                if step % 5 == 0:  # the till did not hear back: it retries with the same key
                    retried = _send(web, call)
                    assert retried.status_code == answer.status_code, (call, retried.text)
                    if answer.status_code == 200:
                        assert retried.json() == answer.json()
                with lock:
                    outcomes[str(answer.status_code)] = outcomes.get(str(answer.status_code), 0) + 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(outcomes.values()) == OPERATIONS
    # refusals are expected (points no longer there, a receipt refunded by then), errors not
    assert set(outcomes) <= {"200", "409", "422"}, outcomes
    assert outcomes["200"] > OPERATIONS // 2
    with factory() as session:
        verdict = LoyaltyService(session).verify()
        assert (verdict.accounts, verdict.mismatches, verdict.negative) == (4, [], [])
        # each key took effect once: one operation row per key, one burn/earn per key
        keys = session.scalar(select(func.count()).select_from(LoyaltyOperation))
        distinct = session.scalar(select(func.count(func.distinct(LoyaltyOperation.key))))
        assert keys == distinct
        per_key = select(LedgerEntry.idempotency_key).group_by(LedgerEntry.idempotency_key)
        assert (
            session.scalar(
                select(func.count()).select_from(per_key.having(func.count() > 1).subquery())
            )
            == 0
        )
        confirmed = session.scalar(select(func.count()).select_from(PosTransaction))
        assert confirmed == outcomes_of(session)


def outcomes_of(session: Session) -> int:
    """Confirm operations that succeeded: each made exactly one transaction."""
    return int(
        session.scalar(
            select(func.count()).where(LoyaltyOperation.kind == "confirm")
        ) or 0
    )  # fmt: skip


def _call(
    rng: random.Random, client: int, step: int, cards: list[str], receipts: list[str]
) -> dict[str, Any]:
    key = f"c{client}-{step}"
    roll = rng.random()
    if receipts and roll < 0.15:
        return {
            "path": "/loyalty/pos/refund",
            "key": key,
            "body": {"receipt": rng.choice(receipts), "amount": str(rng.choice((10, 50)))},
        }
    if receipts and roll < 0.2:
        return {"path": "/loyalty/pos/cancel", "key": key,
                "body": {"receipt": receipts.pop(rng.randrange(len(receipts)))}}  # fmt: skip
    receipt = f"r-{client}-{step}"
    price = Decimal(rng.choice((100, 250, 400)))
    return {"path": "/loyalty/pos/confirm", "key": key, "body": {
        "card": rng.choice(cards), "receipt": receipt,
        "lines": [{"sku": "S", "category": "books", "quantity": "1", "unit_price": str(price)}],
        "redeem_points": rng.choice((0, 0, 10, 40)),
        "at": datetime.now(UTC).isoformat(),
    }}  # fmt: skip


def _send(web: httpx.Client, call: dict[str, Any]) -> httpx.Response:
    return web.post(call["path"], json=call["body"], headers={"Idempotency-Key": call["key"]})


def test_cli_loyalty_commands(
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATRON_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    monkeypatch.setattr(cli.console, "size", (200, 50))
    with make_sessionmaker(engine)() as session:
        store_base(session)
        session.commit()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULES), encoding="utf-8")
    assert run(capsys, "loyalty", "rules", "set", str(rules))[1].strip() == (
        "loyalty rules version 1 in force"
    )
    code, out, _ = run(capsys, "loyalty", "enrol", "1", "--card", CARD)
    assert (code, out.strip()) == (0, f"customer 1 enrolled with card {CARD}")
    code, out, _ = run(capsys, "loyalty", "adjust", CARD, "--points", "25", "--reason", "goodwill")
    assert (code, out.strip()) == (0, f"card {CARD}: 125 points available")
    code, _, err = run(capsys, "loyalty", "adjust", CARD, "--points", "-500", "--reason", "oops")
    assert code == 2 and "cannot take 500 points, card 1234567890 has 125" in err
    code, out, _ = run(capsys, "loyalty", "account", CARD)
    assert code == 0 and "tier Basic, 125 points available, 0 pending" in out
    assert "goodwill" in out and "welcome bonus" in out
    assert run(capsys, "loyalty", "verify")[1].strip() == (
        "1 accounts: every balance equals its ledger"
    )
    code, out, _ = run(capsys, "loyalty", "liability")
    assert code == 0 and "1 accounts: 125 points available and 0 pending" in out
    assert "liability 125.00 RUB" in out
    code, _, err = run(capsys, "loyalty", "adjust", CARD, "--pionts", "5")
    assert code == 2 and "No such option: --pionts" in err
    rules.write_text("tiers: []\n", encoding="utf-8")
    code, _, err = run(capsys, "loyalty", "rules", "set", str(rules))
    # the error console wraps long lines; the message is one line
    assert code == 2 and f"{rules}.tiers: List should have at least 1 item" in err.replace("\n", "")
    get_settings.cache_clear()
