"""The demo's campaign: a segment, a retention plan with a personal offer and a control
group, sending through a local SMTP server, a simulated response, and the measured result.

The SMTP server is aiosmtpd, started on a free local port; each message it receives is
saved as an ``.eml`` file in the workspace, so the demo shows real email without sending
any. The weeks after the launch are played by :mod:`patron.measure.simulate` (a simulator
whose true uplift is known), writing its orders into the store like any other orders;
then the campaign is measured from the store and the measured effect is printed beside
the true one.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from aiosmtpd.controller import Controller
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from patron.campaigns.schemas import CampaignIn
from patron.campaigns.service import CampaignService
from patron.channels.email import SmtpSettings, SmtpTransport
from patron.dispatch.tasks import WorkerStats, run_worker
from patron.events.repository import OrderRepository
from patron.kit.db import unit_of_work
from patron.kit.settings import get_settings
from patron.measure.report import print_report
from patron.measure.repository import MeasureRepository
from patron.measure.service import CampaignReport, MeasureService
from patron.measure.simulate import ResponseModel, simulate
from patron.models import Campaign, RecipientGroup
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService

SEGMENT = "best customers at risk"
_NAME = "Keep best customers"
SEGMENT_RULE: dict[str, Any] = {
    "all": [
        # the top four of the eleven weekly-spend bands: the customers who bring the profit
        {"kind": "score", "field": "spend_band", "op": "ge", "value": 8},
        {"kind": "score", "field": "churn_risk", "op": "ge", "value": 0.3},
    ]
}
RESPONSE = ResponseModel(lift=0.30, window_days=14, shape=1.5, seed=11)
"""The simulated truth: treatment raises each customer's chance to buy by 30%."""

MESSAGE = {
    "subject": "{{ customer.first_name }}, we miss you: {{ offer.discount_percent }}% off",
    "html": (
        "<html><body><p>Hello {{ customer.first_name }}!</p>"
        "<p>Here is {{ offer.discount_percent }}% off your next visit.</p>"
        "{% if offers %}<p>Picked for you:</p><ul>{% for o in offers[:3] %}"
        "<li>{{ o.item }}</li>{% endfor %}</ul>{% endif %}"
        '<p><a href="https://shop.example.com/offers">See the offers</a></p>'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
    ),
    "text": (
        "Hello {{ customer.first_name }}! Here is {{ offer.discount_percent }}% off your "
        "next visit.{% for o in offers[:3] %}\n - {{ o.item }}{% endfor %}"
    ),
    "sender": "Patron Demo Shop <news@demo-shop.example>",
}


