"""What a campaign truly earned: treatment against its control group.

Everything is read from the store: the frozen audience (who was treated, who was held
out), the messages and their feedback, and the orders in the attribution window, from the
launch for ``attribution_days``. Customers who were left out (no consent, suppressed...)
are in neither group. The effect is the difference of means between treatment and
control, with Welch's 95% intervals (:mod:`patron.measure.stats`); totals scale it by the
treated count. Cost is the messages sent times the cost per message, plus the incentives:
the discounts the campaign's coupons gave at the tills where they were redeemed there,
else the offer's cost for every treated customer who bought.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy.orm import Session

from patron.campaigns.schemas import Kpi, Offer
from patron.kit.clock import utcnow
from patron.loyalty.coupons import CouponService
from patron.measure.repository import MeasureRepository
from patron.measure.stats import Difference, welch
from patron.models import Campaign, CampaignStatus, OrderKind

_CENT = Decimal("0.01")


def money(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(_CENT, rounding=ROUND_HALF_UP)


class GroupStats(BaseModel):
    """One group of the audience."""

    group: str
    customers: int
    delivered: int
    opened: int
    clicked: int
    converted: int
    conversion_rate: float
    revenue: Decimal
    revenue_per_customer: Decimal
    unsubscribed: int
    complained: int
    unsubscribe_rate: float
    complaint_rate: float


class Interval(BaseModel):
    """An estimate with its 95% confidence interval (None where it cannot be computed)."""

    estimate: float
    low: float | None
    high: float | None
    p_value: float | None


class Effect(BaseModel):
    """A treated group against the control group."""

    group: str
    incremental_conversion: Interval
    """Difference of conversion rates (a share)."""
    incremental_revenue_per_customer: Interval
    incremental_conversions: float
    incremental_revenue: Interval
    """Per-customer difference times the group's size, in money."""


class CostOut(BaseModel):
    messages: int
    cost_per_message: Decimal
    message_cost: Decimal
    incentives: Decimal
    incentive_basis: str
    total: Decimal


class KpiOut(BaseModel):
    metric: str
    expected: Decimal
    actual: Decimal | None
    met: bool | None


class CampaignReport(BaseModel):
    """The measured result of a campaign."""

    campaign_id: int
    name: str
    status: str
    window_start: datetime | None
    window_end: datetime | None
    window_closed: bool
    window_basis: str
    method: str
    groups: list[GroupStats]
    effects: list[Effect]
    cost: CostOut
    incremental_profit: Decimal | None
    roi: float | None
    kpi: KpiOut


