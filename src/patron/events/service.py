"""Taking in orders and events one at a time (the API path). Services never commit.

Bulk intake from files lives in ``patron.ingest``; this is the single-record path a till,
a shop or a form calls, so it refuses bad input instead of reporting it in a rejects file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from patron.customers.repository import CustomerRepository, IdentityKey
from patron.customers.service import normalise_identities
from patron.events.repository import EventRepository, OrderRepository
from patron.events.schemas import EventBatchItem, EventBatchOut, EventIn, OrderIn, OrderLineIn
from patron.kit.clock import to_utc
from patron.kit.db import is_duplicate_key
from patron.kit.errors import Conflict, InvalidInput, NotFound
from patron.kit.money import round_money
from patron.models import Event, IdentityKind, Order, OrderKind, OrderLine

# The scales of the Quantity and Price columns: values are brought to them before they are
# stored, so the answer to a POST shows what a later GET will read.
_QUANTITY_STEP = Decimal("0.001")
_PRICE_STEP = Decimal("0.0001")


@dataclass(frozen=True)
class Subject:
    """Whom a record belongs to: a profile, or a contact to keep on a guest order."""

    customer_id: int | None
    guest: IdentityKey | None


def resolve_subject(
    customers: CustomerRepository,
    *,
    customer_id: int | None,
    identity_key: IdentityKey | None,
) -> Subject:
    """The active profile meant by an id or an identity.

    An id of a merged profile means the profile it was merged into, so that a record sent
    by a system that still holds the old id lands where the person's history now is. An
    identity nobody owns yet is kept as the guest contact.
    """
    if customer_id is not None:
        customer = customers.get(customer_id)
        if customer is None:
            raise NotFound(f"customer {customer_id} does not exist")
        while customer.merged_into_id is not None:
            parent = customers.get(customer.merged_into_id)
            if parent is None:
                break
            customer = parent
        return Subject(customer.id, None)
    if identity_key is None:
        return Subject(None, None)
    owner = customers.owners([identity_key]).get(identity_key)
    return Subject(owner, None) if owner is not None else Subject(None, identity_key)


def identity_key_of(order_or_event: OrderIn | EventIn, *, region: str) -> IdentityKey | None:
    """The normalised identity a record names, or ``None``; refuses one that is not valid."""
    if order_or_event.identity is None:
        return None
    keys, issues = normalise_identities([order_or_event.identity], region=region)
    if issues:
        raise InvalidInput(f"identity.value: {issues[0]}")
    [key] = keys
    return key


def _line(index: int, line: OrderLineIn, kind: OrderKind) -> OrderLine:
    quantity = line.quantity
    if kind is OrderKind.RETURN:
        quantity = -abs(quantity)  # a return takes units back, whichever sign was sent
    elif quantity < 0:
        raise InvalidInput(
            f"lines.{index}.quantity: a purchase line needs a positive quantity; "
            'send a return as kind "return"'
        )
    return OrderLine(
        line_no=index + 1,
        sku=line.sku,
        name=line.name,
        category=line.category,
        quantity=quantity.quantize(_QUANTITY_STEP),
        unit_price=line.unit_price.quantize(_PRICE_STEP),
        amount=round_money(quantity * line.unit_price),
    )


class OrderService:
    """Orders: record one, read one, list them."""

    def __init__(self, session: Session, *, region: str = "RU") -> None:
        self.session = session
        self.repo = OrderRepository(session)
        self.customers = CustomerRepository(session)
        self.region = region

    def create(self, order: OrderIn) -> Order:
        """Store an order with its lines, attached to its customer or kept as a guest order.

        ``total`` is the sum of ``quantity × unit_price`` over the lines, rounded half up to
        cents once (not line by line); it is negative for a return. ``discount`` is kept
        beside it, as the importers do.
        """
        existing = self.repo.ids_by_external(order.source, [order.external_id])
        if existing:
            raise Conflict(
                f"order {order.external_id} from {order.source} exists already "
                f"(id {existing[order.external_id]})"
            )
        lines = [_line(i, line, order.kind) for i, line in enumerate(order.lines)]
        exact_total = sum((line.quantity * line.unit_price for line in lines), Decimal(0))
        subject = resolve_subject(
            self.customers,
            customer_id=order.customer_id,
            identity_key=identity_key_of(order, region=self.region),
        )
        # a contact nobody owns yet is kept, so the order joins the profile that claims it
        contact = {subject.guest[0]: subject.guest[2]} if subject.guest else {}
        stored = Order(
            customer_id=subject.customer_id,
            source=order.source,
            external_id=order.external_id,
            kind=order.kind,
            original_order_id=None,
            store=order.store,
            channel=order.channel,
            placed_at=to_utc(order.placed_at),
            total=round_money(exact_total),
            discount=round_money(order.discount),
            currency=order.currency.upper(),
            guest_email=contact.get(IdentityKind.EMAIL),
            guest_phone=contact.get(IdentityKind.PHONE),
            guest_card=contact.get(IdentityKind.CARD),
            lines=lines,
        )
        return self.repo.add(stored)

    def get(self, order_id: int) -> Order:
        """An existing order, or ``NotFound``."""
        order = self.repo.get(order_id)
        if order is None:
            raise NotFound(f"order {order_id} does not exist")
        return order

    def list(self, *, customer_id: int | None, limit: int, offset: int) -> Sequence[Order]:
        """Orders, newest first, optionally of one customer."""
        return self.repo.list(customer_id=customer_id, limit=limit, offset=offset)


class EventService:
    """Customer events: record one, list them."""

    def __init__(self, session: Session, *, region: str = "RU") -> None:
        self.session = session
        self.repo = EventRepository(session)
        self.customers = CustomerRepository(session)
        self.region = region

    def create(self, event: EventIn) -> Event:
        """Store an event, attached to the profile it names when that profile is known."""
        if event.external_id is not None and self.repo.existing_external(
            event.source, [event.external_id]
        ):
            raise Conflict(f"event {event.external_id} from {event.source} exists already")
        subject = resolve_subject(
            self.customers,
            customer_id=event.customer_id,
            identity_key=identity_key_of(event, region=self.region),
        )
        return self.repo.add(
            Event(
                customer_id=subject.customer_id,
                type=event.type,
                occurred_at=to_utc(event.occurred_at),
                properties=event.properties,
                source=event.source,
                external_id=event.external_id,
            )
        )

    def create_many(self, events: Sequence[EventIn]) -> EventBatchOut:
        """Store a batch of events with a handful of statements whatever its size.

        Each event is judged as :meth:`create` would judge it, but alone: one already
        stored (same source and ``external_id``, or an earlier twin in this batch) is a
        ``duplicate``, and one naming an unknown customer or an invalid identity is
        ``rejected`` with the reason; the others are stored. A sender that streams events
        (a shop's tracker, an app) pays one request and one commit per batch instead of
        per event, which is what lets the API take in thousands a second.
        """
        results: list[EventBatchItem | None] = [None] * len(events)
        keys: dict[int, IdentityKey] = {}
        for index, event in enumerate(events):
            try:
                key = identity_key_of(event, region=self.region)
            except InvalidInput as exc:
                results[index] = _rejected(index, str(exc))
                continue
            if key is not None:
                keys[index] = key
        survivors = self.customers.surviving_ids(
            e.customer_id for e in events if e.customer_id is not None
        )
        owners = self.customers.owners(keys.values())
        stored: dict[str, set[str]] = {}
        for source in {e.source for e in events if e.external_id is not None}:
            stored[source] = self.repo.existing_external(
                source, [e.external_id for e in events if e.source == source and e.external_id]
            )
        rows: list[dict[str, Any]] = []
        placed: list[int] = []
        for index, event in enumerate(events):
            if results[index] is not None:
                continue
            if event.external_id is not None and event.external_id in stored.get(
                event.source, set()
            ):
                results[index] = EventBatchItem(
                    index=index, status="duplicate", id=None, error=None
                )
                continue
            customer_id: int | None = None
            if event.customer_id is not None:
                customer_id = survivors.get(event.customer_id)
                if customer_id is None:
                    results[index] = _rejected(
                        index, f"customer_id: customer {event.customer_id} does not exist"
                    )
                    continue
            elif index in keys:
                customer_id = owners.get(keys[index])
            if event.external_id is not None:
                # only a stored twin makes a later one a duplicate, not a rejected one
                stored.setdefault(event.source, set()).add(event.external_id)
            rows.append({
                "customer_id": customer_id,
                "type": event.type,
                "occurred_at": to_utc(event.occurred_at),
                "properties": event.properties,
                "source": event.source,
                "external_id": event.external_id,
            })  # fmt: skip
            placed.append(index)
        try:
            ids = self.repo.insert_returning_ids(rows)
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise
            # a concurrent request stored one of these since they were checked: the
            # transaction is spoilt, and the batch sent again reports them as duplicates
            raise Conflict(
                "an event of this batch (same source and external_id) was stored by a "
                "concurrent request; send the batch again: those events will be reported "
                "as duplicates"
            ) from None
        for index, event_id in zip(placed, ids, strict=True):
            results[index] = EventBatchItem(index=index, status="created", id=event_id, error=None)
        final = [r for r in results if r is not None]
        return EventBatchOut(
            created=len(placed),
            duplicates=sum(r.status == "duplicate" for r in final),
            rejected=sum(r.status == "rejected" for r in final),
            results=final,
        )

    def list(
        self, *, customer_id: int | None, type_: str | None, limit: int, offset: int
    ) -> Sequence[Event]:
        """Events, newest first, optionally of one customer and one type."""
        return self.repo.list(customer_id=customer_id, type_=type_, limit=limit, offset=offset)


def _rejected(index: int, reason: str) -> EventBatchItem:
    return EventBatchItem(index=index, status="rejected", id=None, error=f"events.{index}.{reason}")
