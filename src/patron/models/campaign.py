"""Campaigns: the plan (eight answers), its state and audit trail, and the frozen audience.

A campaign answers the eight questions of a plan: goal, whom (a segment), what offer,
what message, which channel, when (a schedule), budget, and how effectiveness is judged
(a KPI with its expected value). At launch the audience is frozen into
``campaign_recipients``: every customer the segment selected, in exactly one group
(treatment, control, or left out with the reason), so measurement reads exact groups.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId, str_enum
from patron.models.consent import Channel


class CampaignKind(StrEnum):
    """What the campaign is for, in the four families of the source articles:
    acquisition (with bring-a-friend), development (up-sell, cross-sell), retention and
    win-back."""

    ACQUISITION = "acquisition"
    BRING_A_FRIEND = "bring_a_friend"
    UP_SELL = "up_sell"
    CROSS_SELL = "cross_sell"
    RETENTION = "retention"
    WIN_BACK = "win_back"

    @property
    def family(self) -> str:
        """acquisition, development, retention or win_back."""
        if self in (CampaignKind.ACQUISITION, CampaignKind.BRING_A_FRIEND):
            return "acquisition"
        if self in (CampaignKind.UP_SELL, CampaignKind.CROSS_SELL):
            return "development"
        return self.value


class ContentType(StrEnum):
    """Bonus (discount, points, gift), informational (news, reminders) or emotional
    (birthday, anniversary, thanks)."""

    BONUS = "bonus"
    INFORMATIONAL = "informational"
    EMOTIONAL = "emotional"


class CampaignStatus(StrEnum):
    """draft -> scheduled -> running -> completed, or cancelled from any but completed; a
    running campaign may be paused and resumed."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class RecipientGroup(StrEnum):
    """Where the frozen audience put a customer."""

    TREATMENT = "treatment"
    CONTROL = "control"
    EXCLUDED = "excluded"


class Campaign(Base):
    """A planned campaign. ``offer``, ``message``, ``schedule`` and ``kpi`` hold the
    validated JSON of their schemas in ``patron.campaigns.schemas``."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(160), unique=True)
    goal: Mapped[str] = mapped_column(Text)
    kind: Mapped[CampaignKind] = mapped_column(str_enum(CampaignKind, 24))
    content_type: Mapped[ContentType] = mapped_column(str_enum(ContentType, 16))
    segment_id: Mapped[int] = mapped_column(BigId, ForeignKey("segments.id", ondelete="RESTRICT"))
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, 16))
    offer: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message: Mapped[dict[str, Any]] = mapped_column(default=dict)
    schedule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    budget: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    kpi: Mapped[dict[str, Any]] = mapped_column(default=dict)
    control_share: Mapped[float] = mapped_column(Float, default=0.10)
    test_share: Mapped[float | None] = mapped_column(Float)
    attribution_days: Mapped[int] = mapped_column(default=14)
    cost_per_message: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))
    margin_rate: Mapped[Decimal] = mapped_column(default=Decimal("0.30"))
    status: Mapped[CampaignStatus] = mapped_column(
        str_enum(CampaignStatus), default=CampaignStatus.DRAFT
    )
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    launched_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    audience: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Counts of the frozen audience: selected, per group, and per reason left out."""
    next_run_at: Mapped[datetime | None]
    """When the scheduler launches it next (a scheduled one-off or recurring campaign)."""
    parent_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("campaigns.id", ondelete="SET NULL")
    )
    """The recurring campaign this is one run of: each run has its own frozen audience,
    control group and report."""
    trigger: Mapped[dict[str, Any] | None]
    """A triggered campaign's trigger (``patron.journeys.schemas.Trigger``): it admits
    customers one at a time instead of freezing an audience at launch."""
    journey: Mapped[dict[str, Any] | None]
    """A triggered campaign's steps (``patron.journeys.schemas.Journey``); without them
    an entry gets the campaign's one message."""
    trigger_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Where the trigger's incremental evaluation has got to: the last date, segment build
    or analysis run it has read."""

    __table_args__ = (
        Index("ix_campaigns_status", "status"),
        Index("ix_campaigns_due", "status", "next_run_at"),
        Index("ix_campaigns_parent", "parent_id"),
    )


class CampaignChange(Base):
    """The audit trail: who did what to a campaign, when, and which fields changed."""

    __tablename__ = "campaign_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(32))
    changes: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_campaign_changes_campaign", "campaign_id", "at"),)


class CampaignRecipient(Base):
    """One customer of a frozen audience: the group, the wave (0 the test wave, 1 the
    mass launch; treatment only) and, when left out, why."""

    __tablename__ = "campaign_recipients"

    campaign_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    group: Mapped[RecipientGroup] = mapped_column(str_enum(RecipientGroup))
    wave: Mapped[int | None] = mapped_column(SmallInteger)
    reason: Mapped[str | None] = mapped_column(String(32))
    frozen_at: Mapped[datetime]

    __table_args__ = (
        # the frequency cap counts each customer's recent treatments across campaigns
        Index("ix_campaign_recipients_customer", "customer_id", "frozen_at"),
    )


class Suppression(Base):
    """A customer who must not get marketing on a channel: unsubscribed, bounced hard,
    complained, or suppressed by hand. Lifting it sets ``lifted_at``; rows stay."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, 16))
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    lifted_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_suppressions_customer_channel", "customer_id", "channel"),)
