"""The outbox: one row per message a campaign decided to send, and what became of it.

A row is written in the same transaction as the decision to send (the launch, or the
release of the mass wave), so a decision is never lost and never made twice. Workers
claim rows under a lease and walk them to a final state: ``sent``, ``failed`` (with the
reason, after the retries) or ``skipped`` (with the reason, such as a malformed
address). Feedback (opened, clicked, unsubscribed, bounced, complained) is stamped on
the row it concerns.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, SmallInteger, String, Text, UniqueConstraint, true
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId, str_enum
from patron.models.consent import Channel


class MessageStatus(StrEnum):
    """Where a message is. ``queued``, ``held`` (its campaign is paused) and ``sending``
    are on the way; the rest are final."""

    QUEUED = "queued"
    HELD = "held"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


FINAL = frozenset({MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SKIPPED})


class Message(Base):
    """One message to one customer in one campaign."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, 16))
    wave: Mapped[int] = mapped_column(SmallInteger, default=1)
    address: Mapped[str | None] = mapped_column(String(320))
    coupon: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[MessageStatus] = mapped_column(
        str_enum(MessageStatus), default=MessageStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    capped: Mapped[bool] = mapped_column(default=True, server_default=true())
    """Counts toward the frequency cap: a marketing message; false for a journey's service
    messages (``frequency_cap: false``), which neither obey nor use up the cap."""
    sent_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]
    clicked_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]
    bounced_at: Mapped[datetime | None]
    complained_at: Mapped[datetime | None]
    provider_ref: Mapped[str | None] = mapped_column(String(120))
    """The provider's id of the message, which its delivery callbacks name."""
    delivered_at: Mapped[datetime | None]
    """When the provider reported it delivered to the handset or inbox."""
    read_at: Mapped[datetime | None]
    step_key: Mapped[str] = mapped_column(String(64), default="")
    """Empty for a planned campaign's message; ``entry:step`` for a journey's, which may
    message one customer many times, once per entry and step."""
    entry_id: Mapped[int | None] = mapped_column(BigId)

    __table_args__ = (
        # the decision to message a customer in a campaign (at a journey step) is taken once
        UniqueConstraint(
            "campaign_id", "customer_id", "step_key", name="uq_messages_campaign_customer_step"
        ),
        # workers look for due rows by status and time
        Index("ix_messages_status_due", "status", "next_attempt_at"),
        Index("ix_messages_campaign_status", "campaign_id", "status"),
        Index("ix_messages_provider_ref", "provider_ref"),
        # the frequency cap of journey sends counts a customer's recent messages
        Index("ix_messages_customer_created", "customer_id", "created_at"),
    )


class CallOutcome(StrEnum):
    """What an operator's call came to."""

    REACHED = "reached"
    INTERESTED = "interested"
    DECLINED = "declined"
    CALL_BACK = "call_back"
    NO_ANSWER = "no_answer"
    WRONG_NUMBER = "wrong_number"


OPEN_CALL = frozenset({CallOutcome.CALL_BACK, CallOutcome.NO_ANSWER})
"""Outcomes after which the customer is still to be called."""


class CallResult(Base):
    """One call an operator made for a call-list message. Rows are only added: a call
    back later is a new row, so the history of attempts stays."""

    __tablename__ = "call_results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(BigId, ForeignKey("messages.id", ondelete="CASCADE"))
    outcome: Mapped[CallOutcome] = mapped_column(str_enum(CallOutcome, 20))
    note: Mapped[str | None] = mapped_column(Text)
    call_back_at: Mapped[datetime | None]
    recorded_by: Mapped[str] = mapped_column(String(120))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_call_results_message", "message_id"),)
