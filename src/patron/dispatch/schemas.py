"""Shapes of dispatch: a worker's claim on messages, and the call list (an operator's
task, the outcome they record, and the tally)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from patron.models.message import CallOutcome


@dataclass(frozen=True)
class Lease:
    """A worker's claim on messages, until ``until``.

    A message stays this claim's while it is ``sending`` with this worker and this lease
    time. Once the lease has run out another claim may take it (the worker may have
    died), and that claim writes its own lease time; the same worker's next claim does
    too, since it starts later. Every write of the first claim is then refused, so a
    worker that was only slow can no longer mark the message sent and let it go.
    """

    worker: str
    until: datetime
    ids: tuple[int, ...]
    """The claimed messages, oldest first."""


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
