"""A record of each file import, with its counts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId


class ImportRun(Base):
    """One ``patron import``: ``read == imported + merged + rejected`` always holds."""

    __tablename__ = "import_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    file: Mapped[str] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    read: Mapped[int] = mapped_column(default=0)
    imported: Mapped[int] = mapped_column(default=0)
    merged: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    rejects_path: Mapped[str | None] = mapped_column(String(500))
