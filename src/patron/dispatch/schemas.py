"""Shapes of the call list: an operator's task, the outcome they record, and the tally."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from patron.models.message import CallOutcome


class CallIn(BaseModel):
    """What a call came to."""

    model_config = ConfigDict(extra="forbid")

    outcome: CallOutcome
    note: str | None = Field(default=None, max_length=2000)
    call_back_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _when(self) -> Self:
        if self.outcome is CallOutcome.CALL_BACK and self.call_back_at is None:
            raise ValueError("call_back_at: a call back later needs the time agreed")
        return self


class CallOut(BaseModel):
    """A recorded call."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    message_id: int
    outcome: CallOutcome
    note: str | None
    call_back_at: datetime | None
    recorded_by: str
    recorded_at: datetime


class CallTask(BaseModel):
    """One customer to call, with the script and what the operator should know."""

    message_id: int
    customer_id: int
    name: str | None
    phone: str
    script: str
    rfm_segment: str | None
    clv: Decimal | None
    churn_risk: float | None
    offers: list[str]
    """The next best offers, best first."""
    calls: int
    """Calls made so far."""
    last_outcome: CallOutcome | None
    call_back_at: datetime | None


class CallList(BaseModel):
    """A campaign's call list: the tasks asked for and the outcomes so far."""

    campaign_id: int
    outcomes: dict[str, int]
    """Messages by their latest outcome; ``not_called`` for those with none yet."""
    tasks: list[CallTask]
