"""HTTP for analytics: run an analysis, read a run's report tables, a customer's scores."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from patron.analytics.pipeline import AnalysisSettings
from patron.analytics.schemas import RunOut, ScoreOut
from patron.analytics.service import AnalyticsService
from patron.api.deps import Permission, SessionDep, require
from patron.kit.clock import utcnow
from patron.models import ApiKey

router = APIRouter(tags=["analytics"])

Reader = Annotated[ApiKey, Depends(require(Permission.READ_ANALYTICS))]
Runner = Annotated[ApiKey, Depends(require(Permission.RUN_ANALYTICS))]


def analytics_service(session: SessionDep) -> AnalyticsService:
    """The analytics service on the request's session."""
    return AnalyticsService(session)


ServiceDep = Annotated[AnalyticsService, Depends(analytics_service)]


@router.post("/analytics/runs", status_code=201, response_model=RunOut)
def run_analysis(
    *,
    service: ServiceDep,
    _key: Runner,
    as_of: Annotated[
        datetime | None, Query(description="Analyse the base as it was then (default: now).")
    ] = None,
    settings: AnalysisSettings | None = None,
) -> RunOut:
    """Score every customer as of a date and store the run; earlier runs stay."""
    moment = as_of if as_of is not None else utcnow()
    return RunOut.of(service.analyze(as_of=moment, settings=settings))


@router.get("/analytics/runs", response_model=list[RunOut])
def list_runs(
    *, service: ServiceDep, _key: Reader, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[RunOut]:
    """Analysis runs, newest first, without their tables."""
    return [RunOut.of(run, with_results=False) for run in service.runs(limit=limit)]


@router.get("/analytics/runs/latest", response_model=RunOut)
def latest_run(*, service: ServiceDep, _key: Reader) -> RunOut:
    """The newest completed run with its report tables and model figures."""
    return RunOut.of(service.latest_run())


@router.get("/analytics/runs/{run_id}", response_model=RunOut)
def get_run(*, run_id: int, service: ServiceDep, _key: Reader) -> RunOut:
    """One run with its report tables (RFM segments, spend groups, CLV deciles, lifecycle)."""
    return RunOut.of(service.get_run(run_id))


@router.get("/customers/{customer_id}/scores", response_model=list[ScoreOut])
def customer_scores(
    *,
    customer_id: int,
    service: ServiceDep,
    _key: Reader,
    limit: Annotated[int, Query(ge=1, le=500, description="How many runs back.")] = 20,
) -> list[ScoreOut]:
    """A customer's score history, newest as-of date first."""
    return [ScoreOut.model_validate(s) for s in service.scores_of(customer_id, limit=limit)]
