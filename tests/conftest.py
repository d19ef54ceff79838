"""Fixtures shared by every test: one migrated store per backend, emptied before each test.

Tests that take the ``engine`` fixture run twice, on SQLite and on PostgreSQL. PostgreSQL
is the server at ``PATRON_TEST_POSTGRES`` (default 127.0.0.1:5432, trust auth). Where it
cannot be reached those tests skip and say why; under ``CI=true`` they fail instead, so a
CI run can never go green without having tested PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from patron.kit.db import (
    Base,
    drop_postgres_database,
    make_engine,
    make_sessionmaker,
    migrate,
    recreate_postgres_database,
)

# the Spark session is shared by every module that tests the Spark path
pytest_plugins = ["tests.fixtures.spark"]

POSTGRES_SERVER = os.environ.get(
    "PATRON_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432"
)


def _postgres_database(worker: str) -> str:
    """Create a fresh database for this test process and return its URL."""
    # the process id keeps two test runs on one server (two checkouts, say) apart
    name = f"patron_test_{worker}_{os.getpid()}"
    try:
        return recreate_postgres_database(POSTGRES_SERVER, name)
    except Exception as exc:
        reason = f"PostgreSQL not reachable at {POSTGRES_SERVER}: {type(exc).__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true needs PostgreSQL. {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def _engines(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[dict[str, Engine]]:
    engines: dict[str, Engine] = {}
    yield engines
    for backend, engine in engines.items():
        database = engine.url.database
        engine.dispose()
        if backend == "postgresql" and database:
            drop_postgres_database(POSTGRES_SERVER, database)


def _engine_for(
    backend: str, engines: dict[str, Engine], tmp: pytest.TempPathFactory, worker: str
) -> Engine:
    if backend not in engines:
        if backend == "sqlite":
            url = f"sqlite:///{tmp.mktemp('sqlite') / 'patron.db'}"
        else:
            url = _postgres_database(worker)
        engine = make_engine(url)
        migrate(engine)
        engines[backend] = engine
    return engines[backend]


def empty_tables(engine: Engine) -> None:
    """Delete every row, children first, and restart ids so tests can assert exact ids."""
    tables = list(reversed(Base.metadata.sorted_tables))
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            names = ", ".join(t.name for t in tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        return
    with engine.connect() as connection:
        # With foreign keys on, SQLite checks every deleted row against the tables that
        # refer to it; a self-reference without an index (an order's original order)
        # makes that a scan of the table per row, minutes after a test that imported
        # 70,000 orders. Every table is emptied, so there is nothing to check.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            # INTEGER PRIMARY KEY without AUTOINCREMENT restarts at 1 on an empty table
            for table in tables:
                connection.execute(table.delete())
            connection.commit()
        finally:
            connection.rollback()  # the pragma is ignored inside a transaction
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(
    request: pytest.FixtureRequest,
    _engines: dict[str, Engine],
    tmp_path_factory: pytest.TempPathFactory,
    worker_id: str,
) -> Engine:
    """A migrated, empty store: SQLite, then PostgreSQL."""
    engine = _engine_for(request.param, _engines, tmp_path_factory, worker_id)
    empty_tables(engine)
    return engine


@pytest.fixture
def sqlite_engine(
    _engines: dict[str, Engine], tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Engine:
    """A migrated, empty SQLite store, for tests that need not run on both backends."""
    engine = _engine_for("sqlite", _engines, tmp_path_factory, worker_id)
    empty_tables(engine)
    return engine


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work the test commits or not, as the boundary code would."""
    with session_factory() as session:
        yield session
