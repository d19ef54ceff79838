"""The campaign plan as validated data, and the shapes of the campaigns API.

A plan answers eight questions: ``goal``; whom (``segment``); what ``offer``; what
``message``; which ``channel``; when (``schedule``); ``budget``; and how effectiveness is
judged (``kpi``: a metric and the value expected of it). It also says its ``kind`` and
``content_type``, how large a control group to hold out (``control_share``), and whether
a test wave goes first (``test_share``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from patron.campaigns.content import MessageTemplate, Offer, _Plan
from patron.journeys.schemas import Journey, TriggerSpec
from patron.models.campaign import CampaignKind, CampaignStatus, ContentType
from patron.models.consent import Channel


class Schedule(_Plan):
    """When to send: once at ``start_at`` (or at launch when it is not given), or on every
    time of the ``cron`` expression (weekly ``0 10 * * 1``, monthly ``0 10 1 * *``,
    yearly ``0 10 1 3 *``) read in ``timezone``, from ``start_at`` until ``end_at``.
    ``test_review_hours`` releases the mass wave that long after a test wave; without it
    a person releases it."""

    start_at: AwareDatetime | None = None
    cron: str | None = None
    timezone: str = "Europe/Moscow"
    end_at: AwareDatetime | None = None
    test_review_hours: int | None = Field(default=None, ge=0, le=24 * 30)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (minute hour day month weekday)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise ValueError("'end_at' must be after 'start_at'")
        return self

    @property
    def recurring(self) -> bool:
        return self.cron is not None

    def runs(self, *, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` send times after ``after`` (one-off: its one time, if due)."""
        if self.cron is None:
            moment = self.start_at or after
            return [moment] if moment >= after else []
        zone = ZoneInfo(self.timezone)
        start = max(after, self.start_at) if self.start_at else after
        times = croniter(self.cron, start.astimezone(zone))
        found: list[datetime] = []
        while len(found) < count:
            moment = times.get_next(datetime)
            if self.end_at and moment > self.end_at:
                break
            found.append(moment)
        return found


KpiMetric = Literal[
    "conversion_rate",
    "incremental_conversion",
    "revenue_per_customer",
    "incremental_revenue",
    "roi",
]


class Kpi(_Plan):
    """How effectiveness is judged: the metric and the value the plan expects of it
    (a share for rates, money for revenue, a ratio for ROI)."""

    metric: KpiMetric
    expected: Decimal


class CampaignIn(BaseModel):
    """A campaign plan."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=160)
    goal: str = Field(min_length=1)
    kind: CampaignKind
    content_type: ContentType
    segment: str = Field(min_length=1, description="The target segment, by name.")
    channel: Channel = Channel.EMAIL
    offer: Offer = Offer()
    message: MessageTemplate
    schedule: Schedule = Schedule()
    budget: Decimal = Field(ge=0, decimal_places=2)
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    kpi: Kpi
    control_share: float = Field(default=0.10, ge=0.0, le=0.5)
    test_share: float | None = Field(default=None, gt=0.0, lt=1.0)
    attribution_days: int = Field(default=14, ge=1, le=365)
    cost_per_message: Decimal = Field(default=Decimal("0.00"), ge=0, decimal_places=2)
    margin_rate: Decimal = Field(default=Decimal("0.30"), ge=0, le=1, decimal_places=2)
    """Gross margin on the incremental revenue, for the incremental profit and ROI."""
    trigger: TriggerSpec | None = None
    """Makes the campaign triggered: it admits customers one at a time when this fires,
    instead of freezing the segment's audience at launch."""
    journey: Journey | None = None
    """A triggered campaign's steps; without them each entry gets the one message."""

    @model_validator(mode="after")
    def _triggered(self) -> Self:
        if self.trigger is None:
            if self.journey is not None:
                raise ValueError("a journey needs a 'trigger' to admit customers to it")
            return self
        if self.test_share is not None:
            raise ValueError("a triggered campaign has no test wave: split its journey instead")
        if self.schedule.cron is not None:
            raise ValueError("a triggered campaign runs on its trigger, not on a cron schedule")
        return self


class CampaignUpdate(BaseModel):
    """Changes to a plan that has not launched."""

    model_config = ConfigDict(extra="forbid")

    goal: str | None = None
    kind: CampaignKind | None = None
    content_type: ContentType | None = None
    segment: str | None = None
    channel: Channel | None = None
    offer: Offer | None = None
    message: MessageTemplate | None = None
    schedule: Schedule | None = None
    budget: Decimal | None = Field(default=None, ge=0, decimal_places=2)
    kpi: Kpi | None = None
    control_share: float | None = Field(default=None, ge=0.0, le=0.5)
    test_share: float | None = Field(default=None, gt=0.0, lt=1.0)
    attribution_days: int | None = Field(default=None, ge=1, le=365)
    cost_per_message: Decimal | None = Field(default=None, ge=0, decimal_places=2)
    margin_rate: Decimal | None = Field(default=None, ge=0, le=1, decimal_places=2)
    trigger: TriggerSpec | None = None
    journey: Journey | None = None


class CampaignOut(BaseModel):
    """A campaign with its plan, state and frozen audience counts."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    goal: str
    kind: CampaignKind
    content_type: ContentType
    segment_id: int
    channel: Channel
    offer: dict[str, Any]
    message: dict[str, Any]
    schedule: dict[str, Any]
    budget: Decimal
    currency: str
    kpi: dict[str, Any]
    control_share: float
    test_share: float | None
    attribution_days: int
    cost_per_message: Decimal
    margin_rate: Decimal
    status: CampaignStatus
    created_by: str
    created_at: datetime
    launched_at: datetime | None
    finished_at: datetime | None
    audience: dict[str, Any]
    next_run_at: datetime | None = None
    parent_id: int | None = None
    trigger: dict[str, Any] | None = None
    journey: dict[str, Any] | None = None


class ChangeOut(BaseModel):
    """One entry of a campaign's audit trail."""

    model_config = ConfigDict(from_attributes=True)

    at: datetime
    actor: str
    action: str
    changes: dict[str, Any]


class PreviewOut(BaseModel):
    """A message as one customer would get it."""

    customer_id: int
    subject: str
    html: str
    text: str


# the message and the offer live in patron.campaigns.content; the plan's users find them here
__all__ = [
    "CampaignIn",
    "CampaignOut",
    "CampaignUpdate",
    "ChangeOut",
    "Kpi",
    "KpiMetric",
    "MessageTemplate",
    "Offer",
    "PreviewOut",
    "Schedule",
]
