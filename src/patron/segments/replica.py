"""The segment replica: a columnar copy, in a DuckDB file, of what segment rules read.

The operational store keeps rows (SQLite pages, PostgreSQL heap), so a rule that sums a
year of ten million orders reads every one of them and takes seconds. The replica keeps
the same tables under the same names, with only the columns the rule compiler reads,
stored by column. The very predicate ``RuleCompiler`` built for the store is compiled for
DuckDB (through ``duckdb_engine``) and runs here on every core, reading only the columns
it names. This module is a repository: all of the replica's SQL lives here.

A refresh copies the store in full into a new file, which then replaces the old one in a
single rename, so a reader sees the old replica or the new one and never half of one.
With the copy it records the store's *fingerprint*: a handful of aggregates that an index
answers (largest ids, row counts, the newest profile change, the newest import, merge and
analysis run) and that move with every write a rule could see. A count uses the replica
only while the store still shows that fingerprint and the replica holds the analysis run
the rule reads; otherwise the count runs on the store. A replica count therefore equals
the store's, and it says when its data was copied.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Date,
    DateTime,
    Engine,
    Float,
    Integer,
    Numeric,
    String,
    create_engine,
    func,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session

from patron.kit.clock import utcnow
from patron.kit.db import Base, UTCDateTime, table_of
from patron.models import (
    AnalysisRun,
    Consent,
    Customer,
    CustomerScore,
    Event,
    Identity,
    ImportRun,
    MergeLog,
    Order,
    OrderLine,
)
from patron.segments.repository import ACTIVE, SegmentRepository

FORMAT = 1
"""Bumped whenever the replica's tables change shape, so an older file is refreshed."""

COLUMNS: dict[type[Base], tuple[str, ...] | None] = {
    Customer: None,  # every profile field can be tested
    Identity: ("id", "customer_id", "kind", "namespace", "verified"),
    Consent: ("id", "customer_id", "channel", "purpose", "status", "decided_at"),
    Order: ("id", "customer_id", "kind", "placed_at", "total"),
    OrderLine: ("order_id", "category", "amount"),
    Event: ("id", "customer_id", "type", "occurred_at", "properties"),
    CustomerScore: None,  # the rows of one run: the newest completed
}
"""What the replica copies of each store table (None: every column)."""


@compiles(Float, "duckdb")
def _double(_type: Float[Any], _compiler: Any, **_kw: Any) -> str:
    # DuckDB's FLOAT is 4 bytes; PostgreSQL's and SQLite's are 8, and a JSON attribute
    # read as_float() must compare exactly as it does on the store
    return "DOUBLE"


@dataclass(frozen=True)
class ReplicaState:
    """What a replica file holds: when it was copied, from which store, at which
    fingerprint, the analysis run whose scores it carries and the rows of each table."""

    refreshed_at: datetime
    store: str
    fingerprint: dict[str, str]
    score_run: int | None
    rows: dict[str, int]
    seconds: float


