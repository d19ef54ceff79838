"""Analysing the stored base: read it into the engine, run :func:`analyze`, keep the scores.

Services never commit; :mod:`patron.analytics.tasks` and the request boundary do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import ibis
import pandas as pd
from sqlalchemy.orm import Session

from patron.analytics.pipeline import SCORE_COLUMNS, AnalysisResult, AnalysisSettings, analyze
from patron.analytics.pipeline import STEPS as PIPELINE_STEPS
from patron.analytics.repository import AnalyticsRepository
from patron.kit.clock import utcnow
from patron.kit.errors import NotFound
from patron.models import AnalysisRun, CustomerScore, RunStatus

_CENT = Decimal("0.01")
_MONEY_COLUMNS = ("monetary", "expected_spend", "clv", "profit_clv")
_INT_COLUMNS = ("recency_days", "frequency", "r_score", "f_score", "m_score", "spend_band")
_FLOAT_COLUMNS = ("p_alive", "expected_purchases", "churn_risk")


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
        self.repository.insert_scores(score_rows(result, run_id=run.id))
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


def score_rows(result: AnalysisResult, *, run_id: int) -> list[dict[str, Any]]:
    """The scores as rows of ``customer_scores``: money rounded to cents as ``Decimal``,
    missing measures as ``None``."""
    frame = result.scores
    columns: dict[str, list[Any]] = {
        "customer_id": [int(v) for v in frame["customer_id"]],
        "first_purchase_at": _moments(frame["first_purchase_at"]),
        "last_purchase_at": _moments(frame["last_purchase_at"]),
        "best_customer": [bool(v) for v in frame["best_customer"]],
        "lifecycle_stage": [str(v) for v in frame["lifecycle_stage"]],
        "rfm_segment": [None if _missing(v) else str(v) for v in frame["rfm_segment"]],
        "offers": list(frame["offers"]),
    }
    for name in _INT_COLUMNS:
        columns[name] = [None if _missing(v) else int(v) for v in frame[name]]
    for name in _FLOAT_COLUMNS:
        columns[name] = [None if _missing(v) else float(v) for v in frame[name]]
    for name in _MONEY_COLUMNS:
        columns[name] = [_money(v) for v in frame[name]]
    assert set(columns) == set(SCORE_COLUMNS)
    count = len(frame)
    fixed = {"run_id": run_id, "as_of": result.as_of}
    names = list(columns)
    return [{**fixed, **{name: columns[name][i] for name in names}} for i in range(count)]


def _missing(value: Any) -> bool:
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and math.isnan(value))
    )


def _money(value: Any) -> Decimal | None:
    if _missing(value):
        return None
    if isinstance(value, Decimal):
        return value.quantize(_CENT)
    return Decimal(repr(float(value))).quantize(_CENT)


def _moments(values: pd.Series) -> list[datetime | None]:
    return [None if _missing(v) else pd.Timestamp(v).to_pydatetime() for v in values]
