"""An identity: one way to recognise a customer (email, phone, card, messenger, source id)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId, str_enum


class IdentityKind(StrEnum):
    """What an identity value is."""

    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    TELEGRAM = "telegram"
    WHATSAPP = "whatsapp"
    EXTERNAL = "external"


class Identity(Base):
    """A normalised identity value owned by exactly one profile.

    ``namespace`` is the source system for external ids and empty otherwise, so an email
    is one identity wherever it came from, while id ``42`` of two systems is two.
    """

    __tablename__ = "identities"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[IdentityKind] = mapped_column(str_enum(IdentityKind))
    namespace: Mapped[str] = mapped_column(String(64), default="")
    value: Mapped[str] = mapped_column(String(320))
    raw_value: Mapped[str] = mapped_column(String(320))
    verified: Mapped[bool] = mapped_column(default=False)
    source: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        # value leads, so that look-ups by value alone (a batch of contacts) use this index
        UniqueConstraint("value", "kind", "namespace", name="uq_identities_value_kind_namespace"),
        Index("ix_identities_customer_id", "customer_id"),
    )
