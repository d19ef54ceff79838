"""Importing customer events: visits, form submissions, calls and custom events.

An event with an ``event_id`` is stored once per source, so a file imported again adds
nothing. The customer is found by their source id or by any contact on the row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from patron.customers.normalize import InvalidIdentity, normalize
from patron.customers.repository import CustomerRepository, IdentityKey
from patron.events.repository import EventRepository
from patron.ingest.mapping import Extractor, Mapping
from patron.ingest.readers import Record
from patron.ingest.schemas import ChunkResult
from patron.kit.clock import parse_datetime
from patron.models import IdentityKind

FIELDS = ("event_id", "customer_id", "email", "phone", "card", "type", "occurred_at", "properties")
CONTACTS = {
    "customer_id": IdentityKind.EXTERNAL,
    "email": IdentityKind.EMAIL,
    "phone": IdentityKind.PHONE,
    "card": IdentityKind.CARD,
}


class EventImporter:
    """Stores events, linked to a profile where one of the row's identities is known."""

    def __init__(self, mapping: Mapping, *, source: str, region: str, **_: object) -> None:
        self.extractor = Extractor(mapping, FIELDS)
        self.used = self.extractor.columns_used()
        self.source = source
        self.region = region
        self.zone = ZoneInfo(mapping.timezone)

    def process(self, session: Session, records: Sequence[Record]) -> ChunkResult:
        result = ChunkResult()
        rows: list[tuple[dict[str, Any], list[IdentityKey]]] = []
        for record in records:
            parsed = self._parse(record, result)
            if parsed is not None:
                rows.append(parsed)
        owners = CustomerRepository(session).owners(k for _, keys in rows for k in keys)
        repo = EventRepository(session)
        seen = repo.existing_external(
            self.source, [r["external_id"] for r, _ in rows if r["external_id"]]
        )
        fresh: list[dict[str, Any]] = []
        for row, keys in rows:
            if row["external_id"] is not None and row["external_id"] in seen:
                result.merged += 1
                continue
            if row["external_id"] is not None:
                seen.add(row["external_id"])
            row["customer_id"] = next((owners[k] for k in keys if k in owners), None)
            fresh.append(row)
        repo.insert_many(fresh)
        result.imported += len(fresh)
        return result

    def _parse(
        self, record: Record, result: ChunkResult
    ) -> tuple[dict[str, Any], list[IdentityKey]] | None:
        values = record.values
        f = self.extractor.fields_of(record, result)
        if f is None:
            return None
        if not f["type"]:
            result.reject(record.line, "type: missing", values)
            return None
        raw_time = f["occurred_at"]
        if raw_time is None:
            result.reject(record.line, "occurred_at: missing", values)
            return None
        try:
            text = raw_time.isoformat() if isinstance(raw_time, datetime) else str(raw_time)
            occurred_at = parse_datetime(text, assume=self.zone)
        except ValueError as exc:
            result.reject(record.line, f"occurred_at: {exc}", values)
            return None
        properties = f["properties"]
        if isinstance(properties, str):
            try:
                properties = json.loads(properties)
            except json.JSONDecodeError:
                result.reject(record.line, "properties: not a JSON object", values)
                return None
        if properties is not None and not isinstance(properties, dict):
            result.reject(record.line, "properties: not a JSON object", values)
            return None
        properties = dict(properties or {})
        properties |= {
            key.removeprefix("prop."): value
            for key, value in f.items()
            if key.startswith("prop.") and value is not None
        }
        properties |= {
            k: v for k, v in values.items() if k not in self.used and v not in (None, "")
        }
        keys: list[IdentityKey] = []
        for field, kind in CONTACTS.items():
            if f[field] is None:
                continue
            try:
                value = normalize(kind, str(f[field]), region=self.region)
            except InvalidIdentity as exc:
                result.dropped(record.line, f"{field}: {exc}", values)
                continue
            keys.append((kind, self.source if kind is IdentityKind.EXTERNAL else "", value))
        row = {
            "type": str(f["type"]).strip(),
            "occurred_at": occurred_at,
            "properties": properties,
            "source": self.source,
            "external_id": None if f["event_id"] is None else str(f["event_id"]),
        }
        return row, keys