class SegmentReplica:
    """The replica file at ``path`` (created by ``refresh``)."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()

    # -- the store side ----------------------------------------------------------------------

    @staticmethod
    def store_name(session: Session) -> str:
        """The store's URL without password; a SQLite file by its absolute path."""
        url = session.get_bind().engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            url = url.set(database=str(Path(str(url.database)).resolve()))
        return url.render_as_string(hide_password=True)

    @staticmethod
    def fingerprint(session: Session) -> dict[str, str]:
        """Aggregates of the store that change with every write a rule can see.

        New orders, lines, events, consents, identities and profiles raise a largest id;
        merges and their undoing change the count of merged profiles and write the merge
        log; profile edits (imports included) raise the newest ``updated_at``; analyses
        add runs. Each is read from an index, so the check costs milliseconds even at
        millions of rows. A write made behind Patron's back (SQL by hand) is not seen:
        ``patron segment refresh`` after it.
        """
        found: dict[str, str] = {
            "merged": str(
                session.scalar(select(func.count()).where(Customer.merged_into_id.is_not(None)))
            ),
            "updated": str(session.scalar(select(func.max(Customer.updated_at)))),
        }
        for name, column in (
            ("customers", Customer.id),
            ("identities", Identity.id),
            ("consents", Consent.id),
            ("orders", Order.id),
            ("order_lines", OrderLine.id),
            ("events", Event.id),
            ("imports", ImportRun.id),
            ("merges", MergeLog.id),
            ("runs", AnalysisRun.id),
        ):
            # one statement each: SQLite answers a lone max() from the index in a step
            found[name] = str(session.scalar(select(func.max(column))))
        found["unmerged"] = str(session.scalar(select(func.count(MergeLog.undone_at))))
        return found

    # -- refresh -----------------------------------------------------------------------------

    def refresh(self, session: Session) -> ReplicaState:
        """Copy the store into a new replica file and put it in place of the old one.

        The fingerprint is read before the copy starts. Any write the copy might have
        caught moves the fingerprint past the recorded one, so such a replica is never
        taken as fresh: it is stale from birth, never wrong.
        """
        import duckdb

        started = time.perf_counter()
        refreshed_at = utcnow()
        fingerprint = self.fingerprint(session)
        # the run a rule counted now reads
        run = SegmentRepository(session).run_on(refreshed_at)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        building = self.path.with_name(f"{self.path.name}.{os.getpid()}.building")
        building.unlink(missing_ok=True)
        rows: dict[str, int] = {}
        con = duckdb.connect(str(building))
        try:
            # times without a zone (SQLite's text) are UTC
            con.execute("SET TimeZone = 'UTC'")
            with _StoreReader(session, building.with_suffix(".csv")) as reader:
                for model, names in COLUMNS.items():
                    table = table_of(model)
                    columns = [table.c[n] for n in names] if names else list(table.columns)
                    ddl = ", ".join(f'"{c.name}" {_duckdb_type(c.type)}' for c in columns)
                    con.execute(f'CREATE TABLE "{table.name}" ({ddl})')
                    where = f"run_id = {int(run or 0)}" if model is CustomerScore else None
                    rows[table.name] = reader.copy(con, table.name, columns, where=where)
            state = ReplicaState(
                refreshed_at=refreshed_at,
                store=self.store_name(session),
                fingerprint=fingerprint,
                score_run=run,
                rows=rows,
                seconds=round(time.perf_counter() - started, 3),
            )
            con.execute("CREATE TABLE replica_meta (key VARCHAR, value VARCHAR)")
            con.executemany("INSERT INTO replica_meta VALUES (?, ?)", list(_meta(state).items()))
            con.execute("CHECKPOINT")
        except BaseException:
            con.close()
            building.unlink(missing_ok=True)
            raise
        con.close()
        with _lock:
            _forget(self.path)
            building.replace(self.path)
        return state

    # -- reading -----------------------------------------------------------------------------

    def state(self) -> ReplicaState | None:
        """What the replica holds, or None when there is none (or of an older format)."""
        found = _open(self.path)
        return None if found is None else found[1]

    def fresh(self, session: Session, *, score_run: int | None) -> ReplicaState | None:
        """The replica's state when it answers for the store as it is now, with the scores
        of ``score_run`` (None: the rule reads no scores); None otherwise."""
        state = self.state()
        if state is None or state.store != self.store_name(session):
            return None
        if score_run is not None and score_run != state.score_run:
            return None
        if state.fingerprint != self.fingerprint(session):
            return None
        return state

    def count(self, predicate: ColumnElement[bool]) -> int:
        """How many active customers the predicate selects, counted in the replica."""
        found = _open(self.path)
        if found is None:
            raise FileNotFoundError(self.path)
        with found[0].connect() as connection:
            query = select(func.count()).select_from(Customer).where(ACTIVE, predicate)
            return int(connection.scalar(query) or 0)


class _StoreReader:
    """Reads store tables in bulk as CSV, which DuckDB parses on every core: PostgreSQL
    writes it with COPY; SQLite builds each line in SQL, so Python handles one string
    per row rather than one object per value. DuckDB converts the text to the replica's
    types on insert (SQLite keeps times as text and money as REAL)."""

    def __init__(self, session: Session, spill: Path) -> None:
        self.connection = session.connection()
        self.postgres = self.connection.dialect.name == "postgresql"
        self.spill = spill

    def __enter__(self) -> _StoreReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.spill.unlink(missing_ok=True)

    def copy(self, con: Any, name: str, columns: Sequence[Any], *, where: str | None) -> int:
        """Copy ``columns`` of the store table ``name`` (rows passing ``where``) into
        the replica table of the same name; returns the rows copied."""
        raw: Any = self.connection.connection.driver_connection
        filtered = f" WHERE {where}" if where else ""
        with self.spill.open("w", encoding="utf-8", newline="") as out:
            if self.postgres:
                picked = ", ".join(f'"{c.name}"::text' for c in columns)
                query = f'SELECT {picked} FROM "{name}"{filtered}'
                with (
                    raw.cursor() as cursor,
                    cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy,
                ):
                    for chunk in copy:
                        out.write(bytes(chunk).decode("utf-8"))
            else:
                line = " || ',' || ".join(_sqlite_csv(c) for c in columns)
                cursor = raw.cursor()
                try:
                    cursor.execute(f'SELECT {line} FROM "{name}"{filtered}')
                    while batch := cursor.fetchmany(100_000):
                        out.write("\n".join([row[0] for row in batch]))
                        out.write("\n")
                finally:
                    cursor.close()
        text = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(columns))) + "}"
        before = _rows(con, name)
        # NULL is written as nothing and an empty text as "": keep the two apart
        con.execute(
            f'INSERT INTO "{name}" SELECT * FROM read_csv(?, header = false, '
            f"columns = {text}, allow_quoted_nulls = false, auto_detect = false)",
            [str(self.spill)],
        )
        return _rows(con, name) - before


