"""Triggers, re-entry rules and journeys, as validated data.

A **trigger** says what admits a customer to a triggered campaign:

- ``event``: an event of a type arriving through the API or an import (``cart_abandoned``,
  ``form_submitted``, a loyalty event such as ``loyalty.tier_changed``), or an order:
  ``purchase`` for any purchase, ``first_purchase`` for a customer's first;
- ``date``: a date of the profile (``birth_date``, or a date held in the attributes such as
  ``wedding_date``) coming round each year, ``offset_days`` before (negative) or after it;
- ``segment``: entering or leaving a segment at one of its builds;
- ``score``: at an analysis run, reaching a lifecycle stage (``lapsed``: no purchase for
  longer than the customer's own usual gap allows) or P(alive) falling below a threshold.

Each is read incrementally: the event and order tables from the last id handled, dates
from the last day handled, segments from the last build read, scores from the last run.

**Re-entry** says how often one customer may enter: ``once`` ever, ``once_per`` a number
of days (a cool-down), or ``every_time``.

A **journey** is a list of steps, each with an ``id``; a step goes on to ``next`` (by
default the step after it in the list; ``None`` on the last ends the journey):

- ``send``: a message on a channel, or a cascade over several (``channels``): the first
  the customer can be reached on, then the next if the message is not delivered (or, for
  email, opened) within ``fallback_minutes``;
- ``wait``: a duration, or until an event (``until_event``) with the duration as timeout,
  going to ``on_event`` when it arrives;
- ``branch``: a condition on the profile, an identity, a score, a segment, an event since
  entry, or an earlier send step's message being opened or delivered;
- ``split``: a random split by shares, for A/B tests, fixed per entry;
- ``update``: set profile attributes and add tags;
- ``exit``.

The journey's ``goal`` (say, a purchase) ends an entry as converted the moment it happens.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from patron.campaigns.content import MessageTemplate, Offer
from patron.models.consent import Channel

ORDER_EVENTS = frozenset({"purchase", "first_purchase"})
"""Event types a trigger or wait reads from the orders table, not the events table."""

Scalar = str | int | float | bool


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EventTrigger(_Data):
    kind: Literal["event"] = "event"
    event_type: str = Field(min_length=1, max_length=64)
    where: dict[str, Scalar] = Field(default_factory=dict)
    """Properties the event must carry with exactly these values."""


class DateTrigger(_Data):
    kind: Literal["date"] = "date"
    field: str = Field(default="birth_date", pattern=r"^[a-z_][a-z0-9_]{0,39}$")
    offset_days: int = Field(default=0, ge=-60, le=60)


class SegmentTrigger(_Data):
    kind: Literal["segment"] = "segment"
    segment: str = Field(min_length=1, description="The segment, by name.")
    on: Literal["enter", "leave"] = "enter"


class ScoreTrigger(_Data):
    kind: Literal["score"] = "score"
    stage: Literal["new", "active", "at_risk", "lapsed", "won_back"] | None = None
    p_alive_below: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.stage is None) == (self.p_alive_below is None):
            raise ValueError("a score trigger needs exactly one of 'stage' and 'p_alive_below'")
        return self


Trigger = Annotated[
    EventTrigger | DateTrigger | SegmentTrigger | ScoreTrigger, Field(discriminator="kind")
]


class Reentry(_Data):
    mode: Literal["once", "once_per", "every_time"] = "once_per"
    days: int | None = Field(default=30, ge=1, le=3660)
    """The cool-down of ``once_per``."""

    @model_validator(mode="after")
    def _days(self) -> Self:
        if self.mode == "once_per" and self.days is None:
            raise ValueError("re-entry 'once_per' needs 'days'")
        return self


class TriggerSpec(_Data):
    """A campaign's trigger with its re-entry rule. ``within_segment`` admits only current
    members of the campaign's segment (at its latest build); otherwise the trigger alone
    decides."""

    on: Trigger
    reentry: Reentry = Reentry()
    within_segment: bool = False


# -- journey steps ------------------------------------------------------------------------

_STEP_ID = r"^[a-z][a-z0-9_-]{0,31}$"


class _Step(_Data):
    id: str = Field(pattern=_STEP_ID)
    next: str | None = Field(default="", pattern=r"^$|" + _STEP_ID[1:])
    """The step after this one: empty for the next in the list, None to end."""


class SendStep(_Step):
    type: Literal["send"] = "send"
    channel: Channel | None = None
    """The channel; by default the campaign's."""
    channels: list[Channel] = Field(default_factory=list, max_length=6)
    """A cascade instead of one channel: tried in this order."""
    fallback_minutes: int = Field(default=60, ge=1, le=60 * 24 * 7)
    message: MessageTemplate | None = None
    """The message; by default the campaign's."""
    offer: Offer | None = None


class WaitStep(_Step):
    type: Literal["wait"] = "wait"
    minutes: int = Field(default=0, ge=0)
    hours: int = Field(default=0, ge=0)
    days: int = Field(default=0, ge=0)
    until_event: str | None = Field(default=None, max_length=64)
    on_event: str | None = Field(default=None, pattern=_STEP_ID)
    """Where an entry goes when the awaited event arrives; by default ``next``."""

    @property
    def seconds(self) -> int:
        return ((self.days * 24 + self.hours) * 60 + self.minutes) * 60

    @model_validator(mode="after")
    def _some(self) -> Self:
        if self.seconds == 0 and self.until_event is None:
            raise ValueError(f"wait step {self.id!r} needs a duration or 'until_event'")
        return self


