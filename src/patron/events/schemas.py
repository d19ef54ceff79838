"""Pydantic shapes of orders and events as the API takes and returns them.

Amounts are ``Decimal`` and travel as JSON strings (``"40.03"``), so no client ever sees a
binary float. Decimal places are limited to what the columns store, so nothing is rounded
silently on the way in.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from patron.customers.schemas import IdentityIn
from patron.models import OrderKind


class OrderLineIn(BaseModel):
    """One line: ``quantity`` units at ``unit_price`` each."""

    sku: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=300)
    category: str | None = Field(default=None, max_length=120)
    quantity: Decimal = Field(
        max_digits=18,
        decimal_places=3,
        description="Units; never zero. A return's lines are stored negative.",
    )
    unit_price: Decimal = Field(ge=0, max_digits=18, decimal_places=4)

    @field_validator("quantity")
    @classmethod
    def _not_zero(cls, value: Decimal) -> Decimal:
        if value == 0:
            raise ValueError("must not be zero")
        return value


class _Subject(BaseModel):
    """Who an order or event belongs to: a known profile, an identity, or nobody."""

    customer_id: int | None = Field(default=None, ge=1)
    identity: IdentityIn | None = Field(
        default=None, description="Resolved to the profile owning it, if there is one."
    )

    @model_validator(mode="after")
    def _one_subject(self) -> _Subject:
        if self.customer_id is not None and self.identity is not None:
            raise ValueError("give customer_id or identity, not both")
        return self


class OrderIn(_Subject):
    """An order from a till, a shop or another system, unique on ``(source, external_id)``."""

    source: str = Field(min_length=1, max_length=64)
    external_id: str = Field(min_length=1, max_length=128)
    kind: OrderKind = OrderKind.PURCHASE
    placed_at: AwareDatetime
    store: str | None = Field(default=None, max_length=120)
    channel: str | None = Field(default=None, max_length=60)
    currency: str = Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code, e.g. RUB.")
    discount: Decimal = Field(default=Decimal(0), ge=0, max_digits=18, decimal_places=2)
    lines: list[OrderLineIn] = Field(min_length=1)


class OrderLineOut(BaseModel):
    """A stored order line."""

    model_config = ConfigDict(from_attributes=True)

    line_no: int
    sku: str | None
    name: str | None
    category: str | None
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


class OrderOut(BaseModel):
    """A stored order with its lines; ``total`` is negative for a return."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    customer_id: int | None
    source: str
    external_id: str
    kind: OrderKind
    original_order_id: int | None
    store: str | None
    channel: str | None
    placed_at: datetime
    total: Decimal
    discount: Decimal
    currency: str
    guest_email: str | None
    guest_phone: str | None
    guest_card: str | None
    created_at: datetime
    lines: list[OrderLineOut]


class EventIn(_Subject):
    """Something a customer did, with free-form ``properties``."""

    type: str = Field(min_length=1, max_length=64)
    occurred_at: AwareDatetime
    properties: dict[str, Any] = Field(default_factory=dict)
    source: str = Field(default="api", min_length=1, max_length=64)
    external_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="Unique per source when given."
    )


MAX_BATCH = 1000
"""The most events one batch may carry."""


class EventBatchIn(BaseModel):
    """Events sent together: a shop or an app posting what happened in the last moments.

    The batch is one request and one transaction; each event is still judged on its own
    (a duplicate or an unknown customer does not stop the others).
    """

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class EventBatchItem(BaseModel):
    """What became of one event of a batch, by its place in the batch (from 0)."""

    index: int
    status: Literal["created", "duplicate", "rejected"]
    id: int | None = Field(description="The stored event's id, when created.")
    error: str | None = Field(description="Why it was rejected, naming the field.")


class EventBatchOut(BaseModel):
    """The outcome of a batch: counts, then one item per event in the order sent."""

    created: int
    duplicates: int
    rejected: int
    results: list[EventBatchItem]


class EventOut(BaseModel):
    """A stored event."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    customer_id: int | None
    type: str
    occurred_at: datetime
    properties: dict[str, Any]
    source: str
    external_id: str | None
    created_at: datetime