def _sqlite_csv(column: Any) -> str:
    """One CSV field of a SQLite column, NULL as nothing."""
    name = f'"{column.name}"'
    if isinstance(column.type, Integer | Boolean):
        return f"ifnull(CAST({name} AS INTEGER), '')"
    if isinstance(column.type, Numeric | Float):
        # quote() writes a REAL with the digits that read back as the same double
        # (CAST AS TEXT keeps 15, and printf's %.17g goes wrong: 0.3 prints 0.29...9)
        return f"CASE WHEN {name} IS NULL THEN '' ELSE quote(CAST({name} AS REAL)) END"
    return f"""ifnull('"' || replace({name}, '"', '""') || '"', '')"""


def _rows(con: Any, name: str) -> int:
    return int(con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])


# -- open replicas, one engine per file version -------------------------------------------

_lock = threading.Lock()
_open_files: dict[Path, tuple[tuple[int, int], Engine, ReplicaState]] = {}


def _open(path: Path) -> tuple[Engine, ReplicaState] | None:
    """The engine and state of the replica file now at ``path``.

    DuckDB shares one database instance per path within a process, so the engine of a
    replaced file must be closed before the new file can be opened.
    """
    with _lock:
        try:
            stat = path.stat()
        except FileNotFoundError:
            _forget(path)
            return None
        version = (stat.st_ino, stat.st_mtime_ns)
        cached = _open_files.get(path)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        _forget(path)
        engine = create_engine(f"duckdb:///{path}", connect_args={"read_only": True})
        try:
            with engine.connect() as connection:
                meta = {
                    str(k): str(v)
                    for k, v in connection.exec_driver_sql("SELECT key, value FROM replica_meta")
                }
        except Exception:
            # an unreadable or foreign file is no replica; the next refresh replaces it
            engine.dispose()
            return None
        if meta.get("format") != str(FORMAT):
            engine.dispose()
            return None
        state = ReplicaState(
            refreshed_at=datetime.fromisoformat(meta["refreshed_at"]),
            store=meta["store"],
            fingerprint=json.loads(meta["fingerprint"]),
            score_run=None if meta["score_run"] == "" else int(meta["score_run"]),
            rows=json.loads(meta["rows"]),
            seconds=float(meta["seconds"]),
        )
        _open_files[path] = (version, engine, state)
        return engine, state


@atexit.register
def _close_all() -> None:
    # DuckDB connections still open when the interpreter tears down are reported as leaks
    with _lock:
        for path in list(_open_files):
            _forget(path)


def _forget(path: Path) -> None:
    cached = _open_files.pop(path, None)
    if cached is not None:
        cached[1].dispose()


def _meta(state: ReplicaState) -> dict[str, str]:
    return {
        "format": str(FORMAT),
        "refreshed_at": state.refreshed_at.astimezone(UTC).isoformat(),
        "store": state.store,
        "fingerprint": json.dumps(state.fingerprint, sort_keys=True),
        "score_run": "" if state.score_run is None else str(state.score_run),
        "rows": json.dumps(state.rows),
        "seconds": str(state.seconds),
    }


def _is_json(kind: Any) -> bool:
    return isinstance(getattr(kind, "impl_instance", kind), JSON)


def _duckdb_type(kind: Any) -> str:
    """The DuckDB type holding a store column's values exactly."""
    if isinstance(kind, UTCDateTime | DateTime):
        return "TIMESTAMPTZ"
    if _is_json(kind):
        return "JSON"
    checks: Sequence[tuple[type, str]] = (
        (Boolean, "BOOLEAN"),
        (Integer, "BIGINT"),
        (Float, "DOUBLE"),  # before Numeric (a subclass of it before SQLAlchemy 2.1)
        (Date, "DATE"),
        (String, "VARCHAR"),
    )
    for base, name in checks:
        if isinstance(kind, base):
            return name
    if isinstance(kind, Numeric):
        return f"DECIMAL({kind.precision or 18}, {kind.scale or 0})"
    raise TypeError(f"no replica type for {kind!r}")  # pragma: no cover


def configured_replica() -> SegmentReplica | None:
    """The replica named by the ``segment_replica`` setting (None when set empty)."""
    from patron.kit.settings import get_settings

    name = get_settings().segment_replica
    return SegmentReplica(Path(name)) if name else None
