"""Running an analysis of the stored base: a task boundary, so it commits.

The run and all its scores are one transaction: a failure leaves no half-written run, and
readers of the newest scores never see a mix of two runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from patron.analytics.pipeline import AnalysisSettings
from patron.analytics.service import AnalyticsService
from patron.kit.db import unit_of_work


@dataclass(frozen=True)
class RunSummary:
    """A finished run, detached from its session."""

    id: int
    as_of: datetime
    model_version: str
    customers: int
    results: dict[str, Any]


def run_analysis(
    factory: sessionmaker[Session],
    *,
    as_of: datetime,
    settings: AnalysisSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunSummary:
    """Analyse the base as of ``as_of`` and commit the run with its scores."""
    with unit_of_work(factory) as session:
        run = AnalyticsService(session).analyze(as_of=as_of, settings=settings, progress=progress)
        return RunSummary(
            id=run.id,
            as_of=run.as_of,
            model_version=run.model_version,
            customers=run.customers,
            results=run.results,
        )
