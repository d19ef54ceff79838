"""Orders and events through HTTP: exact money, guest orders, idempotent retries."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from patron.events.repository import EventRepository
from patron.models import Event, Order, OrderLine, Role
from tests.fixtures.api import Headers, api_client, auth_headers, count_rows  # noqa: F401


@pytest.fixture
def marketer(auth: dict[Role, Headers]) -> Headers:
    return auth[Role.MARKETER]


def _order(external_id: str = "o-1", **fields: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "source": "shop",
        "external_id": external_id,
        "placed_at": "2025-03-01T10:00:00+03:00",
        "currency": "rub",
        "lines": [
            {"sku": "TEA", "name": "Tea", "quantity": "2", "unit_price": "19.99"},
            {"sku": "BAG", "quantity": "1", "unit_price": "0.05"},
        ],
    }
    order.update(fields)
    return order


def _post_order(
    api: TestClient, headers: Headers, body: dict[str, Any], key: str
) -> dict[str, Any]:
    response = api.post("/orders", json=body, headers={**headers, "Idempotency-Key": key})
    assert response.status_code == 201, response.json()
    result: dict[str, Any] = response.json()
    return result


def _order_json_reordered() -> str:
    """The order of ``_order()`` with its keys in reverse and indented: same request."""
    return json.dumps(dict(reversed(list(_order().items()))), indent=2)


def test_order_total_is_exact_and_amounts_are_strings(
    api: TestClient, marketer: Headers, engine: Engine
) -> None:
    response = api.post("/orders", json=_order(), headers={**marketer, "Idempotency-Key": "k1"})
    assert response.status_code == 201
    body = response.json()
    assert (body["total"], body["discount"], body["currency"]) == ("40.03", "0.00", "RUB")
    assert (body["kind"], body["customer_id"], body["placed_at"]) == (
        "purchase",
        None,
        "2025-03-01T07:00:00Z",
    )
    assert [
        (line["line_no"], line["quantity"], line["unit_price"], line["amount"])
        for line in body["lines"]
    ] == [(1, "2.000", "19.9900", "39.98"), (2, "1.000", "0.0500", "0.05")]
    # what a later read returns is exactly what the write answered
    assert api.get("/orders/1", headers=marketer).json() == body
    with Session(engine) as session:
        assert session.scalar(select(Order.total)) == Decimal("40.03")


def test_total_is_rounded_half_up_once(api: TestClient, marketer: Headers) -> None:
    # 3 × 0.335 = 1.005: half up gives 1.01 where banker's rounding would give 1.00
    body = _order(lines=[{"quantity": "3", "unit_price": "0.335"}])
    assert _post_order(api, marketer, body, "k")["total"] == "1.01"


def test_a_return_is_stored_negative(api: TestClient, marketer: Headers) -> None:
    body = _order(kind="return", lines=[{"sku": "TEA", "quantity": "1", "unit_price": "19.99"}])
    order = _post_order(api, marketer, body, "r")
    assert (order["kind"], order["total"], order["lines"][0]["quantity"]) == (
        "return",
        "-19.99",
        "-1.000",
    )


def test_a_purchase_with_a_negative_quantity_is_refused(
    api: TestClient, marketer: Headers, engine: Engine
) -> None:
    body = _order(
        lines=[{"quantity": "1", "unit_price": "1"}, {"quantity": "-1", "unit_price": "1"}]
    )
    response = api.post("/orders", json=body, headers={**marketer, "Idempotency-Key": "k"})
    assert (response.status_code, response.json()) == (
        422,
        {
            "error": "lines.1.quantity: a purchase line needs a positive quantity; "
            'send a return as kind "return"'
        },
    )
    assert count_rows(engine, Order) == 0


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"placed_at": "2025-03-01T10:00:00"}, "body.placed_at", "Input should have timezone info"),
        ({"lines": []}, "body.lines", "List should have at least 1 item after validation, not 0"),
        (
            {"lines": [{"quantity": "0", "unit_price": "1"}]},
            "body.lines.0.quantity",
            "Value error, must not be zero",
        ),
        (
            {"lines": [{"quantity": "1", "unit_price": "-1"}]},
            "body.lines.0.unit_price",
            "Input should be greater than or equal to 0",
        ),
        ({"currency": "RUBL"}, "body.currency", "String should match pattern '^[A-Za-z]{3}$'"),
        (
            {"customer_id": 1, "identity": {"kind": "email", "value": "a@x.ru"}},
            "body",
            "Value error, give customer_id or identity, not both",
        ),
    ],
)
def test_invalid_order_is_refused_naming_the_field(
    api: TestClient, marketer: Headers, change: dict[str, Any], field: str, message: str
) -> None:
    response = api.post(
        "/orders", json=_order(**change), headers={**marketer, "Idempotency-Key": "k"}
    )
    assert response.status_code == 422
    assert response.json()["fields"] == [{"field": field, "message": message}]


def test_retry_with_the_same_key_replays_the_first_answer(
    api: TestClient, marketer: Headers, engine: Engine
) -> None:
    headers = {**marketer, "Idempotency-Key": "till-7-0001"}
    first = api.post("/orders", json=_order(), headers=headers)
    # the same JSON written differently is the same request
    retry = api.post(
        "/orders",
        content=_order_json_reordered(),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    assert "Idempotent-Replayed" not in first.headers
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert (count_rows(engine, Order), count_rows(engine, OrderLine)) == (1, 2)


def test_same_key_with_a_different_body_is_a_conflict(
    api: TestClient, marketer: Headers, engine: Engine
) -> None:
    headers = {**marketer, "Idempotency-Key": "k"}
    assert api.post("/orders", json=_order(), headers=headers).status_code == 201
    response = api.post("/orders", json=_order(store="Omsk-1"), headers=headers)
    assert (response.status_code, response.json()) == (
        409,
        {"error": "Idempotency-Key reused with a different request"},
    )
    assert count_rows(engine, Order) == 1


def test_keys_belong_to_one_api_key(
    api: TestClient, auth: dict[Role, Headers], engine: Engine
) -> None:
    api.post("/orders", json=_order("a"), headers={**auth[Role.MARKETER], "Idempotency-Key": "k"})
    other = api.post(
        "/orders", json=_order("b"), headers={**auth[Role.POS], "Idempotency-Key": "k"}
    )
    assert other.status_code == 201
    assert count_rows(engine, Order) == 2


def test_missing_idempotency_key_is_400(api: TestClient, marketer: Headers, engine: Engine) -> None:
    response = api.post("/orders", json=_order(), headers=marketer)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "this request needs an Idempotency-Key header"},
    )
    assert count_rows(engine, Order) == 0


def test_same_order_with_another_key_is_a_conflict(
    api: TestClient, marketer: Headers, engine: Engine
) -> None:
    _post_order(api, marketer, _order(), "k1")
    response = api.post("/orders", json=_order(), headers={**marketer, "Idempotency-Key": "k2"})
    assert (response.status_code, response.json()) == (
        409,
        {"error": "order o-1 from shop exists already (id 1)"},
    )
    assert count_rows(engine, Order) == 1


def test_order_by_identity_joins_the_profile_or_waits_as_a_guest_order(
    api: TestClient, marketer: Headers
) -> None:
    api.post(
        "/customers",
        json={"identities": [{"kind": "email", "value": "ivan@mail.ru"}]},
        headers=marketer,
    )
    known = _post_order(
        api, marketer, _order("a", identity={"kind": "email", "value": "IVAN@mail.ru"}), "a"
    )
    assert (known["customer_id"], known["guest_email"]) == (1, None)

    guest = _post_order(
        api, marketer, _order("b", identity={"kind": "phone", "value": "8 916 123 45 67"}), "b"
    )
    assert (guest["customer_id"], guest["guest_phone"]) == (None, "+79161234567")

    # the profile that later claims the phone gets the guest order
    created = api.post(
        "/customers",
        json={"identities": [{"kind": "phone", "value": "+79161234567"}]},
        headers=marketer,
    )
    assert created.json()["id"] == 2
    mine = api.get("/orders", params={"customer_id": 2}, headers=marketer).json()
    assert [o["external_id"] for o in mine["items"]] == ["b"]


def test_order_for_a_merged_profile_goes_to_the_surviving_one(
    api: TestClient, marketer: Headers
) -> None:
    for _ in range(2):
        api.post("/customers", json={}, headers=marketer)
    api.post("/customers/1/merge", json={"other_id": 2}, headers=marketer)
    assert _post_order(api, marketer, _order(customer_id=2), "k")["customer_id"] == 1


def test_order_for_an_unknown_customer_is_404(api: TestClient, marketer: Headers) -> None:
    response = api.post(
        "/orders", json=_order(customer_id=5), headers={**marketer, "Idempotency-Key": "k"}
    )
    assert (response.status_code, response.json()) == (404, {"error": "customer 5 does not exist"})


def test_orders_are_listed_newest_first_in_pages(api: TestClient, marketer: Headers) -> None:
    for day in range(1, 6):
        _post_order(
            api, marketer, _order(f"o-{day}", placed_at=f"2025-03-0{day}T10:00:00Z"), f"{day}"
        )
    page = api.get("/orders", params={"limit": 2, "offset": 1}, headers=marketer).json()
    assert (page["limit"], page["offset"]) == (2, 1)
    assert [o["external_id"] for o in page["items"]] == ["o-4", "o-3"]
    assert api.get("/orders/9", headers=marketer).status_code == 404


def test_events_are_recorded_listed_and_replayed(
    api: TestClient, marketer: Headers, engine: Engine
) -> None:
    api.post(
        "/customers",
        json={"identities": [{"kind": "telegram", "value": "@Ivan_P"}]},
        headers=marketer,
    )
    visit = {
        "type": "visit",
        "occurred_at": "2025-04-01T09:30:00+03:00",
        "identity": {"kind": "telegram", "value": "ivan_p"},
        "properties": {"store": "Omsk-1", "minutes": 12},
        "external_id": "v-1",
    }
    headers = {**marketer, "Idempotency-Key": "e1"}
    first = api.post("/events", json=visit, headers=headers)
    assert first.status_code == 201
    body = first.json()
    assert {k: body[k] for k in ("id", "customer_id", "type", "occurred_at", "source")} == {
        "id": 1,
        "customer_id": 1,
        "type": "visit",
        "occurred_at": "2025-04-01T06:30:00Z",
        "source": "api",
    }
    assert body["properties"] == {"store": "Omsk-1", "minutes": 12}
    assert api.post("/events", json=visit, headers=headers).json() == body

    duplicate = api.post("/events", json=visit, headers={**marketer, "Idempotency-Key": "e2"})
    assert (duplicate.status_code, duplicate.json()) == (
        409,
        {"error": "event v-1 from api exists already"},
    )
    click = {"type": "click", "occurred_at": "2025-04-02T00:00:00Z", "customer_id": 1}
    assert (
        api.post("/events", json=click, headers={**marketer, "Idempotency-Key": "e3"}).status_code
        == 201
    )
    anonymous = {"type": "visit", "occurred_at": "2025-04-03T00:00:00Z"}
    assert (
        api.post("/events", json=anonymous, headers={**marketer, "Idempotency-Key": "e4"}).json()[
            "customer_id"
        ]
        is None
    )
    assert count_rows(engine, Event) == 3

    visits = api.get("/events", params={"customer_id": 1, "type": "visit"}, headers=marketer).json()
    assert [e["id"] for e in visits["items"]] == [1]
    everything = api.get("/events", params={"limit": 2}, headers=marketer).json()
    assert [e["id"] for e in everything["items"]] == [3, 2]


def test_event_without_key_or_with_naive_time_is_refused(
    api: TestClient, marketer: Headers, engine: Engine
) -> None:
    event = {"type": "visit", "occurred_at": "2025-04-01T09:30:00Z"}
    missing = api.post("/events", json=event, headers=marketer)
    assert (missing.status_code, missing.json()) == (
        400,
        {"error": "this request needs an Idempotency-Key header"},
    )
    event["occurred_at"] = "2025-04-01T09:30:00"
    naive = api.post("/events", json=event, headers={**marketer, "Idempotency-Key": "k"})
    assert naive.status_code == 422
    assert naive.json()["fields"] == [
        {"field": "body.occurred_at", "message": "Input should have timezone info"}
    ]
    assert count_rows(engine, Event) == 0


def test_pos_may_not_record_events(api: TestClient, auth: dict[Role, Headers]) -> None:
    event = {"type": "visit", "occurred_at": "2025-04-01T09:30:00Z"}
    response = api.post("/events", json=event, headers={**auth[Role.POS], "Idempotency-Key": "k"})
    assert (response.status_code, response.json()) == (
        403,
        {"error": "role pos may not events:write"},
    )


def test_a_batch_of_events_is_judged_event_by_event(
    api: TestClient, marketer: Headers, engine: Engine
) -> None:
    for email in ("a@x.ru", "b@x.ru"):
        api.post("/customers", json={"identities": [{"kind": "email", "value": email}]},
                 headers=marketer)  # fmt: skip
    merge = api.post("/customers/1/merge", json={"other_id": 2}, headers=marketer)
    assert merge.status_code == 201, merge.text
    at = "2025-04-01T09:30:00+03:00"
    batch = {
        "events": [
            {"type": "visit", "occurred_at": at, "customer_id": 1, "external_id": "b-1"},
            {"type": "visit", "occurred_at": at, "customer_id": 2},
            {"type": "visit", "occurred_at": at, "customer_id": 99},
            {"type": "visit", "occurred_at": at, "identity": {"kind": "email", "value": "A@X.ru"}},
            {"type": "visit", "occurred_at": at, "identity": {"kind": "phone", "value": "12"}},
            {"type": "visit", "occurred_at": at, "customer_id": 1, "external_id": "b-1"},
            {"type": "visit", "occurred_at": at, "identity": {"kind": "email", "value": "n@x.ru"}},
        ]
    }
    headers = {**marketer, "Idempotency-Key": "batch-1"}
    first = api.post("/events/batch", json=batch, headers=headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["created"], body["duplicates"], body["rejected"]) == (4, 1, 2)
    assert [(r["index"], r["status"], r["id"]) for r in body["results"]] == [
        (0, "created", 1),
        (1, "created", 2),
        (2, "rejected", None),
        (3, "created", 3),
        (4, "rejected", None),
        (5, "duplicate", None),
        (6, "created", 4),
    ]
    assert body["results"][2]["error"] == "events.2.customer_id: customer 99 does not exist"
    assert body["results"][4]["error"].startswith("events.4.identity.value: ")
    # the merged profile's event lands on the survivor; an unknown contact is anonymous
    stored = api.get("/events", params={"limit": 10}, headers=marketer).json()["items"]
    assert [(e["id"], e["customer_id"], e["occurred_at"]) for e in stored] == [
        (4, None, "2025-04-01T06:30:00Z"),
        (3, 1, "2025-04-01T06:30:00Z"),
        (2, 1, "2025-04-01T06:30:00Z"),
        (1, 1, "2025-04-01T06:30:00Z"),
    ]
    # a retry replays the answer; the same events under a new key are all duplicates or new
    replay = api.post("/events/batch", json=batch, headers=headers)
    assert (replay.json(), replay.headers["Idempotent-Replayed"]) == (body, "true")
    again = api.post("/events/batch", json=batch, headers={**marketer, "Idempotency-Key": "b2"})
    assert (again.json()["created"], again.json()["duplicates"]) == (3, 2)
    assert count_rows(engine, Event) == 7


def test_a_bad_batch_is_refused_whole_naming_the_event(
    api: TestClient, marketer: Headers, engine: Engine
) -> None:
    headers = {**marketer, "Idempotency-Key": "bad"}
    naive = {"events": [{"type": "visit", "occurred_at": "2025-04-01T09:30:00Z"},
                        {"type": "visit", "occurred_at": "2025-04-01T09:30:00"}]}  # fmt: skip
    refused = api.post("/events/batch", json=naive, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["fields"] == [
        {"field": "body.events.1.occurred_at", "message": "Input should have timezone info"}
    ]
    too_many = {"events": [{"type": "v", "occurred_at": "2025-04-01T09:30:00Z"}] * 1001}
    assert api.post("/events/batch", json=too_many, headers=headers).status_code == 422
    assert api.post("/events/batch", json={"events": []}, headers=headers).status_code == 422
    assert count_rows(engine, Event) == 0


def test_a_rejected_event_does_not_make_its_twin_a_duplicate(
    api: TestClient, marketer: Headers, engine: Engine
) -> None:
    api.post("/customers", json={}, headers=marketer)
    at = "2025-04-01T09:30:00Z"
    batch = {"events": [
        {"type": "visit", "occurred_at": at, "customer_id": 99, "external_id": "x"},
        {"type": "visit", "occurred_at": at, "customer_id": 1, "external_id": "x"},
    ]}  # fmt: skip
    body = api.post("/events/batch", json=batch, headers={**marketer, "Idempotency-Key": "t"})
    assert [r["status"] for r in body.json()["results"]] == ["rejected", "created"]
    assert count_rows(engine, Event) == 1


def test_a_twin_stored_by_a_concurrent_request_refuses_the_batch_whole(
    api: TestClient, marketer: Headers, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The twin committed after this batch's check: the unique index refuses the insert (from
    the driver, on either store), the batch is refused with 409 and nothing of it is kept;
    sent again, the twin is reported as a duplicate."""
    event = {"type": "visit", "occurred_at": "2025-04-01T09:30:00Z", "external_id": "late"}
    api.post("/events", json=event, headers={**marketer, "Idempotency-Key": "first"})
    batch = {"events": [event | {"external_id": "fresh"}, event]}
    # the concurrent request's commit lands between the check and the insert
    monkeypatch.setattr(EventRepository, "existing_external", lambda *_: set())
    refused = api.post("/events/batch", json=batch, headers={**marketer, "Idempotency-Key": "b"})
    assert refused.status_code == 409
    assert refused.json()["error"].startswith("an event of this batch (same source and ")
    assert count_rows(engine, Event) == 1
    monkeypatch.undo()
    again = api.post("/events/batch", json=batch, headers={**marketer, "Idempotency-Key": "b"})
    assert [r["status"] for r in again.json()["results"]] == ["created", "duplicate"]
