"""All SQL of the product catalogue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from patron.customers.repository import chunks
from patron.kit.clock import utcnow
from patron.kit.db import table_of
from patron.models import Product


class ProductRepository:
    """Products by SKU."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def by_sku(self, skus: Sequence[str]) -> dict[str, Product]:
        found: dict[str, Product] = {}
        for part in chunks(sorted(set(skus))):
            for product in self.session.scalars(select(Product).where(Product.sku.in_(part))):
                found[product.sku] = product
        return found

    def insert_many(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.session.execute(insert(table_of(Product)), rows)

    def update_many(self, rows: list[dict[str, Any]]) -> None:
        """Overwrite name, category, brand, price and attributes of stored SKUs."""
        if not rows:
            return
        table = table_of(Product)
        now = utcnow()
        self.session.execute(
            update(table)
            .where(table.c.sku == bindparam("key"))
            .values(
                name=bindparam("name"),
                category=bindparam("category"),
                brand=bindparam("brand"),
                price=bindparam("price"),
                attributes=bindparam("attributes"),
                updated_at=now,
            ),
            [{**row, "key": row["sku"]} for row in rows],
        )

    def priced(self) -> Sequence[Product]:
        """Every product that has a price, by SKU: what can be put in a basket as it is."""
        return self.session.scalars(
            select(Product).where(Product.price.is_not(None)).order_by(Product.sku)
        ).all()

    def list(self, *, limit: int, offset: int) -> Sequence[Product]:
        return self.session.scalars(
            select(Product).order_by(Product.sku).limit(limit).offset(offset)
        ).all()
