"""A call list end to end: a phone campaign puts its customers on the operators' list with
a script rendered for each; operators record outcomes through the API, which go on the
customer's timeline and into the campaign's message stamps; a wrong number suppresses."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.service import CampaignService
from patron.channels.calls import CallList
from patron.channels.router import Router
from patron.customers.schemas import ConsentIn, IdentityIn
from patron.customers.service import CustomerService
from patron.dispatch.tasks import run_worker
from patron.kit.settings import Settings
from patron.models import (
    Channel,
    ConsentStatus,
    Event,
    IdentityKind,
    Message,
    MessageStatus,
    Role,
    Suppression,
)
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.fixtures.api import Headers, api_client, auth_headers
from tests.fixtures.segments import store_base

__all__ = ["api_client", "auth_headers"]

SCRIPT = (
    "Hello, {{ customer.first_name }}! We have {{ offer.discount_percent }}% off for you"
    "{% if offers %}, for example on {{ offers[0].item }}{% endif %}."
)


def _launch(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        store_base(session)
        customers = CustomerService(session)
        for person in (1, 3, 5):
            customers.record_consent(
                person, ConsentIn(channel=Channel.PHONE, status=ConsentStatus.GRANTED,
                                  decided_at=datetime(2026, 1, 1, tzinfo=UTC)),
                source="form",
            )  # fmt: skip
        # Dina gets a phone, so that three are on the list
        customers.add_identity(
            5, IdentityIn(kind=IdentityKind.PHONE, value="+79161234505"), source="test"
        )
        SegmentService(session).create(
            SegmentIn(name="callable", rule=parse_rule({"kind": "consent", "channel": "phone"})),
            actor="t",
        )
        service = CampaignService(session)
        campaign = service.create(
            plan(segment="callable", control_share=0.0, channel="phone",
                 message={"text": SCRIPT}),
            actor="m",
        )  # fmt: skip
        service.launch(campaign.id, actor="m")
        session.commit()


def test_operators_work_the_list_and_their_outcomes_are_kept(
    session_factory: sessionmaker[Session], api: TestClient, auth: dict[Role, Headers]
) -> None:
    _launch(session_factory)
    stats = run_worker(
        session_factory, Router({Channel.PHONE: CallList()}), settings=Settings(),
        until_idle=True,
    )  # fmt: skip
    assert (stats.sent, stats.failed) == (3, 0)
    marketer, analyst = auth[Role.MARKETER], auth[Role.ANALYST]

    listed = api.get("/campaigns/1/calls", headers=analyst)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["outcomes"] == {"not_called": 3}
    tasks = {t["customer_id"]: t for t in body["tasks"]}
    assert sorted(tasks) == [1, 3, 5]
    anna, vera = tasks[1], tasks[3]
    assert (anna["name"], anna["phone"], anna["calls"], anna["last_outcome"]) == (
        "Anna", "+79161234501", 0, None
    )  # fmt: skip
    assert anna["script"] == "Hello, Anna! We have 15% off for you."
    assert (anna["rfm_segment"], anna["clv"], anna["churn_risk"]) == ("Champions", "900.00", 0.15)

    def call(message: int, **fields: object) -> dict[str, object]:
        answer = api.post(f"/calls/{message}", json=fields, headers=marketer)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    assert (
        call(anna["message_id"], outcome="interested", note="wants the catalogue")["recorded_by"]
        == "marketer-key"
    )
    call(vera["message_id"], outcome="no_answer")
    call(vera["message_id"], outcome="call_back", call_back_at="2027-01-10T12:00:00+03:00")
    call(tasks[5]["message_id"], outcome="wrong_number")

    # bad input: a call back with no time, a message that is not a call, a reader
    missing = api.post(f"/calls/{vera['message_id']}", json={"outcome": "call_back"},
                       headers=marketer)  # fmt: skip
    assert missing.status_code == 422
    assert "call_back_at: a call back later needs the time agreed" in missing.text
    assert api.post(f"/calls/{anna['message_id']}", json={"outcome": "reached"},
                    headers=analyst).status_code == 403  # fmt: skip

    still = api.get("/campaigns/1/calls", headers=analyst).json()
    assert still["outcomes"] == {"interested": 1, "call_back": 1, "wrong_number": 1}
    assert [(t["customer_id"], t["calls"], t["last_outcome"], t["call_back_at"])
            for t in still["tasks"]] == [
        (3, 2, "call_back", "2027-01-10T09:00:00Z")
    ]  # fmt: skip
    every = api.get("/campaigns/1/calls", params={"open": False}, headers=analyst).json()
    assert len(every["tasks"]) == 3

    with session_factory() as session:
        messages = {m.customer_id: m for m in session.scalars(select(Message))}
        assert messages[1].opened_at is not None and messages[1].clicked_at is not None
        assert messages[3].opened_at is None
        assert messages[5].bounced_at is not None
        assert {m.status for m in messages.values()} == {MessageStatus.SENT}
        timeline = session.execute(
            select(Event.customer_id, Event.properties)
            .where(Event.type == "call.outcome")
            .order_by(Event.id)
        ).all()
        assert [(c, p["outcome"], p["note"]) for c, p in timeline] == [
            (1, "interested", "wants the catalogue"), (3, "no_answer", None),
            (3, "call_back", None), (5, "wrong_number", None),
        ]  # fmt: skip
        assert session.execute(
            select(Suppression.customer_id, Suppression.channel, Suppression.reason)
        ).all() == [(5, Channel.PHONE, "wrong number")]


def test_a_number_that_cannot_be_called_fails_alone() -> None:
    from patron.channels.base import Envelope

    handed: list[int] = []
    out = CallList().deliver(
        [Envelope(1, "k", "not a phone", "", "", "script", channel=Channel.PHONE),
         Envelope(2, "k", "+79161234501", "", "", "script", channel=Channel.PHONE)],
        handing_over=lambda e: handed.extend(x.message_id for x in e),
    )  # fmt: skip
    assert [(o.message_id, o.result) for o in out] == [(1, "failed"), (2, "sent")]
    assert out[0].reason is not None and "not a phone" in out[0].reason
    assert handed == [2]