class MeasureService:
    """Campaign reports on one session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.repo = MeasureRepository(session)

    def report(self, campaign: Campaign, *, now: datetime | None = None) -> CampaignReport:
        """Measure a launched campaign (a draft has nothing to measure yet)."""
        moment = now or utcnow()
        start = campaign.launched_at
        days = timedelta(days=campaign.attribution_days)
        end = start + days if start else None
        closed = bool(end and moment >= end)
        window_basis = f"from the launch, {campaign.attribution_days} days"
        starts: list[tuple[int, datetime]] = []
        if campaign.trigger:
            # customers enter one by one: each entry opens its own window, the control
            # group's entries as well, so both groups are measured over the same spells
            starts = self.repo.entry_starts(campaign.id)
            end = max(at for _, at in starts) + days if starts else None
            closed = bool(end and moment >= end) and campaign.status not in _OPEN
            window_basis = f"from each entry, {campaign.attribution_days} days"
        rows = self.repo.outcomes(campaign.id, start=start, end=end,
                                  orders=not campaign.trigger) if start and end else []  # fmt: skip
        if starts:
            first = min(at for _, at in starts)
            placed = self.repo.orders_of([c for c, _ in starts], start=first, end=end or first)
            rows = _windowed(rows, starts, placed, days)
        data = _columns(rows)
        groups: list[GroupStats] = []
        effects: list[Effect] = []
        control = data["group"] == "control"
        treated = data["group"] == "treatment"
        selections = [("treatment", treated)]
        waves = sorted({int(w) for w in data["wave"][treated]}) if treated.any() else []
        if len(waves) > 1:
            selections += [(f"treatment wave {w}", treated & (data["wave"] == w)) for w in waves]
        for label, mask in [*selections, ("control", control)]:
            groups.append(_group(label, data, mask))
        for label, mask in selections:
            effects.append(_effect(label, data, mask, control))

        offer = Offer.model_validate(campaign.offer)
        sent = self.repo.messages_sent(campaign.id)  # a journey sends a customer several
        message_cost = money(campaign.cost_per_message * sent)
        redeemed = CouponService(self.session).campaign_redemptions(campaign.id)
        if redeemed:
            # the tills told what each code gave: the real incentive, not an estimate
            incentives = money(sum(redeemed.values(), Decimal(0)))
            basis = f"coupon redemptions at the tills ({len(redeemed):,} customers)"
        else:
            incentives = money(offer.cost * int(data["bought"][treated].sum()))
            basis = "the offer's cost for each treated customer who bought"
        total_cost = money(message_cost + incentives)
        overall = effects[0] if effects else None
        profit: Decimal | None = None
        roi: float | None = None
        if overall is not None and not np.isnan(overall.incremental_revenue.estimate):
            gained = money(overall.incremental_revenue.estimate) * campaign.margin_rate
            profit = money(gained - total_cost)
            roi = round(float(profit / total_cost), 4) if total_cost > 0 else None
        kpi = Kpi.model_validate(campaign.kpi)
        actual = _kpi_value(kpi.metric, groups, overall, roi)
        return CampaignReport(
            campaign_id=campaign.id,
            name=campaign.name,
            status=campaign.status.value,
            window_start=start,
            window_end=end,
            window_closed=closed,
            window_basis=window_basis,
            method="Welch's unequal-variances t interval, 95%",
            groups=groups,
            effects=effects,
            cost=CostOut(
                messages=sent,
                cost_per_message=campaign.cost_per_message,
                message_cost=message_cost,
                incentives=incentives,
                incentive_basis=basis,
                total=total_cost,
            ),
            incremental_profit=profit,
            roi=roi,
            kpi=KpiOut(
                metric=kpi.metric,
                expected=kpi.expected,
                actual=actual,
                met=None if actual is None else actual >= kpi.expected,
            ),
        )


_OPEN = (CampaignStatus.RUNNING, CampaignStatus.PAUSED)
"""A triggered campaign in these states may still admit customers: its window is open."""


def _windowed(
    rows: list[tuple[Any, ...]],
    starts: list[tuple[int, datetime]],
    placed: list[tuple[int, datetime, Decimal, OrderKind]],
    days: timedelta,
) -> list[tuple[Any, ...]]:
    """Put each customer's revenue and purchase flag from the orders inside one of their
    entries' windows (``[entered, entered + days)``) into their outcome rows; an order in
    two overlapping windows counts once."""
    opened: dict[int, list[datetime]] = {}
    for customer, at in starts:
        opened.setdefault(customer, []).append(at)  # in time order, by the query
    revenue: dict[int, Decimal] = {}
    bought: dict[int, int] = {}
    for customer, at, total, kind in placed:
        entries = opened.get(customer, [])
        latest = bisect.bisect_right(entries, at) - 1
        if latest < 0 or at >= entries[latest] + days:
            continue
        revenue[customer] = revenue.get(customer, Decimal(0)) + total
        if kind is OrderKind.PURCHASE:
            bought[customer] = 1
    return [
        (row[0], row[1], row[2], revenue.get(row[0], Decimal(0)), bought.get(row[0], 0), *row[5:])
        for row in rows
    ]


_FIELDS = (
    "customer", "group", "wave", "revenue", "bought", "delivered", "opened", "clicked",
    "unsubscribed", "complained",
)  # fmt: skip


def _columns(rows: list[tuple[Any, ...]]) -> dict[str, np.ndarray[Any, Any]]:
    if not rows:
        return {name: np.array([]) for name in _FIELDS}
    columns = list(zip(*rows, strict=True))
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, values in zip(_FIELDS, columns, strict=True):
        if name == "group":
            out[name] = np.array([str(getattr(v, "value", v)) for v in values])
        elif name == "wave":
            out[name] = np.array([-1 if v is None else int(v) for v in values])
        else:
            out[name] = np.array([float(v) for v in values], dtype=np.float64)
    return out


def _group(label: str, data: dict[str, np.ndarray[Any, Any]], mask: Any) -> GroupStats:
    n = int(mask.sum())
    revenue = money(float(data["revenue"][mask].sum())) if n else money(0)
    converted = int(data["bought"][mask].sum()) if n else 0
    delivered = int(data["delivered"][mask].sum()) if n else 0

    def count(name: str) -> int:
        return int(data[name][mask].sum()) if n else 0

    return GroupStats(
        group=label,
        customers=n,
        delivered=delivered,
        opened=count("opened"),
        clicked=count("clicked"),
        converted=converted,
        conversion_rate=round(converted / n, 6) if n else 0.0,
        revenue=revenue,
        revenue_per_customer=money(revenue / n) if n else money(0),
        unsubscribed=count("unsubscribed"),
        complained=count("complained"),
        unsubscribe_rate=round(count("unsubscribed") / delivered, 6) if delivered else 0.0,
        complaint_rate=round(count("complained") / delivered, 6) if delivered else 0.0,
    )


def _interval(difference: Difference, scale: float = 1.0) -> Interval:
    def scaled(value: float | None) -> float | None:
        return None if value is None else round(value * scale, 6)

    return Interval(
        estimate=round(difference.estimate * scale, 6),
        low=scaled(difference.low),
        high=scaled(difference.high),
        p_value=None if difference.p_value is None else round(difference.p_value, 6),
    )


def _effect(label: str, data: dict[str, np.ndarray[Any, Any]], mask: Any, control: Any) -> Effect:
    n = int(mask.sum())
    conversion = welch(data["bought"][mask], data["bought"][control])
    revenue = welch(data["revenue"][mask], data["revenue"][control])
    return Effect(
        group=label,
        incremental_conversion=_interval(conversion),
        incremental_revenue_per_customer=_interval(revenue),
        incremental_conversions=round(conversion.estimate * n, 3),
        incremental_revenue=_interval(revenue, scale=n),
    )


def _kpi_value(
    metric: str, groups: list[GroupStats], overall: Effect | None, roi: float | None
) -> Decimal | None:
    if not groups or overall is None:
        return None
    treatment = groups[0]
    values: dict[str, float | Decimal | None] = {
        "conversion_rate": treatment.conversion_rate,
        "incremental_conversion": overall.incremental_conversion.estimate,
        "revenue_per_customer": treatment.revenue_per_customer,
        "incremental_revenue": overall.incremental_revenue.estimate,
        "roi": roi,
    }
    value = values[metric]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return Decimal(str(round(float(value), 6)))
