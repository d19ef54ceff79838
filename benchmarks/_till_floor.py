"""The API with the till's confirm stubbed out, for ``loyalty_bench.py``'s floor row.

A **measurement aid, not a service**: ``confirm`` answers one fixed ``ConfirmOut`` at
once, touching no table. Everything else of a till call still runs as served: the HTTP
parsing, the API key check, the request's session, the body's validation, the trip to
the thread pool and back, and the answer's serialisation. Served the same way as the
real app, it shows how much of a confirm's server CPU the web stack alone takes, and so
how fast the machine could go if the loyalty work cost nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from fastapi import FastAPI

from patron.api.app import create_app
from patron.loyalty.schemas import ConfirmIn, ConfirmOut
from patron.loyalty.service import LoyaltyService
from patron.models import TransactionStatus

_ANSWER = ConfirmOut(
    transaction_id=1, receipt="r0", status=TransactionStatus.CONFIRMED,
    subtotal=Decimal("3890.00"), discount=Decimal("0.00"), points_burned=0,
    points_value=Decimal("0.00"), paid=Decimal("3890.00"), points_earned=1540,
    earn_available_at=datetime(2026, 1, 1, tzinfo=UTC), available_points=1540,
    pending_points=0, tier="Basic", tier_changed=False,
)  # fmt: skip


def _confirm(_service: LoyaltyService, _data: ConfirmIn, *, key: str, actor: str) -> ConfirmOut:
    return _ANSWER


def make() -> FastAPI:
    """``uvicorn --factory _till_floor:make``: the app, its till confirm stubbed."""
    LoyaltyService.confirm = _confirm  # type: ignore[method-assign,assignment]
    return create_app()
