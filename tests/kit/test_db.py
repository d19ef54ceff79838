"""The store: migrations match the models, and times and money keep their types."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from patron.kit.db import Base, is_duplicate_key
from patron.models import Order


def test_migrations_create_exactly_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_times_come_back_aware_utc_and_money_as_decimal(session: Session) -> None:
    moscow = timezone(timedelta(hours=3))
    session.add(
        Order(
            source="t",
            external_id="1",
            placed_at=datetime(2025, 1, 1, 12, 0, tzinfo=moscow),
            total=Decimal("1234.56"),
            currency="RUB",
        )
    )
    session.commit()
    session.expunge_all()
    order = session.get(Order, 1)
    assert order is not None
    assert order.placed_at == datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
    assert order.placed_at.tzinfo is UTC
    assert order.total == Decimal("1234.56")
    assert isinstance(order.total, Decimal)


def test_naive_times_are_refused(session: Session) -> None:
    session.add(
        Order(
            source="t",
            external_id="2",
            placed_at=datetime(2025, 1, 1),
            total=Decimal(1),
            currency="RUB",
        )
    )
    with pytest.raises(StatementError, match="naive datetime"):
        session.flush()


def test_only_a_unique_index_refusing_a_row_counts_as_a_duplicate_key() -> None:
    unique = sqlite3.IntegrityError("UNIQUE constraint failed: events.source, events.external_id")
    foreign = sqlite3.IntegrityError("FOREIGN KEY constraint failed")
    assert is_duplicate_key(unique) is True
    assert is_duplicate_key(IntegrityError("INSERT", {}, unique)) is True
    assert is_duplicate_key(foreign) is False
    assert is_duplicate_key(IntegrityError("INSERT", {}, foreign)) is False
    assert is_duplicate_key(ValueError("UNIQUE")) is False
