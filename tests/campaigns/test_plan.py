"""Campaign plans: the eight answers, states with an audit trail, schedules, templates."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.schemas import CampaignIn, CampaignUpdate, MessageTemplate, Schedule
from patron.campaigns.service import CampaignService
from patron.campaigns.templates import check
from patron.kit.errors import Conflict, InvalidInput
from patron.models import CampaignKind, CampaignStatus, Customer
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.fixtures.segments import AS_OF, store_base

MESSAGE = {
    "subject": "{{ customer.first_name }}, {{ offer.discount_percent }}% off for you",
    "html": "<p>Hello {{ customer.first_name }}!</p><p>Code {{ coupon }}</p>"
    "{% for o in offers %}<li>{{ o.item }}</li>{% endfor %}",
    "text": "Hello {{ customer.first_name }} ({{ scores.rfm_segment or 'new' }}). "
    "Code {{ coupon }}.",
}


def plan(**changes: Any) -> CampaignIn:
    """A retention plan for the "moscow" segment, with any field changed."""
    data: dict[str, Any] = {
        "name": "keep moscow",
        "goal": "Bring Moscow customers at risk back to buying",
        "kind": "retention",
        "content_type": "bonus",
        "segment": "moscow",
        "channel": "email",
        "offer": {"kind": "discount", "discount_percent": "15", "cost": "150.00"},
        "message": MESSAGE,
        "schedule": {"start_at": "2027-01-15T09:00:00+03:00"},
        "budget": "5000.00",
        "kpi": {"metric": "incremental_revenue", "expected": "20000"},
    }
    return CampaignIn.model_validate(data | changes)


@pytest.fixture
def stored(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with session_factory() as session:
        store_base(session)
        SegmentService(session).create(
            SegmentIn(name="moscow", rule=parse_rule({"kind": "profile", "field": "city",
                                                      "value": "Moscow"})),
            actor="test",
        )  # fmt: skip
        session.commit()
    return session_factory


def test_a_plan_records_the_eight_answers_and_its_trail(stored: sessionmaker[Session]) -> None:
    with stored() as session:
        service = CampaignService(session)
        campaign = service.create(plan(), actor="maria")
        assert campaign.status is CampaignStatus.DRAFT
        assert campaign.kind is CampaignKind.RETENTION and campaign.kind.family == "retention"
        assert campaign.budget == Decimal("5000.00") and campaign.currency == "RUB"
        assert campaign.kpi == {"metric": "incremental_revenue", "expected": "20000"}
        assert campaign.offer["discount_percent"] == "15"
        assert campaign.control_share == 0.10 and campaign.test_share is None
        service.update(
            campaign.id,
            CampaignUpdate.model_validate({"budget": "7500.00", "control_share": 0.2}),
            actor="ivan",
        )
        assert campaign.budget == Decimal("7500.00")
        service.schedule(campaign.id, actor="maria")
        service.cancel(campaign.id, actor="ivan", reason="budget moved")
        trail = [(c.actor, c.action, c.changes) for c in service.trail(campaign)]
        assert [t[:2] for t in trail] == [
            ("maria", "created"), ("ivan", "updated"), ("maria", "schedule"), ("ivan", "cancel")
        ]  # fmt: skip
        assert trail[1][2] == {
            "budget": {"from": "5000.00", "to": "7500.00"},
            "control_share": {"from": 0.1, "to": 0.2},
        }
        assert trail[3][2] == {
            "status": {"from": "scheduled", "to": "cancelled"}, "reason": "budget moved"
        }  # fmt: skip
        # a cancelled campaign goes nowhere, and its plan is fixed
        with pytest.raises(Conflict, match="is cancelled: it cannot launch"):
            service.launch(campaign.id, actor="maria")
        with pytest.raises(Conflict, match="is cancelled: its plan is fixed"):
            service.update(campaign.id, CampaignUpdate(goal="x"), actor="maria")
        with pytest.raises(Conflict, match="a campaign named 'keep moscow' exists already"):
            service.create(plan(), actor="maria")


def test_unknown_segment_is_refused(stored: sessionmaker[Session]) -> None:
    with stored() as session, pytest.raises(Exception, match="segment 'vip' not found"):
        CampaignService(session).create(plan(segment="vip"), actor="maria")


@pytest.mark.parametrize(
    ("part", "source", "message"),
    [
        ("subject", "Hi {{ customr.first_name }}",
         "message.subject: undefined variable 'customr' (templates may use customer, scores,"),
        ("text", "Hi {{ customer.frist_name }}",
         "message.text: undefined variable: 'dict object' has no attribute 'frist_name'"),
        ("html", "<p>\n{% if customer.city %}\n{{ customer.city }</p>",
         "message.html, line 3: unexpected '}'"),
        ("text", "{{ customer.__class__.__mro__ }}",
         "message.text: not allowed in a template: access to attribute '__class__' of 'dict'"),
    ],
)  # fmt: skip
def test_templates_are_checked_before_launch_and_name_the_problem(
    part: str, source: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check(MessageTemplate.model_validate(MESSAGE | {part: source}))
    assert caught.value.message.startswith(message)


def test_preview_renders_for_a_customer_with_html_escaped(stored: sessionmaker[Session]) -> None:
    with stored() as session:
        service = CampaignService(session)
        campaign = service.create(plan(), actor="maria")
        anna = service.preview(campaign, 1)
        assert anna.subject == "Anna, 15% off for you"
        assert anna.text == "Hello Anna (Champions). Code PREVIEW-0000."
        customer = session.get(Customer, 3)
        assert customer is not None
        customer.first_name = "<b>Vera</b>"
        vera = service.preview(campaign, 3)
        assert vera.html == "<p>Hello &lt;b&gt;Vera&lt;/b&gt;!</p><p>Code PREVIEW-0000</p>"
        assert vera.text == "Hello <b>Vera</b> (New). Code PREVIEW-0000."


def test_schedules_one_off_and_recurring_in_the_customer_time_zone() -> None:
    after = datetime(2026, 6, 1, tzinfo=UTC)  # a Monday
    weekly = Schedule(cron="0 10 * * 1", timezone="Europe/Moscow")
    assert [t.astimezone(UTC).isoformat() for t in weekly.runs(after=after, count=3)] == [
        "2026-06-01T07:00:00+00:00", "2026-06-08T07:00:00+00:00", "2026-06-15T07:00:00+00:00",
    ]  # fmt: skip
    yearly = Schedule(cron="0 9 8 3 *", end_at=datetime(2028, 1, 1, tzinfo=UTC))
    assert [t.date().isoformat() for t in yearly.runs(after=after, count=5)] == ["2027-03-08"]
    once = Schedule(start_at=AS_OF)
    assert once.runs(after=after, count=3) == [AS_OF]
    assert once.runs(after=datetime(2026, 7, 1, tzinfo=UTC), count=3) == []
    with pytest.raises(ValueError, match="'every monday' is not a cron expression"):
        Schedule(cron="every monday")
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Schedule(timezone="Mars/Olympus")
