"""Database plumbing: the declarative base, column types, engines and sessions.

The same models and migrations serve SQLite (the embedded default) and PostgreSQL.
Services take a ``Session`` and never commit; the request, task or CLI command that
opened the unit of work commits it (see ``unit_of_work``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Enum,
    Integer,
    MetaData,
    Numeric,
    Table,
    event,
    text,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Engine, create_engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from patron.kit.settings import get_settings

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY, so big ids are INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Money = Numeric(18, 2, asdecimal=True)
Quantity = Numeric(18, 3, asdecimal=True)
Price = Numeric(18, 4, asdecimal=True)
"""A unit price, which may hold fractions of a cent (wholesale prices do)."""


def str_enum(cls: type[StrEnum], length: int = 16) -> Enum:
    """A ``StrEnum`` stored as its values in a VARCHAR, identical on every backend."""
    return Enum(
        cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e]
    )


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    SQLite has no time zone type, so values are stored as naive UTC and made aware on
    the way out; a naive value on the way in is refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; Patron stores aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONDict(TypeDecorator[dict[str, Any]]):
    """A JSON object column (JSONB on PostgreSQL)."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


class Base(DeclarativeBase):
    """Declarative base of every Patron table."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        Decimal: Money,
        dict[str, Any]: JSONDict(),
    }


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, for bulk statements that skip the ORM's overhead."""
    return cast(Table, model.__table__)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while an import writes; NORMAL is durable at each checkpoint.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # a 64 MB page cache keeps the indexes of a growing store in memory during imports
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` (default: ``PATRON_DATABASE_URL`` or ``./patron.db``)."""
    url = url or get_settings().database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit when the block ends cleanly, roll back when it raises."""
    session = factory()
    try:
        yield session
    except BaseException:
        end_unit(session, commit=False)
        raise
    end_unit(session, commit=True)


def end_unit(session: Session, *, commit: bool) -> None:
    """End a unit of work: commit it (or not), then close the session, which rolls back
    whatever is still open, a commit that failed included."""
    try:
        if commit:
            session.commit()
    finally:
        session.close()


def bulk_insert(
    session: Session, table: Table, rows: list[dict[str, Any]], *, with_ids: bool = False
) -> list[int]:
    """Insert many rows straight through the driver, inside the session's transaction.

    COPY on PostgreSQL and one ``executemany`` on SQLite are several times faster than
    SQLAlchemy's per-row parameter handling, for the million-line files retailers send.
    Values still pass each column type's own bind conversion, and missing columns take
    their Python-side defaults. With ``with_ids`` the new primary keys are returned in the
    order of ``rows``: drawn from the sequence on PostgreSQL; on SQLite the rows of one
    ``executemany`` under the write lock get consecutive row ids ending at
    ``last_insert_rowid()``.
    """
    if not rows:
        return []
    dialect = session.get_bind().dialect
    postgres = dialect.name == "postgresql"
    ids: list[int] = []
    if with_ids and postgres:
        ids = list(
            session.scalars(
                text(
                    f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) "
                    "FROM generate_series(1, :n)"
                ),
                {"n": len(rows)},
            )
        )
    columns = list(rows[0])
    defaults = {
        column.name: column.default
        for column in table.columns
        if column.name not in rows[0] and column.default is not None and not column.primary_key
    }
    columns += list(defaults)
    if ids:
        columns.append("id")
    processors = [
        (index, process)
        for index, name in enumerate(columns)
        if (process := table.c[name].type._cached_bind_processor(dialect)) is not None
    ]
    fixed = [python_default(table.c[name]) for name in defaults]

    def converted(position: int, row: dict[str, Any]) -> list[Any]:
        values = [row[name] for name in columns[: len(row)]] + fixed
        if ids:
            values.append(ids[position])
        for index, process in processors:
            values[index] = process(values[index])
        return values

    values = (converted(position, row) for position, row in enumerate(rows))
    _write_rows(session, table, columns, values)
    if not with_ids or postgres:
        return ids
    driver = session.connection().connection.driver_connection
    assert driver is not None
    last = driver.execute("SELECT last_insert_rowid()").fetchone()[0]
    return list(range(last - len(rows) + 1, last + 1))


def duplicate_key_name(error: BaseException) -> str:
    """What a unique index refused, for a message: the constraint's name on PostgreSQL,
    the columns on SQLite (its message names them, as ``table.column``)."""
    cause = error.orig if isinstance(error, IntegrityError) and error.orig else error
    diagnostic = getattr(cause, "diag", None)
    name = getattr(diagnostic, "constraint_name", None)
    if name:
        return str(name)
    return str(cause).removeprefix("UNIQUE constraint failed: ")


def is_duplicate_key(error: BaseException) -> bool:
    """Whether a unique index refused a row: through SQLAlchemy, or straight from the driver
    when :func:`bulk_insert` wrote the rows. Told by the SQLSTATE (PostgreSQL) or SQLite's
    message, so that a store on SQLite never pays for importing the PostgreSQL driver."""
    if isinstance(error, IntegrityError) and error.orig is not None:
        error = error.orig
    if getattr(error, "sqlstate", None) == "23505":  # unique_violation
        return True
    return isinstance(error, sqlite3.IntegrityError) and str(error).startswith("UNIQUE")


def python_default(column: Any) -> Any:
    """What ``column``'s Python-side default gives a new row: its value, or what its
    function returns now; None when it has none (the server's default, if any, is not
    applied by a statement that binds the column)."""
    default = column.default
    if default is None:
        return None
    return default.arg(None) if default.is_callable else default.arg


def insert_objects(session: Session, objects: Sequence[Base], *, with_ids: bool = False) -> None:
    """Insert new (never added) ORM objects of one class with :func:`bulk_insert`.

    The unit of work's per-object bookkeeping (identity map, dependency sort, one RETURNING
    per row) costs more than the SQL itself for the hundreds of small rows a trigger pass
    writes. The objects stay outside the session: they are written as they are now, and a
    later change to them is not saved. Columns not set take their Python-side default, or
    the server's when no object sets them. With ``with_ids`` each object's ``id`` is set.
    """
    if not objects:
        return
    mapper = sa_inspect(type(objects[0]))
    states = [sa_inspect(o).dict for o in objects]
    rows: list[dict[str, Any]] = [{} for _ in objects]
    for attribute in mapper.column_attrs:
        column = attribute.columns[0]
        if column.primary_key and column.name == "id":
            continue  # drawn by the database (or by bulk_insert, with_ids)
        key = attribute.key
        default = column.default
        if default is None and not any(key in state for state in states):
            continue  # the server's default
        for row, state in zip(rows, states, strict=True):
            if key in state:
                row[column.name] = state[key]
            else:
                row[column.name] = python_default(column)
    ids = bulk_insert(session, table_of(type(objects[0])), rows, with_ids=with_ids)
    for obj, new_id in zip(objects, ids, strict=with_ids):
        obj.id = new_id  # type: ignore[attr-defined]


def bulk_insert_columns(
    session: Session,
    table: Table,
    columns: Mapping[str, Sequence[Any]],
    *,
    prepared: Collection[str] = (),
) -> None:
    """Insert rows given column by column, straight through the driver.

    For result tables of a million rows (analysis scores) the values already sit in
    columns; converting a column at a time with its type's bind processor, then zipping,
    skips the per-row dicts and index loops of :func:`bulk_insert`. Every column must be
    given; defaults are not filled in. The columns named in ``prepared`` already hold what
    the bind processor would give for this dialect (built a whole column at a time, say
    by Arrow) and are passed to the driver as they are.
    """
    names = list(columns)
    dialect = session.get_bind().dialect
    lists: list[Sequence[Any]] = []
    for name in names:
        process = table.c[name].type._cached_bind_processor(dialect)
        values = columns[name]
        if process is None or name in prepared:
            lists.append(values)
        else:
            lists.append([process(v) for v in values])
    _write_rows(session, table, names, zip(*lists, strict=True))


def _write_rows(
    session: Session, table: Table, names: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """COPY on PostgreSQL, one ``executemany`` on SQLite; values already driver-ready."""
    driver = session.connection().connection.driver_connection
    assert driver is not None
    quote = session.get_bind().dialect.identifier_preparer.quote  # a column may be "group"
    joined = ", ".join(quote(name) for name in names)
    if session.get_bind().dialect.name == "postgresql":
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {table.name} ({joined}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in names)
    driver.cursor().executemany(f"INSERT INTO {table.name} ({joined}) VALUES ({marks})", rows)


def one_of(column: Any, values: Sequence[Any], dialect: Dialect) -> Any:
    """``column IN values``; on PostgreSQL one array parameter (``= ANY``), which the
    planner hashes, instead of thousands of parameters it compares one by one."""
    if dialect.name == "postgresql":
        from sqlalchemy import any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def refresh_statistics(session: Session, tables: list[Table]) -> None:
    """Let PostgreSQL's planner see tables that a bulk load has just grown.

    Until autovacuum gets round to it, a freshly filled table still looks empty, and the
    planner then scans it whole for every batch of look-ups; ANALYZE samples it in
    milliseconds. SQLite's planner uses the indexes anyway, so it is left alone.
    """
    if session.get_bind().dialect.name == "postgresql":
        for table in tables:
            session.execute(text(f"ANALYZE {table.name}"))


def drop_postgres_database(server: str, name: str) -> None:
    """Drop database ``name`` on ``server`` (a URL without a database), if it exists."""
    admin = make_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def recreate_postgres_database(server: str, name: str) -> str:
    """An empty database ``name`` on ``server``; returns its URL. Tests and benchmarks each
    want a store of their own."""
    drop_postgres_database(server, name)
    admin = make_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return f"{server}/{name}"


MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (``patron init`` calls this)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
