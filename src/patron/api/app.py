"""The FastAPI application: routers under ``/api/v1``, errors as JSON, OpenAPI at ``/docs``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import configure_mappers

import patron
from patron.analytics.endpoints import router as analytics_router
from patron.api.errors import ErrorOut, ValidationErrorOut, install_error_handlers
from patron.api.keys import KeyCache
from patron.campaigns.endpoints import router as campaigns_router
from patron.customers.endpoints import router as customers_router
from patron.dispatch.endpoints import hooks as hooks_router
from patron.dispatch.endpoints import public as tracking_router
from patron.dispatch.endpoints import router as dispatch_router
from patron.events.endpoints import router as events_router
from patron.journeys.endpoints import router as journeys_router
from patron.kit.db import make_engine, make_sessionmaker
from patron.kit.settings import get_settings
from patron.loyalty.endpoints import router as loyalty_router
from patron.segments.endpoints import router as segments_router
from patron.web.views import install as install_pages

API_PREFIX = "/api/v1"


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No API key, or not a valid one."},
    403: {"model": ErrorOut, "description": "The key's role may not do this."},
    404: {"model": ErrorOut, "description": "Not found."},
    409: {"model": ErrorOut, "description": "Clashes with the stored state."},
    422: {
        "model": ValidationErrorOut,
        "description": "Invalid input. `fields` names each field when the "
        "request does not fit its schema; other refusals carry only `error`.",
    },
}


def create_app(engine: Engine | None = None) -> FastAPI:
    """Build the API on ``engine`` (default: the configured store).

    The schema must be migrated already (``patron serve`` and ``patron init`` do that); the
    app only opens sessions. An engine the app made itself is disposed when it stops.
    """
    owned = engine is None
    bound = make_engine() if engine is None else engine

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # the models are mapped at start, so a worker's first till call does not pay it
        # (50 ms alone, several times that on a loaded machine)
        configure_mappers()
        yield
        if owned:
            bound.dispose()

    app = FastAPI(
        title="Patron",
        version=patron.__version__,
        summary="Customer hub (profiles, identities, consents, orders, events), analytics, "
        "segments and campaigns.",
        lifespan=lifespan,
    )
    app.state.engine = bound
    app.state.sessionmaker = make_sessionmaker(bound)
    app.state.api_keys = KeyCache()
    install_error_handlers(app)
    # routes are matched in order: the tills' calls, the busiest, are tried first
    app.include_router(loyalty_router, prefix=API_PREFIX, responses=_ERRORS)
    app.include_router(customers_router, prefix=API_PREFIX, responses=_ERRORS)
    app.include_router(events_router, prefix=API_PREFIX, responses=_ERRORS)
    app.include_router(analytics_router, prefix=API_PREFIX, responses=_ERRORS)
    app.include_router(segments_router, prefix=API_PREFIX, responses=_ERRORS)
    app.include_router(campaigns_router, prefix=API_PREFIX, responses=_ERRORS)
    app.include_router(journeys_router, prefix=API_PREFIX, responses=_ERRORS)
    app.include_router(dispatch_router, prefix=API_PREFIX, responses=_ERRORS)
    app.include_router(tracking_router)
    app.include_router(hooks_router, prefix=API_PREFIX, responses=_ERRORS)
    settings = get_settings()
    install_pages(app, secret_key=settings.secret_key, public_url=settings.public_url)
    return app