class Condition(_Data):
    """One test; exactly one of its fields is set:

    - ``opened`` / ``delivered``: the message of that send step was opened (or clicked) /
      delivered (or opened);
    - ``has``: the customer has an identity of this kind (``phone``, ``email``...);
    - ``event``: an event of this type since the entry (``purchase`` reads orders);
    - ``segment``: a current member of the segment (by name) at its latest build;
    - ``score`` with ``op`` and ``value``: a field of the newest scores (``clv``,
      ``p_alive``, ``spend_band``...);
    - ``profile`` with ``op`` and ``value``: a profile field or attribute.
    """

    opened: str | None = None
    delivered: str | None = None
    has: str | None = None
    event: str | None = None
    segment: str | None = None
    score: str | None = None
    profile: str | None = None
    op: Literal["==", "!=", ">", ">=", "<", "<="] = "=="
    value: Scalar | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        named = [k for k in ("opened", "delivered", "has", "event", "segment", "score",
                             "profile") if getattr(self, k) is not None]  # fmt: skip
        if len(named) != 1:
            raise ValueError(f"a condition tests exactly one thing, not {named or 'nothing'}")
        if (self.score or self.profile) and self.value is None:
            raise ValueError("a score or profile condition needs 'value'")
        return self


class BranchStep(_Step):
    type: Literal["branch"] = "branch"
    when: Condition
    then: str = Field(pattern=_STEP_ID)
    otherwise: str | None = Field(default=None, pattern=_STEP_ID)
    """Where an entry goes when the condition fails; None ends it."""


class SplitPath(_Data):
    share: float = Field(gt=0, le=1)
    next: str = Field(pattern=_STEP_ID)


class SplitStep(_Step):
    type: Literal["split"] = "split"
    paths: list[SplitPath] = Field(min_length=2, max_length=10)

    @model_validator(mode="after")
    def _whole(self) -> Self:
        if abs(sum(p.share for p in self.paths) - 1.0) > 1e-9:
            raise ValueError(f"split step {self.id!r}: the shares must add up to 1")
        return self


class UpdateStep(_Step):
    type: Literal["update"] = "update"
    set: dict[str, Scalar | None] = Field(default_factory=dict)
    """Profile attributes to set."""
    tags: list[str] = Field(default_factory=list)
    """Tags to add to the ``tags`` attribute."""


class ExitStep(_Step):
    type: Literal["exit"] = "exit"


Step = Annotated[
    SendStep | WaitStep | BranchStep | SplitStep | UpdateStep | ExitStep,
    Field(discriminator="type"),
]


class Journey(_Data):
    """The steps, and the goal that ends an entry as converted when it happens."""

    steps: list[Step] = Field(min_length=1, max_length=50)
    goal: str | None = Field(default=None, max_length=64)
    """An event type (``purchase`` reads orders) that converts an entry."""
    frequency_cap: bool = True
    """Whether its sends obey the frequency cap (``PATRON_FREQUENCY_CAP_*``); false for
    service messages, such as a receipt or a points statement, that must not be held back."""

    @model_validator(mode="after")
    def _graph(self) -> Self:
        ids = [s.id for s in self.steps]
        if len(set(ids)) != len(ids):
            raise ValueError("journey step ids must be unique")
        for step in self.steps:
            for target in _targets(step, self):
                if target not in ids:
                    raise ValueError(f"step {step.id!r} goes to {target!r}, which is not a step")
        # a step runs once per entry, so the steps must not loop back
        order = {s: i for i, s in enumerate(ids)}
        state: dict[str, int] = {}

        def visit(step_id: str) -> None:
            state[step_id] = 1
            for target in _targets(self.steps[order[step_id]], self):
                if state.get(target) == 1:
                    raise ValueError(f"the journey loops back to step {target!r}")
                if target not in state:
                    visit(target)
            state[step_id] = 2

        for step_id in ids:
            if step_id not in state:
                visit(step_id)
        return self

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def following(self, step: Step) -> str | None:
        """The step after ``step`` on its default path (``next``)."""
        if step.next is None:
            return None
        if step.next:
            return step.next
        index = self.steps.index(step)
        return self.steps[index + 1].id if index + 1 < len(self.steps) else None

    def events(self) -> set[str]:
        """Event types that move its entries: the goal and what waits listen for."""
        found = {s.until_event for s in self.steps if isinstance(s, WaitStep) and s.until_event}
        return found | ({self.goal} if self.goal else set())


def _targets(step: Any, journey: Journey) -> list[str]:
    found = [t for t in [journey.following(step)] if t]
    if isinstance(step, WaitStep) and step.on_event:
        found.append(step.on_event)
    if isinstance(step, BranchStep):
        found += [t for t in (step.then, step.otherwise) if t]
    if isinstance(step, SplitStep):
        found += [p.next for p in step.paths]
    if isinstance(step, ExitStep):
        return []
    return found


def single_send(channel: Channel) -> Journey:
    """The journey of a triggered campaign that gives none: its one message."""
    return Journey(steps=[SendStep(id="send", channel=channel)])


# -- what the API answers -------------------------------------------------------------------


class StepCount(BaseModel):
    """What the entries that reached a step did there (``end …`` for the end of a wait)."""

    id: str
    type: str
    outcomes: dict[str, int]


class JourneyReport(BaseModel):
    """A triggered campaign's entries by status, how many wait at each step now, and each
    step's outcomes."""

    entries: dict[str, int]
    at_step: dict[str, int]
    steps: list[StepCount]
    goal: dict[str, int]


class StepDone(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: str
    at: datetime
    outcome: str
    message_id: int | None


class EntryOut(BaseModel):
    """One customer's pass through the journey, with the steps it carried out."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    customer_id: int
    source_ref: str
    fired_at: datetime
    entered_at: datetime
    status: str
    step: str | None
    wake_at: datetime | None
    waiting_for: str | None
    ended_at: datetime | None
    outcome: str | None
    steps: list[StepDone] = Field(default_factory=list)
