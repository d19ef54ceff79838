"""The merge log, and fuzzy duplicate candidates waiting for a person's review."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId, str_enum


class MergeLog(Base):
    """One merge of ``loser_id`` into ``winner_id``.

    ``moved`` lists the ids of every row moved from the loser (identities, consents, orders,
    events) and ``filled`` the winner fields that were empty and took the loser's value, so
    that ``unmerge`` can put everything back exactly.
    """

    __tablename__ = "merge_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    winner_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id"))
    loser_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id"))
    reason: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(120))
    moved: Mapped[dict[str, Any]]
    filled: Mapped[dict[str, Any]]
    merged_at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None]
    undone_by: Mapped[str | None] = mapped_column(String(120))

    __table_args__ = (
        Index("ix_merge_log_winner_id", "winner_id"),
        Index("ix_merge_log_loser_id", "loser_id"),
    )


class CandidateStatus(StrEnum):
    """Where a proposed duplicate pair stands."""

    PENDING = "pending"
    MERGED = "merged"
    REJECTED = "rejected"


class MergeCandidate(Base):
    """A pair that looks like one person (same birth date and city, similar name).

    Candidates are only ever proposed; a person decides whether to merge them.
    """

    __tablename__ = "merge_candidates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_a_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id"))
    customer_b_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id"))
    score: Mapped[float]
    reason: Mapped[str] = mapped_column(String(200))
    status: Mapped[CandidateStatus] = mapped_column(
        str_enum(CandidateStatus), default=CandidateStatus.PENDING
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("customer_a_id", "customer_b_id", name="uq_merge_candidates_pair"),
    )
