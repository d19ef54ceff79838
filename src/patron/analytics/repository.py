"""All SQL of the analytics domain: reading the base out for the engine, writing scores back.

The engine is DuckDB (or Spark), not the operational store, so the reads here hand over
Arrow tables: columnar, typed, and cheap for DuckDB to take without a copy per row. Rows
are fetched through the driver in large batches, because the ORM's per-row work would
cost more than the whole analysis of a million customers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import delete, desc, func, select, text, update
from sqlalchemy.orm import Session

from patron.kit.db import bulk_insert_columns, table_of
from patron.models import AnalysisRun, CustomerScore, RunStatus

_BATCH = 200_000
_HUNDRED = pa.scalar(Decimal(100), pa.decimal128(3, 0))

# Order times are handed to the engine as naive UTC: day numbers are differences of epoch
# seconds, and on DuckDB Ibis takes those of a zoned column through a time-zone conversion
# of every row (a quarter of the cost of aggregating ten million orders by day). The
# analytics read naive times as UTC.
_UTC_NAIVE = pa.timestamp("us")
TRANSACTIONS = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("ts", _UTC_NAIVE),
        ("amount", pa.decimal128(18, 2)),
    ]
)
LINES = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("ts", _UTC_NAIVE),
        ("sku", pa.string()),
        ("category", pa.string()),
        ("quantity", pa.decimal128(18, 3)),
        ("unit_price", pa.decimal128(18, 4)),
    ]
)
CUSTOMERS = pa.schema([("customer_id", pa.int64()), ("created_at", pa.timestamp("us", tz="UTC"))])


class AnalyticsRepository:
    """Reads orders, lines and customers for the engine; keeps analysis runs and scores."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- reading the base ----------------------------------------------------------------

    def transactions(self, *, until: datetime) -> pa.Table:
        """Orders of known customers placed before ``until``: one row per order, returns
        negative, so that an order is one purchase occasion whatever its line count."""
        sql = (
            "SELECT customer_id, placed_at, total FROM orders "
            "WHERE customer_id IS NOT NULL AND placed_at < :until"
        )
        return self._arrow(sql, {"until": self._bound(until)}, TRANSACTIONS)

    def order_lines(self, *, until: datetime) -> pa.Table:
        """Lines of known customers' orders placed before ``until``, returns included."""
        sql = (
            "SELECT o.customer_id, o.placed_at, l.sku, l.category, l.quantity, l.unit_price "
            "FROM order_lines l JOIN orders o ON o.id = l.order_id "
            "WHERE o.customer_id IS NOT NULL AND o.placed_at < :until"
        )
        return self._arrow(sql, {"until": self._bound(until)}, LINES)

    def customers(self) -> pa.Table:
        """Every profile not merged into another.

        All of them, whatever the as-of date: an import stamps a profile with the time of
        the import, not of the first contact, so ``created_at`` cannot say who existed
        on a past date. One who had not bought by then is a prospect then.
        """
        sql = "SELECT id, created_at FROM customers WHERE merged_into_id IS NULL"
        return self._arrow(sql, {}, CUSTOMERS)

    def _bound(self, moment: datetime) -> Any:
        # raw SQL skips the column type, so SQLite gets the naive UTC text it stores
        if self.session.get_bind().dialect.name == "sqlite":
            return moment.replace(tzinfo=None).isoformat(sep=" ")
        return moment

    def _arrow(self, sql: str, params: dict[str, Any], schema: pa.Schema) -> pa.Table:
        batches = [
            pa.RecordBatch.from_arrays(
                [
                    self._column(values, field)
                    for values, field in zip(columns, schema, strict=True)
                ],
                schema=schema,
            )
            for columns in self._column_batches(sql, params, len(schema))
        ]
        return pa.Table.from_batches(batches, schema=schema)

    def _column_batches(
        self, sql: str, params: dict[str, Any], width: int
    ) -> Iterator[Sequence[Sequence[Any]]]:
        result = self.session.execute(text(sql).execution_options(yield_per=_BATCH), params)
        for partition in result.partitions(_BATCH):
            yield list(zip(*partition, strict=True)) if partition else [[] for _ in range(width)]

    @staticmethod
    def _column(values: Sequence[Any], field: pa.Field) -> pa.Array:
        if pa.types.is_timestamp(field.type) and values and isinstance(values[0], str):
            # SQLite hands back its stored text; Arrow parses ISO text in C
            naive = pa.array(values, pa.string()).cast(pa.timestamp("us"))
            return naive.cast(field.type)
        if pa.types.is_decimal(field.type) and values and isinstance(values[0], float | int):
            # SQLite keeps NUMERIC as a double; cents survive the round trip to 18 digits
            return pa.array(values, pa.float64()).cast(field.type, safe=False)
        return pa.array(values, field.type)

    # -- runs and scores -----------------------------------------------------------------

    def add_run(self, run: AnalysisRun) -> AnalysisRun:
        self.session.add(run)
        self.session.flush()
        return run

    def insert_scores(self, scores: pa.Table) -> None:
        """One run's scores, as the Arrow columns of ``customer_scores`` (see
        ``service.score_columns``).

        Each column becomes driver values as a whole, in Arrow's C code: a bind processor
        or ``json.dumps`` called per value would cost more, at a million customers, than
        the insert itself. The values are those the column types' bind processors give, so
        they read back the same: JSON as ``json.dumps`` writes it, and on SQLite UTC times
        as the naive ISO text SQLAlchemy stores and money as the double nearest its cents
        (what ``float(Decimal)`` gives; reading rounds it back to the cent).
        """
        sqlite = self.session.get_bind().dialect.name == "sqlite"
        columns: dict[str, list[Any]] = {}
        prepared: list[str] = []
        for field, column in zip(scores.schema, scores.columns, strict=True):
            values = column.combine_chunks()
            kind = field.type
            if pa.types.is_struct(kind) or pa.types.is_list(kind):
                values = _json_text(values)
            elif sqlite and pa.types.is_timestamp(kind):
                values = values.cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
                values = values.cast(pa.string())  # SQLAlchemy's "YYYY-MM-DD HH:MM:SS.ffffff"
            elif sqlite and pa.types.is_decimal(kind):
                # whole cents are exact in a double, and one IEEE division rounds correctly
                cents = pc.multiply(values.cast(pa.decimal128(18, 2)), _HUNDRED).cast(pa.int64())
                values = pc.divide(cents.cast(pa.float64()), 100.0)
            elif sqlite and pa.types.is_boolean(kind):
                values = values.cast(pa.int64())  # SQLite has no boolean: 0 and 1
            else:
                columns[field.name] = values.to_pylist()
                continue
            columns[field.name] = values.to_pylist()
            prepared.append(field.name)
        bulk_insert_columns(self.session, table_of(CustomerScore), columns, prepared=prepared)

    def finish_run(self, run_id: int, **values: Any) -> None:
        self.session.execute(update(AnalysisRun).where(AnalysisRun.id == run_id).values(**values))

    def get_run(self, run_id: int) -> AnalysisRun | None:
        return self.session.get(AnalysisRun, run_id)

    def latest_run(self, *, as_of: datetime | None = None) -> AnalysisRun | None:
        """The newest completed run, or the newest one for exactly ``as_of``."""
        query = select(AnalysisRun).where(AnalysisRun.status == RunStatus.COMPLETED)
        if as_of is not None:
            query = query.where(AnalysisRun.as_of == as_of)
        query = query.order_by(desc(AnalysisRun.as_of), desc(AnalysisRun.id)).limit(1)
        return self.session.scalars(query).first()

    def newest_run_id(self, *, until: datetime) -> int | None:
        """The newest completed run as of ``until`` or earlier: whose scores held then."""
        return self.session.scalar(
            select(AnalysisRun.id)
            .where(AnalysisRun.status == RunStatus.COMPLETED, AnalysisRun.as_of <= until)
            .order_by(desc(AnalysisRun.as_of), desc(AnalysisRun.id))
            .limit(1)
        )

    def at_stages(self, run_id: int, stages: Sequence[str]) -> list[int]:
        """Customers the run placed at one of these lifecycle stages, by id."""
        rows = self.session.scalars(
            select(CustomerScore.customer_id).where(
                CustomerScore.run_id == run_id, CustomerScore.lifecycle_stage.in_(stages)
            )
        )
        return sorted(int(c) for c in rows)

    def runs(self, *, limit: int) -> Sequence[AnalysisRun]:
        query = select(AnalysisRun).order_by(desc(AnalysisRun.id)).limit(limit)
        return self.session.scalars(query).all()

    def scores_of(self, customer_id: int, *, limit: int) -> Sequence[CustomerScore]:
        """A customer's scores from completed runs, the newest as-of date first."""
        query = (
            select(CustomerScore)
            .join(AnalysisRun, AnalysisRun.id == CustomerScore.run_id)
            .where(
                CustomerScore.customer_id == customer_id,
                AnalysisRun.status == RunStatus.COMPLETED,
            )
            .order_by(desc(CustomerScore.as_of), desc(CustomerScore.run_id))
            .limit(limit)
        )
        return self.session.scalars(query).all()

    def count_scores(self, run_id: int) -> int:
        query = (
            select(func.count()).select_from(CustomerScore).where(CustomerScore.run_id == run_id)
        )
        return int(self.session.scalar(query) or 0)

    def delete_run(self, run_id: int) -> None:
        self.session.execute(delete(CustomerScore).where(CustomerScore.run_id == run_id))
        self.session.execute(delete(AnalysisRun).where(AnalysisRun.id == run_id))


def _json_text(values: pa.Array) -> pa.Array:
    """Each value as the text ``json.dumps`` gives it, built a column at a time.

    Structs and lists are assembled from their children's text with Arrow's string
    joins; scalars, of which a column holds few distinct ones (item names, kinds, scores),
    are written by ``json.dumps`` once per distinct value. Null is ``null`` at any depth.
    """
    kind = values.type
    if pa.types.is_struct(kind):
        parts: list[Any] = ["{"]
        for index in range(kind.num_fields):
            key = json.dumps(kind.field(index).name)
            parts += [
                f"{', ' if index else ''}{key}: ",
                _json_text(pc.struct_field(values, [index])),
            ]
        text = pc.binary_join_element_wise(*parts, "}", "")
    elif pa.types.is_list(kind):
        items = pa.ListArray.from_arrays(values.offsets, _json_text(values.values))
        text = pc.binary_join_element_wise("[", pc.binary_join(items, ", "), "]", "")
    else:
        distinct = pc.unique(values)
        written = pa.array([json.dumps(v) for v in distinct.to_pylist()], pa.string())
        return written.take(pc.index_in(values, distinct, skip_nulls=False))
    return pc.if_else(pc.is_valid(values), text, "null")
