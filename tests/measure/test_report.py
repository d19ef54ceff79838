"""A campaign report from the store: exact group figures, effects, cost, ROI and KPI."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.service import CampaignService
from patron.events.repository import OrderRepository
from patron.kit.db import bulk_insert, table_of
from patron.measure.service import MeasureService
from patron.measure.stats import welch
from patron.models import (
    CampaignRecipient,
    Channel,
    Consent,
    ConsentStatus,
    Customer,
    Identity,
    IdentityKind,
    Message,
    MessageStatus,
    RecipientGroup,
    Role,
)
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.fixtures.api import Headers, api_client, auth_headers
from tests.fixtures.segments import AS_OF, at

__all__ = ["api_client", "auth_headers"]

PEOPLE = 400


@pytest.fixture
def measured(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """400 subscribers; a campaign with a 25% control launched at AS_OF and sent; every
    customer whose id is divisible by 3 buys for id x 10 within the window, treated ones
    also by 7 (one more purchase), and one treated buyer returns 50 later in the window."""
    with session_factory() as session:
        ids = range(1, PEOPLE + 1)
        bulk_insert(session, table_of(Customer), [{"id": i, "first_name": f"P{i}"} for i in ids])
        bulk_insert(session, table_of(Identity), [
            {"customer_id": i, "kind": IdentityKind.EMAIL, "namespace": "",
             "value": f"p{i}@example.com", "raw_value": f"p{i}@example.com",
             "verified": False, "source": "t"} for i in ids])  # fmt: skip
        bulk_insert(session, table_of(Consent), [
            {"customer_id": i, "origin_customer_id": i, "channel": Channel.EMAIL,
             "status": ConsentStatus.GRANTED, "source": "t",
             "decided_at": at("2026-01-01 00:00")} for i in ids])  # fmt: skip
        SegmentService(session).create(
            SegmentIn(name="all", rule=parse_rule({"kind": "consent", "channel": "email"})),
            actor="t",
        )
        service = CampaignService(session)
        campaign = service.create(
            plan(segment="all", control_share=0.25, cost_per_message="1.00",
                 offer={"kind": "discount", "discount_percent": "10", "cost": "5.00"},
                 kpi={"metric": "incremental_revenue", "expected": "500"}),
            actor="t",
        )  # fmt: skip
        service.launch(campaign.id, actor="t", at=AS_OF)
        session.execute(
            Message.__table__.update().values(status=MessageStatus.SENT)  # type: ignore[attr-defined]
        )
        groups = dict(
            session.execute(select(CampaignRecipient.customer_id, CampaignRecipient.group)).all()
        )
        rows = []
        for i in ids:
            treated = groups[i] is RecipientGroup.TREATMENT
            buys = (i % 3 == 0) or (treated and i % 7 == 0)
            if buys:
                rows.append({"customer_id": i, "source": "t", "external_id": f"o{i}",
                             "kind": "purchase", "placed_at": AS_OF + timedelta(days=2),
                             "total": Decimal(i * 10), "currency": "RUB"})  # fmt: skip
        # outside the window: ignored
        rows.append({"customer_id": 3, "source": "t", "external_id": "late", "kind": "purchase",
                     "placed_at": AS_OF + timedelta(days=14), "total": Decimal(999),
                     "currency": "RUB"})  # fmt: skip
        rows.append({"customer_id": 6, "source": "t", "external_id": "r6", "kind": "return",
                     "placed_at": AS_OF + timedelta(days=5), "total": Decimal(-50),
                     "currency": "RUB"})  # fmt: skip
        OrderRepository(session).insert_orders(rows)
        session.commit()
    return session_factory


def test_the_report_compares_treatment_with_control_exactly(
    measured: sessionmaker[Session],
) -> None:
    with measured() as session:
        campaign = CampaignService(session).get(1)
        report = MeasureService(session).report(campaign, now=AS_OF + timedelta(days=20))
        groups = dict(
            session.execute(select(CampaignRecipient.customer_id, CampaignRecipient.group)).all()
        )
    ids = np.arange(1, PEOPLE + 1)
    treated = np.array([groups[int(i)] is RecipientGroup.TREATMENT for i in ids])
    bought = (ids % 3 == 0) | (treated & (ids % 7 == 0))
    revenue = np.where(bought, ids * 10.0, 0.0) - np.where(ids == 6, 50.0, 0.0)
    n_t, n_c = int(treated.sum()), int((~treated).sum())
    assert (n_t, n_c) == (campaign.audience["treatment"], campaign.audience["control"])

    treatment, control = report.groups
    assert (treatment.group, treatment.customers, treatment.delivered) == ("treatment", n_t, n_t)
    assert (control.group, control.customers, control.delivered) == ("control", n_c, 0)
    assert treatment.converted == int(bought[treated].sum())
    assert control.converted == int(bought[~treated].sum())
    assert treatment.revenue == Decimal(str(revenue[treated].sum())).quantize(Decimal("0.01"))
    assert control.revenue_per_customer == Decimal(
        str(round(revenue[~treated].sum() / n_c, 2))
    ).quantize(Decimal("0.01"))

    effect = report.effects[0]
    expected = welch(revenue[treated], revenue[~treated])
    assert effect.incremental_revenue_per_customer.estimate == round(expected.estimate, 6)
    assert effect.incremental_revenue_per_customer.low == round(expected.low or 0, 6)
    assert effect.incremental_revenue.estimate == round(expected.estimate * n_t, 6)
    conversion = welch(bought[treated], bought[~treated])
    assert effect.incremental_conversion.estimate == round(conversion.estimate, 6)

    # cost: a rouble a message, 5 for every treated buyer; profit at 30% margin
    assert report.cost.message_cost == Decimal(n_t)
    assert report.cost.incentives == Decimal(5 * int(bought[treated].sum()))
    gained = Decimal(str(round(expected.estimate * n_t, 6))).quantize(Decimal("0.01"))
    profit = (gained * Decimal("0.30") - report.cost.total).quantize(Decimal("0.01"))
    assert report.incremental_profit == profit
    assert report.roi == round(float(profit / report.cost.total), 4)
    assert report.kpi.metric == "incremental_revenue" and report.kpi.expected == Decimal(500)
    assert report.kpi.met == (Decimal(str(round(expected.estimate * n_t, 6))) >= 500)
    assert report.window_closed and report.method.startswith("Welch")


def test_report_over_the_api(
    measured: sessionmaker[Session], api: TestClient, auth: dict[Role, Headers]
) -> None:
    found = api.get("/campaigns/1/report", headers=auth[Role.ANALYST])
    assert found.status_code == 200, found.text
    body = found.json()
    assert [g["group"] for g in body["groups"]] == ["treatment", "control"]
    assert body["effects"][0]["group"] == "treatment"
    assert set(body["cost"]) == {
        "messages", "cost_per_message", "message_cost", "incentives", "incentive_basis", "total"
    }  # fmt: skip
    assert (
        body["cost"]["incentive_basis"] == "the offer's cost for each treated customer who bought"
    )
