"""Importing the product catalogue: new SKUs are added, known SKUs are updated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from patron.catalog.repository import ProductRepository
from patron.ingest.mapping import Extractor, Mapping
from patron.ingest.readers import Record
from patron.ingest.schemas import ChunkResult
from patron.kit.money import parse_money

FIELDS = ("sku", "name", "category", "brand", "price")


class ProductImporter:
    """Upserts products by SKU; unmapped columns become attributes."""

    def __init__(self, mapping: Mapping, **_: object) -> None:
        self.extractor = Extractor(mapping, FIELDS)
        self.used = self.extractor.columns_used()

    def process(self, session: Session, records: Sequence[Record]) -> ChunkResult:
        result = ChunkResult()
        rows: dict[str, dict[str, Any]] = {}
        for record in records:
            f = self.extractor.fields_of(record, result)
            if f is None:
                continue
            sku = str(f["sku"]).strip() if f["sku"] is not None else ""
            if not sku:
                result.reject(record.line, "sku: missing", record.values)
                continue
            if f["name"] is None:
                result.reject(record.line, "name: missing", record.values)
                continue
            price = None
            if f["price"] is not None:
                try:
                    price = parse_money(f["price"])
                except ValueError as exc:
                    result.dropped(record.line, f"price: {exc}", record.values)
            if sku in rows:
                result.merged += 1  # a later row of the same SKU updates the earlier one
            rows[sku] = {
                "sku": sku,
                "name": str(f["name"]).strip(),
                "category": f["category"],
                "brand": f["brand"],
                "price": price,
                "attributes": {
                    k: v
                    for k, v in record.values.items()
                    if k not in self.used and v not in (None, "")
                },
            }
        repo = ProductRepository(session)
        stored = repo.by_sku(list(rows))
        repo.insert_many([r for sku, r in rows.items() if sku not in stored])
        repo.update_many([r for sku, r in rows.items() if sku in stored])
        result.imported += sum(1 for sku in rows if sku not in stored)
        result.merged += sum(1 for sku in rows if sku in stored)
        return result
