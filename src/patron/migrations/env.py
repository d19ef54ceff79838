"""Alembic environment: runs on the connection Patron hands over, or on PATRON_DATABASE_URL."""

from __future__ import annotations

from alembic import context

import patron.models  # noqa: F401 - registers every table on Base.metadata
from patron.kit.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    """Migrate on the given connection; SQLite needs batch mode to alter tables."""
    connection = config.attributes.get("connection")
    if connection is None:
        with make_engine().begin() as own:
            _run(own)
    else:
        _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
