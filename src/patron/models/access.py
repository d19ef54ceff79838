"""API keys (stored hashed) and the idempotency records of retried writes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId, str_enum


class Role(StrEnum):
    """What an API key may do."""

    ADMIN = "admin"
    MARKETER = "marketer"
    ANALYST = "analyst"
    POS = "pos"


class ApiKey(Base):
    """An API key. Only a SHA-256 of the secret is kept; the secret is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[Role] = mapped_column(str_enum(Role))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class IdempotencyRecord(Base):
    """The stored answer to a write sent with an ``Idempotency-Key``, replayed on retry."""

    __tablename__ = "idempotency_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    api_key_id: Mapped[int]
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("api_key_id", "key", name="uq_idempotency_key"),)
