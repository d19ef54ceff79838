"""A triggered campaign over HTTP: planned with its journey, launched, fired by an event
posted to the API, and read back as per-step counts and entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from patron.journeys.tasks import run_pass
from patron.models import Role
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.fixtures.api import Headers, api_client, auth_headers
from tests.fixtures.segments import store_base

__all__ = ["api_client", "auth_headers"]


def test_a_cart_event_posted_to_the_api_starts_the_journey(
    session_factory: sessionmaker[Session], api: TestClient, auth: dict[Role, Headers]
) -> None:
    with session_factory() as session:
        store_base(session)
        SegmentService(session).create(
            SegmentIn(name="moscow", rule=parse_rule({"kind": "consent", "channel": "email"})),
            actor="test",
        )
        session.commit()
    marketer = auth[Role.MARKETER]
    body = plan(
        name="cart", control_share=0.0, schedule={},
        trigger={"on": {"kind": "event", "event_type": "cart_abandoned"}},
        journey={"goal": "purchase", "steps": [
            {"id": "hold", "type": "wait", "hours": 2},
            {"id": "remind", "type": "send"},
        ]},
    ).model_dump(mode="json")  # fmt: skip
    created = api.post("/campaigns", json=body, headers=marketer)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    assert created.json()["trigger"]["on"]["event_type"] == "cart_abandoned"
    assert api.post(f"/campaigns/{cid}/launch", headers=marketer).status_code == 200
    now = datetime.now(UTC)
    posted = api.post("/events", headers={**marketer, "Idempotency-Key": "cart-1"}, json={
        "customer_id": 1, "type": "cart_abandoned", "occurred_at": now.isoformat(),
        "properties": {"sku": "TOY-1"},
    })  # fmt: skip
    assert posted.status_code == 201, posted.text
    run_pass(session_factory, now=now + timedelta(seconds=1))
    run_pass(session_factory, now=now + timedelta(hours=2, seconds=2))
    report = api.get(f"/campaigns/{cid}/journey", headers=auth[Role.ANALYST]).json()
    assert report == {
        "entries": {"completed": 1},
        "at_step": {},
        "steps": [
            {"id": "hold", "type": "wait", "outcomes": {"waiting": 1, "end elapsed": 1}},
            {"id": "remind", "type": "send", "outcomes": {"queued": 1}},
        ],
        "goal": {},
    }
    entries = api.get(f"/campaigns/{cid}/entries", params={"customer_id": 1},
                      headers=auth[Role.ANALYST]).json()  # fmt: skip
    assert [(e["status"], [s["step"] for s in e["steps"]]) for e in entries] == [
        ("completed", ["hold", "hold/end", "remind"])
    ]
    assert entries[0]["steps"][2]["message_id"] is not None
    planned = plan(name="planned", segment="moscow").model_dump(mode="json")
    other = api.post("/campaigns", json=planned, headers=marketer).json()["id"]
    refused = api.get(f"/campaigns/{other}/journey", headers=marketer)
    assert refused.status_code == 422
    assert refused.json() == {"error": f"campaign {other} is not triggered: it has no journey"}
