"""All SQL of orders, order lines and events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from patron.customers.repository import chunks
from patron.kit.db import bulk_insert, one_of, table_of
from patron.models import Event, Order, OrderKind, OrderLine


@dataclass(frozen=True)
class StoredLine:
    """One line of a stored order, as a till would have rung it up."""

    sku: str | None
    category: str | None
    quantity: Decimal
    unit_price: Decimal


@dataclass(frozen=True)
class StoredOrder:
    """A stored order with its lines: what a replay through a till needs."""

    id: int
    customer_id: int
    kind: OrderKind
    placed_at: datetime
    total: Decimal
    original_order_id: int | None
    lines: list[StoredLine]


class OrderRepository:
    """Orders and their lines."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._dialect = session.get_bind().dialect

    def ids_by_external(self, source: str, external_ids: Sequence[str]) -> dict[str, int]:
        """Stored orders of ``source`` among ``external_ids``."""
        found: dict[str, int] = {}
        for part in chunks(sorted(set(external_ids))):
            rows = self.session.execute(
                select(Order.external_id, Order.id).where(
                    Order.source == source, one_of(Order.external_id, part, self._dialect)
                )
            )
            found.update((external, oid) for external, oid in rows)
        return found

    def insert_orders(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert orders in bulk; returns their ids in the order given."""
        return bulk_insert(self.session, table_of(Order), rows, with_ids=True)

    def insert_lines(self, rows: list[dict[str, Any]]) -> None:
        """Insert order lines in bulk."""
        bulk_insert(self.session, table_of(OrderLine), rows)

    def add_to_totals(self, deltas: dict[int, Decimal]) -> None:
        """Add line amounts that arrived later to orders already stored."""
        if not deltas:
            return
        table = table_of(Order)
        self.session.execute(
            update(table)
            .where(table.c.id == bindparam("oid"))
            .values(total=table.c.total + bindparam("delta")),
            [{"oid": oid, "delta": delta} for oid, delta in deltas.items()],
        )

    def purchases_with_skus(
        self, customer_ids: Sequence[int], skus: Sequence[str], before: datetime
    ) -> list[tuple[int, int, str, datetime, str]]:
        """``(order id, customer id, sku, placed_at, external id)`` of purchases that could
        be the original of a return: same customers and SKUs, placed before ``before``.

        Two index-driven steps (orders by customer, then their lines) rather than one join,
        which planners tend to drive from the SKU index and so read most order lines.
        """
        orders: dict[int, tuple[int, datetime, str]] = {}
        for part in chunks(sorted(set(customer_ids)), 2_000):
            rows = self.session.execute(
                select(Order.id, Order.customer_id, Order.placed_at, Order.external_id).where(
                    Order.customer_id.in_(part),
                    Order.kind == OrderKind.PURCHASE,
                    Order.placed_at <= before,
                )
            )
            for oid, cid, placed, external in rows:
                if cid is not None:
                    orders[oid] = (cid, placed, external)
        wanted = set(skus)
        found: list[tuple[int, int, str, datetime, str]] = []
        for part in chunks(sorted(orders)):
            lines = self.session.execute(
                select(OrderLine.order_id, OrderLine.sku).where(OrderLine.order_id.in_(part))
            )
            for oid, sku in lines:
                if sku in wanted:
                    cid, placed, external = orders[oid]
                    found.append((oid, cid, sku, placed, external))
        return found

    def link_returns(self, links: dict[int, int]) -> None:
        """Set each return's original order."""
        if not links:
            return
        table = table_of(Order)
        self.session.execute(
            update(table)
            .where(table.c.id == bindparam("rid"))
            .values(original_order_id=bindparam("oid")),
            [{"rid": rid, "oid": oid} for rid, oid in links.items()],
        )

    def get(self, order_id: int) -> Order | None:
        return self.session.get(Order, order_id)

    def list(self, *, customer_id: int | None, limit: int, offset: int) -> Sequence[Order]:
        query: Select[Order] = select(Order).order_by(Order.placed_at.desc(), Order.id.desc())
        if customer_id is not None:
            query = query.where(Order.customer_id == customer_id)
        return self.session.scalars(query.limit(limit).offset(offset)).all()

    def add(self, order: Order) -> Order:
        self.session.add(order)
        self.session.flush()
        return order

    def revenue(self) -> tuple[Decimal, Decimal, int, int]:
        """``(all revenue, guest revenue, orders, guest orders)``, returns netted off."""
        total, guest, orders, guests = self.session.execute(
            select(
                func.coalesce(func.sum(Order.total), 0),
                func.coalesce(func.sum(Order.total).filter(Order.customer_id.is_(None)), 0),
                func.count(),
                func.count().filter(Order.customer_id.is_(None)),
            )
        ).one()
        return Decimal(total), Decimal(guest), int(orders), int(guests)

    def customer_orders_page(
        self, *, since: datetime, until: datetime, after: tuple[datetime, int] | None, limit: int
    ) -> Sequence[StoredOrder]:
        """Up to ``limit`` orders of known customers placed in ``[since, until)``, with their
        lines, oldest first (ties by id), starting after the ``(placed_at, id)`` of the
        last order of the previous page.

        Paging by that key rather than holding one cursor open lets the caller commit
        between pages; the (placed_at, ...) index serves both the range and the order.
        """
        query = select(
            Order.id, Order.customer_id, Order.kind, Order.placed_at, Order.total,
            Order.original_order_id,
        ).where(
            Order.customer_id.is_not(None), Order.placed_at >= since, Order.placed_at < until
        )  # fmt: skip
        if after is not None:
            placed, last = after
            query = query.where(
                or_(Order.placed_at > placed, and_(Order.placed_at == placed, Order.id > last))
            )
        heads = self.session.execute(query.order_by(Order.placed_at, Order.id).limit(limit)).all()
        lines: dict[int, list[StoredLine]] = {}
        for part in chunks([head[0] for head in heads]):
            rows = self.session.execute(
                select(
                    OrderLine.order_id, OrderLine.sku, OrderLine.category, OrderLine.quantity,
                    OrderLine.unit_price,
                )
                .where(OrderLine.order_id.in_(part))
                .order_by(OrderLine.order_id, OrderLine.line_no)
            )  # fmt: skip
            for order_id, sku, category, quantity, unit_price in rows:
                lines.setdefault(order_id, []).append(
                    StoredLine(sku, category, Decimal(quantity), Decimal(unit_price))
                )
        return [
            StoredOrder(
                id=oid, customer_id=customer, kind=OrderKind(kind), placed_at=placed,
                total=Decimal(total), original_order_id=original, lines=lines.get(oid, []),
            )
            for oid, customer, kind, placed, total, original in heads
            if customer is not None  # as the query says: typed optional, never null here
        ]  # fmt: skip


class EventRepository:
    """Customer events."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def existing_external(self, source: str, external_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for part in chunks(sorted(set(external_ids))):
            found.update(
                self.session.scalars(
                    select(Event.external_id).where(
                        Event.source == source, Event.external_id.in_(part)
                    )
                ).all()  # type: ignore[arg-type]
            )
        return found

    def insert_many(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            bulk_insert(self.session, table_of(Event), rows)

    def insert_returning_ids(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert events in bulk; returns their ids in the order given."""
        return bulk_insert(self.session, table_of(Event), rows, with_ids=True) if rows else []

    def add(self, event: Event) -> Event:
        self.session.add(event)
        self.session.flush()
        return event

    def get(self, event_id: int) -> Event | None:
        return self.session.get(Event, event_id)

    def list(
        self, *, customer_id: int | None, type_: str | None, limit: int, offset: int
    ) -> Sequence[Event]:
        query: Select[Event] = select(Event).order_by(Event.occurred_at.desc(), Event.id.desc())
        if customer_id is not None:
            query = query.where(Event.customer_id == customer_id)
        if type_ is not None:
            query = query.where(Event.type == type_)
        return self.session.scalars(query.limit(limit).offset(offset)).all()
