"""Analysis runs and the per-customer scores each run wrote.

Scores are history, not state: every ``patron analyze`` adds a run with its as-of date and
model version, and its scores, so a segment or a report can ask what a customer's RFM
segment or churn risk was on any past date. Nothing here is updated after the run ends.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId, str_enum


class RunStatus(StrEnum):
    """A run is written in one transaction, so a failed one leaves only its own record."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class AnalysisRun(Base):
    """One analysis of the whole base as of a date.

    ``results`` keeps what the run found beyond per-customer scores: fitted model
    parameters, the report tables (RFM segments, spend groups, CLV deciles, lifecycle
    counts) and the churn model's validation figures, so a report never recomputes.
    """

    __tablename__ = "analysis_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    as_of: Mapped[datetime]
    model_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[RunStatus] = mapped_column(str_enum(RunStatus), default=RunStatus.RUNNING)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    customers: Mapped[int] = mapped_column(default=0)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    results: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_analysis_runs_as_of", "as_of"),)


class CustomerScore(Base):
    """What one run found about one customer; null where a measure does not apply
    (a prospect has no RFM cell, a one-off buyer no spend-per-purchase history)."""

    __tablename__ = "customer_scores"

    run_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("analysis_runs.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    as_of: Mapped[datetime]
    first_purchase_at: Mapped[datetime | None]
    last_purchase_at: Mapped[datetime | None]
    recency_days: Mapped[int | None]
    frequency: Mapped[int | None]
    monetary: Mapped[Decimal | None]
    r_score: Mapped[int | None] = mapped_column(SmallInteger)
    f_score: Mapped[int | None] = mapped_column(SmallInteger)
    m_score: Mapped[int | None] = mapped_column(SmallInteger)
    rfm_segment: Mapped[str | None] = mapped_column(String(40))
    spend_band: Mapped[int | None] = mapped_column(SmallInteger)
    best_customer: Mapped[bool] = mapped_column(default=False)
    lifecycle_stage: Mapped[str] = mapped_column(String(16))
    p_alive: Mapped[float | None] = mapped_column(Float)
    expected_purchases: Mapped[float | None] = mapped_column(Float)
    expected_spend: Mapped[Decimal | None]
    clv: Mapped[Decimal | None]
    profit_clv: Mapped[Decimal | None]
    churn_risk: Mapped[float | None] = mapped_column(Float)
    offers: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        # the profile page and segment rules read a customer's newest scores
        Index("ix_customer_scores_customer_as_of", "customer_id", "as_of"),
    )
