"""All SQL of the analytics domain: reading the base out for the engine, writing scores back.

The engine is DuckDB (or Spark), not the operational store, so the reads here hand over
Arrow tables: columnar, typed, and cheap for DuckDB to take without a copy per row. Rows
are fetched through the driver in large batches, because the ORM's per-row work would
cost more than the whole analysis of a million customers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import delete, desc, func, select, text, update
from sqlalchemy.orm import Session

from patron.kit.db import bulk_insert_columns, table_of
from patron.models import AnalysisRun, CustomerScore, RunStatus

_BATCH = 200_000

TRANSACTIONS = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("amount", pa.decimal128(18, 2)),
    ]
)
LINES = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("ts", pa.timestamp("us", tz="UTC")),
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

    def insert_scores(self, columns: dict[str, list[Any]]) -> None:
        """One run's scores, given column by column (see ``score_columns``)."""
        bulk_insert_columns(self.session, table_of(CustomerScore), columns)

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
