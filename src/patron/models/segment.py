"""Segments: a saved rule, its builds, and the membership history the builds leave.

A segment's members are materialised by a build. Membership rows are history, not state:
entering opens a row, leaving closes it (``left_at``), and a customer who comes back opens
a new one. So "who was in the segment on a date", "who entered or left between two
dates" and "how customers moved between segments" are plain queries over this table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId


class Segment(Base):
    """A named rule (``rule`` is the validated JSON of ``patron.segments.schemas.Rule``)."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    rule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    archived: Mapped[bool] = mapped_column(default=False)


class SegmentBuild(Base):
    """One materialisation of a segment: when, by which rule, and what changed."""

    __tablename__ = "segment_builds"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    segment_id: Mapped[int] = mapped_column(BigId, ForeignKey("segments.id", ondelete="CASCADE"))
    built_at: Mapped[datetime]
    rule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    members: Mapped[int] = mapped_column(default=0)
    entered: Mapped[int] = mapped_column(default=0)
    left: Mapped[int] = mapped_column(default=0)
    seconds: Mapped[float] = mapped_column(default=0.0)

    __table_args__ = (Index("ix_segment_builds_segment_built", "segment_id", "built_at"),)


class SegmentMembership(Base):
    """One stay of a customer in a segment: open while ``left_at`` is null."""

    __tablename__ = "segment_memberships"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    segment_id: Mapped[int] = mapped_column(BigId, ForeignKey("segments.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    entered_at: Mapped[datetime]
    left_at: Mapped[datetime | None]
    entered_build_id: Mapped[int] = mapped_column(BigId)
    left_build_id: Mapped[int | None] = mapped_column(BigId)

    __table_args__ = (
        # current members (left_at null) and members on a date both start from the segment
        Index("ix_segment_memberships_segment_customer", "segment_id", "customer_id", "left_at"),
        Index("ix_segment_memberships_customer", "customer_id"),
    )
