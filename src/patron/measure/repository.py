"""All SQL of measurement: one row per frozen-audience customer with what they did."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from patron.models import (
    AnalysisRun,
    CampaignRecipient,
    CustomerScore,
    Message,
    MessageStatus,
    Order,
    OrderKind,
    RecipientGroup,
    RunStatus,
)


class MeasureRepository:
    """Reads a campaign's audience, its messages and the orders that followed."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def outcomes(
        self, campaign_id: int, *, start: datetime, end: datetime
    ) -> list[tuple[Any, ...]]:
        """Treatment and control customers: ``(customer_id, group, wave, revenue,
        purchased, delivered, opened, clicked, unsubscribed, complained)``; revenue is the
        net of orders in ``[start, end)`` (returns subtract), purchased is 1 when one of
        them was a purchase."""
        orders = (
            select(
                Order.customer_id.label("customer_id"),
                func.sum(Order.total).label("revenue"),
                func.max(case((Order.kind == OrderKind.PURCHASE, 1), else_=0)).label("bought"),
            )
            .where(Order.placed_at >= start, Order.placed_at < end, Order.customer_id.is_not(None))
            .group_by(Order.customer_id)
            .subquery()
        )
        sent = Message.status == MessageStatus.SENT
        query = (
            select(
                CampaignRecipient.customer_id,
                CampaignRecipient.group,
                CampaignRecipient.wave,
                func.coalesce(orders.c.revenue, 0),
                func.coalesce(orders.c.bought, 0),
                case((sent, 1), else_=0),
                case((Message.opened_at.is_not(None), 1), else_=0),
                case((Message.clicked_at.is_not(None), 1), else_=0),
                case((Message.unsubscribed_at.is_not(None), 1), else_=0),
                case((Message.complained_at.is_not(None), 1), else_=0),
            )
            .outerjoin(orders, orders.c.customer_id == CampaignRecipient.customer_id)
            .outerjoin(
                Message,
                (Message.campaign_id == CampaignRecipient.campaign_id)
                & (Message.customer_id == CampaignRecipient.customer_id),
            )
            .where(
                CampaignRecipient.campaign_id == campaign_id,
                CampaignRecipient.group != RecipientGroup.EXCLUDED,
            )
            .order_by(CampaignRecipient.customer_id)
        )
        return [tuple(row) for row in self.session.execute(query)]

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
