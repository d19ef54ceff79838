"""Request-scoped dependencies: the unit of work, the caller's API key and role, paging.

The session dependency is the request boundary: it commits when the endpoint returns and
rolls back when it raises. Services below it only flush.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from patron.api.keys import KeyCache
from patron.kit.db import end_unit
from patron.kit.errors import Forbidden, Unauthorized
from patron.kit.settings import get_settings
from patron.models import ApiKey, Role


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request: committed on success, rolled back on any error.

    A session talks to the database only from its first statement, so it is made here on
    the event loop; ending it goes to the thread pool, unless the endpoint ended it there
    already (:func:`in_one_trip`). Each trip to the pool and back costs a till call about a
    tenth of its CPU time (benchmarks/loyalty_bench.py).
    """
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    session = factory()
    try:
        yield session
    except BaseException:
        await _end(session, commit=False)
        raise
    await _end(session, commit=True)


async def _end(session: Session, *, commit: bool) -> None:
    if session.in_transaction():
        await run_in_threadpool(end_unit, session, commit=commit)
    else:
        session.close()  # nothing open: no statement to send


Result = TypeVar("Result")


async def in_one_trip(session: Session, work: Callable[[], Result]) -> Result:
    """``work()`` and the commit of the request's transaction in one trip to the thread
    pool, for an ``async`` endpoint on a hot path.

    A plain ``def`` endpoint makes four trips: to open the session, to run, to validate
    its answer and to commit. If ``work`` or the commit raises, the transaction is still
    open and :func:`get_session` rolls it back.
    """

    def run() -> Result:
        result = work()
        session.commit()
        return result

    return await run_in_threadpool(run)


# "function" scope ends the transaction before the response is sent, so a client never
# sees a success whose commit then failed.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_region() -> str:
    """The region used to read phone numbers written without a country code."""
    return get_settings().default_region


RegionDep = Annotated[str, Depends(get_region)]


class Permission(StrEnum):
    """Something an API key may be allowed to do."""

    READ_CUSTOMERS = "customers:read"
    LOOKUP_CUSTOMERS = "customers:lookup"
    WRITE_CUSTOMERS = "customers:write"
    READ_ORDERS = "orders:read"
    WRITE_ORDERS = "orders:write"
    READ_EVENTS = "events:read"
    WRITE_EVENTS = "events:write"
    READ_ANALYTICS = "analytics:read"
    RUN_ANALYTICS = "analytics:run"
    READ_SEGMENTS = "segments:read"
    WRITE_SEGMENTS = "segments:write"
    READ_CAMPAIGNS = "campaigns:read"
    WRITE_CAMPAIGNS = "campaigns:write"
    LAUNCH_CAMPAIGNS = "campaigns:launch"
    READ_LOYALTY = "loyalty:read"
    WRITE_LOYALTY = "loyalty:write"
    LOYALTY_POS = "loyalty:pos"


_READ = {Permission.READ_CUSTOMERS, Permission.LOOKUP_CUSTOMERS}
_READ |= {Permission.READ_ORDERS, Permission.READ_EVENTS, Permission.READ_ANALYTICS}
_READ |= {Permission.READ_SEGMENTS, Permission.READ_CAMPAIGNS, Permission.READ_LOYALTY}
_WRITE = {Permission.WRITE_CUSTOMERS, Permission.WRITE_ORDERS, Permission.WRITE_EVENTS}
_WRITE |= {Permission.WRITE_SEGMENTS, Permission.WRITE_CAMPAIGNS, Permission.LAUNCH_CAMPAIGNS}
_WRITE |= {Permission.WRITE_LOYALTY, Permission.LOYALTY_POS}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.MARKETER: frozenset(_READ | _WRITE),
    Role.ANALYST: frozenset(_READ | {Permission.RUN_ANALYTICS, Permission.WRITE_SEGMENTS}),
    # a till records sales, recognises the customer and runs the loyalty till calls
    Role.POS: frozenset(
        {Permission.WRITE_ORDERS, Permission.LOOKUP_CUSTOMERS, Permission.LOYALTY_POS}
    ),
}
"""What each role may do: the one place access rules live."""

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="A key made with `patron apikey create`."
)


async def current_key(
    request: Request,
    session: SessionDep,
    raw_key: Annotated[str | None, Depends(_api_key_header)],
) -> ApiKey:
    """The API key of the request, or 401."""
    if not raw_key:
        raise Unauthorized("missing API key: send it in the X-API-Key header")
    keys: KeyCache = request.app.state.api_keys
    # a key this process saw live lately is answered on the event loop; only a lookup in
    # the database goes to the thread pool
    found = keys.cached(raw_key)
    return found if found is not None else await run_in_threadpool(keys.look_up, session, raw_key)


def require(permission: Permission) -> Callable[[ApiKey], Awaitable[ApiKey]]:
    """A dependency that lets through only keys whose role holds ``permission`` (else 403)."""

    # async because it never waits: FastAPI runs it on the event loop instead of sending
    # it to the thread pool and back
    async def check(key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
        if permission not in ROLE_PERMISSIONS[key.role]:
            raise Forbidden(f"role {key.role.value} may not {permission.value}")
        return key

    return check


class Paging(BaseModel):
    """Which slice of a listing to return."""

    limit: int
    offset: int


def paging(
    limit: Annotated[int, Query(ge=1, le=500, description="Rows per page.")] = 50,
    offset: Annotated[int, Query(ge=0, description="Rows to skip.")] = 0,
) -> Paging:
    """``limit`` (1..500, default 50) and ``offset`` from the query string."""
    return Paging(limit=limit, offset=offset)


PagingDep = Annotated[Paging, Depends(paging)]

Item = TypeVar("Item", bound=BaseModel)


class Page(BaseModel, Generic[Item]):
    """One page of a listing."""

    items: list[Item]
    limit: int
    offset: int
