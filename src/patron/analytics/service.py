"""Analysing the stored base: read it into the engine, run :func:`analyze`, keep the scores.

Services never commit; :mod:`patron.analytics.tasks` and the request boundary do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.orm import Session

from patron.analytics.pipeline import SCORE_COLUMNS, AnalysisResult, AnalysisSettings, analyze
from patron.analytics.pipeline import STEPS as PIPELINE_STEPS
from patron.analytics.repository import AnalyticsRepository
from patron.kit.clock import utcnow
from patron.kit.errors import NotFound
from patron.models import AnalysisRun, CustomerScore, RunStatus

_MONEY_COLUMNS = ("monetary", "expected_spend", "clv", "profit_clv")
_INT_COLUMNS = ("recency_days", "frequency", "r_score", "f_score", "m_score", "spend_band")
_FLOAT_COLUMNS = ("p_alive", "expected_purchases", "churn_risk")
_UTC = pa.timestamp("us", tz="UTC")


class AnalyticsService:
    """Runs analyses of the stored base and answers questions about their results."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.repository = AnalyticsRepository(session)

    def analyze(
        self,
        *,
        as_of: datetime,
        settings: AnalysisSettings | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> AnalysisRun:
        """Analyse the base as it was at ``as_of`` and store a run with its scores.

        Only orders placed before ``as_of`` are read, so a past date gives the scores the
        base would have had then; earlier runs are kept.
        """
        settings = settings or AnalysisSettings()
        done = progress or (lambda _step: None)
        run = self.repository.add_run(
            AnalysisRun(
                as_of=as_of,
                model_version=settings.model_version,
                settings=settings.model_dump(mode="json"),
            )
        )
        engine = ibis.duckdb.connect()
        tx = engine.create_table("transactions", self.repository.transactions(until=as_of))
        lines = engine.create_table("order_lines", self.repository.order_lines(until=as_of))
        customers = engine.create_table("customers", self.repository.customers())
        done("read")
        result = analyze(tx, lines, customers, as_of=as_of, settings=settings, progress=done)
        self.repository.insert_scores(score_columns(result, run_id=run.id))
        self.repository.finish_run(
            run.id,
            status=RunStatus.COMPLETED,
            finished_at=utcnow(),
            customers=len(result.scores),
            results={"tables": result.tables, "models": result.models},
        )
        done("write")
        self.session.refresh(run)
        return run

    def latest_run(self, *, as_of: datetime | None = None) -> AnalysisRun:
        run = self.repository.latest_run(as_of=as_of)
        if run is None:
            when = f" as of {as_of.isoformat()}" if as_of else ""
            raise NotFound(f"no completed analysis{when}: run `patron analyze` first")
        return run

    def get_run(self, run_id: int) -> AnalysisRun:
        run = self.repository.get_run(run_id)
        if run is None:
            raise NotFound(f"analysis run {run_id} not found")
        return run

    def runs(self, *, limit: int = 20) -> Sequence[AnalysisRun]:
        return self.repository.runs(limit=limit)

    def scores_of(self, customer_id: int, *, limit: int = 1) -> Sequence[CustomerScore]:
        """A customer's newest scores first; ``limit`` > 1 gives their history."""
        return self.repository.scores_of(customer_id, limit=limit)


STEPS = ("read", *PIPELINE_STEPS, "write")
"""What :meth:`AnalyticsService.analyze` reports to its progress callback, in order."""


def score_columns(result: AnalysisResult, *, run_id: int) -> pa.Table:
    """The scores as the Arrow columns of ``customer_scores``: money rounded to cents as
    ``decimal128(18, 2)``, times as UTC timestamps, missing measures null, the offers as
    structs ``{"items": [...]}``.

    Each column is converted as a whole by Arrow, in C; a per-value Python conversion of
    a million customers would cost more than the analysis that produced them. The
    repository turns the columns into what its database takes.
    """
    frame = result.scores
    every = np.zeros(len(frame), dtype=np.int64)  # a constant column, by taking one value
    columns: dict[str, pa.Array] = {
        "run_id": pa.array([run_id], pa.int64()).take(every),
        "as_of": pa.array([result.as_of], _UTC).take(every),
        "customer_id": _arrow(frame["customer_id"], pa.int64()),
        "best_customer": _arrow(frame["best_customer"].astype(bool), pa.bool_()),
        "lifecycle_stage": _arrow(frame["lifecycle_stage"].astype(str), pa.string()),
        "rfm_segment": _arrow(frame["rfm_segment"], pa.string()),
        "offers": pa.array(frame["offers"]),
    }
    for name in ("first_purchase_at", "last_purchase_at"):
        columns[name] = _arrow(frame[name], _UTC)
    for name in _INT_COLUMNS:
        columns[name] = _arrow(frame[name], pa.float64()).cast(pa.int64())
    for name in _FLOAT_COLUMNS:
        columns[name] = _arrow(frame[name], pa.float64())
    for name in _MONEY_COLUMNS:
        columns[name] = _cents(frame[name])
    assert set(columns) == {"run_id", "as_of", *SCORE_COLUMNS}
    return pa.table(columns)


def _arrow(values: pd.Series, kind: pa.DataType) -> pa.Array:
    return pa.array(values, type=kind, from_pandas=True)


def _cents(values: pd.Series) -> pa.Array:
    """Money to ``decimal(18, 2)``: decimals are rounded as decimals, floats (model output)
    from their nearest cent."""
    if values.dtype == object:
        exact = pa.array(values, from_pandas=True)
        if pa.types.is_decimal(exact.type):
            return pc.round(exact, 2).cast(pa.decimal128(18, 2))
    rounded = pc.round(_arrow(values, pa.float64()), 2)
    return rounded.cast(pa.decimal128(18, 2), safe=False)