class EmlOutbox:
    """An aiosmtpd handler that saves each message as an ``.eml`` file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.count += 1
        path = self.folder / f"{self.count:06d}.eml"
        path.write_bytes(bytes(envelope.content))
        return "250 Message accepted"


@dataclass(frozen=True)
class CampaignDemo:
    """What the demo campaign did, measured, and the truth it should have found."""

    campaign_id: int
    audience: dict[str, Any]
    worker: WorkerStats
    eml_files: int
    report: CampaignReport
    true_incremental_revenue: float
    true_incremental_conversion: float


def run_campaign_demo(
    factory: sessionmaker[Session], *, console: Console, workspace: Path, as_of: datetime
) -> CampaignDemo:
    """Plan, send, simulate the response and measure; print as it goes."""
    with unit_of_work(factory) as session:
        segments = SegmentService(session)
        if segments.repo.by_name(SEGMENT) is None:
            segments.create(
                SegmentIn(name=SEGMENT, description="Top spenders likely to leave",
                          rule=parse_rule(SEGMENT_RULE)),
                actor="demo",
            )  # fmt: skip
        service = CampaignService(session)
        earlier = [c for c in service.listing(limit=1000) if c.name.startswith(_NAME)]
        # each demo run measures its own fortnight, after the earlier runs' windows
        launch = as_of + timedelta(days=(RESPONSE.window_days + 1) * len(earlier))
        campaign = service.create(_plan(len(earlier) + 1), actor="demo")
        service.launch(campaign.id, actor="demo", at=launch)
        campaign_id, audience = campaign.id, dict(campaign.audience)
    left_out = ", ".join(f"{k} {v:,}" for k, v in audience["excluded"].items() if v)
    console.print(
        f"campaign {campaign_id} launched on segment {SEGMENT!r}: {audience['selected']:,} "
        f"selected, {audience['treatment']:,} to message, {audience['control']:,} held out "
        f"as control; left out: {left_out or 'none'}"
    )

    outbox = workspace / "outbox" / f"campaign-{campaign_id}"
    outbox.mkdir(parents=True, exist_ok=True)
    handler = EmlOutbox(outbox)
    port = free_port()
    server = Controller(handler, hostname="127.0.0.1", port=port)
    server.start()
    try:
        transport = SmtpTransport(SmtpSettings(host="127.0.0.1", port=port, connections=2))
        stats = run_worker(factory, transport, settings=get_settings(), until_idle=True)
    finally:
        server.stop()
    console.print(
        f"sent {stats.sent:,} messages through a local SMTP server, saved as .eml files in "
        f"{outbox} ({stats.skipped:,} skipped, {stats.failed:,} failed)"
    )

    with unit_of_work(factory) as session:
        truth = _respond(session, campaign_id, launch)
    with unit_of_work(factory) as session:
        found = CampaignService(session).get(campaign_id)
        end = launch + timedelta(days=found.attribution_days)
        report = MeasureService(session).report(found, now=end)
        currency, control_share = found.currency, found.control_share
    console.print(
        f"simulated the {RESPONSE.window_days} days after the launch: treatment raises each "
        f"customer's chance to buy by {RESPONSE.lift:.0%} (a simulator, not real customers)"
    )
    print_report(console, report, currency=currency)
    measured = report.effects[0].incremental_revenue if report.effects else None
    inside = (
        measured is not None and measured.low is not None and measured.high is not None
        and measured.low <= truth[0] <= measured.high
    )  # fmt: skip
    console.print(
        f"the simulator's true effect: {truth[0]:+,.0f} {currency} incremental revenue, "
        f"{truth[1] * 100:+.2f} pp conversion; "
        + ("inside" if inside else "OUTSIDE")
        + f" the measured 95% interval (control group {control_share:.0%})"
    )
    return CampaignDemo(
        campaign_id=campaign_id,
        audience=audience,
        worker=stats,
        eml_files=handler.count,
        report=report,
        true_incremental_revenue=truth[0],
        true_incremental_conversion=truth[1],
    )


def _plan(number: int) -> CampaignIn:
    return CampaignIn.model_validate(
        {
            "name": f"{_NAME} #{number}",
            "goal": "Keep top spenders who are likely to leave buying",
            "kind": "retention",
            "content_type": "bonus",
            "segment": SEGMENT,
            "channel": "email",
            "offer": {"kind": "discount", "discount_percent": "15", "cost": "150.00"},
            "message": MESSAGE,
            "budget": "50000.00",
            "kpi": {"metric": "incremental_revenue", "expected": "30000"},
            "control_share": 0.10,
            "attribution_days": RESPONSE.window_days,
            "cost_per_message": "0.50",
            "margin_rate": "0.30",
        }
    )


def _respond(session: Session, campaign_id: int, launch: datetime) -> tuple[float, float]:
    """Simulate the audience's orders in the window and store them; returns the true
    incremental revenue (total over the treated) and conversion (per treated customer)."""
    campaign = session.get(Campaign, campaign_id)
    assert campaign is not None
    audience = MeasureRepository(session).audience_scores(campaign_id, until=launch)
    ids = [row[0] for row in audience]
    treated = np.array([row[1] == RecipientGroup.TREATMENT.value for row in audience])

    def column(position: int, fallback: float) -> Any:
        return np.array([fallback if row[position] is None else float(row[position])
                         for row in audience])  # fmt: skip

    p_alive = column(2, 0.5)
    yearly = column(3, 4.0)
    spend = np.maximum(column(4, 1000.0), 50.0)
    sim = simulate(treated, p_alive=p_alive, yearly_purchases=yearly, mean_spend=spend,
                   model=RESPONSE)  # fmt: skip
    rng = np.random.default_rng(RESPONSE.seed + 1)
    offsets = rng.uniform(0, RESPONSE.window_days * 86_400 - 1, len(ids))
    rows = [
        {
            "customer_id": customer,
            "source": "demo-response",
            "external_id": f"c{campaign_id}-{customer}",
            "kind": "purchase",
            "placed_at": launch + timedelta(seconds=float(offset)),
            "total": Decimal(str(amount)),
            "currency": campaign.currency,
        }
        for customer, bought, amount, offset in zip(
            ids, sim.bought, sim.spend, offsets, strict=True
        )
        if bought
    ]
    OrderRepository(session).insert_orders(rows)
    return (
        sim.true_incremental_revenue_per_customer * int(treated.sum()),
        sim.true_incremental_conversion,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
