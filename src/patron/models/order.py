"""Orders and their lines, purchases and returns alike, with or without a known customer."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from patron.kit.clock import utcnow
from patron.kit.db import Base, BigId, Price, Quantity, str_enum


class OrderKind(StrEnum):
    """A purchase, or a return (cancellation) whose amounts are negative."""

    PURCHASE = "purchase"
    RETURN = "return"


class Order(Base):
    """An order from a source system, unique on ``(source, external_id)``.

    A guest order has no ``customer_id``; the normalised contact it was placed with is kept
    in ``guest_*`` so that it can be attached when a profile with that identity appears.
    Returns carry negative ``total`` so that revenue sums net them off without special cases.
    """

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("customers.id", ondelete="SET NULL")
    )
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[OrderKind] = mapped_column(str_enum(OrderKind), default=OrderKind.PURCHASE)
    original_order_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("orders.id", ondelete="SET NULL")
    )
    store: Mapped[str | None] = mapped_column(String(120))
    channel: Mapped[str | None] = mapped_column(String(60))
    placed_at: Mapped[datetime]
    total: Mapped[Decimal]
    discount: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))
    currency: Mapped[str] = mapped_column(String(3))
    guest_email: Mapped[str | None] = mapped_column(String(320))
    guest_phone: Mapped[str | None] = mapped_column(String(32))
    guest_card: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", order_by="OrderLine.line_no", cascade="all, delete-orphan"
    )

    __table_args__ = (
        UniqueConstraint("source", "external_id", name="uq_orders_source_external_id"),
        Index("ix_orders_customer_placed", "customer_id", "placed_at"),
        # segment rules read a time window of everyone's orders: this covers that scan
        Index("ix_orders_placed_customer", "placed_at", "customer_id", "kind", "total"),
        # partial: only guest orders carry these, and most orders are not guests'
        *(
            Index(
                f"ix_orders_{name}",
                name,
                sqlite_where=text(f"{name} IS NOT NULL"),
                postgresql_where=text(f"{name} IS NOT NULL"),
            )
            for name in ("guest_email", "guest_phone", "guest_card")
        ),
    )


class OrderLine(Base):
    """One line of an order; a return line has a negative ``quantity``."""

    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id", ondelete="CASCADE"))
    line_no: Mapped[int]
    sku: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(300))
    category: Mapped[str | None] = mapped_column(String(120))
    quantity: Mapped[Decimal] = mapped_column(Quantity)
    unit_price: Mapped[Decimal] = mapped_column(Price)
    amount: Mapped[Decimal]

    order: Mapped[Order] = relationship(back_populates="lines")

    __table_args__ = (
        UniqueConstraint("order_id", "line_no", name="uq_order_lines_order_id_line_no"),
    )
