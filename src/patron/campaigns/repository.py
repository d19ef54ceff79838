"""All SQL of the campaigns domain: plans, the audit trail, suppressions and the audience.

Freezing an audience is one query over the whole selection: for every customer the
segment rule selects, the first reason (if any) to leave them out, found in the database.
The caller splits the rest into treatment and control and writes every row back in bulk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, or_, select, update
from sqlalchemy.orm import Session

from patron.kit.db import bulk_insert_columns, table_of
from patron.models import (
    Campaign,
    CampaignChange,
    CampaignRecipient,
    CampaignStatus,
    Channel,
    Customer,
    Identity,
    Message,
    MessageStatus,
    Suppression,
)
from patron.segments.repository import ACTIVE

ADDRESS_KIND: dict[Channel, str] = {
    Channel.EMAIL: "email",
    Channel.SMS: "phone",
    Channel.PHONE: "phone",
    Channel.TELEGRAM: "telegram",
    Channel.WHATSAPP: "phone",
}
"""The identity a channel sends to; push subscriptions come with web push."""

REASONS = ("no_address", "no_consent", "suppressed", "frequency_cap")
"""Why a selected customer is left out, in the order they are tested."""


class CampaignRepository:
    """Campaign rows, their trail and audiences, in one session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, campaign: Campaign) -> Campaign:
        self.session.add(campaign)
        self.session.flush()
        return campaign

    def get(self, campaign_id: int) -> Campaign | None:
        return self.session.get(Campaign, campaign_id)

    def by_name(self, name: str) -> Campaign | None:
        return self.session.scalar(select(Campaign).where(Campaign.name == name))

    def by_names(self, names: Sequence[str]) -> list[Campaign]:
        """The campaigns of these names, in the order given; names not found are left out."""
        found = {
            c.name: c
            for c in self.session.scalars(select(Campaign).where(Campaign.name.in_(names)))
        }
        return [found[n] for n in names if n in found]

    def listing(self, *, status: str | None, limit: int, offset: int) -> Sequence[Campaign]:
        query = select(Campaign).order_by(Campaign.id.desc()).limit(limit).offset(offset)
        if status is not None:
            query = query.where(Campaign.status == status)
        return self.session.scalars(query).all()

    def due(self, *, now: datetime) -> list[int]:
        """Scheduled campaigns whose next run has come, the longest waiting first."""
        query = (
            select(Campaign.id)
            .where(Campaign.status == CampaignStatus.SCHEDULED, Campaign.next_run_at <= now)
            .order_by(Campaign.next_run_at, Campaign.id)
        )
        return list(self.session.scalars(query))

    def take_run(self, campaign_id: int, *, expected: datetime, following: datetime | None) -> bool:
        """Move a campaign's next run on, if no other scheduler did it first.

        The compare-and-set is the claim: two schedulers seeing the same due run both try,
        and only the one whose update finds the old time starts it."""
        moved = self.session.execute(
            update(Campaign)
            .where(
                Campaign.id == campaign_id,
                Campaign.status == CampaignStatus.SCHEDULED,
                Campaign.next_run_at == expected,
            )
            .values(next_run_at=following)
            .execution_options(synchronize_session=False)
        )
        return bool(moved.rowcount)  # type: ignore[attr-defined]

    def runs_of(self, parent_id: int) -> Sequence[Campaign]:
        """A recurring campaign's runs, oldest first."""
        return self.session.scalars(
            select(Campaign).where(Campaign.parent_id == parent_id).order_by(Campaign.id)
        ).all()

    def record(
        self, campaign: Campaign, *, actor: str, action: str, changes: dict[str, Any]
    ) -> None:
        """Append to the audit trail."""
        self.session.add(
            CampaignChange(campaign_id=campaign.id, actor=actor, action=action, changes=changes)
        )

    def trail(self, campaign_id: int) -> Sequence[CampaignChange]:
        return self.session.scalars(
            select(CampaignChange)
            .where(CampaignChange.campaign_id == campaign_id)
            .order_by(CampaignChange.at, CampaignChange.id)
        ).all()

    # -- suppressions ------------------------------------------------------------------------

    def suppress(self, customer_id: int, channel: Channel, *, reason: str) -> Suppression:
        """Suppress a customer on a channel, unless they are already."""
        found = self.session.scalar(
            select(Suppression).where(
                Suppression.customer_id == customer_id,
                Suppression.channel == channel,
                Suppression.lifted_at.is_(None),
            )
        )
        if found is not None:
            return found
        row = Suppression(customer_id=customer_id, channel=channel, reason=reason)
        self.session.add(row)
        self.session.flush()
        return row

    # -- audience ----------------------------------------------------------------------------

    def screen(
        self,
        selected: ColumnElement[bool],
        *,
        channel: Channel,
        consented: ColumnElement[bool],
        cap_messages: int,
        cap_since: datetime,
        cap_all_channels: int | None = None,
    ) -> list[tuple[int, str | None]]:
        """Every selected customer with the first reason to leave them out, or None."""
        kind = ADDRESS_KIND.get(channel)
        has_address = (
            Customer.id.in_(select(Identity.customer_id).where(Identity.kind == kind))
            if kind is not None
            else literal(True)
        )
        suppressed = Customer.id.in_(
            select(Suppression.customer_id).where(
                Suppression.channel == channel, Suppression.lifted_at.is_(None)
            )
        )
        # the cap counts marketing messages made (on their way or sent), as a journey's
        # send step does: one campaign can send a customer several (a journey's steps)
        counted = (
            Message.created_at >= cap_since,
            Message.capped.is_(True),
            Message.status.not_in([MessageStatus.SKIPPED, MessageStatus.FAILED]),
        )
        recent = (
            select(Message.customer_id)
            .where(*counted, Message.channel == channel)
            .group_by(Message.customer_id)
            .having(func.count() >= cap_messages)
        )
        capped: ColumnElement[bool] = Customer.id.in_(recent)
        if cap_all_channels is not None:
            # the customer's whole inbox counts too: three emails and three SMS in a week
            # are six messages, whatever each channel's own cap says
            everywhere = (
                select(Message.customer_id)
                .where(*counted)
                .group_by(Message.customer_id)
                .having(func.count() >= cap_all_channels)
            )
            capped = or_(capped, Customer.id.in_(everywhere))
        reason = case(
            (~has_address, "no_address"),
            (~consented, "no_consent"),
            (suppressed, "suppressed"),
            (capped, "frequency_cap"),
            else_=None,
        )
        query = select(Customer.id, reason).where(ACTIVE, selected).order_by(Customer.id)
        return [(int(c), r) for c, r in self.session.execute(query)]

    def freeze(self, campaign_id: int, columns: dict[str, Sequence[Any]]) -> None:
        """Write the frozen audience, one row per selected customer."""
        bulk_insert_columns(self.session, table_of(CampaignRecipient), columns)

    def group_counts(self, campaign_id: int) -> dict[tuple[str, int | None, str | None], int]:
        rows = self.session.execute(
            select(
                CampaignRecipient.group,
                CampaignRecipient.wave,
                CampaignRecipient.reason,
                func.count(),
            )
            .where(CampaignRecipient.campaign_id == campaign_id)
            .group_by(CampaignRecipient.group, CampaignRecipient.wave, CampaignRecipient.reason)
        )
        return {(str(g), w, r): int(n) for g, w, r, n in rows}

    def recipients(
        self, campaign_id: int, *, group: str | None, limit: int, offset: int
    ) -> Sequence[CampaignRecipient]:
        query = (
            select(CampaignRecipient)
            .where(CampaignRecipient.campaign_id == campaign_id)
            .order_by(CampaignRecipient.customer_id)
            .limit(limit)
            .offset(offset)
        )
        if group is not None:
            query = query.where(CampaignRecipient.group == group)
        return self.session.scalars(query).all()
