"""SQL of the web interface: accounts, the audit log, background jobs, and the dashboard's
figures."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from patron.models import (
    AuditRecord,
    Campaign,
    CampaignStatus,
    Customer,
    Event,
    Job,
    Message,
    Order,
    OrderKind,
    User,
)


class WebRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def user(self, username: str) -> User | None:
        return self.session.scalar(select(User).where(User.username == username))

    def add(self, row: Any) -> None:
        self.session.add(row)
        self.session.flush()

    def job(self, job_id: str) -> Job | None:
        return self.session.get(Job, job_id)

    def recent_jobs(self, *, limit: int) -> Sequence[Job]:
        return self.session.scalars(
            select(Job).order_by(Job.started_at.desc(), Job.id).limit(limit)
        ).all()

    def update_job(self, job_id: str, **values: Any) -> None:
        """Write some of a job's columns without loading it: progress, heartbeat, outcome."""
        self.session.execute(update(Job).where(Job.id == job_id).values(**values))

    def audit(self, *, limit: int) -> Sequence[AuditRecord]:
        return self.session.scalars(
            select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
        ).all()

    def customer_count(self) -> int:
        query = select(func.count()).select_from(Customer).where(Customer.merged_into_id.is_(None))
        return int(self.session.scalar(query) or 0)

    def revenue(self) -> tuple[Decimal, Decimal]:
        """Net turnover (returns netted off) of known customers, and of guests."""
        rows = self.session.execute(
            select(Order.customer_id.is_(None), func.coalesce(func.sum(Order.total), 0))
            .where(Order.kind.in_([OrderKind.PURCHASE, OrderKind.RETURN]))
            .group_by(Order.customer_id.is_(None))
        )
        known, guest = Decimal("0.00"), Decimal("0.00")
        for is_guest, total in rows:
            if is_guest:
                guest = Decimal(total)
            else:
                known = Decimal(total)
        return known, guest

    def live_campaigns(self) -> list[tuple[Campaign, dict[str, int]]]:
        campaigns = self.session.scalars(
            select(Campaign)
            .where(Campaign.status.in_([CampaignStatus.RUNNING, CampaignStatus.PAUSED]))
            .order_by(Campaign.id)
        ).all()
        found: list[tuple[Campaign, dict[str, int]]] = []
        for campaign in campaigns:
            rows = self.session.execute(
                select(Message.status, func.count())
                .where(Message.campaign_id == campaign.id)
                .group_by(Message.status)
            )
            found.append((campaign, {str(getattr(s, "value", s)): int(n) for s, n in rows}))
        return found

    def orders_of(self, customer_id: int, *, limit: int) -> Sequence[Order]:
        return self.session.scalars(
            select(Order)
            .where(Order.customer_id == customer_id)
            .order_by(Order.placed_at.desc())
            .limit(limit)
        ).all()

    def events_of(self, customer_id: int, *, limit: int) -> Sequence[Event]:
        return self.session.scalars(
            select(Event)
            .where(Event.customer_id == customer_id)
            .order_by(Event.occurred_at.desc())
            .limit(limit)
        ).all()

    def messages_of(self, customer_id: int, *, limit: int) -> Sequence[tuple[Message, str]]:
        rows = self.session.execute(
            select(Message, Campaign.name)
            .join(Campaign, Campaign.id == Message.campaign_id)
            .where(Message.customer_id == customer_id)
            .order_by(Message.id.desc())
            .limit(limit)
        )
        return [(m, str(n)) for m, n in rows]
