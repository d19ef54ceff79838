"""Consent decisions: an append-only history per customer, channel and purpose."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId, str_enum


class Channel(StrEnum):
    """Channels a customer can be contacted by."""

    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"
    TELEGRAM = "telegram"
    WHATSAPP = "whatsapp"
    PUSH = "push"


class Purpose(StrEnum):
    """Why we contact: marketing needs opt-in; transactional messages serve an order."""

    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


class ConsentStatus(StrEnum):
    """A decision. ``pending`` (double opt-in not yet confirmed) is not a decision."""

    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    PENDING = "pending"


class Consent(Base):
    """One recorded decision. Rows are never updated: a new decision is a new row.

    ``origin_customer_id`` keeps the profile the decision was first recorded on, so a
    merge that moves the row can be read, and undone, without losing whose it was.
    """

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    origin_customer_id: Mapped[int] = mapped_column(BigId)
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, 16))
    purpose: Mapped[Purpose] = mapped_column(str_enum(Purpose, 16), default=Purpose.MARKETING)
    status: Mapped[ConsentStatus] = mapped_column(str_enum(ConsentStatus, 16))
    source: Mapped[str] = mapped_column(String(64))
    text_version: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime]
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_consents_customer_channel", "customer_id", "channel", "purpose"),)
