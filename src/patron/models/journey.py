"""Triggered campaigns at run time: who entered, where each one is, and what each step did.

A triggered campaign admits customers one at a time, when its trigger fires for them. Each
admission is a ``journey_entries`` row, written once per (campaign, source): the event,
order, date, segment build or analysis run that fired it. The entry keeps its place in the
journey (``step``) and when it is next due (``wake_at``), so a restart finds every
customer where it left them. ``journey_steps`` logs each step an entry carried out, once
per (entry, step): the log row, the step's effect (a message written to the outbox, a
profile field set) and the entry's new place are committed together, which is what makes
each step run exactly once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId, str_enum


class EntryStatus(StrEnum):
    """``active`` entries are at a step or waiting; the rest have ended: ``completed`` ran
    off the last step, ``converted`` met the journey's goal, ``exited`` took an exit or a
    branch with nowhere to go, ``control`` was held out and is only measured."""

    ACTIVE = "active"
    COMPLETED = "completed"
    CONVERTED = "converted"
    EXITED = "exited"
    CONTROL = "control"


class JourneyEntry(Base):
    """One customer's pass through a triggered campaign's journey."""

    __tablename__ = "journey_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    source_ref: Mapped[str] = mapped_column(String(80))
    """What fired the trigger (``event:17``, ``order:9``, ``date:2026-12-06``...)."""
    fired_at: Mapped[datetime]
    """When the firing fact happened (the event's time), for the trigger's latency."""
    entered_at: Mapped[datetime]
    status: Mapped[EntryStatus] = mapped_column(str_enum(EntryStatus, 16))
    step: Mapped[str | None] = mapped_column(String(40))
    """The step the entry is at; None once it has ended."""
    wake_at: Mapped[datetime | None]
    """When the entry is next due: now for a step to run, the end of a wait, a timeout."""
    waiting_for: Mapped[str | None] = mapped_column(String(64))
    """The event type a wait listens for: its arrival wakes the entry early."""
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """The firing fact's properties (a cart's items), offered to the templates."""
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        UniqueConstraint("campaign_id", "source_ref", name="uq_journey_entries_source"),
        # the runner looks for due entries; a signal finds a customer's waiting entries
        Index("ix_journey_entries_due", "status", "wake_at"),
        Index("ix_journey_entries_customer", "customer_id", "status"),
        Index("ix_journey_entries_campaign", "campaign_id", "customer_id", "entered_at"),
    )


class JourneyStep(Base):
    """A step an entry carried out: appended once, never changed."""

    __tablename__ = "journey_steps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entry_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("journey_entries.id", ondelete="CASCADE")
    )
    campaign_id: Mapped[int] = mapped_column(BigId)
    step: Mapped[str] = mapped_column(String(48))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[int | None] = mapped_column(BigId)

    __table_args__ = (
        UniqueConstraint("entry_id", "step", name="uq_journey_steps_entry_step"),
        Index("ix_journey_steps_campaign", "campaign_id", "step"),
    )


class TriggerCursor(Base):
    """How far the trigger runner has read a growing table (events, orders): the largest
    id it has handled, and the ids below it it has not seen yet. Moved in the same
    transaction as the entries it made.

    Ids are handed out when a row is inserted, not when it commits: on PostgreSQL a slow
    request (or a long import) can commit id N after id N+1 was read. Such missing ids are
    kept in ``gaps`` with when they were first missed, and read again on every pass until
    they appear or ``GAP_SECONDS`` pass (a rolled-back insert never appears)."""

    __tablename__ = "trigger_cursors"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    gaps: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
