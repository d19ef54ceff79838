"""A customer profile: one row per real person (or B2B client) after identity resolution."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId


class Customer(Base):
    """A profile. ``merged_into_id`` is set when the profile was merged into another one."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    first_name: Mapped[str | None] = mapped_column(String(120))
    last_name: Mapped[str | None] = mapped_column(String(120))
    middle_name: Mapped[str | None] = mapped_column(String(120))
    birth_date: Mapped[date | None]
    gender: Mapped[str | None] = mapped_column(String(16))
    city: Mapped[str | None] = mapped_column(String(120))
    region: Mapped[str | None] = mapped_column(String(120))
    country: Mapped[str | None] = mapped_column(String(80))
    timezone: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16))
    company: Mapped[str | None] = mapped_column(String(200))
    line_of_business: Mapped[str | None] = mapped_column(String(120))
    ownership_form: Mapped[str | None] = mapped_column(String(60))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    merged_into_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("customers.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_customers_birth_city", "birth_date", "city"),
        Index("ix_customers_merged_into_id", "merged_into_id"),
        # the segment replica checks its freshness by the newest change
        Index("ix_customers_updated_at", "updated_at"),
    )

    @property
    def full_name(self) -> str:
        """Last, first and middle names joined, skipping the empty ones."""
        parts = (self.first_name, self.middle_name, self.last_name)
        return " ".join(p for p in parts if p)
