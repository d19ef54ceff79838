"""API keys and roles: who may call what, and that refused calls leak nothing."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from patron.api.deps import ROLE_PERMISSIONS, Permission
from patron.api.keys import KeyCache, authenticate, create_api_key, revoke_api_key
from patron.kit.errors import Unauthorized
from patron.models import ApiKey, Customer, Order, Role
from tests.fixtures.api import Headers, api_client, auth_headers, count_rows, new_key  # noqa: F401

ORDER: dict[str, Any] = {
    "source": "till",
    "external_id": "r-1",
    "placed_at": "2025-03-01T10:00:00+03:00",
    "currency": "RUB",
    "lines": [{"sku": "A", "quantity": "1", "unit_price": "10.00"}],
}


def test_key_is_shown_once_and_only_its_hash_is_stored(session: Session) -> None:
    key, raw_key = create_api_key(session, name="till 3", role=Role.POS)
    session.commit()

    assert re.fullmatch(r"ptr_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", raw_key)
    assert key.prefix == raw_key[4:12]
    assert key.secret_hash == hashlib.sha256(raw_key.encode()).hexdigest()
    secret = raw_key[13:]
    stored = session.execute(select(ApiKey.name, ApiKey.prefix, ApiKey.secret_hash)).one()
    assert all(secret not in value for value in stored)
    assert authenticate(session, raw_key).id == key.id


def test_wrong_secret_and_revoked_key_are_refused(session: Session) -> None:
    key, raw_key = create_api_key(session, name="old", role=Role.ADMIN)
    with pytest.raises(Unauthorized, match="invalid API key"):
        authenticate(session, raw_key[:-1] + ("A" if raw_key[-1] != "A" else "B"))
    with pytest.raises(Unauthorized, match="invalid API key"):
        authenticate(session, "ptr_short")
    revoke_api_key(session, prefix=key.prefix)
    with pytest.raises(Unauthorized, match="API key revoked"):
        authenticate(session, raw_key)


def test_request_without_a_key_gets_401_and_no_data(api: TestClient) -> None:
    response = api.get("/customers")
    assert response.status_code == 401
    assert response.json() == {"error": "missing API key: send it in the X-API-Key header"}
    assert response.headers["WWW-Authenticate"] == "ApiKey"


def test_key_is_checked_before_the_body_so_a_stranger_learns_nothing(api: TestClient) -> None:
    response = api.post("/orders", json={"lines": "?"})
    assert response.status_code == 401
    assert response.json() == {"error": "missing API key: send it in the X-API-Key header"}


@pytest.mark.parametrize("raw_key", ["nonsense", "ptr_00000000_notarealsecret"])
def test_request_with_a_wrong_key_gets_401(api: TestClient, raw_key: str) -> None:
    response = api.get("/customers/1", headers={"X-API-Key": raw_key})
    assert (response.status_code, response.json()) == (401, {"error": "invalid API key"})


def test_a_server_keeps_a_live_key_for_its_seconds_then_sees_the_revocation(
    session: Session,
) -> None:
    key, raw_key = create_api_key(session, name="till 4", role=Role.POS)
    session.commit()
    now = [100.0]
    keys = KeyCache(seconds=2.0, clock=lambda: now[0])
    assert keys.cached(raw_key) is None
    assert keys.look_up(session, raw_key).id == key.id

    revoke_api_key(session, prefix=key.prefix)
    session.commit()

    now[0] += 1.9
    kept = keys.cached(raw_key)
    assert kept is not None and kept.id == key.id
    now[0] += 0.1
    assert keys.cached(raw_key) is None
    with pytest.raises(Unauthorized, match="API key revoked"):
        keys.look_up(session, raw_key)


def test_revoked_key_gets_401(api: TestClient, engine: Engine) -> None:
    raw_key = new_key(engine, Role.ADMIN)
    with Session(engine) as session:
        revoke_api_key(session, prefix=raw_key[4:12])
        session.commit()
    response = api.get("/customers", headers={"X-API-Key": raw_key})
    assert (response.status_code, response.json()) == (401, {"error": "API key revoked"})


def test_pos_may_not_read_a_profile(api: TestClient, auth: dict[Role, Headers]) -> None:
    created = api.post("/customers", json={"first_name": "Ivan"}, headers=auth[Role.ADMIN])
    assert created.status_code == 201

    response = api.get("/customers/1", headers=auth[Role.POS])
    assert response.status_code == 403
    assert response.json() == {"error": "role pos may not customers:read"}


def test_analyst_may_not_write_and_nothing_is_written(
    api: TestClient, auth: dict[Role, Headers], engine: Engine
) -> None:
    response = api.post("/customers", json={"first_name": "Ivan"}, headers=auth[Role.ANALYST])
    assert (response.status_code, response.json()) == (
        403,
        {"error": "role analyst may not customers:write"},
    )
    assert count_rows(engine, Customer) == 0


def test_pos_may_record_an_order_and_look_up_a_customer(
    api: TestClient, auth: dict[Role, Headers], engine: Engine
) -> None:
    api.post(
        "/customers",
        json={"identities": [{"kind": "card", "value": "7700 1234"}]},
        headers=auth[Role.MARKETER],
    )
    found = api.get("/customers/lookup?kind=card&value=77001234", headers=auth[Role.POS])
    assert (found.status_code, found.json()["id"]) == (200, 1)

    posted = api.post(
        "/orders",
        json={**ORDER, "customer_id": 1},
        headers={**auth[Role.POS], "Idempotency-Key": "k1"},
    )
    assert (posted.status_code, posted.json()["customer_id"]) == (201, 1)
    assert count_rows(engine, Order) == 1


# (method, path, body) of one call per permission, to check the role table end to end
CALLS: dict[Permission, tuple[str, str, dict[str, Any] | None]] = {
    Permission.READ_CUSTOMERS: ("GET", "/customers", None),
    Permission.LOOKUP_CUSTOMERS: ("GET", "/customers/lookup?kind=email&value=n@x.ru", None),
    Permission.WRITE_CUSTOMERS: ("POST", "/customers", {"first_name": "Anna"}),
    Permission.READ_ORDERS: ("GET", "/orders", None),
    Permission.WRITE_ORDERS: ("POST", "/orders", ORDER),
    Permission.READ_EVENTS: ("GET", "/events", None),
    Permission.WRITE_EVENTS: (
        "POST",
        "/events",
        {"type": "visit", "occurred_at": "2025-03-01T10:00:00Z"},
    ),
    Permission.READ_ANALYTICS: ("GET", "/analytics/runs", None),
    # an empty base has nothing to analyse: allowed in, then refused as 422
    Permission.RUN_ANALYTICS: ("POST", "/analytics/runs", None),
    Permission.READ_SEGMENTS: ("GET", "/segments", None),
    Permission.WRITE_SEGMENTS: (
        "POST",
        "/segments",
        {"name": "moscow", "rule": {"kind": "profile", "field": "city", "value": "Moscow"}},
    ),
    Permission.READ_CAMPAIGNS: ("GET", "/campaigns", None),
    # no such campaign or customer: allowed in, then 404
    Permission.WRITE_CAMPAIGNS: ("PATCH", "/campaigns/1", {"goal": "more"}),
    Permission.LAUNCH_CAMPAIGNS: ("POST", "/campaigns/1/launch", None),
    Permission.READ_LOYALTY: ("GET", "/loyalty/liability", None),
    # no such card: allowed in, then 404
    Permission.WRITE_LOYALTY: (
        "POST",
        "/loyalty/accounts/1/adjust",
        {"points": 5, "reason": "why"},
    ),
    Permission.LOYALTY_POS: ("POST", "/loyalty/pos/cancel", {"receipt": "R1"}),
}


def test_role_table_is_what_the_brief_says() -> None:
    reads = {Permission.READ_CUSTOMERS, Permission.LOOKUP_CUSTOMERS}
    reads |= {Permission.READ_ORDERS, Permission.READ_EVENTS, Permission.READ_ANALYTICS}
    reads |= {Permission.READ_SEGMENTS, Permission.READ_CAMPAIGNS, Permission.READ_LOYALTY}
    writes = {Permission.WRITE_CUSTOMERS, Permission.WRITE_ORDERS, Permission.WRITE_EVENTS}
    writes |= {Permission.WRITE_SEGMENTS, Permission.WRITE_CAMPAIGNS, Permission.LAUNCH_CAMPAIGNS}
    # marketers run the program: they may correct points and serve at a till
    writes |= {Permission.WRITE_LOYALTY, Permission.LOYALTY_POS}
    expected = {
        Role.ADMIN: frozenset(Permission),
        Role.MARKETER: reads | writes,
        # analysts build segments from what they find, but change no customer and launch
        # no campaign
        Role.ANALYST: reads | {Permission.RUN_ANALYTICS, Permission.WRITE_SEGMENTS},
        Role.POS: {Permission.WRITE_ORDERS, Permission.LOOKUP_CUSTOMERS, Permission.LOYALTY_POS},
    }
    assert expected == ROLE_PERMISSIONS


@pytest.mark.parametrize("role", list(Role))
def test_every_role_gets_exactly_its_permissions(
    api: TestClient, auth: dict[Role, Headers], role: Role
) -> None:
    for permission, (method, path, body) in CALLS.items():
        headers = {**auth[role], "Idempotency-Key": f"{role.value}-{permission.value}"}
        response = api.request(method, path, json=body, headers=headers)
        allowed = permission in ROLE_PERMISSIONS[role]
        if allowed:
            # the lookup of an unknown email is a 404 (allowed in, nothing found), and an
            # analysis of an empty base a 422
            assert response.status_code in {200, 201, 404, 422}, (permission, response.json())
        else:
            assert response.status_code == 403, (permission, response.json())
            assert response.json() == {"error": f"role {role.value} may not {permission.value}"}


def test_openapi_describes_every_endpoint_behind_the_key_header(api: TestClient) -> None:
    spec = api.get("http://testserver/openapi.json").json()
    operations = {
        f"{method.upper()} {path.removeprefix('/api/v1')}": op
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }
    assert sorted(operations) == [
        "DELETE /segments/{segment_id}",
        "GET /analytics/runs",
        "GET /analytics/runs/latest",
        "GET /analytics/runs/{run_id}",
        "GET /campaigns",
        "GET /campaigns/{campaign_id}",
        "GET /campaigns/{campaign_id}/calls",
        "GET /campaigns/{campaign_id}/entries",
        "GET /campaigns/{campaign_id}/journey",
        "GET /campaigns/{campaign_id}/preview",
        "GET /campaigns/{campaign_id}/recipients",
        "GET /campaigns/{campaign_id}/report",
        "GET /campaigns/{campaign_id}/runs",
        "GET /campaigns/{campaign_id}/trail",
        "GET /customers",
        "GET /customers/lookup",
        "GET /customers/{customer_id}",
        "GET /customers/{customer_id}/consents",
        "GET /customers/{customer_id}/scores",
        "GET /customers/{customer_id}/telegram-link",
        "GET /events",
        "GET /loyalty/accounts/{card}",
        "GET /loyalty/accounts/{card}/ledger",
        "GET /loyalty/accounts/{card}/referrals",
        "GET /loyalty/coupon-pools",
        "GET /loyalty/liability",
        "GET /loyalty/mini-programs",
        "GET /loyalty/rules",
        "GET /loyalty/verify",
        "GET /orders",
        "GET /orders/{order_id}",
        "GET /segments",
        "GET /segments/moves",
        "GET /segments/replica",
        "GET /segments/{segment_id}",
        "GET /segments/{segment_id}/builds",
        "GET /segments/{segment_id}/changes",
        "GET /segments/{segment_id}/count",
        "GET /segments/{segment_id}/export.csv",
        "GET /segments/{segment_id}/members",
        "GET /webhooks/whatsapp",
        "PATCH /campaigns/{campaign_id}",
        "PATCH /customers/{customer_id}",
        "PATCH /segments/{segment_id}",
        "POST /analytics/runs",
        "POST /calls/{message_id}",
        "POST /campaigns",
        "POST /campaigns/{campaign_id}/cancel",
        "POST /campaigns/{campaign_id}/launch",
        "POST /campaigns/{campaign_id}/pause",
        "POST /campaigns/{campaign_id}/resume",
        "POST /campaigns/{campaign_id}/schedule",
        "POST /customers",
        "POST /customers/{customer_id}/consents",
        "POST /customers/{customer_id}/identities",
        "POST /customers/{customer_id}/merge",
        "POST /events",
        "POST /events/batch",
        "POST /loyalty/accounts",
        "POST /loyalty/accounts/{card}/adjust",
        "POST /loyalty/coupon-pools",
        "POST /loyalty/coupon-pools/{pool_id}/codes",
        "POST /loyalty/mini-programs",
        "POST /loyalty/mini-programs/{program_id}/start",
        "POST /loyalty/pos/cancel",
        "POST /loyalty/pos/confirm",
        "POST /loyalty/pos/quote",
        "POST /loyalty/pos/refund",
        "POST /merges/{merge_id}/undo",
        "POST /messages/{message_id}/feedback",
        "POST /orders",
        "POST /segments",
        "POST /segments/preview",
        "POST /segments/{segment_id}/build",
        "POST /segments/{segment_id}/duplicate",
        "POST /suppressions",
        "POST /webhooks/sms-gateway",
        "POST /webhooks/telegram",
        "POST /webhooks/twilio/{channel}",
        "POST /webhooks/whatsapp",
        "PUT /loyalty/rules",
    ]
    # providers prove their webhooks with their own signatures, not with our keys
    keyed = {name: op for name, op in operations.items() if " /webhooks/" not in name}
    assert all(op["security"] == [{"APIKeyHeader": []}] for op in keyed.values())
    assert all("security" not in op for name, op in operations.items() if name not in keyed)
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert api.get("http://testserver/docs").status_code == 200
