"""HTTP endpoints of orders and events: parse, call the service, answer with a schema."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from patron.api.deps import (
    Page,
    PagingDep,
    Permission,
    RegionDep,
    SessionDep,
    require,
)
from patron.api.idempotency import IdempotencyDep
from patron.events.schemas import (
    EventBatchIn,
    EventBatchOut,
    EventIn,
    EventOut,
    OrderIn,
    OrderOut,
)
from patron.events.service import EventService, OrderService
from patron.models import ApiKey

router = APIRouter(tags=["orders and events"])

_IDEMPOTENT: dict[int | str, dict[str, Any]] = {400: {"description": "No Idempotency-Key header."}}


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderOut,
    responses={**_IDEMPOTENT, 409: {"description": "Order exists, or key reused."}},
)
def create_order(
    *,
    order: OrderIn,
    session: SessionDep,
    region: RegionDep,
    _key: Annotated[ApiKey, Depends(require(Permission.WRITE_ORDERS))],
    retry: IdempotencyDep,
) -> JSONResponse:
    """Record an order (purchase or return). Needs an ``Idempotency-Key``."""

    def action() -> tuple[int, BaseModel]:
        stored = OrderService(session, region=region).create(order)
        return 201, OrderOut.model_validate(stored)

    return retry.run(body=order, action=action, required=True)


@router.get("/orders", response_model=Page[OrderOut])
def list_orders(
    *,
    session: SessionDep,
    paging: PagingDep,
    _key: Annotated[ApiKey, Depends(require(Permission.READ_ORDERS))],
    customer_id: Annotated[int | None, Query(ge=1)] = None,
) -> Page[OrderOut]:
    """Orders, newest first; ``customer_id`` keeps one customer's."""
    orders = OrderService(session).list(
        customer_id=customer_id, limit=paging.limit, offset=paging.offset
    )
    return Page(
        items=[OrderOut.model_validate(o) for o in orders],
        limit=paging.limit,
        offset=paging.offset,
    )


@router.get("/orders/{order_id}", response_model=OrderOut)
def get_order(
    *,
    order_id: int,
    session: SessionDep,
    _key: Annotated[ApiKey, Depends(require(Permission.READ_ORDERS))],
) -> OrderOut:
    """One order with its lines."""
    return OrderOut.model_validate(OrderService(session).get(order_id))


@router.post(
    "/events",
    status_code=201,
    response_model=EventOut,
    responses={**_IDEMPOTENT, 409: {"description": "Event exists, or key reused."}},
)
def create_event(
    *,
    event: EventIn,
    session: SessionDep,
    region: RegionDep,
    _key: Annotated[ApiKey, Depends(require(Permission.WRITE_EVENTS))],
    retry: IdempotencyDep,
) -> JSONResponse:
    """Record an event. Needs an ``Idempotency-Key``."""

    def action() -> tuple[int, BaseModel]:
        stored = EventService(session, region=region).create(event)
        return 201, EventOut.model_validate(stored)

    return retry.run(body=event, action=action, required=True)


@router.post(
    "/events/batch",
    status_code=200,
    response_model=EventBatchOut,
    responses={**_IDEMPOTENT, 409: {"description": "Key reused with another batch."}},
)
def create_events(
    *,
    batch: EventBatchIn,
    session: SessionDep,
    region: RegionDep,
    _key: Annotated[ApiKey, Depends(require(Permission.WRITE_EVENTS))],
    retry: IdempotencyDep,
) -> JSONResponse:
    """Record up to 1,000 events at once. Needs an ``Idempotency-Key``.

    Each event gets its own outcome (created, duplicate or rejected with the reason), in
    the order sent; the stored events are committed together.
    """

    def action() -> tuple[int, BaseModel]:
        return 200, EventService(session, region=region).create_many(batch.events)

    return retry.run(body=batch, action=action, required=True)


@router.get("/events", response_model=Page[EventOut])
def list_events(
    *,
    session: SessionDep,
    paging: PagingDep,
    _key: Annotated[ApiKey, Depends(require(Permission.READ_EVENTS))],
    customer_id: Annotated[int | None, Query(ge=1)] = None,
    event_type: Annotated[str | None, Query(alias="type", max_length=64)] = None,
) -> Page[EventOut]:
    """Events, newest first; filter by ``customer_id`` and ``type``."""
    events = EventService(session).list(
        customer_id=customer_id, type_=event_type, limit=paging.limit, offset=paging.offset
    )
    return Page(
        items=[EventOut.model_validate(e) for e in events],
        limit=paging.limit,
        offset=paging.offset,
    )
