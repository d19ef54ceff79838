"""Long work started from the web interface (an analysis, a file import), with its progress.

The row is the job's state for every server process: the one running it writes progress
and a heartbeat, any other reads them. A running job whose heartbeat is old belongs to a
process that died.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Float, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, str_enum


class JobStatus(StrEnum):
    """What the job's process last wrote; a stalled job is a running one gone quiet."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class Job(Base):
    """One background job: who started it, how far it is, and how it ended."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(300))
    actor: Mapped[str] = mapped_column(String(120))
    status: Mapped[JobStatus] = mapped_column(str_enum(JobStatus), default=JobStatus.RUNNING)
    done: Mapped[float] = mapped_column(Float, default=0.0)
    """The share done, 0 to 1."""
    step: Mapped[str] = mapped_column(String(300), default="starting")
    result: Mapped[str] = mapped_column(Text, default="")
    """The outcome of a finished job, or why a failed one failed."""
    owner: Mapped[str] = mapped_column(String(200))
    """The process running the job: host name and process id."""
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_jobs_started_at", "started_at"),)
