"""The customer endpoints, through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.models import Consent, Customer, IdempotencyRecord, Identity, Role
from tests.fixtures.api import Headers, api_client, auth_headers, count_rows  # noqa: F401


@pytest.fixture
def admin(auth: dict[Role, Headers]) -> Headers:
    return auth[Role.ADMIN]


def _post(api: TestClient, headers: Headers, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/customers", json=body, headers=headers)
    assert response.status_code in {200, 201}, response.json()
    result: dict[str, Any] = response.json()
    return result


def test_two_spellings_of_one_email_are_one_customer(
    api: TestClient, admin: Headers, engine: Engine
) -> None:
    first = api.post(
        "/customers",
        json={"first_name": "Ivan", "identities": [{"kind": "email", "value": "Ivan@Mail.RU "}]},
        headers=admin,
    )
    assert first.status_code == 201
    body = first.json()
    assert (body["id"], body["first_name"], body["merged_into_id"]) == (1, "Ivan", None)
    [email] = body["identities"]
    assert (email["kind"], email["value"], email["raw_value"], email["source"]) == (
        "email",
        "ivan@mail.ru",
        "Ivan@Mail.RU ",
        "api",
    )

    second = api.post(
        "/customers",
        json={
            "city": "Moscow",
            "identities": [
                {"kind": "email", "value": " ivan@mail.ru"},
                {"kind": "phone", "value": "8 (916) 123-45-67"},
            ],
        },
        headers=admin,
    )
    assert second.status_code == 200  # matched, not created
    again = second.json()
    assert (again["id"], again["first_name"], again["city"]) == (1, "Ivan", "Moscow")
    assert [(i["kind"], i["value"]) for i in again["identities"]] == [
        ("email", "ivan@mail.ru"),
        ("phone", "+79161234567"),
    ]
    assert (count_rows(engine, Customer), count_rows(engine, Identity)) == (1, 2)


def test_lookup_reads_the_phone_however_it_is_written(
    api: TestClient, auth: dict[Role, Headers]
) -> None:
    _post(api, auth[Role.MARKETER], {"identities": [{"kind": "phone", "value": "+7 916 1234567"}]})

    found = api.get(
        "/customers/lookup",
        params={"kind": "phone", "value": "8 (916) 123-45-67"},
        headers=auth[Role.POS],
    )
    assert found.status_code == 200
    assert found.json()["id"] == 1

    missing = api.get(
        "/customers/lookup", params={"kind": "email", "value": "No@X.ru"}, headers=auth[Role.POS]
    )
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "no customer has email no@x.ru"},
    )


def test_lookup_of_an_external_id_is_per_system(api: TestClient, admin: Headers) -> None:
    _post(api, admin, {"identities": [{"kind": "external", "namespace": "crm", "value": "42"}]})
    params = {"kind": "external", "value": "42.0", "namespace": "crm"}
    assert api.get("/customers/lookup", params=params, headers=admin).json()["id"] == 1
    params["namespace"] = "shop"
    assert api.get("/customers/lookup", params=params, headers=admin).status_code == 404


def test_lookup_of_a_value_that_is_not_a_phone_names_the_parameter(
    api: TestClient, admin: Headers
) -> None:
    response = api.get("/customers/lookup", params={"kind": "phone", "value": "abc"}, headers=admin)
    assert response.status_code == 422
    assert response.json()["fields"] == [
        {"field": "query.value", "message": "not a phone number: 'abc'"}
    ]


def test_unknown_identity_kind_is_refused_naming_the_field(
    api: TestClient, admin: Headers, engine: Engine
) -> None:
    response = api.post(
        "/customers", json={"identities": [{"kind": "fax", "value": "1"}]}, headers=admin
    )
    assert response.status_code == 422
    body = response.json()
    [field] = body["fields"]
    assert field["field"] == "body.identities.0.kind"
    assert field["message"].startswith("Input should be 'email', 'phone', 'card'")
    assert body["error"].startswith("invalid request: body.identities.0.kind: Input should be")
    assert count_rows(engine, Customer) == 0


def test_invalid_identity_value_is_refused_naming_its_entry(
    api: TestClient, admin: Headers, engine: Engine
) -> None:
    response = api.post(
        "/customers",
        json={
            "identities": [
                {"kind": "email", "value": "ok@x.ru"},
                {"kind": "phone", "value": "abc"},
            ]
        },
        headers=admin,
    )
    assert response.status_code == 422
    assert response.json() == {
        "error": "invalid request: body.identities.1.value: phone: not a phone number: 'abc'",
        "fields": [
            {"field": "body.identities.1.value", "message": "phone: not a phone number: 'abc'"}
        ],
    }
    assert (count_rows(engine, Customer), count_rows(engine, Identity)) == (0, 0)


def test_naive_datetime_is_refused_naming_the_field(api: TestClient, admin: Headers) -> None:
    response = api.post(
        "/customers",
        json={
            "consents": [
                {"channel": "email", "status": "granted", "decided_at": "2025-01-01T10:00:00"}
            ]
        },
        headers=admin,
    )
    assert response.status_code == 422
    [field] = response.json()["fields"]
    assert field == {
        "field": "body.consents.0.decided_at",
        "message": "Input should have timezone info",
    }


def test_get_returns_a_merged_profile_and_404_for_an_unknown_one(
    api: TestClient, admin: Headers
) -> None:
    _post(api, admin, {"identities": [{"kind": "email", "value": "a@x.ru"}]})
    _post(api, admin, {"identities": [{"kind": "phone", "value": "+79161112233"}]})
    # one record holding both identities tells us profiles 1 and 2 are one person
    _post(
        api,
        admin,
        {
            "identities": [
                {"kind": "email", "value": "a@x.ru"},
                {"kind": "phone", "value": "+79161112233"},
            ]
        },
    )
    merged = api.get("/customers/2", headers=admin)
    assert (merged.status_code, merged.json()["merged_into_id"]) == (200, 1)

    unknown = api.get("/customers/99", headers=admin)
    assert (unknown.status_code, unknown.json()) == (404, {"error": "customer 99 does not exist"})


def test_patch_changes_only_the_fields_sent(api: TestClient, admin: Headers) -> None:
    _post(api, admin, {"first_name": "Olga", "last_name": "Ivanova", "city": "Omsk"})

    response = api.patch("/customers/1", json={"city": "Kazan", "last_name": None}, headers=admin)
    assert response.status_code == 200
    body = response.json()
    assert (body["first_name"], body["last_name"], body["city"]) == ("Olga", None, "Kazan")
    stored = api.get("/customers/1", headers=admin).json()
    assert (stored["first_name"], stored["last_name"], stored["city"]) == ("Olga", None, "Kazan")


def test_patch_of_a_merged_profile_is_a_conflict(api: TestClient, admin: Headers) -> None:
    _post(api, admin, {"first_name": "A"})
    _post(api, admin, {"first_name": "B"})
    assert api.post("/customers/1/merge", json={"other_id": 2}, headers=admin).status_code == 201
    response = api.patch("/customers/2", json={"city": "Kazan"}, headers=admin)
    assert (response.status_code, response.json()) == (
        409,
        {"error": "customer 2 was merged into 1; change that profile instead"},
    )


def test_search_pages_through_matches(api: TestClient, admin: Headers) -> None:
    for n in range(5):
        _post(api, admin, {"first_name": f"P{n}", "city": "Kazan"})
    _post(api, admin, {"first_name": "Other", "city": "Omsk"})
    _post(api, admin, {"identities": [{"kind": "email", "value": "kazanets@x.ru"}]})

    page = api.get("/customers", params={"q": "KAZAN", "limit": 2, "offset": 2}, headers=admin)
    assert page.status_code == 200
    body = page.json()
    assert (body["limit"], body["offset"]) == (2, 2)
    assert [c["id"] for c in body["items"]] == [3, 4]

    rest = api.get("/customers", params={"q": "kazan", "offset": 4}, headers=admin).json()
    assert (rest["limit"], [c["id"] for c in rest["items"]]) == (50, [5, 7])

    everyone = api.get("/customers", headers=admin).json()
    assert [c["id"] for c in everyone["items"]] == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("limit", [0, 501])
def test_search_limit_is_1_to_500(api: TestClient, admin: Headers, limit: int) -> None:
    response = api.get("/customers", params={"limit": limit}, headers=admin)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "query.limit"


def test_adding_an_identity_of_another_profile_is_a_conflict(
    api: TestClient, admin: Headers, engine: Engine
) -> None:
    _post(api, admin, {"identities": [{"kind": "email", "value": "a@x.ru"}]})
    _post(api, admin, {"identities": [{"kind": "email", "value": "b@x.ru"}]})

    added = api.post(
        "/customers/1/identities", json={"kind": "card", "value": "77-01"}, headers=admin
    )
    assert added.status_code == 201
    assert [i["value"] for i in added.json()["identities"]] == ["a@x.ru", "7701"]

    clash = api.post(
        "/customers/1/identities", json={"kind": "email", "value": "B@x.ru"}, headers=admin
    )
    assert (clash.status_code, clash.json()) == (
        409,
        {"error": "email b@x.ru belongs to customer 2; merge them"},
    )
    invalid = api.post(
        "/customers/1/identities", json={"kind": "email", "value": "nope"}, headers=admin
    )
    assert invalid.status_code == 422
    [field] = invalid.json()["fields"]
    assert field["field"] == "body.value"
    assert field["message"].startswith("email: not an email address: 'nope'")
    assert count_rows(engine, Identity) == 3


def test_consent_history_is_kept_and_the_latest_decision_is_in_force(
    api: TestClient, admin: Headers, engine: Engine
) -> None:
    _post(api, admin, {"identities": [{"kind": "email", "value": "a@x.ru"}]})
    later = {"channel": "email", "status": "withdrawn", "decided_at": "2025-06-01T12:00:00+03:00"}
    earlier = {"channel": "email", "status": "granted", "decided_at": "2025-01-01T00:00:00Z"}
    # the later decision arrives first: what counts is when it was decided, not received
    first = api.post("/customers/1/consents", json=later, headers=admin)
    assert first.status_code == 201
    assert (first.json()["id"], first.json()["decided_at"]) == (1, "2025-06-01T09:00:00Z")
    assert api.post("/customers/1/consents", json=earlier, headers=admin).status_code == 201

    history = api.get("/customers/1/consents", params={"history": "true"}, headers=admin).json()
    assert [(c["id"], c["status"]) for c in history] == [(2, "granted"), (1, "withdrawn")]
    effective = api.get("/customers/1/consents", headers=admin).json()
    assert [(c["id"], c["channel"], c["status"]) for c in effective] == [(1, "email", "withdrawn")]
    assert api.get("/customers/1", headers=admin).json()["consents"] == effective
    assert count_rows(engine, Consent) == 2


def test_merge_then_undo_through_the_api(api: TestClient, admin: Headers) -> None:
    _post(api, admin, {"first_name": "Anna", "identities": [{"kind": "email", "value": "a@x.ru"}]})
    _post(api, admin, {"city": "Kazan", "identities": [{"kind": "phone", "value": "+79165550000"}]})

    merged = api.post("/customers/1/merge", json={"other_id": 2}, headers=admin)
    assert merged.status_code == 201
    log = merged.json()
    assert (log["id"], log["winner_id"], log["loser_id"], log["actor"]) == (1, 1, 2, "admin-key")
    assert (log["filled"], log["moved"]["identities"], log["undone_at"]) == (
        {"city": "Kazan"},
        [2],
        None,
    )
    winner = api.get("/customers/1", headers=admin).json()
    assert (winner["city"], [i["value"] for i in winner["identities"]]) == (
        "Kazan",
        ["a@x.ru", "+79165550000"],
    )
    assert api.get("/customers/2", headers=admin).json()["merged_into_id"] == 1

    undone = api.post("/merges/1/undo", headers=admin)
    assert undone.status_code == 200
    assert undone.json()["undone_at"] is not None
    winner, loser = (api.get(f"/customers/{n}", headers=admin).json() for n in (1, 2))
    assert (winner["city"], [i["value"] for i in winner["identities"]]) == (None, ["a@x.ru"])
    assert (loser["merged_into_id"], [i["value"] for i in loser["identities"]]) == (
        None,
        ["+79165550000"],
    )

    again = api.post("/merges/1/undo", headers=admin)
    assert (again.status_code, again.json()) == (409, {"error": "merge 1 was undone already"})


def test_merge_into_itself_is_refused(api: TestClient, admin: Headers) -> None:
    _post(api, admin, {"first_name": "Anna"})
    response = api.post("/customers/1/merge", json={"other_id": 1}, headers=admin)
    assert (response.status_code, response.json()) == (
        422,
        {"error": "cannot merge a customer into itself"},
    )


def test_retried_customer_post_is_answered_from_the_first_answer(
    api: TestClient, admin: Headers, engine: Engine
) -> None:
    headers = {**admin, "Idempotency-Key": "c-1"}
    body = {"first_name": "Ivan", "identities": [{"kind": "email", "value": "i@x.ru"}]}
    first = api.post("/customers", json=body, headers=headers)
    retry = api.post("/customers", json=body, headers=headers)
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert (count_rows(engine, Customer), count_rows(engine, IdempotencyRecord)) == (1, 1)
