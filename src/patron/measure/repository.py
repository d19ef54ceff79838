"""All SQL of measurement: one row per frozen-audience customer with what they did."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, literal, select
from sqlalchemy.orm import Session

from patron.customers.repository import chunks
from patron.models import (
    AnalysisRun,
    CampaignRecipient,
    CustomerScore,
    JourneyEntry,
    Message,
    MessageStatus,
    Order,
    OrderKind,
    RecipientGroup,
    RunStatus,
)

_FLAGS = ("sent", "opened", "clicked", "unsubscribed", "complained")


class MeasureRepository:
    """Reads a campaign's audience, its messages and the orders that followed."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def outcomes(
        self, campaign_id: int, *, start: datetime, end: datetime, orders: bool = True
    ) -> list[tuple[Any, ...]]:
        """Treatment and control customers, one row each: ``(customer_id, group, wave,
        revenue, purchased, delivered, opened, clicked, unsubscribed, complained)``; revenue
        is the net of orders in ``[start, end)`` (returns subtract), purchased is 1 when
        one of them was a purchase (both 0 without ``orders``, for a caller that windows
        orders itself). A message flag is 1 when any of the customer's messages in the
        campaign has it (a journey sends several)."""
        window = (
            select(
                Order.customer_id.label("customer_id"),
                func.sum(Order.total).label("revenue"),
                func.max(case((Order.kind == OrderKind.PURCHASE, 1), else_=0)).label("bought"),
            )
            .where(Order.placed_at >= start, Order.placed_at < end, Order.customer_id.is_not(None))
            .group_by(Order.customer_id)
            .subquery()
        )

        def flag(condition: Any, name: str) -> Any:
            return func.max(case((condition, 1), else_=0)).label(name)

        messages = (
            select(
                Message.customer_id.label("customer_id"),
                flag(Message.status == MessageStatus.SENT, "sent"),
                flag(Message.opened_at.is_not(None), "opened"),
                flag(Message.clicked_at.is_not(None), "clicked"),
                flag(Message.unsubscribed_at.is_not(None), "unsubscribed"),
                flag(Message.complained_at.is_not(None), "complained"),
            )
            .where(Message.campaign_id == campaign_id)
            .group_by(Message.customer_id)
            .subquery()
        )
        revenue: Any = func.coalesce(window.c.revenue, 0) if orders else literal(0)
        bought: Any = func.coalesce(window.c.bought, 0) if orders else literal(0)
        query = select(
            CampaignRecipient.customer_id,
            CampaignRecipient.group,
            CampaignRecipient.wave,
            revenue,
            bought,
            *(func.coalesce(messages.c[name], 0) for name in _FLAGS),
        ).outerjoin(messages, messages.c.customer_id == CampaignRecipient.customer_id)
        if orders:
            query = query.outerjoin(window, window.c.customer_id == CampaignRecipient.customer_id)
        query = query.where(
            CampaignRecipient.campaign_id == campaign_id,
            CampaignRecipient.group != RecipientGroup.EXCLUDED,
        ).order_by(CampaignRecipient.customer_id)
        return [tuple(row) for row in self.session.execute(query)]

    def entry_starts(self, campaign_id: int) -> list[tuple[int, datetime]]:
        """``(customer_id, entered_at)`` of every entry of a triggered campaign, treated or
        held out, by customer and time: where each entry's measurement window opens."""
        rows = self.session.execute(
            select(JourneyEntry.customer_id, JourneyEntry.entered_at)
            .where(JourneyEntry.campaign_id == campaign_id)
            .order_by(JourneyEntry.customer_id, JourneyEntry.entered_at)
        )
        return [(int(c), at) for c, at in rows]

    def orders_of(
        self, customers: Sequence[int], *, start: datetime, end: datetime
    ) -> list[tuple[int, datetime, Decimal, OrderKind]]:
        """``(customer_id, placed_at, total, kind)`` of these customers' orders placed in
        ``[start, end)``."""
        found: list[tuple[int, datetime, Decimal, OrderKind]] = []
        for part in chunks(sorted(set(customers))):
            rows = self.session.execute(
                select(Order.customer_id, Order.placed_at, Order.total, Order.kind).where(
                    Order.customer_id.in_(part), Order.placed_at >= start, Order.placed_at < end
                )
            )
            found += [(int(c or 0), at, Decimal(t), OrderKind(k)) for c, at, t, k in rows]
        return found

    def audience_scores(self, campaign_id: int, *, until: datetime) -> list[tuple[Any, ...]]:
        """Treatment and control customers with the P(alive), expected purchases and
        expected spend of the newest completed analysis up to ``until``:
        ``(customer_id, group, p_alive, expected_purchases, expected_spend)``."""
        run = (
            select(AnalysisRun.id)
            .where(AnalysisRun.status == RunStatus.COMPLETED, AnalysisRun.as_of <= until)
            .order_by(AnalysisRun.as_of.desc(), AnalysisRun.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        query = (
            select(
                CampaignRecipient.customer_id,
                CampaignRecipient.group,
                CustomerScore.p_alive,
                CustomerScore.expected_purchases,
                CustomerScore.expected_spend,
            )
            .outerjoin(
                CustomerScore,
                (CustomerScore.customer_id == CampaignRecipient.customer_id)
                & (CustomerScore.run_id == run),
            )
            .where(
                CampaignRecipient.campaign_id == campaign_id,
                CampaignRecipient.group != RecipientGroup.EXCLUDED,
            )
            .order_by(CampaignRecipient.customer_id)
        )
        return [
            (c, str(getattr(g, "value", g)), a, e, s)
            for c, g, a, e, s in self.session.execute(query)
        ]

    def messages_sent(self, campaign_id: int) -> int:
        query = (
            select(func.count())
            .select_from(Message)
            .where(Message.campaign_id == campaign_id, Message.status == MessageStatus.SENT)
        )
        return int(self.session.scalar(query) or 0)
